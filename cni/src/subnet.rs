//! The node's network as the network daemon publishes it to the plugin:
//! `/run/rudder/subnet.env`, in the shape of flannel's `subnet.env`.
//!
//! ```text
//! RUDDER_NETWORK=10.244.0.0/16
//! RUDDER_SUBNET=10.244.1.1/24
//! RUDDER_MTU=1450
//! RUDDER_IPMASQ=true
//! ```
//!
//! `RUDDER_SUBNET` is in gateway form: the node's pod subnet with the
//! bridge's (gateway's) address, its first address.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
};

use crate::net::Ipv4Net;

/// Default location, written by `rudder agent` and read by the plugin.
pub const DEFAULT_PATH: &str = "/run/rudder/subnet.env";

/// The node's pod network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubnetEnv {
    /// The whole cluster's pod network.
    pub network: Ipv4Net,
    /// This node's pod subnet, gateway form.
    pub subnet: Ipv4Net,
    /// MTU for pod interfaces (the overlay's, when there is one).
    pub mtu: u32,
    /// Whether the daemon masquerades traffic leaving the cluster network.
    pub ipmasq: bool,
}

/// Why the subnet file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SubnetError {
    #[error(
        "{} does not exist: the Rudder network daemon writes it once this node has a pod CIDR \
         (is `rudder agent` running on this node, and does its Node have spec.podCIDR?)",
        .0.display()
    )]
    Missing(PathBuf),
    #[error("cannot read {}: {source}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {}: {why}", .path.display())]
    Invalid { path: PathBuf, why: String },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl SubnetEnv {
    /// Builds the gateway form from a node's pod CIDR (`10.244.1.0/24`).
    pub fn for_pod_cidr(network: Ipv4Net, pod_cidr: Ipv4Net, mtu: u32, ipmasq: bool) -> Self {
        let gateway = pod_cidr.nth(1).unwrap_or(pod_cidr.addr);
        Self {
            network: network.trunc(),
            subnet: Ipv4Net {
                addr: gateway,
                prefix: pod_cidr.prefix,
            },
            mtu,
            ipmasq,
        }
    }

    /// The gateway (bridge) address.
    pub fn gateway(&self) -> std::net::Ipv4Addr {
        self.subnet.addr
    }

    pub fn render(&self) -> String {
        format!(
            "RUDDER_NETWORK={}\nRUDDER_SUBNET={}\nRUDDER_MTU={}\nRUDDER_IPMASQ={}\n",
            self.network, self.subnet, self.mtu, self.ipmasq
        )
    }

    pub fn parse(text: &str, path: &Path) -> Result<Self, SubnetError> {
        let invalid = |why: String| SubnetError::Invalid {
            path: path.to_path_buf(),
            why,
        };
        let (mut network, mut subnet, mut mtu, mut ipmasq) = (None, None, None, None);
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (k, v) = line
                .split_once('=')
                .ok_or_else(|| invalid(format!("line {}: expected KEY=VALUE", n + 1)))?;
            let bad = |e: &dyn std::fmt::Display| invalid(format!("{k}: {e}"));
            match k {
                "RUDDER_NETWORK" => network = Some(v.parse::<Ipv4Net>().map_err(|e| bad(&e))?),
                "RUDDER_SUBNET" => subnet = Some(v.parse::<Ipv4Net>().map_err(|e| bad(&e))?),
                "RUDDER_MTU" => mtu = Some(v.parse::<u32>().map_err(|e| bad(&e))?),
                "RUDDER_IPMASQ" => ipmasq = Some(v.parse::<bool>().map_err(|e| bad(&e))?),
                _ => {} // Newer daemons may add keys.
            }
        }
        let need = |k: &str| invalid(format!("{k} is missing"));
        let env = Self {
            network: network.ok_or_else(|| need("RUDDER_NETWORK"))?,
            subnet: subnet.ok_or_else(|| need("RUDDER_SUBNET"))?,
            mtu: mtu.ok_or_else(|| need("RUDDER_MTU"))?,
            ipmasq: ipmasq.unwrap_or(true),
        };
        if !env.network.contains_net(env.subnet) {
            return Err(invalid(format!(
                "RUDDER_SUBNET {} is not inside RUDDER_NETWORK {}",
                env.subnet, env.network
            )));
        }
        if env.subnet.prefix > 30 {
            return Err(invalid(format!(
                "RUDDER_SUBNET {} is too small to allocate from",
                env.subnet
            )));
        }
        if !(576..=65535).contains(&env.mtu) {
            return Err(invalid(format!("RUDDER_MTU {} is out of range", env.mtu)));
        }
        Ok(env)
    }

    pub fn load(path: &Path) -> Result<Self, SubnetError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(SubnetError::Missing(path.to_path_buf()))
            }
            Err(source) => Err(SubnetError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Writes the file atomically (temporary file, fsync, rename), creating
    /// its directory.
    pub fn write(&self, path: &Path) -> Result<(), SubnetError> {
        write_atomic(path, self.render().as_bytes()).map_err(|source| SubnetError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Replaces `path` with `data` so that readers see the old or the new
/// content, never a part.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(".tmp.{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let env = SubnetEnv::for_pod_cidr(
            "10.244.0.0/16".parse().unwrap(),
            "10.244.3.0/24".parse().unwrap(),
            1450,
            true,
        );
        assert_eq!(env.subnet.to_string(), "10.244.3.1/24");
        assert_eq!(
            env.render(),
            "RUDDER_NETWORK=10.244.0.0/16\nRUDDER_SUBNET=10.244.3.1/24\nRUDDER_MTU=1450\nRUDDER_IPMASQ=true\n"
        );
        assert_eq!(
            SubnetEnv::parse(&env.render(), Path::new("x")).unwrap(),
            env
        );
    }

    #[test]
    fn errors_name_the_file_and_the_key() {
        let p = Path::new("/run/rudder/subnet.env");
        for (text, needle) in [
            (
                "RUDDER_SUBNET=10.244.1.1/24\nRUDDER_MTU=1450\n",
                "RUDDER_NETWORK is missing",
            ),
            (
                "RUDDER_NETWORK=10.244.0.0/16\nRUDDER_SUBNET=10.9.1.1/24\nRUDDER_MTU=1450\n",
                "not inside",
            ),
            (
                "RUDDER_NETWORK=10.244.0.0/16\nRUDDER_SUBNET=x\nRUDDER_MTU=1450\n",
                "RUDDER_SUBNET",
            ),
            ("garbage\n", "line 1"),
        ] {
            let e = SubnetEnv::parse(text, p).unwrap_err().to_string();
            assert!(
                e.contains("/run/rudder/subnet.env") && e.contains(needle),
                "{e}"
            );
        }
        let e = SubnetEnv::load(Path::new("/nonexistent/subnet.env")).unwrap_err();
        assert!(matches!(e, SubnetError::Missing(_)), "{e}");
        assert!(e.to_string().contains("pod CIDR"), "{e}");
    }
}
