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
}
