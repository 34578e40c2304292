//! Registry credentials in Docker's config file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), read and written the way `docker login` does: a base64
//! `user:password` under `auths`, or a credential helper (`credHelpers`, `credsStore`).

use super::RegistryError;
use super::client::Client;
use crate::error::{Error, Result};
use crate::reference::DEFAULT_REGISTRY;
use base64::Engine;
use docker_credential::{CredentialRetrievalError, DockerCredential};
use serde_json::{Map, Value};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// The key Docker files Docker Hub's credentials under.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

/// The docker config file in effect.
pub fn docker_config_path() -> Option<PathBuf> {
    std::env::var_os("DOCKER_CONFIG")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".docker")))
        .map(|dir| dir.join("config.json"))
}

/// The key of `registry` in the config's `auths` (Docker Hub's is a URL, for history's sake).
pub fn server_key(registry: &str) -> String {
    match registry {
        DEFAULT_REGISTRY | "index.docker.io" | "registry-1.docker.io" => DOCKER_HUB_KEY.into(),
        other => other.to_string(),
    }
}

/// Username and password (or identity token, with an empty username) for `registry`, if the
/// docker config has any.
pub fn lookup(registry: &str) -> Result<Option<(String, String)>> {
    if !docker_config_path().is_some_and(|p| p.exists()) {
        return Ok(None);
    }
    let key = server_key(registry);
    let mut keys = vec![key.clone()];
    if key != DOCKER_HUB_KEY {
        keys.push(format!("https://{key}"));
        keys.push(format!("http://{key}"));
    }
    for key in keys {
        match docker_credential::get_credential(&key) {
            Ok(DockerCredential::UsernamePassword(user, password)) => {
                return Ok(Some((user, password)));
            }
            Ok(DockerCredential::IdentityToken(token)) => {
                return Ok(Some(("<token>".to_string(), token)));
            }
            Err(
                CredentialRetrievalError::NoCredentialConfigured
                | CredentialRetrievalError::ConfigNotFound,
            ) => continue,
            Err(CredentialRetrievalError::HelperFailure { .. }) => continue,
            Err(e) => {
                return Err(RegistryError::Credentials(format!("{registry}: {e}")).into());
            }
        }
    }
    Ok(None)
}

/// `kiln login`: checks the credentials against the registry, then records them (with the
/// config's credential helper if it names one). Returns the config file written, if any.
pub fn login(
    client: &Client,
    registry: &str,
    username: &str,
    password: &str,
) -> Result<Option<PathBuf>> {
    client.check_login(registry, username, password)?;
    let key = server_key(registry);
    let (path, mut config) = read_config()?;
    if let Some(helper) = helper_for(&config, &key) {
        let input = serde_json::json!({"ServerURL": key, "Username": username, "Secret": password});
        run_helper(&helper, "store", &input.to_string())?;
        return Ok(None);
    }
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{username}:{password}"));
    let auths = config
        .entry("auths")
        .or_insert_with(|| Value::Object(Map::new()));
    if !auths.is_object() {
        *auths = Value::Object(Map::new());
    }
    if let Some(auths) = auths.as_object_mut() {
        auths.insert(key, serde_json::json!({ "auth": auth }));
    }
    write_config(&path, &config)?;
    Ok(Some(path))
}

/// `kiln logout`: forgets the credentials of `registry`. `Ok(false)` if there were none.
pub fn logout(registry: &str) -> Result<bool> {
    let key = server_key(registry);
    let (path, mut config) = read_config()?;
    let mut removed = false;
    if let Some(auths) = config.get_mut("auths").and_then(Value::as_object_mut) {
        removed = auths.remove(&key).is_some();
    }
    if removed {
        write_config(&path, &config)?;
    }
    if let Some(helper) = helper_for(&config, &key) {
        removed |= run_helper(&helper, "erase", &key).is_ok();
    }
    Ok(removed)
}

fn helper_for(config: &Map<String, Value>, key: &str) -> Option<String> {
    config
        .get("credHelpers")
        .and_then(|h| h.get(key))
        .or_else(|| config.get("credsStore"))
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}

fn run_helper(helper: &str, action: &str, input: &str) -> Result<()> {
    let program = format!("docker-credential-{helper}");
    let failed = |why: String| {
        Error::from(RegistryError::Credentials(format!(
            "{program} {action}: {why}"
        )))
    };
    let mut child = Command::new(&program)
        .arg(action)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| failed(e.to_string()))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(input.as_bytes())
            .map_err(|e| failed(e.to_string()))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| failed(e.to_string()))?;
    if out.status.success() {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(&out.stdout).trim().to_string()
            + String::from_utf8_lossy(&out.stderr).trim();
        Err(failed(text))
    }
}

fn read_config() -> Result<(PathBuf, Map<String, Value>)> {
    let path = docker_config_path().ok_or_else(|| {
        Error::from(RegistryError::Credentials(
            "neither DOCKER_CONFIG nor HOME is set".into(),
        ))
    })?;
    let config = match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice::<Map<String, Value>>(&bytes)
            .map_err(|e| Error::json(path.display().to_string(), e))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Map::new(),
        Err(e) => return Err(Error::io(&path, e)),
    };
    Ok((path, config))
}

/// Writes the config atomically, readable by its owner only (it holds secrets).
fn write_config(path: &PathBuf, config: &Map<String, Value>) -> Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().unwrap_or(std::path::Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    let tmp = dir.join(format!(".config.json.{}", std::process::id()));
    let mut text = serde_json::to_string_pretty(config)
        .map_err(|e| Error::json(path.display().to_string(), e))?;
    text.push('\n');
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut f| f.write_all(text.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| std::fs::rename(&tmp, path));
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(Error::io(path, e));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_hub_has_its_historical_key() {
        assert_eq!(server_key("docker.io"), DOCKER_HUB_KEY);
        assert_eq!(server_key("index.docker.io"), DOCKER_HUB_KEY);
        assert_eq!(server_key("localhost:5000"), "localhost:5000");
    }

    #[test]
    fn helper_per_registry_wins_over_the_store() {
        let config: Map<String, Value> =
            serde_json::from_str(r#"{"credsStore":"pass","credHelpers":{"gcr.io":"gcloud"}}"#)
                .unwrap();
        assert_eq!(helper_for(&config, "gcr.io").as_deref(), Some("gcloud"));
        assert_eq!(helper_for(&config, "x.lan").as_deref(), Some("pass"));
        assert_eq!(helper_for(&Map::new(), "x.lan"), None);
    }
}
