//! Running one RUN process in the sandbox: its output becomes `Log` events (and the last lines
//! are kept for the error message), and a build that is cancelled kills it.

use crate::events::Stream;
use crate::vertex::Vertex;
use kiln_runner::{Outcome, Spec, Stdio, Streams};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, PipeReader};
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How many of the last output lines a failure report keeps.
pub const TAIL_LINES: usize = 20;

/// What a finished run left: how it ended and its last lines of output.
pub struct Finished {
    pub outcome: Outcome,
    pub tail: Vec<String>,
}

/// Runs `spec`, streaming its output to `vertex`. When `cancelled` becomes true the sandbox
/// is killed and the run ends with the runner's report of that.
pub fn run(
    spec: &Spec,
    vertex: &Vertex<'_>,
    cancelled: &AtomicBool,
) -> Result<Finished, kiln_runner::Error> {
    let pipe =
        || std::io::pipe().map_err(|e| kiln_runner::Error::Helper(format!("creating a pipe: {e}")));
    let (out_r, out_w) = pipe()?;
    let (err_r, err_w) = pipe()?;
    let streams = Streams {
        stdin: Stdio::Null,
        stdout: Stdio::Fd(OwnedFd::from(out_w)),
        stderr: Stdio::Fd(OwnedFd::from(err_w)),
    };
    // The write ends live only in `streams`: once the helper has them, the readers see the end
    // of the output when the sandbox's processes are gone.
    let sandbox = kiln_runner::spawn(spec, streams)?;
    let pid = sandbox.id();
    let tail = Mutex::new(VecDeque::with_capacity(TAIL_LINES));
    let finished = AtomicBool::new(false);
    let outcome = std::thread::scope(|s| {
        s.spawn(|| relay(out_r, Stream::Stdout, vertex, &tail));
        s.spawn(|| relay(err_r, Stream::Stderr, vertex, &tail));
        // Polls for cancellation; parked between polls so that the end of the run (which
        // unparks it) does not wait out a poll interval: that wait would add to every RUN step.
        let watcher = s.spawn(|| {
            while !finished.load(Ordering::SeqCst) {
                if cancelled.load(Ordering::SeqCst) {
                    // SIGKILL to the helper: its sandbox dies with it. The helper is our
                    // child, so its pid stays its own until `wait` reaps it; `finished` is
                    // set right after, leaving only that instant for a stale kill.
                    if let Ok(pid) = i32::try_from(pid) {
                        // SAFETY: kill(2) has no memory-safety preconditions.
                        unsafe {
                            libc::kill(pid, libc::SIGKILL);
                        }
                    }
                    break;
                }
                std::thread::park_timeout(Duration::from_millis(50));
            }
        });
        let outcome = sandbox.wait();
        finished.store(true, Ordering::SeqCst);
        watcher.thread().unpark();
        outcome
    })?;
    let tail = tail.into_inner().unwrap_or_else(|p| p.into_inner());
    Ok(Finished {
        outcome,
        tail: tail.into(),
    })
}

/// Turns one output stream into `Log` events, line by line.
fn relay(reader: PipeReader, stream: Stream, vertex: &Vertex<'_>, tail: &Mutex<VecDeque<String>>) {
    let mut reader = BufReader::new(reader);
    let mut line = Vec::new();
    loop {
        line.clear();
        match reader.read_until(b'\n', &mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        while matches!(line.last(), Some(b'\n' | b'\r')) {
            line.pop();
        }
        let text = String::from_utf8_lossy(&line).into_owned();
        {
            let mut tail = tail.lock().unwrap_or_else(|p| p.into_inner());
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(text.clone());
        }
        vertex.log(stream, text);
    }
}
