//! Simulated nodes for control-plane tests: a stand-in kubelet that
//! registers Node objects, renews their Leases, marks the pods bound to
//! them Running and Ready (or Failed / Succeeded as the pod's
//! `sim.rudder.dev/outcomes` annotation says: the n-th pod of an owner
//! gets the n-th outcome; Job pods succeed by default), honours `sim.rudder.dev/ready: "false"`, and
//! finishes the deletion of terminating pods. A node removed from the set
//! stops all of that, like a node that lost power.
//!
//! The nodes also serve a kubelet's `/metrics/resource` (HTTPS, on one
//! loopback port they all advertise), with the CPU of each running pod
//! growing at the rate the test sets by label ([`Sim::set_cpu`]), so the
//! apiserver's resource metrics API and the HPA see real-looking usage.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use k8s_openapi::api::{
    coordination::v1::Lease,
    core::v1::{Node, Pod},
};
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, Patch, PatchParams, PostParams},
};
use rudder_test_harness::TempDir;
use serde_json::{Value, json};

use super::kube::{Kubectl, Server, newest};

pub(crate) const OUTCOMES: &str = "sim.rudder.dev/outcomes";
pub(crate) const READY: &str = "sim.rudder.dev/ready";

pub(crate) struct Sim {
    stop: Arc<AtomicBool>,
    nodes: Arc<Mutex<BTreeSet<String>>>,
    usage: Arc<Mutex<UsageModel>>,
    thread: Option<JoinHandle<()>>,
}

/// The running pods' CPU, integrated over time.
#[derive(Default)]
struct UsageModel {
    /// (label key, value) → millicores per pod.
    rates: Vec<((String, String), u64)>,
    /// (namespace, pod) → (labels, container, cumulative seconds, since).
    pods: HashMap<(String, String), PodUsage>,
}

struct PodUsage {
    labels: BTreeMap<String, String>,
    container: String,
    seconds: f64,
    since: Instant,
}

impl UsageModel {
    fn rate_of(&self, labels: &BTreeMap<String, String>) -> u64 {
        self.rates
            .iter()
            .rev()
            .find(|((k, v), _)| labels.get(k) == Some(v))
            .map_or(0, |(_, r)| *r)
    }

    /// Brings every pod's counter up to now at its current rate.
    fn integrate(&mut self) {
        let rates: Vec<u64> = self
            .pods
            .values()
            .map(|p| self.rate_of(&p.labels))
            .collect();
        for (p, rate) in self.pods.values_mut().zip(rates) {
            let now = Instant::now();
            p.seconds += (now - p.since).as_secs_f64() * rate as f64 / 1000.0;
            p.since = now;
        }
    }

    fn render(&mut self) -> String {
        self.integrate();
        let ts = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis();
        let total: f64 = self.pods.values().map(|p| p.seconds).sum();
        let mut out = format!(
            "# TYPE node_cpu_usage_seconds_total counter\nnode_cpu_usage_seconds_total {total} {ts}\n\
             node_memory_working_set_bytes 1073741824 {ts}\n"
        );
        for ((ns, pod), p) in &self.pods {
            let l = format!(
                "container=\"{}\",namespace=\"{ns}\",pod=\"{pod}\"",
                p.container
            );
            out.push_str(&format!(
                "container_cpu_usage_seconds_total{{{l}}} {} {ts}\n\
                 container_memory_working_set_bytes{{{l}}} 16777216 {ts}\n",
                p.seconds
            ));
        }
        out
    }
}

/// Serves `/metrics/resource` (any path) over TLS with a kubelet serving
/// certificate of the cluster CA (in `pki`), as the apiserver requires of
/// kubelets: a `system:node:` subject and the address it dials.
async fn serve_metrics(
    listener: tokio::net::TcpListener,
    usage: Arc<Mutex<UsageModel>>,
    pki: PathBuf,
) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let ca_key =
        rcgen::KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(
        &std::fs::read_to_string(pki.join("ca.crt")).unwrap(),
        ca_key,
    )
    .unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "system:node:simulated");
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    let cert = params.signed_by(&key, &issuer).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    while let Ok((tcp, _)) = listener.accept().await {
        let (acceptor, usage) = (acceptor.clone(), usage.clone());
        tokio::spawn(async move {
            let Ok(mut tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                match tls.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let body = usage.lock().unwrap().render();
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(resp.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
    }
}

/// Seconds the test moved the controllers' clock (the same file the
/// server reads).
pub(crate) fn offset(clock: &Path) -> i64 {
    std::fs::read_to_string(clock)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

pub(crate) async fn client(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    Client::try_from(cfg).unwrap()
}

impl Sim {
    pub(crate) fn start(kubeconfig: &Path, clock: &Path, nodes: &[&str]) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let set: Arc<Mutex<BTreeSet<String>>> =
            Arc::new(Mutex::new(nodes.iter().map(|n| (*n).to_owned()).collect()));
        let (kc, clock) = (kubeconfig.to_owned(), clock.to_owned());
        let (s2, n2) = (stop.clone(), set.clone());
        let usage: Arc<Mutex<UsageModel>> = Arc::default();
        let u2 = usage.clone();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let port = listener.local_addr().unwrap().port();
                let pki = kc.parent().expect("the kubeconfig's folder").join("pki");
                let server = tokio::spawn(serve_metrics(listener, u2.clone(), pki));
                run(kc, clock, n2, s2, port, u2).await;
                server.abort();
            });
        });
        Self {
            stop,
            nodes: set,
            usage,
            thread: Some(thread),
        }
    }

    /// From now on, every running pod labelled `key=value` uses this many
    /// millicores (the last setting that matches a pod wins).
    pub(crate) fn set_cpu(&self, key: &str, value: &str, millicores: u64) {
        let mut u = self.usage.lock().unwrap();
        u.integrate();
        u.rates
            .push(((key.to_owned(), value.to_owned()), millicores));
    }

    pub(crate) fn add(&self, node: &str) {
        self.nodes.lock().unwrap().insert(node.to_owned());
    }

    /// The node stops: no more heartbeats, no more pod updates.
    pub(crate) fn kill(&self, node: &str) {
        self.nodes.lock().unwrap().remove(node);
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn stamp(offset: i64, micro: bool) -> String {
    let t = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(offset);
    if micro {
        t.strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string()
    } else {
        t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string()
    }
}

async fn run(
    kubeconfig: PathBuf,
    clock: PathBuf,
    nodes: Arc<Mutex<BTreeSet<String>>>,
    stop: Arc<AtomicBool>,
    kubelet_port: u16,
    usage: Arc<Mutex<UsageModel>>,
) {
    let client = client(&kubeconfig).await;
    let node_api: Api<Node> = Api::all(client.clone());
    let lease_api: Api<Lease> = Api::namespaced(client.clone(), "kube-node-lease");
    let pod_api: Api<Pod> = Api::all(client.clone());
    let mut seen: HashMap<String, Vec<String>> = HashMap::new();
    let mut ips: HashMap<String, String> = HashMap::new();
    let mut next_ip = 2u32;
    while !stop.load(Ordering::Relaxed) {
        let off = offset(&clock);
        let alive: BTreeSet<String> = nodes.lock().unwrap().clone();
        for name in &alive {
            heartbeat(&node_api, &lease_api, name, off, kubelet_port).await;
        }
        if let Ok(pods) = pod_api.list(&ListParams::default()).await {
            {
                // The usage model follows the running pods of live nodes.
                let mut u = usage.lock().unwrap();
                u.integrate();
                let running: HashMap<(String, String), (BTreeMap<String, String>, String)> = pods
                    .items
                    .iter()
                    .filter(|p| {
                        p.spec
                            .as_ref()
                            .and_then(|s| s.node_name.as_ref())
                            .is_some_and(|n| alive.contains(n))
                            && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                            && p.metadata.deletion_timestamp.is_none()
                    })
                    .map(|p| {
                        (
                            (
                                p.metadata.namespace.clone().unwrap_or_default(),
                                p.metadata.name.clone().unwrap_or_default(),
                            ),
                            (
                                p.metadata.labels.clone().unwrap_or_default(),
                                p.spec
                                    .as_ref()
                                    .and_then(|s| s.containers.first())
                                    .map(|c| c.name.clone())
                                    .unwrap_or_default(),
                            ),
                        )
                    })
                    .collect();
                u.pods.retain(|k, _| running.contains_key(k));
                for (k, (labels, container)) in running {
                    u.pods.entry(k).or_insert_with(|| PodUsage {
                        labels,
                        container,
                        seconds: 0.0,
                        since: Instant::now(),
                    });
                }
            }
            for p in pods {
                let Some(node) = p.spec.as_ref().and_then(|s| s.node_name.clone()) else {
                    continue;
                };
                if !alive.contains(&node) {
                    continue;
                }
                let ns = p.metadata.namespace.clone().unwrap_or_default();
                let name = p.metadata.name.clone().unwrap_or_default();
                let uid = p.metadata.uid.clone().unwrap_or_default();
                let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
                if p.metadata.deletion_timestamp.is_some() {
                    let _ = api
                        .delete(&name, &DeleteParams::default().grace_period(0))
                        .await;
                    continue;
                }
                let ann = p.metadata.annotations.clone().unwrap_or_default();
                let owner = p
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .next()
                    .map(|o| o.uid.clone())
                    .unwrap_or_default();
                let order = seen.entry(owner).or_default();
                if !order.contains(&uid) {
                    order.push(uid.clone());
                }
                let index = order.iter().position(|u| *u == uid).unwrap_or(0);
                let job_pod = p
                    .metadata
                    .owner_references
                    .iter()
                    .flatten()
                    .any(|o| o.kind == "Job");
                // Job pods run to completion unless told otherwise.
                let phase = ann
                    .get(OUTCOMES)
                    .map(|o| {
                        let list: Vec<&str> = o.split(',').collect();
                        list[index.min(list.len() - 1)].trim().to_owned()
                    })
                    .unwrap_or_else(|| if job_pod { "Succeeded" } else { "Running" }.into());
                let ready =
                    phase == "Running" && ann.get(READY).map(String::as_str) != Some("false");
                let cur = p.status.clone().unwrap_or_default();
                let cur_ready = cur
                    .conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_ == "Ready" && c.status == "True");
                if cur.phase.as_deref() == Some(phase.as_str()) && cur_ready == ready {
                    continue;
                }
                if matches!(cur.phase.as_deref(), Some("Succeeded" | "Failed")) {
                    continue;
                }
                let ip = ips
                    .entry(uid)
                    .or_insert_with(|| {
                        next_ip += 1;
                        format!("10.244.{}.{}", next_ip / 250, next_ip % 250 + 2)
                    })
                    .clone();
                let t = stamp(off, false);
                let b = if ready { "True" } else { "False" };
                let state = if phase == "Running" {
                    json!({"running": {"startedAt": t}})
                } else {
                    let code = i32::from(phase == "Failed");
                    json!({"terminated": {"exitCode": code, "startedAt": t, "finishedAt": t,
                        "reason": if code == 0 { "Completed" } else { "Error" }}})
                };
                let containers: Vec<_> = p
                    .spec
                    .iter()
                    .flat_map(|s| &s.containers)
                    .map(|c| json!({"name": c.name, "image": c.image, "imageID": "", "ready": ready,
                                    "restartCount": 0, "started": phase == "Running", "state": state}))
                    .collect();
                let status = json!({"status": {
                    "phase": phase, "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "192.0.2.1",
                    "startTime": t,
                    "conditions": [
                        {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
                        {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                        {"type": "ContainersReady", "status": b, "lastTransitionTime": t},
                        {"type": "Ready", "status": b, "lastTransitionTime": t},
                    ],
                    "containerStatuses": containers,
                }});
                let _ = api
                    .patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn heartbeat(
    node_api: &Api<Node>,
    lease_api: &Api<Lease>,
    name: &str,
    off: i64,
    kubelet_port: u16,
) {
    let t = stamp(off, false);
    let ready = json!({"type": "Ready", "status": "True", "reason": "KubeletReady",
        "message": "simulated kubelet is posting ready status", "lastHeartbeatTime": t,
        "lastTransitionTime": t});
    match node_api.get_opt(name).await {
        Ok(None) => {
            let node: Node = serde_json::from_value(json!({
                "metadata": {"name": name, "labels": {
                    "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": "amd64"}},
                "status": {
                    "capacity": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "allocatable": {"cpu": "4", "memory": "8Gi", "pods": "110"},
                    "conditions": [ready],
                    "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                  {"type": "Hostname", "address": name}],
                    "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
                },
            }))
            .unwrap();
            let _ = node_api.create(&PostParams::default(), &node).await;
        }
        Ok(Some(n)) => {
            let is_ready = n
                .status
                .iter()
                .flat_map(|s| s.conditions.iter().flatten())
                .any(|c| c.type_ == "Ready" && c.status == "True");
            if !is_ready {
                let _ = node_api
                    .patch_status(
                        name,
                        &PatchParams::default(),
                        &Patch::Merge(&json!({"status": {"conditions": [ready]}})),
                    )
                    .await;
            }
        }
        Err(_) => return,
    }
    let renew = json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name, "namespace": "kube-node-lease"},
        "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": stamp(off, true)}});
    let exists = matches!(lease_api.get_opt(name).await, Ok(Some(_)));
    if exists {
        let _ = lease_api
            .patch(name, &PatchParams::default(), &Patch::Merge(&renew))
            .await;
    } else if let Ok(l) = serde_json::from_value::<Lease>(renew) {
        let _ = lease_api.create(&PostParams::default(), &l).await;
    }
}

/// A `rudder server` (with its test clock) and simulated nodes.
pub(crate) struct Cluster {
    pub(crate) server: Server,
    pub(crate) clock: PathBuf,
    pub(crate) sim: Sim,
}

impl Cluster {
    pub(crate) fn start(nodes: &[&str]) -> Self {
        Self::start_with(nodes, &[])
    }

    pub(crate) fn start_with(nodes: &[&str], server_args: &[&str]) -> Self {
        let dir = TempDir::new();
        let clock = dir.path().join("clock-offset");
        std::fs::write(&clock, "0").unwrap();
        let clock_arg = clock.to_str().unwrap().to_owned();
        let mut args = vec!["--test-clock-offset-file", &clock_arg];
        args.extend_from_slice(server_args);
        let server = Server::start_in(dir, &args);
        let sim = Sim::start(&server.kubeconfig(), &clock, nodes);
        let c = Self { server, clock, sim };
        let k = c.kubectl();
        wait(&format!("{} Ready nodes", nodes.len()), 60, || {
            let out = k.ok(&["get", "nodes", "--no-headers"]);
            (out.lines().filter(|l| l.contains(" Ready ")).count() == nodes.len()).then_some(())
        });
        c
    }

    pub(crate) fn kubectl(&self) -> Kubectl<'_> {
        Kubectl {
            bin: newest(),
            server: &self.server,
        }
    }

    /// Moves the controllers' (and the simulated kubelets') clock forward.
    pub(crate) fn advance(&self, secs: i64) {
        let cur = offset(&self.clock);
        std::fs::write(&self.clock, (cur + secs).to_string()).unwrap();
    }

    pub(crate) fn json(&self, args: &[&str]) -> Value {
        let mut a = args.to_vec();
        a.extend(["-o", "json"]);
        serde_json::from_str(&self.kubectl().ok(&a)).unwrap()
    }

    /// Live pods (not terminating) matching a label selector: name → node.
    pub(crate) fn pods(&self, selector: &str) -> BTreeMap<String, Value> {
        self.json(&["get", "pods", "-l", selector])["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
            .map(|p| {
                (
                    p["metadata"]["name"].as_str().unwrap().to_owned(),
                    p.clone(),
                )
            })
            .collect()
    }
}

#[track_caller]
pub(crate) fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(crate) fn node_of(p: &Value) -> String {
    p["spec"]["nodeName"].as_str().unwrap_or("").to_owned()
}

pub(crate) fn running(pods: &BTreeMap<String, Value>) -> usize {
    pods.values()
        .filter(|p| p["status"]["phase"] == "Running")
        .count()
}
