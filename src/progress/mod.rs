//! The build progress display, one module per `--progress` mode. Every mode is a
//! `kiln_builder::events::EventSink`; [`Progress`] wraps the chosen one so that the command line
//! can report its own steps (exporting the image, writing outputs) through the same display,
//! numbered after the solver's.

mod explain;
mod plain;
mod quiet;
mod rawjson;
mod tty;

pub use plain::Plain;
pub use quiet::Quiet;
pub use rawjson::RawJson;
pub use tty::Tty;

use crate::error::{CliError, CliResult};
use kiln_builder::BuildOutcome;
use kiln_builder::events::{Event, EventSink, Stream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// How progress is shown (`--progress`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// BuildKit's plain text on stderr.
    Plain,
    /// Live spinners on stderr (a terminal).
    Tty,
    /// Nothing but the image id.
    Quiet,
    /// One JSON object per event on stdout.
    RawJson,
}

impl Mode {
    /// The mode for `--progress VALUE` and `-q`: `-q` means quiet whatever `--progress` says
    /// (as with buildx), `auto` is tty when stderr is a terminal and plain otherwise.
    pub fn select(progress: &str, quiet: bool, stderr_is_terminal: bool) -> CliResult<Mode> {
        if quiet {
            return Ok(Mode::Quiet);
        }
        Ok(match progress {
            "auto" if stderr_is_terminal => Mode::Tty,
            "auto" | "plain" => Mode::Plain,
            "tty" if stderr_is_terminal => Mode::Tty,
            "tty" => {
                // Cursor movement into a file or pipe only garbles it.
                eprintln!(
                    "warning: --progress=tty: stderr is not a terminal; showing plain progress"
                );
                Mode::Plain
            }
            "quiet" => Mode::Quiet,
            "rawjson" => Mode::RawJson,
            other => {
                return Err(CliError::Usage {
                    message: format!("unknown --progress {other:?}"),
                    hint: Some("use auto, plain, tty, quiet or rawjson".into()),
                });
            }
        })
    }

    /// Whether this mode writes to stdout (then no output may use `dest=-`).
    pub fn uses_stdout(self) -> bool {
        self == Mode::RawJson
    }

    /// The display for this mode, on the process's stderr (stdout for rawjson).
    pub fn display(self) -> Box<dyn Display> {
        match self {
            Mode::Plain => Box::new(Plain::new(std::io::stderr())),
            Mode::Tty => Box::new(Tty::new()),
            Mode::Quiet => Box::new(Quiet),
            Mode::RawJson => Box::new(RawJson::new(std::io::stdout())),
        }
    }
}

/// A progress display: the build's events, then one call to [`Display::finish`].
pub trait Display: EventSink {
    /// The build and everything after it is over: `Some` with what was built, `None` after a
    /// failure. Live displays clear their bars here; rawjson writes its closing result object.
    fn finish(&self, result: Option<&BuildOutcome>);
}

/// The display of one `kiln build`: forwards the solver's events and numbers the command
/// line's own steps after the highest vertex id seen, as BuildKit numbers its exporters.
pub struct Progress {
    display: Box<dyn Display>,
    last_id: AtomicU32,
    /// `--explain`: the reasons steps ran, printed after the build.
    explanations: Option<explain::Explanations>,
}

impl Progress {
    pub fn new(display: Box<dyn Display>) -> Progress {
        Progress {
            display,
            last_id: AtomicU32::new(0),
            explanations: None,
        }
    }

    /// Keeps the reasons steps ran, for [`Progress::print_explanations`].
    pub fn collect_explanations(mut self) -> Progress {
        self.explanations = Some(explain::Explanations::default());
        self
    }

    /// Prints the reasons steps ran to stderr, when they were collected.
    pub fn print_explanations(&self) {
        if let Some(explanations) = &self.explanations {
            explanations.print();
        }
    }

    /// Start a step of the command line's own, shown like a solver step.
    pub fn step(&self, name: impl Into<String>) -> Step<'_> {
        let id = self.last_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.emit(Event::Started {
            id,
            name: name.into(),
            line: None,
        });
        Step {
            progress: self,
            id,
            started: Instant::now(),
        }
    }

    pub fn finish(&self, result: Option<&BuildOutcome>) {
        self.display.finish(result);
    }
}

impl EventSink for Progress {
    fn emit(&self, event: Event) {
        let id = match &event {
            Event::Started { id, .. }
            | Event::Log { id, .. }
            | Event::Cached { id }
            | Event::Done { id, .. }
            | Event::Failed { id, .. }
            | Event::Explained { id, .. } => Some(*id),
            Event::Warning { .. } => None,
        };
        if let Some(id) = id {
            self.last_id.fetch_max(id, Ordering::Relaxed);
        }
        if let Some(explanations) = &self.explanations {
            explanations.record(&event);
        }
        self.display.emit(event);
    }
}

/// A running step of the command line (see [`Progress::step`]).
pub struct Step<'p> {
    progress: &'p Progress,
    id: u32,
    started: Instant,
}

impl Step<'_> {
    pub fn log(&self, text: impl Into<String>) {
        self.progress.emit(Event::Log {
            id: self.id,
            stream: Stream::Stdout,
            elapsed: self.started.elapsed(),
            text: text.into(),
        });
    }

    pub fn done(self) {
        self.progress.emit(Event::Done {
            id: self.id,
            elapsed: self.started.elapsed(),
        });
    }

    pub fn failed(self, message: impl Into<String>) {
        self.progress.emit(Event::Failed {
            id: self.id,
            elapsed: self.started.elapsed(),
            message: message.into(),
        });
    }

    /// Run `work` as this step: DONE when it succeeds, ERROR with its message when it fails.
    pub fn run<T>(self, work: impl FnOnce(&Step<'_>) -> CliResult<T>) -> CliResult<T> {
        match work(&self) {
            Ok(value) => {
                self.done();
                Ok(value)
            }
            Err(err) => {
                self.failed(err.to_string());
                Err(err)
            }
        }
    }
}

/// What a terminal would show of a log line: the text after its last carriage return (progress
/// meters redraw themselves with `\r`), so no display ever writes one.
pub fn visible_text(text: &str) -> &str {
    let text = text.trim_end_matches(['\r', '\n']);
    text.rsplit('\r').next().unwrap_or(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_builder::events::Recorder;
    use std::sync::Arc;

    struct Shared(Arc<Recorder>);

    impl EventSink for Shared {
        fn emit(&self, event: Event) {
            self.0.emit(event);
        }
    }

    impl Display for Shared {
        fn finish(&self, _: Option<&BuildOutcome>) {}
    }

    #[test]
    fn modes_follow_buildx() {
        assert_eq!(Mode::select("auto", false, true).ok(), Some(Mode::Tty));
        assert_eq!(Mode::select("auto", false, false).ok(), Some(Mode::Plain));
        assert_eq!(Mode::select("plain", false, true).ok(), Some(Mode::Plain));
        assert_eq!(Mode::select("tty", false, false).ok(), Some(Mode::Plain));
        assert_eq!(
            Mode::select("rawjson", false, true).ok(),
            Some(Mode::RawJson)
        );
        assert_eq!(Mode::select("plain", true, true).ok(), Some(Mode::Quiet));
        assert!(Mode::select("fancy", false, true).is_err());
    }

    #[test]
    fn own_steps_are_numbered_after_the_solvers() {
        let recorder = Arc::new(Recorder::default());
        let progress = Progress::new(Box::new(Shared(Arc::clone(&recorder))));
        progress.emit(Event::Cached { id: 7 });
        progress.emit(Event::Cached { id: 3 });
        let step = progress.step("exporting to image");
        step.log("writing image sha256:abc done");
        step.done();
        let events = recorder.events();
        assert!(
            matches!(&events[2], Event::Started { id: 8, name, .. } if name == "exporting to image")
        );
        assert!(
            matches!(&events[3], Event::Log { id: 8, text, .. } if text == "writing image sha256:abc done")
        );
        assert!(matches!(events[4], Event::Done { id: 8, .. }));
    }

    #[test]
    fn carriage_returns_keep_what_a_terminal_shows() {
        assert_eq!(visible_text("10%\r50%\r100%"), "100%");
        assert_eq!(visible_text("done\r\n"), "done");
        assert_eq!(visible_text("plain"), "plain");
    }
}
