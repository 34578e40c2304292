//! An SSH agent socket of a step's own: `RUN --mount=type=ssh,mode=…,uid=…,gid=…` gets a new
//! socket with that mode and owner, and every connection to it is relayed to the build's agent.
//! The agent's own socket is never changed. The relay stops when the step's mounts are
//! released.

use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;

/// A relaying socket; dropping it stops the relay (connections already open end with their
/// peers).
pub struct AgentProxy {
    socket: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl AgentProxy {
    /// A socket in `dir` with `mode`, `uid` and `gid`, relaying to `agent`.
    pub fn start(
        agent: &Path,
        dir: tempfile::TempDir,
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> io::Result<AgentProxy> {
        let socket = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&socket)?;
        std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(mode))?;
        std::os::unix::fs::chown(&socket, Some(uid), Some(gid))?;
        let stop = Arc::new(AtomicBool::new(false));
        let agent = agent.to_path_buf();
        let stopping = stop.clone();
        let thread = std::thread::spawn(move || {
            for client in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                // An agent that went away: the client sees its connection closed.
                if let Ok(upstream) = UnixStream::connect(&agent) {
                    relay(client, upstream);
                }
            }
        });
        Ok(AgentProxy {
            socket,
            stop,
            thread: Some(thread),
            _dir: dir,
        })
    }

    /// The socket to mount.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for AgentProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wakes the accept loop, which then sees the flag.
        let _ = UnixStream::connect(&self.socket);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Copies both ways between `a` and `b` on threads of their own, each direction closed when
/// its source ends.
fn relay(a: UnixStream, b: UnixStream) {
    let pair = a.try_clone().and_then(|a2| Ok((a2, b.try_clone()?)));
    let Ok((a2, b2)) = pair else { return };
    let one_way = |mut from: UnixStream, mut to: UnixStream| {
        std::thread::spawn(move || {
            let _ = io::copy(&mut from, &mut to);
            let _ = to.shutdown(std::net::Shutdown::Write);
        });
    };
    one_way(a, b2);
    one_way(b, a2);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn connections_are_relayed_and_the_socket_has_the_asked_mode() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let agent = dir.path().join("agent");
        let listener = UnixListener::bind(&agent).unwrap_or_else(|e| panic!("{e}"));
        let echo = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap_or_else(|e| panic!("{e}"));
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).unwrap_or_else(|e| panic!("{e}"));
            conn.write_all(&buf).unwrap_or_else(|e| panic!("{e}"));
        });
        let own = tempfile::tempdir_in(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        let proxy =
            AgentProxy::start(&agent, own, 0o640, uid, gid).unwrap_or_else(|e| panic!("{e}"));
        let meta = std::fs::metadata(proxy.socket()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(meta.mode() & 0o777, 0o640);
        let mut conn = UnixStream::connect(proxy.socket()).unwrap_or_else(|e| panic!("{e}"));
        conn.write_all(b"hello").unwrap_or_else(|e| panic!("{e}"));
        let mut back = [0u8; 5];
        conn.read_exact(&mut back).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(&back, b"hello");
        echo.join().unwrap_or_else(|_| panic!("echo thread"));
        let socket = proxy.socket().to_path_buf();
        drop(proxy);
        assert!(!socket.exists());
    }
}
