//! chatctl's errors and the exit codes they map to (documented in `chatctl --help` and the
//! README).

use std::io;
use std::path::PathBuf;

/// Exit codes of chatctl.
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// Any other failure (a server-side error, a local I/O error).
    pub const FAILURE: u8 = 1;
    /// Bad usage: unknown command or flag, missing argument.
    pub const USAGE: u8 = 2;
    /// Not logged in, a token the server refuses, or a call the token may not make.
    pub const AUTH: u8 = 3;
    /// What was asked for does not exist (or is not the caller's).
    pub const NOT_FOUND: u8 = 4;
    /// The server cannot be reached or is unavailable; retrying later may work.
    pub const UNAVAILABLE: u8 = 5;
    /// The server refused the request as it stands (bad input, a state that forbids it, a
    /// full queue, a name in use).
    pub const REFUSED: u8 = 6;
    /// `attach` watched the chat stop with an error.
    pub const CHAT_ERROR: u8 = 7;
}

/// Why a chatctl command failed.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// No server or token configured.
    #[error(
        "not logged in: run `chatctl login` (or pass --server and --token, or set CHATCTL_SERVER and CHATCTL_TOKEN)"
    )]
    NotLoggedIn,
    /// The config file or a token file cannot be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("{path} is not a valid chatctl config: {message}")]
    ConfigSyntax {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The server address is not a valid URL, or the connection failed.
    #[error("cannot reach the server at {server}: {reason}")]
    Connect {
        /// The address.
        server: String,
        /// The transport's reason, with its causes (a refused certificate says why).
        reason: String,
    },
    /// The server answered with an error status.
    #[error("{} ({:?})", .0.message(), .0.code())]
    Rpc(tonic::Status),
    /// The command line makes no sense as given.
    #[error("{0}")]
    Usage(String),
    /// A chat that `attach` followed stopped with an error.
    #[error("the chat stopped with an error: {0}")]
    ChatFailed(String),
    /// Writing the output failed (e.g. a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[source] io::Error),
}

impl From<tonic::Status> for CtlError {
    fn from(status: tonic::Status) -> Self {
        CtlError::Rpc(status)
    }
}

impl CtlError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> u8 {
        use tonic::Code;
        match self {
            CtlError::NotLoggedIn => exit::AUTH,
            CtlError::Usage(_) => exit::USAGE,
            CtlError::Connect { .. } => exit::UNAVAILABLE,
            CtlError::ChatFailed(_) => exit::CHAT_ERROR,
            CtlError::Rpc(status) => match status.code() {
                Code::Unauthenticated | Code::PermissionDenied => exit::AUTH,
                Code::NotFound => exit::NOT_FOUND,
                Code::Unavailable | Code::DeadlineExceeded => exit::UNAVAILABLE,
                Code::InvalidArgument
                | Code::FailedPrecondition
                | Code::AlreadyExists
                | Code::ResourceExhausted
                | Code::OutOfRange
                | Code::Aborted => exit::REFUSED,
                _ => exit::FAILURE,
            },
            CtlError::File { .. } | CtlError::ConfigSyntax { .. } | CtlError::Output(_) => {
                exit::FAILURE
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::{Code, Status};

    #[test]
    fn statuses_map_to_documented_exit_codes() {
        let cases = [
            (Code::Unauthenticated, exit::AUTH),
            (Code::PermissionDenied, exit::AUTH),
            (Code::NotFound, exit::NOT_FOUND),
            (Code::Unavailable, exit::UNAVAILABLE),
            (Code::InvalidArgument, exit::REFUSED),
            (Code::FailedPrecondition, exit::REFUSED),
            (Code::ResourceExhausted, exit::REFUSED),
            (Code::Internal, exit::FAILURE),
            (Code::Unimplemented, exit::FAILURE),
        ];
        for (code, expected) in cases {
            assert_eq!(
                CtlError::Rpc(Status::new(code, "x")).exit_code(),
                expected,
                "{code:?}"
            );
        }
        assert_eq!(CtlError::NotLoggedIn.exit_code(), exit::AUTH);
        assert_eq!(
            CtlError::ChatFailed("x".into()).exit_code(),
            exit::CHAT_ERROR
        );
    }
}
