//! The connection to a chatd server: one channel, the caller's token on every call.

use std::time::Duration;

use chatproto::chatd::v1::admin_service_client::AdminServiceClient;
use chatproto::chatd::v1::chat_service_client::ChatServiceClient;
use chatproto::chatd::v1::template_service_client::TemplateServiceClient;
use chatproto::chatd::v1::workspace_service_client::WorkspaceServiceClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::{Channel, Endpoint};

use crate::error::CtlError;

/// Largest response chatctl accepts (history pages and template versions can be large).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// A connected client.
#[derive(Debug, Clone)]
pub struct Conn {
    channel: Channel,
    auth: MetadataValue<tonic::metadata::Ascii>,
}

impl Conn {
    /// Connects to `server` (`http://host:port`) and authenticates every call with `token`.
    pub async fn open(server: &str, token: &str) -> Result<Self, CtlError> {
        let auth = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| CtlError::Usage("the token holds characters a header cannot".into()))?;
        let connect = |source| CtlError::Connect {
            server: server.to_owned(),
            source,
        };
        let channel = Endpoint::from_shared(server.to_owned())
            .map_err(connect)?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(connect)?;
        Ok(Self { channel, auth })
    }

    /// A request carrying the token.
    pub fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("authorization", self.auth.clone());
        request
    }

    /// `chatd.v1.ChatService`.
    pub fn chats(&self) -> ChatServiceClient<Channel> {
        ChatServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `chatd.v1.TemplateService`.
    pub fn templates(&self) -> TemplateServiceClient<Channel> {
        TemplateServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `chatd.v1.WorkspaceService`.
    pub fn workspaces(&self) -> WorkspaceServiceClient<Channel> {
        WorkspaceServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
    }

    /// `chatd.v1.AdminService`.
    pub fn admin(&self) -> AdminServiceClient<Channel> {
        AdminServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_RESPONSE_BYTES)
    }
}
