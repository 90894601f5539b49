//! Workspace runtime figures, printed, never asserted:
//! - build request → agent `ready` for a plain template, p50 / p90 / max over 20 builds
//!   (provisioner, local backend, a real `wsagent` reporting to the agent API);
//! - job completion → the job notification reaching a subscriber through the store (PostgreSQL
//!   LISTEN/NOTIFY, or the embedded hub), p50 / p99 / max over 500 jobs (target: p99 under 20 ms; the reference polls
//!   every 2 s).
//!
//! Run: `cargo bench -p chatd-e2e --bench workspaces` (on PostgreSQL by default; `CHATD_TEST_BACKEND=sqlite` for the embedded file, like the tests).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)] // a bench prints and panics

use std::time::{Duration, Instant};

use chatd_e2e::workspaces::{Harness, percentile};
use chatstore::agents::AgentLifecycle;
use chatstore::pubsub::{Notification, Topic};
use provisioner::template::{self, Manifest};

const BUILDS: usize = 20;
const JOBS: usize = 500;

fn report(what: &str, mut samples: Vec<Duration>, points: &[f64]) {
    samples.sort();
    let figures: Vec<String> = points
        .iter()
        .map(|p| format!("p{p}={:.2?}", percentile(&samples, *p)))
        .collect();
    println!(
        "{what}: n={} {} max={:.2?}",
        samples.len(),
        figures.join(" "),
        samples.last().copied().unwrap_or_default()
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

        // Build request → agent ready.
        let mut ready = Vec::with_capacity(BUILDS);
        for i in 0..BUILDS {
            let started = Instant::now();
            let (workspace, _build) = h
                .store
                .create_workspace(
                    h.organization,
                    h.user,
                    template,
                    &format!("bench-{i}"),
                    serde_json::json!([]),
                    None,
                )
                .await
                .unwrap();
            // Fine-grained polling so the figure measures the runtime, not the poll.
            loop {
                if let Some(build) = h.store.latest_build(workspace.id).await.unwrap()
                    && let Some(agent) = h.store.build_agents(build.id).await.unwrap().first()
                    && agent.lifecycle == AgentLifecycle::Ready
                {
                    break;
                }
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "build {i} never became ready"
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            ready.push(started.elapsed());
        }
        report("build request -> agent ready", ready, &[50.0, 90.0]);

        // Job completion → notification, with the provisioner out of the way.
        h.stop_provisioner().await;
        let worker = uuid::Uuid::new_v4();
        let manifest = Manifest::parse("name = \"jobs\"").unwrap();
        let mut delivered = Vec::with_capacity(JOBS);
        let mut committed = Vec::with_capacity(JOBS);
        for i in 0..JOBS {
            let pushed = h
                .store
                .push_template_version(template::new_version(
                    h.organization,
                    &manifest,
                    &[],
                    &format!("v{i}"),
                    false,
                    None,
                ))
                .await
                .unwrap();
            let job = h.store.acquire_job(worker).await.unwrap().unwrap();
            assert_eq!(job.id, pushed.job_id);
            let mut updates = h.pubsub.subscribe(Topic::Job(job.id));
            let started = Instant::now();
            h.store.complete_job(job.id, "", "").await.unwrap();
            committed.push(started.elapsed());
            loop {
                match tokio::time::timeout(Duration::from_secs(5), updates.recv()).await {
                    Ok(Some(Notification::Job(update))) if update.job_id == job.id => break,
                    Ok(Some(_)) => {}
                    other => panic!("no notification for job {}: {other:?}", job.id),
                }
            }
            delivered.push(started.elapsed());
        }
        report(
            "complete_job call (commit included)",
            committed,
            &[50.0, 99.0],
        );
        report(
            "job completion -> subscriber notified",
            delivered,
            &[50.0, 99.0],
        );
        h.finish().await;
    });
}
