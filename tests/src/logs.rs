//! What the code under an in-process test logs: [`Capture::start`] collects the lines logged on
//! the test's thread (the whole engine, on a `#[tokio::test]` runtime) until it is dropped.
//!
//! One global `fmt` subscriber (INFO and above, span closes included) writes each line to the
//! capture of the thread it was logged on, or nowhere. One subscriber for the whole test binary,
//! instead of one per test, because tracing caches per call site whether anyone listens: with
//! thread-local subscribers coming and going in parallel tests, that cache can switch a call
//! site off for a test that does listen.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use tracing_subscriber::fmt::format::FmtSpan;

thread_local! {
    static CAPTURE: RefCell<Option<Arc<Mutex<Vec<u8>>>>> = const { RefCell::new(None) };
}

/// The lines logged on this thread while it lives.
#[derive(Debug)]
pub struct Capture {
    lines: Arc<Mutex<Vec<u8>>>,
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
        let lines = Arc::new(Mutex::new(Vec::new()));
        CAPTURE.with(|c| *c.borrow_mut() = Some(lines.clone()));
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
    }
}

/// Writes to the capture of the current thread, if any.
struct ThreadWriter;

impl Write for ThreadWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        CAPTURE.with(|c| {
            if let Some(lines) = c.borrow().as_ref() {
                lines
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(buf);
            }
        });
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
