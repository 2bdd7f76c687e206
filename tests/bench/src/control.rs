//! `rudder-bench control`: the control plane's store and API under the same
//! client load, measured in one run:
//! - store writes (creates of fresh keys) on the embedded Raft store with 1
//!   and 3 members and on etcd 3.4 with 1 and 3 members (Debian's
//!   `etcd-server`, through the same [`Store`] trait on its gRPC API);
//! - ConfigMap creates through the Kubernetes API (`rudder server`, HTTPS,
//!   a kube-rs client) on the embedded store and on etcd, with the CPU time
//!   the server spent per create (from `/proc/<pid>/stat`): the cost of one
//!   request, which the rate alone hides since the clients share the cores;
//! - the resident memory of a fresh `rudder server` (embedded store) at rest
//!   holding 1,000 ConfigMaps beside the built-in objects;
//! - watch fan-out: 1,000 watchers of ConfigMaps, each with its own
//!   connection, and how long each change takes to reach every one.
//!
//! Every member, server and etcd runs on this machine on loopback, data in
//! temporary directories on the same disk, and is stopped at the end.
//!
//! `--only store,api,idle,watch` runs some of the parts (to profile one).

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{ObjectMeta, PostParams},
};
use rudder_store::{
    Store,
    etcd::{EtcdConfig, EtcdStore},
    raft::{RaftConfig, RaftStore},
};

struct Opts {
    seconds: u64,
    clients: usize,
    value_bytes: usize,
    /// The parts to run (`--only`): store, api, idle, watch.
    only: Vec<String>,
}

impl Opts {
    fn runs(&self, part: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|p| p == part)
    }
}

/// The parts `--only` can name.
const PARTS: &[&str] = &["store", "api", "idle", "watch"];

fn free_port() -> u16 {
    rudder_test_harness::unused_port()
}

/// Processes this benchmark started, killed (by pid) on drop.
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn tempdir(name: &str) -> anyhow::Result<PathBuf> {
    let d = std::env::temp_dir().join(format!("rudder-bench-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d)?;
    Ok(d)
}

/// An etcd cluster of `n` members on loopback; returns the client URLs.
fn start_etcd(n: usize, dir: &Path, procs: &mut Procs) -> anyhow::Result<Vec<String>> {
    let ports: Vec<(u16, u16)> = (0..n).map(|_| (free_port(), free_port())).collect();
    let cluster = ports
        .iter()
        .enumerate()
        .map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}"))
        .collect::<Vec<_>>()
        .join(",");
    let mut urls = Vec::new();
    for (i, (c, p)) in ports.iter().enumerate() {
        let client = format!("http://127.0.0.1:{c}");
        let peer = format!("http://127.0.0.1:{p}");
        let child = Command::new("etcd")
            .args(["--name", &format!("e{i}")])
            .arg("--data-dir")
            .arg(dir.join(format!("e{i}")))
            .args([
                "--listen-client-urls",
                &client,
                "--advertise-client-urls",
                &client,
            ])
            .args([
                "--listen-peer-urls",
                &peer,
                "--initial-advertise-peer-urls",
                &peer,
            ])
            .args([
                "--initial-cluster",
                &cluster,
                "--initial-cluster-state",
                "new",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting etcd (Debian's etcd-server; `cargo xtask setup` installs it)")?;
        procs.0.push(child);
        urls.push(client);
    }
    Ok(urls)
}

async fn wait_store(store: &dyn Store) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.current_revision().await.is_err() {
        if Instant::now() > deadline {
            bail!("the store did not answer within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

async fn raft_members(n: usize, dir: &Path) -> anyhow::Result<Vec<Arc<RaftStore>>> {
    let ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
    let members: BTreeMap<u64, String> = ports
        .iter()
        .zip(1u64..)
        .map(|(p, id)| (id, format!("127.0.0.1:{p}")))
        .collect();
    let mut stores = Vec::new();
    for (p, id) in ports.iter().zip(1u64..) {
        let mut cfg = RaftConfig::single(
            dir.join(format!("m{id}")),
            format!("127.0.0.1:{p}").parse()?,
        );
        cfg.id = id;
        cfg.initial_members = members.clone();
        stores.push(Arc::new(RaftStore::open(cfg).await?));
    }
    for s in &stores {
        s.wait_ready(Duration::from_secs(30)).await?;
    }
    Ok(stores)
}

/// What one load run measured.
struct Measured {
    ops: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<Duration>,
    /// The server's CPU time per operation (API rows), in microseconds.
    server_cpu_us: Option<f64>,
}

impl Measured {
    /// The latency at quantile `p`.
    fn at(&self, p: f64) -> Option<Duration> {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index"
        )]
        let i = ((self.latencies.len().checked_sub(1)?) as f64 * p).round() as usize;
        Some(self.latencies[i])
    }

    fn pct(&self, p: f64) -> String {
        self.at(p).map_or("-".into(), fmt_ms)
    }

    fn p99_ms(&self) -> String {
        self.at(0.99)
            .map_or("-".into(), |d| format!("{:.2}", d.as_secs_f64() * 1000.0))
    }

    fn rate(&self) -> String {
        #[expect(clippy::cast_precision_loss, reason = "a rate")]
        let r = self.ops as f64 / self.seconds;
        format!("{r:.0}")
    }
}

fn fmt_ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// `clients` tasks, each issuing `op(i)` back to back for `seconds`.
async fn load<F, Fut>(opts: &Opts, op: F) -> Measured
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let op = Arc::new(op);
    let until = Instant::now() + Duration::from_secs(opts.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..opts.clients {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors, mut n) = (Vec::new(), 0usize, 0u64);
            while Instant::now() < until {
                n += 1;
                let t = Instant::now();
                if op(c, n).await {
                    lat.push(t.elapsed());
                } else {
                    errors += 1;
                }
            }
            (lat, errors)
        }));
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            latencies.extend(l);
            errors += e;
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    latencies.sort();
    Measured {
        ops: latencies.len(),
        errors,
        seconds,
        latencies,
        server_cpu_us: None,
    }
}

async fn store_load(store: Arc<dyn Store>, opts: &Opts, tag: &str) -> Measured {
    let value = vec![b'x'; opts.value_bytes];
    let tag = tag.to_owned();
    load(opts, move |c, n| {
        let store = store.clone();
        let value = value.clone();
        let key = format!("/bench/{tag}/{c}/{n}");
        async move { store.create(key, value).await.is_ok() }
    })
    .await
}

/// `rudder server` on loopback; returns its admin kubeconfig and pid.
fn start_server(
    dir: &Path,
    etcd: Option<&str>,
    procs: &mut Procs,
) -> anyhow::Result<(PathBuf, u32)> {
    let exe = std::env::current_exe()?;
    let rudder = exe.with_file_name("rudder");
    let kubeconfig = dir.join("admin.kubeconfig");
    let mut cmd = Command::new(&rudder);
    cmd.args(["server", "--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--peer-listen", &format!("127.0.0.1:{}", free_port())])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--pki-dir")
        .arg(dir.join("pki"))
        .arg("--admin-kubeconfig")
        .arg(&kubeconfig)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(e) = etcd {
        cmd.args(["--etcd-servers", e]);
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("starting {}", rudder.display()))?;
    let pid = child.id();
    procs.0.push(child);
    Ok((kubeconfig, pid))
}

async fn api_client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if kubeconfig.exists() {
            let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
            let cfg = kube::Config::from_custom_kubeconfig(
                kc,
                &kube::config::KubeConfigOptions::default(),
            )
            .await?;
            let client = Client::try_from(cfg)?;
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
            if api
                .list(&kube::api::ListParams::default().limit(1))
                .await
                .is_ok()
            {
                return Ok(client);
            }
        }
        if Instant::now() > deadline {
            bail!("rudder server not ready within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Creates through `client`, and the CPU time the server (`server`, a
/// pid) spent per create meanwhile.
async fn api_load(client: Client, server: u32, opts: &Opts) -> Measured {
    let data = "x".repeat(opts.value_bytes);
    let cpu_before = crate::cpu_seconds(server).ok();
    let mut m = load(opts, move |c, n| {
        let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(format!("bench-{c}-{n}")),
                ..ObjectMeta::default()
            },
            data: Some(BTreeMap::from([("v".to_owned(), data.clone())])),
            ..ConfigMap::default()
        };
        async move { api.create(&PostParams::default(), &cm).await.is_ok() }
    })
    .await;
    if let (Some(before), Ok(after)) = (cpu_before, crate::cpu_seconds(server))
        && m.ops > 0
    {
        #[expect(clippy::cast_precision_loss, reason = "a count")]
        let per = (after - before) * 1e6 / m.ops as f64;
        m.server_cpu_us = Some(per);
    }
    m
}

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut opts = Opts {
        seconds: 5,
        clients: 16,
        value_bytes: 1024,
        only: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().with_context(|| format!("{a} needs a value"))?;
        match a.as_str() {
            "--seconds" => opts.seconds = v.parse()?,
            "--clients" => opts.clients = v.parse()?,
            "--value-bytes" => opts.value_bytes = v.parse()?,
            "--only" => {
                opts.only = v.split(',').map(str::to_owned).collect();
                if let Some(p) = opts.only.iter().find(|p| !PARTS.contains(&p.as_str())) {
                    bail!("--only: unknown part {p}; there is {}", PARTS.join(", "));
                }
            }
            other => bail!(
                "unknown option {other}; there is --seconds, --clients, --value-bytes, --only"
            ),
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
        "{} concurrent clients, back to back, {} s per row; store rows: creates of fresh keys with {}-byte values; \
         API rows: ConfigMap creates ({}-byte data) over HTTPS with kube-rs. Clients talk to member 1 \
         (which forwards to the leader when it is not the leader); all members on loopback, one disk.\n",
        opts.clients, opts.seconds, opts.value_bytes, opts.value_bytes
    );
    let mut rows: Vec<(String, &str, Measured)> = Vec::new();

    let store_members: &[usize] = if opts.runs("store") { &[1, 3] } else { &[] };
    for &n in store_members {
        eprintln!("==> Raft store, {n} member(s)");
        let dir = tempdir(&format!("raft{n}"))?;
        let stores = raft_members(n, &dir).await?;
        let s: Arc<dyn Store> = stores[0].clone();
        rows.push((
            format!(
                "store: Rudder Raft (redb), {n} member{}",
                if n > 1 { "s" } else { "" }
            ),
            if n == 1 {
                "store_raft_1"
            } else {
                "store_raft_3"
            },
            store_load(s, opts, "raft").await,
        ));
        for s in stores {
            s.shutdown().await;
        }
        let _ = std::fs::remove_dir_all(&dir);

        eprintln!("==> etcd, {n} member(s)");
        let dir = tempdir(&format!("etcd{n}"))?;
        let mut etcd_procs = Procs(Vec::new());
        let urls = start_etcd(n, &dir, &mut etcd_procs)?;
        let store = EtcdStore::connect(&EtcdConfig {
            endpoints: vec![urls[0].clone()],
            ..EtcdConfig::default()
        })
        .await?;
        wait_store(&store).await?;
        rows.push((
            format!(
                "store: etcd 3.4, {n} member{}",
                if n > 1 { "s" } else { "" }
            ),
            if n == 1 {
                "store_etcd_1"
            } else {
                "store_etcd_3"
            },
            store_load(Arc::new(store), opts, "etcd").await,
        ));
        drop(etcd_procs);
        let _ = std::fs::remove_dir_all(&dir);
    }

    if opts.runs("api") {
        api_rows(opts, &mut rows).await?;
    }
    let idle_rss_mib = if opts.runs("idle") {
        eprintln!("==> rudder server at rest with 1,000 ConfigMaps");
        Some(idle_rss(opts).await?)
    } else {
        None
    };
    let fanout = if opts.runs("watch") {
        eprintln!("==> {WATCHERS} watchers, {CHANGES} changes");
        Some(watch_fanout().await?)
    } else {
        None
    };

    println!(
        "{:<55} {:>9} {:>10} {:>10} {:>10} {:>7} {:>12}",
        "what", "ops/s", "p50", "p99", "max", "errors", "server CPU"
    );
    for (name, _, m) in &rows {
        let max = m.latencies.last().map_or("-".into(), |d| fmt_ms(*d));
        let cpu = m
            .server_cpu_us
            .map_or("-".into(), |us| format!("{us:.0} µs/op"));
        println!(
            "{name:<55} {:>9} {:>10} {:>10} {:>10} {:>7} {cpu:>12}",
            m.rate(),
            m.pct(0.50),
            m.pct(0.99),
            max,
            m.errors
        );
    }
    if let Some(rss) = idle_rss_mib {
        println!("\nrudder server at rest with 1,000 ConfigMaps: {rss:.1} MiB resident");
    }
    if let Some(fanout) = &fanout {
        println!(
            "{WATCHERS} watchers of ConfigMaps, {CHANGES} creates 20 ms apart, create sent -> \
             event received by each watcher: p50 {}, p99 {}, max {}; {} of {} events missing",
            fanout.pct(0.5),
            fanout.pct(0.99),
            fanout.latencies.last().map_or("-".into(), |d| fmt_ms(*d)),
            fanout.errors,
            WATCHERS * CHANGES
        );
    }
    for (_, key, m) in &rows {
        let name = if key.starts_with("store") {
            format!("{key}_writes_per_s")
        } else {
            format!("{key}_per_s")
        };
        crate::figure(&name, m.rate());
        crate::figure(&format!("{key}_p99_ms"), m.p99_ms());
        crate::figure(&format!("{key}_errors"), m.errors);
        if let Some(us) = m.server_cpu_us {
            crate::figure(&format!("{key}_server_cpu_us"), format!("{us:.0}"));
        }
    }
    if let Some(rss) = idle_rss_mib {
        crate::figure("server_idle_rss_mib", format!("{rss:.1}"));
    }
    if let Some(fanout) = &fanout {
        crate::figure(&format!("watch_{WATCHERS}_p99_ms"), fanout.p99_ms());
        crate::figure(&format!("watch_{WATCHERS}_missing"), fanout.errors);
    }
    Ok(())
}

/// The API rows: ConfigMap creates through `rudder server` on its embedded
/// store, then on etcd.
async fn api_rows(
    opts: &Opts,
    rows: &mut Vec<(String, &'static str, Measured)>,
) -> anyhow::Result<()> {
    for (label, key, on_etcd) in [
        (
            "API create: rudder server, embedded store (1 member)",
            "api_create",
            false,
        ),
        (
            "API create: rudder server on etcd 3.4 (1 member)",
            "api_create_etcd",
            true,
        ),
    ] {
        eprintln!("==> {label}");
        let dir = tempdir(key)?;
        let mut procs = Procs(Vec::new());
        let etcd = if on_etcd {
            Some(start_etcd(1, &dir, &mut procs)?.remove(0))
        } else {
            None
        };
        let (kc, pid) = start_server(&dir, etcd.as_deref(), &mut procs)?;
        let client = api_client(&kc).await?;
        rows.push((label.into(), key, api_load(client, pid, opts).await));
        drop(procs);
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Watchers of the fan-out row, and the changes each must see.
const WATCHERS: usize = 1000;
const CHANGES: usize = 50;

/// A fresh `rudder server`, [`WATCHERS`] watches of ConfigMaps open on it
/// (one connection each, as separate clients would), then [`CHANGES`]
/// creates 20 ms apart: for every watcher and change, from the create sent
/// to the event received; `errors` counts the events that never came
/// (within 30 s).
async fn watch_fanout() -> anyhow::Result<Measured> {
    let dir = tempdir("api-watch")?;
    let mut procs = Procs(Vec::new());
    let (kc, _) = start_server(&dir, None, &mut procs)?;
    let client = api_client(&kc).await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let rv = crate::resource_version(&api).await?;
    let mut watchers = Vec::new();
    for _ in 0..WATCHERS {
        // A client of its own: its own connection.
        let c = api_client(&kc).await?;
        let api: Api<ConfigMap> = Api::namespaced(c, "default");
        let stream = api
            .watch(&kube::api::WatchParams::default().timeout(120), &rv)
            .await?;
        watchers.push(tokio::spawn(async move {
            use futures_util::StreamExt as _;
            let mut stream = std::pin::pin!(stream);
            let mut seen = Vec::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            while seen.len() < CHANGES {
                match tokio::time::timeout_at(deadline, stream.next()).await {
                    // Only the benchmark's own: the server's controllers
                    // may add ConfigMaps of their own meanwhile (the root
                    // CA's `kube-root-ca.crt`).
                    Ok(Some(Ok(kube::api::WatchEvent::Added(cm))))
                        if cm
                            .metadata
                            .name
                            .as_deref()
                            .is_some_and(|n| n.starts_with("fanout-")) =>
                    {
                        seen.push((cm.metadata.name.unwrap_or_default(), Instant::now()));
                    }
                    Ok(Some(Ok(_))) => {}
                    _ => break,
                }
            }
            seen
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut sent = std::collections::HashMap::new();
    for i in 0..CHANGES {
        let name = format!("fanout-{i}");
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        };
        sent.insert(name, Instant::now());
        api.create(&PostParams::default(), &cm).await?;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    let mut latencies = Vec::new();
    for w in watchers {
        for (name, at) in w.await? {
            if let Some(t) = sent.get(&name) {
                latencies.push(at.saturating_duration_since(*t));
            }
        }
    }
    latencies.sort();
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Measured {
        ops: latencies.len(),
        errors: WATCHERS * CHANGES - latencies.len(),
        seconds: started.elapsed().as_secs_f64(),
        latencies,
        server_cpu_us: None,
    })
}

/// A fresh `rudder server` on its embedded store, 1,000 ConfigMaps created
/// (16 at a time, `value_bytes` each), then 10 s at rest: its resident set.
async fn idle_rss(opts: &Opts) -> anyhow::Result<f64> {
    let dir = tempdir("api-idle")?;
    let mut procs = Procs(Vec::new());
    let (kc, pid) = start_server(&dir, None, &mut procs)?;
    let client = api_client(&kc).await?;
    let data = "x".repeat(opts.value_bytes);
    let tasks: Vec<_> = (0..16)
        .map(|c| {
            let api: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
            let data = data.clone();
            tokio::spawn(async move {
                for n in 0..1000 / 16 + 1 {
                    let i = n * 16 + c;
                    if i >= 1000 {
                        break;
                    }
                    let cm = ConfigMap {
                        metadata: ObjectMeta {
                            name: Some(format!("idle-{i}")),
                            ..ObjectMeta::default()
                        },
                        data: Some(BTreeMap::from([("v".to_owned(), data.clone())])),
                        ..ConfigMap::default()
                    };
                    api.create(&PostParams::default(), &cm).await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    drop(client);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let kib = crate::rss_kib(pid)?;
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    #[expect(clippy::cast_precision_loss, reason = "a size in KiB")]
    Ok(kib as f64 / 1024.0)
}
