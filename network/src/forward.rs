//! Accepting pod traffic in iptables' FORWARD chain where its policy is
//! DROP (docker sets it; firewalld's iptables backend and hardened images
//! do too), as flannel's `FLANNEL-FWD` does: a chain of Rudder's own,
//! `RUDDER-FWD`, accepting what comes from or goes to the cluster network,
//! jumped to from the top of FORWARD, in every iptables flavour whose
//! FORWARD policy is DROP. Nftables tables of Rudder's own cannot do this:
//! a packet must pass every base chain on the hook, so a drop in
//! iptables' chain wins over an accept in another table.
//!
//! Checked again at every resync (docker and firewalld rewrite their rules
//! on restart and reload), and removed by the uninstall.

use rudder_cni::net::Ipv4Net;

use rudder_host::iptables::{self, IptablesError};

/// The chain this module owns.
pub const CHAIN: &str = "RUDDER-FWD";
const COMMENT: &str = "rudder: pod traffic";

/// Whether the filter table of this `iptables-save` output drops forwarded
/// packets by default.
fn forward_drops(save: &str) -> bool {
    let mut in_filter = false;
    for line in save.lines() {
        if line.starts_with('*') {
            in_filter = line == "*filter";
        } else if in_filter && line.starts_with(":FORWARD DROP") {
            return true;
        }
    }
    false
}

/// The chain's rules for `cluster`.
fn rules(cluster: Ipv4Net) -> [String; 2] {
    let c = cluster.trunc();
    [
        format!("-A {CHAIN} -s {c} -m comment --comment \"{COMMENT}\" -j ACCEPT"),
        format!("-A {CHAIN} -d {c} -m comment --comment \"{COMMENT}\" -j ACCEPT"),
    ]
}

/// The `iptables-restore --noflush` input that brings this save to the
/// wanted state, `None` when it is there already: the chain (declared, so
/// flushed, and filled) and the jump at the top of FORWARD when missing.
pub fn plan(save: &str, cluster: Ipv4Net) -> Option<String> {
    if !forward_drops(save) {
        return None;
    }
    let want = rules(cluster);
    let have: Vec<&str> = save
        .lines()
        .filter(|l| l.starts_with(&format!("-A {CHAIN} ")))
        .collect();
    let jump = save
        .lines()
        .any(|l| l.starts_with("-A FORWARD ") && l.ends_with(&format!("-j {CHAIN}")));
    if jump && have == want.iter().map(String::as_str).collect::<Vec<_>>() {
        return None;
    }
    let mut out = format!("*filter\n:{CHAIN} - [0:0]\n{}\n{}\n", want[0], want[1]);
    if !jump {
        out.push_str(&format!(
            "-I FORWARD 1 -m comment --comment \"{COMMENT}\" -j {CHAIN}\n"
        ));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Brings every flavour to the wanted state; the flavours changed.
pub fn ensure(cluster: Ipv4Net) -> Result<Vec<&'static str>, IptablesError> {
    let mut changed = Vec::new();
    for flavour in iptables::flavours() {
        if let Some(input) = plan(&iptables::save(flavour)?, cluster) {
            iptables::restore(flavour, &input, true)?;
            changed.push(flavour);
        }
    }
    Ok(changed)
}

/// Removes the chain and its jump from every flavour.
pub fn remove() -> Result<(), IptablesError> {
    for flavour in iptables::flavours() {
        if let Some(filtered) = iptables::strip_chains(&iptables::save(flavour)?, &[CHAIN]) {
            iptables::restore(flavour, &filtered, false)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Ipv4Net {
        "10.244.0.0/16".parse().unwrap()
    }

    const DOCKER: &str = "*mangle\n:PREROUTING ACCEPT [0:0]\n:FORWARD DROP [0:0]\nCOMMIT\n*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER-USER - [0:0]\n-A FORWARD -j DOCKER-USER\nCOMMIT\n";

    #[test]
    fn a_dropping_forward_chain_gets_the_chain_and_the_jump_once() {
        let input = plan(DOCKER, cluster()).unwrap();
        assert!(input.contains(":RUDDER-FWD - [0:0]\n"));
        assert!(input.contains("-A RUDDER-FWD -s 10.244.0.0/16 "));
        assert!(input.contains("-A RUDDER-FWD -d 10.244.0.0/16 "));
        assert!(input.contains("-I FORWARD 1 "));
        // As iptables-save prints it once applied: nothing more to do.
        let applied = DOCKER.replace(
            "-A FORWARD -j DOCKER-USER\n",
            &format!(
                "-A FORWARD -m comment --comment \"{COMMENT}\" -j RUDDER-FWD\n-A FORWARD -j DOCKER-USER\n{}\n{}\n",
                rules(cluster())[0],
                rules(cluster())[1]
            ),
        );
        assert_eq!(plan(&applied, cluster()), None);
        // Another cluster network: the chain is refilled, the jump kept.
        let other = plan(&applied, "10.42.0.0/16".parse().unwrap()).unwrap();
        assert!(other.contains("-s 10.42.0.0/16") && !other.contains("-I FORWARD"));
    }

    #[test]
    fn an_accepting_forward_chain_is_left_alone() {
        let accept = DOCKER.replace(
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP",
            "*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT",
        );
        assert_eq!(plan(&accept, cluster()), None);
        assert_eq!(plan("", cluster()), None);
    }
}
