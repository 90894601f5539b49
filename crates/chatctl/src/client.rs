//! The connection to a chatd server: one channel, the caller's token on every call.

use std::time::Duration;

use chatproto::chatd::v1::admin_service_client::AdminServiceClient;
use chatproto::chatd::v1::chat_service_client::ChatServiceClient;
use chatproto::chatd::v1::template_service_client::TemplateServiceClient;
use chatproto::chatd::v1::workspace_service_client::WorkspaceServiceClient;
use tonic::Request;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::error::CtlError;

/// Largest response chatctl accepts (history pages and template versions can be large).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// `err` and its causes, `: `-separated (tonic's own text is only "transport error").
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// A connected client.
#[derive(Debug, Clone)]
pub struct Conn {
    channel: Channel,
    auth: MetadataValue<tonic::metadata::Ascii>,
}

impl Conn {
    /// Connects to `server` (`http://host:port`, or `https://host:port` checked against the CA
    /// certificates in `ca_cert`, else the system's roots) and authenticates every call with
    /// `token`.
    pub async fn open(
        server: &str,
        token: &str,
        ca_cert: Option<&std::path::Path>,
    ) -> Result<Self, CtlError> {
        let auth = MetadataValue::try_from(format!("Bearer {token}"))
            .map_err(|_| CtlError::Usage("the token holds characters a header cannot".into()))?;
        let tls = ca_cert
            .map(chattls::ClientTls::from_ca_file)
            .transpose()
            .map_err(|err| CtlError::Usage(format!("--ca-cert: {err}")))?;
        let connect = |reason: String| CtlError::Connect {
            server: server.to_owned(),
            reason,
        };
        let channel = chattls::endpoint(server, tls.as_ref())
            .map_err(|err| connect(chain(&err)))?
            .connect_timeout(Duration::from_secs(10))
            .connect()
            .await
            .map_err(|err| connect(chain(&err)))?;
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
