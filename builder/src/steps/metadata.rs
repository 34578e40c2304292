//! Instructions that only change the image config: ENV, ARG, LABEL, MAINTAINER, EXPOSE, VOLUME,
//! USER, CMD, ENTRYPOINT, STOPSIGNAL, HEALTHCHECK, SHELL, ONBUILD. Each adds a history entry
//! marked `empty_layer`, spelt as BuildKit spells it.

use super::{Expand, command_argv};
use crate::error::{Error, Result};
use crate::history::{go_health, go_list};
use crate::stage::StageCtx;
use crate::state::StageState;
use kiln_grammar::instructions::{Healthcheck, Instruction, InstructionKind};
use kiln_grammar::plan::ArgValue;
use kiln_oci::HealthConfig;
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Applies a config-only instruction to `state` and returns its history text.
pub fn apply(
    ctx: &StageCtx<'_, '_>,
    state: &mut StageState,
    instruction: &Instruction,
) -> Result<String> {
    let x = Expand::new(ctx, instruction);
    Ok(match &instruction.kind {
        InstructionKind::Env { vars } => {
            // Every value sees the environment from before the instruction.
            let env = state.expansion_env();
            let mut pairs = Vec::with_capacity(vars.len());
            for var in vars {
                pairs.push((x.word(&var.key, &env)?, x.word(&var.value, &env)?));
            }
            let shown: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
            for (k, v) in &pairs {
                state.set_env(k, v);
            }
            format!("ENV {}", shown.join(" "))
        }
        InstructionKind::Arg { args } => {
            let mut shown = Vec::with_capacity(args.len());
            for decl in args {
                let env = state.expansion_env();
                let default = match &decl.default {
                    Some(raw) => Some(x.word(raw, &env)?),
                    None => None,
                };
                let value = match ctx.build.plan.arg_value(decl) {
                    ArgValue::BuildArg(v) | ArgValue::Global(v) => Some(v),
                    ArgValue::Default(_) => default.clone(),
                    ArgValue::Unset => None,
                };
                shown.push(match &default {
                    Some(d) => format!("{}={d}", decl.name),
                    None => decl.name.clone(),
                });
                state.set_arg(&decl.name, value);
            }
            format!("ARG {}", shown.join(" "))
        }
        InstructionKind::Label { labels } => {
            let env = state.expansion_env();
            let mut shown = Vec::with_capacity(labels.len());
            let mut pairs = Vec::with_capacity(labels.len());
            for label in labels {
                let (k, v) = (x.word(&label.key, &env)?, x.word(&label.value, &env)?);
                shown.push(format!("{k}={v}"));
                pairs.push((k, v));
            }
            let map = state
                .container_mut()
                .labels
                .get_or_insert_with(BTreeMap::new);
            map.extend(pairs);
            format!("LABEL {}", shown.join(" "))
        }
        InstructionKind::Maintainer { name } => {
            state.config.author = Some(name.clone());
            format!("MAINTAINER {name}")
        }
        InstructionKind::Expose { ports } => {
            let env = state.expansion_env();
            let mut words = Vec::new();
            for port in ports {
                words.extend(x.words(port, &env)?);
            }
            let mut keys = Vec::new();
            for word in &words {
                keys.extend(port_keys(word).map_err(|message| x.invalid(message))?);
            }
            let map = state
                .container_mut()
                .exposed_ports
                .get_or_insert_with(BTreeMap::new);
            for key in keys {
                map.insert(key, Value::Object(Map::new()));
            }
            format!("EXPOSE {}", words.join(" "))
        }
        InstructionKind::Volume { paths } => {
            let env = state.expansion_env();
            let mut volumes = Vec::with_capacity(paths.len());
            for path in paths {
                let path = x.word(path, &env)?;
                if path.trim().is_empty() {
                    return Err(x.invalid("VOLUME specified can not be an empty string".into()));
                }
                volumes.push(path);
            }
            let map = state
                .container_mut()
                .volumes
                .get_or_insert_with(BTreeMap::new);
            for v in &volumes {
                map.insert(v.clone(), Value::Object(Map::new()));
            }
            format!("VOLUME {}", go_list(&volumes))
        }
        InstructionKind::User { user } => {
            let user = x.word(user, &state.expansion_env())?;
            state.container_mut().user = Some(user.clone());
            format!("USER {user}")
        }
        InstructionKind::Cmd { command } => {
            let argv = command_argv(state, command);
            state.container_mut().cmd = Some(argv.clone());
            state.cmd_set = true;
            format!("CMD {}", go_list(&argv))
        }
        InstructionKind::Entrypoint { command } => {
            let argv = command_argv(state, command);
            let cmd_set = state.cmd_set;
            let container = state.container_mut();
            container.entrypoint = Some(argv.clone());
            // A new ENTRYPOINT makes the base image's CMD meaningless; one set in this stage stays.
            if !cmd_set {
                container.cmd = None;
            }
            format!("ENTRYPOINT {}", go_list(&argv))
        }
        InstructionKind::StopSignal { signal } => {
            let signal = x.word(signal, &state.expansion_env())?;
            check_signal(&signal).map_err(|message| x.invalid(message))?;
            state.container_mut().stop_signal = Some(signal.clone());
            format!("STOPSIGNAL {signal}")
        }
        InstructionKind::Healthcheck { check } => {
            let config = health_config(check);
            let shown = format!("HEALTHCHECK {}", go_health(&config));
            state.container_mut().healthcheck = Some(config);
            shown
        }
        InstructionKind::Shell { shell } => {
            state.container_mut().shell = Some(shell.clone());
            format!("SHELL {}", go_list(shell))
        }
        InstructionKind::Onbuild { expression, .. } => {
            state
                .container_mut()
                .on_build
                .get_or_insert_with(Vec::new)
                .push(expression.clone());
            format!("ONBUILD {expression}")
        }
        other => {
            return Err(Error::Unsupported {
                location: ctx.build.location(instruction.span),
                message: format!("{} is not a config instruction", other.keyword()),
            });
        }
    })
}

/// The image config of a HEALTHCHECK. Unset durations are left out, as Docker omits zero ones.
fn health_config(check: &Healthcheck) -> HealthConfig {
    match check {
        Healthcheck::None => HealthConfig {
            test: Some(vec!["NONE".to_string()]),
            ..HealthConfig::default()
        },
        Healthcheck::Cmd(cmd) => {
            let test = match &cmd.command {
                kiln_grammar::instructions::Command::Exec(argv) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(argv.iter().cloned());
                    t
                }
                kiln_grammar::instructions::Command::Shell(text) => {
                    vec!["CMD-SHELL".to_string(), text.clone()]
                }
            };
            let nanos = |d: Option<std::time::Duration>| {
                d.and_then(|d| i64::try_from(d.as_nanos()).ok())
                    .filter(|n| *n != 0)
            };
            HealthConfig {
                test: Some(test),
                interval: nanos(cmd.interval),
                timeout: nanos(cmd.timeout),
                start_period: nanos(cmd.start_period),
                start_interval: nanos(cmd.start_interval),
                retries: cmd.retries.map(i64::from).filter(|r| *r != 0),
                ..HealthConfig::default()
            }
        }
    }
}

/// The `ExposedPorts` keys of one EXPOSE word, as Docker's `nat.ParsePortSpecs` reads it:
/// `80` → `80/tcp`, `53/udp`, ranges `8000-8002` → one key per port, and `ip:host:container`
/// keeps the container part.
fn port_keys(word: &str) -> std::result::Result<Vec<String>, String> {
    let (ports, proto) = match word.rsplit_once('/') {
        Some((p, proto)) => (p, proto.to_ascii_lowercase()),
        None => (word, "tcp".to_string()),
    };
    if !matches!(proto.as_str(), "tcp" | "udp" | "sctp") {
        return Err(format!("invalid proto: {proto}"));
    }
    let container = ports.rsplit(':').next().unwrap_or(ports);
    let parse = |p: &str| {
        p.parse::<u16>()
            .map_err(|_| format!("invalid containerPort: {container}"))
    };
    let (start, end) = match container.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(container)?;
            (p, p)
        }
    };
    if end < start {
        return Err(format!(
            "invalid range specified for containerPort: {container}"
        ));
    }
    Ok((start..=end).map(|p| format!("{p}/{proto}")).collect())
}

/// A STOPSIGNAL value: a signal number or name (`SIGTERM`, `TERM`, `SIGRTMIN+3`).
fn check_signal(signal: &str) -> std::result::Result<(), String> {
    const NAMES: &[&str] = &[
        "ABRT", "ALRM", "BUS", "CHLD", "CLD", "CONT", "FPE", "HUP", "ILL", "INT", "IO", "IOT",
        "KILL", "PIPE", "POLL", "PROF", "PWR", "QUIT", "SEGV", "STKFLT", "STOP", "SYS", "TERM",
        "TRAP", "TSTP", "TTIN", "TTOU", "URG", "USR1", "USR2", "VTALRM", "WINCH", "XCPU", "XFSZ",
        "RTMIN", "RTMAX",
    ];
    if signal.parse::<u32>().is_ok_and(|n| n > 0) {
        return Ok(());
    }
    let upper = signal.to_ascii_uppercase();
    let name = upper.strip_prefix("SIG").unwrap_or(&upper);
    let base = name
        .split_once(['+', '-'])
        .filter(|(b, n)| b.starts_with("RT") && n.parse::<u32>().is_ok())
        .map_or(name, |(b, _)| b);
    if NAMES.contains(&base) {
        Ok(())
    } else {
        Err(format!("Invalid signal: {signal}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_as_docker_reads_them() {
        assert_eq!(port_keys("80"), Ok(vec!["80/tcp".to_string()]));
        assert_eq!(port_keys("53/UDP"), Ok(vec!["53/udp".to_string()]));
        assert_eq!(
            port_keys("8000-8002/tcp"),
            Ok(vec![
                "8000/tcp".into(),
                "8001/tcp".into(),
                "8002/tcp".into()
            ])
        );
        assert_eq!(
            port_keys("127.0.0.1:8080:80"),
            Ok(vec!["80/tcp".to_string()])
        );
        assert!(port_keys("http").is_err());
        assert!(port_keys("80/xyz").is_err());
        assert!(port_keys("90-80").is_err());
    }

    #[test]
    fn signals() {
        for ok in ["SIGTERM", "term", "9", "SIGRTMIN+3", "KILL"] {
            assert_eq!(check_signal(ok), Ok(()), "{ok}");
        }
        for bad in ["SIGNOPE", "0", "", "-1"] {
            assert!(check_signal(bad).is_err(), "{bad}");
        }
    }
}
