//! The service proxy's metrics in the Prometheus text format.

use std::{fmt::Write as _, time::Duration};

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
}

/// Renders the snapshot as Prometheus text exposition (version 0.0.4).
pub fn render(s: &Snapshot) -> String {
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, value: f64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
        );
    };
    gauge(
        "rudder_proxy_services",
        "Service front ends (address, port, protocol) programmed.",
        s.services as f64,
    );
    gauge(
        "rudder_proxy_backends",
        "Distinct backends (address, port) programmed.",
        s.backends as f64,
    );
    gauge(
        "rudder_proxy_flows",
        "Flows in the datapath's connection-tracking table.",
        s.flows as f64,
    );
    gauge(
        "rudder_proxy_flow_table_occupancy_ratio",
        "Tracked flows over the table's capacity (LRU: the oldest are evicted when full).",
        if s.flow_capacity == 0 {
            0.0
        } else {
            s.flows as f64 / s.flow_capacity as f64
        },
    );
    gauge(
        "rudder_proxy_last_sync_seconds",
        "Time the last sync took to reach the maps.",
        s.last_sync.as_secs_f64(),
    );
    gauge(
        "rudder_proxy_services_failing",
        "Services whose last programming failed; each is retried alone with back-off.",
        s.failing as f64,
    );
    gauge(
        "rudder_proxy_frontends_refused",
        "Service front ends the maps cannot take (a limit reached); they keep their previous state.",
        s.refused as f64,
    );
    gauge(
        "rudder_proxy_frontend_conflicts",
        "Service front ends not programmed because another Service owns the same address, port and protocol.",
        s.conflicts as f64,
    );
    let _ = writeln!(
        out,
        "# HELP rudder_proxy_apply_failures_total Service batches that failed to reach the maps.\n# TYPE rudder_proxy_apply_failures_total counter\nrudder_proxy_apply_failures_total {}",
        s.apply_failures
    );
    let _ = writeln!(
        out,
        "# HELP rudder_proxy_sync_seconds Time syncs took to reach the maps.\n# TYPE rudder_proxy_sync_seconds summary\nrudder_proxy_sync_seconds_sum {}\nrudder_proxy_sync_seconds_count {}",
        s.sync_total.as_secs_f64(),
        s.syncs
    );
    let _ = writeln!(
        out,
        "# HELP rudder_proxy_packets_total Packets the Service datapath acted on, by what it did.\n# TYPE rudder_proxy_packets_total counter"
    );
    for (reason, n) in &s.packets {
        let _ = writeln!(out, "rudder_proxy_packets_total{{action=\"{reason}\"}} {n}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_valid_exposition() {
        let text = render(&Snapshot {
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
        });
        assert!(text.contains("rudder_proxy_services 3\n"));
        assert!(text.contains("rudder_proxy_apply_failures_total 4\n"));
        assert!(text.contains("rudder_proxy_frontends_refused 2\n"));
        assert!(text.contains("rudder_proxy_flow_table_occupancy_ratio 0.5\n"));
        assert!(text.contains("rudder_proxy_packets_total{action=\"reject_tcp\"} 1\n"));
        assert!(text.contains("rudder_proxy_sync_seconds_count 2\n"));
        // Every sample line belongs to a declared metric family.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let family = name.trim_end_matches("_sum").trim_end_matches("_count");
            assert!(text.contains(&format!("# TYPE {family} ")), "{line}");
        }
    }
}
