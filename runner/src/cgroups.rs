//! Resource limits through a cgroup made for one run and removed after it.
//!
//! Each limit goes to the cgroup v2 hierarchy when its controller is available there, else to the
//! v1 hierarchy that carries it (hybrid machines mount v2 at `/sys/fs/cgroup/unified` with few or
//! no controllers). The run's cgroups are created under the helper's own cgroup in each
//! hierarchy, so kiln started from a service stays inside that service's accounting.

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::spec::Limits;

/// The CFS period used to express a CPU share (docker's default).
const CPU_PERIOD_US: u64 = 100_000;

/// Static names for limits (errors carry `&'static str` so they can be matched on).
pub(crate) fn limit_name(name: &str) -> &'static str {
    match name {
        "memory" => "memory",
        "cpus" => "cpus",
        "pids" => "pids",
        _ => "resource",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// Where the hierarchy is mounted.
    point: PathBuf,
    /// The cgroup path the mount's root corresponds to (not `/` inside a cgroup namespace).
    root: String,
    /// v1 controllers of the hierarchy; empty for v2.
    controllers: Vec<String>,
    v2: bool,
}

/// The cgroup hierarchies visible to this process.
#[derive(Debug, Default)]
struct Hierarchies {
    mounts: Vec<Mount>,
    /// `/proc/self/cgroup`: hierarchy controllers ("" for v2) → our cgroup path in it.
    membership: Vec<(Vec<String>, String)>,
}

impl Hierarchies {
    fn discover() -> Result<Self> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo")
            .map_err(|e| Error::path("/proc/self/mountinfo", e))?;
        let cgroup = fs::read_to_string("/proc/self/cgroup")
            .map_err(|e| Error::path("/proc/self/cgroup", e))?;
        Ok(Self::parse(&mountinfo, &cgroup))
    }

    fn parse(mountinfo: &str, cgroup: &str) -> Self {
        let mut mounts = Vec::new();
        for line in mountinfo.lines() {
            let Some((left, right)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = left.split(' ').collect();
            let rfields: Vec<&str> = right.split(' ').collect();
            if fields.len() < 5 || rfields.len() < 3 {
                continue;
            }
            let (root, point) = (unescape(fields[3]), unescape(fields[4]));
            match rfields[0] {
                "cgroup2" => mounts.push(Mount {
                    point: point.into(),
                    root,
                    controllers: Vec::new(),
                    v2: true,
                }),
                "cgroup" => {
                    let controllers = rfields[2]
                        .split(',')
                        .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                        .map(str::to_string)
                        .collect();
                    mounts.push(Mount {
                        point: point.into(),
                        root,
                        controllers,
                        v2: false,
                    })
                }
                _ => {}
            }
        }
        let membership = cgroup
            .lines()
            .filter_map(|l| {
                let mut parts = l.splitn(3, ':');
                let _id = parts.next()?;
                let controllers = parts.next()?;
                let path = parts.next()?;
                Some((
                    controllers
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(str::to_string)
                        .collect(),
                    path.to_string(),
                ))
            })
            .collect();
        Hierarchies { mounts, membership }
    }

    /// Our cgroup directory in a hierarchy.
    fn own_dir(&self, mount: &Mount) -> Option<PathBuf> {
        let path = self.membership.iter().find_map(|(ctrls, path)| {
            let matches = if mount.v2 {
                ctrls.is_empty()
            } else {
                !ctrls.is_empty() && mount.controllers.iter().all(|c| ctrls.contains(c))
            };
            matches.then_some(path.as_str())
        })?;
        let rel = path
            .strip_prefix(mount.root.as_str())
            .unwrap_or(path)
            .trim_start_matches('/');
        Some(if rel.is_empty() {
            mount.point.clone()
        } else {
            mount.point.join(rel)
        })
    }

    /// Where the run's cgroup for a controller goes: v2 when the controller is available to
    /// our cgroup there, else the v1 hierarchy that carries it.
    fn locate(&self, controller: &str) -> Option<Location> {
        for m in self.mounts.iter().filter(|m| m.v2) {
            let Some(own) = self.own_dir(m) else { continue };
            let offered = fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
            if !offered.split_whitespace().any(|c| c == controller) {
                continue;
            }
            // In v2 a non-root cgroup with processes (ours holds the helper) cannot have
            // children with controllers. Our parent already gives the controller to its
            // children, so the run's cgroup becomes our sibling. The root is exempt from that
            // rule but must be told to give the controller to its children.
            return Some(if own == m.point {
                Location {
                    parent: own,
                    v2: true,
                    enable: true,
                }
            } else {
                Location {
                    parent: own
                        .parent()
                        .map_or_else(|| m.point.clone(), Path::to_path_buf),
                    v2: true,
                    enable: false,
                }
            });
        }
        self.mounts
            .iter()
            .filter(|m| !m.v2 && m.controllers.iter().any(|c| c == controller))
            .find_map(|m| {
                self.own_dir(m).map(|parent| Location {
                    parent,
                    v2: false,
                    enable: false,
                })
            })
    }
}

/// Where a run's cgroup is created in one hierarchy.
struct Location {
    parent: PathBuf,
    v2: bool,
    /// The parent's `cgroup.subtree_control` must enable the controller first.
    enable: bool,
}

/// mountinfo escapes spaces, tabs, newlines and backslashes as octal.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && let Some(v) = bytes
                .get(i + 1..i + 4)
                .and_then(|o| std::str::from_utf8(o).ok())
                .and_then(|o| u8::from_str_radix(o, 8).ok())
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// One directory the run created, in one hierarchy.
#[derive(Debug)]
struct Dir {
    path: PathBuf,
    v2: bool,
}

/// The cgroups of one run. Dropping it removes them.
#[derive(Debug)]
pub(crate) struct Cgroup {
    dirs: Vec<Dir>,
    memory_dir: Option<usize>,
}

impl Cgroup {
    /// Creates the cgroups the limits need and writes the limits. `Ok(None)` when there are no
    /// limits: a run without limits needs no cgroup of its own.
    pub(crate) fn create(limits: &Limits, name: &str) -> Result<Option<Cgroup>> {
        if limits.is_empty() {
            return Ok(None);
        }
        let hier = Hierarchies::discover()?;
        let mut cg = Cgroup {
            dirs: Vec::new(),
            memory_dir: None,
        };
        // (limit name, controller)
        let mut wanted: Vec<(&'static str, &'static str)> = Vec::new();
        if limits.memory.is_some() {
            wanted.push(("memory", "memory"));
        }
        if limits.cpus.is_some() {
            wanted.push(("cpus", "cpu"));
        }
        if limits.pids.is_some() {
            wanted.push(("pids", "pids"));
        }
        let mut by_dir: BTreeMap<PathBuf, usize> = BTreeMap::new();
        for (limit, controller) in wanted {
            let Some(Location { parent, v2, enable }) = hier.locate(controller) else {
                return Err(Error::Limit {
                    limit,
                    reason: format!(
                        "no cgroup hierarchy on this machine offers the {controller} controller"
                    ),
                });
            };
            let idx = match by_dir.get(&parent) {
                Some(i) => *i,
                None => {
                    let path = parent.join(name);
                    fs::create_dir(&path).map_err(|e| Error::Limit {
                        limit,
                        reason: format!("creating cgroup {}: {e}", path.display()),
                    })?;
                    cg.dirs.push(Dir { path, v2 });
                    by_dir.insert(parent.clone(), cg.dirs.len() - 1);
                    cg.dirs.len() - 1
                }
            };
            if enable {
                enable_controller(&parent, controller).map_err(|e| Error::Limit {
                    limit,
                    reason: format!(
                        "enabling the {controller} controller in {}: {e}",
                        parent.display()
                    ),
                })?;
            }
            let dir = &cg.dirs[idx].path;
            let result = match limit {
                "memory" => {
                    cg.memory_dir = Some(idx);
                    write_memory(dir, v2, limits.memory.unwrap_or(u64::MAX))
                }
                "cpus" => write_cpus(dir, v2, limits.cpus.unwrap_or(1.0)),
                _ => write_file(
                    &dir.join("pids.max"),
                    &limits.pids.unwrap_or(u64::MAX).to_string(),
                ),
            };
            result.map_err(|reason| Error::Limit { limit, reason })?;
        }
        Ok(Some(cg))
    }

    /// Moves a process (and so everything it will start) into the run's cgroups.
    pub(crate) fn add(&self, pid: Pid) -> Result<()> {
        for d in &self.dirs {
            let procs = d.path.join("cgroup.procs");
            fs::write(&procs, pid.to_string()).map_err(|e| Error::path(&procs, e))?;
        }
        Ok(())
    }

    /// Whether the kernel's OOM killer fired inside the run's memory cgroup.
    pub(crate) fn oom_killed(&self) -> bool {
        let Some(d) = self.memory_dir.and_then(|i| self.dirs.get(i)) else {
            return false;
        };
        let file = if d.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = fs::read_to_string(d.path.join(file)).unwrap_or_default();
        text.lines().any(|l| {
            let mut f = l.split_whitespace();
            f.next() == Some("oom_kill") && f.next().and_then(|n| n.parse::<u64>().ok()) > Some(0)
        })
    }

    /// Removes the cgroups. Processes of a finished PID namespace may take a moment to leave,
    /// so this retries, and kills stragglers as a last resort.
    fn remove(&mut self) {
        for d in self.dirs.drain(..).rev() {
            for attempt in 0..100 {
                match fs::remove_dir(&d.path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(_) => {
                        if attempt % 10 == 9 {
                            kill_members(&d.path);
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                }
            }
        }
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        self.remove();
    }
}

fn kill_members(dir: &Path) {
    let procs = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
    for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
        let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

fn enable_controller(parent: &Path, controller: &str) -> std::io::Result<()> {
    let control = parent.join("cgroup.subtree_control");
    let current = fs::read_to_string(&control)?;
    if current.split_whitespace().any(|c| c == controller) {
        return Ok(());
    }
    fs::write(control, format!("+{controller}"))
}

fn write_file(path: &Path, value: &str) -> std::result::Result<(), String> {
    fs::write(path, value).map_err(|e| format!("writing {value:?} to {}: {e}", path.display()))
}

fn write_memory(dir: &Path, v2: bool, bytes: u64) -> std::result::Result<(), String> {
    let value = bytes.to_string();
    // No swap beyond the limit: a build step that exceeds it should fail the same way on every
    // machine, whatever swap the host has.
    if v2 {
        write_file(&dir.join("memory.max"), &value)?;
        let swap = dir.join("memory.swap.max");
        if swap.exists() {
            write_file(&swap, "0")?;
        }
    } else {
        write_file(&dir.join("memory.limit_in_bytes"), &value)?;
        let memsw = dir.join("memory.memsw.limit_in_bytes");
        if memsw.exists() {
            write_file(&memsw, &value)?;
        }
    }
    Ok(())
}

fn write_cpus(dir: &Path, v2: bool, cpus: f64) -> std::result::Result<(), String> {
    // The kernel refuses quotas under 1 ms.
    let quota = ((cpus * CPU_PERIOD_US as f64) as u64).max(1000);
    if v2 {
        write_file(&dir.join("cpu.max"), &format!("{quota} {CPU_PERIOD_US}"))
    } else {
        write_file(&dir.join("cpu.cfs_period_us"), &CPU_PERIOD_US.to_string())?;
        write_file(&dir.join("cpu.cfs_quota_us"), &quota.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
39 31 0:36 /outer /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const CGROUP: &str = "\
9:name=systemd:/
8:pids:/outer/inner
4:memory:/svc/abc
1:cpu,cpuacct:/
0::/user.slice
";

    #[test]
    fn parses_hybrid_hierarchies() {
        let h = Hierarchies::parse(MOUNTINFO, CGROUP);
        assert_eq!(h.mounts.len(), 6);
        let mem = h
            .mounts
            .iter()
            .find(|m| m.controllers == ["memory"])
            .expect("memory mount");
        assert_eq!(
            h.own_dir(mem),
            Some(PathBuf::from("/sys/fs/cgroup/memory/svc/abc"))
        );
        // The mount's root is stripped from our path.
        let pids = h
            .mounts
            .iter()
            .find(|m| m.controllers == ["pids"])
            .expect("pids mount");
        assert_eq!(
            h.own_dir(pids),
            Some(PathBuf::from("/sys/fs/cgroup/pids/inner"))
        );
        let v2 = h.mounts.iter().find(|m| m.v2).expect("v2 mount");
        assert_eq!(
            h.own_dir(v2),
            Some(PathBuf::from("/sys/fs/cgroup/unified/user.slice"))
        );
        let systemd = h
            .mounts
            .iter()
            .find(|m| m.point.ends_with("systemd"))
            .expect("named hierarchy");
        assert!(systemd.controllers.is_empty());
    }

    #[test]
    fn unescapes_mountinfo_octal() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/trail\\04"), "/trail\\04");
    }

    #[test]
    fn no_limits_means_no_cgroup() {
        assert!(matches!(Cgroup::create(&Limits::default(), "x"), Ok(None)));
    }

    #[test]
    fn limit_names_are_static() {
        assert_eq!(limit_name("pids"), "pids");
        assert_eq!(limit_name("other"), "resource");
    }
}
