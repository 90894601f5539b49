//! What the code under an in-process test logs: [`Capture::start`] collects the lines logged on
//! the test's thread (the whole engine, on a `#[tokio::test]` runtime) until it is dropped, and
//! the lines of threads that no test captures on: the embedded store's connection threads
//! (sqlx hands each SQLite command the current span, so a span can close there when that thread
//! drops the last reference to it) and blocking-pool threads.
//!
//! One global `fmt` subscriber (INFO and above, span closes included) writes each line to the
//! capture of the thread it was logged on, or, from a thread without one, to every capture. One subscriber for the whole test binary,
//! instead of one per test, because tracing caches per call site whether anyone listens: with
//! thread-local subscribers coming and going in parallel tests, that cache can switch a call
//! site off for a test that does listen.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use tracing_subscriber::fmt::format::FmtSpan;

type Lines = Arc<Mutex<Vec<u8>>>;

thread_local! {
    static CAPTURE: RefCell<Option<Lines>> = const { RefCell::new(None) };
}

/// Every capture alive, for lines from threads without one.
static ACTIVE: Mutex<Vec<Lines>> = Mutex::new(Vec::new());

fn append(lines: &Lines, buf: &[u8]) {
    lines
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .extend_from_slice(buf);
}

/// The lines logged on this thread while it lives.
#[derive(Debug)]
pub struct Capture {
    lines: Lines,
}

impl Capture {
    /// Starts capturing on this thread (installing the global subscriber the first time).
    pub fn start() -> Self {
        static INSTALL: Once = Once::new();
        INSTALL.call_once(|| {
            // Another global subscriber (a test binary's own) wins; then nothing is captured.
            let _ = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
                .with_span_events(FmtSpan::CLOSE)
                .with_writer(|| ThreadWriter)
                .try_init();
        });
        let lines: Lines = Arc::new(Mutex::new(Vec::new()));
        CAPTURE.with(|c| *c.borrow_mut() = Some(lines.clone()));
        ACTIVE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(lines.clone());
        Self { lines }
    }

    /// Everything captured so far.
    pub fn text(&self) -> String {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        String::from_utf8_lossy(&lines).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        CAPTURE.with(|c| c.borrow_mut().take());
        ACTIVE
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|lines| !Arc::ptr_eq(lines, &self.lines));
    }
}

/// Writes to the capture of the current thread, else to every capture.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let own = CAPTURE.with(|c| c.borrow().clone());
        match own {
            Some(lines) => append(&lines, buf),
            None => {
                let active = ACTIVE.lock().unwrap_or_else(|p| p.into_inner()).clone();
                for lines in &active {
                    append(lines, buf);
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
