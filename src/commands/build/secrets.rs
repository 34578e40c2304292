//! `--secret` and `--ssh`, read as buildx reads them. Only where each value comes from is
//! recorded here; the builder reads a secret when a step mounts it.

use crate::error::{CliError, CliResult};
use kiln_builder::SecretSource;
use std::collections::BTreeMap;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

/// `--secret id=ID[,src=FILE|,env=VAR][,type=file|env]`, each one; a later id replaces an
/// earlier one. Without `src`, `env` or `type`, the variable named like the id is used when
/// it is set, else the file named like the id (buildx's rule).
pub fn secrets(specs: &[String]) -> CliResult<BTreeMap<String, SecretSource>> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let (id, source) = secret(spec, &|name| std::env::var_os(name).is_some())?;
        if let SecretSource::File(path) = &source
            && !path.is_file()
        {
            return Err(CliError::Usage {
                message: format!("--secret {spec}: {} is not a readable file", path.display()),
                hint: Some("name the file with src=FILE, or a variable with env=VAR".into()),
            });
        }
        out.insert(id, source);
    }
    Ok(out)
}

/// One `--secret`; `env_set` says whether an environment variable is set.
fn secret(spec: &str, env_set: &dyn Fn(&str) -> bool) -> CliResult<(String, SecretSource)> {
    let usage = |message: String| CliError::Usage {
        message: format!("--secret {spec}: {message}"),
        hint: Some("write --secret id=ID,src=FILE or --secret id=ID,env=VAR".into()),
    };
    let (mut id, mut kind, mut src, mut env) = (None, None, None, None);
    for field in spec.split(',').filter(|f| !f.is_empty()) {
        let (key, value) = field
            .split_once('=')
            .ok_or_else(|| usage(format!("{field:?} is not a key=value pair")))?;
        match key.to_ascii_lowercase().as_str() {
            "id" => id = Some(value.to_string()),
            "type" => match value {
                "file" | "env" => kind = Some(value.to_string()),
                other => return Err(usage(format!("unsupported secret type {other:?}"))),
            },
            "src" | "source" => src = Some(value.to_string()),
            "env" => env = Some(value.to_string()),
            other => return Err(usage(format!("unexpected key {other:?}"))),
        }
    }
    let id = id
        .filter(|i| !i.is_empty())
        .ok_or_else(|| usage("the secret needs an id".into()))?;
    let kind = match (kind, &src, &env) {
        (Some(kind), _, _) => kind,
        (None, _, Some(_)) => "env".to_string(),
        (None, Some(_), None) => "file".to_string(),
        (None, None, None) if env_set(&id) => "env".to_string(),
        (None, None, None) => "file".to_string(),
    };
    let source = if kind == "env" {
        // `type=env,src=VAR` names the variable too, as in buildx.
        SecretSource::Env(env.or(src).unwrap_or_else(|| id.clone()))
    } else {
        if env.is_some() {
            return Err(usage(
                "env= names a variable, but type=file was given".into(),
            ));
        }
        SecretSource::File(PathBuf::from(src.unwrap_or_else(|| id.clone())))
    };
    Ok((id, source))
}

/// The agents of `--ssh`: sockets by id, and the agents kiln started for key files (killed
/// when this is dropped).
pub struct SshAgents {
    pub sockets: BTreeMap<String, PathBuf>,
    _started: Vec<super::ssh_agent::Agent>,
}

/// `--ssh default|ID[=SOCKET|=KEYFILE[,KEYFILE…]]`: agent sockets by id; `default` alone is
/// `$SSH_AUTH_SOCK`; key files are served by an agent started for the build.
pub fn ssh(specs: &[String]) -> CliResult<SshAgents> {
    let mut out = BTreeMap::new();
    let mut started = Vec::new();
    for spec in specs {
        let (id, paths) = match spec.split_once('=') {
            Some((id, paths)) => (id, paths),
            None => (spec.as_str(), ""),
        };
        if id.is_empty() {
            return Err(CliError::Usage {
                message: format!("--ssh {spec}: the id is empty"),
                hint: Some("write --ssh default or --ssh ID=SOCKET".into()),
            });
        }
        let socket = match paths
            .split(',')
            .filter(|p| !p.is_empty())
            .collect::<Vec<_>>()[..]
        {
            [] => std::env::var_os("SSH_AUTH_SOCK")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from)
                .ok_or_else(|| CliError::Usage {
                    message: format!("--ssh {spec}: SSH_AUTH_SOCK is not set"),
                    hint: Some("start an agent (eval $(ssh-agent)) or give --ssh ID=SOCKET".into()),
                })?,
            [one] if is_socket(Path::new(one)) => PathBuf::from(one),
            ref paths => {
                let keys: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
                if let Some(other) = keys.iter().find(|k| !k.is_file()) {
                    return Err(CliError::Usage {
                        message: format!(
                            "--ssh {spec}: {} is neither an agent socket nor a key file",
                            other.display()
                        ),
                        hint: Some(
                            "give one agent socket, or private key files separated by commas"
                                .into(),
                        ),
                    });
                }
                let agent = super::ssh_agent::Agent::start(spec, &keys)?;
                let socket = agent.socket().to_path_buf();
                started.push(agent);
                socket
            }
        };
        if !is_socket(&socket) {
            return Err(CliError::Usage {
                message: format!("--ssh {spec}: {} is not an agent socket", socket.display()),
                hint: Some("start an agent (eval $(ssh-agent)) or give --ssh ID=KEYFILE".into()),
            });
        }
        out.insert(id.to_string(), socket);
    }
    Ok(SshAgents {
        sockets: out,
        _started: started,
    })
}

fn is_socket(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(spec: &str, set: &[&str]) -> (String, SecretSource) {
        secret(spec, &|name| set.contains(&name)).expect("valid spec")
    }

    #[test]
    fn secret_specs_as_buildx_reads_them() {
        let file = |p: &str| SecretSource::File(PathBuf::from(p));
        let env = |v: &str| SecretSource::Env(v.to_string());
        assert_eq!(parse("id=a,src=/f", &[]), ("a".into(), file("/f")));
        assert_eq!(parse("id=a,source=/f", &["a"]), ("a".into(), file("/f")));
        assert_eq!(parse("id=a,env=V", &[]), ("a".into(), env("V")));
        assert_eq!(parse("id=a", &["a"]), ("a".into(), env("a")));
        assert_eq!(parse("id=a", &[]), ("a".into(), file("a")));
        assert_eq!(parse("id=a,type=env,src=V", &[]), ("a".into(), env("V")));
        assert_eq!(parse("type=file,id=a", &["a"]), ("a".into(), file("a")));
        let none = &|_: &str| false;
        assert!(secret("src=/f", none).is_err());
        assert!(secret("id=a,type=tcp", none).is_err());
        assert!(secret("id=a,bogus=1", none).is_err());
        assert!(secret("id=a,type=file,env=V", none).is_err());
        assert!(secret("id", none).is_err());
    }
}
