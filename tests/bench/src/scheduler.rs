//! `rudder-bench scheduler`: the scheduler of `rudder server`, measured
//! through the API as kube-scheduler's `scheduler_perf` does: simulated
//! nodes (Node objects, Ready, no kubelet), then pods created by parallel
//! clients while the scheduler runs; a watch records when each pod's
//! binding shows up.
//!
//! - throughput: pods / (last binding seen − first create sent);
//! - latency per pod: binding seen − create acknowledged (p50, p99, max);
//! - the creation rate, to show whether creating or scheduling was the
//!   limit.
//!
//! Comparator, in the same run and on the same server build: the same
//! pods bound by this benchmark itself, round-robin over the nodes as they
//! appear on its watch, with the server's controllers off: the API's own
//! ceiling for create + bind, with no scheduling decisions at all.

use std::{
    collections::HashMap,
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::{StreamExt as _, TryStreamExt as _, stream};
use k8s_openapi::api::core::v1::{Namespace, Node, Pod};
use kube::{
    Api, Client,
    api::{PostParams, WatchEvent, WatchParams},
};
use serde_json::json;

struct Opts {
    nodes: Vec<usize>,
    pods: usize,
    clients: usize,
}

/// The server process, killed (by pid) on drop.
struct ServerProc(Child);

impl Drop for ServerProc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_server(dir: &Path, controllers: bool) -> anyhow::Result<(ServerProc, std::path::PathBuf)> {
    let exe = std::env::current_exe()?;
    let rudder = exe.with_file_name("rudder");
    let kubeconfig = dir.join("admin.kubeconfig");
    let log = std::fs::File::create(dir.join("server.log"))?;
    let mut cmd = Command::new(&rudder);
    cmd.args([
        "server",
        "--listen",
        &format!("127.0.0.1:{}", rudder_test_harness::unused_port()),
        "--peer-listen",
        &format!("127.0.0.1:{}", rudder_test_harness::unused_port()),
        // The simulated nodes post no heartbeats: keep them Ready.
        "--node-monitor-grace-period",
        "86400",
    ])
    .arg("--data-dir")
    .arg(dir.join("data"))
    .arg("--pki-dir")
    .arg(dir.join("pki"))
    .arg("--admin-kubeconfig")
    .arg(&kubeconfig)
    .stdout(Stdio::null())
    .stderr(log);
    if !controllers {
        cmd.arg("--no-controllers");
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", rudder.display()))?;
    Ok((ServerProc(child), kubeconfig))
}

async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if kubeconfig.exists() {
            let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
            let cfg = kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?;
            let c = Client::try_from(cfg)?;
            let ns: Api<Namespace> = Api::all(c.clone());
            if ns.get_opt("default").await.ok().flatten().is_some() {
                return Ok(c);
            }
        }
        if Instant::now() > deadline {
            bail!("rudder server not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn node(i: usize, now: &str) -> Node {
    let name = format!("sim-{i:05}");
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": {
            "kubernetes.io/hostname": name, "kubernetes.io/os": "linux",
            "kubernetes.io/arch": "amd64",
            "topology.kubernetes.io/zone": format!("zone-{}", i % 3)}},
        "status": {
            "capacity": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "allocatable": {"cpu": "32", "memory": "128Gi", "pods": "110"},
            "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                "message": "simulated", "lastHeartbeatTime": now,
                "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        },
    }))
    .expect("a valid Node")
}

fn pod(i: usize) -> Pod {
    serde_json::from_value(json!({
        "metadata": {"name": format!("p-{i:05}"), "labels": {"app": "bench"}},
        "spec": {
            "automountServiceAccountToken": false,
            "containers": [{"name": "c", "image": "registry.invalid/pause:3.9",
                "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}}}],
        },
    }))
    .expect("a valid Pod")
}

async fn create_nodes(c: &Client, n: usize, clients: usize) -> anyhow::Result<()> {
    let api: Api<Node> = Api::all(c.clone());
    let now = jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    stream::iter(0..n)
        .map(|i| {
            let (api, now) = (api.clone(), now.clone());
            async move {
                api.create(&PostParams::default(), &node(i, &now))
                    .await
                    .map(drop)
                    .with_context(|| format!("creating node {i}"))
            }
        })
        .buffer_unordered(clients)
        .try_collect::<Vec<()>>()
        .await?;
    Ok(())
}

struct Outcome {
    scheduled: usize,
    seconds: f64,
    create_seconds: f64,
    /// The server's resident set once every pod was bound.
    server_rss_kib: Option<u64>,
    /// Sorted.
    latencies: Vec<Duration>,
}

impl Outcome {
    fn rss_mib(&self) -> Option<f64> {
        #[expect(clippy::cast_precision_loss, reason = "a size in KiB")]
        self.server_rss_kib.map(|k| k as f64 / 1024.0)
    }

    fn pct(&self, q: f64) -> String {
        if self.latencies.is_empty() {
            return "-".into();
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a short vector"
        )]
        let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len());
        format!("{:.0} ms", self.latencies[i - 1].as_secs_f64() * 1000.0)
    }
}

/// Creates the pods and waits for every binding. With `self_bind`, this
/// benchmark binds each pod it sees, round-robin over `nodes`.
async fn run_pods(
    c: &Client,
    opts: &Opts,
    nodes: usize,
    self_bind: bool,
) -> anyhow::Result<Outcome> {
    let api: Api<Pod> = Api::namespaced(c.clone(), "default");
    let created: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let bound: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    // The watch, from now.
    let rv = crate::resource_version(&api).await?;
    let watch_api = api.clone();
    let (b2, total) = (bound.clone(), opts.pods);
    let binder_api = api.clone();
    let watcher = tokio::spawn(async move {
        let mut rv = rv;
        let (tx, rx) = tokio::sync::mpsc::channel::<String>(100_000);
        let binder = self_bind.then(|| {
            let api = binder_api.clone();
            tokio::spawn(async move {
                tokio_stream_bind(api, rx, nodes).await;
            })
        });
        while b2.lock().unwrap().len() < total {
            let mut s = match watch_api
                .watch(&WatchParams::default().timeout(290), &rv)
                .await
            {
                Ok(s) => s.boxed(),
                Err(e) => {
                    eprintln!("watch failed: {e}; retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    continue;
                }
            };
            while let Some(ev) = s.next().await {
                let p = match ev {
                    Ok(WatchEvent::Added(p) | WatchEvent::Modified(p)) => p,
                    Ok(WatchEvent::Bookmark(b)) => {
                        rv = b.metadata.resource_version;
                        continue;
                    }
                    Ok(_) => continue,
                    Err(e) => {
                        eprintln!("watch stream error: {e}");
                        break;
                    }
                };
                if let Some(v) = &p.metadata.resource_version {
                    rv.clone_from(v);
                }
                let name = p.metadata.name.clone().unwrap_or_default();
                if p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some() {
                    let mut b = b2.lock().unwrap();
                    b.entry(name).or_insert_with(Instant::now);
                    if b.len() >= total {
                        break;
                    }
                } else if self_bind {
                    let _ = tx.send(name).await;
                }
            }
        }
        drop(tx);
        if let Some(b) = binder {
            b.abort();
        }
    });
    let start = Instant::now();
    let c2 = created.clone();
    let failures = stream::iter(0..opts.pods)
        .map(|i| {
            let (api, created) = (api.clone(), c2.clone());
            async move {
                let p = pod(i);
                let name = p.metadata.name.clone().unwrap_or_default();
                let r = api.create(&PostParams::default(), &p).await;
                created.lock().unwrap().insert(name, Instant::now());
                r.is_err()
            }
        })
        .buffer_unordered(opts.clients)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let create_seconds = start.elapsed().as_secs_f64();
    if failures > 0 {
        bail!("{failures} pod creates failed");
    }
    let deadline = Instant::now() + Duration::from_secs(900);
    while bound.lock().unwrap().len() < opts.pods {
        if Instant::now() > deadline {
            watcher.abort();
            bail!(
                "only {} of {} pods were bound within 15 minutes",
                bound.lock().unwrap().len(),
                opts.pods
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = watcher.await;
    let bound = bound.lock().unwrap().clone();
    let created = created.lock().unwrap().clone();
    let last = bound.values().max().copied().unwrap_or(start);
    let mut latencies: Vec<Duration> = bound
        .iter()
        .filter_map(|(n, b)| Some(b.saturating_duration_since(*created.get(n)?)))
        .collect();
    latencies.sort();
    Ok(Outcome {
        scheduled: bound.len(),
        seconds: (last - start).as_secs_f64(),
        create_seconds,
        latencies,
        server_rss_kib: None,
    })
}

/// The comparator's binder: `pods/binding` for each pod name received,
/// round-robin over the nodes, 32 at a time.
async fn tokio_stream_bind(api: Api<Pod>, rx: tokio::sync::mpsc::Receiver<String>, nodes: usize) {
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let s = stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) });
    s.map(|name| {
        let (api, n) = (api.clone(), n.clone());
        async move {
            let i = n.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % nodes;
            let binding = json!({"apiVersion": "v1", "kind": "Binding",
                "metadata": {"name": name},
                "target": {"apiVersion": "v1", "kind": "Node", "name": format!("sim-{i:05}")}});
            let _ = api
                .create_subresource::<serde_json::Value, serde_json::Value>(
                    "binding",
                    &name,
                    &PostParams::default(),
                    &binding,
                )
                .await;
        }
    })
    .buffer_unordered(32)
    .for_each(|()| async {})
    .await;
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut opts = Opts {
        nodes: vec![1_000, 5_000],
        pods: 10_000,
        clients: 32,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--nodes" => {
                opts.nodes = v
                    .split(',')
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .context("--nodes: a comma-separated list of node counts")?;
            }
            "--pods" => opts.pods = v.parse()?,
            "--clients" => opts.clients = v.parse()?,
            other => bail!("unknown option {other}; there is --nodes, --pods, --clients"),
        }
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run_all(&opts))
}

async fn run_all(opts: &Opts) -> anyhow::Result<()> {
    println!("{}", crate::hardware());
    println!(
        "{} pods (100m CPU, 128Mi each, no affinity) created by {} parallel clients while the \
         scheduler runs, on simulated nodes (32 CPU, 128Gi, 110 pods, 3 zones); server and \
         clients on this machine, one `rudder server` (embedded store) per row. Throughput: \
         pods / (last binding seen on a watch - first create sent); latency: binding seen - \
         create acknowledged.\n",
        opts.pods, opts.clients
    );
    let mut rows = Vec::new();
    for &n in &opts.nodes {
        for (what, controllers) in [
            ("rudder scheduler", true),
            ("API ceiling: round-robin binds, no scheduler", false),
        ] {
            eprintln!("==> {n} nodes: {what}");
            let dir = std::env::temp_dir().join(format!(
                "rudder-bench-sched-{n}-{controllers}-{}",
                std::process::id()
            ));
            let _ = std::fs::remove_dir_all(&dir);
            std::fs::create_dir_all(&dir)?;
            let (server, kc) = start_server(&dir, controllers)?;
            let result = async {
                let c = client(&kc).await?;
                let t = Instant::now();
                create_nodes(&c, n, opts.clients).await?;
                eprintln!(
                    "    {n} nodes created in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
                // Let the scheduler's cache list them.
                tokio::time::sleep(Duration::from_secs(2)).await;
                let mut o = run_pods(&c, opts, n, !controllers).await?;
                o.server_rss_kib = crate::rss_kib(server.0.id()).ok();
                anyhow::Ok(o)
            }
            .await;
            drop(server);
            match &result {
                Ok(_) => {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                Err(e) => eprintln!("    failed: {e:#} (server log in {})", dir.display()),
            }
            rows.push((n, what, result));
        }
    }
    println!(
        "{:>6}  {:<46} {:>10} {:>9} {:>9} {:>9} {:>11} {:>11}",
        "nodes", "what", "pods/s", "p50", "p99", "max", "creates/s", "server RSS"
    );
    for (n, what, r) in &rows {
        match r {
            Ok(o) => {
                #[expect(clippy::cast_precision_loss, reason = "pod counts are small")]
                let (rate, creates) = (
                    o.scheduled as f64 / o.seconds,
                    o.scheduled as f64 / o.create_seconds,
                );
                let max = o.latencies.last().map_or("-".into(), |d| {
                    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
                });
                println!(
                    "{n:>6}  {what:<46} {rate:>10.0} {:>9} {:>9} {max:>9} {creates:>11.0} {:>11}",
                    o.pct(0.5),
                    o.pct(0.99),
                    o.rss_mib().map_or("-".into(), |m| format!("{m:.0} MiB")),
                );
            }
            Err(e) => println!("{n:>6}  {what:<46} failed: {e:#}"),
        }
    }
    for (n, what, r) in &rows {
        if let Ok(o) = r {
            let key = if what.starts_with("rudder") {
                "scheduler"
            } else {
                "api_ceiling"
            };
            #[expect(clippy::cast_precision_loss, reason = "pod counts are small")]
            let rate = o.scheduled as f64 / o.seconds;
            crate::figure(&format!("{key}_{n}_pods_per_s"), format!("{rate:.0}"));
            crate::figure(
                &format!("{key}_{n}_p99_ms"),
                o.pct(0.99).trim_end_matches(" ms"),
            );
            if let Some(m) = o.rss_mib() {
                crate::figure(&format!("{key}_{n}_server_rss_mib"), format!("{m:.0}"));
            }
        }
    }
    println!(
        "\nReference (not measured here): kube-scheduler's scheduler_perf, SchedulingBasic at \
         5,000 nodes, must sustain 680 pods/s with 10,000 pods and 810 with 50,000 \
         (k/k test/integration/scheduler_perf/misc/performance-config.yaml: the lowest average \
         of 250 CI runs, in-process apiserver and etcd on Kubernetes' CI machines, whose size \
         the source does not state)."
    );
    Ok(())
}
