//! `--progress=tty`: live progress on a terminal (stderr). Each running step is one line with a
//! spinner, its elapsed time and the last line of its output; a finished step is replaced by a
//! one-line summary printed above the live area, BuildKit's way (` => [2/4] RUN make 1.2s`,
//! ` => CACHED [3/4] COPY . .`). When a step fails, its last output lines are printed plainly
//! so the reason is on screen after the bars are gone. `NO_COLOR` turns colours off.

use super::{BuildOutcome, Display, visible_text};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use kiln_builder::events::{Event, EventSink};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Output lines kept per running step, shown when it fails.
const TAIL_LINES: usize = 10;

pub struct Tty {
    multi: MultiProgress,
    running: Mutex<HashMap<u32, Running>>,
    paint: Paint,
}

struct Running {
    bar: ProgressBar,
    name: String,
    tail: VecDeque<String>,
}

/// How a step ended, for its summary line.
#[derive(Debug, Clone, Copy)]
enum Status {
    Done(Duration),
    Cached,
    Failed(Duration),
    Canceled,
}

/// ANSI colours, or none at all when `NO_COLOR` is set (https://no-color.org).
#[derive(Debug, Clone, Copy)]
struct Paint {
    color: bool,
}

impl Paint {
    fn from_env() -> Paint {
        Paint {
            color: std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty()),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

impl Default for Tty {
    fn default() -> Self {
        Self::new()
    }
}

impl Tty {
    pub fn new() -> Tty {
        Tty {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()),
            running: Mutex::new(HashMap::new()),
            paint: Paint::from_env(),
        }
    }

    fn running(&self) -> MutexGuard<'_, HashMap<u32, Running>> {
        match self.running.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    fn style(&self) -> ProgressStyle {
        let template = if self.paint.color {
            " {spinner:.cyan} {prefix:.bold} {secs:.dim} {wide_msg:.dim}"
        } else {
            " {spinner} {prefix} {secs} {wide_msg}"
        };
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_spinner())
            .with_key(
                "secs",
                |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                    let _ = write!(w, "{:.1}s", state.elapsed().as_secs_f64());
                },
            )
    }

    /// Take `id` off the live area and print its summary (and, on failure, its output).
    fn finish_step(&self, id: u32, status: Status) {
        let Some(step) = self.running().remove(&id) else {
            return;
        };
        step.bar.finish_and_clear();
        self.multi.remove(&step.bar);
        let mut text = summary(self.paint, &step.name, status);
        if let Status::Failed(_) = status {
            text.push('\n');
            text.push_str(&failure_block(&step.name, &step.tail));
        }
        let _ = self.multi.println(text);
    }
}

/// ` => [2/4] RUN make 1.2s`, ` => CACHED [3/4] COPY . .`, ` => ERROR [4/4] RUN false 0.1s`.
fn summary(paint: Paint, name: &str, status: Status) -> String {
    match status {
        Status::Done(elapsed) => {
            paint.paint("34", &format!(" => {name} {:.1}s", elapsed.as_secs_f64()))
        }
        Status::Cached => paint.paint("34", &format!(" => CACHED {name}")),
        Status::Failed(elapsed) => paint.paint(
            "31",
            &format!(" => ERROR {name} {:.1}s", elapsed.as_secs_f64()),
        ),
        Status::Canceled => paint.paint("33", &format!(" => CANCELED {name}")),
    }
}

/// BuildKit's block with a failed step's last output lines.
fn failure_block(name: &str, tail: &VecDeque<String>) -> String {
    let mut text = format!("------\n > {name}:\n");
    for line in tail {
        text.push_str(line);
        text.push('\n');
    }
    text.push_str("------");
    text
}

impl EventSink for Tty {
    fn emit(&self, event: Event) {
        match event {
            Event::Started { id, name, .. } => {
                let bar = self.multi.add(
                    ProgressBar::new_spinner()
                        .with_style(self.style())
                        .with_prefix(name.clone()),
                );
                bar.enable_steady_tick(Duration::from_millis(120));
                self.running().insert(
                    id,
                    Running {
                        bar,
                        name,
                        tail: VecDeque::new(),
                    },
                );
            }
            Event::Log {
                id, elapsed, text, ..
            } => {
                let mut running = self.running();
                let Some(step) = running.get_mut(&id) else {
                    return;
                };
                for line in text.split('\n').map(visible_text) {
                    if step.tail.len() == TAIL_LINES {
                        step.tail.pop_front();
                    }
                    step.tail
                        .push_back(format!("{:.3} {line}", elapsed.as_secs_f64()));
                    step.bar.set_message(line.to_string());
                }
            }
            Event::Explained { id, reasons } => {
                if let Some(step) = self.running().get(&id) {
                    step.bar.set_message(format!("why: {}", reasons.join("; ")));
                }
            }
            Event::Cached { id } => self.finish_step(id, Status::Cached),
            Event::Done { id, elapsed } => self.finish_step(id, Status::Done(elapsed)),
            Event::Failed { id, elapsed, .. } => self.finish_step(id, Status::Failed(elapsed)),
            Event::Warning { message } => {
                let _ = self
                    .multi
                    .println(self.paint.paint("33", &format!("WARNING: {message}")));
            }
        }
    }
}

impl Display for Tty {
    fn finish(&self, _result: Option<&BuildOutcome>) {
        // Steps still running when the build ended were stopped by another step's failure.
        let mut ids: Vec<u32> = self.running().keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            self.finish_step(id, Status::Canceled);
        }
        let _ = self.multi.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_builder::events::Stream;

    const PLAIN: Paint = Paint { color: false };

    #[test]
    fn summaries_read_like_buildkit() {
        assert_eq!(
            summary(
                PLAIN,
                "[2/4] RUN make",
                Status::Done(Duration::from_millis(1240))
            ),
            " => [2/4] RUN make 1.2s"
        );
        assert_eq!(
            summary(PLAIN, "[3/4] COPY . .", Status::Cached),
            " => CACHED [3/4] COPY . ."
        );
        assert_eq!(
            summary(
                PLAIN,
                "[4/4] RUN false",
                Status::Failed(Duration::from_millis(100))
            ),
            " => ERROR [4/4] RUN false 0.1s"
        );
        let red = summary(Paint { color: true }, "x", Status::Canceled);
        assert!(
            red.starts_with("\x1b[33m") && red.ends_with("\x1b[0m"),
            "{red:?}"
        );
    }

    #[test]
    fn a_failure_shows_the_last_output_lines() {
        let tty = Tty {
            multi: MultiProgress::with_draw_target(ProgressDrawTarget::hidden()),
            running: Mutex::new(HashMap::new()),
            paint: PLAIN,
        };
        tty.emit(Event::Started {
            id: 2,
            name: "[2/2] RUN make".into(),
            line: None,
        });
        for n in 0..15u64 {
            tty.emit(Event::Log {
                id: 2,
                stream: Stream::Stderr,
                elapsed: Duration::from_millis(n),
                text: format!("line {n}\r"),
            });
        }
        let running = tty.running();
        let step = &running[&2];
        assert_eq!(step.tail.len(), TAIL_LINES);
        assert_eq!(step.tail.front().map(String::as_str), Some("0.005 line 5"));
        assert_eq!(step.bar.message(), "line 14");
        let block = failure_block(&step.name, &step.tail);
        drop(running);
        assert!(
            block.starts_with("------\n > [2/2] RUN make:\n0.005 line 5\n"),
            "{block}"
        );
        assert!(block.ends_with("0.014 line 14\n------"), "{block}");
        tty.emit(Event::Failed {
            id: 2,
            elapsed: Duration::from_millis(20),
            message: "exit code: 2".into(),
        });
        assert!(tty.running().is_empty());
    }
}
