//! `cargo xtask up` / `down`: a one-node cluster on this machine.
//!
//! `up` installs what is missing, builds everything, and starts, each as a
//! background process with a pid file and a log: a private containerd, the
//! local image registry, `rudder server` with the embedded store, and
//! `rudder agent run` (network daemon, eBPF service proxy, kubelet) joined
//! with a bootstrap token. It returns once the node is Ready.
//!
//! `down` stops them by pid, removes the pods' containers, mounts and
//! cgroups, the pod network (bridge, VXLAN device, routes, nftables table)
//! and the BPF pins, and leaves the data directory unless `--purge`.

use std::{
    io::Write as _,
    os::unix::process::CommandExt as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{ebpf, images, registry, setup, util};

/// Where `up` keeps its state, and how it reaches the cluster.
pub(crate) struct Layout {
    /// Persistent: the store, PKI, kubelet root, pod logs, IPAM, images.
    pub(crate) data: PathBuf,
    /// Volatile: sockets, pid files, namespace files.
    pub(crate) run: PathBuf,
    pub(crate) api_port: u16,
}

/// cgroup parent of the pods, BPF pin directory, containerd namespace.
const CGROUP_ROOT: &str = "/rudder-local";
const BPF_PIN_DIR: &str = "/sys/fs/bpf/rudder-local";
const CONTAINERD_NAMESPACE: &str = "rudder";
/// The pod bridge (not `cni0`, which other CNI set-ups on the host may own).
const BRIDGE: &str = "rudder0";

impl Layout {
    pub(crate) fn new(data: PathBuf, api_port: u16) -> Self {
        Self {
            data,
            run: PathBuf::from("/run/rudder-local"),
            api_port,
        }
    }

    fn admin_kubeconfig(&self) -> PathBuf {
        self.data.join("admin.kubeconfig")
    }
    fn node_kubeconfig(&self) -> PathBuf {
        self.data.join("node.kubeconfig")
    }
    fn containerd_socket(&self) -> PathBuf {
        self.run.join("containerd/containerd.sock")
    }
    fn pid_file(&self, name: &str) -> PathBuf {
        self.run.join(format!("{name}.pid"))
    }
    fn log(&self, name: &str) -> PathBuf {
        self.data.join("logs").join(format!("{name}.log"))
    }
    fn agent_config(&self) -> PathBuf {
        self.data.join("agent.toml")
    }
    fn cni_bin(&self) -> PathBuf {
        self.data.join("cni/bin")
    }
    fn cni_conf(&self) -> PathBuf {
        self.data.join("cni/net.d")
    }
}

pub(crate) struct UpOptions {
    pub(crate) nodes: u32,
    pub(crate) data_dir: PathBuf,
    pub(crate) api_port: u16,
    pub(crate) no_build: bool,
}

pub(crate) fn up(root: &Path, opts: &UpOptions) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!(
            "cargo xtask up needs root (it starts containerd, makes the pod network and loads BPF \
             programs): run it with sudo"
        );
    }
    if opts.nodes != 1 {
        bail!(
            "--nodes {}: only a one-node cluster is implemented so far (the 3-node cluster in \
             network namespaces is not done yet)",
            opts.nodes
        );
    }
    let l = Layout::new(opts.data_dir.clone(), opts.api_port);
    util::step("checking and installing prerequisites");
    setup::run(false)?;
    let target = util::target_dir(root);
    if opts.no_build {
        println!("--no-build: using the binaries in {}", target.display());
    } else {
        ebpf::build(root, &target.join("bpf"))?;
        util::step("building rudder and rudder-cni (release)");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        util::run(Command::new(&cargo).args([
            "build",
            "--quiet",
            "--release",
            "--package",
            "rudder",
            "--package",
            "rudder-cni",
        ]))?;
    }
    let bin = target.join("release");
    let rudder = bin.join("rudder");
    for b in [&rudder, &bin.join("rudder-cni")] {
        if !b.is_file() {
            bail!("{} is missing: run without --no-build", b.display());
        }
    }
    images::run(root, registry::DEFAULT_ADDR)?;
    util::step("checking this node's kernel: rudder agent preflight");
    util::run(Command::new(&rudder).args(["agent", "preflight"]))?;

    for d in [
        l.data.join("logs"),
        l.cni_bin(),
        l.cni_conf(),
        l.run.join("containerd"),
    ] {
        std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
    }
    install_cni_plugins(&l, &bin)?;
    let node_name = hostname()?;
    let node_ip = default_source_ip().unwrap_or_else(|| "127.0.0.1".into());
    write_agent_config(&l)?;

    util::step("starting containerd");
    start_containerd(&l)?;

    util::step("starting rudder server (embedded store)");
    if !running(&l, "server") {
        let mut cmd = Command::new(&rudder);
        cmd.arg("server")
            .arg("--data-dir")
            .arg(l.data.join("server/data"))
            .arg("--pki-dir")
            .arg(l.data.join("server/pki"))
            .arg("--admin-kubeconfig")
            .arg(l.admin_kubeconfig())
            .args(["--listen", &format!("0.0.0.0:{}", l.api_port)])
            .args(["--host", &format!("{node_ip},127.0.0.1,{node_name}")])
            .args(["--peer-listen", "127.0.0.1:2380"])
            // The cluster DNS, behind kube-system/kube-dns (10.96.0.10).
            .args(["--dns-listen", &format!("{node_ip}:53")]);
        spawn(&l, "server", &mut cmd)?;
    }
    let kubectl = Kubectl(l.admin_kubeconfig());
    wait("the apiserver to answer /readyz", 90, &l, "server", || {
        l.admin_kubeconfig().exists() && kubectl.ok(&["get", "--raw", "/readyz"])
    })?;
    // The kubeconfig names the node's address; local tools use loopback.
    let admin_local = l.data.join("admin-local.kubeconfig");
    let text = std::fs::read_to_string(l.admin_kubeconfig())?;
    std::fs::write(
        &admin_local,
        text.replace(
            &format!("https://{node_ip}:{}", l.api_port),
            &format!("https://127.0.0.1:{}", l.api_port),
        ),
    )?;

    if !l.node_kubeconfig().exists() {
        util::step(&format!("joining node {node_name} with a bootstrap token"));
        let out = Command::new(&rudder)
            .args(["token", "create", "--kubeconfig"])
            .arg(&admin_local)
            .args(["--description", "cargo xtask up"])
            .output()
            .context("running rudder token create")?;
        if !out.status.success() {
            bail!(
                "rudder token create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        util::run(
            Command::new(&rudder)
                .args([
                    "join",
                    "--server",
                    &format!("https://127.0.0.1:{}", l.api_port),
                ])
                .args(["--token", &token])
                .arg("--ca-file")
                .arg(l.data.join("server/pki/ca.crt"))
                .args(["--node-name", &node_name])
                .arg("--kubeconfig-out")
                .arg(l.node_kubeconfig()),
        )?;
    }

    util::step("starting rudder agent (network, service proxy, kubelet)");
    if !running(&l, "agent") {
        let mut cmd = Command::new(&rudder);
        cmd.args(["agent", "run"]);
        agent_args(&l, &mut cmd);
        cmd.args(["--node-name", &node_name, "--node-ip", &node_ip]);
        spawn(&l, "agent", &mut cmd)?;
    }
    let kubectl = Kubectl(admin_local.clone());
    wait(
        &format!("node {node_name} to be Ready"),
        120,
        &l,
        "agent",
        || {
            kubectl
                .output(&[
                    "get",
                    "node",
                    &node_name,
                    "-o",
                    "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                ])
                .is_some_and(|s| s.trim() == "True")
        },
    )?;
    println!(
        "\nRudder is up: one node ({node_name}, {node_ip}), apiserver https://127.0.0.1:{port}.\n\n  \
         export KUBECONFIG={kc}\n  kubectl get nodes\n  \
         kubectl create deployment web --image=nginx --replicas=2\n  \
         kubectl expose deployment web --port=80\n\n\
         Images come from the local registry at {reg} (busybox, nginx, rudder/echo).\n\
         Logs: {logs}/. Stop with `cargo xtask down` (add --purge to remove {data} too).",
        port = l.api_port,
        kc = admin_local.display(),
        reg = registry::DEFAULT_ADDR,
        logs = l.data.join("logs").display(),
        data = l.data.display(),
    );
    Ok(())
}

/// The agent's flags (shared by `run` and `run --uninstall`).
fn agent_args(l: &Layout, cmd: &mut Command) {
    cmd.arg("--kubeconfig")
        .arg(l.node_kubeconfig())
        .arg("--config")
        .arg(l.agent_config())
        .arg("--containerd-socket")
        .arg(l.containerd_socket())
        .args(["--containerd-namespace", CONTAINERD_NAMESPACE])
        .arg("--root-dir")
        .arg(l.data.join("kubelet"))
        .arg("--run-dir")
        .arg(l.run.join("kubelet"))
        .arg("--pod-log-dir")
        .arg(l.data.join("logs/pods"))
        .arg("--cni-conf-dir")
        .arg(l.cni_conf())
        .arg("--cni-bin-dir")
        .arg(l.cni_bin())
        .arg("--cni-cache-dir")
        .arg(l.data.join("cni/cache"))
        .arg("--ipam-dir")
        .arg(l.data.join("cni/ipam"))
        .args(["--cgroup-root", CGROUP_ROOT])
        .args(["--bpf-pin-dir", BPF_PIN_DIR]);
}

/// `rudder` (the plugin) and the reference plugins the conflist chains.
fn install_cni_plugins(l: &Layout, bin: &Path) -> anyhow::Result<()> {
    let mut links = vec![("rudder".to_string(), bin.join("rudder-cni"))];
    for p in ["portmap", "bandwidth", "loopback"] {
        let found = ["/usr/lib/cni", "/opt/cni/bin"]
            .iter()
            .map(|d| Path::new(d).join(p))
            .find(|p| p.is_file())
            .with_context(|| {
                format!("the CNI plugin {p} is missing (Debian: containernetworking-plugins)")
            })?;
        links.push((p.to_string(), found));
    }
    for (name, target) in links {
        let link = l.cni_bin().join(&name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(&target, &link)
            .with_context(|| format!("linking {} to {}", link.display(), target.display()))?;
    }
    Ok(())
}

fn write_agent_config(l: &Layout) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `cargo xtask up`.\n\
         [registries.\"docker.io\"]\nmirrors = [\"http://{reg}\"]\nmirrors_only = true\n\n\
         [network]\nbackend = \"vxlan\"\ncluster-cidr = \"10.244.0.0/16\"\nmasquerade = true\n\
         subnet-file = \"{run}/subnet.env\"\ncni-conf-dir = \"{conf}\"\n\
         cni-bin-dirs = [\"{bin}\"]\nbridge = \"{BRIDGE}\"\n",
        reg = registry::DEFAULT_ADDR,
        run = l.run.display(),
        conf = l.cni_conf().display(),
        bin = l.cni_bin().display(),
    );
    std::fs::write(l.agent_config(), text)
        .with_context(|| format!("writing {}", l.agent_config().display()))
}

fn start_containerd(l: &Layout) -> anyhow::Result<()> {
    if running(l, "containerd") {
        return Ok(());
    }
    let dir = l.data.join("containerd");
    std::fs::create_dir_all(&dir)?;
    let sock = l.containerd_socket();
    let config = format!(
        "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
         [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
        root = dir.join("root").display(),
        state = l.run.join("containerd/state").display(),
        sock = sock.display(),
        opt = dir.join("opt").display(),
    );
    std::fs::write(dir.join("config.toml"), config)?;
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(dir.join("config.toml"));
    spawn(l, "containerd", &mut cmd)?;
    wait("containerd to answer", 30, l, "containerd", || {
        sock.exists() && ctr(l, &["version"]).is_some()
    })
}

fn ctr(l: &Layout, args: &[&str]) -> Option<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(l.containerd_socket())
        .args(["--namespace", CONTAINERD_NAMESPACE])
        .args(args)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Starts a background process in its own process group, output to its
/// log, pid in its pid file.
fn spawn(l: &Layout, name: &str, cmd: &mut Command) -> anyhow::Result<()> {
    let log = std::fs::File::options()
        .create(true)
        .append(true)
        .open(l.log(name))
        .with_context(|| format!("opening {}", l.log(name).display()))?;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .with_context(|| format!("starting {name}: {cmd:?}"))?;
    std::fs::File::create(l.pid_file(name))?.write_all(child.id().to_string().as_bytes())?;
    Ok(())
}

fn pid_of(l: &Layout, name: &str) -> Option<i32> {
    let pid: i32 = std::fs::read_to_string(l.pid_file(name))
        .ok()?
        .trim()
        .parse()
        .ok()?;
    // A zombie or a recycled pid is not ours: check the process is alive
    // and not a zombie.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let state = stat.rsplit_once(") ")?.1.chars().next()?;
    (state != 'Z').then_some(pid)
}

fn running(l: &Layout, name: &str) -> bool {
    pid_of(l, name).is_some()
}

/// SIGTERM, then SIGKILL after `grace`. Returns whether it was running.
fn stop(l: &Layout, name: &str, grace: Duration) -> bool {
    let Some(pid) = pid_of(l, name) else {
        let _ = std::fs::remove_file(l.pid_file(name));
        return false;
    };
    // SAFETY: kill(2) on a pid read from our own pid file.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + grace;
    while pid_of(l, name).is_some() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    if pid_of(l, name).is_some() {
        // SAFETY: as above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        std::thread::sleep(Duration::from_millis(200));
    }
    let _ = std::fs::remove_file(l.pid_file(name));
    true
}

fn wait(
    what: &str,
    secs: u64,
    l: &Layout,
    process: &str,
    mut ready: impl FnMut() -> bool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if ready() {
            return Ok(());
        }
        if !running(l, process) {
            bail!(
                "waiting for {what}: {process} exited; the end of {}:\n{}",
                l.log(process).display(),
                tail(&l.log(process), 30)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "waiting for {what}: not within {secs} s; the end of {}:\n{}",
                l.log(process).display(),
                tail(&l.log(process), 30)
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

struct Kubectl(PathBuf);

impl Kubectl {
    fn output(&self, args: &[&str]) -> Option<String> {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &self.0)
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    fn ok(&self, args: &[&str]) -> bool {
        self.output(args).is_some()
    }
}

fn hostname() -> anyhow::Result<String> {
    let name =
        std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the host name")?;
    Ok(name.trim().to_lowercase())
}

/// The source address of the default route, if there is one.
fn default_source_ip() -> Option<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").ok()?;
    s.connect("192.0.2.1:9").ok()?;
    Some(s.local_addr().ok()?.ip().to_string())
}

pub(crate) fn down(root: &Path, data_dir: PathBuf, purge: bool) -> anyhow::Result<()> {
    let l = Layout::new(data_dir, 0);
    let target = util::target_dir(root);
    let rudder = target.join("release/rudder");
    if stop(&l, "agent", Duration::from_secs(10)) {
        println!("stopped rudder agent");
    }
    // The pods' containers: killed and removed through containerd.
    if running(&l, "containerd") {
        let tasks = ctr(&l, &["tasks", "ls", "-q"]).unwrap_or_default();
        for id in tasks.lines().filter(|t| !t.is_empty()) {
            let _ = ctr(&l, &["tasks", "kill", "--signal", "SIGKILL", id]);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        for id in tasks.lines().filter(|t| !t.is_empty()) {
            while ctr(&l, &["tasks", "delete", id]).is_none()
                && ctr(&l, &["tasks", "ls", "-q"]).is_some_and(|t| t.lines().any(|x| x == id))
                && Instant::now() < deadline
            {
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        let containers = ctr(&l, &["containers", "ls", "-q"]).unwrap_or_default();
        for id in containers.lines().filter(|t| !t.is_empty()) {
            let _ = ctr(&l, &["containers", "delete", id]);
        }
        if !tasks.trim().is_empty() {
            println!("removed {} pod containers", tasks.lines().count());
        }
    }
    if stop(&l, "containerd", Duration::from_secs(10)) {
        println!("stopped containerd");
    }
    let unmounted = unmount_under(&[&l.data, &l.run]);
    if unmounted > 0 {
        println!("unmounted {unmounted} mounts (sandboxes, volumes, snapshots)");
    }
    // The network (bridge, VXLAN device, routes, nftables) and the BPF pins.
    if rudder.is_file() && l.agent_config().exists() {
        let mut cmd = Command::new(&rudder);
        cmd.args(["agent", "run"]);
        agent_args(&l, &mut cmd);
        cmd.arg("--uninstall");
        match cmd.output() {
            Ok(o) if o.status.success() => {
                print!("{}", String::from_utf8_lossy(&o.stdout));
            }
            Ok(o) => eprintln!(
                "rudder agent run --uninstall failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("cannot run {}: {e}", rudder.display()),
        }
    }
    // The pod bridge is the CNI plugin's (made at the first pod): gone once
    // the pods are, so it is removed here.
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        match Command::new("ip").args(["link", "delete", BRIDGE]).status() {
            Ok(s) if s.success() => println!("removed the pod bridge {BRIDGE}"),
            _ => eprintln!("could not remove the pod bridge {BRIDGE}"),
        }
    }
    let removed = remove_cgroups(CGROUP_ROOT);
    if removed > 0 {
        println!("removed the pods' cgroups ({CGROUP_ROOT})");
    }
    if stop(&l, "server", Duration::from_secs(10)) {
        println!("stopped rudder server");
    }
    if registry::stop(root)? {
        println!("stopped the local registry");
    }
    let _ = std::fs::remove_dir_all(&l.run);
    if purge {
        std::fs::remove_dir_all(&l.data)
            .or_else(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    Ok(())
                } else {
                    Err(e)
                }
            })
            .with_context(|| format!("removing {}", l.data.display()))?;
        println!("removed {}", l.data.display());
    } else if l.data.exists() {
        println!(
            "kept {} (the store, PKI, images): `cargo xtask down --purge` removes it",
            l.data.display()
        );
    }
    Ok(())
}

/// Unmounts (lazily, deepest first) every mount under the directories.
fn unmount_under(dirs: &[&Path]) -> usize {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<String> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        // /proc/self/mounts escapes spaces as \040.
        .map(|p| p.replace("\\040", " "))
        .filter(|p| dirs.iter().any(|d| Path::new(p).starts_with(d)))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    points.dedup();
    let mut n = 0;
    for p in points {
        let Ok(c) = std::ffi::CString::new(p) else {
            continue;
        };
        // SAFETY: a NUL-terminated path; failure (already gone) is fine.
        if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } == 0 {
            n += 1;
        }
    }
    n
}

/// Removes the cgroup tree `rel` in every hierarchy (v1 and v2), deepest
/// first. Returns how many directories went.
fn remove_cgroups(rel: &str) -> usize {
    let rel = rel.trim_start_matches('/');
    let mut roots = vec![PathBuf::from("/sys/fs/cgroup").join(rel)];
    for h in std::fs::read_dir("/sys/fs/cgroup")
        .into_iter()
        .flatten()
        .flatten()
    {
        roots.push(h.path().join(rel));
    }
    roots.iter().map(|r| remove_tree(r)).sum()
}

fn remove_tree(p: &Path) -> usize {
    let mut n = 0;
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                n += remove_tree(&e.path());
            }
        }
        if std::fs::remove_dir(p).is_ok() {
            n += 1;
        }
    }
    n
}

/// `cargo xtask smoke`: the first things a user does on the cluster `up`
/// started, checked: a Deployment behind a ClusterIP, reached from a pod
/// and from this node, `kubectl logs`, `exec` and `port-forward`, and a
/// namespace deleted with what it holds. Leaves nothing behind.
pub(crate) fn smoke(data_dir: PathBuf) -> anyhow::Result<()> {
    let l = Layout::new(data_dir, 0);
    let kc = Kubectl(l.data.join("admin-local.kubeconfig"));
    if !kc.0.exists() {
        bail!(
            "no cluster: run `cargo xtask up` first ({} is missing)",
            kc.0.display()
        );
    }
    let ns = format!(
        "smoke-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    let run = |args: &[&str]| -> anyhow::Result<String> {
        let out = Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", &kc.0)
            .stdin(Stdio::null())
            .output()
            .context("running kubectl")?;
        if !out.status.success() {
            bail!(
                "kubectl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let poll = |what: &str, secs: u64, f: &dyn Fn() -> Option<String>| -> anyhow::Result<String> {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(v) = f() {
                return Ok(v);
            }
            if Instant::now() > deadline {
                bail!("smoke: {what} not within {secs} s");
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    };
    util::step(&format!("smoke test in namespace {ns}"));
    run(&["create", "namespace", &ns])?;
    let result = (|| -> anyhow::Result<()> {
        run(&[
            "-n",
            &ns,
            "create",
            "deployment",
            "web",
            "--image=nginx",
            "--replicas=2",
        ])?;
        run(&[
            "-n",
            &ns,
            "expose",
            "deployment",
            "web",
            "--port=80",
            "--type=NodePort",
        ])?;
        poll("2 ready pods of web", 120, &|| {
            kc.output(&[
                "-n",
                &ns,
                "get",
                "deployment",
                "web",
                "-o",
                "jsonpath={.status.readyReplicas}",
            ])
            .filter(|r| r.trim() == "2")
        })?;
        println!("deployment web: 2/2 ready");
        let pods: Vec<String> = run(&["-n", &ns, "get", "pods", "-l", "app=web", "-o", "name"])?
            .lines()
            .map(|l| l.trim_start_matches("pod/").to_string())
            .collect();
        poll("the endpoints of web", 60, &|| {
            kc.output(&[
                "-n",
                &ns,
                "get",
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
                "-o",
                "jsonpath={.items[*].endpoints[*].addresses[0]}",
            ])
            .filter(|e| e.split_whitespace().count() == 2)
        })?;
        let script = "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://$WEB_SERVICE_HOST/hostname; echo; done; \
             nc -w 3 $KUBERNETES_SERVICE_HOST $KUBERNETES_SERVICE_PORT </dev/null && echo apiserver-reachable; \
             nslookup web.$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace).svc.cluster.local >/dev/null \
             && echo dns-ok";
        run(&[
            "-n",
            &ns,
            "run",
            "client",
            "--image=busybox:1.28",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            script,
        ])?;
        poll("the client pod to finish", 90, &|| {
            kc.output(&[
                "-n",
                &ns,
                "get",
                "pod",
                "client",
                "-o",
                "jsonpath={.status.phase}",
            ])
            .filter(|p| p == "Succeeded" || p == "Failed")
        })?;
        let log = run(&["-n", &ns, "logs", "client"])?;
        if !log.contains("apiserver-reachable") {
            bail!(
                "smoke: the pod could not reach the apiserver through the kubernetes Service:\n{log}"
            );
        }
        println!("kubernetes Service from a pod: reachable");
        if !log.contains("dns-ok") {
            bail!(
                "smoke: the pod could not resolve web.{ns}.svc.cluster.local through the cluster DNS:\n{log}"
            );
        }
        println!("cluster DNS from a pod: web.{ns}.svc.cluster.local resolved");
        let answers: Vec<&str> = log
            .lines()
            .filter(|l| !l.is_empty() && *l != "apiserver-reachable" && *l != "dns-ok")
            .collect();
        if answers.len() != 10 || !answers.iter().all(|a| pods.iter().any(|p| p == a)) {
            bail!(
                "smoke: the client pod's requests to the ClusterIP were not all answered by web's pods:\n{log}"
            );
        }
        println!("ClusterIP from a pod: 10/10 answered by {pods:?}");
        let ip = run(&[
            "-n",
            &ns,
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.clusterIP}",
        ])?;
        let answer = http_get(&format!("{}:80", ip.trim()), "/hostname")
            .with_context(|| format!("smoke: GET http://{}/hostname from this node", ip.trim()))?;
        if !pods.iter().any(|p| *p == answer.trim()) {
            bail!("smoke: the ClusterIP from this node answered {answer:?}");
        }
        println!("ClusterIP from this node: answered by {}", answer.trim());
        let node_port = run(&[
            "-n",
            &ns,
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])?;
        let node_ip = run(&[
            "get",
            "nodes",
            "-o",
            "jsonpath={.items[0].status.addresses[?(@.type==\"InternalIP\")].address}",
        ])?;
        let front = format!("{}:{}", node_ip.trim(), node_port.trim());
        let answer = http_get(&front, "/hostname").with_context(|| {
            format!("smoke: GET http://{front}/hostname (the NodePort) from this node")
        })?;
        if !pods.iter().any(|p| *p == answer.trim()) {
            bail!("smoke: the NodePort {front} answered {answer:?}");
        }
        println!(
            "NodePort {front} from this node: answered by {}",
            answer.trim()
        );
        let log = run(&["-n", &ns, "logs", &format!("pod/{}", pods[0])])?;
        println!("kubectl logs: {} lines", log.lines().count());
        let host = run(&["-n", &ns, "exec", &pods[0], "--", "hostname"])?;
        if host.trim() != pods[0] {
            bail!(
                "smoke: kubectl exec hostname in {} printed {host:?}",
                pods[0]
            );
        }
        println!("kubectl exec: hostname {}", host.trim());
        let answer = port_forward_get(&kc.0, &ns, &pods[0], 80, "/hostname")?;
        if answer.trim() != pods[0] {
            bail!(
                "smoke: kubectl port-forward to {} answered {answer:?}",
                pods[0]
            );
        }
        println!("kubectl port-forward: answered by {}", answer.trim());
        Ok(())
    })();
    run(&["delete", "namespace", &ns, "--wait=true", "--timeout=120s"])?;
    result?;
    println!("smoke test passed; namespace {ns} deleted");
    Ok(())
}

/// `kubectl port-forward` to `pod`'s `port` on a local port kubectl picks,
/// one GET through it; kubectl is stopped (by pid) afterwards.
fn port_forward_get(
    kubeconfig: &Path,
    ns: &str,
    pod: &str,
    port: u16,
    path: &str,
) -> anyhow::Result<String> {
    use std::io::BufRead as _;
    let mut child = Command::new("kubectl")
        .args([
            "-n",
            ns,
            "port-forward",
            &format!("pod/{pod}"),
            &format!(":{port}"),
        ])
        .env("KUBECONFIG", kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("running kubectl port-forward")?;
    let result = (|| -> anyhow::Result<String> {
        let out = child.stdout.take().context("kubectl's stdout")?;
        // "Forwarding from 127.0.0.1:43567 -> 80"
        let mut local = None;
        for line in std::io::BufReader::new(out).lines() {
            let line = line?;
            if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                local = rest.split_whitespace().next().map(str::to_string);
                break;
            }
        }
        let local = local.context("kubectl port-forward printed no local port")?;
        http_get(&format!("127.0.0.1:{local}"), path).with_context(|| {
            format!("GET http://127.0.0.1:{local}{path} (forwarded to {pod}:{port})")
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result.context("smoke: kubectl port-forward")
}

/// A plain HTTP/1.1 GET; the body.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use std::io::Read as _;
    let mut s = std::net::TcpStream::connect_timeout(&addr.parse()?, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default())
}
