//! `--message-format json`: one JSON object per line on stdout as things happen, then a summary
//! line. The shapes are documented in docs/events.md.

use bootvault::{Progress, Report};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::io::Write;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// At most one `download` / `verify` line per asset and phase in this interval (the last
/// chunk is always reported), so a fast download cannot flood a CI log.
pub const MIN_INTERVAL: Duration = Duration::from_millis(250);

/// The output format of a long command.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum MessageFormat {
    /// Progress bars and log lines on stderr, a table on stdout.
    #[default]
    Human,
    /// One JSON object per line on stdout as things happen, then a summary line.
    Json,
}

/// Writes event lines; shared by the worker threads through the progress callback.
pub struct Events {
    start: Instant,
    last: Mutex<HashMap<(String, &'static str), Instant>>,
}

impl Events {
    pub fn new() -> Events {
        Events {
            start: Instant::now(),
            last: Mutex::new(HashMap::new()),
        }
    }

    fn line(&self, mut v: Value) {
        v["t_ms"] = json!((self.start.elapsed().as_secs_f64() * 1e6).round() / 1e3);
        let mut text = bootvault::redact::text(&serde_json::to_string(&v).unwrap_or_default());
        text.push('\n');
        let mut out = std::io::stdout().lock();
        // A closed pipe must not stop the prepare; the exit code still tells the outcome.
        let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
    }

    /// Whether a progress line for (name, kind) is due now.
    fn due(&self, name: &str, kind: &'static str, last_chunk: bool) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let key = (name.to_string(), kind);
        let due = last_chunk
            || last
                .get(&key)
                .is_none_or(|t| now.duration_since(*t) >= MIN_INTERVAL);
        if due {
            last.insert(key, now);
        }
        due
    }

    pub fn emit(&self, p: &Progress<'_>) {
        match p {
            Progress::Checking { name } => self.line(json!({"event": "checking", "name": name})),
            Progress::Waiting { name } => self.line(json!({"event": "waiting", "name": name})),
            Progress::Downloading { name, done, total }
                if self.due(name, "download", Some(*done) == *total) =>
            {
                self.line(json!({"event": "download", "name": name, "done": done, "total": total}))
            }
            Progress::Verifying { name, done, total }
                if self.due(name, "verify", done == total) =>
            {
                self.line(json!({"event": "verify", "name": name, "done": done, "total": total}))
            }
            Progress::Ready { name, outcome } => {
                self.line(json!({"event": "ready", "name": name, "outcome": outcome.as_str()}))
            }
            Progress::Failed { name, error } => self.line(
                json!({"event": "failed", "name": name, "error": error.to_string(),
                                "error_kind": error.kind()}),
            ),
            // Progress lines that are not due yet.
            _ => {}
        }
    }

    /// The closing line: the `prepare --json` object with `"event": "summary"` and `ok`.
    pub fn summary(&self, report: &Report) {
        let mut v = json!({"event": "summary", "ok": !report.failed()});
        if let (Some(obj), Value::Object(fields)) =
            (v.as_object_mut(), super::prepare::report_json(report))
        {
            obj.extend(fields);
        }
        self.line(v);
    }
}
