//! The transition matrix of spec/engine.md §5, transcribed: one test per state checks every
//! allowed cell's outcome (with the queue sizes that decide `0`/`1`) and that every other
//! transition is refused with the right error.

use chatstate::ExecState::{self, *};
use chatstate::{BusyBehavior, ChatFacts, ChatStatus, Transition, TransitionError, plan};

const QUEUE: Transition = Transition::SendMessage(BusyBehavior::Queue);
const INTERRUPT_SEND: Transition = Transition::SendMessage(BusyBehavior::Interrupt);
const COMMIT: Transition = Transition::CommitStep {
    consume_compaction: false,
};
const COMMIT_COMPACTION: Transition = Transition::CommitStep {
    consume_compaction: true,
};

/// Facts of a chat in `state`: owned, one pending dynamic call, `queue` rows where the state
/// has a queue.
fn facts(state: ExecState, queue: usize) -> ChatFacts {
    let (status, archived) = match state {
        N => (None, false),
        W => (Some(ChatStatus::Waiting), false),
        E0 | E1 => (Some(ChatStatus::Error), false),
        R0 | R1 => (Some(ChatStatus::Running), false),
        I0 | I1 => (Some(ChatStatus::Interrupting), false),
        A0 | A1 => (Some(ChatStatus::RequiresAction), false),
        XW => (Some(ChatStatus::Waiting), true),
        XE0 | XE1 => (Some(ChatStatus::Error), true),
        Invalid => (Some(ChatStatus::Legacy("paused".into())), false),
    };
    let f = ChatFacts {
        status,
        archived,
        queue_len: if state.has_queue() { queue } else { 0 },
        owned: true,
        pending_dynamic_calls: 1,
        max_queue: chatstate::MAX_QUEUE,
    };
    assert_eq!(f.state(), state, "test facts must derive the state");
    f
}

fn unowned(mut f: ChatFacts) -> ChatFacts {
    f.owned = false;
    f
}

#[track_caller]
fn goes(f: &ChatFacts, t: Transition, to: ExecState) {
    let p = plan(f, t).unwrap_or_else(|e| panic!("{t:?} from {}: refused: {e}", f.state()));
    assert_eq!(p.to, to, "{t:?} from {}", f.state());
    assert_eq!(p.from, f.state());
}

/// Every transition not in `allowed` is refused with `expected`.
#[track_caller]
fn refuses_others(
    f: &ChatFacts,
    allowed: &[Transition],
    expected: fn(ExecState, Transition) -> TransitionError,
) {
    for t in Transition::ALL {
        if allowed.contains(&t) {
            continue;
        }
        assert_eq!(
            plan(f, t),
            Err(expected(f.state(), t)),
            "{t:?} from {}",
            f.state()
        );
    }
}

fn not_allowed(from: ExecState, transition: Transition) -> TransitionError {
    TransitionError::TransitionNotAllowed { from, transition }
}

const OWNERSHIP: [Transition; 2] = [Transition::Acquire, Transition::Abandon];

/// One row of the matrix: from `f` every `(transition, to)` cell goes where it says; `also`
/// lists the row's other allowed transitions (their cells need other facts and are checked
/// beside); every other transition but ownership's is refused as not allowed.
#[track_caller]
fn row(f: &ChatFacts, cells: &[(Transition, ExecState)], also: &[Transition]) {
    for &(t, to) in cells {
        goes(f, t, to);
    }
    let allowed: Vec<Transition> = cells
        .iter()
        .map(|&(t, _)| t)
        .chain(also.iter().copied())
        .chain(OWNERSHIP)
        .collect();
    refuses_others(f, &allowed, not_allowed);
}

#[test]
fn state_n() {
    let f = facts(N, 0);
    goes(&f, Transition::Create, R0);
    refuses_others(&f, &[Transition::Create], |_, _| {
        TransitionError::ChatNotFound
    });
}

#[test]
fn state_w() {
    let f = facts(W, 0);
    row(
        &f,
        &[
            (Transition::SetArchived(true), XW),
            (QUEUE, R0),
            (INTERRUPT_SEND, R0),
            (Transition::EditMessage, R0),
            (Transition::RequestCompaction, R0),
            (Transition::ClearContext, W),
            (Transition::FinishError, E0),
        ],
        &[],
    );
    for t in OWNERSHIP {
        goes(&f, t, W);
    }
}

#[test]
fn state_e0() {
    let f = facts(E0, 0);
    row(
        &f,
        &[
            (Transition::SetArchived(true), XE0),
            (QUEUE, R0),
            (INTERRUPT_SEND, R0),
            (Transition::EditMessage, R0),
            (Transition::RequestCompaction, R0),
            (Transition::ClearContext, W),
        ],
        &[],
    );
}

#[test]
fn state_e1() {
    let f = facts(E1, 2);
    row(
        &f,
        &[
            (Transition::SetArchived(true), XE1),
            (QUEUE, R1),
            (Transition::EditMessage, R0),
            (Transition::RequestCompaction, R1),
            (Transition::DeleteQueuedMessage, E1),
            (Transition::PromoteQueuedMessage, R1),
        ],
        &[INTERRUPT_SEND],
    );
    goes(&facts(E1, 1), Transition::DeleteQueuedMessage, E0);
    goes(&facts(E1, 1), Transition::PromoteQueuedMessage, R0);
}

#[test]
fn state_r0() {
    let f = facts(R0, 0);
    row(
        &f,
        &[
            (QUEUE, R1),
            (INTERRUPT_SEND, I1),
            (Transition::EditMessage, R0),
            (Transition::Interrupt, I0),
            (Transition::RecordGenerationAttempt, R0),
            (Transition::RecordRetryState, R0),
            (COMMIT, R0),
            (COMMIT_COMPACTION, R0),
            (Transition::EnterRequiresAction, A0),
            (Transition::FinishTurn, W),
            (Transition::FinishError, E0),
        ],
        &[],
    );
    goes(&unowned(f.clone()), Transition::Interrupt, W);
}

#[test]
fn state_r1() {
    let f = facts(R1, 2);
    row(
        &f,
        &[
            (QUEUE, R1),
            (INTERRUPT_SEND, I1),
            (Transition::EditMessage, R0),
            (Transition::DeleteQueuedMessage, R1),
            (Transition::PromoteQueuedMessage, I1),
            (Transition::Interrupt, I1),
            (Transition::RecordGenerationAttempt, R1),
            (Transition::RecordRetryState, R1),
            (COMMIT, R1),
            (Transition::EnterRequiresAction, A1),
            (Transition::FinishTurn, R1),
            (Transition::FinishError, E1),
        ],
        &[COMMIT_COMPACTION],
    );
    goes(&facts(R1, 1), Transition::DeleteQueuedMessage, R0);
    goes(&unowned(f.clone()), Transition::Interrupt, R1);
    goes(&unowned(facts(R1, 1)), Transition::Interrupt, R0);
    goes(&facts(R1, 1), Transition::FinishTurn, R0);
}

#[test]
fn state_i0() {
    let f = facts(I0, 0);
    row(
        &f,
        &[
            (QUEUE, I1),
            (INTERRUPT_SEND, I1),
            (Transition::EditMessage, R0),
            (Transition::FinishInterruption, W),
        ],
        &[],
    );
    // Interrupt only when nobody owns the chat.
    goes(&unowned(f.clone()), Transition::Interrupt, W);
}

#[test]
fn state_i1() {
    let f = facts(I1, 2);
    row(
        &f,
        &[
            (QUEUE, I1),
            (Transition::EditMessage, R0),
            (Transition::DeleteQueuedMessage, I1),
            (Transition::PromoteQueuedMessage, I1),
            (Transition::FinishInterruption, R1),
        ],
        &[INTERRUPT_SEND],
    );
    goes(&facts(I1, 1), Transition::DeleteQueuedMessage, I0);
    goes(&facts(I1, 1), Transition::FinishInterruption, R0);
    goes(&unowned(f.clone()), Transition::Interrupt, R1);
    goes(&unowned(facts(I1, 1)), Transition::Interrupt, R0);
}

#[test]
fn state_a0() {
    let f = facts(A0, 0);
    row(
        &f,
        &[
            (QUEUE, A1),
            (INTERRUPT_SEND, R1),
            (Transition::EditMessage, R0),
            (Transition::Interrupt, R0),
            (Transition::CompleteRequiresAction, R0),
            (Transition::CancelRequiresAction, R0),
        ],
        &[],
    );
}

#[test]
fn state_a1() {
    let f = facts(A1, 2);
    row(
        &f,
        &[
            (QUEUE, A1),
            (INTERRUPT_SEND, R1),
            (Transition::EditMessage, R0),
            (Transition::DeleteQueuedMessage, A1),
            (Transition::PromoteQueuedMessage, R1),
            (Transition::Interrupt, R1),
            (Transition::CompleteRequiresAction, R1),
            (Transition::CancelRequiresAction, R1),
        ],
        &[],
    );
    goes(&facts(A1, 1), Transition::DeleteQueuedMessage, A0);
    goes(&facts(A1, 1), Transition::PromoteQueuedMessage, R0);
}

#[test]
fn state_xw() {
    let f = facts(XW, 0);
    row(&f, &[(Transition::SetArchived(false), W)], &[]);
}

#[test]
fn state_xe0() {
    let f = facts(XE0, 0);
    row(&f, &[(Transition::SetArchived(false), E0)], &[]);
}

#[test]
fn state_xe1() {
    let f = facts(XE1, 1);
    row(&f, &[(Transition::SetArchived(false), E1)], &[]);
}

#[test]
fn state_invalid() {
    let f = facts(Invalid, 0);
    goes(&f, Transition::ReconcileInvalidState, E0);
    let mut queued = f.clone();
    queued.queue_len = 3;
    goes(&queued, Transition::ReconcileInvalidState, E1);
    // Archived + running, waiting + queue: also Invalid.
    let archived_running = ChatFacts {
        status: Some(ChatStatus::Running),
        archived: true,
        ..f.clone()
    };
    goes(&archived_running, Transition::ReconcileInvalidState, E0);
    let waiting_with_queue = ChatFacts {
        status: Some(ChatStatus::Waiting),
        queue_len: 1,
        ..f.clone()
    };
    goes(&waiting_with_queue, Transition::ReconcileInvalidState, E1);
    refuses_others(
        &f,
        &[&[Transition::ReconcileInvalidState][..], &OWNERSHIP].concat(),
        |_, _| TransitionError::InvalidState,
    );
}

#[test]
fn ownership_transitions_are_allowed_in_every_existing_state() {
    for state in ExecState::ALL.into_iter().filter(|s| *s != N) {
        let f = facts(state, 1);
        goes(&f, Transition::Acquire, state);
        goes(&f, Transition::Abandon, state);
        assert_eq!(
            plan(&unowned(f), Transition::Abandon),
            Err(TransitionError::NotOwned),
            "{state}"
        );
    }
}

#[test]
fn owned_interrupting_chats_refuse_interrupt() {
    for state in [I0, I1] {
        assert!(matches!(
            plan(&facts(state, 1), Transition::Interrupt),
            Err(TransitionError::TransitionNotAllowed { .. })
        ));
    }
}

#[test]
fn the_queue_is_capped_at_20_or_at_the_configured_cap() {
    for state in [E1, R1, I1, A1] {
        let full = facts(state, 20);
        assert_eq!(
            plan(&full, QUEUE),
            Err(TransitionError::MessageQueueFull { max: 20 }),
            "{state}"
        );
        assert!(plan(&facts(state, 19), QUEUE).is_ok(), "{state}");
        let small = |queue| ChatFacts {
            max_queue: 2,
            ..facts(state, queue)
        };
        assert_eq!(
            plan(&small(2), QUEUE),
            Err(TransitionError::MessageQueueFull { max: 2 }),
            "{state}"
        );
        assert!(plan(&small(1), QUEUE).is_ok(), "{state}");
    }
}

#[test]
fn requires_action_needs_pending_dynamic_calls() {
    let mut f = facts(R0, 0);
    f.pending_dynamic_calls = 0;
    assert_eq!(
        plan(&f, Transition::EnterRequiresAction),
        Err(TransitionError::NoPendingDynamicCalls)
    );
    let mut f = facts(A0, 0);
    f.pending_dynamic_calls = 0;
    assert_eq!(
        plan(&f, Transition::CancelRequiresAction),
        Err(TransitionError::NoPendingDynamicCalls)
    );
}
