//! Taking a node over from kube-proxy and flannel: what `kube-proxy
//! --cleanup` removes, and what flannel leaves behind, so that the agent's
//! dataplane is the only one translating Services and routing pods.
//!
//! - kube-proxy's iptables chains (`KUBE-*`) and the rules jumping to them,
//!   in every iptables flavour the node has (legacy and nft: a node may
//!   have rules in both), by `iptables-save`, a pure filter
//!   ([`strip_chains`]) and `iptables-restore` of the filtered tables (each
//!   table replaced atomically, as the wrappers do); rules of others
//!   (docker, firewalld, CNI portmap) stay;
//! - its nftables tables (`ip kube-proxy`, `ip6 kube-proxy`);
//! - its IPVS mode's dummy device `kube-ipvs0` and, where `ipvsadm` is
//!   installed, the virtual servers (`ipvsadm --clear`);
//! - flannel's chains (`FLANNEL-*`), devices (`flannel.1`, `flannel-v6.1`,
//!   `flannel-wg`, `flannel-wg-v6`), subnet file and CNI configuration. The
//!   pod bridge `cni0` is kept: the agent's plugin adopts it (same subnet)
//!   and pods on it keep their network until they are recreated.
//!

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use rudder_netlink::Netlink;

use rudder_host::iptables::{self, IptablesError, run, strip_chains};

/// Chains kube-proxy and flannel own, by prefix.
pub const KUBE_PROXY_CHAINS: &str = "KUBE-";
pub const FLANNEL_CHAINS: &str = "FLANNEL-";

/// Devices they leave.
const KUBE_PROXY_LINKS: &[&str] = &["kube-ipvs0"];
const FLANNEL_LINKS: &[&str] = &["flannel.1", "flannel-v6.1", "flannel-wg", "flannel-wg-v6"];

#[derive(Debug, thiserror::Error)]
pub enum TakeoverError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Iptables(#[from] IptablesError),
    #[error(transparent)]
    Nft(#[from] rudder_host::nft::NftError),
    #[error("{what}: {source}")]
    Netlink {
        what: String,
        #[source]
        source: rudder_netlink::NetlinkError,
    },
}

/// What to take over, and where flannel kept its files.
#[derive(Debug, Clone)]
pub struct Takeover {
    pub kube_proxy: bool,
    pub flannel: bool,
    pub cni_conf_dir: PathBuf,
    pub flannel_subnet_file: PathBuf,
}

/// Removes the chains with `prefixes` from every iptables flavour (IPv4
/// and IPv6); returns what it changed, one line each.
fn strip_iptables(prefixes: &[&str]) -> Result<Vec<String>, TakeoverError> {
    let mut done = Vec::new();
    for flavour in iptables::flavours() {
        for family in ["iptables", "ip6tables"] {
            let bin = flavour.replacen("iptables", family, 1);
            let save = iptables::save(&bin)?;
            if let Some(filtered) = strip_chains(&save, prefixes) {
                iptables::restore(&bin, &filtered, false)?;
                done.push(format!(
                    "removed the {} chains of {bin}",
                    prefixes.join("/")
                ));
            }
        }
    }
    Ok(done)
}

/// Deletes the nftables tables `family name` that exist.
fn delete_nft_tables(tables: &[(&str, &str)]) -> Result<Vec<String>, TakeoverError> {
    let Ok(list) = rudder_host::nft::tables() else {
        // No nft binary (or no nf_tables): nothing of kube-proxy's there.
        return Ok(Vec::new());
    };
    let mut done = Vec::new();
    for (family, name) in tables {
        if list.iter().any(|(f, n)| f == family && n == name) {
            rudder_host::nft::delete_table(family, name)?;
            done.push(format!("deleted the nftables table {family} {name}"));
        }
    }
    Ok(done)
}

async fn delete_links(names: &[&str]) -> Result<Vec<String>, TakeoverError> {
    let nl = Netlink::new().map_err(|source| TakeoverError::Netlink {
        what: "open netlink".into(),
        source,
    })?;
    let mut done = Vec::new();
    for name in names {
        let found = nl
            .link(name)
            .await
            .map_err(|source| TakeoverError::Netlink {
                what: format!("look up {name}"),
                source,
            })?;
        if found.is_some() {
            nl.delete_link_named(name)
                .await
                .map_err(|source| TakeoverError::Netlink {
                    what: format!("delete {name}"),
                    source,
                })?;
            done.push(format!("deleted the device {name}"));
        }
    }
    Ok(done)
}

fn remove_files(files: &[&Path]) -> Result<Vec<String>, TakeoverError> {
    let mut done = Vec::new();
    for f in files {
        match std::fs::remove_file(f) {
            Ok(()) => done.push(format!("removed {}", f.display())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(TakeoverError::Io {
                    what: format!("remove {}", f.display()),
                    source,
                });
            }
        }
    }
    Ok(done)
}

/// Removes what kube-proxy and flannel (as asked) left on this node; one
/// line per thing removed. Idempotent: a second run finds nothing.
pub async fn take_over(t: &Takeover) -> Result<Vec<String>, TakeoverError> {
    let mut prefixes = Vec::new();
    let mut links: Vec<&str> = Vec::new();
    let mut done = Vec::new();
    if t.kube_proxy {
        prefixes.push(KUBE_PROXY_CHAINS);
        links.extend(KUBE_PROXY_LINKS);
        done.extend(delete_nft_tables(&[
            ("ip", "kube-proxy"),
            ("ip6", "kube-proxy"),
        ])?);
        if run(Command::new("ipvsadm").arg("--version"), None).is_ok() {
            run(Command::new("ipvsadm").arg("--clear"), None)?;
            done.push("cleared the IPVS virtual servers".into());
        }
    }
    if t.flannel {
        prefixes.push(FLANNEL_CHAINS);
        links.extend(FLANNEL_LINKS);
        done.extend(remove_files(&[
            &t.flannel_subnet_file,
            &t.cni_conf_dir.join("10-flannel.conflist"),
            &t.cni_conf_dir.join("10-flannel.conf"),
        ])?);
    }
    if !prefixes.is_empty() {
        done.extend(strip_iptables(&prefixes)?);
    }
    done.extend(delete_links(&links).await?);
    Ok(done)
}
