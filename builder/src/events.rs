//! Build events: what the solver reports while it works, for the progress display and for tools
//! that read kiln's progress as JSON lines.
//!
//! Every event names its vertex by a small number assigned in the order steps start (`#5` in
//! BuildKit's plain output), so parallel stages can interleave their events and still be told
//! apart.

use serde::Serialize;
use std::sync::Mutex;
use std::time::Duration;

/// Which output stream a log line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Stream {
    Stdout,
    Stderr,
}

/// One thing that happened during a build.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A step began: `name` is how BuildKit titles it (`[build 2/4] RUN make`).
    Started {
        id: u32,
        name: String,
        /// The Dockerfile line of the instruction, when the step has one.
        #[serde(skip_serializing_if = "Option::is_none")]
        line: Option<usize>,
    },
    /// A line of a step's output (without its newline), `elapsed` since the step started.
    Log {
        id: u32,
        stream: Stream,
        #[serde(serialize_with = "as_seconds")]
        elapsed: Duration,
        text: String,
    },
    /// A step's result came from the cache: nothing ran.
    Cached { id: u32 },
    /// A step finished successfully.
    Done {
        id: u32,
        #[serde(serialize_with = "as_seconds")]
        elapsed: Duration,
    },
    /// A step failed; `message` is the whole explanation.
    Failed {
        id: u32,
        #[serde(serialize_with = "as_seconds")]
        elapsed: Duration,
        message: String,
    },
    /// Why a step runs rather than being answered from the cache: each input of its key that
    /// changed since the last build of the same tag or target (see `docs/cache.md`). Follows
    /// the step's `Started`.
    Explained { id: u32, reasons: Vec<String> },
    /// Something the user should know that does not stop the build.
    Warning { message: String },
}

fn as_seconds<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    // Milliseconds are all a person or a tool needs; rounding keeps the JSON short and stable.
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

/// Where events go. Implementations must be cheap: they are called from build threads.
pub trait EventSink: Send + Sync {
    fn emit(&self, event: Event);
}

/// Keeps every event, in order (tests, and `--metadata-file` summaries).
#[derive(Debug, Default)]
pub struct Recorder {
    events: Mutex<Vec<Event>>,
}

impl Recorder {
    pub fn events(&self) -> Vec<Event> {
        self.events
            .lock()
            .map(|e| e.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

impl EventSink for Recorder {
    fn emit(&self, event: Event) {
        match self.events.lock() {
            Ok(mut events) => events.push(event),
            Err(poisoned) => poisoned.into_inner().push(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_as_one_tagged_object_each() {
        let cases = [
            (
                Event::Started {
                    id: 3,
                    name: "[2/4] RUN make".into(),
                    line: Some(7),
                },
                r#"{"event":"started","id":3,"name":"[2/4] RUN make","line":7}"#,
            ),
            (
                Event::Log {
                    id: 3,
                    stream: Stream::Stderr,
                    elapsed: Duration::from_micros(1_234_567),
                    text: "warning: x".into(),
                },
                r#"{"event":"log","id":3,"stream":"stderr","elapsed":1.235,"text":"warning: x"}"#,
            ),
            (Event::Cached { id: 4 }, r#"{"event":"cached","id":4}"#),
            (
                Event::Failed {
                    id: 5,
                    elapsed: Duration::from_millis(20),
                    message: "exit code: 1".into(),
                },
                r#"{"event":"failed","id":5,"elapsed":0.02,"message":"exit code: 1"}"#,
            ),
        ];
        for (event, want) in cases {
            assert_eq!(
                serde_json::to_string(&event).unwrap_or_else(|e| panic!("{e}")),
                want
            );
        }
    }

    #[test]
    fn recorder_keeps_order() {
        let r = Recorder::default();
        r.emit(Event::Cached { id: 1 });
        r.emit(Event::Warning {
            message: "w".into(),
        });
        assert_eq!(
            r.events(),
            vec![
                Event::Cached { id: 1 },
                Event::Warning {
                    message: "w".into()
                }
            ]
        );
    }
}
