//! kube-proxy's per-Service health checks: a LoadBalancer Service with
//! `externalTrafficPolicy: Local` has a `healthCheckNodePort`, on which
//! every node answers whether it has endpoints of that Service, so that
//! the cloud load balancer sends traffic only to those nodes. On any path:
//! 200 while the node has ready local endpoints and the proxy is healthy,
//! else 503; the body is kube-proxy's, byte for byte (tab-indented JSON
//! with the Service, the local endpoint count and the proxy's health).
//!
//! The servers follow the Services: made when a port appears, their count
//! updated at every sync, closed when the port goes. A port that cannot be
//! bound is retried at the next sync.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
};

use tracing::{info, warn};

use super::{cache::Key, health::Health};
use rudder_host::supervise::TaskGuard;

/// The body kube-proxy writes (Go's `dedent` of its template).
pub(crate) fn body(service: &Key, local_endpoints: usize, proxy_healthy: bool) -> String {
    format!(
        "{{\n\t\"service\": {{\n\t\t\"namespace\": {:?},\n\t\t\"name\": {:?}\n\t}},\n\t\"localEndpoints\": {local_endpoints},\n\t\"serviceProxyHealthy\": {proxy_healthy}\n}}",
        service.0, service.1
    )
}

/// The status kube-proxy answers with.
pub(crate) fn status(local_endpoints: usize, proxy_healthy: bool) -> u16 {
    if local_endpoints > 0 && proxy_healthy {
        200
    } else {
        503
    }
}

struct Server {
    service: Key,
    endpoints: Arc<AtomicUsize>,
    _task: TaskGuard,
}

/// The running health check servers, by port.
pub(crate) struct ServiceHealth {
    servers: BTreeMap<u16, Server>,
    health: Arc<Mutex<Health>>,
}

impl ServiceHealth {
    pub(crate) fn new(health: Arc<Mutex<Health>>) -> Self {
        Self {
            servers: BTreeMap::new(),
            health,
        }
    }

    /// Brings the servers to `want`: port → (Service, local ready
    /// endpoints).
    pub(crate) async fn sync(&mut self, want: &BTreeMap<u16, (Key, usize)>) {
        self.servers
            .retain(|port, s| want.get(port).is_some_and(|(svc, _)| *svc == s.service));
        for (port, (service, count)) in want {
            if let Some(s) = self.servers.get(port) {
                s.endpoints.store(*count, Ordering::Relaxed);
                continue;
            }
            let listener = match tokio::net::TcpListener::bind(("0.0.0.0", *port)).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(port, service = ?service, error = %e, "health check node port: not bound, retried at the next sync");
                    continue;
                }
            };
            info!(port, service = ?service, "health check node port");
            let endpoints = Arc::new(AtomicUsize::new(*count));
            let (svc, n, health) = (
                service.clone(),
                Arc::clone(&endpoints),
                Arc::clone(&self.health),
            );
            let task = rudder_host::supervise::spawn_scoped(super::health::serve_answers(
                listener,
                move |_path| {
                    let count = n.load(Ordering::Relaxed);
                    let healthy = super::health::is_healthy(&health);
                    Some((status(count, healthy), body(&svc, count, healthy)))
                },
            ));
            self.servers.insert(
                *port,
                Server {
                    service: service.clone(),
                    endpoints,
                    _task: task,
                },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_is_kube_proxys() {
        let key = ("default".to_string(), "web".to_string());
        assert_eq!(
            body(&key, 2, true),
            "{\n\t\"service\": {\n\t\t\"namespace\": \"default\",\n\t\t\"name\": \"web\"\n\t},\n\t\"localEndpoints\": 2,\n\t\"serviceProxyHealthy\": true\n}"
        );
        let v: serde_json::Value = serde_json::from_str(&body(&key, 0, false)).unwrap();
        assert_eq!(v["localEndpoints"], 0);
        assert_eq!(status(2, true), 200);
        assert_eq!(status(0, true), 503);
        assert_eq!(status(2, false), 503);
    }
}
