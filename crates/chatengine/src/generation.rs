//! The generation task (spec/engine.md §12): load the chat under a consistent read and check the
//! fence; honour a pending retry delay; decide; act — one model call or one tool step — and
//! commit it. Failures of a model call follow spec/chatretry.md §7: classify, then finish with
//! a terminal error, or record the retry and try again in the same task after the delay.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use chaterror::{BoxError, Classification, ClassifyContext, ErrorKind, classify, full_text};
use chatmodel::{FinishReason, ModelRequest, StreamPart, ToolDefinition};
use chatretry::{CancelCause, RetryDecision, RetryEvent, guard_silence, normalize_attempt_error};
use chatstate::ChatStatus;
use chatstore::models::ModelConfig;
use chatstore::types::{Chat, Message, MessageUsage, NewMessage, Role};
use chatstore::{Change, StoreError};
use chattool::context::LEASE_LOST;
use chattool::{ChatScope, ToolContext, ToolResult};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use tracing::Instrument as _;

use crate::parts::EpisodeKey;
use crate::payload::{self, RetryStatus};
use crate::step::{self, Accumulator, Action, CompactionSource, LivePart, PendingCall};
use crate::{TaskCtx, TaskExit, cancelled};

/// Runs generation steps for one history version until a step commits (which supersedes this
/// task) or the task must stop.
/// [`run`], and when the database refused the turn's data for good (a permanent store error),
/// the turn ends in error saying so, so the chat never stays `running` with a write that can
/// never succeed.
pub(crate) async fn run_or_fail(t: TaskCtx) -> Result<(), TaskExit> {
    match run(t.clone()).await {
        Err(TaskExit::Store(err)) if err.is_permanent() => {
            let message = match &err {
                // The store's own reason is ours to show (e.g. a reply over the size limit).
                StoreError::InvalidInput(why) => format!("chatd could not store this turn: {why}"),
                _ => "chatd could not store this turn: the database refused its data".into(),
            };
            let c = Classification {
                message,
                detail: crate::error_chain(&err),
                kind: Some(ErrorKind::Generic),
                ..Classification::default()
            };
            finish_error(&t, &c, RetryStatus::Terminal, 0, None).await
        }
        other => other,
    }
}

pub(crate) async fn run(t: TaskCtx) -> Result<(), TaskExit> {
    loop {
        let snapshot = t
            .infra(|| t.shared.deps.store.snapshot(t.chat_id, 0))
            .await?;
        let chat = snapshot.chat;
        let history = snapshot.history;
        check_fence(&t, &chat)?;
        wait_for_pending_retry(&t, &chat).await?;

        let config = resolve_model_config(&t, &chat).await?;
        let situation = step::Situation {
            dynamic: step::dynamic_tool_names(&chat),
            max_steps: t.shared.config.max_steps_per_turn,
            compaction_requested: chat.compaction_requested_at.is_some(),
            compact_at: config
                .as_ref()
                .and_then(|c| step::compaction_limit(c.context_limit, c.compression_threshold)),
        };
        let action = step::decide(&history, &situation);
        let config = match (&action, config) {
            (Action::FinishTurn | Action::EnterRequiresAction | Action::ExecuteTools(_), c) => c,
            (_, Some(c)) => Some(c),
            (_, None) => return no_model_config(&t).await,
        };
        let outcome = match action {
            Action::FinishTurn => {
                t.apply(Change::FinishTurn, None).await?;
                return Ok(());
            }
            Action::EnterRequiresAction => {
                t.apply(Change::EnterRequiresAction, None).await?;
                return Ok(());
            }
            Action::ExecuteTools(calls) => {
                let span = tracing::info_span!("tool_step", chat_id = %t.chat_id, calls = calls.len(), generation_attempt = tracing::field::Empty, outcome = tracing::field::Empty);
                let done = execute_tools(&t, &chat, calls, config.as_ref())
                    .instrument(span.clone())
                    .await;
                span.record("outcome", exit_outcome(&done));
                return done;
            }
            Action::FailCompaction => {
                return fail_compaction(&t).await;
            }
            Action::Compact(source) => {
                let config = config.as_ref().unwrap_or_else(|| unreachable!());
                compact_step(&t, &history, config, source).await?
            }
            Action::Generate => {
                let config = config.as_ref().unwrap_or_else(|| unreachable!());
                let span = tracing::info_span!(
                    "model_call",
                    chat_id = %t.chat_id,
                    provider = %config.provider,
                    model = %config.model,
                    generation_attempt = tracing::field::Empty,
                    outcome = tracing::field::Empty,
                );
                let outcome = generate(&t, &chat, &history, config)
                    .instrument(span.clone())
                    .await;
                span.record("outcome", outcome_name(&outcome));
                match outcome? {
                    // spec/engine.md §12.6: the history overflowed the model's context. Compact
                    // it (once) and generate again, unless a compaction just ran.
                    Outcome::ContextOverflow if step::last_compaction(&history).is_some() => {
                        return fail_compaction(&t).await;
                    }
                    Outcome::ContextOverflow => {
                        compact_step(&t, &history, config, CompactionSource::Automatic).await?
                    }
                    other => other,
                }
            }
        };
        match outcome {
            Outcome::Committed | Outcome::ContextOverflow => return Ok(()),
            Outcome::RetryScheduled => {}
        }
    }
}

/// A compaction step in its span.
async fn compact_step(
    t: &TaskCtx,
    history: &[Message],
    config: &ModelConfig,
    source: CompactionSource,
) -> Result<Outcome, TaskExit> {
    let span = tracing::info_span!(
        "compaction",
        chat_id = %t.chat_id,
        source = source.as_str(),
        generation_attempt = tracing::field::Empty,
        outcome = tracing::field::Empty,
    );
    let outcome = crate::compaction::compact(t, history, config, source)
        .instrument(span.clone())
        .await;
    span.record("outcome", outcome_name(&outcome));
    outcome
}

/// A step's result as a span's `outcome`.
fn outcome_name(outcome: &Result<Outcome, TaskExit>) -> &'static str {
    match outcome {
        Ok(Outcome::Committed) => "committed",
        Ok(Outcome::RetryScheduled) => "retry_scheduled",
        Ok(Outcome::ContextOverflow) => "context_overflow",
        Err(exit) => exit.outcome(),
    }
}

/// Ends the turn with the compaction error of spec/chaterror.md §12.1.
async fn fail_compaction(t: &TaskCtx) -> Result<(), TaskExit> {
    let c = Classification::compaction_still_over_limit();
    finish_error(t, &c, RetryStatus::Terminal, 0, None).await
}

/// How a model call (or a compaction) ended.
pub(crate) enum Outcome {
    /// Its step was committed (or the turn finished in error).
    Committed,
    /// A retry was recorded and waited for: decide again.
    RetryScheduled,
    /// The call overflowed the model's context window; nothing was written.
    ContextOverflow,
}

/// A task result as a span's `outcome`.
pub(crate) fn exit_outcome(done: &Result<(), TaskExit>) -> &'static str {
    match done {
        Ok(()) => "committed",
        Err(exit) => exit.outcome(),
    }
}

fn check_fence(t: &TaskCtx, chat: &Chat) -> Result<(), TaskExit> {
    if chat.worker_id != Some(t.shared.worker_id) || chat.runner_id != Some(t.runner_id) {
        return Err(TaskExit::Fenced("the chat has another owner".into()));
    }
    if chat.status != ChatStatus::Running || chat.archived {
        return Err(TaskExit::Fenced("the chat is not running".into()));
    }
    if chat.history_version != t.history_version {
        return Err(TaskExit::Fenced("the history changed".into()));
    }
    Ok(())
}

/// A restart never shortens a back-off (spec/chatretry.md §7, chatd rule).
async fn wait_for_pending_retry(t: &TaskCtx, chat: &Chat) -> Result<(), TaskExit> {
    let Some(at) = chat.retry_state.as_ref().and_then(payload::retrying_at) else {
        return Ok(());
    };
    let now = t.database_now().await;
    if let Ok(wait) = (at - now).to_std()
        && !wait.is_zero()
    {
        tracing::info!(chat_id = %t.chat_id, wait_ms = wait.as_millis() as u64, "waiting for a scheduled retry");
        t.sleep(wait).await?;
    }
    Ok(())
}

/// The chat's model configuration; a chat without one finishes with a `config` error and
/// `None` is returned.
/// The chat's model configuration (spec/engine.md §12.2); `None` when the organization has none.
async fn resolve_model_config(t: &TaskCtx, chat: &Chat) -> Result<Option<ModelConfig>, TaskExit> {
    let store = &t.shared.deps.store;
    t.infra(|| async {
        match store
            .resolve_model_config(chat.organization_id, Some(chat.last_model_config_id))
            .await
        {
            Err(StoreError::NoDefaultModelConfig) => Ok(None),
            other => other.map(Some),
        }
    })
    .await
}

/// Ends the turn: the organization has no model to ask.
async fn no_model_config(t: &TaskCtx) -> Result<(), TaskExit> {
    let c = config_error(
        "No model is configured for this organization. Ask an administrator to add a default model configuration.",
    );
    finish_error(t, &c, RetryStatus::Terminal, 0, None).await
}

pub(crate) fn config_error(message: &str) -> Classification {
    chaterror::normalize(Classification {
        kind: Some(ErrorKind::Config),
        message: message.to_owned(),
        message_template: chaterror::MessageTemplate::Custom,
        ..Classification::default()
    })
}

pub(crate) async fn finish_error(
    t: &TaskCtx,
    c: &Classification,
    status: RetryStatus,
    attempt: i64,
    fence_attempt: Option<i64>,
) -> Result<(), TaskExit> {
    finish_failed_call(t, c, status, attempt, fence_attempt, None).await
}

/// [`finish_error`] for a failed model call, keeping the provider's request id.
async fn finish_failed_call(
    t: &TaskCtx,
    c: &Classification,
    status: RetryStatus,
    attempt: i64,
    fence_attempt: Option<i64>,
    request_id: Option<&str>,
) -> Result<(), TaskExit> {
    tracing::warn!(chat_id = %t.chat_id, kind = ?c.kind, retry_status = ?status, attempts = attempt, message = %c.message, provider_request_id = ?request_id, "chat turn failed");
    t.apply(
        Change::FinishError {
            error: payload::chat_error(c, status, attempt, request_id),
        },
        fence_attempt,
    )
    .await?;
    Ok(())
}

/// Closes the episode however the step ends.
pub(crate) struct EpisodeGuard<'a> {
    pub(crate) t: &'a TaskCtx,
    pub(crate) key: EpisodeKey,
}

impl Drop for EpisodeGuard<'_> {
    fn drop(&mut self) {
        self.t.shared.parts.close_episode(self.key);
    }
}

pub(crate) async fn start_step(t: &TaskCtx) -> Result<(i64, EpisodeKey), TaskExit> {
    let applied = t.apply(Change::RecordGenerationAttempt, None).await?;
    let attempt = applied.chat.generation_attempt;
    // The step's span (`model_call` or `tool_step`) carries the attempt.
    tracing::Span::current().record("generation_attempt", attempt);
    let key = EpisodeKey {
        chat_id: t.chat_id,
        history_version: t.history_version,
        generation_attempt: attempt,
    };
    t.shared.parts.create_episode(key);
    Ok((attempt, key))
}

pub(crate) fn publish(t: &TaskCtx, key: &EpisodeKey, part: LivePart) {
    // A full or closed episode only loses the live preview; the commit carries everything.
    let _ = t.shared.parts.add_part(key, part.into());
}

async fn generate(
    t: &TaskCtx,
    chat: &Chat,
    history: &[Message],
    config: &ModelConfig,
) -> Result<Outcome, TaskExit> {
    let client = match t.shared.models.client(config) {
        Ok(client) => client,
        Err(err) => {
            let c = config_error(&format!("The model configuration cannot be used: {err}."));
            finish_error(t, &c, RetryStatus::Terminal, 0, None).await?;
            return Ok(Outcome::Committed);
        }
    };
    let owner = t.infra(|| t.shared.deps.store.user(chat.owner_id)).await?;
    let custom_prompt = owner.map(|u| u.custom_prompt).unwrap_or_default();
    let request = build_request(t, chat, history, config, &custom_prompt);
    let mut permit = crate::limits::admit(t, chat.generation_attempt, config).await?;
    let (attempt, key) = start_step(t).await?;
    let _episode = EpisodeGuard { t, key };
    t.shared.parts.start_model_invocation(key);

    let streamed = model_stream(t, client, request, &config.provider);
    tokio::pin!(streamed);

    let mut acc = Accumulator::default();
    let mut usage = chatmodel::Usage::default();
    let mut finish = None;
    let failure: Option<BoxError> = loop {
        let item = tokio::select! {
            biased;
            _ = t.token.cancelled() => return Err(cancelled(&t.token)),
            item = streamed.next() => item,
        };
        match item {
            None => break None,
            Some(Err(err)) => break Some(err),
            Some(Ok(part)) => {
                t.progress.kick();
                if let Some(permit) = &mut permit {
                    permit.succeeded();
                }
                match &part {
                    StreamPart::Usage(u) => usage = *u,
                    StreamPart::Finish(reason) => finish = Some(*reason),
                    _ => {}
                }
                if let Some(live) = acc.on_stream(&part, chrono::Utc::now()) {
                    publish(t, &key, live);
                }
            }
        }
    };
    if let Some(err) = failure {
        if t.token.is_cancelled() {
            return Err(cancelled(&t.token));
        }
        return on_failure(t, err, attempt, &config.provider, permit).await;
    }

    if acc.is_empty() {
        if finish == Some(FinishReason::ContentFilter) {
            let c = content_filter(&config.provider);
            finish_error(t, &c, RetryStatus::Terminal, attempt, Some(attempt)).await?;
        } else {
            t.apply(Change::FinishTurn, Some(attempt)).await?;
        }
        return Ok(Outcome::Committed);
    }
    let mut message = NewMessage::assistant(acc.assistant_content(chrono::Utc::now()));
    message.model_config_id = Some(config.id);
    message.usage = Some(store_usage(usage, config.context_limit));
    t.apply(
        Change::CommitStep {
            messages: vec![message],
            consume_compaction: false,
        },
        Some(attempt),
    )
    .await?;
    Ok(Outcome::Committed)
}

/// One model call's parts, guarded by the stream silence timeout (spec/chatretry.md §6) on an
/// attempt token of its own.
pub(crate) fn model_stream(
    t: &TaskCtx,
    client: Arc<chatmodel::client::ModelClient>,
    request: ModelRequest,
    provider: &str,
) -> impl futures_util::Stream<Item = Result<StreamPart, BoxError>> + Send + use<> {
    let opened = stream::once(async move {
        client
            .stream(&request)
            .await
            .map(|s| s.map_err(|e| Box::new(e) as BoxError))
            .map_err(|e| Box::new(e) as BoxError)
    })
    .try_flatten();
    guard_silence(
        opened,
        t.shared.config.stream_silence_timeout,
        t.token.child(),
        chaterror::normalize_provider(provider),
    )
}

fn build_request(
    t: &TaskCtx,
    chat: &Chat,
    history: &[Message],
    config: &ModelConfig,
    custom_prompt: &str,
) -> ModelRequest {
    let rows = step::prompt_rows(history);
    let (system_rows, messages) = step::prompt(&rows);
    let user_instructions = step::user_instructions(custom_prompt);
    // The deployment's prompt, the chat's, the user's own (spec/engine.md §12.2), then the
    // history's system rows.
    let system: Vec<&str> = [t.shared.config.system_prompt.as_str()]
        .into_iter()
        .chain(chat.system_prompt.as_deref())
        .chain(user_instructions.as_deref())
        .chain(system_rows.iter().map(String::as_str))
        .filter(|s| !s.trim().is_empty())
        .collect();
    let mut tools: Vec<ToolDefinition> = t
        .shared
        .tools
        .values()
        .filter(|tool| t.shared.active_tools.contains(tool.name()))
        .map(|tool| ToolDefinition {
            name: tool.name().to_owned(),
            description: tool.description().to_owned(),
            input_schema: tool.parameters(),
        })
        .collect();
    tools.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(dynamic) = chat.dynamic_tools.as_ref().and_then(|v| v.as_array()) {
        tools.extend(dynamic.iter().filter_map(|d| {
            Some(ToolDefinition {
                name: d.get("name")?.as_str()?.to_owned(),
                description: d
                    .get("description")
                    .and_then(|v| v.as_str())
                    .unwrap_or_default()
                    .to_owned(),
                input_schema: d
                    .get("input_schema")
                    .cloned()
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            })
        }));
    }
    let options = crate::models::CallOptions::of(config, chat.last_reasoning_effort.as_deref());
    ModelRequest {
        model: config.model.clone(),
        system: system.join("\n\n"),
        messages,
        tools,
        max_output_tokens: options.max_output_tokens,
        temperature: options.temperature,
        provider_options: options.body,
        cache_prompt: options.cache_prompt,
    }
}

fn store_usage(u: chatmodel::Usage, context_limit: i64) -> MessageUsage {
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    let input = n(u.input_tokens);
    let output = n(u.output_tokens);
    MessageUsage {
        input_tokens: input,
        output_tokens: output,
        total_tokens: input.saturating_add(output),
        reasoning_tokens: n(u.reasoning_tokens),
        cache_creation_tokens: n(u.cache_write_tokens),
        cache_read_tokens: n(u.cache_read_tokens),
        context_limit,
    }
}

/// spec/recovery.md §7: an empty response the provider filtered.
fn content_filter(provider: &str) -> Classification {
    chaterror::normalize(Classification {
        kind: Some(ErrorKind::ContentFilter),
        retryable: false,
        ..Classification::default()
    })
    .with_provider(provider)
}

/// spec/chatretry.md §7: classify, then finish or schedule the next attempt.
pub(crate) async fn on_failure(
    t: &TaskCtx,
    err: BoxError,
    attempt: i64,
    provider: &str,
    permit: Option<chatretry::Permit>,
) -> Result<Outcome, TaskExit> {
    let ctx = ClassifyContext::new(SystemTime::now());
    let request_id = chatretry::provider_request_id(err.as_ref());
    let c = classify(err.as_ref(), &ctx).with_provider(provider);
    let (err, c) = normalize_attempt_error(err, c, &ctx);
    let c = c.with_provider(provider);
    crate::metrics::classified(provider, c.source.as_str());
    // A rate limit with a hint holds back the credential's other chats too.
    if let Some(permit) = permit {
        permit.failed(&c, ctx.now);
    }
    tracing::info!(
        chat_id = %t.chat_id,
        generation_attempt = attempt,
        provider,
        kind = ?c.kind,
        source = c.source.as_str(),
        retryable = c.retryable,
        status_code = c.status_code,
        provider_request_id = ?request_id,
        error = %full_text(err.as_ref()),
        "model call failed"
    );
    if c.should_retry_ignored {
        tracing::warn!(
            chat_id = %t.chat_id,
            provider,
            kind = ?c.kind,
            "the provider said x-should-retry: true, but retrying cannot fix this kind of failure; not retrying"
        );
    }
    if c.sub_reason == Some(chaterror::SubReason::ContextWindowExceeded) {
        return Ok(Outcome::ContextOverflow);
    }
    let request_id = request_id.as_deref();
    let fail = async |status| {
        finish_failed_call(t, &c, status, attempt, Some(attempt), request_id).await?;
        Ok(Outcome::Committed)
    };
    if !c.retryable {
        return fail(RetryStatus::Terminal).await;
    }
    let policy = &t.shared.config.retry;
    let max = i64::from(policy.max_attempts);
    if attempt <= 0 || attempt >= max {
        return fail(RetryStatus::Exhausted).await;
    }
    let chat = t.infra(|| t.shared.deps.store.chat(t.chat_id)).await?;
    let now = t.database_now().await;
    let elapsed = chat
        .retry_window_started_at
        .and_then(|start| (now - start).to_std().ok())
        .unwrap_or(Duration::ZERO);
    let decision = {
        let mut rng = t.shared.rng.lock().unwrap_or_else(|p| p.into_inner());
        let failed = u32::try_from(attempt).unwrap_or(u32::MAX);
        policy.decide(failed, &c, elapsed, rng.as_mut())
    };
    let (delay, source, parked) = match decision {
        RetryDecision::Exhausted(reason) => {
            tracing::info!(chat_id = %t.chat_id, ?reason, "retries exhausted");
            return fail(RetryStatus::Exhausted).await;
        }
        RetryDecision::Retry { delay, source } => (delay, source, false),
        RetryDecision::Park { delay, source } => (delay, source, true),
    };
    let event = RetryEvent {
        attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
        delay,
        delay_source: source,
        retrying_at: SystemTime::from(now) + delay,
        error: full_text(err.as_ref()),
        classification: c,
        max_attempts: policy.max_attempts,
        parked,
        provider_request_id: request_id.map(str::to_owned),
    };
    tracing::info!(
        chat_id = %t.chat_id,
        action = "generate_assistant",
        generation_attempt = attempt,
        delay_ms = delay.as_millis() as u64,
        error_kind = ?event.classification.kind,
        provider,
        status_code = event.classification.status_code,
        delay_source = source.as_str(),
        error = %event.error,
        "chat generation retrying"
    );
    let kind = event
        .classification
        .kind
        .map_or("unknown", ErrorKind::as_str);
    let provider = provider.to_owned();
    t.commit(
        Change::RecordRetryState {
            retry_state: payload::retry_state(&event),
            // A parked turn's budget starts again when it resumes (spec/chatretry.md §11.3).
            window_restarts_at: parked.then(|| now + delay),
        },
        t.fence(Some(attempt)),
        move || crate::metrics::retried(kind, &provider),
    )
    .await?;
    t.sleep(delay).await?;
    Ok(Outcome::RetryScheduled)
}

/// Aborts the spawned tool calls if the step is dropped (cancelled).
struct AbortAll(Vec<tokio::task::AbortHandle>);

impl Drop for AbortAll {
    fn drop(&mut self) {
        for handle in &self.0 {
            handle.abort();
        }
    }
}

/// Runs every pending local call concurrently and commits all results in call order (spec/
/// engine.md §12.4 `execute_local_tools`, spec/chattool.md §2.8).
async fn execute_tools(
    t: &TaskCtx,
    chat: &Chat,
    calls: Vec<PendingCall>,
    config: Option<&ModelConfig>,
) -> Result<(), TaskExit> {
    let (attempt, key) = start_step(t).await?;
    let _episode = EpisodeGuard { t, key };
    lease_held(t)?;
    let base = tool_context(t, chat);
    let mut handles = Vec::with_capacity(calls.len());
    for call in &calls {
        let tool = t.shared.tools.get(call.name.as_str()).cloned();
        let active = t.shared.active_tools.contains(call.name.as_str());
        let ctx = base.for_call(call.key());
        let call = call.clone();
        let parts = t.shared.parts.clone();
        let span = tracing::info_span!("tool_call", chat_id = %t.chat_id, tool = %call.name, call_id = %call.id, outcome = tracing::field::Empty);
        handles.push(tokio::spawn(async move {
            let result = (async {
                let Some(tool) = tool else {
                    return ToolResult::error(format!("Tool not found: {}", call.name));
                };
                if !active {
                    return ToolResult::error(format!(
                        "Tool not active in this turn: {}",
                        call.name
                    ));
                }
                parts.tool_started(key, &call.id);
                let started = std::time::Instant::now();
                let result = tool.call(&ctx, &call.args).await;
                crate::metrics::tool_finished(&call.name, result.is_error, started.elapsed());
                parts.tool_finished(key, &call.id);
                result
            })
            .instrument(span.clone())
            .await;
            span.record("outcome", if result.is_error { "error" } else { "ok" });
            result
        }));
    }
    let _abort = AbortAll(handles.iter().map(|h| h.abort_handle()).collect());
    let joined = tokio::select! {
        biased;
        cause = t.token.cancelled() => {
            if cause == CancelCause::TurnSuperseded {
                tokio::spawn(cancel_if_edited_away(t.clone(), calls));
            }
            return Err(cancelled(&t.token));
        }
        joined = futures_util::future::join_all(handles) => joined,
    };
    let context_limit = config.map_or(200_000, |c| c.context_limit);
    let budget = step::result_budget(context_limit, calls.len());
    // A call refused for a lapsed lease is not a result: the next owner runs the step.
    if joined.iter().any(|r| {
        r.as_ref()
            .is_ok_and(|r| r.is_error && r.content == LEASE_LOST)
    }) {
        lease_held(t)?;
    }
    let mut results = Vec::with_capacity(calls.len());
    for (call, joined) in calls.iter().zip(joined) {
        let result = joined.unwrap_or_else(|err| {
            let text = if err.is_panic() {
                format!("tool panicked: {}", panic_message(err.into_panic()))
            } else {
                INTERRUPTED.to_owned()
            };
            ToolResult::error(text)
        });
        let part = step::result_part(call, &result, budget);
        publish(
            t,
            &key,
            LivePart {
                role: Role::Tool,
                part: part.clone(),
                args_delta: None,
            },
        );
        results.push(part);
    }
    t.apply(
        Change::CommitStep {
            messages: vec![NewMessage::tool(results)],
            consume_compaction: false,
        },
        Some(attempt),
    )
    .await?;
    Ok(())
}

/// After a step was superseded: when this runner still owns the chat and an edit removed the
/// message that made `calls`, stops them in the workspace (spec/engine.md §12.7). A takeover
/// also supersedes a step, but then the chat is not ours and the new owner resumes the calls.
async fn cancel_if_edited_away(t: TaskCtx, calls: Vec<PendingCall>) {
    let snapshot = match t.shared.deps.store.snapshot(t.chat_id, 0).await {
        Ok(snapshot) => snapshot,
        Err(err) => {
            tracing::debug!(chat_id = %t.chat_id, error = %crate::error_chain(&err), "cannot tell whether a superseded step was edited away");
            return;
        }
    };
    let chat = &snapshot.chat;
    if chat.worker_id != Some(t.shared.worker_id) || chat.runner_id != Some(t.runner_id) {
        return;
    }
    let gone = crate::cancel::edited_away(&calls, &snapshot.history);
    crate::cancel::in_workspace(
        &t.runner,
        t.runner.token.clone(),
        t.chat_id,
        &gone,
        t.shared.config.tool_cancel_wait,
    )
    .await;
}

const INTERRUPTED: &str = step::INTERRUPTED_RESULT;

/// Ends the task when the runner can no longer prove it holds the chat's lease: no tool call
/// is dispatched for a chat another replica may have taken over (spec/engine.md §9.4).
fn lease_held(t: &TaskCtx) -> Result<(), TaskExit> {
    if t.runner.lease.holds() {
        return Ok(());
    }
    tracing::warn!(chat_id = %t.chat_id, runner_id = %t.runner_id, "the lease could not be renewed in time; not dispatching tool calls");
    Err(TaskExit::Fenced(
        "the runner can no longer prove it holds the lease".into(),
    ))
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic".to_owned()
    }
}

/// The context every tool call of the step starts from.
fn tool_context(t: &TaskCtx, chat: &Chat) -> ToolContext {
    let deps = &t.shared.deps;
    let mut ctx = ToolContext::new(
        ChatScope {
            id: chat.id,
            owner_id: chat.owner_id,
            organization_id: chat.organization_id,
        },
        String::new(),
    );
    ctx.runner_id = Some(t.runner_id);
    ctx.store = Some(deps.store.clone());
    ctx.pubsub = Some(deps.pubsub.clone());
    ctx.builds = deps.builds.clone();
    ctx.dialer = deps.dialer.clone();
    ctx.resolver = t.runner.resolver.as_ref().map(|r| {
        Arc::new(r.for_turn(t.token.clone())) as Arc<dyn chattool::context::WorkspaceResolver>
    });
    ctx.workspace_lock = t.runner.workspace_lock.clone();
    ctx.lease = Some(t.runner.lease.clone());
    let progress = t.progress.clone();
    ctx.on_progress = Some(Arc::new(move || progress.kick()));
    ctx.settings = t.shared.tool_settings.clone();
    let chat_id = chat.id;
    ctx.on_binding = Some(Arc::new(move |bound: &Chat| {
        tracing::info!(%chat_id, workspace_id = ?bound.workspace_id, "chat workspace binding changed");
    }));
    ctx
}
