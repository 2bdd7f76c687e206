//! The node's nftables, through the `nft` userland: a script applied as
//! one transaction (`nft -f -`, all or nothing, as the kernel commits a
//! netlink batch), checked without applying (`nft -c`), and the names of
//! a table's chains, sets and maps read back. Used by the network
//! daemon's masquerade table and by the Service proxy's nftables mode.
//!
//! Written here rather than through a crate: the Rust nftables crates
//! either drive libnftables through FFI (a C library the static agent
//! would have to link) or build the JSON syntax, which `nft` only reads
//! when built with libjansson; the text syntax every `nft` since 0.9
//! reads is what kube-proxy's `knftables` writes too.

use std::process::Command;

use crate::iptables::{IptablesError, run};

/// Why an `nft` call failed.
#[derive(Debug, thiserror::Error)]
pub enum NftError {
    #[error(
        "cannot run `nft` ({0}): install nftables (Debian: apt install nftables; RHEL: dnf \
         install nftables)"
    )]
    Missing(#[source] std::io::Error),
    #[error("nft refused {what}: {stderr}")]
    Refused { what: String, stderr: String },
}

fn nft(args: &[&str], input: Option<&str>, what: &str) -> Result<String, NftError> {
    run(Command::new("nft").args(args), input).map_err(|e| match e {
        IptablesError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            NftError::Missing(source)
        }
        IptablesError::Io { source, .. } => NftError::Refused {
            what: what.to_owned(),
            stderr: source.to_string(),
        },
        IptablesError::Command { stderr, .. } => NftError::Refused {
            what: what.to_owned(),
            stderr,
        },
    })
}

/// Applies `script` in one transaction; `what` names it in errors.
pub fn apply(script: &str, what: &str) -> Result<(), NftError> {
    nft(&["-f", "-"], Some(script), what).map(drop)
}

/// Asks the kernel whether `script` would apply, changing nothing.
pub fn check(script: &str, what: &str) -> Result<(), NftError> {
    nft(&["-c", "-f", "-"], Some(script), what).map(drop)
}

/// The `nft` userland's version (`nft --version`: `nftables v1.0.6 (…)`),
/// as (major, minor, patch).
pub fn version() -> Result<(u32, u32, u32), NftError> {
    let out = nft(&["--version"], None, "--version")?;
    parse_version(&out).ok_or_else(|| NftError::Refused {
        what: "--version".into(),
        stderr: format!("unexpected output {:?}", out.trim()),
    })
}

fn parse_version(out: &str) -> Option<(u32, u32, u32)> {
    let v = out.split_whitespace().find_map(|w| w.strip_prefix('v'))?;
    let mut parts = v.split('.').map(|p| {
        p.chars()
            .take_while(char::is_ascii_digit)
            .collect::<String>()
            .parse::<u32>()
    });
    let major = parts.next()?.ok()?;
    let minor = parts.next().and_then(Result::ok).unwrap_or(0);
    let patch = parts.next().and_then(Result::ok).unwrap_or(0);
    Some((major, minor, patch))
}

/// The tables of the node, as (family, name).
pub fn tables() -> Result<Vec<(String, String)>, NftError> {
    let listed = nft(&["list", "tables"], None, "list tables")?;
    Ok(listed
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next()) {
                (Some("table"), Some(family), Some(name)) => {
                    Some((family.to_owned(), name.to_owned()))
                }
                _ => None,
            }
        })
        .collect())
}

/// Deletes table `family name` (an error if it does not exist).
pub fn delete_table(family: &str, name: &str) -> Result<(), NftError> {
    nft(
        &["delete", "table", family, name],
        None,
        &format!("delete table {family} {name}"),
    )
    .map(drop)
}

/// What a table holds, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableObjects {
    pub chains: Vec<String>,
    pub sets: Vec<String>,
    pub maps: Vec<String>,
}

/// The chains, sets and maps of table `family name`; empty when the table
/// does not exist. Listed tersely (`-t`: no set elements), so the cost does
/// not grow with the elements.
pub fn objects(family: &str, name: &str) -> Result<TableObjects, NftError> {
    let tables = nft(&["list", "tables", family], None, "list tables")?;
    let header = format!("table {family} {name}");
    if !tables.lines().any(|l| l.trim() == header) {
        return Ok(TableObjects::default());
    }
    let listed = nft(
        &["-t", "list", "table", family, name],
        None,
        &format!("list table {family} {name}"),
    )?;
    Ok(parse_objects(&listed))
}

fn parse_objects(listed: &str) -> TableObjects {
    let mut out = TableObjects::default();
    for line in listed.lines() {
        let mut words = line.split_whitespace();
        let (Some(kind), Some(name), Some("{")) = (words.next(), words.next(), words.next()) else {
            continue;
        };
        match kind {
            "chain" => out.chains.push(name.to_owned()),
            "set" => out.sets.push(name.to_owned()),
            "map" => out.maps.push(name.to_owned()),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_of_the_nft_userland() {
        assert_eq!(
            parse_version("nftables v1.0.6 (Lester Gooch #5)\n"),
            Some((1, 0, 6))
        );
        assert_eq!(parse_version("nftables v0.9.3 (Topsy)"), Some((0, 9, 3)));
        assert_eq!(parse_version("nftables v1.1"), Some((1, 1, 0)));
        assert_eq!(parse_version("no version here"), None);
    }

    #[test]
    fn a_listed_table_gives_its_chains_sets_and_maps() {
        let listed = "table ip rudder-proxy {\n\
            \tmap service-ips {\n\t\ttype ipv4_addr . inet_proto . inet_service : verdict\n\t}\n\
            \tset aff-0011 {\n\t\ttype ipv4_addr\n\t\tflags dynamic,timeout\n\t}\n\
            \tchain services {\n\t\tip daddr . meta l4proto . th dport vmap @service-ips\n\t}\n\
            \tchain nat-prerouting {\n\t\ttype nat hook prerouting priority dstnat; policy accept;\n\t\tjump services\n\t}\n\
            }\n";
        let o = parse_objects(listed);
        assert_eq!(o.chains, ["services", "nat-prerouting"]);
        assert_eq!(o.sets, ["aff-0011"]);
        assert_eq!(o.maps, ["service-ips"]);
    }
}
