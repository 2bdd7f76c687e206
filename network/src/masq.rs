//! Masquerading of pod traffic that leaves the cluster network, in an
//! nftables table of Rudder's own (`ip rudder-nat`), replaced atomically.
//! Pod-to-pod traffic (source and destination in the cluster network) is
//! never translated; neither is multicast.

use rudder_cni::net::Ipv4Net;

/// The table this module owns.
pub const TABLE: &str = "rudder-nat";

#[derive(Debug, thiserror::Error)]
pub enum MasqError {
    #[error(
        "cannot run `nft` ({0}): install nftables (Debian: apt install nftables; RHEL: dnf \
         install nftables), or set network.masquerade = false and masquerade otherwise"
    )]
    NoNft(#[source] std::io::Error),
    #[error("nft refused the rules for table ip {TABLE}: {0}")]
    Nft(String),
}

/// The rule set (a whole-table replacement, applied in one transaction).
pub fn ruleset(cluster: Ipv4Net) -> String {
    let c = cluster.trunc();
    format!(
        "table ip {TABLE}\n\
         delete table ip {TABLE}\n\
         table ip {TABLE} {{\n\
         \tchain postrouting {{\n\
         \t\ttype nat hook postrouting priority srcnat; policy accept;\n\
         \t\tip saddr {c} ip daddr {c} return\n\
         \t\tip saddr {c} ip daddr 224.0.0.0/4 return\n\
         \t\tip saddr {c} masquerade fully-random\n\
         \t}}\n\
         }}\n"
    )
}

fn nft(script: &str) -> Result<(), MasqError> {
    rudder_host::nft::apply(script, &format!("the rules for table ip {TABLE}")).map_err(|e| match e
    {
        rudder_host::nft::NftError::Missing(source) => MasqError::NoNft(source),
        rudder_host::nft::NftError::Refused { stderr, .. } => MasqError::Nft(stderr),
    })
}

/// Installs (or replaces) the masquerade rules.
pub fn apply(cluster: Ipv4Net) -> Result<(), MasqError> {
    nft(&ruleset(cluster))
}

/// Removes the table (nothing if it is not there).
pub fn remove() -> Result<(), MasqError> {
    nft(&format!("table ip {TABLE}\ndelete table ip {TABLE}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_to_pod_returns_before_masquerade() {
        let r = ruleset("10.244.0.0/16".parse().unwrap());
        let ret = r
            .find("ip saddr 10.244.0.0/16 ip daddr 10.244.0.0/16 return")
            .unwrap();
        let masq = r.find("ip saddr 10.244.0.0/16 masquerade").unwrap();
        assert!(ret < masq);
        assert!(r.starts_with("table ip rudder-nat\ndelete table ip rudder-nat\n"));
    }
}
