//! `chatd.v1.ChatService` (spec/engine.md §16): the user-facing chat API over the store. Every
//! call is authenticated and scoped to the caller: a chat, workspace, organization or model
//! configuration the caller may not use answers NOT_FOUND, exactly like one that does not exist.
//! Requests are validated here, before they reach the store; the store's state machine decides
//! what a transition may do. The engine picks the resulting work up through the database.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use chatproto::chatd::v1 as pb;
use chatproto::chatd::v1::chat_service_server::{ChatService, ChatServiceServer};
use chatstate::BusyBehavior;
use chatstore::identity::Caller;
use chatstore::prelude::*;
use chatstore::types::{Chat, NewChat, NewMessage, Role};
use chatstore::{
    Applied, Change, ChatCursor, ChatListQuery, ChatMetadata, MessagePage, Store, StoreError,
    ToolResultInput,
};
use serde_json::{Value, json};
use tonic::{Code, Request, Response, Status};
use uuid::Uuid;

use crate::auth::{
    Revocation, StreamSlots, UntilRevoked, caller, parse_id, parse_optional_id, store_status,
    with_reason,
};
use crate::convert;
use crate::paging::page_size;
use crate::stream::{ChatEvents, Streams};
use crate::watch::{WatchEvents, Watches};

/// Limits on what a client may attach to a chat.
const MAX_TITLE_CHARS: usize = 200;
const MAX_SYSTEM_PROMPT_BYTES: usize = 64 * 1024;
const MAX_LABELS: usize = 32;
const MAX_LABEL_BYTES: usize = 256;
const MAX_DYNAMIC_TOOLS: usize = 64;
/// The most chats one user may have running at once.
pub(crate) const MAX_RUNNING_CHATS_PER_USER: i64 = 20;

/// Largest request the service decodes: messages are capped at 1 MiB by the store, so a bit
/// more than that reaches it and gets its precise refusal.
const MAX_REQUEST_BYTES: usize = 2 * 1024 * 1024;

/// The chat service.
#[derive(Debug, Clone)]
pub(crate) struct Chats {
    store: Arc<dyn Store>,
    workspaces: Arc<dyn Database>,
    streams: Streams,
    watches: Watches,
    slots: StreamSlots,
}

impl Chats {
    /// The service over the chat store and the workspace store (users, tokens, workspaces,
    /// model configurations; in the daemon both are the same store), with `streams`
    /// serving `StreamChat` and `watches` serving `WatchChats`, each taking one of the
    /// caller's `slots`.
    pub(crate) fn new(
        store: Arc<dyn Store>,
        workspaces: Arc<dyn Database>,
        streams: Streams,
        watches: Watches,
        slots: StreamSlots,
    ) -> Self {
        Self {
            store,
            workspaces,
            streams,
            watches,
            slots,
        }
    }

    /// The tonic server.
    pub(crate) fn into_server(self) -> ChatServiceServer<Self> {
        ChatServiceServer::new(self).max_decoding_message_size(MAX_REQUEST_BYTES)
    }

    /// RESOURCE_EXHAUSTED when the user already has [`MAX_RUNNING_CHATS_PER_USER`] chats
    /// running: one user cannot occupy every worker.
    async fn room_for_a_turn(&self, user_id: Uuid) -> Result<(), Status> {
        let running = self
            .store
            .running_chats(user_id)
            .await
            .map_err(store_status)?;
        if running >= MAX_RUNNING_CHATS_PER_USER {
            return Err(with_reason(
                Code::ResourceExhausted,
                format!(
                    "{running} of your chats are running, the most allowed at once; wait for one \
                     to finish or stop one"
                ),
                "TOO_MANY_RUNNING_CHATS",
            ));
        }
        Ok(())
    }

    async fn caller<T>(&self, request: &Request<T>) -> Result<Caller, Status> {
        caller(self.workspaces.as_ref(), request).await
    }

    /// The caller's chat, or NOT_FOUND.
    async fn owned_chat(&self, caller: &Caller, chat_id: &str) -> Result<Chat, Status> {
        let id = parse_id("chat_id", chat_id)?;
        match self.store.chat(id).await {
            Ok(chat) if chat.owner_id == caller.user_id => Ok(chat),
            Ok(_) | Err(StoreError::ChatNotFound(_)) => {
                Err(store_status(StoreError::ChatNotFound(id)))
            }
            Err(other) => Err(store_status(other)),
        }
    }

    /// A transition on the caller's chat.
    async fn apply(
        &self,
        caller: &Caller,
        chat_id: &str,
        change: Change,
    ) -> Result<Applied, Status> {
        let chat = self.owned_chat(caller, chat_id).await?;
        self.store
            .apply(chat.id, change, None)
            .await
            .map_err(store_status)
    }

    /// The RPCs that are one transition of the caller's chat and answer with the chat.
    async fn chat_transition<T>(
        &self,
        request: &Request<T>,
        chat_id: &str,
        change: Change,
    ) -> Result<Response<pb::Chat>, Status> {
        let caller = self.caller(request).await?;
        let applied = self.apply(&caller, chat_id, change).await?;
        Ok(Response::new(convert::chat(&applied.chat)))
    }

    /// The model configuration the caller asked for, checked against the organization: one
    /// that is not the organization's, disabled or deleted is NOT_FOUND.
    async fn check_model_config(
        &self,
        organization_id: Uuid,
        requested: Option<&str>,
    ) -> Result<Option<Uuid>, Status> {
        let Some(id) = parse_optional_id("model_config_id", requested)? else {
            return Ok(None);
        };
        match self
            .workspaces
            .resolve_model_config(organization_id, Some(id))
            .await
        {
            Ok(config) if config.id == id => Ok(Some(id)),
            Ok(_) | Err(StoreError::NoDefaultModelConfig) => Err(with_reason(
                Code::NotFound,
                format!("model configuration {id} not found (or disabled) in this organization"),
                "MODEL_CONFIG_NOT_FOUND",
            )),
            Err(other) => Err(store_status(other)),
        }
    }

    /// The caller's live workspace in the organization, or NOT_FOUND.
    async fn owned_workspace(
        &self,
        caller: &Caller,
        organization_id: Uuid,
        workspace_id: Uuid,
    ) -> Result<chatstore::workspaces::Workspace, Status> {
        let not_found = || {
            with_reason(
                Code::NotFound,
                format!("workspace {workspace_id} not found"),
                "WORKSPACE_NOT_FOUND",
            )
        };
        match self.workspaces.workspace(workspace_id).await {
            Ok(w)
                if w.owner_id == caller.user_id
                    && w.organization_id == organization_id
                    && !w.deleted =>
            {
                Ok(w)
            }
            // A missing workspace is `InvalidInput` in the workspace store.
            Ok(_) | Err(StoreError::InvalidInput(_)) => Err(not_found()),
            Err(other) => Err(store_status(other)),
        }
    }
}

/// The organization a new chat goes to: the one asked for (the caller must belong to it), or
/// the caller's only one.
fn organization(caller: &Caller, requested: &str) -> Result<Uuid, Status> {
    match parse_optional_id("organization_id", Some(requested))? {
        Some(id) if caller.organizations.contains(&id) => Ok(id),
        Some(id) => Err(with_reason(
            Code::NotFound,
            format!("organization {id} not found"),
            "ORGANIZATION_NOT_FOUND",
        )),
        None => match caller.organizations.as_slice() {
            [only] => Ok(*only),
            [] => Err(with_reason(
                Code::FailedPrecondition,
                "you belong to no organization; ask an admin to add you to one",
                "NO_ORGANIZATION",
            )),
            many => Err(Status::invalid_argument(format!(
                "organization_id is required: you belong to {} organizations",
                many.len()
            ))),
        },
    }
}

fn check_title(title: &str) -> Result<String, Status> {
    let title = title.trim();
    if title.is_empty() {
        return Err(Status::invalid_argument("title must not be blank"));
    }
    if title.chars().count() > MAX_TITLE_CHARS {
        return Err(Status::invalid_argument(format!(
            "title is longer than {MAX_TITLE_CHARS} characters"
        )));
    }
    Ok(title.to_owned())
}

fn check_labels(
    labels: &std::collections::HashMap<String, String>,
) -> Result<BTreeMap<String, String>, Status> {
    if labels.len() > MAX_LABELS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_LABELS} labels are allowed, not {}",
            labels.len()
        )));
    }
    for (key, value) in labels {
        if key.trim().is_empty() {
            return Err(Status::invalid_argument("label keys must not be blank"));
        }
        if key.len() > MAX_LABEL_BYTES || value.len() > MAX_LABEL_BYTES {
            return Err(Status::invalid_argument(format!(
                "label {key:?} is longer than {MAX_LABEL_BYTES} bytes"
            )));
        }
    }
    Ok(labels.clone().into_iter().collect())
}

/// Client-executed tools as the store keeps them (`[{name, description, input_schema}]`).
fn check_dynamic_tools(tools: &[pb::DynamicTool]) -> Result<Option<Value>, Status> {
    if tools.is_empty() {
        return Ok(None);
    }
    if tools.len() > MAX_DYNAMIC_TOOLS {
        return Err(Status::invalid_argument(format!(
            "at most {MAX_DYNAMIC_TOOLS} dynamic tools are allowed"
        )));
    }
    let builtin: HashSet<String> = chattool::all_tools()
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    let mut seen = HashSet::new();
    let mut out = Vec::with_capacity(tools.len());
    for tool in tools {
        let name = tool.name.as_str();
        let valid_name = !name.is_empty()
            && name.len() <= 64
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !valid_name {
            return Err(Status::invalid_argument(format!(
                "dynamic tool name {name:?} must be 1-64 letters, digits, '_' or '-'"
            )));
        }
        if builtin.contains(name) {
            return Err(Status::invalid_argument(format!(
                "dynamic tool {name:?} has the name of a built-in tool"
            )));
        }
        if !seen.insert(name) {
            return Err(Status::invalid_argument(format!(
                "dynamic tool {name:?} is declared twice"
            )));
        }
        let schema = tool
            .input_schema
            .as_ref()
            .map_or_else(|| json!({"type": "object"}), convert::struct_json);
        if schema.get("type").and_then(Value::as_str) != Some("object") {
            return Err(Status::invalid_argument(format!(
                "the input_schema of dynamic tool {name:?} must be an object schema (\"type\": \"object\")"
            )));
        }
        out.push(json!({
            "name": name,
            "description": tool.description,
            "input_schema": schema,
        }));
    }
    Ok(Some(Value::Array(out)))
}

fn busy(b: i32) -> Result<BusyBehavior, Status> {
    match pb::BusyBehavior::try_from(b) {
        Ok(pb::BusyBehavior::Unspecified | pb::BusyBehavior::Queue) => Ok(BusyBehavior::Queue),
        Ok(pb::BusyBehavior::Interrupt) => Ok(BusyBehavior::Interrupt),
        Err(_) => Err(Status::invalid_argument(format!(
            "busy_behavior {b} is not a BusyBehavior"
        ))),
    }
}

/// The user message an applied send or edit put into history (the last one it inserted).
fn user_message(applied: &Applied) -> Option<pb::ChatMessage> {
    applied
        .inserted
        .iter()
        .rev()
        .find(|m| m.role == Role::User)
        .map(convert::message)
}

#[tonic::async_trait]
impl ChatService for Chats {
    async fn create_chat(
        &self,
        request: Request<pb::CreateChatRequest>,
    ) -> Result<Response<pb::Chat>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let organization_id = organization(&caller, &r.organization_id)?;
        let content = convert::input(&r.content, "the first message")?;
        self.room_for_a_turn(caller.user_id).await?;
        let title = r.title.as_deref().map(check_title).transpose()?;
        if r.system_prompt
            .as_ref()
            .is_some_and(|p| p.len() > MAX_SYSTEM_PROMPT_BYTES)
        {
            return Err(Status::invalid_argument(format!(
                "system_prompt is longer than {MAX_SYSTEM_PROMPT_BYTES} bytes"
            )));
        }
        let labels = check_labels(&r.labels)?;
        let dynamic_tools = check_dynamic_tools(&r.dynamic_tools)?;
        let workspace_id = match parse_optional_id("workspace_id", r.workspace_id.as_deref())? {
            Some(id) => Some(self.owned_workspace(&caller, organization_id, id).await?.id),
            None => None,
        };
        let requested = self
            .check_model_config(organization_id, r.model_config_id.as_deref())
            .await?;
        let model = self
            .workspaces
            .resolve_model_config(organization_id, requested)
            .await
            .map_err(store_status)?;
        let applied = self
            .store
            .create_chat(NewChat {
                organization_id,
                owner_id: caller.user_id,
                model_config_id: model.id,
                content,
                title,
                system_prompt: r.system_prompt.filter(|p| !p.trim().is_empty()),
                workspace_id,
                reasoning_effort: r.reasoning_effort.filter(|e| !e.is_empty()),
                labels,
                dynamic_tools,
            })
            .await
            .map_err(store_status)?;
        tracing::info!(chat_id = %applied.chat.id, user_id = %caller.user_id, "chat created");
        Ok(Response::new(convert::chat(&applied.chat)))
    }

    async fn list_chats(
        &self,
        request: Request<pb::ListChatsRequest>,
    ) -> Result<Response<pb::ListChatsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let limit = page_size(r.page_size)?;
        let after = if r.page_token.is_empty() {
            None
        } else {
            Some(ChatCursor::decode(&r.page_token).ok_or_else(|| {
                Status::invalid_argument("page_token is not one this server handed out")
            })?)
        };
        let organization_id = parse_optional_id("organization_id", Some(&r.organization_id))?;
        let mut chats = self
            .store
            .list_chats(&ChatListQuery {
                owner_id: caller.user_id,
                organization_id,
                archived: r.archived.unwrap_or(false),
                labels: check_labels(&r.labels)?,
                title_query: r.title_query,
                after,
                limit: limit + 1,
            })
            .await
            .map_err(store_status)?;
        let more = chats.len() > usize::try_from(limit).unwrap_or(usize::MAX);
        chats.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        let next_page_token = match chats.last() {
            Some(last) if more => ChatCursor::of(last).encode(),
            _ => String::new(),
        };
        Ok(Response::new(pb::ListChatsResponse {
            chats: chats.iter().map(convert::chat).collect(),
            next_page_token,
        }))
    }

    async fn get_chat(
        &self,
        request: Request<pb::GetChatRequest>,
    ) -> Result<Response<pb::Chat>, Status> {
        let caller = self.caller(&request).await?;
        let chat = self.owned_chat(&caller, &request.get_ref().chat_id).await?;
        Ok(Response::new(convert::chat(&chat)))
    }

    async fn update_chat(
        &self,
        request: Request<pb::UpdateChatRequest>,
    ) -> Result<Response<pb::Chat>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let mut chat = self.owned_chat(&caller, &r.chat_id).await?;
        // Everything is checked before anything is written.
        let metadata = ChatMetadata {
            title: r.title.as_deref().map(check_title).transpose()?,
            pin_order: r.pin_order,
            labels: r
                .labels
                .as_ref()
                .map(|l| check_labels(&l.labels))
                .transpose()?,
        };
        if r.archived == Some(true) && r.pin_order.is_some_and(|p| p != 0) {
            return Err(Status::invalid_argument(
                "an archived chat cannot be pinned: archiving resets the pin order",
            ));
        }
        if r.pin_order.is_some_and(|p| p < 0) {
            return Err(Status::invalid_argument("pin_order must not be negative"));
        }
        let binding = match r.workspace_id.as_deref() {
            None => None,
            Some("") => Some(None),
            Some(id) => {
                let id = parse_id("workspace_id", id)?;
                let workspace = self
                    .owned_workspace(&caller, chat.organization_id, id)
                    .await?;
                let build = self
                    .workspaces
                    .latest_build(workspace.id)
                    .await
                    .map_err(store_status)?
                    .ok_or_else(|| {
                        with_reason(
                            Code::FailedPrecondition,
                            format!("workspace {id} has no build yet"),
                            "WORKSPACE_NOT_BUILT",
                        )
                    })?;
                Some(Some((workspace.id, build.id)))
            }
        };

        if let Some(archived) = r.archived {
            chat = self
                .store
                .apply(chat.id, Change::SetArchived(archived), None)
                .await
                .map_err(store_status)?
                .chat;
        }
        match binding {
            None => {}
            Some(None) => {
                chat = self
                    .store
                    .unbind_workspace(chat.id)
                    .await
                    .map_err(store_status)?
            }
            Some(Some((workspace_id, build_id))) => {
                chat = self
                    .store
                    .bind_workspace(chat.id, workspace_id, build_id)
                    .await
                    .map_err(store_status)?;
            }
        }
        if metadata != ChatMetadata::default() {
            chat = self
                .store
                .update_chat_metadata(chat.id, &metadata)
                .await
                .map_err(store_status)?;
        }
        Ok(Response::new(convert::chat(&chat)))
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let chat = self.owned_chat(&caller, &r.chat_id).await?;
        let page = MessagePage {
            before_id: r.before_id,
            after_id: r.after_id,
            limit: page_size(r.page_size)?,
        };
        let (messages, has_more) = self
            .store
            .messages_page(chat.id, &page)
            .await
            .map_err(store_status)?;
        let queue = self.store.queue(chat.id).await.map_err(store_status)?;
        Ok(Response::new(pb::ListMessagesResponse {
            messages: messages.iter().map(convert::message).collect(),
            queued_messages: queue.iter().map(convert::queued).collect(),
            has_more,
        }))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let chat = self.owned_chat(&caller, &r.chat_id).await?;
        let content = convert::input(&r.content, "the message")?;
        let busy = busy(r.busy_behavior)?;
        if !matches!(
            chat.status,
            chatstate::ChatStatus::Running | chatstate::ChatStatus::Interrupting
        ) {
            // The message starts a turn (to a busy chat it queues, or replaces the turn).
            self.room_for_a_turn(caller.user_id).await?;
        }
        let mut message = NewMessage::user(caller.user_id, content);
        message.model_config_id = self
            .check_model_config(chat.organization_id, r.model_config_id.as_deref())
            .await?;
        let applied = self
            .store
            .apply(
                chat.id,
                Change::SendMessage {
                    message,
                    busy,
                    reasoning_effort: r.reasoning_effort.filter(|e| !e.is_empty()),
                },
                None,
            )
            .await
            .map_err(store_status)?;
        let queued = applied.queued.as_ref().map(convert::queued);
        Ok(Response::new(pb::SendMessageResponse {
            message: if queued.is_some() {
                None
            } else {
                user_message(&applied)
            },
            messages: applied.inserted.iter().map(convert::message).collect(),
            queued: queued.is_some(),
            queued_message: queued,
        }))
    }

    async fn edit_message(
        &self,
        request: Request<pb::EditMessageRequest>,
    ) -> Result<Response<pb::EditMessageResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let chat = self.owned_chat(&caller, &r.chat_id).await?;
        let content = convert::input(&r.content, "the replacement")?;
        let mut replacement = NewMessage::user(caller.user_id, content);
        replacement.model_config_id = self
            .check_model_config(chat.organization_id, r.model_config_id.as_deref())
            .await?;
        let applied = self
            .store
            .apply(
                chat.id,
                Change::EditMessage {
                    message_id: r.message_id,
                    replacement,
                },
                None,
            )
            .await
            .map_err(store_status)?;
        Ok(Response::new(pb::EditMessageResponse {
            message: user_message(&applied),
            messages: applied.inserted.iter().map(convert::message).collect(),
            deleted_message_ids: applied.deleted_message_ids.clone(),
        }))
    }

    async fn delete_queued_message(
        &self,
        request: Request<pb::DeleteQueuedMessageRequest>,
    ) -> Result<Response<pb::DeleteQueuedMessageResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let change = Change::DeleteQueuedMessage {
            queued_message_id: r.queued_message_id,
        };
        self.apply(&caller, &r.chat_id, change).await?;
        Ok(Response::new(pb::DeleteQueuedMessageResponse {}))
    }

    async fn promote_queued_message(
        &self,
        request: Request<pb::PromoteQueuedMessageRequest>,
    ) -> Result<Response<pb::PromoteQueuedMessageResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        let change = Change::PromoteQueuedMessage {
            queued_message_id: r.queued_message_id,
        };
        let applied = self.apply(&caller, &r.chat_id, change).await?;
        let message = user_message(&applied);
        let queued_message = if message.is_some() {
            None
        } else {
            let queue = self
                .store
                .queue(applied.chat.id)
                .await
                .map_err(store_status)?;
            queue.first().map(convert::queued)
        };
        Ok(Response::new(pb::PromoteQueuedMessageResponse {
            message,
            queued_message,
        }))
    }

    async fn interrupt_chat(
        &self,
        request: Request<pb::InterruptChatRequest>,
    ) -> Result<Response<pb::Chat>, Status> {
        self.chat_transition(&request, &request.get_ref().chat_id, Change::Interrupt)
            .await
    }

    async fn submit_tool_results(
        &self,
        request: Request<pb::SubmitToolResultsRequest>,
    ) -> Result<Response<pb::SubmitToolResultsResponse>, Status> {
        let caller = self.caller(&request).await?;
        let r = request.into_inner();
        if r.results.is_empty() {
            return Err(Status::invalid_argument(
                "results is empty: answer every pending dynamic tool call",
            ));
        }
        let mut results = Vec::with_capacity(r.results.len());
        for result in r.results {
            if serde_json::from_str::<Value>(&result.output).is_err() {
                return Err(Status::invalid_argument(format!(
                    "the output for tool call {:?} is not valid JSON (wrap text in quotes)",
                    result.tool_call_id
                )));
            }
            results.push(ToolResultInput {
                tool_call_id: result.tool_call_id,
                output: result.output,
                is_error: result.is_error,
            });
        }
        self.apply(
            &caller,
            &r.chat_id,
            Change::CompleteRequiresAction { results },
        )
        .await?;
        Ok(Response::new(pb::SubmitToolResultsResponse {}))
    }

    async fn compact_chat(
        &self,
        request: Request<pb::CompactChatRequest>,
    ) -> Result<Response<pb::Chat>, Status> {
        let caller = self.caller(&request).await?;
        let chat = self.owned_chat(&caller, &request.get_ref().chat_id).await?;
        let history = self
            .store
            .history(chat.id, false)
            .await
            .map_err(store_status)?;
        if !chatengine::step::has_compactable(&history) {
            return Err(with_reason(
                Code::FailedPrecondition,
                "nothing to compact: the model has not replied since the chat's last compaction",
                "NOTHING_TO_COMPACT",
            ));
        }
        // A running chat is refused by the transition (FAILED_PRECONDITION, busy).
        let applied = self
            .store
            .apply(chat.id, Change::RequestCompaction, None)
            .await
            .map_err(store_status)?;
        Ok(Response::new(convert::chat(&applied.chat)))
    }

    async fn clear_chat(
        &self,
        request: Request<pb::ClearChatRequest>,
    ) -> Result<Response<pb::Chat>, Status> {
        self.chat_transition(&request, &request.get_ref().chat_id, Change::ClearContext)
            .await
    }

    async fn reconcile_invalid_chat(
        &self,
        request: Request<pb::ReconcileInvalidChatRequest>,
    ) -> Result<Response<pb::Chat>, Status> {
        let change = Change::ReconcileInvalidState;
        self.chat_transition(&request, &request.get_ref().chat_id, change)
            .await
    }

    type StreamChatStream = UntilRevoked<ChatEvents>;

    async fn stream_chat(
        &self,
        request: Request<pb::StreamChatRequest>,
    ) -> Result<Response<Self::StreamChatStream>, Status> {
        let caller = self.caller(&request).await?;
        if let Some(after) = request.get_ref().after_id
            && after < 0
        {
            return Err(Status::invalid_argument(format!(
                "after_id {after} is negative; message ids start at 1"
            )));
        }
        let chat = self.owned_chat(&caller, &request.get_ref().chat_id).await?;
        let organization = chat.organization_id;
        let slot = self.slots.take(caller.user_id)?;
        let revocation = Revocation::of(self.workspaces.clone(), &request, slot, move |caller| {
            caller.organizations.contains(&organization)
        })?;
        let events = self.streams.open(chat.id, request.get_ref().after_id);
        Ok(Response::new(revocation.guard(events)))
    }

    type WatchChatsStream = UntilRevoked<WatchEvents>;

    async fn watch_chats(
        &self,
        request: Request<pb::WatchChatsRequest>,
    ) -> Result<Response<Self::WatchChatsStream>, Status> {
        let caller = self.caller(&request).await?;
        let requested = &request.get_ref().organization_id;
        let organization_id = parse_optional_id("organization_id", Some(requested))?;
        let slot = self.slots.take(caller.user_id)?;
        let revocation = Revocation::of(self.workspaces.clone(), &request, slot, move |caller| {
            organization_id.is_none_or(|o| caller.organizations.contains(&o))
        })?;
        let events = self.watches.open(caller.user_id, organization_id);
        Ok(Response::new(revocation.guard(events)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(organizations: Vec<Uuid>) -> Caller {
        Caller {
            user_id: Uuid::new_v4(),
            role: "member".into(),
            key_id: Uuid::new_v4(),
            organizations,
        }
    }

    #[test]
    fn the_organization_is_the_callers_own() {
        let a = Uuid::new_v4();
        let b = Uuid::new_v4();
        assert_eq!(organization(&caller(vec![a]), "").unwrap(), a);
        assert_eq!(
            organization(&caller(vec![a, b]), &b.to_string()).unwrap(),
            b
        );
        let many = organization(&caller(vec![a, b]), "").unwrap_err();
        assert_eq!(many.code(), Code::InvalidArgument);
        let other = organization(&caller(vec![a]), &b.to_string()).unwrap_err();
        assert_eq!(other.code(), Code::NotFound);
        let none = organization(&caller(vec![]), "").unwrap_err();
        assert_eq!(none.code(), Code::FailedPrecondition);
        assert_eq!(
            organization(&caller(vec![a]), "x").unwrap_err().code(),
            Code::InvalidArgument
        );
    }

    #[test]
    fn page_sizes_default_and_cap() {
        assert_eq!(page_size(0).unwrap(), 50);
        assert_eq!(page_size(7).unwrap(), 7);
        assert_eq!(page_size(10_000).unwrap(), 200);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn dynamic_tools_are_checked() {
        let tool = |name: &str, schema: Option<Value>| pb::DynamicTool {
            name: name.into(),
            description: "d".into(),
            input_schema: schema.as_ref().and_then(convert::json_struct),
        };
        assert_eq!(check_dynamic_tools(&[]).unwrap(), None);
        let ok = check_dynamic_tools(&[tool("ask_user", None)])
            .unwrap()
            .unwrap();
        assert_eq!(ok[0]["input_schema"], json!({"type": "object"}));
        for bad in [
            vec![tool("", None)],
            vec![tool("has space", None)],
            vec![tool("execute", None)],
            vec![tool("a", None), tool("a", None)],
            vec![tool("a", Some(json!({"type": "string"})))],
        ] {
            let err = check_dynamic_tools(&bad).unwrap_err();
            assert_eq!(err.code(), Code::InvalidArgument, "{bad:?}");
        }
    }

    #[test]
    fn titles_and_labels_are_checked() {
        assert_eq!(check_title("  Fix it ").unwrap(), "Fix it");
        assert!(check_title("   ").is_err());
        assert!(check_title(&"x".repeat(201)).is_err());
        let labels = std::collections::HashMap::from([(" ".to_owned(), "v".to_owned())]);
        assert!(check_labels(&labels).is_err());
        let too_many: std::collections::HashMap<String, String> =
            (0..33).map(|i| (i.to_string(), String::new())).collect();
        assert!(check_labels(&too_many).is_err());
    }

    #[test]
    fn busy_behaviour_defaults_to_queue() {
        assert_eq!(busy(0).unwrap(), BusyBehavior::Queue);
        assert_eq!(busy(2).unwrap(), BusyBehavior::Interrupt);
        assert!(busy(9).is_err());
    }
}
