//! `--ssh ID=KEYFILE[,KEYFILE…]`: an `ssh-agent` of the build's own holding those keys, as
//! buildx serves key files. Its socket is in a private temp directory; it is stopped
//! (`ssh-agent -k`) when the build ends and its handle is dropped, whatever the outcome.
//!
//! It runs in ssh-agent's command mode, watching a `sh` that waits on a pipe from kiln: were
//! kiln killed outright, the pipe closes, the shell exits, and the agent follows it (ssh-agent
//! checks its command every 10 seconds), so no agent holding the keys outlives the build.

use crate::error::{CliError, CliResult};
use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running agent, killed on drop.
pub struct Agent {
    /// The shell the agent watches.
    child: Child,
    /// The agent's process id, as it told the shell.
    pid: Option<String>,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl Agent {
    /// Starts an agent and adds `keys` to it; `spec` names the `--ssh` value in errors.
    pub fn start(spec: &str, keys: &[PathBuf]) -> CliResult<Agent> {
        let unsupported = |message: String, hint: &str| CliError::Unsupported {
            message: format!("--ssh {spec}: {message}"),
            hint: Some(hint.to_string()),
        };
        let dir = tempfile::Builder::new()
            .prefix("kiln-ssh-")
            .tempdir()
            .map_err(|e| CliError::io(std::env::temp_dir(), e))?;
        let socket = dir.path().join("agent.sock");
        let child = Command::new("ssh-agent")
            .arg("-a")
            .arg(&socket)
            .args(["--", "sh", "-c", "echo \"$SSH_AGENT_PID\"; read _"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                unsupported(
                    format!("cannot start ssh-agent: {e}"),
                    "install openssh-client, or pass a running agent's socket with --ssh ID=SOCKET",
                )
            })?;
        let mut agent = Agent {
            child,
            pid: None,
            socket,
            _dir: dir,
        };
        if let Some(out) = agent.child.stdout.take() {
            let mut line = String::new();
            let _ = std::io::BufReader::new(out).read_line(&mut line);
            agent.pid = Some(line.trim().to_string()).filter(|p| !p.is_empty());
        }
        agent
            .wait_for_socket()
            .map_err(|m| unsupported(m, "pass a running agent's socket with --ssh ID=SOCKET"))?;
        let out = Command::new("ssh-add")
            .arg("-q")
            .args(keys)
            .env("SSH_AUTH_SOCK", &agent.socket)
            .env("SSH_ASKPASS_REQUIRE", "never")
            .env_remove("DISPLAY")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| {
                unsupported(
                    format!("cannot run ssh-add: {e}"),
                    "install openssh-client, or pass a running agent's socket with --ssh ID=SOCKET",
                )
            })?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let why = stderr.lines().last().unwrap_or("").trim().to_string();
            return Err(CliError::Usage {
                message: format!("--ssh {spec}: ssh-add could not load the key: {why}"),
                hint: Some(
                    "a key with a passphrase must be loaded into a running agent (ssh-add KEY), \
                     whose socket --ssh ID=$SSH_AUTH_SOCK passes"
                        .into(),
                ),
            });
        }
        Ok(agent)
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    fn wait_for_socket(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.socket.exists() {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("ssh-agent exited at start ({status})"));
            }
            if Instant::now() > deadline {
                return Err("ssh-agent did not create its socket within 10s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(())
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(pid) = &self.pid {
            let _ = Command::new("ssh-agent")
                .arg("-k")
                .env("SSH_AGENT_PID", pid)
                .env("SSH_AUTH_SOCK", &self.socket)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn have(tool: &str) -> bool {
        Command::new(tool)
            .arg("-h")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok()
    }

    #[test]
    fn key_files_are_served_until_the_agent_is_dropped() {
        if !(have("ssh-agent") && have("ssh-keygen")) {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "openssh-client is needed under CI=true"
            );
            eprintln!("skipping: openssh-client is not installed");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id_test");
        let made = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-C", "kiln-test-key", "-f"])
            .arg(&key)
            .status()
            .unwrap();
        assert!(made.success());
        let agent = Agent::start("default=id_test", std::slice::from_ref(&key)).unwrap();
        let listed = Command::new("ssh-add")
            .arg("-l")
            .env("SSH_AUTH_SOCK", agent.socket())
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&listed.stdout).contains("kiln-test-key"),
            "{listed:?}"
        );
        let socket = agent.socket().to_path_buf();
        let pid = agent.pid.clone().unwrap();
        drop(agent);
        assert!(!socket.exists());
        // The agent itself is gone (it may take a moment to exit).
        let proc = PathBuf::from(format!("/proc/{pid}"));
        let deadline = Instant::now() + Duration::from_secs(5);
        while proc.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let zombie = std::fs::read_to_string(proc.join("stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"));
        assert!(!proc.exists() || zombie, "ssh-agent {pid} still runs");

        std::fs::write(dir.path().join("not-a-key"), "nope\n").unwrap();
        let err = Agent::start("x=not-a-key", &[dir.path().join("not-a-key")])
            .err()
            .unwrap();
        assert!(
            err.render().contains("ssh-add could not load the key"),
            "{}",
            err.render()
        );
    }
}
