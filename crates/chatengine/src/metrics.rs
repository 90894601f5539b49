//! The metrics chatd records, their names and labels; the daemon's `--metrics-listen` endpoint
//! serves them in the Prometheus text format.
//!
//! | Metric | Type | Labels | What |
//! |---|---|---|---|
//! | `chatd_turns_total` | counter | `outcome` = `completed`, `error`, `interrupted` | turns this replica finished |
//! | `chatd_retries_total` | counter | `kind` (chaterror kind), `provider` | model calls retried after a classified failure |
//! | `chatd_shared_limit_waits_total` | counter | `provider` | chats held back by another chat's rate limit on the same provider credential |
//! | `chatd_error_classifications_total` | counter | `provider`, `source` (`explicit`, `structured`, `heuristic`, `default`) | failed model calls classified (spec/chaterror.md: heuristic results per provider show where structured mappings are missing) |
//! | `chatd_tool_duration_seconds` | histogram | `tool`, `outcome` = `ok`, `error` | how long a tool call ran in this replica |
//! | `chatd_acquisition_lag_seconds` | histogram | | from a chat's last change (a new message, a crashed owner's last write) to a replica taking it |
//! | `chatd_active_runners` | gauge | | chats this replica runs now |
//! | `chatd_task_restarts_total` | counter | | chat tasks the idle watchdog cancelled and started again |
//! | `chatd_stream_subscribers` | gauge | `kind` = `chat`, `watch`, `relay` | open `StreamChat`, `WatchChats` and relay streams |
//!
//! The engine and the daemon's services record through the functions here; without an installed
//! recorder (a library user, a unit test) they do nothing.

use std::time::Duration;

/// Turns finished, by outcome.
pub const TURNS: &str = "chatd_turns_total";
/// Model calls retried, by error kind and provider.
pub const RETRIES: &str = "chatd_retries_total";
/// Chats held back by a shared rate limit, by provider.
pub const SHARED_LIMIT_WAITS: &str = "chatd_shared_limit_waits_total";
/// Failed model calls classified, by provider and classification source.
pub const CLASSIFICATIONS: &str = "chatd_error_classifications_total";
/// Tool call durations, by tool and outcome.
pub const TOOL_DURATION: &str = "chatd_tool_duration_seconds";
/// Delay from a chat's last change to its acquisition.
pub const ACQUISITION_LAG: &str = "chatd_acquisition_lag_seconds";
/// Chat tasks the idle watchdog started again.
pub const TASK_RESTARTS: &str = "chatd_task_restarts_total";
/// Chats run by this replica.
pub const ACTIVE_RUNNERS: &str = "chatd_active_runners";
/// Open client streams, by kind.
pub const STREAM_SUBSCRIBERS: &str = "chatd_stream_subscribers";

/// How a turn ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TurnOutcome {
    /// The model finished without asking for more tools.
    Completed,
    /// A terminal or exhausted error ended it.
    Error,
    /// A user (or a new message that interrupts) stopped it.
    Interrupted,
}

impl TurnOutcome {
    fn label(self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Error => "error",
            Self::Interrupted => "interrupted",
        }
    }
}

/// A chat started waiting for its credential's shared rate limit.
pub(crate) fn shared_limit_wait(provider: &str) {
    metrics::counter!(SHARED_LIMIT_WAITS, "provider" => provider.to_owned()).increment(1);
}

/// A turn ended.
pub(crate) fn turn_finished(outcome: TurnOutcome) {
    metrics::counter!(TURNS, "outcome" => outcome.label()).increment(1);
}

/// A failed model call was classified.
pub(crate) fn classified(provider: &str, source: &'static str) {
    metrics::counter!(CLASSIFICATIONS, "provider" => provider.to_owned(), "source" => source)
        .increment(1);
}

/// A failed model call will be tried again.
pub(crate) fn retried(kind: &'static str, provider: &str) {
    metrics::counter!(RETRIES, "kind" => kind, "provider" => provider.to_owned()).increment(1);
}

/// A tool call finished after `elapsed`.
pub(crate) fn tool_finished(tool: &str, is_error: bool, elapsed: Duration) {
    let outcome = if is_error { "error" } else { "ok" };
    metrics::histogram!(TOOL_DURATION, "tool" => tool.to_owned(), "outcome" => outcome)
        .record(elapsed.as_secs_f64());
}

/// The idle watchdog started a chat task again.
pub(crate) fn task_restarted() {
    metrics::counter!(TASK_RESTARTS).increment(1);
}

/// A chat was acquired `lag` after its last change.
pub(crate) fn acquired(lag: Duration) {
    metrics::histogram!(ACQUISITION_LAG).record(lag.as_secs_f64());
}

/// Counts one of something while it lives (a runner, an open stream).
#[derive(Debug)]
pub struct Live(metrics::Gauge);

impl Live {
    /// A runner of this replica.
    pub(crate) fn runner() -> Self {
        Self::new(metrics::gauge!(ACTIVE_RUNNERS))
    }

    /// An open client stream of this `kind` (`chat`, `watch`, `relay`).
    pub fn stream(kind: &'static str) -> Self {
        Self::new(metrics::gauge!(STREAM_SUBSCRIBERS, "kind" => kind))
    }

    fn new(gauge: metrics::Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Histogram buckets, in seconds: tools run from milliseconds (a file read) to minutes (a
/// build); acquisition takes milliseconds when notified and up to the acquire interval or the
/// lease's staleness otherwise.
pub const TOOL_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];
pub const LAG_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

    #[test]
    fn the_recording_functions_produce_the_documented_series() {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(TOOL_DURATION.into()), TOOL_BUCKETS)
            .unwrap()
            .build_recorder();
        let handle = recorder.handle();
        // The guards outlive the closure: their handles keep pointing at this recorder.
        let live = metrics::with_local_recorder(&recorder, || {
            turn_finished(TurnOutcome::Completed);
            turn_finished(TurnOutcome::Interrupted);
            retried("overloaded", "anthropic");
            classified("anthropic", "structured");
            tool_finished("read_file", false, Duration::from_millis(20));
            acquired(Duration::from_millis(30));
            let runner = Live::runner();
            let stream = Live::stream("chat");
            let second = Live::runner();
            drop(runner);
            (stream, second)
        });
        let text = handle.render();
        for line in [
            "chatd_turns_total{outcome=\"completed\"} 1",
            "chatd_turns_total{outcome=\"interrupted\"} 1",
            "chatd_retries_total{kind=\"overloaded\",provider=\"anthropic\"} 1",
            "chatd_error_classifications_total{provider=\"anthropic\",source=\"structured\"} 1",
            "chatd_tool_duration_seconds_bucket{tool=\"read_file\",outcome=\"ok\",le=\"0.025\"} 1",
            "chatd_active_runners 1",
            "chatd_stream_subscribers{kind=\"chat\"} 1",
        ] {
            assert!(text.contains(line), "{line} missing from:\n{text}");
        }
        drop(live);
        let text = handle.render();
        assert!(text.contains("chatd_active_runners 0"), "{text}");
        assert!(
            text.contains("chatd_stream_subscribers{kind=\"chat\"} 0"),
            "{text}"
        );
    }
}
