//! Steps as the progress display sees them: BuildKit's titles (`[build 2/5] RUN make`) and the
//! life of one step as events — `Started`, any `Log` lines, then exactly one of `Cached`,
//! `Done` or `Failed`.

use crate::events::{Event, EventSink, Stream};
use kiln_grammar::instructions::InstructionKind;
use kiln_grammar::plan::{Base, BuildPlan, Stage};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Instant;

/// Numbers the steps of one stage the way BuildKit titles them.
///
/// BuildKit counts the steps that make a vertex: FROM an image, RUN, COPY, ADD and WORKDIR. A
/// stage's name prefixes the number; an unnamed stage is `stage-N` when the Dockerfile has more
/// than one stage, and has no prefix otherwise.
#[derive(Debug, Clone)]
pub struct StepLabel {
    prefix: Option<String>,
    index: usize,
    total: usize,
}

impl StepLabel {
    pub fn new(plan: &BuildPlan, stage: &Stage) -> Self {
        let prefix = match &stage.name {
            Some(name) => Some(name.clone()),
            None if plan.stages.len() > 1 || stage.index > 0 => {
                Some(format!("stage-{}", stage.index))
            }
            None => None,
        };
        let from = usize::from(matches!(stage.base, Base::Image { .. }));
        let steps = stage
            .instructions
            .iter()
            .filter(|i| {
                matches!(
                    i.kind,
                    InstructionKind::Run(_)
                        | InstructionKind::Copy(_)
                        | InstructionKind::Add(_)
                        | InstructionKind::Workdir { .. }
                )
            })
            .count();
        StepLabel {
            prefix,
            index: 0,
            total: from + steps,
        }
    }

    /// Counts one more step than the stage's own (an ONBUILD trigger of its base).
    pub fn add_step(&mut self) {
        self.total += 1;
    }

    /// The title of the next step: `[name 2/5] text`, the number padded to the total's width.
    pub fn next(&mut self, text: &str) -> String {
        self.index += 1;
        let width = self.total.max(1).to_string().len();
        let number = format!("{:>width$}/{}", self.index, self.total);
        match &self.prefix {
            Some(prefix) => format!("[{prefix} {number}] {text}"),
            None => format!("[{number}] {text}"),
        }
    }
}

/// One step in progress. Dropping it without an outcome reports nothing more.
pub struct Vertex<'a> {
    events: &'a dyn EventSink,
    pub id: u32,
    started: Instant,
}

impl<'a> Vertex<'a> {
    pub fn start(
        events: &'a dyn EventSink,
        ids: &AtomicU32,
        name: String,
        line: Option<usize>,
    ) -> Self {
        let id = ids.fetch_add(1, Ordering::Relaxed);
        events.emit(Event::Started { id, name, line });
        Vertex {
            events,
            id,
            started: Instant::now(),
        }
    }

    pub fn log(&self, stream: Stream, text: String) {
        self.events.emit(Event::Log {
            id: self.id,
            stream,
            elapsed: self.started.elapsed(),
            text,
        });
    }

    /// Why the step runs (see [`crate::explain`]).
    pub fn explained(&self, reasons: Vec<String>) {
        self.events.emit(Event::Explained {
            id: self.id,
            reasons,
        });
    }

    pub fn cached(self) {
        self.events.emit(Event::Cached { id: self.id });
    }

    pub fn done(self) {
        self.events.emit(Event::Done {
            id: self.id,
            elapsed: self.started.elapsed(),
        });
    }

    pub fn failed(self, message: String) {
        self.events.emit(Event::Failed {
            id: self.id,
            elapsed: self.started.elapsed(),
            message,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_grammar::plan::{PlanOptions, plan};

    fn plan_of(text: &str) -> BuildPlan {
        let df = kiln_grammar::parse(text).unwrap_or_else(|e| panic!("{e}"));
        plan(&df, &PlanOptions::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn titles_count_vertex_steps_like_buildkit() {
        let p = plan_of("FROM busybox\nENV A=1\nRUN a\nWORKDIR /x\nCMD b\n");
        let mut label = StepLabel::new(&p, &p.stages[0]);
        assert_eq!(label.next("FROM busybox"), "[1/3] FROM busybox");
        assert_eq!(label.next("RUN a"), "[2/3] RUN a");

        let p = plan_of(
            "FROM scratch AS a\nWORKDIR /x\nFROM a\nRUN 1\nRUN 2\nRUN 3\nRUN 4\nRUN 5\nRUN 6\nRUN 7\nRUN 8\nRUN 9\nRUN 10\n",
        );
        let mut first = StepLabel::new(&p, &p.stages[0]);
        assert_eq!(first.next("WORKDIR /x"), "[a 1/1] WORKDIR /x");
        let mut second = StepLabel::new(&p, &p.stages[1]);
        assert_eq!(second.next("RUN 1"), "[stage-1  1/10] RUN 1");
    }
}
