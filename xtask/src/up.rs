//! `cargo xtask up` / `down`: a cluster on this machine.
//!
//! `up` installs what is missing, builds everything, and starts, each as a
//! background process with a pid file and a log: a private containerd, the
//! local image registry, `rudder server` with the embedded store, and
//! `rudder agent run` (network daemon, eBPF service proxy, kubelet) joined
//! with a bootstrap token. It returns once the node is Ready.
//!
//! With `--nodes N` (N > 1) every node is a network namespace of its own
//! (`rudder-local-node-<i>`) on a node bridge (`rudder-nodes`,
//! `10.99.0.0/24`, this machine at `.1`, node i at `.1<i>`), with its own
//! containerd and agent; the nodes' pods reach each other over VXLAN. The
//! apiserver, the cluster DNS and a second listener of the registry are on
//! the bridge's address.
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
/// The bridge joining the nodes of a multi-node cluster, and its network.
const NODE_BRIDGE: &str = "rudder-nodes";
const NODE_NET_HOST: &str = "10.99.0.1";

/// One node's directories, processes and addresses. A one-node cluster's
/// node lives directly in the data and run directories; node i of a
/// multi-node cluster under `nodes/node-<i>/` of both, in its own network
/// namespace.
pub(crate) struct NodeDirs {
    pub(crate) name: String,
    pub(crate) ip: String,
    data: PathBuf,
    run: PathBuf,
    /// The network namespace its processes run in (`None`: this machine's).
    netns: Option<PathBuf>,
    /// Prefix of its processes' pid files and logs (`""`, `node-1-`, …).
    prefix: String,
    cgroup_root: String,
    pin_dir: String,
    /// The registry mirror its kubelet pulls from.
    registry: String,
}

impl NodeDirs {
    fn single(l: &Layout, name: String, ip: String) -> Self {
        Self {
            name,
            ip,
            data: l.data.clone(),
            run: l.run.clone(),
            netns: None,
            prefix: String::new(),
            cgroup_root: CGROUP_ROOT.into(),
            pin_dir: BPF_PIN_DIR.into(),
            registry: registry::DEFAULT_ADDR.into(),
        }
    }

    fn multi(l: &Layout, i: u32) -> Self {
        let name = format!("node-{i}");
        Self {
            ip: format!("10.99.0.{}", 10 + i),
            data: l.data.join("nodes").join(&name),
            run: l.run.join("nodes").join(&name),
            netns: Some(PathBuf::from(format!("/run/netns/{}", netns_name(i)))),
            prefix: format!("{name}-"),
            cgroup_root: format!("{CGROUP_ROOT}/{name}"),
            pin_dir: format!("{BPF_PIN_DIR}/{name}"),
            registry: format!("{NODE_NET_HOST}:5000"),
            name,
        }
    }

    fn proc(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }
    fn node_kubeconfig(&self) -> PathBuf {
        self.data.join("node.kubeconfig")
    }
    fn containerd_socket(&self) -> PathBuf {
        self.run.join("containerd/containerd.sock")
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

fn netns_name(i: u32) -> String {
    format!("rudder-local-node-{i}")
}

/// The nodes `up` made under the layout: those of a multi-node cluster if
/// there are, else the one node.
fn nodes_of(l: &Layout) -> Vec<NodeDirs> {
    let mut multi: Vec<u32> = std::fs::read_dir(l.data.join("nodes"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("node-")?.parse().ok())
        .collect();
    multi.sort_unstable();
    if multi.is_empty() {
        vec![NodeDirs::single(l, String::new(), String::new())]
    } else {
        multi.into_iter().map(|i| NodeDirs::multi(l, i)).collect()
    }
}

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
    fn pid_file(&self, name: &str) -> PathBuf {
        self.run.join(format!("{name}.pid"))
    }
    fn log(&self, name: &str) -> PathBuf {
        self.data.join("logs").join(format!("{name}.log"))
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
    if !(1..=9).contains(&opts.nodes) {
        bail!("--nodes {}: from 1 to 9 nodes", opts.nodes);
    }
    let l = Layout::new(opts.data_dir.clone(), opts.api_port);
    let existing = nodes_of(&l);
    let was_multi = existing.iter().any(|n| n.netns.is_some());
    if l.admin_kubeconfig().exists() && was_multi != (opts.nodes > 1) {
        bail!(
            "{} holds a cluster of {} node(s): `cargo xtask down --purge` first to make one of {}",
            l.data.display(),
            existing.len(),
            opts.nodes
        );
    }
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

    let host_name = hostname()?;
    let host_ip = default_source_ip().unwrap_or_else(|| "127.0.0.1".into());
    let nodes: Vec<NodeDirs> = if opts.nodes == 1 {
        vec![NodeDirs::single(&l, host_name.clone(), host_ip.clone())]
    } else {
        (1..=opts.nodes).map(|i| NodeDirs::multi(&l, i)).collect()
    };
    std::fs::create_dir_all(l.data.join("logs"))?;
    for n in &nodes {
        for d in [n.cni_bin(), n.cni_conf(), n.run.join("containerd")] {
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
        }
        install_cni_plugins(n, &bin)?;
        write_agent_config(n)?;
    }
    let multi = opts.nodes > 1;
    if multi {
        util::step(&format!(
            "making the node network: bridge {NODE_BRIDGE} ({NODE_NET_HOST}/24), {} network namespaces",
            nodes.len()
        ));
        node_network(&nodes)?;
        start_node_registry(&l, root)?;
    }

    for n in &nodes {
        util::step(&format!("starting containerd of {}", display_name(n)));
        start_containerd(&l, n)?;
    }

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
            .args([
                "--host",
                &format!("{host_ip},127.0.0.1,{host_name},{NODE_NET_HOST}"),
            ])
            .args(["--peer-listen", "127.0.0.1:2380"])
            // The cluster DNS, behind kube-system/kube-dns (10.96.0.10),
            // where the pods' nodes reach this machine.
            .args([
                "--dns-listen",
                &format!("{}:53", if multi { NODE_NET_HOST } else { &host_ip }),
            ]);
        spawn(&l, "server", &mut cmd, None)?;
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
            &format!("https://{host_ip}:{}", l.api_port),
            &format!("https://127.0.0.1:{}", l.api_port),
        ),
    )?;

    // Nodes in their own namespaces reach the apiserver on the bridge.
    let api_for_nodes = if multi {
        format!("https://{NODE_NET_HOST}:{}", l.api_port)
    } else {
        format!("https://127.0.0.1:{}", l.api_port)
    };
    for n in &nodes {
        if !n.node_kubeconfig().exists() {
            util::step(&format!("joining node {} with a bootstrap token", n.name));
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
                    .args(["join", "--server", &api_for_nodes])
                    .args(["--token", &token])
                    .arg("--ca-file")
                    .arg(l.data.join("server/pki/ca.crt"))
                    .args(["--node-name", &n.name])
                    .arg("--kubeconfig-out")
                    .arg(n.node_kubeconfig()),
            )?;
        }
    }

    let kubectl = Kubectl(admin_local.clone());
    for n in &nodes {
        util::step(&format!(
            "starting rudder agent of {} (network, service proxy, kubelet)",
            display_name(n)
        ));
        if !running(&l, &n.proc("agent")) {
            let mut cmd = Command::new(&rudder);
            cmd.args(["agent", "run"]);
            agent_args(n, &mut cmd);
            cmd.args(["--node-name", &n.name, "--node-ip", &n.ip]);
            if multi {
                // The socket hooks attach to a cgroup, which namespaces do
                // not separate: Services are reached from the nodes' pods.
                cmd.args(["--node-cgroup", "off"]);
            }
            spawn(&l, &n.proc("agent"), &mut cmd, n.netns.as_deref())?;
        }
    }
    for n in &nodes {
        wait(
            &format!("node {} to be Ready", n.name),
            120,
            &l,
            &n.proc("agent"),
            || {
                kubectl
                    .output(&[
                        "get",
                        "node",
                        &n.name,
                        "-o",
                        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
                    ])
                    .is_some_and(|s| s.trim() == "True")
            },
        )?;
    }
    let which = if multi {
        format!(
            "{} nodes ({})",
            nodes.len(),
            nodes
                .iter()
                .map(|n| format!("{} {}", n.name, n.ip))
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        format!("one node ({host_name}, {host_ip})")
    };
    println!(
        "\nRudder is up: {which}, apiserver https://127.0.0.1:{port}.\n\n  \
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

fn display_name(n: &NodeDirs) -> String {
    if n.netns.is_some() {
        n.name.clone()
    } else {
        "this node".into()
    }
}

/// The agent's flags (shared by `run` and `run --uninstall`).
fn agent_args(n: &NodeDirs, cmd: &mut Command) {
    cmd.arg("--kubeconfig")
        .arg(n.node_kubeconfig())
        .arg("--config")
        .arg(n.agent_config())
        .arg("--containerd-socket")
        .arg(n.containerd_socket())
        .args(["--containerd-namespace", CONTAINERD_NAMESPACE])
        .arg("--root-dir")
        .arg(n.data.join("kubelet"))
        .arg("--run-dir")
        .arg(n.run.join("kubelet"))
        .arg("--pod-log-dir")
        .arg(n.data.join("logs/pods"))
        .arg("--cni-conf-dir")
        .arg(n.cni_conf())
        .arg("--cni-bin-dir")
        .arg(n.cni_bin())
        .arg("--cni-cache-dir")
        .arg(n.data.join("cni/cache"))
        .arg("--ipam-dir")
        .arg(n.data.join("cni/ipam"))
        .args(["--cgroup-root", &n.cgroup_root])
        .args(["--bpf-pin-dir", &n.pin_dir]);
}

/// The node bridge on this machine and, per node, a network namespace with
/// an `eth0` on it (address, default route via this machine, forwarding).
fn node_network(nodes: &[NodeDirs]) -> anyhow::Result<()> {
    let ip = |args: &[&str]| util::run(Command::new("ip").args(args));
    if !Path::new("/sys/class/net").join(NODE_BRIDGE).exists() {
        ip(&["link", "add", NODE_BRIDGE, "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{NODE_NET_HOST}/24"),
            "dev",
            NODE_BRIDGE,
        ])?;
    }
    ip(&["link", "set", NODE_BRIDGE, "up"])?;
    for (i, n) in nodes.iter().enumerate() {
        let ns = n
            .netns
            .as_ref()
            .and_then(|p| p.file_name())
            .and_then(|f| f.to_str())
            .context("a node without a namespace")?
            .to_string();
        if !Path::new("/run/netns").join(&ns).exists() {
            ip(&["netns", "add", &ns])?;
        }
        let host_side = format!("rnode{}", i + 1);
        if !Path::new("/sys/class/net").join(&host_side).exists() {
            ip(&[
                "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns", &ns,
            ])?;
            ip(&["link", "set", &host_side, "master", NODE_BRIDGE, "up"])?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("{}/24", n.ip),
                "dev",
                "eth0",
            ])?;
            ip(&["-n", &ns, "link", "set", "eth0", "up"])?;
            ip(&["-n", &ns, "link", "set", "lo", "up"])?;
            ip(&["-n", &ns, "route", "add", "default", "via", NODE_NET_HOST])?;
        }
        util::run(Command::new("ip").args([
            "netns",
            "exec",
            &ns,
            "sysctl",
            "-q",
            "-w",
            "net.ipv4.ip_forward=1",
        ]))?;
    }
    Ok(())
}

/// A second listener of the local registry (same storage) on the node
/// bridge, where the nodes' kubelets pull from.
fn start_node_registry(l: &Layout, root: &Path) -> anyhow::Result<()> {
    if running(l, "registry-nodes") {
        return Ok(());
    }
    let config = l.data.join("registry-nodes.yml");
    std::fs::write(
        &config,
        registry::config(root, &format!("{NODE_NET_HOST}:5000")),
    )?;
    let mut cmd = Command::new(registry::binary()?);
    cmd.arg("serve").arg(&config);
    spawn(l, "registry-nodes", &mut cmd, None)?;
    wait(
        &format!("the registry on {NODE_NET_HOST}:5000"),
        20,
        l,
        "registry-nodes",
        || std::net::TcpStream::connect((NODE_NET_HOST, 5000)).is_ok(),
    )
}

/// `rudder` (the plugin) and the reference plugins the conflist chains.
fn install_cni_plugins(l: &NodeDirs, bin: &Path) -> anyhow::Result<()> {
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

fn write_agent_config(l: &NodeDirs) -> anyhow::Result<()> {
    let text = format!(
        "# Written by `cargo xtask up`.\n\
         [registries.\"docker.io\"]\nmirrors = [\"http://{reg}\"]\nmirrors_only = true\n\n\
         [network]\nbackend = \"vxlan\"\ncluster-cidr = \"10.244.0.0/16\"\nmasquerade = true\n\
         subnet-file = \"{run}/subnet.env\"\ncni-conf-dir = \"{conf}\"\n\
         cni-bin-dirs = [\"{bin}\"]\nbridge = \"{BRIDGE}\"\n",
        reg = l.registry,
        run = l.run.display(),
        conf = l.cni_conf().display(),
        bin = l.cni_bin().display(),
    );
    std::fs::write(l.agent_config(), text)
        .with_context(|| format!("writing {}", l.agent_config().display()))
}

fn start_containerd(l: &Layout, n: &NodeDirs) -> anyhow::Result<()> {
    let name = n.proc("containerd");
    if running(l, &name) {
        return Ok(());
    }
    let dir = n.data.join("containerd");
    std::fs::create_dir_all(&dir)?;
    let sock = n.containerd_socket();
    let config = format!(
        "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
         [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
        root = dir.join("root").display(),
        state = n.run.join("containerd/state").display(),
        sock = sock.display(),
        opt = dir.join("opt").display(),
    );
    std::fs::write(dir.join("config.toml"), config)?;
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(dir.join("config.toml"));
    spawn(l, &name, &mut cmd, n.netns.as_deref())?;
    wait("containerd to answer", 30, l, &name, || {
        sock.exists() && ctr(n, &["version"]).is_some()
    })
}

fn ctr(n: &NodeDirs, args: &[&str]) -> Option<String> {
    let out = Command::new("ctr")
        .arg("--address")
        .arg(n.containerd_socket())
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

/// Makes `cmd`'s child enter the network namespace `ns` (an open nsfs
/// file, which must stay open until the child is spawned) before it execs.
fn in_netns(cmd: &mut Command, ns: &std::fs::File) {
    use std::os::fd::AsRawFd as _;
    let fd = ns.as_raw_fd();
    // SAFETY: setns(2) is async-signal-safe and touches only the child; the
    // caller keeps `ns` (and so `fd`) open until the child has been spawned.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Starts a background process in its own process group (in network
/// namespace `netns` if given), output to its log, pid in its pid file.
fn spawn(l: &Layout, name: &str, cmd: &mut Command, netns: Option<&Path>) -> anyhow::Result<()> {
    let ns_file = netns
        .map(|p| std::fs::File::open(p).with_context(|| format!("opening {}", p.display())))
        .transpose()?;
    if let Some(f) = &ns_file {
        in_netns(cmd, f);
    }
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
    let nodes = nodes_of(&l);
    for n in &nodes {
        if stop(&l, &n.proc("agent"), Duration::from_secs(10)) {
            println!("stopped rudder agent of {}", display_name(n));
        }
    }
    for n in &nodes {
        // The pods' containers: killed and removed through containerd.
        if running(&l, &n.proc("containerd")) {
            let tasks = ctr(n, &["tasks", "ls", "-q"]).unwrap_or_default();
            for id in tasks.lines().filter(|t| !t.is_empty()) {
                let _ = ctr(n, &["tasks", "kill", "--signal", "SIGKILL", id]);
            }
            let deadline = Instant::now() + Duration::from_secs(10);
            for id in tasks.lines().filter(|t| !t.is_empty()) {
                while ctr(n, &["tasks", "delete", id]).is_none()
                    && ctr(n, &["tasks", "ls", "-q"]).is_some_and(|t| t.lines().any(|x| x == id))
                    && Instant::now() < deadline
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
            }
            let containers = ctr(n, &["containers", "ls", "-q"]).unwrap_or_default();
            for id in containers.lines().filter(|t| !t.is_empty()) {
                let _ = ctr(n, &["containers", "delete", id]);
            }
            if !tasks.trim().is_empty() {
                println!(
                    "removed {} pod containers of {}",
                    tasks.lines().count(),
                    display_name(n)
                );
            }
        }
        if stop(&l, &n.proc("containerd"), Duration::from_secs(10)) {
            println!("stopped containerd of {}", display_name(n));
        }
    }
    let unmounted = unmount_under(&[&l.data, &l.run]);
    if unmounted > 0 {
        println!("unmounted {unmounted} mounts (sandboxes, volumes, snapshots)");
    }
    for n in &nodes {
        // The network (bridge, VXLAN device, routes, nftables) and the BPF
        // pins, from inside the node's namespace.
        if rudder.is_file() && n.agent_config().exists() {
            let mut cmd = Command::new(&rudder);
            cmd.args(["agent", "run"]);
            agent_args(n, &mut cmd);
            cmd.arg("--uninstall");
            let ns_file = n.netns.as_ref().and_then(|p| std::fs::File::open(p).ok());
            if let Some(f) = &ns_file {
                in_netns(&mut cmd, f);
            }
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
        if let Some(ns) = n
            .netns
            .as_ref()
            .and_then(|p| p.file_name())
            .and_then(|f| f.to_str())
        {
            // Its links, VXLAN device, routes and nftables go with it.
            if Path::new("/run/netns").join(ns).exists() {
                match Command::new("ip").args(["netns", "delete", ns]).status() {
                    Ok(s) if s.success() => println!("removed the network namespace {ns}"),
                    _ => eprintln!("could not remove the network namespace {ns}"),
                }
            }
        }
        let _ = std::fs::remove_dir(&n.pin_dir);
    }
    // The pod bridge is the CNI plugin's (made at the first pod): gone once
    // the pods are, so it is removed here.
    if Path::new("/sys/class/net").join(BRIDGE).exists() {
        match Command::new("ip").args(["link", "delete", BRIDGE]).status() {
            Ok(s) if s.success() => println!("removed the pod bridge {BRIDGE}"),
            _ => eprintln!("could not remove the pod bridge {BRIDGE}"),
        }
    }
    if stop(&l, "registry-nodes", Duration::from_secs(5)) {
        println!("stopped the registry's listener on {NODE_NET_HOST}");
    }
    if Path::new("/sys/class/net").join(NODE_BRIDGE).exists() {
        match Command::new("ip")
            .args(["link", "delete", NODE_BRIDGE])
            .status()
        {
            Ok(s) if s.success() => println!("removed the node bridge {NODE_BRIDGE}"),
            _ => eprintln!("could not remove the node bridge {NODE_BRIDGE}"),
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
    let _ = std::fs::remove_dir(BPF_PIN_DIR);
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

/// Asks `f` every 500 ms until it gives a value; fails after `secs`.
fn poll<T>(what: &str, secs: u64, f: &dyn Fn() -> Option<T>) -> anyhow::Result<T> {
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
}

/// Asks `f` every 500 ms until it holds; fails after `secs`.
fn until(what: &str, secs: u64, f: &dyn Fn() -> bool) -> anyhow::Result<()> {
    poll(what, secs, &|| f().then_some(()))
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
    util::step(&format!("smoke test in namespace {ns}"));
    // (name, InternalIP) of every node.
    let nodes: Vec<(String, String)> = run(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={range .items[*]}{.metadata.name} {.status.addresses[?(@.type==\"InternalIP\")].address}{\"\\n\"}{end}",
    ])?
    .lines()
    .filter_map(|l| {
        let (n, ip) = l.split_once(' ')?;
        Some((n.to_string(), ip.trim().to_string()))
    })
    .collect();
    if nodes.is_empty() {
        bail!("smoke: the cluster has no nodes");
    }
    let multi = nodes.len() > 1;
    let replicas = nodes.len().max(2);
    run(&["create", "namespace", &ns])?;
    let result = (|| -> anyhow::Result<()> {
        run(&[
            "-n",
            &ns,
            "create",
            "deployment",
            "web",
            "--image=nginx",
            &format!("--replicas={replicas}"),
        ])?;
        // As users do: a short preStop sleep, so that a pod leaves the
        // Service's endpoints before it stops answering.
        run(&[
            "-n",
            &ns,
            "patch",
            "deployment",
            "web",
            "--type=json",
            "-p",
            r#"[{"op":"add","path":"/spec/template/spec/containers/0/lifecycle","value":{"preStop":{"sleep":{"seconds":2}}}}]"#,
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
        // The patch above rolls the first pods over: wait until only the
        // patched template's pods are left, or the checks below would
        // meet pods that are about to go (or miss ones still to come).
        let want = format!("{replicas} {replicas} {replicas}");
        poll(
            &format!("{replicas} ready pods of web, rolled out"),
            180,
            &|| {
                kc.output(&[
                    "-n",
                    &ns,
                    "get",
                    "deployment",
                    "web",
                    "-o",
                    "jsonpath={.metadata.generation} {.status.observedGeneration} \
                 {.status.updatedReplicas} {.status.readyReplicas} {.status.replicas}",
                ])
                .filter(|r| {
                    let f: Vec<&str> = r.split_whitespace().collect();
                    f.len() == 5 && f[0] == f[1] && f[2..].join(" ") == want
                })
            },
        )?;
        let pods: Vec<String> = poll(&format!("web to have {replicas} pods"), 60, &|| {
            kc.output(&["-n", &ns, "get", "pods", "-l", "app=web", "-o", "name"])
                .filter(|o| o.lines().count() == replicas)
        })?
        .lines()
        .map(|l| l.trim_start_matches("pod/").to_string())
        .collect();
        println!("deployment web: {replicas}/{replicas} ready");
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
            .filter(|e| e.split_whitespace().count() == replicas)
        })?;
        if multi {
            let on = run(&[
                "-n",
                &ns,
                "get",
                "pods",
                "-l",
                "app=web",
                "-o",
                "jsonpath={.items[*].spec.nodeName}",
            ])?;
            let mut used: Vec<&str> = on.split_whitespace().collect();
            used.sort_unstable();
            used.dedup();
            if used.len() < 2 {
                bail!("smoke: web's {replicas} pods are all on {used:?}, not spread");
            }
            println!("web's pods on nodes {used:?}");
        }
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
        if multi {
            println!("ClusterIP from this machine: not a node of this cluster, not tried");
        } else {
            let answer =
                http_get(&format!("{}:80", ip.trim()), "/hostname").with_context(|| {
                    format!("smoke: GET http://{}/hostname from this node", ip.trim())
                })?;
            if !pods.iter().any(|p| *p == answer.trim()) {
                bail!("smoke: the ClusterIP from this node answered {answer:?}");
            }
            println!("ClusterIP from this node: answered by {}", answer.trim());
        }
        let node_port = run(&[
            "-n",
            &ns,
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])?;
        for (node, node_ip) in &nodes {
            let front = format!("{node_ip}:{}", node_port.trim());
            let answer = http_get(&front, "/hostname").with_context(|| {
                format!(
                    "smoke: GET http://{front}/hostname (the NodePort of {node}) from this machine"
                )
            })?;
            if !pods.iter().any(|p| *p == answer.trim()) {
                bail!("smoke: the NodePort {front} answered {answer:?}");
            }
            println!(
                "NodePort {front} ({node}) from this machine: answered by {}",
                answer.trim()
            );
        }
        // A DaemonSet: one pod on every node.
        run(&[
            "-n",
            &ns,
            "create",
            "-f",
            &write_temp(
                &format!("ds-{ns}.yaml"),
                "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: every}\nspec:\n  selector: {matchLabels: {app: every}}\n  template:\n    metadata: {labels: {app: every}}\n    spec:\n      containers: [{name: c, image: busybox:1.28, command: [sleep, '3600']}]\n",
            )?,
        ])?;
        let _ = std::fs::remove_file(std::env::temp_dir().join(format!("ds-{ns}.yaml")));
        poll(
            &format!("the DaemonSet's pod on each of {} nodes", nodes.len()),
            120,
            &|| {
                kc.output(&[
                    "-n",
                    &ns,
                    "get",
                    "daemonset",
                    "every",
                    "-o",
                    "jsonpath={.status.numberReady}",
                ])
                .filter(|r| r.trim() == nodes.len().to_string())
            },
        )?;
        let on = run(&[
            "-n",
            &ns,
            "get",
            "pods",
            "-l",
            "app=every",
            "-o",
            "jsonpath={.items[*].spec.nodeName}",
        ])?;
        let mut on: Vec<&str> = on.split_whitespace().collect();
        on.sort_unstable();
        let mut want: Vec<&str> = nodes.iter().map(|(n, _)| n.as_str()).collect();
        want.sort_unstable();
        if on != want {
            bail!("smoke: the DaemonSet's pods are on {on:?}, not one on each of {want:?}");
        }
        println!("DaemonSet: one ready pod on each of {} nodes", nodes.len());
        if multi {
            node_stops(&l, &kc, &ns)?;
        }
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
        // Last: the rollout replaces web's pods.
        workload_flows(&kc, &ns, &run)?;
        Ok(())
    })();
    run(&["delete", "namespace", &ns, "--wait=true", "--timeout=120s"])?;
    result?;
    println!("smoke test passed; namespace {ns} deleted");
    Ok(())
}

/// The flows of the Kubernetes material users learn from, on `web`: a
/// rolling update and a rollback under a client's requests, a Service with ClientIP session affinity, an init
/// container waiting on `nslookup` of a Service made later, a Job, a
/// CronJob and `kubectl top`.
fn workload_flows(
    kc: &Kubectl,
    ns: &str,
    run: &dyn Fn(&[&str]) -> anyhow::Result<String>,
) -> anyhow::Result<()> {
    let phase = |pod: &str| {
        kc.output(&[
            "-n",
            ns,
            "get",
            "pod",
            pod,
            "-o",
            "jsonpath={.status.phase}",
        ])
        .unwrap_or_default()
    };
    let finished = |pod: &str| matches!(phase(pod).as_str(), "Succeeded" | "Failed");

    // Rolling update and rollback, while a client in a pod requests the
    // Service every 50 ms (3 s timeout each): no request may fail.
    let loader = "while [ ! -e /tmp/stop ]; do \
         if timeout 3 wget -qO- http://$WEB_SERVICE_HOST/hostname >/tmp/o 2>/dev/null; \
         then echo \"ok $(cat /tmp/o)\"; else echo \"fail $?\"; fi; sleep 0.05; done; echo done";
    run(&[
        "-n",
        ns,
        "run",
        "loader",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        loader,
    ])?;
    let answered = || {
        kc.output(&["-n", ns, "logs", "loader"])
            .is_some_and(|l| l.lines().any(|l| l.starts_with("ok ")))
    };
    until("the load client's first answer", 90, &answered)?;
    let revision = || {
        kc.output(&[
            "-n",
            ns,
            "get",
            "deployment",
            "web",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .unwrap_or_default()
    };
    run(&[
        "-n",
        ns,
        "set",
        "image",
        "deployment/web",
        "nginx=nginx:1.25",
    ])?;
    run(&[
        "-n",
        ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=180s",
    ])?;
    let updated = revision();
    run(&["-n", ns, "rollout", "undo", "deployment/web"])?;
    run(&[
        "-n",
        ns,
        "rollout",
        "status",
        "deployment/web",
        "--timeout=180s",
    ])?;
    let back = revision();
    if updated != "nginx:1.25" || back != "nginx" {
        bail!("smoke: rolled to {updated:?} and back to {back:?}");
    }
    // The last old pod has just gone: a few seconds more, for what breaks
    // only after a pod's network is torn down.
    std::thread::sleep(Duration::from_secs(5));
    run(&["-n", ns, "exec", "loader", "--", "touch", "/tmp/stop"])?;
    until("the load client to finish", 30, &|| finished("loader"))?;
    let log = run(&["-n", ns, "logs", "loader"])?;
    let ok = log.lines().filter(|l| l.starts_with("ok ")).count();
    let failed: Vec<&str> = log.lines().filter(|l| l.starts_with("fail")).collect();
    if !failed.is_empty() || !log.lines().any(|l| l == "done") {
        bail!(
            "smoke: during the rollout and rollback, {} of {} requests failed:\n{log}",
            failed.len(),
            ok + failed.len()
        );
    }
    let servers: std::collections::BTreeSet<&str> =
        log.lines().filter_map(|l| l.strip_prefix("ok ")).collect();
    println!(
        "rolling update to nginx:1.25 and rollback to nginx: {ok}/{ok} requests answered \
         throughout, by {} pods",
        servers.len()
    );

    // Session affinity: one client, one backend.
    run(&[
        "-n",
        ns,
        "expose",
        "deployment",
        "web",
        "--name=sticky",
        "--port=80",
        "--session-affinity=ClientIP",
    ])?;
    run(&[
        "-n",
        ns,
        "run",
        "sticky-client",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://$STICKY_SERVICE_HOST/hostname; echo; done",
    ])?;
    until("the sticky client to finish", 90, &|| {
        finished("sticky-client")
    })?;
    let log = run(&["-n", ns, "logs", "sticky-client"])?;
    let mut answers: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    let n = answers.len();
    answers.dedup();
    if n != 10 || answers.len() != 1 {
        bail!("smoke: the ClientIP-affine Service answered {n} requests from {answers:?}");
    }
    println!("sessionAffinity ClientIP: 10/10 answered by {}", answers[0]);

    // An init container waiting on nslookup of a Service not made yet.
    let path = write_temp(
        &format!("waiter-{ns}.yaml"),
        // As the Kubernetes documentation's init-container example writes
        // it: the full name, the namespace read from the service-account
        // volume. (A short name fails with the test image's busybox, 1.35,
        // whose nslookup exits 1 if any search domain answers NXDOMAIN,
        // and whose shell runs that applet whatever else is on PATH.)
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: waiter}}\nspec:\n  restartPolicy: Never\n  initContainers:\n  - {{name: wait, image: busybox:1.28, command: ['sh', '-c', 'until nslookup late.$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace).svc.cluster.local; do sleep 2; done']}}\n  containers:\n  - {{name: main, image: busybox:1.28, command: ['sh', '-c', 'nslookup late.{ns}.svc.cluster.local']}}\n"
        ),
    )?;
    run(&["-n", ns, "create", "-f", &path])?;
    let _ = std::fs::remove_file(&path);
    std::thread::sleep(Duration::from_secs(5));
    let waiting = run(&["-n", ns, "get", "pod", "waiter", "--no-headers"])?;
    if !waiting.contains("Init:0/1") {
        bail!("smoke: the waiter pod is not waiting in its init container: {waiting}");
    }
    run(&[
        "-n",
        ns,
        "expose",
        "deployment",
        "web",
        "--name=late",
        "--port=80",
    ])?;
    until("the waiter pod to finish", 90, &|| finished("waiter"))?;
    if phase("waiter") != "Succeeded" {
        bail!(
            "smoke: the waiter pod failed: {}",
            run(&["-n", ns, "logs", "waiter", "--all-containers"])?
        );
    }
    println!(
        "init container waiting on `nslookup late.<namespace>.svc.cluster.local`: went on once the Service existed"
    );

    // A Job and a CronJob.
    run(&[
        "-n",
        ns,
        "create",
        "job",
        "hello",
        "--image=busybox:1.28",
        "--",
        "sh",
        "-c",
        "echo hello from a job",
    ])?;
    until("the Job to complete", 90, &|| {
        kc.output(&[
            "-n",
            ns,
            "get",
            "job",
            "hello",
            "-o",
            "jsonpath={.status.succeeded}",
        ])
        .is_some_and(|s| s.trim() == "1")
    })?;
    let log = run(&["-n", ns, "logs", "job/hello"])?;
    if !log.contains("hello from a job") {
        bail!("smoke: the Job's log: {log:?}");
    }
    println!("Job: completed, logged {:?}", log.trim());
    run(&[
        "-n",
        ns,
        "create",
        "cronjob",
        "tick",
        "--image=busybox:1.28",
        "--schedule=* * * * *",
        "--",
        "sh",
        "-c",
        "echo tick",
    ])?;
    until("a Job of the CronJob to complete", 150, &|| {
        kc.output(&[
            "-n",
            ns,
            "get",
            "jobs",
            "-o",
            "jsonpath={range .items[?(@.metadata.ownerReferences[0].name==\"tick\")]}{.status.succeeded}{end}",
        ])
        .is_some_and(|s| s.contains('1'))
    })?;
    println!("CronJob: fired on schedule, its Job completed");

    // kubectl top, from the kubelets' resource metrics.
    until("kubectl top pods to show web", 120, &|| {
        kc.output(&["-n", ns, "top", "pods", "--no-headers"])
            .is_some_and(|t| t.lines().any(|l| l.starts_with("web-")))
    })?;
    let top = run(&["top", "nodes", "--no-headers"])?;
    println!(
        "kubectl top: {} node(s) and the pods shown",
        top.lines().count()
    );
    Ok(())
}

/// A node that stops (its agent frozen with SIGSTOP, so its Lease is no
/// longer renewed while its containers run on): the node goes NotReady, is
/// tainted, and a pod tolerating that for 2 s is made again on another
/// node. Thawed (SIGCONT), the node is Ready again and the evicted pod goes.
fn node_stops(l: &Layout, kc: &Kubectl, ns: &str) -> anyhow::Result<()> {
    let get = |args: &[&str]| -> anyhow::Result<String> {
        kc.output(args)
            .with_context(|| format!("smoke: kubectl {}", args.join(" ")))
    };
    let path = write_temp(
        &format!("mover-{ns}.yaml"),
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: mover}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: mover}}\n  template:\n    metadata: {labels: {app: mover}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      tolerations:\n      - {key: node.kubernetes.io/unreachable, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n      - {key: node.kubernetes.io/not-ready, operator: Exists, effect: NoExecute, tolerationSeconds: 2}\n      containers: [{name: c, image: busybox:1.28, command: [sleep, '3600']}]\n",
    )?;
    get(&["-n", ns, "create", "-f", &path])?;
    let _ = std::fs::remove_file(&path);
    let ready_pods = || -> Vec<(String, String)> {
        kc.output(&[
            "-n",
            ns,
            "get",
            "pods",
            "-l",
            "app=mover",
            "-o",
            "jsonpath={range .items[?(@.status.containerStatuses[0].ready==true)]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
        ])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (p, n) = l.split_once(' ')?;
            Some((p.to_string(), n.to_string()))
        })
        .collect()
    };
    until("the mover pod to be ready", 90, &|| ready_pods().len() == 1)?;
    let (first, node) = ready_pods().remove(0);
    let agent = format!("{node}-agent");
    let pid = pid_of(l, &agent).with_context(|| format!("smoke: no running agent of {node}"))?;
    let ready_of = |n: &str| {
        kc.output(&[
            "get",
            "node",
            n,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .unwrap_or_default()
    };
    // The ready condition of web's endpoints on a node.
    let web_on = |n: &str| -> Vec<String> {
        kc.output(&[
            "-n",
            ns,
            "get",
            "endpointslices",
            "-l",
            "kubernetes.io/service-name=web",
            "-o",
            "jsonpath={range .items[*].endpoints[*]}{.nodeName} {.conditions.ready}{\"\\n\"}{end}",
        ])
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (on, ready) = l.split_once(' ')?;
            (on == n).then(|| ready.trim().to_string())
        })
        .collect()
    };
    let started = Instant::now();
    // SAFETY: kill(2) on the pid of our own agent, from its pid file.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let result = (|| -> anyhow::Result<()> {
        until(&format!("node {node} to be NotReady"), 120, &|| {
            ready_of(&node).trim() != "True"
        })?;
        println!(
            "node {node} stopped: {} after {} s",
            ready_of(&node).trim(),
            started.elapsed().as_secs()
        );
        until(
            "the mover pod to be made again on another node",
            120,
            &|| ready_pods().iter().any(|(p, n)| *p != first && *n != node),
        )?;
        let moved = ready_pods();
        println!(
            "its pod {first} made again elsewhere: {moved:?} after {} s",
            started.elapsed().as_secs()
        );
        // web's pod there is not evicted yet (300 s), but it is no longer
        // Ready: the Service stops sending to it.
        until(
            &format!("web's endpoint on {node} to be not ready"),
            60,
            &|| web_on(&node).iter().all(|r| r == "false") && !web_on(&node).is_empty(),
        )?;
        println!("web's endpoint on {node}: not ready while the node is lost");
        Ok(())
    })();
    // SAFETY: as above; the agent is thawed whatever happened.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    result?;
    until(&format!("node {node} to be Ready again"), 90, &|| {
        ready_of(&node).trim() == "True"
    })?;
    until("the evicted pod to go", 90, &|| {
        !get(&["-n", ns, "get", "pods", "-o", "name"])
            .unwrap_or_default()
            .contains(&first)
    })?;
    until(
        &format!("web's endpoint on {node} to be ready again"),
        90,
        &|| {
            let on = web_on(&node);
            !on.is_empty() && on.iter().all(|r| r == "true")
        },
    )?;
    println!(
        "node {node} Ready again; web's pod there ready again; the evicted pod {first} is gone"
    );
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
        // "Forwarding from 127.0.0.1:43567 -> 80". The rest of its output
        // is read to the end: a closed pipe would kill kubectl (SIGPIPE).
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("Forwarding from 127.0.0.1:") {
                    let _ = tx.send(rest.split_whitespace().next().map(str::to_string));
                }
            }
        });
        let local = rx
            .recv_timeout(Duration::from_secs(30))
            .ok()
            .flatten()
            .context("kubectl port-forward printed no local port within 30 s")?;
        http_get(&format!("127.0.0.1:{local}"), path).with_context(|| {
            format!("GET http://127.0.0.1:{local}{path} (forwarded to {pod}:{port})")
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    result.context("smoke: kubectl port-forward")
}

/// Writes `text` to a file under the temporary directory; its path.
fn write_temp(name: &str, text: &str) -> anyhow::Result<String> {
    let p = std::env::temp_dir().join(name);
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(p.display().to_string())
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
