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
//! `smoke` (`up/smoke.rs`) runs the smoke checks (`tests/smoke`) against a
//! running cluster.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{ebpf, images, registry, setup, util};

mod daemonset;
mod process;
mod smoke;
use process::{running, spawn, stop, wait};
pub(crate) use smoke::smoke;

/// Where `up` keeps its state, and how it reaches the cluster.
pub(crate) struct Layout {
    /// Persistent: the store, PKI, kubelet root, pod logs, IPAM, images.
    pub(crate) data: PathBuf,
    /// Volatile: sockets, pid files, namespace files.
    pub(crate) run: PathBuf,
    pub(crate) api_port: u16,
    /// Nodes that run only the kubelet, the agent as a DaemonSet
    /// (`up/daemonset.rs`).
    pub(crate) daemonset: bool,
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
    /// The mount namespace they run in (`None`: this machine's).
    mntns: Option<PathBuf>,
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
            mntns: None,
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
            mntns: l.daemonset.then(|| l.run.join("mnt").join(&name)),
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
            daemonset: data.join(daemonset::MARKER).exists(),
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
    /// Nodes with only the kubelet; the agent applied as a DaemonSet.
    pub(crate) agent_daemonset: bool,
    /// The agents' `--proxy-mode` (their default, `auto`, when `None`).
    pub(crate) proxy_mode: Option<String>,
}

pub(crate) fn up(root: &Path, opts: &UpOptions) -> anyhow::Result<()> {
    check_options(opts)?;
    let mut l = Layout::new(opts.data_dir.clone(), opts.api_port);
    let existing = nodes_of(&l);
    let was_multi = existing.iter().any(|n| n.netns.is_some());
    if l.admin_kubeconfig().exists()
        && (was_multi != (opts.nodes > 1) || l.daemonset != opts.agent_daemonset)
    {
        bail!(
            "{} holds a cluster of {} node(s){}: `cargo xtask down --purge` first to make another",
            l.data.display(),
            existing.len(),
            if l.daemonset {
                " with the agent as a DaemonSet"
            } else {
                ""
            },
        );
    }
    std::fs::create_dir_all(&l.data)?;
    if opts.agent_daemonset {
        std::fs::write(l.data.join(daemonset::MARKER), "")?;
        l.daemonset = true;
    }
    util::step("checking and installing prerequisites");
    setup::run(false)?;
    let bin = build_binaries(root, opts.no_build)?;
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
        install_cni_plugins(n, &bin, !l.daemonset)?;
        write_agent_config(n, !l.daemonset)?;
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
    if l.daemonset {
        util::step("making the nodes' mount namespaces (their own CNI, /run/rudder and bpffs)");
        for n in &nodes {
            daemonset::mount_namespace(&l, n)?;
        }
    }

    for n in &nodes {
        util::step(&format!("starting containerd of {}", display_name(n)));
        start_containerd(&l, n)?;
    }

    let admin_local = start_server(&l, &rudder, &host_ip, &host_name, multi)?;
    join_nodes(&l, &nodes, &rudder, &admin_local, multi)?;

    let kubectl = Kubectl::new(admin_local.clone());
    start_agents(&l, &nodes, &rudder, multi, opts.proxy_mode.as_deref())?;
    wait_nodes(root, &l, &kubectl, &nodes, opts.proxy_mode.as_deref())?;
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

/// Refuses what `up` cannot do: without root, more than 9 nodes, a
/// DaemonSet cluster of one node.
fn check_options(opts: &UpOptions) -> anyhow::Result<()> {
    if !util::is_root() {
        bail!(
            "cargo xtask up needs root (it starts containerd, makes the pod network and loads BPF \
             programs): run it with sudo"
        );
    }
    if !(1..=9).contains(&opts.nodes) {
        bail!("--nodes {}: from 1 to 9 nodes", opts.nodes);
    }
    if opts.agent_daemonset && opts.nodes < 2 {
        bail!(
            "--agent-daemonset needs --nodes 2 or more (each node a namespace of its own, so that \
             the DaemonSet's host paths are the node's and not this machine's)"
        );
    }
    Ok(())
}

/// Builds the eBPF objects and the release binaries (unless `no_build`);
/// the directory they are in.
fn build_binaries(root: &Path, no_build: bool) -> anyhow::Result<PathBuf> {
    let target = util::target_dir(root);
    if no_build {
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
    Ok(target.join("release"))
}

/// Waits for every node to register (then, for a DaemonSet cluster,
/// installs the agent) and to be Ready.
fn wait_nodes(
    root: &Path,
    l: &Layout,
    kubectl: &Kubectl,
    nodes: &[NodeDirs],
    proxy_mode: Option<&str>,
) -> anyhow::Result<()> {
    if l.daemonset {
        for n in nodes {
            wait(
                &format!("node {} to register", n.name),
                60,
                l,
                &n.proc("agent"),
                || kubectl.ok(&["get", "node", &n.name]),
            )?;
        }
        daemonset::install(root, l, kubectl, nodes, proxy_mode)?;
    }
    for n in nodes {
        wait(
            &format!("node {} to be Ready", n.name),
            120,
            l,
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
    Ok(())
}

/// Starts `rudder server` (unless running) and waits for it; returns the
/// admin kubeconfig naming loopback, for the tools on this machine.
fn start_server(
    l: &Layout,
    rudder: &Path,
    host_ip: &str,
    host_name: &str,
    multi: bool,
) -> anyhow::Result<PathBuf> {
    util::step("starting rudder server (embedded store)");
    if !running(l, "server") {
        let mut cmd = Command::new(rudder);
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
        spawn(l, "server", &mut cmd, None)?;
    }
    let kubectl = Kubectl::new(l.admin_kubeconfig());
    wait("the apiserver to answer /readyz", 90, l, "server", || {
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
    Ok(admin_local)
}

/// Joins every node not joined yet with a bootstrap token (its kubeconfig
/// under its data directory). Nodes in namespaces of their own reach the
/// apiserver on the node bridge.
fn join_nodes(
    l: &Layout,
    nodes: &[NodeDirs],
    rudder: &Path,
    admin_local: &Path,
    multi: bool,
) -> anyhow::Result<()> {
    let api_for_nodes = if multi {
        format!("https://{NODE_NET_HOST}:{}", l.api_port)
    } else {
        format!("https://127.0.0.1:{}", l.api_port)
    };
    for n in nodes {
        if !n.node_kubeconfig().exists() {
            util::step(&format!("joining node {} with a bootstrap token", n.name));
            let out = Command::new(rudder)
                .args(["token", "create", "--kubeconfig"])
                .arg(admin_local)
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
                Command::new(rudder)
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
    Ok(())
}

/// Every node's agent (`rudder agent run`), or only its kubelet (`rudder
/// agent kubelet`) where the agent comes as a DaemonSet. The process is
/// `<node>-agent` either way.
fn start_agents(
    l: &Layout,
    nodes: &[NodeDirs],
    rudder: &Path,
    multi: bool,
    proxy_mode: Option<&str>,
) -> anyhow::Result<()> {
    for n in nodes {
        let what = if l.daemonset {
            "kubelet"
        } else {
            "network, service proxy, kubelet"
        };
        util::step(&format!(
            "starting rudder agent of {} ({what})",
            display_name(n)
        ));
        if running(l, &n.proc("agent")) {
            continue;
        }
        let mut cmd = Command::new(rudder);
        if l.daemonset {
            cmd.args(["agent", "kubelet"]);
            kubelet_args(n, &mut cmd);
        } else {
            cmd.args(["agent", "run"]);
            agent_args(n, &mut cmd);
            if let Some(m) = proxy_mode {
                cmd.args(["--proxy-mode", m]);
            }
        }
        cmd.args(["--node-name", &n.name, "--node-ip", &n.ip]);
        if multi && !l.daemonset {
            // The socket hooks attach to a cgroup, which namespaces do
            // not separate: Services are reached from the nodes' pods.
            cmd.args(["--node-cgroup", "off"]);
        }
        spawn(l, &n.proc("agent"), &mut cmd, Some(n))?;
    }
    Ok(())
}

fn display_name(n: &NodeDirs) -> String {
    if n.netns.is_some() {
        n.name.clone()
    } else {
        "this node".into()
    }
}

/// The kubelet's flags that place its state under the node's directories
/// (its CNI paths are the node's `/etc/cni/net.d` and `/opt/cni/bin`,
/// bound to the node's own in its mount namespace).
fn kubelet_args(n: &NodeDirs, cmd: &mut Command) {
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
        .arg("--cni-cache-dir")
        .arg(n.data.join("cni/cache"))
        .args(["--cgroup-root", &n.cgroup_root]);
}

/// The agent's flags (shared by `run` and `run --uninstall`): the
/// kubelet's, and where the network daemon and the proxy keep theirs.
fn agent_args(n: &NodeDirs, cmd: &mut Command) {
    kubelet_args(n, cmd);
    cmd.arg("--cni-conf-dir")
        .arg(n.cni_conf())
        .arg("--cni-bin-dir")
        .arg(n.cni_bin())
        .arg("--ipam-dir")
        .arg(n.data.join("cni/ipam"))
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
    )?;
    same_storage()
}

/// The nodes' listener must serve what was pushed to 127.0.0.1:5000: a
/// registry started from another checkout keeps its images elsewhere, and
/// every pull would fail with "not found".
fn same_storage() -> anyhow::Result<()> {
    let local = registry::Registry::new(registry::DEFAULT_ADDR).catalog()?;
    let nodes = registry::Registry::new(&format!("{NODE_NET_HOST}:5000")).catalog()?;
    if local != nodes {
        anyhow::bail!(
            "the registry on {} serves {local:?} but the nodes' listener on {NODE_NET_HOST}:5000 \
             serves {nodes:?}: the one on {} was started from another checkout; \
             stop it (`cargo xtask down` in that checkout) and retry",
            registry::DEFAULT_ADDR,
            registry::DEFAULT_ADDR,
        );
    }
    Ok(())
}

/// `rudder` (the plugin) and the reference plugins the conflist chains.
///
/// Where the agent comes as a DaemonSet (`with_rudder` false), its init
/// container installs `rudder`, and the reference plugins are copies, as
/// the `kubernetes-cni` package leaves them on a node (a link to
/// `/opt/cni/bin` would name the node's own directory in its namespace).
fn install_cni_plugins(l: &NodeDirs, bin: &Path, with_rudder: bool) -> anyhow::Result<()> {
    let mut links = Vec::new();
    if with_rudder {
        links.push(("rudder".to_string(), bin.join("rudder-cni")));
    }
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
        if with_rudder {
            std::os::unix::fs::symlink(&target, &link)
        } else {
            std::fs::copy(&target, &link).map(|_| ())
        }
        .with_context(|| format!("installing {} as {}", target.display(), link.display()))?;
    }
    Ok(())
}

/// The node's agent configuration; with `network` false (the kubelet alone)
/// only the registry mirror.
fn write_agent_config(l: &NodeDirs, network: bool) -> anyhow::Result<()> {
    let mut text = format!(
        "# Written by `cargo xtask up`.\n\
         [registries.\"docker.io\"]\nmirrors = [\"http://{reg}\"]\nmirrors_only = true\n",
        reg = l.registry,
    );
    if network {
        text.push_str(&format!(
            "\n[network]\nbackend = \"vxlan\"\ncluster-cidr = \"10.244.0.0/16\"\nmasquerade = true\n\
         subnet-file = \"{run}/subnet.env\"\nproxy-socket = \"{run}/proxy.sock\"\ncni-conf-dir = \"{conf}\"\n\
         cni-bin-dirs = [\"{bin}\"]\nbridge = \"{BRIDGE}\"\n",
            run = l.run.display(),
            conf = l.cni_conf().display(),
            bin = l.cni_bin().display(),
        ));
    }
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
    let config = rudder_test_harness::containerd::config_toml(
        &dir.join("root"),
        &n.run.join("containerd/state"),
        &sock,
        &dir.join("opt"),
    );
    std::fs::write(dir.join("config.toml"), config)?;
    let mut cmd = Command::new("containerd");
    cmd.arg("--config").arg(dir.join("config.toml"));
    spawn(l, &name, &mut cmd, Some(n))?;
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

use rudder_test_harness::Kubectl;

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
    // A node's own mounts (its containers' too) go with its mount
    // namespace, now that no process is left in it.
    daemonset::remove_mount_namespaces(&l, &nodes);
    let unmounted = unmount_under(&[&l.data, &l.run]);
    if unmounted > 0 {
        println!("unmounted {unmounted} mounts (sandboxes, volumes, snapshots)");
    }
    for n in &nodes {
        // The network (bridge, VXLAN device, routes, nftables) and the BPF
        // pins, from inside the node's namespace.
        // (A DaemonSet's agent kept all of it in the node's namespaces.)
        if rudder.is_file() && n.agent_config().exists() && !l.daemonset {
            let mut cmd = Command::new(&rudder);
            cmd.args(["agent", "run"]);
            agent_args(n, &mut cmd);
            cmd.arg("--uninstall");
            match process::output_in(n, &mut cmd) {
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
