//! What the benchmarks share: the provider emulator in a child process (so its CPU and memory
//! are not the measured process's), a clock that both processes read the same way, marked
//! replies whose every delta names itself, and process figures read from `/proc`.
//!
//! A bench binary calls [`run_emulator_if_child`] first thing in `main`: started again by
//! [`EmulatorProcess::start`] with [`EMULATOR_ENV`] set, the same binary serves the replies,
//! prints its address, and once its stdin closes prints what it received and when it wrote each
//! marked delta.

#![allow(clippy::unwrap_used, clippy::expect_used)] // bench support: a broken bench panics
#![allow(dead_code)] // each bench, and the suite's test of this module, uses a part

use std::io::{BufRead as _, Write as _};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use chattest::emulator::{Emulator, MARK_CLOSE, MARK_OPEN, ScriptPart, Turn};

/// Set in the emulator child to `replies,parts,pacing_ms`.
pub(crate) const EMULATOR_ENV: &str = "CHATD_BENCH_EMULATOR";

/// Instants as nanoseconds since the Unix epoch, comparable across processes on one machine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    instant: Instant,
    unix_ns: u128,
}

impl Clock {
    /// Reads the wall clock once; later instants are measured from it with the monotonic clock.
    pub(crate) fn new() -> Self {
        Self {
            instant: Instant::now(),
            unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos(),
        }
    }

    /// `at` in nanoseconds since the epoch.
    pub(crate) fn unix_ns(&self, at: Instant) -> u128 {
        self.unix_ns + at.saturating_duration_since(self.instant).as_nanos()
    }

    /// Now, in nanoseconds since the epoch.
    pub(crate) fn now_ns(&self) -> u128 {
        self.unix_ns(Instant::now())
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// The replies an emulator process serves: `replies` of `parts` marked text deltas each,
/// `pacing` apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Replies {
    /// How many replies (one per request, in arrival order).
    pub(crate) replies: usize,
    /// Text deltas per reply.
    pub(crate) parts: usize,
    /// Time between deltas.
    pub(crate) pacing: Duration,
}

impl Replies {
    pub(crate) fn to_env(self) -> String {
        format!(
            "{},{},{}",
            self.replies,
            self.parts,
            self.pacing.as_millis()
        )
    }

    pub(crate) fn from_env(value: &str) -> Self {
        let fields: Vec<u64> = value.split(',').map(|f| f.parse().unwrap()).collect();
        Self {
            replies: usize::try_from(fields[0]).unwrap(),
            parts: usize::try_from(fields[1]).unwrap(),
            pacing: Duration::from_millis(fields[2]),
        }
    }

    /// The `k`-th reply: every delta is one marker `⟦c<k>p<i>⟧`.
    pub(crate) fn turn(&self, k: usize) -> Turn {
        let marker_len = token(k, 0).chars().count() + 2;
        let text: String = (0..self.parts)
            .map(|i| format!("{MARK_OPEN}{}{MARK_CLOSE}", token(k, i)))
            .collect();
        let mut turn = Turn::with(vec![ScriptPart::Text {
            text,
            chunk: marker_len,
        }]);
        turn.pacing = self.pacing;
        turn
    }
}

/// The marker of reply `k`'s delta `i`.
pub(crate) fn token(k: usize, i: usize) -> String {
    format!("c{k:05}p{i:03}")
}

/// `c00042p007` → reply 42, delta 7.
pub(crate) fn parse_token(token: &str) -> Option<(usize, usize)> {
    let (k, i) = token.strip_prefix('c')?.split_once('p')?;
    Some((k.parse().ok()?, i.parse().ok()?))
}

/// The markers in a text, in order.
pub(crate) fn markers(text: &str) -> impl Iterator<Item = &str> {
    text.split(MARK_OPEN)
        .skip(1)
        .filter_map(|rest| rest.split_once(MARK_CLOSE).map(|(token, _)| token))
}

/// In the emulator child (see the module docs): serves, reports, and returns `true`; the caller
/// returns from `main`. Elsewhere `false`.
pub(crate) fn run_emulator_if_child() -> bool {
    let Ok(spec) = std::env::var(EMULATOR_ENV) else {
        return false;
    };
    let replies = Replies::from_env(&spec);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let clock = Clock::new();
        let emulator = Emulator::start((0..replies.replies).map(|k| replies.turn(k)).collect())
            .await
            .unwrap();
        let mut out = std::io::stdout().lock();
        writeln!(out, "{}", emulator.base_url()).unwrap();
        out.flush().unwrap();
        tokio::task::spawn_blocking(|| std::io::copy(&mut std::io::stdin(), &mut std::io::sink()))
            .await
            .unwrap()
            .unwrap();
        for request in emulator.requests() {
            let text = request.last_user_text().unwrap_or_default();
            writeln!(
                out,
                "req {} {}",
                clock.unix_ns(request.received_at),
                text.replace('\n', " ")
            )
            .unwrap();
        }
        for (at, token) in emulator.marks() {
            writeln!(out, "mark {} {token}", clock.unix_ns(at)).unwrap();
        }
    });
    true
}

/// A running emulator child process.
#[derive(Debug)]
pub(crate) struct EmulatorProcess {
    child: Child,
    stdout: std::io::BufReader<ChildStdout>,
    base_url: String,
}

/// What an emulator process saw.
#[derive(Debug, Default)]
pub(crate) struct EmulatorReport {
    /// Each request: when it was received (ns since the epoch) and its last user text.
    pub(crate) requests: Vec<(u128, String)>,
    /// Each marked delta: when it was written (ns since the epoch) and its marker.
    pub(crate) marks: Vec<(u128, String)>,
}

impl EmulatorProcess {
    /// Starts this binary again as an emulator serving `replies`.
    pub(crate) fn start(replies: Replies) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(EMULATOR_ENV, replies.to_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut base_url = String::new();
        stdout.read_line(&mut base_url).unwrap();
        Self {
            child,
            stdout,
            base_url: base_url.trim().to_owned(),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub(crate) fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Makes this emulator the organization's default model (Anthropic wire, model `bench`).
    pub(crate) async fn default_model(&self, h: &chatd_e2e::test_db::TestDb) -> uuid::Uuid {
        use chatstore::testing::ModelFixtures as _;
        h.store
            .fixture_model(
                h.organization,
                "anthropic",
                self.base_url(),
                "bench",
                200_000,
                true,
            )
            .await
            .unwrap()
    }

    /// The child's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stops the process and returns what it saw.
    pub(crate) fn finish(mut self) -> EmulatorReport {
        drop(self.child.stdin.take());
        let mut report = EmulatorReport::default();
        for line in self.stdout.lines() {
            let line = line.unwrap();
            let (kind, rest) = line.split_once(' ').unwrap();
            let (at, what) = rest.split_once(' ').unwrap_or((rest, ""));
            let entry = (at.parse().unwrap(), what.to_owned());
            match kind {
                "req" => report.requests.push(entry),
                "mark" => report.marks.push(entry),
                other => panic!("unexpected emulator output {other:?}"),
            }
        }
        self.child.wait().unwrap();
        report
    }
}

/// Runs a bench's async body on a multi-threaded runtime.
pub(crate) fn block_on(body: impl std::future::Future<Output = ()>) {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(body);
}

/// The backend `CHATD_TEST_BACKEND` picks, as the figures name it.
pub(crate) fn backend_name() -> &'static str {
    match chatd_e2e::test_db::TestBackend::from_env() {
        chatd_e2e::test_db::TestBackend::Sqlite => "SQLite (embedded file)",
        chatd_e2e::test_db::TestBackend::Postgres => "PostgreSQL",
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`); 0 when unreadable.
pub(crate) fn status_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a live process, in seconds; 0 when unreadable.
pub(crate) fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name and state.
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    ticks as f64 / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .map_or(100.0, |t| t as f64)
}

/// CPU seconds of every live process named `name` (e.g. the `postgres` server and its
/// backends). A backend that exits between two readings takes its time with it, so compare
/// readings taken while the measured connections stay open.
pub(crate) fn cpu_seconds_of(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == name)
        })
        .map(cpu_seconds)
        .sum()
}

/// The `p`-th percentile of `samples` (sorted here), in milliseconds; NaN when empty.
pub(crate) fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    samples.sort_unstable();
    chatd_e2e::workspaces::percentile(samples, p).as_secs_f64() * 1e3
}

/// `message` with the bearer token.
pub(crate) fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

/// A chat's first message: one text part.
pub(crate) fn create_request(text: String) -> chatproto::chatd::v1::CreateChatRequest {
    use chatproto::chatd::v1 as pb;
    pb::CreateChatRequest {
        content: vec![pb::ChatInputPart {
            part: Some(pb::chat_input_part::Part::Text(pb::TextPart { text })),
        }],
        ..Default::default()
    }
}

/// API tokens of `users` new members, each allowed the per-user limit of running chats.
pub(crate) async fn member_tokens(h: &chatd_e2e::test_db::TestDb, users: usize) -> Vec<String> {
    use chatstore::testing::Fixtures as _;
    let mut tokens = Vec::with_capacity(users);
    for u in 0..users {
        let user = h
            .store
            .fixture_user(&format!("bench{u}"), "member", h.organization)
            .await
            .unwrap();
        tokens.push(
            h.store
                .fixture_token(user, "bench", None)
                .await
                .unwrap()
                .token,
        );
    }
    tokens
}
