//! chattool's wait wake-up latency, printed, never asserted:
//! - provisioner job completion → `Waits::build` returning;
//! - agent `ready` recorded → `Waits::startup_scripts` returning;
//!
//! each p50 / p99 over 50 runs with notifications (safety poll 5 s) and with the safety poll
//! alone at 2 s (the reference's fixed polling), and the ratio of the p50s. Target: p99 under
//! 50 ms, at least 20× faster than polling at p50.
//!
//! Run: `cargo bench -p chatd-e2e --bench tool_waits` (on PostgreSQL by default; `CHATD_TEST_BACKEND=sqlite` for the embedded file, like the tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench prints and panics

use std::sync::Arc;
use std::time::{Duration, Instant};

use chatd_e2e::workspaces::{Harness, percentile};
use chatstore::agents::AgentLifecycle;
use chatstore::identity::token_hash;
use chatstore::pubsub::{Hub, Pubsub};
use chattool::wait::{WaitSettings, Waits};

const RUNS: usize = 50;
/// Time for a wait to subscribe and take its first look before the change is made.
const SETTLE: Duration = Duration::from_millis(20);

fn summary(mut samples: Vec<Duration>) -> (Duration, Duration) {
    samples.sort();
    (percentile(&samples, 50.0), percentile(&samples, 99.0))
}

/// What a run changes, and so which wait it measures.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Change {
    /// The job completes; `Waits::build` is waiting.
    JobCompletion,
    /// The agent turns `ready`; `Waits::startup_scripts` is waiting.
    AgentReady,
}

/// The wake-up latency of `waits` for `change`, over [`RUNS`] fresh builds.
async fn wakeups(
    h: &Harness,
    waits: &Waits,
    template: uuid::Uuid,
    change: Change,
    tag: &str,
) -> Vec<Duration> {
    let mut samples = Vec::with_capacity(RUNS);
    for i in 0..RUNS {
        let (_, build) = h
            .start_workspace_build(template, &format!("{tag}-{i}"))
            .await;
        let job = h
            .store
            .acquire_job(uuid::Uuid::new_v4())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(job.id, build.job_id);
        // For a readiness run the build is done and its agent exists before the wait starts.
        let agent = if change == Change::AgentReady {
            let agent = h
                .store
                .insert_agent(job.id, "main", "/", 0, &token_hash(&format!("{tag}-{i}")))
                .await
                .unwrap();
            h.store.complete_job(job.id, "", "").await.unwrap();
            Some(agent)
        } else {
            None
        };
        let waits = waits.clone();
        let waiter = tokio::spawn(async move {
            match agent {
                None => waits.build(build.id).await.unwrap(),
                Some(agent) => assert_eq!(waits.startup_scripts(agent).await, Default::default()),
            }
            Instant::now()
        });
        tokio::time::sleep(SETTLE).await;
        let changed = Instant::now();
        match agent {
            None => h
                .store
                .complete_job(job.id, "", "")
                .await
                .map(drop)
                .unwrap(),
            Some(agent) => h
                .store
                .update_agent_lifecycle(agent, AgentLifecycle::Ready, chrono::Utc::now())
                .await
                .unwrap(),
        }
        samples.push(waiter.await.unwrap() - changed);
    }
    samples
}

fn report(what: &str, events: Vec<Duration>, polling: Vec<Duration>) {
    let (e50, e99) = summary(events);
    let (p50, p99) = summary(polling);
    println!(
        "{what}: notifications p50={e50:.2?} p99={e99:.2?} | 2 s polling p50={p50:.2?} p99={p99:.2?} | p50 ratio {:.0}x",
        p50.as_secs_f64() / e50.as_secs_f64().max(1e-9)
    );
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut h = Harness::start().await;
        let template = h.template("name = \"bench\"", Vec::new()).await;
        // Jobs are completed by hand, at a known instant.
        h.stop_provisioner().await;
        let events = Waits::new(h.store.clone(), h.pubsub.clone(), WaitSettings::default());
        let deaf: Arc<dyn Pubsub> = Arc::new(Hub::default());
        let polling = Waits::new(
            h.store.clone(),
            deaf,
            WaitSettings {
                safety_poll: Duration::from_secs(2),
                ..WaitSettings::default()
            },
        );
        let a = wakeups(&h, &events, template, Change::JobCompletion, "be").await;
        let b = wakeups(&h, &polling, template, Change::JobCompletion, "bp").await;
        report("job completion -> build wait returns", a, b);
        let a = wakeups(&h, &events, template, Change::AgentReady, "re").await;
        let b = wakeups(&h, &polling, template, Change::AgentReady, "rp").await;
        report("agent ready -> readiness wait returns", a, b);
        h.finish().await;
    });
}
