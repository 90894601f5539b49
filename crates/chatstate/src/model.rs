//! An in-memory reference implementation of the effects: what the database must look like after
//! each transition. Property tests drive it with random transition sequences; the store's tests
//! compare the database with it.

use crate::{ChatFacts, ChatStatus, Effect, ExecState, Plan, Transition, TransitionError, plan};

/// Who wrote a model message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RowRole {
    /// The user.
    User,
    /// The model.
    Assistant,
    /// Tool results.
    Tool,
    /// A hidden system row (the clear-context sentinel).
    System,
}

/// One history row of the model.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelRow {
    /// Row id (increasing).
    pub id: u64,
    /// Author.
    pub role: RowRole,
    /// Tool calls made by an assistant row: (call id, client-executed?).
    pub tool_calls: Vec<(u64, bool)>,
    /// For a tool row: the call it answers.
    pub answers: Option<u64>,
    /// The queued message this row was promoted from.
    pub queued_message_id: Option<u64>,
    /// Soft-deleted by an edit.
    pub deleted: bool,
}

/// A chat as the database holds it, reduced to what the rules talk about.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChatModel {
    /// `None` until created.
    pub status: Option<ChatStatus>,
    /// Archived flag.
    pub archived: bool,
    /// Queue, head first (ids).
    pub queue: Vec<u64>,
    /// History, oldest first (including soft-deleted rows).
    pub history: Vec<ModelRow>,
    /// `last_error` is set.
    pub last_error: Option<String>,
    /// `requires_action_deadline_at` is set.
    pub deadline: bool,
    /// `compaction_requested_at` is set.
    pub compaction_requested: bool,
    /// `retry_state` is set.
    pub retry_state: bool,
    /// `generation_attempt`.
    pub generation_attempt: u64,
    /// A worker owns the chat.
    pub owned: bool,
    /// A user message entered history while a tool call was unanswered (must never happen).
    pub user_message_over_open_call: bool,
    next_id: u64,
}

/// What a worker step commits, for [`ChatModel::apply`] of `CommitStep`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepContent {
    /// An assistant reply with this many local and client-executed tool calls.
    Assistant {
        /// Calls the worker executes.
        local_calls: u8,
        /// Calls the client executes.
        dynamic_calls: u8,
    },
    /// Results for every open local tool call.
    LocalResults,
}

impl ChatModel {
    /// The facts `plan` needs.
    pub fn facts(&self) -> ChatFacts {
        ChatFacts {
            status: self.status.clone(),
            archived: self.archived,
            queue_len: self.queue.len(),
            owned: self.owned,
            pending_dynamic_calls: self
                .open_calls()
                .iter()
                .filter(|(_, dynamic)| *dynamic)
                .count(),
            max_queue: crate::MAX_QUEUE,
        }
    }

    /// The derived execution state.
    pub fn state(&self) -> ExecState {
        self.facts().state()
    }

    /// Tool calls in live history without a result: (call id, client-executed?).
    pub fn open_calls(&self) -> Vec<(u64, bool)> {
        let live = || self.history.iter().filter(|m| !m.deleted);
        live()
            .flat_map(|m| m.tool_calls.iter().copied())
            .filter(|(call, _)| !live().any(|m| m.answers == Some(*call)))
            .collect()
    }

    /// Plans and applies `transition`. `pick` chooses the target of transitions that name one
    /// (the edited user message, the queued message); `step` is what `CommitStep` commits.
    /// `Ok(None)` means the store would refuse for lack of a target (e.g. `MessageNotFound`).
    pub fn apply(
        &mut self,
        transition: Transition,
        pick: usize,
        step: StepContent,
    ) -> Result<Option<Plan>, TransitionError> {
        let users: Vec<usize> = (0..self.history.len())
            .filter(|&i| self.history[i].role == RowRole::User && !self.history[i].deleted)
            .collect();
        let target_message = users.get(pick % users.len().max(1)).copied();
        let target_queued = (!self.queue.is_empty()).then(|| pick % self.queue.len());
        let needs_message = matches!(transition, Transition::EditMessage);
        let needs_queued = matches!(
            transition,
            Transition::DeleteQueuedMessage | Transition::PromoteQueuedMessage
        );
        if self.status.is_some()
            && ((needs_message && target_message.is_none())
                || (needs_queued && target_queued.is_none()))
        {
            // The store checks targets before the matrix only for existing chats.
            if !matches!(self.state(), ExecState::Invalid) {
                return Ok(None);
            }
        }

        let plan = plan(&self.facts(), transition)?;
        for effect in &plan.effects {
            self.effect(effect, target_message, target_queued, step);
        }
        Ok(Some(plan))
    }

    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }

    fn push(
        &mut self,
        role: RowRole,
        tool_calls: Vec<(u64, bool)>,
        answers: Option<u64>,
        queued: Option<u64>,
    ) {
        if role == RowRole::User && !self.open_calls().is_empty() {
            self.user_message_over_open_call = true;
        }
        let id = self.id();
        self.history.push(ModelRow {
            id,
            role,
            tool_calls,
            answers,
            queued_message_id: queued,
            deleted: false,
        });
        // Trigger T2: every history change resets the attempt (and T4 the retry state).
        self.history_changed();
    }

    fn history_changed(&mut self) {
        self.generation_attempt = 0;
        self.retry_state = false;
    }

    fn answer(&mut self, only_dynamic: bool) {
        for (call, dynamic) in self.open_calls() {
            if dynamic || !only_dynamic {
                self.push(RowRole::Tool, vec![], Some(call), None);
            }
        }
    }

    fn effect(
        &mut self,
        effect: &Effect,
        message: Option<usize>,
        queued: Option<usize>,
        step: StepContent,
    ) {
        use Effect as E;
        match effect {
            E::InsertChat => {
                self.status = Some(ChatStatus::Running);
                self.push(RowRole::User, vec![], None, None);
            }
            E::SetStatus(status) => self.status = Some(status.clone()),
            E::SetArchived(archived) => self.archived = *archived,
            E::ResetPinOrder => {}
            E::CancelOpenToolCalls(_) => self.answer(false),
            E::CancelPendingDynamicCalls(_) => self.answer(true),
            E::InsertUserMessage | E::InsertReplacement => {
                self.push(RowRole::User, vec![], None, None)
            }
            E::AppendToQueue => {
                let id = self.id();
                self.queue.push(id);
            }
            E::PromoteQueueHead => {
                if !self.queue.is_empty() {
                    let head = self.queue.remove(0);
                    self.push(RowRole::User, vec![], None, Some(head));
                }
            }
            E::MoveQueuedToHead => {
                if let Some(i) = queued {
                    let id = self.queue.remove(i);
                    self.queue.insert(0, id);
                }
            }
            E::DeleteQueued => {
                if let Some(i) = queued {
                    self.queue.remove(i);
                }
            }
            E::ClearQueue => self.queue.clear(),
            E::SoftDeleteFromTarget => {
                if let Some(i) = message {
                    for m in &mut self.history[i..] {
                        m.deleted = true;
                    }
                    self.history_changed();
                }
            }
            E::InsertToolResults => self.answer(true),
            E::InsertPartialOutput => {
                self.push(RowRole::Assistant, vec![], None, None);
                self.answer(false);
            }
            E::InsertStepMessages => match step {
                StepContent::Assistant {
                    local_calls,
                    dynamic_calls,
                } => {
                    let mut calls = Vec::new();
                    for i in 0..(u16::from(local_calls) + u16::from(dynamic_calls)) {
                        let id = self.id();
                        calls.push((id, i >= u16::from(local_calls)));
                    }
                    self.push(RowRole::Assistant, calls, None, None);
                }
                StepContent::LocalResults => {
                    let open: Vec<u64> = self
                        .open_calls()
                        .into_iter()
                        .filter(|(_, d)| !d)
                        .map(|(c, _)| c)
                        .collect();
                    if open.is_empty() {
                        self.push(RowRole::Assistant, vec![], None, None);
                    }
                    for call in open {
                        self.push(RowRole::Tool, vec![], Some(call), None);
                    }
                }
            },
            E::InsertBoundaryTriplet => {
                self.push(RowRole::System, vec![], None, None);
                let call = self.id();
                self.push(RowRole::Assistant, vec![(call, false)], None, None);
                self.push(RowRole::Tool, vec![], Some(call), None);
            }
            E::ClearLastError => self.last_error = None,
            E::StoreLastError => self.last_error = Some("classified error".to_owned()),
            E::StoreInvalidStateError => {
                self.last_error = Some(crate::INVALID_STATE_MESSAGE.to_owned())
            }
            E::ClearDeadline => self.deadline = false,
            E::SetDeadline => self.deadline = true,
            E::SetCompactionRequested => self.compaction_requested = true,
            E::ClearCompactionRequested => self.compaction_requested = false,
            E::ClearOwnership => self.owned = false,
            E::SetOwnership => self.owned = true,
            E::GrantHistoryEpoch => self.history_changed(),
            E::IncrementGenerationAttempt => {
                self.generation_attempt += 1;
                self.retry_state = false;
            }
            E::StoreRetryState => self.retry_state = true,
            E::ClearRetryState => self.retry_state = false,
        }
    }
}
