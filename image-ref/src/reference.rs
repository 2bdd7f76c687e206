//! Image references, normalized as Docker and containerd do:
//! `busybox` is `docker.io/library/busybox:latest`, `k8s.gcr.io/pause:3.9`
//! keeps its registry, and a digest (`@sha256:…`) takes precedence over a tag.

use std::fmt;

/// The registry that names without a domain refer to.
pub const DEFAULT_REGISTRY: &str = "docker.io";
const DEFAULT_TAG: &str = "latest";

/// A fully qualified image reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Reference {
    /// Registry host (and port), e.g. `docker.io`, `127.0.0.1:5000`.
    pub registry: String,
    /// Repository path, e.g. `library/busybox`.
    pub repository: String,
    /// Tag; `latest` when neither tag nor digest was given.
    pub tag: Option<String>,
    /// Digest such as `sha256:…`.
    pub digest: Option<String>,
}

/// Why a reference could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    #[error("invalid image reference `{reference}`: {reason}")]
    Invalid {
        reference: String,
        reason: &'static str,
    },
}

impl Reference {
    /// Parses and normalizes an image reference as written in a pod spec.
    pub fn parse(s: &str) -> Result<Self, ReferenceError> {
        let invalid = |reason| ReferenceError::Invalid {
            reference: s.to_string(),
            reason,
        };
        if s.is_empty() {
            return Err(invalid("it is empty"));
        }
        if s.len() > 4096 {
            return Err(invalid("it is longer than 4096 characters"));
        }
        let (name_tag, digest) = match s.split_once('@') {
            Some((n, d)) => (n, Some(d)),
            None => (s, None),
        };
        if let Some(d) = digest {
            validate_digest(d).map_err(invalid)?;
        }
        // A tag is the part after the last ':' of the last path component,
        // so `host:5000/repo` has no tag.
        let last_slash = name_tag.rfind('/').map_or(0, |i| i + 1);
        let (name, tag) = match name_tag[last_slash..].rfind(':') {
            Some(i) => (
                &name_tag[..last_slash + i],
                Some(&name_tag[last_slash + i + 1..]),
            ),
            None => (name_tag, None),
        };
        if let Some(t) = tag {
            validate_tag(t).map_err(invalid)?;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), rest.to_string())
            }
            _ => (DEFAULT_REGISTRY.to_string(), name.to_string()),
        };
        let registry = match registry.as_str() {
            "index.docker.io" | "registry-1.docker.io" => DEFAULT_REGISTRY.to_string(),
            _ => registry,
        };
        let repository = if registry == DEFAULT_REGISTRY && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        validate_repository(&repository).map_err(invalid)?;
        let tag = match (tag, digest) {
            (Some(t), _) => Some(t.to_string()),
            (None, None) => Some(DEFAULT_TAG.to_string()),
            (None, Some(_)) => None,
        };
        Ok(Self {
            registry,
            repository,
            tag,
            digest: digest.map(str::to_string),
        })
    }

    /// What to ask the registry's manifest endpoint for: the digest if there
    /// is one, else the tag.
    pub fn manifest_reference(&self) -> &str {
        self.digest
            .as_deref()
            .or(self.tag.as_deref())
            .unwrap_or(DEFAULT_TAG)
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.registry, self.repository)?;
        if let Some(t) = &self.tag {
            write!(f, ":{t}")?;
        }
        if let Some(d) = &self.digest {
            write!(f, "@{d}")?;
        }
        Ok(())
    }
}

fn validate_tag(t: &str) -> Result<(), &'static str> {
    let ok = !t.is_empty()
        && t.len() <= 128
        && t.chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err("the tag must be 1-128 of [A-Za-z0-9_.-], not starting with . or -")
    }
}

fn validate_digest(d: &str) -> Result<(), &'static str> {
    let Some((algo, hex)) = d.split_once(':') else {
        return Err("the digest must be `algorithm:hex`");
    };
    let algo_ok = !algo.is_empty()
        && algo
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+._-".contains(c));
    let hex_ok = hex.len() >= 32
        && hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase());
    let len_ok = algo != "sha256" || hex.len() == 64;
    if algo_ok && hex_ok && len_ok {
        Ok(())
    } else {
        Err("the digest is malformed")
    }
}

fn validate_repository(r: &str) -> Result<(), &'static str> {
    if r.is_empty() || r.len() > 255 {
        return Err("the repository name must be 1-255 characters");
    }
    for component in r.split('/') {
        let bytes = component.as_bytes();
        let ok = !bytes.is_empty()
            && bytes[0].is_ascii_alphanumeric()
            && bytes[bytes.len() - 1].is_ascii_alphanumeric()
            && component.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-')
            });
        if !ok {
            return Err(
                "repository path components must be lowercase [a-z0-9] separated by . _ or -",
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(s: &str) -> String {
        Reference::parse(s).unwrap().to_string()
    }

    #[test]
    fn docker_hub_short_names() {
        assert_eq!(norm("busybox"), "docker.io/library/busybox:latest");
        assert_eq!(norm("busybox:1.28"), "docker.io/library/busybox:1.28");
        assert_eq!(norm("nginx:1.14.2"), "docker.io/library/nginx:1.14.2");
        assert_eq!(norm("bitnami/redis"), "docker.io/bitnami/redis:latest");
        assert_eq!(
            norm("index.docker.io/library/nginx"),
            "docker.io/library/nginx:latest"
        );
    }

    #[test]
    fn other_registries_keep_their_host_and_port() {
        assert_eq!(
            norm("registry.k8s.io/pause:3.9"),
            "registry.k8s.io/pause:3.9"
        );
        assert_eq!(
            norm("127.0.0.1:5000/rudder/echo"),
            "127.0.0.1:5000/rudder/echo:latest"
        );
        assert_eq!(norm("localhost/app:v1"), "localhost/app:v1");
        let r = Reference::parse("127.0.0.1:5000/library/busybox").unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "library/busybox");
    }

    #[test]
    fn digests() {
        let d = "sha256:".to_string() + &"a".repeat(64);
        let r = Reference::parse(&format!("busybox@{d}")).unwrap();
        assert_eq!(r.tag, None);
        assert_eq!(r.manifest_reference(), d);
        let r = Reference::parse(&format!("busybox:1.28@{d}")).unwrap();
        assert_eq!(r.tag.as_deref(), Some("1.28"));
        assert_eq!(r.manifest_reference(), d, "a digest wins over a tag");
    }

    #[test]
    fn rejects_malformed() {
        for bad in [
            "",
            "Busybox",
            "busybox:",
            "busybox:-x",
            "busybox@sha256:abc",
            "busybox@sha256:",
            "a//b",
            "-lead/x",
            "repo/",
        ] {
            assert!(Reference::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
