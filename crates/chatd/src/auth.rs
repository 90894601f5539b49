//! Reading credentials from requests and mapping store failures to statuses, shared by the
//! services.

use std::future::Future;
use std::sync::Arc;

use chatstate::TransitionError;
use chatstore::StoreError;
use chatstore::identity::Caller;
use chatstore::prelude::*;
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt as _};
use uuid::Uuid;

/// The `domain` of every `google.rpc.ErrorInfo` chatd sends.
pub(crate) const ERROR_DOMAIN: &str = "chatd.dev";

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

/// The caller of a user API, from `authorization: Bearer <API token>`.
pub(crate) async fn caller<T>(
    store: &dyn Database,
    request: &Request<T>,
) -> Result<Caller, Status> {
    let token = bearer(request, "API token")?;
    store
        .authenticate(token)
        .await
        .map_err(store_status)?
        .ok_or_else(|| Status::unauthenticated("unknown, revoked or expired API token"))
}

/// How often an open stream checks that its caller may still read it.
pub(crate) const STREAM_RECHECK_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3);

/// A client stream that ends with UNAUTHENTICATED once its caller's token no longer
/// authenticates (revoked, expired, its user suspended), or with PERMISSION_DENIED once
/// `allowed` says the caller lost access (removed from the organization), checked every
/// [`STREAM_RECHECK_INTERVAL`]. A failed check (the database away) keeps the stream.
pub(crate) struct UntilRevoked<S> {
    inner: S,
    revoked: Option<std::pin::Pin<Box<dyn Future<Output = Status> + Send>>>,
    ended: bool,
    _slot: StreamSlot,
}

/// The most streams (chat streams, watches, build logs) one user may have open on one replica.
pub(crate) const MAX_STREAMS_PER_USER: usize = 64;

/// The open streams of each user on this replica.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamSlots(Arc<std::sync::Mutex<std::collections::HashMap<Uuid, usize>>>);

impl StreamSlots {
    /// A slot for one more stream of `user`; RESOURCE_EXHAUSTED when they have
    /// [`MAX_STREAMS_PER_USER`] open.
    pub(crate) fn take(&self, user: Uuid) -> Result<StreamSlot, Status> {
        let mut open = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = open.entry(user).or_default();
        if *count >= MAX_STREAMS_PER_USER {
            return Err(with_reason(
                Code::ResourceExhausted,
                format!(
                    "this user has {MAX_STREAMS_PER_USER} streams open on this server; close one \
                     first"
                ),
                "TOO_MANY_STREAMS",
            ));
        }
        *count += 1;
        Ok(StreamSlot {
            slots: self.clone(),
            user,
        })
    }
}

/// One open stream of a user, given back when dropped.
pub(crate) struct StreamSlot {
    slots: StreamSlots,
    user: Uuid,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = open.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                open.remove(&self.user);
            }
        }
    }
}

/// The check of [`UntilRevoked`], made from the request before it is consumed, with the
/// stream's slot.
pub(crate) struct Revocation {
    revoked: std::pin::Pin<Box<dyn Future<Output = Status> + Send>>,
    slot: StreamSlot,
}

impl Revocation {
    /// Watches the token of `request`, holding `slot` while the stream is open; `allowed` says
    /// whether its caller may still read.
    pub(crate) fn of<T>(
        store: Arc<dyn Database>,
        request: &Request<T>,
        slot: StreamSlot,
        allowed: impl Fn(&Caller) -> bool + Send + 'static,
    ) -> Result<Self, Status> {
        let token = bearer(request, "API token")?.to_owned();
        let revoked = async move {
            loop {
                tokio::time::sleep(STREAM_RECHECK_INTERVAL).await;
                match store.authenticate(&token).await {
                    Ok(None) => {
                        return Status::unauthenticated(
                            "the API token was revoked or has expired, or its user was suspended",
                        );
                    }
                    Ok(Some(caller)) if !allowed(&caller) => {
                        return Status::permission_denied("the caller lost access to this stream");
                    }
                    Ok(Some(_)) | Err(_) => {}
                }
            }
        };
        Ok(Self {
            revoked: Box::pin(revoked),
            slot,
        })
    }

    /// `inner`, ended once the caller loses access.
    pub(crate) fn guard<S>(self, inner: S) -> UntilRevoked<S> {
        UntilRevoked {
            inner,
            revoked: Some(self.revoked),
            ended: false,
            _slot: self.slot,
        }
    }
}

impl<S, T> futures_util::Stream for UntilRevoked<S>
where
    S: futures_util::Stream<Item = Result<T, Status>> + Unpin,
{
    type Item = Result<T, Status>;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        use std::task::Poll;
        if self.ended {
            return Poll::Ready(None);
        }
        if let Some(revoked) = self.revoked.as_mut()
            && let Poll::Ready(status) = revoked.as_mut().poll(cx)
        {
            // The inner stream is dropped with this one, which ends its feeding task.
            self.revoked = None;
            self.ended = true;
            return Poll::Ready(Some(Err(status)));
        }
        std::pin::Pin::new(&mut self.inner).poll_next(cx)
    }
}

/// PERMISSION_DENIED unless the caller is an admin; `what` says what needs the role
/// ("creating users").
pub(crate) fn require_admin(caller: &Caller, what: &str) -> Result<(), Status> {
    if caller.role == "admin" {
        Ok(())
    } else {
        Err(with_reason(
            Code::PermissionDenied,
            format!("{what} needs the admin role"),
            "ADMIN_REQUIRED",
        ))
    }
}

/// NOT_FOUND saying `<what> <id> not found`, with the ErrorInfo `reason`. Also the answer for
/// what the caller may not see, so it never reveals that something exists.
pub(crate) fn not_found(what: &str, id: impl std::fmt::Display, reason: &str) -> Status {
    with_reason(Code::NotFound, format!("{what} {id} not found"), reason)
}

/// INVALID_ARGUMENT unless the text field has at most `max` characters.
pub(crate) fn check_len(field: &str, value: &str, max: usize) -> Result<(), Status> {
    if value.chars().count() > max {
        return Err(Status::invalid_argument(format!(
            "{field} is longer than {max} characters"
        )));
    }
    Ok(())
}

/// A request field that must be a UUID.
pub(crate) fn parse_id(field: &str, value: &str) -> Result<Uuid, Status> {
    if value.is_empty() {
        return Err(Status::invalid_argument(format!("{field} is required")));
    }
    Uuid::try_parse(value)
        .map_err(|_| Status::invalid_argument(format!("{field} {value:?} is not a UUID")))
}

/// An optional request field that must be a UUID when set (an empty string counts as unset).
pub(crate) fn parse_optional_id(field: &str, value: Option<&str>) -> Result<Option<Uuid>, Status> {
    match value {
        None | Some("") => Ok(None),
        Some(v) => parse_id(field, v).map(Some),
    }
}

/// A status with a `google.rpc.ErrorInfo` naming the machine-readable `reason`.
pub(crate) fn with_reason(code: Code, message: impl Into<String>, reason: &str) -> Status {
    Status::with_error_details(
        code,
        message,
        ErrorDetails::with_error_info(reason, ERROR_DOMAIN, std::collections::HashMap::new()),
    )
}

/// A store failure as a status (spec/engine.md §16): what the caller asked for that does not
/// exist → NOT_FOUND, a transition the state machine refuses → FAILED_PRECONDITION, bad input →
/// INVALID_ARGUMENT, a full queue → RESOURCE_EXHAUSTED, data the database refuses →
/// INVALID_ARGUMENT; anything else is ours, logged, and UNAVAILABLE with a `RetryInfo`.
pub(crate) fn store_status(err: StoreError) -> Status {
    match err {
        StoreError::ChatNotFound(id) => with_reason(
            Code::NotFound,
            format!("chat {id} not found"),
            "CHAT_NOT_FOUND",
        ),
        StoreError::MessageNotFound(id) => with_reason(
            Code::NotFound,
            format!("message {id} not found in this chat"),
            "MESSAGE_NOT_FOUND",
        ),
        StoreError::QueuedMessageNotFound(id) => with_reason(
            Code::NotFound,
            format!("queued message {id} not found in this chat"),
            "QUEUED_MESSAGE_NOT_FOUND",
        ),
        StoreError::MessageNotUser(id) => with_reason(
            Code::InvalidArgument,
            format!("message {id} is not a user message; only user messages can be edited"),
            "MESSAGE_NOT_USER",
        ),
        StoreError::NoDefaultModelConfig => with_reason(
            Code::FailedPrecondition,
            "the organization has no usable model configuration: an admin must create one \
             (chatctl admin model create), or chatd must be started with ANTHROPIC_API_KEY or \
             OPENAI_API_KEY in its environment; or pass model_config_id",
            "NO_DEFAULT_MODEL_CONFIG",
        ),
        StoreError::Transition(t) => transition_status(t),
        StoreError::InvalidInput(message) => {
            with_reason(Code::InvalidArgument, message, "INVALID_INPUT")
        }
        StoreError::Conflict(message) => with_reason(Code::AlreadyExists, message, "CONFLICT"),
        StoreError::NotFound(message) => with_reason(Code::NotFound, message, "NOT_FOUND"),
        StoreError::Precondition(message) => {
            with_reason(Code::FailedPrecondition, message, "FAILED_PRECONDITION")
        }
        // The database refused the request's data: retrying the same request cannot help.
        other if other.is_permanent() => {
            tracing::warn!(error = %crate::error_chain(&other), "the database refused a request's data");
            with_reason(
                Code::InvalidArgument,
                "the database refused the request's data (a value it cannot store)",
                "DATA_REFUSED",
            )
        }
        other => {
            let database = crate::DATABASE_NAME.get().map_or("", String::as_str);
            tracing::error!(database, error = %crate::error_chain(&other), "store call failed");
            let message = if other.is_disk_full() {
                "the control plane's database is out of disk space; retry once an operator has \
                 freed space"
            } else {
                "the control plane's database is unavailable; retry"
            };
            let mut details =
                ErrorDetails::with_retry_info(Some(std::time::Duration::from_secs(1)));
            details.set_error_info(
                "DATABASE_UNAVAILABLE",
                ERROR_DOMAIN,
                std::collections::HashMap::new(),
            );
            Status::with_error_details(Code::Unavailable, message, details)
        }
    }
}

fn transition_status(t: TransitionError) -> Status {
    match t {
        TransitionError::ChatNotFound => {
            with_reason(Code::NotFound, "chat not found", "CHAT_NOT_FOUND")
        }
        TransitionError::MessageQueueFull { max } => with_reason(
            Code::ResourceExhausted,
            format!(
                "the chat's queue is full ({max} messages): wait for the running turn, or delete \
                 a queued message"
            ),
            "MESSAGE_QUEUE_FULL",
        ),
        TransitionError::InvalidState => with_reason(
            Code::FailedPrecondition,
            "the chat is in an invalid state; call ReconcileInvalidChat first",
            "INVALID_STATE",
        ),
        TransitionError::TransitionNotAllowed { from, transition } => with_reason(
            Code::FailedPrecondition,
            format!(
                "{transition:?} is not allowed while the chat is {}",
                describe(from)
            ),
            "TRANSITION_NOT_ALLOWED",
        ),
        TransitionError::NoPendingDynamicCalls => with_reason(
            Code::FailedPrecondition,
            "no client-executed tool calls are pending",
            "NO_PENDING_DYNAMIC_CALLS",
        ),
        TransitionError::NotOwned => with_reason(
            Code::FailedPrecondition,
            "the chat is not owned by any worker",
            "NOT_OWNED",
        ),
    }
}

/// A chat state in words: `running with queued messages`, `archived and waiting`.
fn describe(state: chatstate::ExecState) -> String {
    let Some(status) = state.status() else {
        return "in an invalid state".to_owned();
    };
    let mut text = match status {
        chatstate::ChatStatus::RequiresAction => "waiting for client tool results".to_owned(),
        chatstate::ChatStatus::Error => "in error".to_owned(),
        other => other.as_str().to_owned(),
    };
    if state.is_archived() {
        text = format!("archived and {text}");
    }
    if state.has_queue() {
        text.push_str(" with queued messages");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_has_a_bounded_number_of_open_streams() {
        let slots = StreamSlots::default();
        let (ada, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let mut open: Vec<StreamSlot> = (0..MAX_STREAMS_PER_USER)
            .map(|_| slots.take(ada).unwrap())
            .collect();
        let refused = slots.take(ada).err().unwrap();
        assert_eq!(refused.code(), Code::ResourceExhausted);
        assert!(slots.take(bob).is_ok(), "another user is not affected");
        open.pop();
        assert!(slots.take(ada).is_ok(), "a closed stream frees its slot");
        drop(open);
        assert!(slots.0.lock().unwrap().is_empty(), "no user holds a slot");
    }

    #[test]
    fn store_errors_map_to_the_spec_codes() {
        let id = Uuid::nil();
        let cases = [
            (
                StoreError::ChatNotFound(id),
                Code::NotFound,
                "CHAT_NOT_FOUND",
            ),
            (
                StoreError::MessageNotFound(1),
                Code::NotFound,
                "MESSAGE_NOT_FOUND",
            ),
            (
                StoreError::MessageNotUser(1),
                Code::InvalidArgument,
                "MESSAGE_NOT_USER",
            ),
            (
                StoreError::NoDefaultModelConfig,
                Code::FailedPrecondition,
                "NO_DEFAULT_MODEL_CONFIG",
            ),
            (
                StoreError::Transition(TransitionError::MessageQueueFull { max: 20 }),
                Code::ResourceExhausted,
                "MESSAGE_QUEUE_FULL",
            ),
            (
                StoreError::InvalidInput("empty".into()),
                Code::InvalidArgument,
                "INVALID_INPUT",
            ),
            (
                StoreError::NotFound("user x not found".into()),
                Code::NotFound,
                "NOT_FOUND",
            ),
            (
                StoreError::Precondition("in use".into()),
                Code::FailedPrecondition,
                "FAILED_PRECONDITION",
            ),
            (
                StoreError::FenceMismatch("x"),
                Code::Unavailable,
                "DATABASE_UNAVAILABLE",
            ),
        ];
        for (err, code, reason) in cases {
            let status = store_status(err);
            assert_eq!(status.code(), code, "{status:?}");
            let info = status.get_details_error_info().expect("an ErrorInfo");
            assert_eq!(info.reason, reason);
            assert_eq!(info.domain, ERROR_DOMAIN);
        }
        let unavailable = store_status(StoreError::FenceMismatch("x"));
        assert!(unavailable.get_details_retry_info().is_some());
    }

    #[test]
    fn refused_transitions_say_the_state_in_words() {
        let status = store_status(StoreError::Transition(
            TransitionError::TransitionNotAllowed {
                from: chatstate::ExecState::XE1,
                transition: chatstate::Transition::Interrupt,
            },
        ));
        assert_eq!(status.code(), Code::FailedPrecondition);
        assert_eq!(
            status.message(),
            "Interrupt is not allowed while the chat is archived and in error with queued messages"
        );
    }

    #[test]
    fn ids_are_checked() {
        assert_eq!(
            parse_id("chat_id", "").unwrap_err().code(),
            Code::InvalidArgument
        );
        let bad = parse_id("chat_id", "nope").unwrap_err();
        assert_eq!(bad.message(), "chat_id \"nope\" is not a UUID");
        assert_eq!(parse_optional_id("workspace_id", Some("")).unwrap(), None);
        assert!(parse_optional_id("workspace_id", None).unwrap().is_none());
        let id = Uuid::new_v4();
        assert_eq!(
            parse_optional_id("workspace_id", Some(&id.to_string())).unwrap(),
            Some(id)
        );
    }
}
