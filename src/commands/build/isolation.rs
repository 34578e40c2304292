//! `--isolation auto|namespace|chroot|none` (`KILN_ISOLATION`): which confinement RUN steps get,
//! and, for `auto`, the strongest one this machine allows, found by probing once.

use crate::error::{CliError, CliResult};
use kiln_builder::events::Event;
use kiln_runner::Isolation;
use std::path::Path;

/// The isolation to build with and why it was chosen (for the log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Choice {
    pub isolation: Isolation,
    pub why: String,
}

impl Choice {
    /// What the build log says about a choice weaker than namespaces (nothing otherwise).
    pub fn warning(&self) -> Option<Event> {
        (!self.isolation.is_namespaced()).then(|| Event::Warning {
            message: format!("RUN isolation: {} ({})", self.isolation, self.why),
        })
    }
}

/// A choice being made. `auto` probes in forked children and waits for them, which can run
/// while the store is opened and the context read rather than before.
pub enum Pending {
    Made(Choice),
    Probing(std::thread::JoinHandle<CliResult<Choice>>),
}

impl Pending {
    /// Starts choosing: a value naming an isolation is resolved (or refused) at once, as the
    /// other flags are; `auto` is probed on a thread of its own.
    pub fn start(value: &str, force: bool) -> CliResult<Pending> {
        if matches!(value, "auto" | "default") {
            let owned = value.to_string();
            let probe = std::thread::Builder::new()
                .name("isolation-probe".into())
                .spawn(move || choose(&owned, force));
            if let Ok(probe) = probe {
                return Ok(Pending::Probing(probe));
            }
        }
        choose(value, force).map(Pending::Made)
    }

    /// The choice, once the probes are done.
    pub fn finish(self) -> CliResult<Choice> {
        match self {
            Pending::Made(choice) => Ok(choice),
            Pending::Probing(probe) => probe
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
        }
    }
}

/// Resolves the flag's value. `none` is refused outside a container unless `force` is given:
/// it runs every RUN step in the machine's own root filesystem and replaces that with the image.
pub fn choose(value: &str, force: bool) -> CliResult<Choice> {
    let choice = match value {
        // `default` is docker build's only `--isolation` on Linux.
        "auto" | "default" => auto()?,
        other => {
            let isolation = Isolation::parse(other).ok_or_else(|| CliError::Usage {
                message: format!("unknown --isolation {other:?}"),
                hint: Some("use auto, namespace, chroot or none".into()),
            })?;
            Choice {
                isolation,
                why: "as requested".into(),
            }
        }
    };
    if choice.isolation == Isolation::None && !force {
        let Some(evidence) = container_evidence() else {
            return Err(CliError::Usage {
                message: "--isolation none runs RUN steps in this machine's own root filesystem, \
                          which the build replaces with the image; kiln found no sign of running \
                          in a throwaway container"
                    .into(),
                hint: Some(
                    "run kiln inside a container (kiln checks /.dockerenv, /run/.containerenv, \
                     $container, /proc/1/cgroup), or pass --force if this one is disposable"
                        .into(),
                ),
            });
        };
        return Ok(Choice {
            why: format!("{}; in a container ({evidence})", choice.why),
            ..choice
        });
    }
    Ok(choice)
}

/// The strongest isolation that works here, with what ruled out the stronger ones.
fn auto() -> CliResult<Choice> {
    let mut refused = Vec::new();
    for isolation in Isolation::ALL {
        if isolation == Isolation::None {
            break;
        }
        match isolation.probe() {
            Ok(()) => {
                let why = if refused.is_empty() {
                    "auto".to_string()
                } else {
                    format!("auto; {}", refused.join("; "))
                };
                return Ok(Choice { isolation, why });
            }
            Err(reason) => refused.push(format!("{isolation} refused: {reason}")),
        }
    }
    Ok(Choice {
        isolation: Isolation::None,
        why: format!("auto; {}", refused.join("; ")),
    })
}

/// What shows that kiln runs in a container, if anything does.
pub fn container_evidence() -> Option<String> {
    for marker in ["/.dockerenv", "/run/.containerenv"] {
        if Path::new(marker).exists() {
            return Some(marker.to_string());
        }
    }
    if let Ok(value) = std::env::var("container")
        && !value.is_empty()
    {
        return Some(format!("container={value}"));
    }
    if std::env::var_os("KUBERNETES_SERVICE_HOST").is_some() {
        return Some("KUBERNETES_SERVICE_HOST is set".to_string());
    }
    let cgroup = std::fs::read_to_string("/proc/1/cgroup").unwrap_or_default();
    cgroup_names_container(&cgroup).map(|runtime| format!("/proc/1/cgroup names {runtime}"))
}

fn cgroup_names_container(text: &str) -> Option<&'static str> {
    [
        "docker",
        "kubepods",
        "containerd",
        "libpod",
        "lxc",
        "buildkit",
    ]
    .into_iter()
    .find(|name| text.lines().any(|l| l.contains(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_paths_of_runtimes_are_recognised() {
        assert_eq!(
            cgroup_names_container("0::/kubepods/besteffort/pod1/abc\n"),
            Some("kubepods")
        );
        assert_eq!(
            cgroup_names_container("12:pids:/docker/0123abcd\n"),
            Some("docker")
        );
        assert_eq!(cgroup_names_container("0::/init.scope\n"), None);
    }

    #[test]
    fn unknown_modes_are_usage_errors() {
        assert!(matches!(choose("jail", false), Err(CliError::Usage { .. })));
        let chosen = choose("chroot", false).expect("chroot");
        assert_eq!(chosen.isolation, Isolation::Chroot);
    }

    #[test]
    fn named_modes_are_chosen_at_once_and_auto_as_choose_would() {
        assert!(matches!(
            Pending::start("jail", false),
            Err(CliError::Usage { .. })
        ));
        let named = Pending::start("chroot", false).and_then(Pending::finish);
        assert_eq!(named.ok().map(|c| c.isolation), Some(Isolation::Chroot));
        let auto = Pending::start("auto", true).and_then(Pending::finish);
        assert_eq!(auto.ok(), choose("auto", true).ok());
    }
}
