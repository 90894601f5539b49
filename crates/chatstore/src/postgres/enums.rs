//! How the backend-neutral enums map to PostgreSQL's enum types: by their stored names, so SQL
//! binds and reads them as the schema's `chat_message_role`, `workspace_transition`, ...

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueRef, Postgres};

use crate::agents::AgentLifecycle;
use crate::types::{Role, Visibility};
use crate::workspaces::{JobStatus, WorkspaceTransition};

macro_rules! pg_enum {
    ($ty:ty, $pg_name:literal) => {
        impl sqlx::Type<Postgres> for $ty {
            fn type_info() -> PgTypeInfo {
                PgTypeInfo::with_name($pg_name)
            }
        }

        impl sqlx::Encode<'_, Postgres> for $ty {
            fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
                <&str as sqlx::Encode<'_, Postgres>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl sqlx::Decode<'_, Postgres> for $ty {
            fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
                let name = <&str as sqlx::Decode<'_, Postgres>>::decode(value)?;
                Ok(name.parse()?)
            }
        }

        impl sqlx::postgres::PgHasArrayType for $ty {
            fn array_type_info() -> PgTypeInfo {
                PgTypeInfo::array_of($pg_name)
            }
        }
    };
}

pg_enum!(Role, "chat_message_role");
pg_enum!(Visibility, "chat_message_visibility");
pg_enum!(JobStatus, "provisioner_job_status");
pg_enum!(WorkspaceTransition, "workspace_transition");
pg_enum!(AgentLifecycle, "workspace_agent_lifecycle");
