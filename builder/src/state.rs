//! The state of one stage while it builds: the image config so far (environment, user, working
//! directory, shell, history…), its layers, the snapshot chain they make, the cache key of the
//! last step and the build args in scope.

use crate::cache::CacheRecord;
use kiln_oci::{ContainerConfig, History, ImageConfig, Layer};
use kiln_snapshotter::ChainId;

/// What every history entry written by a Dockerfile step carries, as BuildKit writes it.
pub const HISTORY_COMMENT: &str = "buildkit.dockerfile.v0";

/// The shell of shell-form commands when neither the image nor SHELL names one.
pub fn default_shell() -> Vec<String> {
    vec!["/bin/sh".to_string(), "-c".to_string()]
}

#[derive(Debug, Clone)]
pub struct StageState {
    /// The image config so far; `config.config` is always `Some`.
    pub config: ImageConfig,
    /// Every layer of the image so far, bottom first.
    pub layers: Vec<Layer>,
    /// The snapshot chain of `layers` (`None` for an empty filesystem).
    pub chain: Option<ChainId>,
    /// The cache key of the last step (the base's identity before any step).
    pub cache_key: String,
    /// Build args in scope, in declaration order; `None` for one declared without a value.
    pub args: Vec<(String, Option<String>)>,
    /// Whether this stage has set CMD (an ENTRYPOINT then keeps it).
    pub cmd_set: bool,
    /// The cache key and record of every step so far, base stages' included: what
    /// `--cache-to` exports.
    pub cache_records: Vec<(String, CacheRecord)>,
}

impl StageState {
    /// A stage starting from `config` (the base image's or an empty one).
    pub fn new(mut config: ImageConfig, layers: Vec<Layer>, chain: Option<ChainId>) -> Self {
        // Only the fields Docker's image spec defines travel to the new image (BuildKit drops
        // `container_config`, `docker_version` and the like).
        config.extra.clear();
        config.created = None;
        let mut container = config.config.take().unwrap_or_default();
        container.extra.clear();
        // The base image's triggers are consumed by the stage built on it.
        container.on_build = None;
        config.config = Some(container);
        let mut state = StageState {
            config,
            layers,
            chain,
            cache_key: String::new(),
            args: Vec::new(),
            cmd_set: false,
            cache_records: Vec::new(),
        };
        if state.env_value("PATH").is_none() {
            state.set_env("PATH", kiln_runner::DEFAULT_PATH);
        }
        state
    }

    pub fn container(&self) -> &ContainerConfig {
        // `new` always sets it; a state whose config was emptied reads as an empty one.
        static EMPTY: std::sync::OnceLock<ContainerConfig> = std::sync::OnceLock::new();
        self.config
            .config
            .as_ref()
            .unwrap_or_else(|| EMPTY.get_or_init(ContainerConfig::default))
    }

    pub fn container_mut(&mut self) -> &mut ContainerConfig {
        self.config
            .config
            .get_or_insert_with(ContainerConfig::default)
    }

    /// The image's environment as pairs, in order.
    pub fn env(&self) -> Vec<(String, String)> {
        self.container()
            .env
            .iter()
            .flatten()
            .map(|e| match e.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (e.clone(), String::new()),
            })
            .collect()
    }

    pub fn env_value(&self, key: &str) -> Option<String> {
        self.env()
            .into_iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// Sets `key` in the image environment: replaced in place when present, appended otherwise
    /// (the order Docker keeps).
    pub fn set_env(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        let env = self.container_mut().env.get_or_insert_with(Vec::new);
        match env
            .iter_mut()
            .find(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key)
        {
            Some(existing) => *existing = entry,
            None => env.push(entry),
        }
    }

    /// Declares (or redeclares) a build arg.
    pub fn set_arg(&mut self, name: &str, value: Option<String>) {
        self.args.retain(|(n, _)| n != name);
        self.args.push((name.to_string(), value));
    }

    /// Build args that have a value, each as RUN sees it: an ENV of the same name wins.
    pub fn build_args(&self) -> Vec<(String, String)> {
        let env = self.env();
        self.args
            .iter()
            .filter_map(|(name, value)| {
                let from_env = env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v);
                match (from_env, value) {
                    (Some(v), _) => Some((name.clone(), v.clone())),
                    (None, Some(v)) => Some((name.clone(), v.clone())),
                    (None, None) => None,
                }
            })
            .collect()
    }

    /// What words of an instruction expand against: the args with values, then the
    /// environment (later entries win, so ENV overrides an ARG of the same name).
    pub fn expansion_env(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = self
            .args
            .iter()
            .filter_map(|(n, v)| v.clone().map(|v| (n.clone(), v)))
            .collect();
        vars.extend(self.env());
        vars
    }

    /// The environment of a RUN: the image's, then the args it does not define, then the
    /// proxy settings nothing else defines.
    pub fn run_env(&self, proxies: &std::collections::BTreeMap<String, String>) -> Vec<String> {
        let env = self.env();
        let mut out: Vec<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let mut defined: std::collections::BTreeSet<String> =
            env.iter().map(|(k, _)| k.clone()).collect();
        for (name, value) in self.build_args() {
            if defined.insert(name.clone()) {
                out.push(format!("{name}={value}"));
            }
        }
        for (name, value) in proxies {
            if defined.insert(name.clone()) {
                out.push(format!("{name}={value}"));
            }
        }
        out
    }

    /// What the cache key of a step that runs something sees: args and environment, named
    /// apart so that an arg and an env variable of the same name and value stay distinct.
    pub fn key_variables(&self) -> Vec<(String, String)> {
        let mut vars: Vec<(String, String)> = self
            .build_args()
            .into_iter()
            .map(|(k, v)| (format!("arg:{k}"), v))
            .collect();
        vars.extend(self.env().into_iter().map(|(k, v)| (format!("env:{k}"), v)));
        vars
    }

    pub fn shell(&self) -> Vec<String> {
        self.container()
            .shell
            .clone()
            .filter(|s| !s.is_empty())
            .unwrap_or_else(default_shell)
    }

    /// The working directory, `/` when unset.
    pub fn workdir(&self) -> String {
        self.container()
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".to_string())
    }

    pub fn user(&self) -> String {
        self.container().user.clone().unwrap_or_default()
    }

    /// Appends a history entry the way BuildKit records a Dockerfile step.
    pub fn add_history(&mut self, created_by: String, empty_layer: bool, created: &str) {
        self.config.history.push(History {
            created: Some(created.to_string()),
            created_by: Some(created_by),
            comment: Some(HISTORY_COMMENT.to_string()),
            empty_layer: empty_layer.then_some(true),
            ..History::default()
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_stage_has_a_path_and_no_inherited_triggers() {
        let mut config = ImageConfig::for_host();
        config.config = Some(ContainerConfig {
            on_build: Some(vec!["RUN x".into()]),
            ..ContainerConfig::default()
        });
        config
            .extra
            .insert("container_config".into(), serde_json::json!({}));
        let state = StageState::new(config, Vec::new(), None);
        assert_eq!(
            state.container().env,
            Some(vec![format!("PATH={}", kiln_runner::DEFAULT_PATH)])
        );
        assert_eq!(state.container().on_build, None);
        assert!(state.config.extra.is_empty());
    }

    #[test]
    fn env_wins_over_args_and_unset_args_are_not_exported() {
        let mut state = StageState::new(ImageConfig::for_host(), Vec::new(), None);
        state.set_arg("A", Some("arg".into()));
        state.set_arg("B", Some("b".into()));
        state.set_arg("U", None);
        state.set_env("A", "env");
        state.set_env("PATH", "/x");
        assert_eq!(
            state.build_args(),
            vec![("A".into(), "env".into()), ("B".into(), "b".into())]
        );
        let proxies = [("http_proxy".to_string(), "p".to_string())].into();
        assert_eq!(
            state.run_env(&proxies),
            vec!["PATH=/x", "A=env", "B=b", "http_proxy=p"]
        );
        let expansion = state.expansion_env();
        use kiln_grammar::expand::Lookup;
        assert_eq!(expansion.lookup("A"), Some("env"));
        assert_eq!(expansion.lookup("U"), None);
    }
}
