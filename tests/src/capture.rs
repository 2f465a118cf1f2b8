//! Log lines captured in memory: a test installs the services' own JSON subscriber as the
//! thread's default (the app's tasks run on the test's current-thread runtime) and reads
//! what they logged.

use std::io::Write;
use std::sync::{Arc, Mutex};

use eriop_nats::config::LogFormat;
use serde_json::Value;
use tracing::subscriber::DefaultGuard;

#[derive(Clone, Default)]
pub struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Captured {
    /// Starts capturing this thread's logs at `level`, as JSON lines.
    pub fn start(level: &str) -> (Self, DefaultGuard) {
        let captured = Self::default();
        let guard = tracing::subscriber::set_default(eriop_nats::logging::subscriber(
            LogFormat::Json,
            level,
            captured.clone(),
            None,
        ));
        (captured, guard)
    }

    /// As [`Self::start`], and the spans are also exported with `tracer` (OTLP).
    pub fn start_exporting(
        level: &str,
        tracer: opentelemetry_sdk::trace::Tracer,
    ) -> (Self, DefaultGuard) {
        let captured = Self::default();
        let guard = tracing::subscriber::set_default(eriop_nats::logging::subscriber(
            LogFormat::Json,
            level,
            captured.clone(),
            Some(tracer),
        ));
        (captured, guard)
    }

    pub fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }

    /// The lines of `target`, parsed.
    pub fn lines_of(&self, target: &str) -> Vec<Value> {
        self.text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["target"] == target)
            .collect()
    }
}
