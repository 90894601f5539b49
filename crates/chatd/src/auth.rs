//! Reading credentials from requests and mapping store failures to statuses, shared by the
//! services.

use chatstore::StoreError;
use tonic::{Request, Status};

/// The token of `authorization: Bearer <token>`; `what` names it in the error ("API token",
/// "agent token").
pub(crate) fn bearer<'r, T>(request: &'r Request<T>, what: &str) -> Result<&'r str, Status> {
    request
        .metadata()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            Status::unauthenticated(format!("missing {what} (authorization: Bearer <token>)"))
        })
}

/// A store failure as a status: bad input is the caller's, anything else is ours and logged.
pub(crate) fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::InvalidInput(message) => Status::invalid_argument(message),
        StoreError::Conflict(message) => Status::already_exists(message),
        other => {
            tracing::error!(error = %other, "store call failed");
            Status::unavailable("the control plane's database is unavailable; retry")
        }
    }
}
