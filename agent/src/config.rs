//! The agent's configuration file (TOML, `/etc/rudder/agent.toml` by default).
//! An example with every key is `configs/agent.toml`.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use rudder_image_ref::Registries;

/// Default location of the configuration file.
pub const DEFAULT_PATH: &str = "/etc/rudder/agent.toml";

/// The whole configuration. Unknown keys are errors, so a typo is caught at
/// start rather than silently ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Registry mirrors, keyed by registry host as in normalized references.
    #[serde(default)]
    pub registries: Registries,
    /// The pod network (backend, cluster CIDR, interface, files).
    #[serde(default)]
    pub network: rudder_network::config::NetworkConfig,
}

/// Why the configuration could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the agent configuration {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid agent configuration {}: {message}", .path.display())]
    Parse { path: PathBuf, message: String },
}

impl AgentConfig {
    /// Parses configuration text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: origin.to_path_buf(),
            message: e.to_string(),
        })
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse(&text, path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_example_parses() {
        let path = Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../configs/agent.toml"
        ));
        let cfg = AgentConfig::load(path).unwrap();
        assert!(cfg.registries.contains_key("docker.io"));
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let err = AgentConfig::parse("[registry]\n", Path::new("/etc/x.toml")).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("/etc/x.toml") && msg.contains("registry"),
            "{msg}"
        );
    }
}
