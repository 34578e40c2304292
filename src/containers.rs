//! Containers: what `kiln run` keeps in the store, so that `ps`, `rm` and `commit` find it later.
//!
//! ```text
//! containers/<id>/container.json   the record (written to a temp file, then renamed)
//! containers/<id>/rootfs/          the writable snapshot: an overlay upper/work/merged, or the
//!                                  copy backend's working tree; unmounted when the process exits
//! containers/lock                  flock around name reservation and removal
//! ```
//!
//! kiln has no daemon: a container runs in the foreground of the `kiln run` that started it.
//! A record says `running` while that process lives; a record whose process is gone (killed
//! before it could write the exit status) reads as exited.

use crate::error::{CliError, CliResult};
use serde::{Deserialize, Serialize};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

const RECORD: &str = "container.json";
const ROOTFS: &str = "rootfs";

/// The length of the short id docker prints and uses as the default hostname.
pub const SHORT_ID: usize = 12;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Recorded, not started yet.
    Created,
    Running,
    Exited,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex digits.
    pub id: String,
    pub name: String,
    /// The image as the user named it.
    pub image: String,
    /// The image's config digest.
    pub image_id: String,
    /// The snapshot chain the writable layer sits on (the image's top layer).
    pub parent_chain: Option<String>,
    /// The command as it ran: entrypoint and arguments.
    pub command: Vec<String>,
    pub created: String,
    pub state: State,
    pub exit_code: Option<i32>,
    pub finished: Option<String>,
    /// The `kiln run` process and its start time (in clock ticks since boot), which tell a live
    /// run from a pid reused after a crash.
    pub pid: Option<u32>,
    pub pid_start: Option<u64>,
    /// Paths the sandbox created only to mount something on; a commit leaves them out.
    #[serde(default)]
    pub mount_points: Vec<String>,
}

impl Record {
    pub fn short_id(&self) -> &str {
        &self.id[..SHORT_ID.min(self.id.len())]
    }

    /// Whether the run that owns this record is still going.
    pub fn is_running(&self) -> bool {
        match (self.state, self.pid, self.pid_start) {
            (State::Running | State::Created, Some(pid), Some(start)) => {
                process_start_time(pid) == Some(start)
            }
            _ => false,
        }
    }

    /// Marks the record as started by this process.
    pub fn mark_running(&mut self) {
        let pid = std::process::id();
        self.state = State::Running;
        self.pid = Some(pid);
        self.pid_start = process_start_time(pid);
    }

    pub fn mark_exited(&mut self, code: i32, mount_points: Vec<String>) {
        self.state = State::Exited;
        self.exit_code = Some(code);
        self.finished = Some(now());
        self.mount_points = mount_points;
    }
}

/// The containers of one store.
pub struct Containers {
    dir: PathBuf,
}

/// Holds the containers lock; released on drop.
struct Locked(#[allow(dead_code)] File);

impl Containers {
    pub fn open(store_root: &Path) -> CliResult<Containers> {
        let dir = store_root.join("containers");
        fs::create_dir_all(&dir).map_err(|e| CliError::io(&dir, e))?;
        Ok(Containers { dir })
    }

    fn lock(&self) -> CliResult<Locked> {
        let path = self.dir.join("lock");
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| CliError::io(&path, e))?;
        file.lock().map_err(|e| CliError::io(&path, e))?;
        Ok(Locked(file))
    }

    fn record_dir(&self, id: &str) -> PathBuf {
        self.dir.join(id)
    }

    /// Where the container's writable snapshot lives.
    pub fn rootfs_dir(&self, record: &Record) -> PathBuf {
        self.record_dir(&record.id).join(ROOTFS)
    }

    /// Records a new container, giving it a fresh id and the requested name or a generated one.
    pub fn create(&self, mut record: Record, name: Option<&str>) -> CliResult<Record> {
        if let Some(name) = name {
            check_name(name)?;
        }
        let _held = self.lock()?;
        let existing = self.list()?;
        let taken = |n: &str| existing.iter().any(|r| r.name == n);
        if let Some(name) = name
            && taken(name)
        {
            let owner = existing.iter().find(|r| r.name == name);
            return Err(CliError::Container {
                message: format!(
                    "the container name {name:?} is already in use by container {}",
                    owner.map_or("", |r| r.short_id())
                ),
                hint: Some(format!(
                    "remove that container (`kiln rm {name}`) or choose another --name"
                )),
            });
        }
        loop {
            let id = random_hex(32)?;
            if self.record_dir(&id).exists() {
                continue;
            }
            record.id = id;
            break;
        }
        record.name = match name {
            Some(n) => n.to_string(),
            None => {
                let mut generated = generated_name(&random_bytes(2)?);
                while taken(&generated) {
                    generated = format!("{generated}_{}", &random_hex(2)?);
                }
                generated
            }
        };
        let dir = self.record_dir(&record.id);
        fs::create_dir(&dir).map_err(|e| CliError::io(&dir, e))?;
        if let Err(e) = self.save(&record) {
            let _ = fs::remove_dir_all(&dir);
            return Err(e);
        }
        Ok(record)
    }

    /// Writes the record atomically: a reader sees the old one or the new one.
    pub fn save(&self, record: &Record) -> CliResult<()> {
        let dir = self.record_dir(&record.id);
        let path = dir.join(RECORD);
        let tmp = dir.join(format!(".{RECORD}.tmp"));
        let text = serde_json::to_vec_pretty(record).map_err(|e| CliError::Container {
            message: format!("cannot encode the record of container {}: {e}", record.id),
            hint: None,
        })?;
        fs::write(&tmp, text).map_err(|e| CliError::io(&tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| CliError::io(&path, e))
    }

    /// Every container with a readable record, newest first. A directory without one is a
    /// container being created, or debris; it is skipped.
    pub fn list(&self) -> CliResult<Vec<Record>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| CliError::io(&self.dir, e))? {
            let entry = entry.map_err(|e| CliError::io(&self.dir, e))?;
            let path = entry.path().join(RECORD);
            let Ok(text) = fs::read(&path) else {
                continue;
            };
            // `created` has whole seconds; when the directory was made orders runs within one.
            let made = entry.metadata().and_then(|m| m.created()).ok();
            match serde_json::from_slice::<Record>(&text) {
                Ok(r) => out.push((r, made)),
                Err(e) => eprintln!(
                    "warning: {}: unreadable container record: {e}",
                    path.display()
                ),
            }
        }
        out.sort_by(|(a, a_made), (b, b_made)| {
            (&b.created, b_made, &a.id).cmp(&(&a.created, a_made, &b.id))
        });
        Ok(out.into_iter().map(|(r, _)| r).collect())
    }

    /// A container by exact name, full id or unique id prefix, as docker resolves them.
    pub fn find(&self, wanted: &str) -> CliResult<Record> {
        let all = self.list()?;
        if let Some(r) = all.iter().find(|r| r.name == wanted || r.id == wanted) {
            return Ok(r.clone());
        }
        let by_prefix: Vec<&Record> = if wanted.is_empty() {
            Vec::new()
        } else {
            all.iter().filter(|r| r.id.starts_with(wanted)).collect()
        };
        match by_prefix.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err(CliError::Container {
                message: format!("no such container: {wanted}"),
                hint: Some("`kiln ps -a` lists the containers".into()),
            }),
            _ => Err(CliError::Container {
                message: format!("{wanted:?} matches several containers"),
                hint: Some("give more of the id, or the name".into()),
            }),
        }
    }

    /// Removes a container: its snapshot (unmounted first if a killed run left it mounted)
    /// and its record. Returns the bytes it held.
    pub fn remove(
        &self,
        snapshotter: &kiln_snapshotter::Snapshotter,
        record: &Record,
    ) -> CliResult<u64> {
        let _held = self.lock()?;
        let dir = self.record_dir(&record.id);
        let rootfs = dir.join(ROOTFS);
        let size = disk_usage(&rootfs);
        snapshotter.remove_kept(&rootfs)?;
        fs::remove_dir_all(&dir).or_else(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Ok(())
            } else {
                Err(CliError::io(&dir, e))
            }
        })?;
        Ok(size)
    }
}

/// docker's rule for container names.
fn check_name(name: &str) -> CliResult<()> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= 255 {
        Ok(())
    } else {
        Err(CliError::Usage {
            message: format!("invalid container name {name:?}"),
            hint: Some(
                "use letters, digits, '_', '.' and '-', starting with a letter or digit".into(),
            ),
        })
    }
}

fn random_bytes(n: usize) -> CliResult<Vec<u8>> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| CliError::io("/dev/urandom", e))?;
    Ok(buf)
}

fn random_hex(n: usize) -> CliResult<String> {
    Ok(random_bytes(n)?
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// A name like docker's (`adjective_noun`), from two random bytes.
fn generated_name(random: &[u8]) -> String {
    const ADJECTIVES: [&str; 16] = [
        "brave", "calm", "eager", "fervent", "gentle", "happy", "keen", "lucid", "merry", "nifty",
        "quiet", "serene", "sharp", "stoic", "tender", "vivid",
    ];
    const NOUNS: [&str; 16] = [
        "anvil", "bellows", "brick", "cinder", "crucible", "ember", "flame", "flint", "forge",
        "glaze", "hearth", "ingot", "kettle", "mortar", "slag", "tile",
    ];
    let a = random.first().copied().unwrap_or(0) as usize % ADJECTIVES.len();
    let n = random.get(1).copied().unwrap_or(0) as usize % NOUNS.len();
    format!("{}_{}", ADJECTIVES[a], NOUNS[n])
}

/// The current time as RFC 3339 (container times are real times, whatever
/// `SOURCE_DATE_EPOCH` says about images).
pub fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    kiln_oci::config::rfc3339(secs)
}

/// Field 22 of `/proc/<pid>/stat`: when the process started, in clock ticks since boot.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; it ends at the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Bytes of the files under `path` (not following symlinks), best effort.
pub fn disk_usage(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(md) = fs::symlink_metadata(path) else {
        return 0;
    };
    if !md.is_dir() {
        return md.blocks() * 512;
    }
    let Ok(entries) = fs::read_dir(path) else {
        return md.blocks() * 512;
    };
    md.blocks() * 512
        + entries
            .filter_map(Result::ok)
            .map(|e| disk_usage(&e.path()))
            .sum::<u64>()
}

/// A builder failure as the CLI reports it: store and snapshot errors keep their kind.
pub fn from_builder(error: kiln_builder::Error) -> CliError {
    match error {
        kiln_builder::Error::Store(e) => CliError::Store(e),
        kiln_builder::Error::Snapshot(e) => CliError::Snapshot(e),
        other => CliError::Container {
            message: other.to_string(),
            hint: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> Record {
        Record {
            id: String::new(),
            name: String::new(),
            image: "busybox".into(),
            image_id: "sha256:00".into(),
            parent_chain: None,
            command: vec!["true".into()],
            created: "2026-01-01T00:00:00Z".into(),
            state: State::Created,
            exit_code: None,
            finished: None,
            pid: None,
            pid_start: None,
            mount_points: Vec::new(),
        }
    }

    #[test]
    fn names_are_unique_and_ids_resolve_by_prefix() {
        let tmp = tempfile::tempdir().unwrap();
        let c = Containers::open(tmp.path()).unwrap();
        let a = c.create(record(), Some("web")).unwrap();
        assert_eq!(a.id.len(), 64);
        assert!(a.id.chars().all(|ch| ch.is_ascii_hexdigit()));
        assert!(c.create(record(), Some("web")).is_err());
        assert!(c.create(record(), Some("-bad")).is_err());
        let b = c.create(record(), None).unwrap();
        assert!(b.name.contains('_'), "{}", b.name);
        assert_eq!(c.find("web").unwrap().id, a.id);
        assert_eq!(c.find(&a.id[..10]).unwrap().id, a.id);
        assert_eq!(c.find(&b.name).unwrap().id, b.id);
        assert!(c.find("nope").is_err());
        assert!(c.find("").is_err());
    }

    #[test]
    fn a_dead_run_reads_as_not_running() {
        let mut r = record();
        r.mark_running();
        assert!(r.is_running());
        r.pid_start = r.pid_start.map(|s| s + 1);
        assert!(!r.is_running());
        r.mark_exited(3, Vec::new());
        assert!(!r.is_running());
        assert_eq!(r.exit_code, Some(3));
    }

    #[test]
    fn generated_names_look_like_docker() {
        assert_eq!(generated_name(&[0, 0]), "brave_anvil");
        assert_eq!(generated_name(&[]), "brave_anvil");
        assert_eq!(generated_name(&[17, 255]), "calm_tile");
    }
}
