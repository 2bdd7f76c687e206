//! The netfilter proxy: the same service ports ([`ServiceSpec`]s, from the
//! same `desired` specs) served by iptables rules in kube-proxy's iptables
//! shape, for nodes where the eBPF programs cannot load (CentOS 7's 3.10,
//! a kernel missing a helper, a locked-down node).
//!
//! [`render`] is pure: specs in, the `nat` and `filter` chains out, every
//! chain named `RUDDER-…` (never kube-proxy's `KUBE-…`, which the take-over
//! removes):
//! - `nat RUDDER-SERVICES` (from PREROUTING and OUTPUT): one rule per
//!   service address to its `RUDDER-SVC-<hash>` chain, and last, for
//!   destinations local to the node, `RUDDER-NODEPORTS`;
//! - `RUDDER-SVC-<hash>`: masquerade marks (sources outside the cluster
//!   CIDR for a ClusterIP; all traffic from outside for a NodePort without
//!   `externalTrafficPolicy: Local`), the `recent` checks of ClientIP
//!   affinity, then one rule per endpoint with `statistic` probabilities
//!   1/n, 1/(n-1) … 1 so each endpoint gets an equal share;
//! - `RUDDER-SEP-<hash>`: the hairpin mark (an endpoint reaching itself)
//!   and the DNAT, recording the client for affinity;
//! - `RUDDER-MARK-MASQ` / `RUDDER-POSTROUTING`: the 0x4000 mark and the
//!   MASQUERADE of marked packets, as kube-proxy's;
//! - `filter RUDDER-SERVICES` / `RUDDER-EXTERNAL-SERVICES` (from INPUT,
//!   FORWARD and OUTPUT, new connections): REJECT for service ports with no
//!   endpoints, so clients are refused at once rather than left waiting.
//!
//! [`apply`] writes them through the node's iptables seam
//! (`rudder_host::iptables`): the first time, each table saved, stripped
//! of the previous `RUDDER-` chains and jumps, and restored whole with the
//! new ones; after that, as kube-proxy's partial syncs, only the chains
//! that changed (`--noflush`). Either way a sync is atomic per table and
//! leaves every other rule alone.

use std::{collections::BTreeMap, fmt::Write as _, net::Ipv4Addr};

use rudder_host::iptables::{self, IptablesError};

use crate::{Frontend, Proto, ServiceSpec};

/// The prefix of every chain this proxy owns.
pub const PREFIX: &str = "RUDDER-";
/// The mark of packets to masquerade (kube-proxy's bit).
const MASQ_MARK: &str = "0x4000";

/// What the rules depend on besides the services.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RenderConfig {
    /// The pods' addresses: traffic to a ClusterIP from outside them is
    /// masqueraded, so replies come back through this node (kube-proxy's
    /// `--cluster-cidr`). `None`: no such masquerade.
    pub cluster_cidr: Option<(Ipv4Addr, u8)>,
}

/// The rules of both tables, as `iptables-restore` input bodies (chain
/// declarations and rules, without the `*table` and `COMMIT` lines).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tables {
    pub nat: String,
    pub filter: String,
}

/// FNV-1a of `what`: stable short names for chains and sets, the same in
/// every release.
pub(crate) fn fnv(what: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in what.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// A stable short name for a chain: [`fnv`] of `what`, 16 hex digits (so
/// `RUDDER-SVC-` + it fits iptables' 28 characters).
fn chain(kind: &str, what: &str) -> String {
    format!("{PREFIX}{kind}-{:016X}", fnv(what))
}

pub(crate) fn proto(p: Proto) -> &'static str {
    match p {
        Proto::Tcp => "tcp",
        Proto::Udp => "udp",
    }
}

pub(crate) fn describe(f: &Frontend) -> String {
    format!("{}:{}/{}", f.addr, f.port, proto(f.proto))
}

/// The chains and rules for these service ports.
pub fn render(specs: &[ServiceSpec], cfg: &RenderConfig) -> Tables {
    let mut nat_chains = vec![
        format!("{PREFIX}SERVICES"),
        format!("{PREFIX}NODEPORTS"),
        format!("{PREFIX}MARK-MASQ"),
        format!("{PREFIX}POSTROUTING"),
    ];
    let mut nat = Vec::new();
    let mut filter = Vec::new();
    let mut sorted: Vec<&ServiceSpec> = specs.iter().collect();
    sorted.sort_by_key(|s| s.frontend);
    for s in sorted {
        service(s, cfg, &mut nat_chains, &mut nat, &mut filter);
    }
    nat.push(format!(
        "-A {PREFIX}SERVICES -m addrtype --dst-type LOCAL -j {PREFIX}NODEPORTS"
    ));
    nat.push(format!(
        "-A {PREFIX}MARK-MASQ -j MARK --or-mark {MASQ_MARK}"
    ));
    nat.push(format!(
        "-A {PREFIX}POSTROUTING -m mark ! --mark {MASQ_MARK}/{MASQ_MARK} -j RETURN"
    ));
    nat.push(format!(
        "-A {PREFIX}POSTROUTING -j MARK --xor-mark {MASQ_MARK}"
    ));
    nat.push(format!("-A {PREFIX}POSTROUTING -j MASQUERADE"));
    for (hook, target) in [
        ("PREROUTING", "SERVICES"),
        ("OUTPUT", "SERVICES"),
        ("POSTROUTING", "POSTROUTING"),
    ] {
        nat.push(format!("-A {hook} -j {PREFIX}{target}"));
    }
    for (hook, target) in [
        ("INPUT", "SERVICES"),
        ("FORWARD", "SERVICES"),
        ("OUTPUT", "SERVICES"),
        ("INPUT", "EXTERNAL-SERVICES"),
        ("FORWARD", "EXTERNAL-SERVICES"),
    ] {
        filter.push(format!(
            "-A {hook} -m conntrack --ctstate NEW -j {PREFIX}{target}"
        ));
    }
    let mut out = Tables::default();
    for c in &nat_chains {
        let _ = writeln!(out.nat, ":{c} - [0:0]");
    }
    for r in nat {
        let _ = writeln!(out.nat, "{r}");
    }
    for c in ["SERVICES", "EXTERNAL-SERVICES"] {
        let _ = writeln!(out.filter, ":{PREFIX}{c} - [0:0]");
    }
    for r in filter {
        let _ = writeln!(out.filter, "{r}");
    }
    out
}

/// One service port's rules.
fn service(
    s: &ServiceSpec,
    cfg: &RenderConfig,
    chains: &mut Vec<String>,
    nat: &mut Vec<String>,
    filter: &mut Vec<String>,
) {
    let f = &s.frontend;
    let p = proto(f.proto);
    let node_port = f.addr.is_unspecified();
    let comment = format!("-m comment --comment \"{}\"", describe(f));
    let backends = s.backends();
    if backends.is_empty() {
        // Refused at once, as kube-proxy's "has no endpoints" rules do.
        let rule = if node_port {
            format!(
                "-A {PREFIX}EXTERNAL-SERVICES {comment} -m addrtype --dst-type LOCAL -p {p} -m {p} --dport {} -j REJECT",
                f.port
            )
        } else {
            format!(
                "-A {PREFIX}SERVICES {comment} -d {}/32 -p {p} -m {p} --dport {} -j REJECT",
                f.addr, f.port
            )
        };
        filter.push(rule);
        return;
    }
    let svc = chain("SVC", &describe(f));
    chains.push(svc.clone());
    if node_port {
        nat.push(format!(
            "-A {PREFIX}NODEPORTS {comment} -p {p} -m {p} --dport {} -j {svc}",
            f.port
        ));
        if !s.keep_source {
            nat.push(format!("-A {svc} -j {PREFIX}MARK-MASQ"));
        }
    } else {
        nat.push(format!(
            "-A {PREFIX}SERVICES {comment} -d {}/32 -p {p} -m {p} --dport {} -j {svc}",
            f.addr, f.port
        ));
        if let Some((net, len)) = cfg.cluster_cidr {
            nat.push(format!(
                "-A {svc} ! -s {net}/{len} -d {}/32 -p {p} -m {p} --dport {} -j {PREFIX}MARK-MASQ",
                f.addr, f.port
            ));
        }
    }
    let seps: Vec<(String, Ipv4Addr, u16)> = backends
        .iter()
        .map(|(a, port)| {
            (
                chain("SEP", &format!("{} {a}:{port}", describe(f))),
                *a,
                *port,
            )
        })
        .collect();
    if let Some(t) = s.affinity_timeout {
        for (sep, ..) in &seps {
            nat.push(format!(
                "-A {svc} -m recent --name {sep} --mask 255.255.255.255 --rsource --rcheck --seconds {t} --reap -j {sep}"
            ));
        }
    }
    let n = seps.len();
    for (i, (sep, ..)) in seps.iter().enumerate() {
        if i + 1 < n {
            let probability = 1.0 / (n - i) as f64;
            nat.push(format!(
                "-A {svc} -m statistic --mode random --probability {probability:.10} -j {sep}"
            ));
        } else {
            nat.push(format!("-A {svc} -j {sep}"));
        }
    }
    for (sep, addr, port) in seps {
        chains.push(sep.clone());
        nat.push(format!("-A {sep} -s {addr}/32 -j {PREFIX}MARK-MASQ"));
        let recent = if s.affinity_timeout.is_some() {
            format!(" -m recent --name {sep} --mask 255.255.255.255 --rsource --set")
        } else {
            String::new()
        };
        nat.push(format!(
            "-A {sep} -p {p}{recent} -m {p} -j DNAT --to-destination {addr}:{port}"
        ));
    }
}

/// A table's `iptables-save` text with `body` in place of the previous
/// `RUDDER-` chains and jumps (`None`: the table is not in `save`, and is
/// made with `body` alone).
fn merge(save: &str, table: &str, body: &str) -> String {
    let stripped = iptables::strip_chains(save, &[PREFIX]).unwrap_or_else(|| save.to_owned());
    let header = format!("*{table}");
    let mut out = String::new();
    let mut in_table = false;
    let mut found = false;
    for line in stripped.lines() {
        if line == header {
            in_table = true;
            found = true;
        } else if in_table && line == "COMMIT" {
            out.push_str(body);
            in_table = false;
        }
        out.push_str(line);
        out.push('\n');
    }
    if !found {
        let _ = write!(out, "{header}\n{body}COMMIT\n");
    }
    // Only the table this call is about is restored.
    let start = out.find(&header).unwrap_or(0);
    let end = out[start..]
        .find("\nCOMMIT\n")
        .map_or(out.len(), |i| start + i + "\nCOMMIT\n".len());
    out[start..end].to_owned()
}

/// A body's `RUDDER-` chains and their rules (the jumps from the built-in
/// chains, which never change, left out).
fn own_chains(body: &str) -> BTreeMap<&str, Vec<&str>> {
    let mut chains: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for line in body.lines() {
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or("");
            chains.entry(name).or_default();
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let name = rule.split_whitespace().next().unwrap_or("");
            if name.starts_with(PREFIX) {
                chains.entry(name).or_default().push(line);
            }
        }
    }
    chains
}

/// The `iptables-restore --noflush` input that turns a table whose body is
/// `prev` into `next`, as kube-proxy's partial syncs do: each new or
/// changed chain declared (which flushes it) and filled again, the chains
/// no longer rendered declared and deleted after; the chains that did not
/// change, and every rule not ours, untouched. `None` when nothing
/// changed.
fn partial(table: &str, prev: &str, next: &str) -> Option<String> {
    let (old, new) = (own_chains(prev), own_chains(next));
    let changed: Vec<(&str, &Vec<&str>)> = new
        .iter()
        .filter(|(name, rules)| old.get(*name) != Some(*rules))
        .map(|(n, r)| (*n, r))
        .collect();
    let gone: Vec<&str> = old
        .keys()
        .filter(|n| !new.contains_key(*n))
        .copied()
        .collect();
    if changed.is_empty() && gone.is_empty() {
        return None;
    }
    let mut out = format!("*{table}\n");
    for name in changed.iter().map(|(n, _)| *n).chain(gone.iter().copied()) {
        let _ = writeln!(out, ":{name} - [0:0]");
    }
    for (_, rules) in &changed {
        for r in *rules {
            let _ = writeln!(out, "{r}");
        }
    }
    for name in &gone {
        let _ = writeln!(out, "-X {name}");
    }
    out.push_str("COMMIT\n");
    Some(out)
}

/// Replaces this proxy's rules in both tables of the iptables flavour
/// `bin` (`iptables`, `iptables-legacy` or `iptables-nft`): each table
/// saved, stripped of ours and restored whole; or, given the tables as this
/// process last wrote them, only the chains that changed (the caller
/// forgets `prev` after a failed write, so the next one starts again from
/// the kernel's).
pub fn apply(bin: &str, prev: Option<&Tables>, tables: &Tables) -> Result<(), IptablesError> {
    for (table, body, old) in [
        ("nat", &tables.nat, prev.map(|p| &p.nat)),
        ("filter", &tables.filter, prev.map(|p| &p.filter)),
    ] {
        if let Some(old) = old {
            if let Some(script) = partial(table, old, body) {
                iptables::restore(bin, &script, true)?;
            }
            continue;
        }
        let save = iptables::run(
            std::process::Command::new(format!("{bin}-save")).args(["-t", table]),
            None,
        )?;
        iptables::restore(bin, &merge(&save, table, body), false)?;
    }
    Ok(())
}

/// Removes this proxy's chains and jumps from both tables.
pub fn remove(bin: &str) -> Result<(), IptablesError> {
    apply(bin, None, &Tables::default())
}

#[cfg(test)]
pub(crate) mod tests;
