//! The nftables proxy: the same service ports ([`ServiceSpec`]s, from the
//! same `desired` specs as the eBPF dataplane and the iptables rules)
//! served by a table of Rudder's own, `ip rudder-proxy`, in kube-proxy's
//! nftables shape: for nodes where the eBPF programs cannot load but the
//! kernel has what kube-proxy's nftables mode needs (5.13 and `nft`
//! 1.0.1), and where `--proxy-mode nftables` asks for it.
//!
//! [`render`] is pure, specs in, a [`Ruleset`] out:
//! - base chains `nat-prerouting` and `nat-output` (dstnat) jump to
//!   `services`, which dispatches in one verdict-map lookup
//!   (`service-ips`: address . protocol . port, then for destinations local
//!   to the node other than loopback `service-nodeports`: protocol . port)
//!   rather than walking a rule per service as iptables does;
//! - `svc-<hash>` per service port: the masquerade mark (sources outside
//!   the cluster CIDR for a ClusterIP; all traffic for a NodePort without
//!   `externalTrafficPolicy: Local`), ClientIP affinity (a dynamic set per
//!   endpoint with the Service's timeout, checked first), then `numgen
//!   random` over the endpoints;
//! - `sep-<hash>` per endpoint: the hairpin mark, the affinity record, the
//!   DNAT;
//! - `mark-for-masquerade` / `masquerading` (from `nat-postrouting`):
//!   kube-proxy's 0x4000 mark and the masquerade of marked packets;
//! - `filter-input`, `filter-forward`, `filter-output` (priority -110, new
//!   connections): `no-endpoint-services` and `no-endpoint-nodeports` maps
//!   to `reject`, so a service port with no endpoints refuses at once.
//!
//! [`apply`] writes it as kube-proxy does: one `nft -f` transaction that
//! declares every chain, set and map (`add` of an existing one changes
//! nothing), flushes the chains and maps and fills them again, then deletes
//! the chains and sets no longer wanted. The affinity sets are never
//! flushed, so a client keeps its endpoint across syncs; nothing outside
//! the table is touched.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::Ipv4Addr,
};

use rudder_host::nft::{self, NftError, TableObjects};

use crate::{
    ServiceSpec,
    netfilter::{RenderConfig, describe, fnv, proto},
};

/// The table this proxy owns.
pub const TABLE: &str = "rudder-proxy";
/// The mark of packets to masquerade (kube-proxy's bit).
const MASQ_MARK: &str = "0x4000";
/// The oldest kernel and `nft` kube-proxy's nftables mode supports.
pub const MIN_KERNEL: (u32, u32) = (5, 13);
pub const MIN_NFT: (u32, u32, u32) = (1, 0, 1);

/// One chain: its hook line for a base chain, and its rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Chain {
    pub hook: Option<&'static str>,
    pub rules: Vec<String>,
}

/// A verdict map's type and elements.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Map {
    pub kind: &'static str,
    pub elements: BTreeSet<String>,
}

/// The whole table, by name.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ruleset {
    pub chains: BTreeMap<String, Chain>,
    pub maps: BTreeMap<String, Map>,
    /// The affinity sets: name → declaration.
    pub sets: BTreeMap<String, String>,
}

const ADDR_PORT: &str = "ipv4_addr . inet_proto . inet_service : verdict";
const PORT: &str = "inet_proto . inet_service : verdict";

impl Ruleset {
    fn chain(&mut self, name: &str) -> &mut Vec<String> {
        &mut self.chains.entry(name.to_owned()).or_default().rules
    }

    fn base(&mut self, name: &str, hook: &'static str, rules: &[&str]) {
        self.chains.insert(
            name.to_owned(),
            Chain {
                hook: Some(hook),
                rules: rules.iter().map(|r| (*r).to_owned()).collect(),
            },
        );
    }

    fn element(&mut self, map: &str, element: String) {
        if let Some(m) = self.maps.get_mut(map) {
            m.elements.insert(element);
        }
    }
}

/// The fixed part: base chains, dispatch, masquerade, reject.
fn skeleton() -> Ruleset {
    let mut r = Ruleset::default();
    for (name, kind) in [
        ("service-ips", ADDR_PORT),
        ("service-nodeports", PORT),
        ("no-endpoint-services", ADDR_PORT),
        ("no-endpoint-nodeports", PORT),
    ] {
        r.maps.insert(
            name.to_owned(),
            Map {
                kind,
                elements: BTreeSet::new(),
            },
        );
    }
    let dstnat = ["jump services"];
    r.base(
        "nat-prerouting",
        "type nat hook prerouting priority -100",
        &dstnat,
    );
    r.base("nat-output", "type nat hook output priority -100", &dstnat);
    r.base(
        "nat-postrouting",
        "type nat hook postrouting priority 100",
        &["jump masquerading"],
    );
    let check = ["ct state new jump endpoints-check"];
    r.base(
        "filter-input",
        "type filter hook input priority -110",
        &check,
    );
    r.base(
        "filter-forward",
        "type filter hook forward priority -110",
        &check,
    );
    r.base(
        "filter-output",
        "type filter hook output priority -110",
        &check,
    );
    let local = "fib daddr type local ip daddr != 127.0.0.0/8";
    *r.chain("services") = vec![
        "ip daddr . meta l4proto . th dport vmap @service-ips".into(),
        format!("{local} meta l4proto . th dport vmap @service-nodeports"),
    ];
    *r.chain("endpoints-check") = vec![
        "ip daddr . meta l4proto . th dport vmap @no-endpoint-services".into(),
        format!("{local} meta l4proto . th dport vmap @no-endpoint-nodeports"),
    ];
    *r.chain("reject-chain") = vec!["reject".into()];
    *r.chain("mark-for-masquerade") = vec![format!("meta mark set meta mark | {MASQ_MARK}")];
    *r.chain("masquerading") = vec![
        format!("meta mark & {MASQ_MARK} == 0 return"),
        format!("meta mark set meta mark ^ {MASQ_MARK}"),
        "masquerade fully-random".into(),
    ];
    r
}

/// The table for these service ports.
pub fn render(specs: &[ServiceSpec], cfg: &RenderConfig) -> Ruleset {
    let mut r = skeleton();
    let mut sorted: Vec<&ServiceSpec> = specs.iter().collect();
    sorted.sort_by_key(|s| s.frontend);
    for s in sorted {
        service(s, cfg, &mut r);
    }
    r
}

/// The map key of a service port (`addr . tcp . port`, or `tcp . port`
/// for a NodePort) and whether it is a NodePort.
fn key(s: &ServiceSpec) -> (String, bool) {
    let f = &s.frontend;
    let p = proto(f.proto);
    if f.addr.is_unspecified() {
        (format!("{p} . {}", f.port), true)
    } else {
        (format!("{} . {p} . {}", f.addr, f.port), false)
    }
}

/// One service port's chains and map elements.
fn service(s: &ServiceSpec, cfg: &RenderConfig, r: &mut Ruleset) {
    let f = &s.frontend;
    let (key, node_port) = key(s);
    let backends = s.backends();
    if backends.is_empty() {
        let map = if node_port {
            "no-endpoint-nodeports"
        } else {
            "no-endpoint-services"
        };
        r.element(map, format!("{key} : goto reject-chain"));
        return;
    }
    let svc = format!("svc-{:016x}", fnv(&describe(f)));
    let map = if node_port {
        "service-nodeports"
    } else {
        "service-ips"
    };
    r.element(map, format!("{key} : goto {svc}"));
    let mut rules = Vec::new();
    if node_port {
        if !s.keep_source {
            rules.push("jump mark-for-masquerade".to_owned());
        }
    } else if let Some((net, len)) = cfg.cluster_cidr {
        rules.push(format!("ip saddr != {net}/{len} jump mark-for-masquerade"));
    }
    let seps: Vec<(String, Ipv4Addr, u16)> = backends
        .iter()
        .map(|(a, port)| {
            let name = format!("sep-{:016x}", fnv(&format!("{} {a}:{port}", describe(f))));
            (name, *a, *port)
        })
        .collect();
    // The timeout is in the set's name: a new timeout is a new set.
    let affinity = |sep: &str, t: u32| format!("aff-{:016x}", fnv(&format!("{sep} {t}")));
    if let Some(t) = s.affinity_timeout {
        for (sep, ..) in &seps {
            let set = affinity(sep, t);
            rules.push(format!("ip saddr @{set} goto {sep}"));
            r.sets.insert(
                set,
                format!("type ipv4_addr; flags dynamic,timeout; timeout {t}s;"),
            );
        }
    }
    let arms: Vec<String> = seps
        .iter()
        .enumerate()
        .map(|(i, (sep, ..))| format!("{i} : goto {sep}"))
        .collect();
    rules.push(format!(
        "numgen random mod {} vmap {{ {} }}",
        seps.len(),
        arms.join(", ")
    ));
    *r.chain(&svc) = rules;
    let p = proto(f.proto);
    for (sep, addr, port) in seps {
        let mut rules = vec![format!("ip saddr {addr} jump mark-for-masquerade")];
        if let Some(t) = s.affinity_timeout {
            rules.push(format!("update @{} {{ ip saddr }}", affinity(&sep, t)));
        }
        rules.push(format!("meta l4proto {p} dnat to {addr}:{port}"));
        *r.chain(&sep) = rules;
    }
}

/// Elements per `add element` line: a line per element would make the
/// script long, one line for 100,000 elements would make it slow to parse.
const ELEMENTS_PER_LINE: usize = 1000;

/// The transaction that turns a table holding `existing` into `r`.
pub fn script(r: &Ruleset, existing: &TableObjects) -> String {
    let t = format!("ip {TABLE}");
    let mut out = format!("add table {t}\n");
    declare(&mut out, r, |_| true);
    let stale_chains: Vec<&String> = existing
        .chains
        .iter()
        .filter(|c| !r.chains.contains_key(*c))
        .collect();
    // Only what exists needs emptying: a table made from nothing is
    // declared and filled (a flush per new chain would be most of the
    // script).
    for name in existing.chains.iter() {
        let _ = writeln!(out, "flush chain {t} {name}");
    }
    for name in r.maps.keys().filter(|m| existing.maps.contains(*m)) {
        let _ = writeln!(out, "flush map {t} {name}");
    }
    for (name, c) in &r.chains {
        for rule in &c.rules {
            let _ = writeln!(out, "add rule {t} {name} {rule}");
        }
    }
    for (name, m) in &r.maps {
        elements(&mut out, "add", name, &m.elements);
    }
    for name in stale_chains {
        let _ = writeln!(out, "delete chain {t} {name}");
    }
    for name in existing.sets.iter().filter(|s| !r.sets.contains_key(*s)) {
        let _ = writeln!(out, "delete set {t} {name}");
    }
    for name in existing.maps.iter().filter(|m| !r.maps.contains_key(*m)) {
        let _ = writeln!(out, "delete map {t} {name}");
    }
    out
}

/// The `add` declarations of the chains, sets and maps of `r` that `new`
/// accepts (by name).
fn declare(out: &mut String, r: &Ruleset, new: impl Fn(&str) -> bool) {
    let t = format!("ip {TABLE}");
    for (name, c) in r.chains.iter().filter(|(n, _)| new(n)) {
        match c.hook {
            Some(h) => {
                let _ = writeln!(out, "add chain {t} {name} {{ {h}; policy accept; }}");
            }
            None => {
                let _ = writeln!(out, "add chain {t} {name}");
            }
        }
    }
    for (name, decl) in r.sets.iter().filter(|(n, _)| new(n)) {
        let _ = writeln!(out, "add set {t} {name} {{ {decl} }}");
    }
    for (name, m) in r.maps.iter().filter(|(n, _)| new(n)) {
        let _ = writeln!(out, "add map {t} {name} {{ type {}; }}", m.kind);
    }
}

/// `add` or `delete` of `elements` of map `name`, in bounded lines (a
/// deletion names the keys only).
fn elements<'a>(
    out: &mut String,
    verb: &str,
    name: &str,
    elements: impl IntoIterator<Item = &'a String>,
) {
    let keys: Vec<&str> = elements
        .into_iter()
        .map(|e| {
            if verb == "delete" {
                e.split(" : ").next().unwrap_or(e)
            } else {
                e
            }
        })
        .collect();
    for chunk in keys.chunks(ELEMENTS_PER_LINE) {
        let _ = writeln!(
            out,
            "{verb} element ip {TABLE} {name} {{ {} }}",
            chunk.join(", ")
        );
    }
}

/// The transaction that turns the table last written as `prev` into
/// `next`, touching only what changed (kube-proxy's partial sync): new
/// chains, sets and maps declared; changed chains flushed and filled
/// again; map elements removed and added one by one; chains and sets no
/// longer wanted flushed, then deleted. Its cost follows the change, not
/// the number of Services.
pub fn script_since(prev: &Ruleset, next: &Ruleset) -> String {
    let t = format!("ip {TABLE}");
    let mut out = format!("add table {t}\n");
    declare(&mut out, next, |n| {
        !prev.chains.contains_key(n) && !prev.sets.contains_key(n) && !prev.maps.contains_key(n)
    });
    let changed: Vec<(&String, &Chain)> = next
        .chains
        .iter()
        .filter(|(n, c)| prev.chains.get(*n) != Some(*c))
        .collect();
    let stale: Vec<&String> = prev
        .chains
        .keys()
        .filter(|n| !next.chains.contains_key(*n))
        .collect();
    let refilled = changed
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| prev.chains.contains_key(*n));
    for name in refilled.chain(stale.iter().copied()) {
        let _ = writeln!(out, "flush chain {t} {name}");
    }
    let empty = Map::default();
    for (name, m) in &next.maps {
        let before = prev.maps.get(name).unwrap_or(&empty);
        elements(
            &mut out,
            "delete",
            name,
            before.elements.difference(&m.elements),
        );
    }
    for (name, c) in changed {
        for rule in &c.rules {
            let _ = writeln!(out, "add rule {t} {name} {rule}");
        }
    }
    for (name, m) in &next.maps {
        let before = prev.maps.get(name).unwrap_or(&empty);
        elements(
            &mut out,
            "add",
            name,
            m.elements.difference(&before.elements),
        );
    }
    for name in stale {
        let _ = writeln!(out, "delete chain {t} {name}");
    }
    for name in prev.sets.keys().filter(|s| !next.sets.contains_key(*s)) {
        let _ = writeln!(out, "delete set {t} {name}");
    }
    out
}

/// Replaces the table's contents with `r`, in one transaction: from what
/// the kernel holds, or, given the table as this process last wrote it,
/// by changing only what differs (the caller forgets `prev` after a failed
/// write, so the next one starts again from the kernel's).
///
/// A table made from nothing is written in steps of [`STEP`] service ports
/// (each step a partial transaction over the last): `nft`'s cost grows
/// faster than a transaction's size; 10,000 service ports took 48.6 s in
/// one and 15.4 s in steps (`cargo xtask bench dataplane`). A table that exists is replaced in one
/// transaction, so that a restarted agent never serves half of each.
pub fn apply(prev: Option<&Ruleset>, r: &Ruleset) -> Result<(), NftError> {
    let what = format!("the Service rules (table ip {TABLE})");
    if let Some(prev) = prev {
        return nft::apply(&script_since(prev, r), &what);
    }
    let existing = nft::objects("ip", TABLE)?;
    if existing != TableObjects::default() {
        return nft::apply(&script(r, &existing), &what);
    }
    let steps = steps(r, STEP);
    let mut last: Option<&Ruleset> = None;
    for step in &steps {
        let text = match last {
            None => script(step, &existing),
            Some(l) => script_since(l, step),
        };
        nft::apply(&text, &what)?;
        last = Some(step);
    }
    Ok(())
}

/// Service ports (map elements) per step of a first write.
pub const STEP: usize = 1000;

/// The chains and sets a rule names (`jump`, `goto`, `@set`).
fn named(rule: &str) -> impl Iterator<Item = &str> {
    let words: Vec<&str> = rule
        .split([' ', ',', '{', '}'])
        .filter(|w| !w.is_empty())
        .collect();
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        if matches!(*w, "jump" | "goto") {
            if let Some(n) = words.get(i + 1) {
                out.push(*n);
            }
        } else if let Some(set) = w.strip_prefix('@') {
            out.push(set);
        }
    }
    out.into_iter()
}

/// `r` built up in steps of at most `per_step` map elements: each step a
/// whole table (every element's chains and sets with it, the chains no
/// element reaches in the first), the last one `r`.
pub fn steps(r: &Ruleset, per_step: usize) -> Vec<Ruleset> {
    // What an element's target reaches, chains and sets.
    let reach = |start: &str| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo = vec![start.to_owned()];
        while let Some(n) = todo.pop() {
            if !seen.insert(n.clone()) {
                continue;
            }
            for rule in r.chains.get(&n).map(|c| c.rules.as_slice()).unwrap_or(&[]) {
                todo.extend(named(rule).map(str::to_owned));
            }
        }
        seen
    };
    let elements: Vec<(&String, &String, BTreeSet<String>)> = r
        .maps
        .iter()
        .flat_map(|(m, map)| map.elements.iter().map(move |e| (m, e)))
        .map(|(m, e)| {
            let target = e.rsplit(" : goto ").next().unwrap_or("");
            (m, e, reach(target))
        })
        .collect();
    let reached: BTreeSet<&String> = elements.iter().flat_map(|(_, _, c)| c).collect();
    let mut cur = Ruleset {
        chains: r
            .chains
            .iter()
            .filter(|(n, _)| !reached.contains(n))
            .map(|(n, c)| (n.clone(), c.clone()))
            .collect(),
        maps: r
            .maps
            .iter()
            .map(|(n, m)| {
                (
                    n.clone(),
                    Map {
                        kind: m.kind,
                        elements: BTreeSet::new(),
                    },
                )
            })
            .collect(),
        sets: BTreeMap::new(),
    };
    let mut out = Vec::new();
    for chunk in elements.chunks(per_step.max(1)) {
        for (m, e, closure) in chunk {
            cur.element(m, (*e).clone());
            for name in closure {
                if let Some(c) = r.chains.get(name) {
                    cur.chains.insert(name.clone(), c.clone());
                } else if let Some(decl) = r.sets.get(name) {
                    cur.sets.insert(name.clone(), decl.clone());
                }
            }
        }
        out.push(cur.clone());
    }
    if out.is_empty() {
        out.push(cur);
    }
    out
}

/// Removes the table (nothing if it is not there).
pub fn remove() -> Result<(), NftError> {
    nft::apply(
        &format!("add table ip {TABLE}\ndelete table ip {TABLE}\n"),
        &format!("removing table ip {TABLE}"),
    )
}

/// Why the nftables mode cannot run on this node.
#[derive(Debug, thiserror::Error)]
pub enum Unusable {
    #[error("kernel {release} is older than {}.{} (kube-proxy's nftables minimum)", MIN_KERNEL.0, MIN_KERNEL.1)]
    Kernel { release: String },
    #[error("nft {}.{}.{} is older than {}.{}.{}", .0.0, .0.1, .0.2, MIN_NFT.0, MIN_NFT.1, MIN_NFT.2)]
    Userland((u32, u32, u32)),
    #[error(transparent)]
    Nft(#[from] NftError),
}

/// `major.minor` of a kernel release such as `5.14.0-427.el9.x86_64`.
pub fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(['.', '-']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// Whether this node can run the nftables mode, as kube-proxy decides it:
/// the kernel's and `nft`'s versions, then a check (nothing applied) of a
/// table with every kind of rule the mode writes.
pub fn probe() -> Result<(), Unusable> {
    let release = rudder_host::kernel_release();
    if kernel_version(&release).is_none_or(|v| v < MIN_KERNEL) {
        return Err(Unusable::Kernel { release });
    }
    let v = nft::version()?;
    if v < MIN_NFT {
        return Err(Unusable::Userland(v));
    }
    let sample = ServiceSpec {
        frontend: crate::Frontend {
            addr: Ipv4Addr::new(192, 0, 2, 1),
            port: 80,
            proto: crate::Proto::Tcp,
        },
        endpoints: vec![crate::Endpoint::ready(Ipv4Addr::new(192, 0, 2, 2), 8080)],
        affinity_timeout: Some(10),
        keep_source: false,
        maglev: false,
        dsr: false,
    };
    let r = render(
        &[sample],
        &RenderConfig {
            cluster_cidr: Some((Ipv4Addr::new(192, 0, 2, 0), 24)),
        },
    );
    nft::check(&script(&r, &TableObjects::default()), "the probe table")?;
    Ok(())
}

#[cfg(test)]
mod tests;
