//! `--progress=plain`: BuildKit's plain text, one line per thing that happened, each starting
//! with its vertex number so interleaved parallel stages stay readable:
//!
//! ```text
//! #5 [2/4] RUN make
//! #5 0.231 cc -o app main.c
//! #5 DONE 1.2s
//!
//! #6 [3/4] COPY . .
//! #6 CACHED
//! ```
//!
//! When another vertex speaks while one is still running, the running one gets a `#N ...` line
//! and the new one a blank line and its header again, exactly as BuildKit does.

use super::{BuildOutcome, Display, visible_text};
use kiln_builder::events::{Event, EventSink};
use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::sync::Mutex;

pub struct Plain<W> {
    state: Mutex<State<W>>,
}

struct State<W> {
    out: W,
    names: HashMap<u32, String>,
    /// Vertices started and not yet finished.
    running: HashSet<u32>,
    /// The vertex whose header was printed last.
    current: Option<u32>,
    printed_any: bool,
}

impl<W: Write + Send> Plain<W> {
    pub fn new(out: W) -> Self {
        Plain {
            state: Mutex::new(State {
                out,
                names: HashMap::new(),
                running: HashSet::new(),
                current: None,
                printed_any: false,
            }),
        }
    }

    /// The writer back (tests read what was printed).
    #[cfg(test)]
    pub fn into_inner(self) -> W {
        match self.state.into_inner() {
            Ok(state) => state.out,
            Err(poisoned) => poisoned.into_inner().out,
        }
    }
}

impl<W: Write> State<W> {
    /// Make `id` the current vertex, printing its header if another one spoke last.
    fn switch_to(&mut self, id: u32) -> io::Result<()> {
        if self.current == Some(id) {
            return Ok(());
        }
        self.leave_current()?;
        match self.names.get(&id) {
            Some(name) => writeln!(self.out, "#{id} {name}")?,
            None => writeln!(self.out, "#{id}")?,
        }
        self.current = Some(id);
        Ok(())
    }

    /// Close the current vertex's block: `#N ...` if it is still running, then a blank line.
    fn leave_current(&mut self) -> io::Result<()> {
        if let Some(old) = self.current.take()
            && self.running.contains(&old)
        {
            writeln!(self.out, "#{old} ...")?;
        }
        if self.printed_any {
            writeln!(self.out)?;
        }
        self.printed_any = true;
        Ok(())
    }

    fn write(&mut self, event: &Event) -> io::Result<()> {
        match event {
            Event::Started { id, name, .. } => {
                self.names.insert(*id, name.clone());
                self.running.insert(*id);
                // A restarted id (never sent by the solver) still gets its header.
                if self.current == Some(*id) {
                    self.current = None;
                }
                self.switch_to(*id)?;
            }
            Event::Log {
                id, elapsed, text, ..
            } => {
                self.switch_to(*id)?;
                let seconds = elapsed.as_secs_f64();
                for line in text.split('\n') {
                    writeln!(self.out, "#{id} {seconds:.3} {}", visible_text(line))?;
                }
            }
            Event::Cached { id } => {
                self.switch_to(*id)?;
                self.running.remove(id);
                writeln!(self.out, "#{id} CACHED")?;
            }
            Event::Done { id, elapsed } => {
                self.switch_to(*id)?;
                self.running.remove(id);
                writeln!(self.out, "#{id} DONE {:.1}s", elapsed.as_secs_f64())?;
            }
            Event::Failed { id, message, .. } => {
                self.switch_to(*id)?;
                self.running.remove(id);
                let mut lines = message.lines().map(visible_text);
                writeln!(self.out, "#{id} ERROR: {}", lines.next().unwrap_or(""))?;
                for line in lines {
                    writeln!(self.out, "#{id} {line}")?;
                }
            }
            Event::Explained { id, reasons } => {
                self.switch_to(*id)?;
                for reason in reasons {
                    writeln!(self.out, "#{id} why: {}", visible_text(reason))?;
                }
            }
            Event::Warning { message } => {
                self.leave_current()?;
                for line in message.lines() {
                    writeln!(self.out, "WARNING: {}", visible_text(line))?;
                }
            }
        }
        self.out.flush()
    }
}

impl<W: Write + Send> EventSink for Plain<W> {
    fn emit(&self, event: Event) {
        let mut state = match self.state.lock() {
            Ok(state) => state,
            Err(poisoned) => poisoned.into_inner(),
        };
        // A closed stderr leaves nowhere to say anything; the build itself goes on.
        let _ = state.write(&event);
    }
}

impl<W: Write + Send> Display for Plain<W> {
    fn finish(&self, _result: Option<&BuildOutcome>) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_builder::events::Stream;
    use std::time::Duration;

    fn render(events: Vec<Event>) -> String {
        let plain = Plain::new(Vec::new());
        for event in events {
            plain.emit(event);
        }
        String::from_utf8(plain.into_inner()).unwrap_or_default()
    }

    fn started(id: u32, name: &str) -> Event {
        Event::Started {
            id,
            name: name.into(),
            line: None,
        }
    }

    fn log(id: u32, millis: u64, text: &str) -> Event {
        Event::Log {
            id,
            stream: Stream::Stdout,
            elapsed: Duration::from_millis(millis),
            text: text.into(),
        }
    }

    #[test]
    fn sequential_steps_print_as_buildkit_blocks() {
        let text = render(vec![
            started(1, "[1/3] FROM docker.io/library/busybox:latest"),
            Event::Done {
                id: 1,
                elapsed: Duration::from_millis(40),
            },
            started(2, "[2/3] COPY a b"),
            Event::Cached { id: 2 },
            started(3, "[3/3] RUN make"),
            log(3, 231, "cc -o app main.c"),
            Event::Failed {
                id: 3,
                elapsed: Duration::from_millis(900),
                message: "process \"/bin/sh -c make\" did not complete successfully: exit code: 2"
                    .into(),
            },
        ]);
        assert_eq!(
            text,
            "#1 [1/3] FROM docker.io/library/busybox:latest\n#1 DONE 0.0s\n\n\
             #2 [2/3] COPY a b\n#2 CACHED\n\n\
             #3 [3/3] RUN make\n#3 0.231 cc -o app main.c\n\
             #3 ERROR: process \"/bin/sh -c make\" did not complete successfully: exit code: 2\n"
        );
    }

    #[test]
    fn interleaved_vertices_are_reintroduced() {
        let text = render(vec![
            started(4, "[a 2/2] RUN x"),
            started(5, "[b 2/2] RUN y"),
            log(4, 1500, "from a"),
            log(5, 1600, "from b"),
            Event::Done {
                id: 5,
                elapsed: Duration::from_millis(1700),
            },
        ]);
        assert_eq!(
            text,
            "#4 [a 2/2] RUN x\n#4 ...\n\n#5 [b 2/2] RUN y\n#5 ...\n\n\
             #4 [a 2/2] RUN x\n#4 1.500 from a\n#4 ...\n\n\
             #5 [b 2/2] RUN y\n#5 1.600 from b\n#5 DONE 1.7s\n"
        );
    }

    #[test]
    fn never_writes_carriage_returns() {
        let text = render(vec![
            started(1, "[1/1] RUN wget"),
            log(1, 5, "10%\r60%\r100%"),
            Event::Warning {
                message: "FromAsCasing: 'as' and 'FROM' keywords' casing do not match".into(),
            },
        ]);
        assert!(!text.contains('\r'), "{text:?}");
        assert!(text.contains("#1 0.005 100%\n"), "{text:?}");
        assert!(
            text.ends_with(
                "#1 ...\n\nWARNING: FromAsCasing: 'as' and 'FROM' keywords' casing do not match\n"
            ),
            "{text:?}"
        );
    }
}
