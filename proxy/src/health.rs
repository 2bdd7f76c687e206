//! kube-proxy's health server (`--healthz-bind-address`, `0.0.0.0:10256`),
//! which cloud load balancers and node tools probe: `/healthz` and
//! `/livez` answer 200 while no change from the apiserver has waited
//! longer than the health timeout (twice kube-proxy's 30 s sync period) to
//! be programmed, else 503; `/healthz` also answers 503 while the Node is
//! being deleted or carries the cluster autoscaler's
//! `ToBeDeletedByClusterAutoscaler` taint, so that load balancers drain it
//! first. The bodies are kube-proxy's, byte for byte, times in Go's
//! `time.Time` form (`2024-01-02 03:04:05.123456789 +0000 UTC m=+12.5`).
//!
//! Pods can reach this port, so connections are bounded in number and in
//! the time their request may take.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use k8s_openapi::api::core::v1::Node;

/// kube-proxy's health timeout: twice its default sync period.
pub const HEALTH_TIMEOUT: Duration = Duration::from_secs(60);
/// The cluster autoscaler's taint on a node it is about to delete.
pub const TO_BE_DELETED_TAINT: &str = "ToBeDeletedByClusterAutoscaler";

const MAX_CONNECTIONS: usize = 64;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the health answers are made of.
#[derive(Debug)]
pub struct Health {
    /// When the oldest change not yet programmed arrived.
    oldest_pending: Option<SystemTime>,
    last_updated: Option<SystemTime>,
    node_eligible: bool,
    /// For the monotonic part of Go's times.
    process_start: Instant,
}

impl Default for Health {
    fn default() -> Self {
        // Eligible while starting, until the Node says otherwise.
        Self {
            oldest_pending: None,
            last_updated: None,
            node_eligible: true,
            process_start: Instant::now(),
        }
    }
}

impl Health {
    /// A change arrived that is not programmed yet.
    pub fn queued(&mut self, at: SystemTime) {
        self.oldest_pending.get_or_insert(at);
    }

    /// Everything received is programmed.
    pub fn updated(&mut self, at: SystemTime) {
        self.oldest_pending = None;
        self.last_updated = Some(at);
    }

    /// Follows the Node: not eligible while deleted or tainted for
    /// deletion by the cluster autoscaler.
    pub fn sync_node(&mut self, node: &Node) {
        let deleting = node.metadata.deletion_timestamp.is_some();
        let tainted = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|t| t.iter().any(|t| t.key == TO_BE_DELETED_TAINT));
        self.node_eligible = !deleting && !tainted;
    }

    fn healthy(&self, now: SystemTime) -> bool {
        self.oldest_pending.is_none_or(|p| {
            now.duration_since(p)
                .is_ok_and(|waited| waited < HEALTH_TIMEOUT)
                || now < p
        })
    }

    /// The status and body of `path` (`/healthz` or `/livez`) at `now`.
    pub fn answer(&self, path: &str, now: SystemTime) -> Option<(u16, String)> {
        let mut healthy = self.healthy(now);
        let node = match path {
            "/healthz" => {
                healthy &= self.node_eligible;
                true
            }
            "/livez" => false,
            _ => return None,
        };
        let current = self.go_time(now, true);
        // A healthy answer says "updated now", as kube-proxy's does.
        let last = if healthy {
            current.clone()
        } else {
            self.last_updated
                .map_or_else(|| go_zero_time().into(), |t| self.go_time(t, true))
        };
        let body = if node {
            format!(
                "{{\"lastUpdated\": {last:?},\"currentTime\": {current:?}, \"nodeEligible\": {}}}",
                self.node_eligible
            )
        } else {
            format!("{{\"lastUpdated\": {last:?},\"currentTime\": {current:?}}}")
        };
        Some((if healthy { 200 } else { 503 }, body))
    }

    /// `t` as Go prints a `time.Time` in UTC; with `monotonic`, the
    /// reading Go appends to times from `time.Now()` (seconds since this
    /// process began, standing in for Go's runtime clock).
    fn go_time(&self, t: SystemTime, monotonic: bool) -> String {
        let mut s = go_utc(t);
        if monotonic {
            let m = self.process_start.elapsed();
            s.push_str(&format!(" m=+{}.{:09}", m.as_secs(), m.subsec_nanos()));
        }
        s
    }
}

/// Go's zero `time.Time`.
fn go_zero_time() -> &'static str {
    "0001-01-01 00:00:00 +0000 UTC"
}

/// `2006-01-02 15:04:05.999999999 +0000 UTC` (fraction without trailing
/// zeros, none when whole).
fn go_utc(t: SystemTime) -> String {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let ts =
        jiff::Timestamp::from_second(d.as_secs() as i64).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    let base = ts.strftime("%Y-%m-%d %H:%M:%S").to_string();
    let frac = format!("{:09}", d.subsec_nanos());
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{base} +0000 UTC")
    } else {
        format!("{base}.{frac} +0000 UTC")
    }
}

/// Serves `/healthz` and `/livez` on `listener` until the process ends.
pub async fn serve(listener: tokio::net::TcpListener, health: Arc<Mutex<Health>>) {
    serve_answers(listener, move |path| {
        health
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .answer(path, SystemTime::now())
    })
    .await;
}

/// Whether kube-proxy would call itself healthy now (what the per-Service
/// health checks report as `serviceProxyHealthy`).
pub fn is_healthy(health: &Mutex<Health>) -> bool {
    health
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .healthy(SystemTime::now())
}

/// Serves `answer(path)` (status and JSON body; `None`: 404) on `listener`
/// until the process ends, a bounded number of connections at a time,
/// each with a bounded time for its request.
pub(crate) async fn serve_answers(
    listener: tokio::net::TcpListener,
    answer: impl Fn(&str) -> Option<(u16, String)> + Clone + Send + Sync + 'static,
) {
    use hyper::{Response, StatusCode, body::Bytes, service::service_fn};
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let answer = answer.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let answer = answer(req.uri().path());
                async move {
                    let (status, body, json) = match answer {
                        Some((s, b)) => (s, b, true),
                        None => (404, "404 page not found\n".to_owned(), false),
                    };
                    let mut resp = Response::new(http_body_util::Full::new(Bytes::from(body)));
                    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or_default();
                    let h = resp.headers_mut();
                    let ct = if json {
                        "application/json"
                    } else {
                        "text/plain; charset=utf-8"
                    };
                    h.insert(
                        hyper::header::CONTENT_TYPE,
                        hyper::header::HeaderValue::from_static(ct),
                    );
                    h.insert(
                        "x-content-type-options",
                        hyper::header::HeaderValue::from_static("nosniff"),
                    );
                    Ok::<_, std::convert::Infallible>(resp)
                }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(REQUEST_TIMEOUT)
                .keep_alive(false)
                .serve_connection(io, svc);
            let _ = tokio::time::timeout(REQUEST_TIMEOUT, conn).await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, nanos: u32) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn times_print_as_go_prints_them() {
        assert_eq!(
            go_utc(at(1_700_000_000, 123_456_000)),
            "2023-11-14 22:13:20.123456 +0000 UTC"
        );
        assert_eq!(
            go_utc(at(1_700_000_000, 0)),
            "2023-11-14 22:13:20 +0000 UTC"
        );
    }

    #[test]
    fn healthy_until_a_change_waits_too_long_and_never_on_a_leaving_node() {
        let mut h = Health::default();
        let t0 = at(1_700_000_000, 0);
        let (code, body) = h.answer("/healthz", t0).unwrap();
        assert_eq!(code, 200, "healthy while starting");
        assert!(
            body.starts_with("{\"lastUpdated\": \"2023-11-14 22:13:20 +0000 UTC m=+"),
            "{body}"
        );
        assert!(body.ends_with(", \"nodeEligible\": true}"), "{body}");
        h.queued(t0);
        h.queued(t0 + Duration::from_secs(30));
        assert_eq!(
            h.answer("/livez", t0 + Duration::from_secs(59)).unwrap().0,
            200
        );
        let (code, body) = h.answer("/livez", t0 + Duration::from_secs(61)).unwrap();
        assert_eq!(code, 503, "the oldest change waited 61 s");
        assert_eq!(
            &body[..48],
            "{\"lastUpdated\": \"0001-01-01 00:00:00 +0000 UTC\",",
            "never updated: {body}"
        );
        assert!(!body.contains("nodeEligible"));
        h.updated(t0 + Duration::from_secs(62));
        assert_eq!(
            h.answer("/healthz", t0 + Duration::from_secs(63))
                .unwrap()
                .0,
            200
        );
        let node: Node = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "n"},
            "spec": {"taints": [{"key": TO_BE_DELETED_TAINT, "effect": "NoSchedule"}]}
        }))
        .unwrap();
        h.sync_node(&node);
        let (code, body) = h.answer("/healthz", t0 + Duration::from_secs(63)).unwrap();
        assert_eq!(code, 503);
        assert!(body.ends_with("\"nodeEligible\": false}"), "{body}");
        assert_eq!(
            h.answer("/livez", t0 + Duration::from_secs(63)).unwrap().0,
            200,
            "livez ignores the node"
        );
        assert!(h.answer("/metrics", t0).is_none());
    }
}
