//! `rudder-bench kubelet`: pod start latency through the whole path and
//! the agent's cost at rest, measured in one run on this machine:
//! - create → Ready (as a client watching the API sees it) for 1, 10 and
//!   30 busybox pods created at once, the image already present, each pod
//!   with its own network namespace (reference `bridge` + `host-local`);
//! - beside it, `ctr run --rm` of the same image on the same containerd
//!   (create, start, exit and delete of a container in the host's network:
//!   the runtime's own floor), and 30 `ctr run -d` at once (the floor for
//!   30 starts sharing the machine), once with a shim each and once with
//!   one shim for all (whether the kubelet's shim per pod costs anything:
//!   on 2026-12-07 it did not, the time is runc's);
//! - the kubelet's resident memory and CPU over 20 s with 30 pods running.
//!
//! Everything runs as in the kubelet tests: `rudder server` on loopback, a
//! private containerd, the kubelet inside a network namespace of its own
//! with loopback relays to the apiserver and the local registry
//! (`cargo xtask images` must have been run). All of it is stopped and
//! removed at the end.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Pod;
use kube::{
    Api, Client,
    api::{DeleteParams, ListParams, PostParams},
    runtime::{WatchStreamExt as _, watcher},
};
use rudder_test_harness::{ChildGuard, Containerd, LoopbackRelay, NetNs, TempDir, workspace_bin};

const IMAGE: &str = "busybox:1.28";

fn free_port() -> anyhow::Result<u16> {
    Ok(rudder_test_harness::unused_port())
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn pod(name: &str) -> anyhow::Result<Pod> {
    Ok(serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "labels": {"bench": "kubelet"}},
        "spec": {
            "terminationGracePeriodSeconds": 0,
            "containers": [{"name": "c", "image": IMAGE, "command": ["sleep", "3600"]}],
        },
    }))?)
}

fn ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Creates `n` pods at once; returns each one's create → Ready time.
async fn start_pods(api: &Api<Pod>, round: &str, n: usize) -> anyhow::Result<Vec<Duration>> {
    let names: Vec<String> = (0..n).map(|i| format!("{round}-{i}")).collect();
    let mut stream = Box::pin(
        watcher(
            api.clone(),
            watcher::Config::default().labels("bench=kubelet"),
        )
        .applied_objects(),
    );
    let start = Instant::now();
    let mut created = std::collections::HashMap::new();
    for name in &names {
        api.create(&PostParams::default(), &pod(name)?).await?;
        created.insert(name.clone(), start.elapsed());
    }
    let mut done: std::collections::HashMap<String, Duration> = std::collections::HashMap::new();
    let deadline = Duration::from_secs(300);
    while done.len() < n {
        let left = deadline
            .checked_sub(start.elapsed())
            .context("pods not Ready within 300 s")?;
        let Ok(Some(ev)) = tokio::time::timeout(left, stream.next()).await else {
            bail!("pods not Ready within 300 s ({} of {n})", done.len());
        };
        let p = ev?;
        let name = p.metadata.name.clone().unwrap_or_default();
        if created.contains_key(&name) && ready(&p) && !done.contains_key(&name) {
            done.insert(name.clone(), start.elapsed() - created[&name]);
        }
    }
    let mut v: Vec<Duration> = done.into_values().collect();
    v.sort();
    Ok(v)
}

async fn delete_all(api: &Api<Pod>) -> anyhow::Result<()> {
    api.delete_collection(
        &DeleteParams::default(),
        &ListParams::default().labels("bench=kubelet"),
    )
    .await?;
    let start = Instant::now();
    while !api
        .list(&ListParams::default().labels("bench=kubelet"))
        .await?
        .items
        .is_empty()
    {
        if start.elapsed() > Duration::from_secs(120) {
            bail!("pods not gone within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn ctr_runs(cd: &Containerd, rounds: usize) -> anyhow::Result<Vec<Duration>> {
    let mut v = vec![];
    for i in 0..rounds {
        let start = Instant::now();
        let out = cd.ctr(&[
            "run",
            "--rm",
            &format!("docker.io/library/{IMAGE}"),
            &format!("bench-ctr-{i}"),
            "true",
        ]);
        if !out.status.success() {
            bail!("ctr run failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        v.push(start.elapsed());
    }
    v.sort();
    Ok(v)
}

/// The container runtime's own floor for `n` containers started at once:
/// `n` `ctr run -d` of the same image in parallel (each a container and a
/// task in the host's network, the `ctr` processes included), timed until
/// the last has returned with its task running; then all are removed.
/// With `one_shim`, every container names the same shim group (the
/// annotation the kubelet sets per pod), so one shim serves them all.
/// Returns each run's time, sorted.
fn ctr_runs_at_once(cd: &Containerd, n: usize, one_shim: bool) -> anyhow::Result<Vec<Duration>> {
    let image = format!("docker.io/library/{IMAGE}");
    let group = format!("io.containerd.runc.v2.group=bench-{}", std::process::id());
    let start = Instant::now();
    let runs: Vec<anyhow::Result<Duration>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..n)
            .map(|i| {
                let (image, group) = (&image, &group);
                s.spawn(move || {
                    let mut args = vec!["run", "-d"];
                    if one_shim {
                        args.extend(["--annotation", group.as_str()]);
                    }
                    let name = format!("bench-par-{i}");
                    args.extend([image.as_str(), name.as_str(), "sleep", "600"]);
                    let out = cd.ctr(&args);
                    if !out.status.success() {
                        bail!(
                            "ctr run -d failed: {}",
                            String::from_utf8_lossy(&out.stderr)
                        );
                    }
                    Ok(start.elapsed())
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("ctr thread panicked")))
            })
            .collect()
    });
    for i in 0..n {
        let id = format!("bench-par-{i}");
        cd.ctr(&["task", "kill", "-s", "SIGKILL", &id]);
    }
    for i in 0..n {
        let id = format!("bench-par-{i}");
        for _ in 0..50 {
            if cd.ctr(&["task", "delete", &id]).status.success()
                || !cd
                    .ctr(&["task", "ls"])
                    .stdout
                    .windows(id.len())
                    .any(|w| w == id.as_bytes())
            {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        cd.ctr(&["container", "delete", &id]);
    }
    let mut v = runs.into_iter().collect::<anyhow::Result<Vec<_>>>()?;
    v.sort();
    Ok(v)
}

struct Cluster {
    kubelet: ChildGuard,
    containerd: Containerd,
    _relays: (LoopbackRelay, LoopbackRelay),
    _ns: NetNs,
    _server: ChildGuard,
    _dir: TempDir,
    kubeconfig: PathBuf,
}

fn start_cluster() -> anyhow::Result<Cluster> {
    let dir = TempDir::new();
    let server_port = free_port()?;
    let server = Command::new(workspace_bin("rudder"))
        .args([
            "server",
            "--listen",
            &format!("127.0.0.1:{server_port}"),
            "--peer-listen",
            &format!("127.0.0.1:{}", free_port()?),
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--pki-dir")
        .arg(dir.join("pki"))
        .arg("--admin-kubeconfig")
        .arg(dir.join("admin.kubeconfig"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("server.log"))?)
        .spawn()
        .context("starting rudder server")?;
    let server = ChildGuard(server);
    let kubeconfig = dir.join("admin.kubeconfig");
    let start = Instant::now();
    while !kubeconfig.exists() {
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "rudder server did not start: {}",
                std::fs::read_to_string(dir.join("server.log"))?
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let ns = NetNs::new();
    let kubelet_port = free_port()?;
    let relays = (
        LoopbackRelay::start(&ns, &[server_port, 5000]),
        LoopbackRelay::start_into(&ns, &[kubelet_port]),
    );
    let containerd = Containerd::start();
    let conf = dir.join("net.d");
    std::fs::create_dir_all(&conf)?;
    std::fs::write(
        conf.join("10-bench.conflist"),
        serde_json::json!({
            "cniVersion": "1.0.0", "name": "bench",
            "plugins": [{"type": "bridge", "bridge": "cni0", "isGateway": true,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]],
                         "dataDir": dir.join("ipam").display().to_string()}}]
        })
        .to_string(),
    )?;
    let config = dir.join("agent.toml");
    std::fs::write(
        &config,
        "[registries.\"docker.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\nmirrors_only = true\n",
    )?;
    let cgroup_root = format!("/rudder-bench-{}", std::process::id());
    let mut cmd = Command::new(workspace_bin("rudder"));
    cmd.args([
        "agent",
        "kubelet",
        "--node-name",
        "bench-node",
        "--node-ip",
        "127.0.0.1",
    ])
    .arg("--kubeconfig")
    .arg(&kubeconfig)
    .arg("--config")
    .arg(&config)
    .arg("--containerd-socket")
    .arg(containerd.address())
    .args(["--containerd-namespace", containerd.namespace()])
    .arg("--root-dir")
    .arg(dir.join("root"))
    .arg("--run-dir")
    .arg(dir.join("run"))
    .arg("--pod-log-dir")
    .arg(dir.join("logs"))
    .arg("--cni-conf-dir")
    .arg(&conf)
    .args(["--cni-bin-dir", "/usr/lib/cni"])
    .arg("--cni-cache-dir")
    .arg(dir.join("cni-cache"))
    .args(["--cgroup-root", &cgroup_root])
    .args(["--port", &kubelet_port.to_string()])
    .env("RUST_LOG", "warn")
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(dir.join("kubelet.log"))?);
    let kubelet = ChildGuard(ns.spawn(&mut cmd).context("starting the kubelet")?);
    Ok(Cluster {
        kubelet,
        containerd,
        _relays: relays,
        _ns: ns,
        _server: server,
        _dir: dir,
        kubeconfig,
    })
}

async fn client(kubeconfig: &Path) -> anyhow::Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await?;
    Ok(Client::try_from(cfg)?)
}

pub(crate) fn run(_args: &[String]) -> anyhow::Result<()> {
    let reachable =
        std::net::TcpStream::connect_timeout(&"127.0.0.1:5000".parse()?, Duration::from_secs(1))
            .is_ok();
    if !reachable {
        bail!(
            "the local registry is not running on 127.0.0.1:5000: run `cargo xtask images` first"
        );
    }
    let cluster = start_cluster()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(async {
        let client = client(&cluster.kubeconfig).await?;
        let nodes: Api<k8s_openapi::api::core::v1::Node> = Api::all(client.clone());
        let start = Instant::now();
        loop {
            let ready = nodes
                .get_opt("bench-node")
                .await
                .ok()
                .flatten()
                .is_some_and(|n| {
                    n.status.and_then(|s| s.conditions).is_some_and(|cs| {
                        cs.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                    })
                });
            if ready {
                break;
            }
            if start.elapsed() > Duration::from_secs(60) {
                bail!("the node did not become Ready");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
        // Warm-up: the image is pulled and unpacked once.
        start_pods(&pods, "warm", 1).await?;
        delete_all(&pods).await?;
        let mut rows = vec![];
        for n in [1usize, 10, 30] {
            let t = start_pods(&pods, &format!("n{n}"), n).await?;
            rows.push((n, percentile(&t, 0.5), percentile(&t, 0.99)));
            if n != 30 {
                delete_all(&pods).await?;
            }
        }
        // At rest with 30 pods.
        tokio::time::sleep(Duration::from_secs(5)).await;
        let pid = cluster.kubelet.0.id();
        let (t0, w0) = (crate::cpu_seconds(pid)?, Instant::now());
        tokio::time::sleep(Duration::from_secs(20)).await;
        let cpu_pct = (crate::cpu_seconds(pid)? - t0) / w0.elapsed().as_secs_f64() * 100.0;
        let rss = crate::rss_kib(pid)?;
        delete_all(&pods).await?;
        Ok::<_, anyhow::Error>((rows, cpu_pct, rss))
    });
    let (rows, cpu_pct, rss) = result?;
    let ctr = ctr_runs(&cluster.containerd, 10)?;
    let ctr30 = ctr_runs_at_once(&cluster.containerd, 30, false)?;
    let ctr30_one = ctr_runs_at_once(&cluster.containerd, 30, true)?;
    drop(cluster);
    // The pods' cgroup parent and the QoS tiers the kubelet made in it
    // (runc and the kubelet removed the pods' own), deepest first.
    let root = format!("rudder-bench-{}", std::process::id());
    let mut bases = vec![Path::new("/sys/fs/cgroup").to_path_buf()];
    bases.extend(
        std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .map(|h| h.path()),
    );
    for b in bases {
        let top = b.join(&root);
        for tier in ["kubepods/burstable", "kubepods/besteffort", "kubepods", ""] {
            let _ = std::fs::remove_dir(top.join(tier));
        }
    }
    println!("kubelet benchmark; {}", crate::hardware());
    println!("{:<34} {:>10} {:>10}", "what", "p50", "p99");
    for (n, p50, p99) in &rows {
        println!(
            "{:<34} {:>10} {:>10}",
            format!("pod create → Ready, {n} at once"),
            ms(*p50),
            ms(*p99)
        );
    }
    println!(
        "{:<34} {:>10} {:>10}",
        "ctr run --rm (same image, 10 runs)",
        ms(percentile(&ctr, 0.5)),
        ms(percentile(&ctr, 0.99))
    );
    println!(
        "{:<34} {:>10} {:>10}",
        "ctr run -d, 30 at once",
        ms(percentile(&ctr30, 0.5)),
        ms(percentile(&ctr30, 0.99))
    );
    println!(
        "{:<34} {:>10} {:>10}",
        "ctr run -d, 30 at once, one shim",
        ms(percentile(&ctr30_one, 0.5)),
        ms(percentile(&ctr30_one, 0.99))
    );
    println!(
        "kubelet at rest with 30 pods: RSS {:.1} MiB, CPU {cpu_pct:.1} % of one core (20 s)",
        rss as f64 / 1024.0
    );
    let millis = |d: Duration| format!("{:.0}", d.as_secs_f64() * 1000.0);
    for (n, p50, p99) in &rows {
        crate::figure(&format!("pod_start_{n}_p50_ms"), millis(*p50));
        crate::figure(&format!("pod_start_{n}_p99_ms"), millis(*p99));
    }
    crate::figure("ctr_run_p50_ms", millis(percentile(&ctr, 0.5)));
    crate::figure("ctr_run_30_p50_ms", millis(percentile(&ctr30, 0.5)));
    crate::figure("ctr_run_30_p99_ms", millis(percentile(&ctr30, 0.99)));
    crate::figure(
        "ctr_run_30_one_shim_p99_ms",
        millis(percentile(&ctr30_one, 0.99)),
    );
    crate::figure("kubelet_rss_mib", format!("{:.1}", rss as f64 / 1024.0));
    crate::figure("kubelet_idle_cpu_pct", format!("{cpu_pct:.1}"));
    Ok(())
}
