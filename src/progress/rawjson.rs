//! `--progress=rawjson`: every event as one JSON object per line on stdout (the serde form of
//! `kiln_builder::events::Event`), and a closing `result` object; `docs/events.md` describes
//! them. Each line is flushed as it is written so that a tool reading the pipe sees steps live.

use super::{BuildOutcome, Display};
use kiln_builder::events::{Event, EventSink};
use serde::Serialize;
use std::io::Write;
use std::sync::Mutex;

pub struct RawJson<W> {
    out: Mutex<W>,
}

/// The last line of a successful build.
#[derive(Serialize)]
#[serde(tag = "event", rename = "result")]
struct ResultLine<'a> {
    image_id: &'a str,
    manifest_digest: &'a str,
    tags: &'a [String],
    steps_run: usize,
    steps_cached: usize,
}

impl<W: Write + Send> RawJson<W> {
    pub fn new(out: W) -> Self {
        RawJson {
            out: Mutex::new(out),
        }
    }

    fn write_line(&self, value: &impl Serialize) {
        let Ok(mut line) = serde_json::to_string(value) else {
            return;
        };
        line.push('\n');
        let mut out = match self.out.lock() {
            Ok(out) => out,
            Err(poisoned) => poisoned.into_inner(),
        };
        // A reader that went away (closed pipe) does not stop the build.
        let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
    }

    #[cfg(test)]
    pub fn into_inner(self) -> W {
        match self.out.into_inner() {
            Ok(out) => out,
            Err(poisoned) => poisoned.into_inner(),
        }
    }
}

impl<W: Write + Send> EventSink for RawJson<W> {
    fn emit(&self, event: Event) {
        self.write_line(&event);
    }
}

impl<W: Write + Send> Display for RawJson<W> {
    fn finish(&self, result: Option<&BuildOutcome>) {
        if let Some(outcome) = result {
            self.write_line(&ResultLine {
                image_id: &outcome.image_id,
                manifest_digest: &outcome.manifest_digest,
                tags: &outcome.tags,
                steps_run: outcome.steps_run,
                steps_cached: outcome.steps_cached,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn one_object_per_line_then_the_result() {
        let raw = RawJson::new(Vec::new());
        raw.emit(Event::Started {
            id: 1,
            name: "[1/2] FROM busybox".into(),
            line: Some(1),
        });
        raw.emit(Event::Done {
            id: 1,
            elapsed: Duration::from_millis(1250),
        });
        raw.finish(Some(&BuildOutcome {
            image_id: "sha256:aa".into(),
            manifest_digest: "sha256:bb".into(),
            tags: vec!["app:1".into()],
            steps_run: 1,
            steps_cached: 0,
            cache: Default::default(),
        }));
        let text = String::from_utf8(raw.into_inner()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                r#"{"event":"started","id":1,"name":"[1/2] FROM busybox","line":1}"#,
                r#"{"event":"done","id":1,"elapsed":1.25}"#,
                r#"{"event":"result","image_id":"sha256:aa","manifest_digest":"sha256:bb","tags":["app:1"],"steps_run":1,"steps_cached":0}"#,
            ]
        );
    }

    #[test]
    fn a_failed_build_has_no_result_line() {
        let raw = RawJson::new(Vec::new());
        raw.finish(None);
        assert!(raw.into_inner().is_empty());
    }
}
