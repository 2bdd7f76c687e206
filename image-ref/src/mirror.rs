//! Registry mirrors: which servers to ask for an image, in which order.
//!
//! The rule mirrors containerd's `hosts.toml`: each registry (as it appears
//! in the normalized reference, e.g. `docker.io`) may list mirrors, tried in
//! order before the registry itself, and may forbid falling back to the
//! registry. So `busybox:1.28` (i.e. `docker.io/library/busybox:1.28`) is
//! served by `http://127.0.0.1:5000` in tests and by a Harbor proxy project in
//! production. See `configs/registries.md`.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::Reference;

/// `[registries."<host>"]` tables of the agent configuration.
pub type Registries = BTreeMap<String, RegistryConfig>;

/// How to reach one registry.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// Mirrors tried in order before the registry itself.
    #[serde(default)]
    pub mirrors: Vec<MirrorSpec>,
    /// Never contact the registry itself, only its mirrors (air-gapped nodes).
    #[serde(default)]
    pub mirrors_only: bool,
    /// The registry's own server, when it is not `https://<host>`
    /// (`docker.io` defaults to `https://registry-1.docker.io`).
    #[serde(default)]
    pub server: Option<String>,
    /// Speak plain HTTP to the registry itself (default: only for loopback
    /// hosts).
    #[serde(default)]
    pub plain_http: Option<bool>,
}

/// A mirror: a URL (`http://127.0.0.1:5000`), or a table that adds a
/// repository prefix, as Harbor proxy projects need
/// (`{ url = "https://harbor.corp", prefix = "dockerhub" }` serves
/// `library/busybox` as `dockerhub/library/busybox`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum MirrorSpec {
    Url(String),
    Table {
        url: String,
        #[serde(default)]
        prefix: Option<String>,
    },
}

/// One place to fetch an image from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Base URL without a trailing slash, e.g. `http://127.0.0.1:5000`; the
    /// distribution API lives under `<base>/v2/`.
    pub base_url: String,
    /// Repository path on that server.
    pub repository: String,
    /// Whether this is a mirror (so credentials for the registry itself are
    /// not sent to it unless configured for it).
    pub mirror: bool,
}

impl Endpoint {
    /// `<base>/v2/<repo>/manifests/<tag-or-digest>`.
    pub fn manifest_url(&self, reference: &Reference) -> String {
        format!(
            "{}/v2/{}/manifests/{}",
            self.base_url,
            self.repository,
            reference.manifest_reference()
        )
    }
}

/// The servers to try for `reference`, in order.
pub fn endpoints(registries: &Registries, reference: &Reference) -> Vec<Endpoint> {
    let config = registries
        .get(&reference.registry)
        .cloned()
        .unwrap_or_default();
    let mut out: Vec<Endpoint> = config
        .mirrors
        .iter()
        .map(|m| {
            let (url, prefix) = match m {
                MirrorSpec::Url(u) => (u.as_str(), None),
                MirrorSpec::Table { url, prefix } => (url.as_str(), prefix.as_deref()),
            };
            let repository = match prefix
                .map(|p| p.trim_matches('/'))
                .filter(|p| !p.is_empty())
            {
                Some(p) => format!("{p}/{}", reference.repository),
                None => reference.repository.clone(),
            };
            Endpoint {
                base_url: url.trim_end_matches('/').to_string(),
                repository,
                mirror: true,
            }
        })
        .collect();
    if !config.mirrors_only {
        let base_url = match &config.server {
            Some(s) => s.trim_end_matches('/').to_string(),
            None if reference.registry == "docker.io" => "https://registry-1.docker.io".to_string(),
            None => {
                let plain = config
                    .plain_http
                    .unwrap_or_else(|| is_loopback(&reference.registry));
                format!(
                    "{}://{}",
                    if plain { "http" } else { "https" },
                    reference.registry
                )
            }
        };
        out.push(Endpoint {
            base_url,
            repository: reference.repository.clone(),
            mirror: false,
        });
    }
    out
}

fn is_loopback(host_port: &str) -> bool {
    let host = host_port.rsplit_once(':').map_or(host_port, |(h, _)| h);
    host == "localhost" || host.starts_with("127.") || host == "[::1]"
}

#[cfg(test)]
mod tests {
    use super::*;

    fn registries(toml_text: &str) -> Registries {
        #[derive(Deserialize)]
        struct W {
            registries: Registries,
        }
        toml::from_str::<W>(toml_text).unwrap().registries
    }

    #[test]
    fn docker_hub_through_a_local_mirror_then_upstream() {
        let r = registries(
            r#"
            [registries."docker.io"]
            mirrors = ["http://127.0.0.1:5000/"]
        "#,
        );
        let e = endpoints(&r, &Reference::parse("busybox:1.28").unwrap());
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].base_url, "http://127.0.0.1:5000");
        assert_eq!(e[0].repository, "library/busybox");
        assert!(e[0].mirror);
        assert_eq!(
            e[0].manifest_url(&Reference::parse("busybox:1.28").unwrap()),
            "http://127.0.0.1:5000/v2/library/busybox/manifests/1.28"
        );
        assert_eq!(e[1].base_url, "https://registry-1.docker.io");
        assert!(!e[1].mirror);
    }

    #[test]
    fn mirrors_only_and_prefixes() {
        let r = registries(
            r#"
            [registries."docker.io"]
            mirrors = [{ url = "https://harbor.corp", prefix = "/dockerhub/" }, "http://127.0.0.1:5000"]
            mirrors_only = true
        "#,
        );
        let e = endpoints(&r, &Reference::parse("nginx").unwrap());
        assert_eq!(
            e.iter()
                .map(|e| (e.base_url.as_str(), e.repository.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("https://harbor.corp", "dockerhub/library/nginx"),
                ("http://127.0.0.1:5000", "library/nginx")
            ]
        );
    }

    #[test]
    fn unconfigured_registries_use_https_except_loopback() {
        let r = Registries::new();
        let e = endpoints(&r, &Reference::parse("registry.k8s.io/pause:3.9").unwrap());
        assert_eq!(
            e,
            vec![Endpoint {
                base_url: "https://registry.k8s.io".into(),
                repository: "pause".into(),
                mirror: false
            }]
        );
        let e = endpoints(&r, &Reference::parse("127.0.0.1:5000/rudder/echo").unwrap());
        assert_eq!(e[0].base_url, "http://127.0.0.1:5000");
        let r = registries(
            r#"
            [registries."registry.internal:443"]
            server = "https://registry.internal"
            plain_http = false
        "#,
        );
        let e = endpoints(&r, &Reference::parse("registry.internal:443/app").unwrap());
        assert_eq!(e[0].base_url, "https://registry.internal");
    }

    #[test]
    fn unknown_fields_are_rejected() {
        #[derive(Deserialize, Debug)]
        #[expect(dead_code, reason = "only parsed")]
        struct W {
            registries: Registries,
        }
        let err =
            toml::from_str::<W>("[registries.\"docker.io\"]\nmirror = [\"x\"]\n").unwrap_err();
        assert!(err.to_string().contains("unknown field `mirror`"), "{err}");
    }
}
