//! The proxy's state between inputs and what it does with each: watch
//! events into the cache (marking Services dirty), rescans and ticks into
//! link scans, and a sync of the dirty Services once the Service and
//! EndpointSlice lists are both in.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Instant,
};

use kube::runtime::watcher;
use rudder_dataplane::service::ServiceDataplane;
use rudder_netlink::Netlink;
use tokio::sync::oneshot;
use tracing::{info, warn};

use super::{Input, Links, ProxyConfig, Reports, Stats, apply, lock, trigger_time};
use crate::{
    cache::{Cache, Key},
    metrics,
    program::Programmer,
};

/// The proxy's state between inputs.
pub(super) struct Loop {
    pub(super) cfg: ProxyConfig,
    pub(super) dp: ServiceDataplane,
    pub(super) program: Programmer,
    pub(super) nl: Netlink,
    pub(super) links: Links,
    pub(super) cache: Cache,
    pub(super) reports: Reports,
    /// Services changed since the last sync.
    pub(super) dirty: HashSet<Key>,
    /// The cluster's nodes' addresses, and whether the map needs them.
    pub(super) nodes: super::nodes::NodeAddrs,
    pub(super) nodes_dirty: bool,
    pub(super) services_listed: bool,
    pub(super) slices_listed: bool,
    /// Whether the first full sync (which prunes what nobody owns) is done.
    pub(super) synced: bool,
    pub(super) dirty_since: Option<Instant>,
    /// Rescan requests, answered after the next link scan.
    pub(super) waiting: Vec<oneshot::Sender<()>>,
    /// The changes' trigger times (EndpointSlice annotations) waiting for
    /// the sync that programs them: kube-proxy's network programming
    /// latency.
    pub(super) triggers: Vec<std::time::SystemTime>,
    pub(super) kube: metrics::KubeProxy,
    pub(super) stats: Arc<Mutex<Stats>>,
    pub(super) health: Arc<Mutex<crate::health::Health>>,
    pub(super) service_health: crate::service_health::ServiceHealth,
}

impl Loop {
    /// Takes one input into the state; whether it was a tick.
    pub(super) fn take(&mut self, input: Input) -> bool {
        match input {
            Input::Service(ev) => {
                self.kube.service_changed();
                self.services_listed |= self.cache.on_service(*ev, &mut self.dirty);
            }
            Input::Slice(ev) => {
                self.kube.endpoints_changed();
                self.triggers.extend(trigger_time(&ev));
                self.slices_listed |= self.cache.on_slice(*ev, &mut self.dirty);
            }
            Input::Node(ev) => {
                self.nodes_dirty |= self.nodes.take(&ev);
                if let watcher::Event::Apply(n) | watcher::Event::InitApply(n) = *ev
                    && n.metadata.name.as_deref() == Some(self.cfg.node_name.as_str())
                {
                    lock(&self.health).sync_node(&n);
                }
            }
            Input::Rescan(t) => self.waiting.push(t),
            Input::Tick => return true,
        }
        false
    }

    /// Acts on what was taken: scans links when asked or on a tick, retries
    /// failed Services whose back-off is over, and syncs once both lists
    /// are in.
    pub(super) async fn step(&mut self, tick: bool) {
        if !self.dirty.is_empty() && self.dirty_since.is_none() {
            self.dirty_since = Some(Instant::now());
            lock(&self.health).queued(std::time::SystemTime::now());
        }
        if !self.waiting.is_empty() || tick {
            self.links.scan(&self.nl, &mut self.dp, &self.cfg).await;
            for t in self.waiting.drain(..) {
                let _ = t.send(());
            }
        }
        if self.nodes_dirty {
            self.write_nodes();
        }
        if tick {
            // Services whose last batch failed, once their back-off is over.
            for k in self.program.due(Instant::now()) {
                if k == Key::default() {
                    // The pruning batch: only a full sync redoes it.
                    self.synced = false;
                }
                self.dirty.insert(k);
            }
        }
        if self.services_listed && self.slices_listed && (!self.synced || !self.dirty.is_empty()) {
            self.sync().await;
        }
        if tick {
            let (services, backends) = self.program.translator.sizes();
            let mut st = lock(&self.stats);
            st.snapshot.services = services;
            st.snapshot.backends = backends;
        }
    }

    /// Writes the nodes' addresses to the datapath (retried on the next
    /// input when it fails).
    fn write_nodes(&mut self) {
        let Some(all) = self.nodes.all() else {
            return;
        };
        match self.dp.set_dsr_nodes(&all) {
            Ok(changed) => {
                if changed {
                    info!(
                        addresses = all.len(),
                        "cluster node addresses for direct server return"
                    );
                }
                self.nodes_dirty = false;
            }
            Err(e) => warn!(error = %e, "writing the cluster's node addresses"),
        }
    }

    /// Programs the dirty Services (every Service on the first sync, when
    /// what the maps held that nobody owns is removed too).
    async fn sync(&mut self) {
        let cfg = &self.cfg;
        let started = self.dirty_since.unwrap_or_else(Instant::now);
        let batches = if self.synced {
            let mut keys: Vec<Key> = self.dirty.drain().collect();
            keys.sort();
            keys.iter()
                .map(|k| {
                    self.program
                        .plan(&self.cache, k, &cfg.node_name, &cfg.node_ports)
                })
                .collect()
        } else {
            self.program
                .plan_all(&self.cache, &cfg.node_name, &cfg.node_ports)
        };
        let (ops, failed) = apply(&mut self.dp, &mut self.program, batches, &mut self.reports);
        let took = started.elapsed();
        if !self.synced {
            let (s, b) = self.program.translator.sizes();
            info!(
                services = s,
                backends = b,
                ops,
                failed,
                ?took,
                "services programmed"
            );
        }
        self.synced = true;
        self.dirty.clear();
        self.dirty_since = None;
        lock(&self.health).updated(std::time::SystemTime::now());
        lock(&self.stats).record_sync(
            took,
            failed,
            &self.program,
            &self.reports,
            self.triggers.drain(..),
        );
        self.service_health
            .sync(&self.cache.health_checks(&cfg.node_name))
            .await;
    }
}
