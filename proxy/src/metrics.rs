//! The service proxy's metrics, served on kube-proxy's metrics port: its
//! own (`rudder_proxy_*`, from a snapshot taken when scraped) and
//! kube-proxy's (`kubeproxy_*`, same names, help and buckets), encoded by
//! `prometheus-client`.

use std::{sync::atomic::AtomicU64, time::Duration};

use prometheus_client::{
    encoding::text::encode,
    metrics::{
        counter::{ConstCounter, Counter},
        family::Family,
        gauge::Gauge,
        histogram::{Histogram, exponential_buckets, linear_buckets},
    },
    registry::Registry,
};

/// A snapshot of what the proxy knows about itself.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    /// Service front ends programmed.
    pub services: usize,
    /// Distinct backends programmed.
    pub backends: usize,
    /// Tracked flows, and the flow table's capacity.
    pub flows: usize,
    pub flow_capacity: usize,
    /// Datapath counters by reason, as `(name, value)`.
    pub packets: Vec<(&'static str, u64)>,
    /// Syncs applied and the time they took in total; the last one's time.
    pub syncs: u64,
    pub sync_total: Duration,
    pub last_sync: Duration,
    /// Service batches that failed to reach the maps (each retried alone).
    pub apply_failures: u64,
    /// Services waiting for such a retry.
    pub failing: usize,
    /// Front ends the maps could not take (capacity), and front ends not
    /// programmed because another Service owns them.
    pub refused: usize,
    pub conflicts: usize,
    /// How Services are served: `ebpf` or `iptables` (empty: not said).
    pub mode: &'static str,
}

/// kube-proxy's own metrics, under its names and buckets
/// (`pkg/proxy/metrics`), so that dashboards and alerts made for it keep
/// working: recorded by the daemon as it syncs, shared with the endpoint.
#[derive(Debug, Clone)]
pub struct KubeProxy {
    /// `kubeproxy_sync_proxy_rules_duration_seconds`.
    pub sync_duration: Histogram,
    /// `kubeproxy_sync_proxy_rules_last_timestamp_seconds`.
    pub last_sync: Gauge<f64, AtomicU64>,
    /// `kubeproxy_network_programming_duration_seconds`: from the change
    /// (the EndpointSlice's `endpoints.kubernetes.io/last-change-trigger-time`)
    /// to the maps.
    pub network_programming: Histogram,
    /// `kubeproxy_sync_proxy_rules_{service,endpoint}_changes_{total,pending}`.
    pub service_changes: Counter,
    pub service_changes_pending: Gauge,
    pub endpoint_changes: Counter,
    pub endpoint_changes_pending: Gauge,
}

impl Default for KubeProxy {
    fn default() -> Self {
        // kube-proxy's: a 0 bucket, 0.25 s and 0.5 s, each second to 59 s,
        // every 5 s to 115 s, every 30 s to 5 min.
        let programming = std::iter::once(0.0)
            .chain(linear_buckets(0.25, 0.25, 2))
            .chain(linear_buckets(1.0, 1.0, 59))
            .chain(linear_buckets(60.0, 5.0, 12))
            .chain(linear_buckets(120.0, 30.0, 7));
        Self {
            sync_duration: Histogram::new(exponential_buckets(0.001, 2.0, 15)),
            last_sync: Gauge::default(),
            network_programming: Histogram::new(programming),
            service_changes: Counter::default(),
            service_changes_pending: Gauge::default(),
            endpoint_changes: Counter::default(),
            endpoint_changes_pending: Gauge::default(),
        }
    }
}

impl KubeProxy {
    /// A Service event seen.
    pub fn service_changed(&self) {
        self.service_changes.inc();
        self.service_changes_pending.inc();
    }

    /// An EndpointSlice event seen.
    pub fn endpoints_changed(&self) {
        self.endpoint_changes.inc();
        self.endpoint_changes_pending.inc();
    }

    /// A sync that reached the maps, `took` long, at `now`.
    pub fn synced(&self, took: Duration, now: std::time::SystemTime) {
        self.sync_duration.observe(took.as_secs_f64());
        if let Ok(t) = now.duration_since(std::time::UNIX_EPOCH) {
            self.last_sync.set(t.as_secs_f64());
        }
        self.service_changes_pending.set(0);
        self.endpoint_changes_pending.set(0);
    }

    fn register(&self, r: &mut Registry) {
        let p = "kubeproxy_";
        r.register(
            format!("{p}sync_proxy_rules_duration_seconds"),
            "[ALPHA] SyncProxyRules latency in seconds",
            self.sync_duration.clone(),
        );
        r.register(
            format!("{p}sync_proxy_rules_last_timestamp_seconds"),
            "[ALPHA] The last time proxy rules were successfully synced",
            self.last_sync.clone(),
        );
        r.register(
            format!("{p}network_programming_duration_seconds"),
            "[ALPHA] In Cluster Network Programming Latency in seconds",
            self.network_programming.clone(),
        );
        r.register(
            format!("{p}sync_proxy_rules_service_changes"),
            "[ALPHA] Cumulative proxy rules Service changes",
            self.service_changes.clone(),
        );
        r.register(
            format!("{p}sync_proxy_rules_service_changes_pending"),
            "[ALPHA] Pending proxy rules Service changes",
            self.service_changes_pending.clone(),
        );
        r.register(
            format!("{p}sync_proxy_rules_endpoint_changes"),
            "[ALPHA] Cumulative proxy rules Endpoint changes",
            self.endpoint_changes.clone(),
        );
        r.register(
            format!("{p}sync_proxy_rules_endpoint_changes_pending"),
            "[ALPHA] Pending proxy rules Endpoint changes",
            self.endpoint_changes_pending.clone(),
        );
    }
}

/// The exposition's content type (OpenMetrics text, which Prometheus
/// negotiates and reads).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Renders the snapshot and kube-proxy's metrics in the OpenMetrics text
/// format, through the `prometheus-client` crate.
pub fn render(s: &Snapshot, k: &KubeProxy) -> String {
    let mut r = Registry::default();
    let gauge = |r: &mut Registry, name: &str, help: &str, value: f64| {
        let g: Gauge<f64, AtomicU64> = Gauge::default();
        g.set(value);
        r.register(name, help, g);
    };
    if !s.mode.is_empty() {
        let mode: Family<Vec<(&'static str, &'static str)>, Gauge> = Family::default();
        mode.get_or_create(&vec![("mode", s.mode)]).set(1);
        r.register(
            "rudder_proxy_mode",
            "How this proxy serves Services (ebpf, or nftables or iptables where the eBPF dataplane cannot load)",
            mode,
        );
    }
    gauge(
        &mut r,
        "rudder_proxy_services",
        "Service front ends (address, port, protocol) programmed",
        s.services as f64,
    );
    gauge(
        &mut r,
        "rudder_proxy_backends",
        "Distinct backends (address, port) programmed",
        s.backends as f64,
    );
    gauge(
        &mut r,
        "rudder_proxy_flows",
        "Flows in the datapath's connection-tracking table",
        s.flows as f64,
    );
    gauge(
        &mut r,
        "rudder_proxy_flow_table_occupancy_ratio",
        "Tracked flows over the table's capacity (LRU: the oldest are evicted when full)",
        if s.flow_capacity == 0 {
            0.0
        } else {
            s.flows as f64 / s.flow_capacity as f64
        },
    );
    gauge(
        &mut r,
        "rudder_proxy_last_sync_seconds",
        "Time the last sync took to reach the maps",
        s.last_sync.as_secs_f64(),
    );
    gauge(
        &mut r,
        "rudder_proxy_services_failing",
        "Services whose last programming failed; each is retried alone with back-off",
        s.failing as f64,
    );
    gauge(
        &mut r,
        "rudder_proxy_frontends_refused",
        "Service front ends the maps cannot take (a limit reached); they keep their previous state",
        s.refused as f64,
    );
    gauge(
        &mut r,
        "rudder_proxy_frontend_conflicts",
        "Service front ends not programmed because another Service owns the same address, port and protocol",
        s.conflicts as f64,
    );
    r.register(
        "rudder_proxy_apply_failures",
        "Service batches that failed to reach the maps",
        ConstCounter::new(s.apply_failures),
    );
    let packets: Family<Vec<(String, String)>, Counter> = Family::default();
    for (reason, n) in &s.packets {
        packets
            .get_or_create(&vec![("action".to_string(), (*reason).to_string())])
            .inc_by(*n);
    }
    r.register(
        "rudder_proxy_packets",
        "Packets the Service datapath acted on, by what it did",
        packets,
    );
    k.register(&mut r);
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = encode(&mut out, &r);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition() {
        let snap = Snapshot {
            services: 3,
            backends: 5,
            flows: 50,
            flow_capacity: 100,
            packets: vec![("new_flow", 7), ("reject_tcp", 1)],
            syncs: 2,
            sync_total: Duration::from_millis(3),
            last_sync: Duration::from_millis(1),
            apply_failures: 4,
            failing: 1,
            refused: 2,
            conflicts: 1,
            mode: "ebpf",
        };
        let k = KubeProxy::default();
        k.synced(
            Duration::from_millis(3),
            std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000),
        );
        k.network_programming.observe(0.6);
        k.endpoints_changed();
        let text = render(&snap, &k);
        assert!(text.contains("rudder_proxy_services 3.0\n"));
        assert!(text.contains("rudder_proxy_mode{mode=\"ebpf\"} 1\n"));
        assert!(text.contains("rudder_proxy_apply_failures_total 4\n"));
        assert!(text.contains("rudder_proxy_frontends_refused 2.0\n"));
        assert!(text.contains("rudder_proxy_flow_table_occupancy_ratio 0.5\n"));
        assert!(text.contains("rudder_proxy_packets_total{action=\"reject_tcp\"} 1\n"));
        // kube-proxy's names, types and buckets.
        assert!(text.contains("# TYPE kubeproxy_sync_proxy_rules_duration_seconds histogram\n"));
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"0.004\"} 1\n")
        );
        assert!(
            text.contains("kubeproxy_sync_proxy_rules_duration_seconds_bucket{le=\"16.384\"} 1\n")
        );
        assert!(text.contains("kubeproxy_sync_proxy_rules_duration_seconds_count 1\n"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_last_timestamp_seconds 1700000000.0\n"));
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"0.5\"} 0\n")
        );
        assert!(
            text.contains("kubeproxy_network_programming_duration_seconds_bucket{le=\"1.0\"} 1\n")
        );
        assert!(
            text.contains(
                "kubeproxy_network_programming_duration_seconds_bucket{le=\"300.0\"} 1\n"
            )
        );
        assert!(text.contains("kubeproxy_sync_proxy_rules_endpoint_changes_total 1\n"));
        assert!(text.contains("kubeproxy_sync_proxy_rules_service_changes_pending 0\n"));
        assert!(text.ends_with("# EOF\n"));
        // Every sample line belongs to a declared metric family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = ["_bucket", "_sum", "_count", "_total"]
                .iter()
                .fold(name, |n, s| n.strip_suffix(s).unwrap_or(n));
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }
}
