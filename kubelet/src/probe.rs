//! Container probes (liveness, readiness, startup) and the handlers they
//! share with lifecycle hooks (exec, httpGet, tcpSocket, grpc).
//!
//! The counting rules are pure ([`Timing`], [`Counter`]); each running
//! container instance gets one task per probe that sleeps, checks, counts,
//! and tells the pod's worker when a result changes.

use std::{sync::Arc, time::Duration};

use k8s_openapi::{
    api::core::v1::{Container, ExecAction, GRPCAction, HTTPGetAction, Probe, TCPSocketAction},
    apimachinery::pkg::util::intstr::IntOrString,
};
use tokio::sync::{mpsc, watch};

use super::{Shared, ToWorker};

/// Which probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Liveness,
    Readiness,
    Startup,
}

impl Kind {
    /// As events name it (`Liveness probe failed: …`).
    pub fn title(self) -> &'static str {
        match self {
            Self::Liveness => "Liveness",
            Self::Readiness => "Readiness",
            Self::Startup => "Startup",
        }
    }
}

/// A probe's timing with Kubernetes' defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub initial_delay: Duration,
    pub period: Duration,
    pub timeout: Duration,
    pub success_threshold: u32,
    pub failure_threshold: u32,
}

impl Timing {
    /// Defaults: initialDelay 0, period 10 s, timeout 1 s, success 1 (always
    /// 1 for liveness and startup), failure 3.
    pub fn of(p: &Probe, kind: Kind) -> Self {
        let secs = |v: Option<i32>, d: u64| Duration::from_secs(v.map_or(d, |v| v.max(0) as u64));
        let success = match kind {
            Kind::Readiness => p.success_threshold.unwrap_or(1).max(1) as u32,
            _ => 1,
        };
        Self {
            initial_delay: secs(p.initial_delay_seconds, 0),
            period: secs(p.period_seconds, 10).max(Duration::from_secs(1)),
            timeout: secs(p.timeout_seconds, 1).max(Duration::from_secs(1)),
            success_threshold: success,
            failure_threshold: p.failure_threshold.unwrap_or(3).max(1) as u32,
        }
    }
}

/// Consecutive results and the verdict they add up to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counter {
    pub verdict: Option<bool>,
    successes: u32,
    failures: u32,
}

impl Counter {
    /// Counts one result; returns the new verdict when it changed.
    pub fn record(&mut self, ok: bool, t: &Timing) -> Option<bool> {
        if ok {
            self.successes += 1;
            self.failures = 0;
            if self.successes >= t.success_threshold && self.verdict != Some(true) {
                self.verdict = Some(true);
                return Some(true);
            }
        } else {
            self.failures += 1;
            self.successes = 0;
            if self.failures >= t.failure_threshold && self.verdict != Some(false) {
                self.verdict = Some(false);
                return Some(false);
            }
        }
        None
    }
}

/// A probe task's report to the worker.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    pub container: String,
    pub instance: String,
    pub kind: Kind,
    /// The verdict changed to this (`None`: a single failure to report).
    pub verdict: Option<bool>,
    pub message: String,
}

/// Where handlers run: the container (exec) and its pod's address.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    pub instance: String,
    pub pod_ip: String,
    pub container: Container,
}

/// Resolves a port given by number or by the container's port name.
fn port(c: &Container, p: &IntOrString) -> Result<u16, String> {
    match p {
        IntOrString::Int(n) => u16::try_from(*n).map_err(|_| format!("invalid port {n}")),
        IntOrString::String(name) => c
            .ports
            .iter()
            .flatten()
            .find(|cp| cp.name.as_deref() == Some(name))
            .and_then(|cp| u16::try_from(cp.container_port).ok())
            .ok_or_else(|| format!("no port named {name:?} in container {}", c.name)),
    }
}

/// Runs an exec handler in the container; Ok(output) on exit 0.
pub(crate) async fn exec(
    shared: &Shared,
    t: &Target,
    a: &ExecAction,
    timeout: Duration,
) -> Result<String, String> {
    let command = a.command.clone().unwrap_or_default();
    if command.is_empty() {
        return Err("exec handler with no command".into());
    }
    let cd = &shared.runtime;
    let spec = cd
        .container_spec(&t.instance)
        .await
        .map_err(|e| e.to_string())?;
    let mut process = spec["process"].clone();
    process["args"] = serde_json::json!(command);
    process["terminal"] = serde_json::json!(false);
    let exec_id = format!("probe-{:x}", rand::random::<u32>());
    let out_dir = shared.cfg.run_dir.join("exec");
    std::fs::create_dir_all(&out_dir).map_err(|e| e.to_string())?;
    let out = out_dir.join(&exec_id);
    let body = serde_json::to_vec(&process).map_err(|e| e.to_string())?;
    let r = cd.exec(&t.instance, &exec_id, body, &out, timeout).await;
    let output: String = std::fs::read_to_string(&out)
        .unwrap_or_default()
        .chars()
        .take(10 * 1024)
        .collect();
    let _ = std::fs::remove_file(&out);
    match r.map_err(|e| e.to_string())? {
        Some(0) => Ok(output),
        Some(code) => Err(if output.trim().is_empty() {
            format!("command {command:?} exited with {code}")
        } else {
            output.trim_end().to_string()
        }),
        None => Err(format!(
            "command {command:?} timed out after {}s",
            timeout.as_secs()
        )),
    }
}

/// An HTTP GET from the kubelet: 200–399 succeed; HTTPS is not verified.
pub(crate) async fn http_get(
    t: &Target,
    a: &HTTPGetAction,
    timeout: Duration,
) -> Result<String, String> {
    let p = port(&t.container, &a.port)?;
    let host = a
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| t.pod_ip.clone());
    let scheme = a.scheme.as_deref().unwrap_or("HTTP").to_ascii_lowercase();
    let path = a.path.clone().unwrap_or_else(|| "/".into());
    let path = if path.starts_with('/') {
        path
    } else {
        format!("/{path}")
    };
    let url = format!("{scheme}://{host}:{p}{path}");
    let headers: Vec<(String, String)> = a
        .http_headers
        .iter()
        .flatten()
        .map(|h| (h.name.clone(), h.value.clone()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(timeout))
            .tls_config(
                ureq::tls::TlsConfig::builder()
                    .disable_verification(true)
                    .build(),
            )
            .build()
            .into();
        let mut req = agent.get(&url);
        let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        if !has("user-agent") {
            req = req.header("User-Agent", "kube-probe/1.33");
        }
        if !has("accept") {
            req = req.header("Accept", "*/*");
        }
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        match req.call() {
            Ok(r) if (200..400).contains(&r.status().as_u16()) => {
                Ok(format!("HTTP {}", r.status().as_u16()))
            }
            Ok(r) => Err(format!(
                "HTTP probe failed with statuscode: {}",
                r.status().as_u16()
            )),
            Err(e) => Err(format!("Get \"{url}\": {e}")),
        }
    })
    .await
    .map_err(|e| e.to_string())?
}

/// A TCP connection from the kubelet.
pub(crate) async fn tcp(
    t: &Target,
    a: &TCPSocketAction,
    timeout: Duration,
) -> Result<String, String> {
    let p = port(&t.container, &a.port)?;
    let host = a
        .host
        .clone()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| t.pod_ip.clone());
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host.as_str(), p))).await {
        Ok(Ok(_)) => Ok(String::new()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{p}: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{p}: i/o timeout")),
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckRequest {
    #[prost(string, tag = "1")]
    service: String,
}

#[derive(Clone, PartialEq, prost::Message)]
struct HealthCheckResponse {
    #[prost(int32, tag = "1")]
    status: i32,
}

/// The standard gRPC health check (`grpc.health.v1.Health/Check`);
/// SERVING (1) succeeds.
pub(crate) async fn grpc(t: &Target, a: &GRPCAction, timeout: Duration) -> Result<String, String> {
    let p = u16::try_from(a.port).map_err(|_| format!("invalid port {}", a.port))?;
    let addr = format!("http://{}:{p}", t.pod_ip);
    let check = async {
        let channel = tonic::transport::Endpoint::from_shared(addr.clone())
            .map_err(|e| e.to_string())?
            .connect()
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let mut client = tonic::client::Grpc::new(channel);
        client.ready().await.map_err(|e| e.to_string())?;
        let path =
            tonic::codegen::http::uri::PathAndQuery::from_static("/grpc.health.v1.Health/Check");
        let resp: tonic::Response<HealthCheckResponse> = client
            .unary(
                tonic::Request::new(HealthCheckRequest {
                    service: a.service.clone().unwrap_or_default(),
                }),
                path,
                tonic_prost::ProstCodec::default(),
            )
            .await
            .map_err(|s| format!("rpc error: code = {:?} desc = {}", s.code(), s.message()))?;
        match resp.into_inner().status {
            1 => Ok(String::new()),
            s => Err(format!("service unhealthy (responded with status {s})")),
        }
    };
    tokio::time::timeout(timeout, check).await.map_err(|_| {
        format!(
            "timeout: health rpc did not complete within {}s",
            timeout.as_secs()
        )
    })?
}

/// Runs one probe's handler once.
pub(crate) async fn check(
    shared: &Shared,
    t: &Target,
    p: &Probe,
    timeout: Duration,
) -> Result<String, String> {
    if let Some(a) = &p.exec {
        exec(shared, t, a, timeout).await
    } else if let Some(a) = &p.http_get {
        http_get(t, a, timeout).await
    } else if let Some(a) = &p.tcp_socket {
        tcp(t, a, timeout).await
    } else if let Some(a) = &p.grpc {
        grpc(t, a, timeout).await
    } else {
        Err("the probe has no handler".into())
    }
}

/// Runs a lifecycle hook (postStart, preStop): exec, httpGet, sleep or
/// (deprecated) tcpSocket, for at most `timeout`.
pub(crate) async fn hook(
    shared: &Shared,
    t: &Target,
    h: &k8s_openapi::api::core::v1::LifecycleHandler,
    timeout: Duration,
) -> Result<(), String> {
    let timeout = timeout.max(Duration::from_secs(1));
    let r = if let Some(a) = &h.exec {
        exec(shared, t, a, timeout).await
    } else if let Some(a) = &h.http_get {
        http_get(t, a, timeout).await
    } else if let Some(a) = &h.tcp_socket {
        tcp(t, a, timeout).await
    } else if let Some(a) = &h.sleep {
        tokio::time::sleep(Duration::from_secs(a.seconds.max(0) as u64).min(timeout)).await;
        Ok(String::new())
    } else {
        Err("the hook has no handler".into())
    };
    r.map(|_| ())
}

/// The probe loop of one container instance. Liveness and readiness wait
/// until `started` (the startup probe's success) is true.
pub(crate) async fn run(
    shared: Arc<Shared>,
    target: Target,
    kind: Kind,
    probe: Probe,
    mut started: watch::Receiver<bool>,
    started_tx: Option<watch::Sender<bool>>,
    tx: mpsc::UnboundedSender<ToWorker>,
) {
    let timing = Timing::of(&probe, kind);
    tokio::time::sleep(timing.initial_delay).await;
    if kind != Kind::Startup {
        while !*started.borrow() {
            if started.changed().await.is_err() {
                return;
            }
        }
    }
    let mut counter = Counter::default();
    loop {
        let result = check(&shared, &target, &probe, timing.timeout).await;
        let ok = result.is_ok();
        let verdict = counter.record(ok, &timing);
        let message = match &result {
            Ok(m) | Err(m) => m.clone(),
        };
        if verdict.is_some() || !ok {
            let report = Report {
                container: target.container.name.clone(),
                instance: target.instance.clone(),
                kind,
                verdict,
                message,
            };
            if tx.send(ToWorker::Probe(report)).is_err() {
                return;
            }
        }
        if kind == Kind::Startup && verdict == Some(true) {
            if let Some(s) = &started_tx {
                let _ = s.send(true);
            }
            return;
        }
        if kind != Kind::Readiness && verdict == Some(false) {
            // The worker restarts the container; this instance is done.
            return;
        }
        tokio::time::sleep(timing.period).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(v: serde_json::Value) -> Probe {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn defaults_and_liveness_success_threshold() {
        let t = Timing::of(
            &probe(serde_json::json!({"exec": {"command": ["true"]}})),
            Kind::Readiness,
        );
        assert_eq!(
            t,
            Timing {
                initial_delay: Duration::ZERO,
                period: Duration::from_secs(10),
                timeout: Duration::from_secs(1),
                success_threshold: 1,
                failure_threshold: 3
            }
        );
        let p = probe(
            serde_json::json!({"successThreshold": 3, "failureThreshold": 2, "periodSeconds": 2}),
        );
        assert_eq!(Timing::of(&p, Kind::Liveness).success_threshold, 1);
        assert_eq!(Timing::of(&p, Kind::Readiness).success_threshold, 3);
    }

    #[test]
    fn thresholds_turn_results_into_verdicts() {
        let t = Timing::of(
            &probe(serde_json::json!({"successThreshold": 2, "failureThreshold": 3})),
            Kind::Readiness,
        );
        let mut c = Counter::default();
        assert_eq!(c.record(true, &t), None);
        assert_eq!(c.record(true, &t), Some(true));
        assert_eq!(c.record(true, &t), None, "no change, no report");
        assert_eq!(c.record(false, &t), None);
        assert_eq!(c.record(false, &t), None);
        assert_eq!(c.record(true, &t), None, "a success resets the failures");
        for _ in 0..2 {
            assert_eq!(c.record(false, &t), None);
        }
        assert_eq!(c.record(false, &t), Some(false));
    }

    #[test]
    fn named_ports() {
        let c: Container = serde_json::from_value(
            serde_json::json!({"name": "web", "ports": [{"name": "http", "containerPort": 8080}]}),
        )
        .unwrap();
        assert_eq!(port(&c, &IntOrString::String("http".into())), Ok(8080));
        assert_eq!(port(&c, &IntOrString::Int(81)), Ok(81));
        assert!(
            port(&c, &IntOrString::String("grpc".into()))
                .unwrap_err()
                .contains("no port named")
        );
    }
}
