//! The proxy loop of the netfilter modes (`--proxy-mode nftables` or
//! `iptables`, or `auto` on a node where the eBPF Service programs cannot
//! load): the same watches, cache and `desired` specs as the eBPF loop, but
//! each change renders every service port as an nftables table
//! ([`crate::nftables`]) or iptables rules ([`crate::netfilter`]) and
//! writes them when they differ from what was written (a failed write is
//! retried at the next tick). Nothing is attached to interfaces, so the
//! kubelet's rescan requests are answered at once; kube-proxy's health
//! server, its `healthCheckNodePort`s and metrics run as in the eBPF mode (`rudder_proxy_mode` says
//! `nftables` or `iptables`; there are no BPF counters or flows to
//! report).

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use futures_util::StreamExt as _;
use kube::Client;
use rudder_host::RescanRx;
use tracing::{info, warn};

use super::{Input, ProxyConfig, ProxyError, Stats, inputs, lock, serve_metrics};
use crate::{
    ServiceSpec,
    cache::Cache,
    netfilter::{self, RenderConfig, Tables},
    nftables::{self, Ruleset},
};

/// Which rules serve Services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Backend {
    /// iptables rules with this binary (`iptables`, `iptables-legacy`,
    /// `iptables-nft`).
    Iptables(String),
    /// The `ip rudder-proxy` nftables table.
    Nftables,
}

/// What a backend writes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Rendered {
    Iptables(Tables),
    Nftables(Ruleset),
}

impl Backend {
    fn name(&self) -> &'static str {
        match self {
            Self::Iptables(_) => "iptables",
            Self::Nftables => "nftables",
        }
    }

    fn render(&self, specs: &[ServiceSpec], cfg: &RenderConfig) -> Rendered {
        match self {
            Self::Iptables(_) => Rendered::Iptables(netfilter::render(specs, cfg)),
            Self::Nftables => Rendered::Nftables(nftables::render(specs, cfg)),
        }
    }

    /// Writes `r`, over `prev` when that is what this loop last wrote
    /// (blocking: it runs the userland binaries).
    fn apply(&self, prev: Option<&Rendered>, r: &Rendered) -> Result<(), String> {
        match (self, r) {
            (Self::Iptables(bin), Rendered::Iptables(t)) => {
                let prev = match prev {
                    Some(Rendered::Iptables(p)) => Some(p),
                    _ => None,
                };
                netfilter::apply(bin, prev, t).map_err(|e| e.to_string())
            }
            (Self::Nftables, Rendered::Nftables(r)) => {
                let prev = match prev {
                    Some(Rendered::Nftables(p)) => Some(p),
                    _ => None,
                };
                nftables::apply(prev, r).map_err(|e| e.to_string())
            }
            _ => Err("rules rendered for another backend".into()),
        }
    }
}

/// A write of the rules, for the metrics.
fn record(st: &mut Stats, took: std::time::Duration, ports: usize, now: std::time::SystemTime) {
    st.synced = true;
    st.kube.synced(took, now);
    let s = &mut st.snapshot;
    s.services = ports;
    s.syncs += 1;
    s.sync_total += took;
    s.last_sync = took;
}

/// br_netfilter's switch: bridged packets through iptables.
const BRIDGE_NF: &str = "/proc/sys/net/bridge/bridge-nf-call-iptables";

/// Pods on one bridge that reach each other through a Service need the
/// replies, which the bridge forwards at layer 2, to pass iptables so that
/// conntrack undoes the DNAT: br_netfilter's `bridge-nf-call-iptables`, as
/// kubeadm requires for kube-proxy. Set here (the module loaded first where
/// the kernel has it as one); a node where it cannot be set is logged.
fn bridge_netfilter() {
    let path = std::path::Path::new(BRIDGE_NF);
    if !path.exists() {
        let _ = std::process::Command::new("modprobe")
            .arg("br_netfilter")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
    match std::fs::read_to_string(path) {
        Ok(v) if v.trim() == "1" => {}
        Ok(_) => match std::fs::write(path, "1") {
            Ok(()) => info!("net.bridge.bridge-nf-call-iptables set to 1 (br_netfilter)"),
            Err(e) => {
                warn!(error = %e, "cannot set net.bridge.bridge-nf-call-iptables: pods on one bridge may not reach each other through Services");
            }
        },
        Err(e) => {
            warn!(error = %e, "no br_netfilter: pods on one bridge may not reach each other through Services");
        }
    }
}

/// Serves Services with `backend`'s rules until the watches end.
pub(super) async fn run(
    client: Client,
    cfg: ProxyConfig,
    rescan: RescanRx,
    backend: Backend,
) -> Result<(), ProxyError> {
    let health = Arc::new(Mutex::new(crate::health::Health::default()));
    let stats = Arc::new(Mutex::new(Stats::default()));
    let mode = backend.name();
    lock(&stats).snapshot.mode = mode;
    let bind = |addr: std::net::SocketAddr| async move {
        tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ProxyError::Metrics { addr, source })
    };
    let mut _servers = Vec::new();
    if let Some(addr) = cfg.healthz_addr {
        _servers.push(rudder_host::supervise::spawn_scoped(crate::health::serve(
            bind(addr).await?,
            Arc::clone(&health),
        )));
    }
    if let Some(addr) = cfg.metrics_addr {
        _servers.push(rudder_host::supervise::spawn_scoped(serve_metrics(
            bind(addr).await?,
            Arc::clone(&stats),
            None,
        )));
    }
    bridge_netfilter();
    let render_cfg = RenderConfig {
        cluster_cidr: cfg.cluster_cidr,
    };
    let mut inputs = inputs(client, &cfg, rescan, false);
    let mut cache = Cache::default();
    let mut dirty = HashSet::new();
    let (mut services_listed, mut slices_listed) = (false, false);
    let mut service_health = crate::service_health::ServiceHealth::new(Arc::clone(&health));
    let mut written: Option<Rendered> = None;
    let mut pending = true;
    match &backend {
        Backend::Iptables(bin) => info!(iptables = %bin, "serving Services with iptables rules"),
        Backend::Nftables => info!(
            table = nftables::TABLE,
            "serving Services with nftables rules"
        ),
    }
    while let Some(first) = inputs.next().await {
        let mut input = Some(first);
        while let Some(i) = input {
            match i {
                Input::Service(ev) => {
                    lock(&stats).kube.service_changed();
                    services_listed |= cache.on_service(*ev, &mut dirty);
                }
                Input::Slice(ev) => {
                    lock(&stats).kube.endpoints_changed();
                    slices_listed |= cache.on_slice(*ev, &mut dirty);
                }
                Input::Rescan(done) => drop(done.send(())),
                Input::Node(_) | Input::Tick => {}
            }
            input = futures_util::FutureExt::now_or_never(inputs.next()).flatten();
        }
        pending |= !dirty.is_empty();
        dirty.clear();
        if !(services_listed && slices_listed && pending) {
            continue;
        }
        let specs: Vec<ServiceSpec> = cache.owned_specs(&cfg.node_name, &cfg.node_ports);
        // kube-proxy's healthCheckNodePorts follow the endpoints in every
        // mode, whether or not the rules change.
        service_health
            .sync(&cache.health_checks(&cfg.node_name))
            .await;
        let tables = backend.render(&specs, &render_cfg);
        if written.as_ref() == Some(&tables) {
            pending = false;
            continue;
        }
        let (b, t) = (backend.clone(), tables.clone());
        // Taken: a failed write forgets what was written, so the next one
        // starts from what the kernel holds.
        let prev = written.take();
        let first = prev.is_none();
        let started = std::time::Instant::now();
        match tokio::task::spawn_blocking(move || b.apply(prev.as_ref(), &t)).await {
            Ok(Ok(())) => {
                if first {
                    info!(service_ports = specs.len(), "{mode} rules written");
                }
                written = Some(tables);
                pending = false;
                let now = std::time::SystemTime::now();
                lock(&health).updated(now);
                record(&mut lock(&stats), started.elapsed(), specs.len(), now);
            }
            Ok(Err(e)) => {
                lock(&stats).snapshot.apply_failures += 1;
                warn!(error = %e, "writing the {mode} rules; retrying");
            }
            Err(e) => warn!(error = %e, "writing the {mode} rules; retrying"),
        }
    }
    Err(ProxyError::WatchEnded("service"))
}
