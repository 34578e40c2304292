//! `--progress=quiet` and `-q`: no progress at all; the command prints the image id and the
//! error path still reports failures on stderr.

use super::{BuildOutcome, Display};
use kiln_builder::events::{Event, EventSink};

pub struct Quiet;

impl EventSink for Quiet {
    fn emit(&self, _event: Event) {}
}

impl Display for Quiet {
    fn finish(&self, _result: Option<&BuildOutcome>) {}
}
