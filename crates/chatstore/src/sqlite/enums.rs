//! How the backend-neutral enums map to SQLite: as TEXT holding their stored names (the
//! schema's CHECK constraints list the same names), so SQL binds and reads them like the
//! PostgreSQL enum types and both backends decode the same row shapes.

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::sqlite::{Sqlite, SqliteArgumentsBuffer, SqliteTypeInfo, SqliteValueRef};

use crate::agents::AgentLifecycle;
use crate::workspaces::{JobStatus, WorkspaceTransition};

macro_rules! text_enum {
    ($ty:ty) => {
        impl sqlx::Type<Sqlite> for $ty {
            fn type_info() -> SqliteTypeInfo {
                <str as sqlx::Type<Sqlite>>::type_info()
            }

            fn compatible(ty: &SqliteTypeInfo) -> bool {
                <str as sqlx::Type<Sqlite>>::compatible(ty)
            }
        }

        impl sqlx::Encode<'_, Sqlite> for $ty {
            fn encode_by_ref(
                &self,
                buf: &mut SqliteArgumentsBuffer,
            ) -> Result<IsNull, BoxDynError> {
                <&str as sqlx::Encode<'_, Sqlite>>::encode_by_ref(&self.as_str(), buf)
            }
        }

        impl sqlx::Decode<'_, Sqlite> for $ty {
            fn decode(value: SqliteValueRef<'_>) -> Result<Self, BoxDynError> {
                let name = <&str as sqlx::Decode<'_, Sqlite>>::decode(value)?;
                Ok(name.parse()?)
            }
        }
    };
}

text_enum!(JobStatus);
text_enum!(WorkspaceTransition);
text_enum!(AgentLifecycle);
