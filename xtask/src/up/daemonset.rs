//! `cargo xtask up --nodes N --agent-daemonset`: a cluster whose nodes run
//! only the kubelet (`rudder agent kubelet`, as a cluster's own kubelet
//! would), on which the agent is installed as operators install it on an
//! existing cluster: `kubectl apply` of `configs/deploy/`, the image
//! `rudder/agent` from the local registry. `smoke --remove-agent` then
//! rolls the DaemonSet over to another image while clients request a
//! Service through it, deletes it, runs the documented clean-up on every
//! node and compares each node with what it was before the agent came.
//!
//! The DaemonSet's hostPath volumes name the node's paths (`/etc/cni/net.d`,
//! `/opt/cni/bin`, `/var/lib/cni`, `/run/rudder`, `/sys/fs/bpf`). So that
//! each node has its own, as separate machines do, every node's containerd
//! and kubelet run in a mount namespace of the node's (`<run>/mnt/node-<i>`,
//! a slave of this machine's) where the node's directories are bound over
//! those paths and a bpffs instance of its own is mounted. Two things stay
//! shared and are set apart in the applied manifests only: the cgroup tree
//! (the agent runs with `--node-cgroup=off`, as in the other multi-node
//! clusters) and the apiserver's address (the ConfigMap's `apiserver-host`
//! and `apiserver-port`, which every cluster sets: the agent serves the
//! `kubernetes` Service, so it cannot reach the apiserver through it).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::{Kubectl, Layout, NODE_NET_HOST, NodeDirs, process};
use crate::{agent_image, registry, util};

/// The file in the data directory that marks a cluster of this mode.
pub(crate) const MARKER: &str = "agent-daemonset";

/// The node's paths the DaemonSet names, and where each node keeps its own
/// (under its data directory, or its run directory for `/run`).
fn node_paths(n: &NodeDirs) -> [(&'static str, PathBuf); 4] {
    [
        ("/etc/cni/net.d", n.cni_conf()),
        ("/opt/cni/bin", n.cni_bin()),
        ("/var/lib/cni", n.data.join("cni/state")),
        ("/run/rudder", n.run.join("host-run-rudder")),
    ]
}

/// Whether `p` is a mount point in this process's mount namespace.
fn is_mount_point(p: &Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let want = p.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split_whitespace().nth(4) == Some(want.as_str()))
}

/// Makes node `n`'s mount namespace (once: a kept one is reused).
pub(crate) fn mount_namespace(l: &Layout, n: &NodeDirs) -> anyhow::Result<()> {
    let file = n
        .mntns
        .as_ref()
        .context("a node without a mount namespace")?;
    let dir = file
        .parent()
        .context("a namespace file without a directory")?;
    std::fs::create_dir_all(dir)?;
    // A namespace file must be on a private mount (else its bind would
    // propagate back into the namespace it names).
    if !is_mount_point(dir) {
        let d = dir.to_string_lossy();
        util::run(Command::new("mount").args(["--bind", &d, &d]))?;
        util::run(Command::new("mount").args(["--make-private", &d]))?;
    }
    if is_mount_point(file) {
        return Ok(());
    }
    std::fs::File::create(file)?;
    let mut script = String::from("set -e\n");
    for (path, own) in node_paths(n) {
        // The mount points on this machine: empty directories if new,
        // noted so that `down` removes them.
        make_mount_point(l, Path::new(path))?;
        std::fs::create_dir_all(&own)?;
        script.push_str(&format!("mount --bind '{}' '{path}'\n", own.display()));
    }
    script.push_str("mount -t bpf bpf /sys/fs/bpf\nmount --make-rshared /sys/fs/bpf\n");
    util::run(
        Command::new("unshare")
            .arg(format!("--mount={}", file.display()))
            .args(["--propagation", "slave", "sh", "-c", &script]),
    )
}

/// Makes `path` and its missing parents, noting each one made (deepest
/// last) in the data directory.
fn make_mount_point(l: &Layout, path: &Path) -> anyhow::Result<()> {
    let missing: Vec<&Path> = path.ancestors().take_while(|p| !p.exists()).collect();
    std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
    let mut made = std::fs::read_to_string(l.data.join(MADE)).unwrap_or_default();
    for p in missing.iter().rev() {
        made.push_str(&format!("{}\n", p.display()));
    }
    std::fs::write(l.data.join(MADE), made)?;
    Ok(())
}

/// The list of directories `make_mount_point` made on this machine.
const MADE: &str = "agent-daemonset-dirs";

/// Removes the directories `make_mount_point` made, deepest first, those
/// still empty only.
pub(crate) fn remove_mount_points(l: &Layout) {
    let made = std::fs::read_to_string(l.data.join(MADE)).unwrap_or_default();
    for p in made.lines().rev() {
        let _ = std::fs::remove_dir(p);
    }
    let _ = std::fs::remove_file(l.data.join(MADE));
}

/// Releases the nodes' mount namespaces (their mounts go with the last
/// process in them) and the private mount holding their files.
pub(crate) fn remove_mount_namespaces(l: &Layout, nodes: &[NodeDirs]) {
    for file in nodes.iter().filter_map(|n| n.mntns.as_ref()) {
        if is_mount_point(file) {
            let _ = Command::new("umount").arg(file).status();
        }
    }
    let dir = l.run.join("mnt");
    if is_mount_point(&dir) {
        let _ = Command::new("umount").arg(&dir).status();
    }
    remove_mount_points(l);
}

/// What a node looks like to an operator checking that the agent left
/// nothing: its links, addresses, routes, nftables and iptables rules,
/// BPF pins and the files under the DaemonSet's host paths.
pub(crate) fn node_state(n: &NodeDirs) -> anyhow::Result<String> {
    let script = "ip -o link show | sed -e 's/^[0-9]*: //' -e 's/ link\\/.*//' | sort\n\
                  ip -o -4 addr show | sed 's/^[0-9]*: //' | sort\n\
                  ip route show table all | sort\n\
                  nft list ruleset\n\
                  iptables-save 2>/dev/null | grep -v '^#' | sed 's/\\[[0-9]*:[0-9]*\\]//'\n\
                  find /sys/fs/bpf /etc/cni/net.d /opt/cni/bin /var/lib/cni /run/rudder | sort\n";
    let out = process::output_in(n, Command::new("sh").args(["-c", script]))?;
    if !out.status.success() {
        bail!(
            "reading the state of {}: {}",
            n.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn state_file(n: &NodeDirs) -> PathBuf {
    n.data.join("state-before-agent.txt")
}

/// The manifests of `configs/deploy/` as this cluster applies them: the
/// apiserver's address set in the ConfigMap, the node cgroup hooks off and
/// the agents' `--proxy-mode` if one is given.
fn manifests(root: &Path, api_port: u16, proxy_mode: Option<&str>) -> anyhow::Result<String> {
    let dir = root.join("configs/deploy");
    let rbac = std::fs::read_to_string(dir.join("rbac.yaml"))?;
    let ds = std::fs::read_to_string(dir.join("daemonset.yaml"))?;
    let replace = |text: &str, from: &str, to: &str| -> anyhow::Result<String> {
        if text.matches(from).count() != 1 {
            bail!("configs/deploy/daemonset.yaml no longer has one {from:?}");
        }
        Ok(text.replace(from, to))
    };
    let ds = replace(
        &ds,
        "  # apiserver-host: \"192.0.2.10\"\n  # apiserver-port: \"6443\"\n",
        &format!("  apiserver-host: \"{NODE_NET_HOST}\"\n  apiserver-port: \"{api_port}\"\n"),
    )?;
    let mode = proxy_mode.map_or(String::new(), |m| format!("        - --proxy-mode={m}\n"));
    let ds = replace(
        &ds,
        "        - --no-kubelet\n",
        &format!("        - --no-kubelet\n        - --node-cgroup=off\n{mode}"),
    )?;
    Ok(format!("{rbac}\n---\n{ds}"))
}

fn kubectl_run(kc: &Kubectl, args: &[&str]) -> anyhow::Result<()> {
    util::run(
        Command::new("kubectl")
            .args(args)
            .env("KUBECONFIG", kc.kubeconfig()),
    )
}

/// Records every node's state, pushes the agent image and applies the
/// manifests; returns once the DaemonSet is rolled out.
pub(crate) fn install(
    root: &Path,
    l: &Layout,
    kc: &Kubectl,
    nodes: &[NodeDirs],
    proxy_mode: Option<&str>,
) -> anyhow::Result<()> {
    for n in nodes {
        if !state_file(n).exists() {
            std::fs::write(state_file(n), node_state(n)?)?;
        }
    }
    agent_image::agent_image(root, registry::DEFAULT_ADDR)?;
    let path = l.data.join("agent-daemonset.yaml");
    std::fs::write(&path, manifests(root, l.api_port, proxy_mode)?)?;
    util::step("kubectl apply -f configs/deploy/ (the agent as a DaemonSet)");
    kubectl_run(kc, &["apply", "-f", &path.to_string_lossy()])?;
    rollout(kc)?;
    proxy_modes(kc, proxy_mode)
}

/// Prints the Service proxy each agent runs, from its log; with a
/// `--proxy-mode` given, every agent must serve Services that way.
fn proxy_modes(kc: &Kubectl, proxy_mode: Option<&str>) -> anyhow::Result<()> {
    let ks = ["-n", "kube-system"];
    let pods = kc
        .output(
            &[
                &ks[..],
                &[
                    "get",
                    "pods",
                    "-l",
                    "app.kubernetes.io/name=rudder-agent",
                    "-o",
                    "jsonpath={range .items[*]}{.metadata.name} {.spec.nodeName}{\"\\n\"}{end}",
                ],
            ]
            .concat(),
        )
        .unwrap_or_default();
    for (pod, node) in pods.lines().filter_map(|l| l.split_once(' ')) {
        let line = rudder_test_harness::poll(
            &format!("the agent {pod} to say how it serves Services"),
            Duration::from_secs(60),
            || {
                let log = kc.output(&[&ks[..], &["logs", pod, "-c", "agent"]].concat())?;
                log.lines()
                    .find(|l| {
                        l.contains("serving Services with")
                            || l.contains("service dataplane loaded")
                    })
                    .map(str::to_owned)
            },
        )?;
        let mode = if line.contains("nftables rules") {
            "nftables"
        } else if line.contains("iptables rules") {
            "iptables"
        } else {
            "ebpf"
        };
        println!("    {node}: the agent serves Services with {mode}");
        if let Some(want) = proxy_mode.filter(|m| *m != "auto")
            && want != mode
        {
            bail!("{pod} on {node} serves Services with {mode}, not {want}: {line}");
        }
    }
    Ok(())
}

/// Waits for the DaemonSet's rollout; fails at once, with the log, when an
/// agent keeps crashing.
fn rollout(kc: &Kubectl) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(240);
    let ks = ["-n", "kube-system"];
    loop {
        let status = [
            &ks[..],
            &[
                "rollout",
                "status",
                "daemonset/rudder-agent",
                "--timeout=5s",
            ],
        ]
        .concat();
        if kc.ok(&status) {
            return Ok(());
        }
        let restarts = kc
            .output(&[&ks[..], &["get", "pods", "-l", "app.kubernetes.io/name=rudder-agent", "-o",
                "jsonpath={range .items[*]}{.metadata.name} {.status.containerStatuses[0].restartCount}{\"\\n\"}{end}"]].concat())
            .unwrap_or_default();
        for (pod, n) in restarts.lines().filter_map(|l| l.split_once(' ')) {
            if n.trim().parse::<u32>().is_ok_and(|n| n >= 3) {
                let log = kc
                    .output(
                        &[
                            &ks[..],
                            &["logs", pod, "-c", "agent", "--previous", "--tail=20"],
                        ]
                        .concat(),
                    )
                    .unwrap_or_default();
                bail!(
                    "the agent keeps crashing in {pod} ({n} restarts); its last log lines:\n{log}"
                );
            }
        }
        if Instant::now() > deadline {
            bail!("the agent DaemonSet was not rolled out within 240 s:\n{restarts}");
        }
    }
}

/// Rolls the DaemonSet over to the image's other tag while a client on
/// every node requests a Service by name (the cluster DNS's ClusterIP,
/// then the Service's, both through the agent) and this machine requests
/// its NodePort on every node: not one request may fail. (`timeout 3`,
/// not `wget -T 3`, which crashes the test images' static busybox.)
pub(crate) fn rolling_update(kc: &Kubectl, nodes: &[NodeDirs]) -> anyhow::Result<()> {
    let ns = format!(
        "roll-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs()
    );
    util::step(&format!(
        "rolling the agent DaemonSet over while clients request a Service (namespace {ns})"
    ));
    kubectl_run(kc, &["create", "namespace", &ns])?;
    let result = rolling_update_in(kc, nodes, &ns);
    let _ = kubectl_run(
        kc,
        &["delete", "namespace", &ns, "--wait=true", "--timeout=120s"],
    );
    result
}

const CLIENTS: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: web}\nspec:\n  replicas: 2\n  selector: {matchLabels: {app: web}}\n  template:\n    metadata: {labels: {app: web}}\n    spec:\n      containers: [{name: web, image: nginx}]\n---\napiVersion: v1\nkind: Service\nmetadata: {name: web}\nspec:\n  type: NodePort\n  selector: {app: web}\n  ports: [{port: 80}]\n---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: client}\nspec:\n  selector: {matchLabels: {app: client}}\n  template:\n    metadata: {labels: {app: client}}\n    spec:\n      terminationGracePeriodSeconds: 1\n      containers:\n      - name: c\n        image: busybox:1.28\n        command: [sh, -c, 'while true; do if timeout 3 wget -q -O /dev/null http://web/; then echo ok; else echo FAIL; fi; sleep 0.2; done']\n";

fn rolling_update_in(kc: &Kubectl, nodes: &[NodeDirs], ns: &str) -> anyhow::Result<()> {
    let path = std::env::temp_dir().join(format!("rudder-{ns}.yaml"));
    std::fs::write(&path, CLIENTS)?;
    kubectl_run(kc, &["-n", ns, "apply", "-f", &path.to_string_lossy()])?;
    let _ = std::fs::remove_file(&path);
    for what in ["deployment/web", "daemonset/client"] {
        kubectl_run(kc, &["-n", ns, "rollout", "status", what, "--timeout=180s"])?;
    }
    let node_port = kc
        .output(&[
            "-n",
            ns,
            "get",
            "service",
            "web",
            "-o",
            "jsonpath={.spec.ports[0].nodePort}",
        ])
        .context("the web Service's node port")?;
    let targets: Vec<String> = nodes
        .iter()
        .map(|n| format!("{}:{}", n.ip, node_port.trim()))
        .collect();
    // This machine's requests to every node's NodePort, in a thread until
    // the rollout is over.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let outside = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0u32, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for t in &targets {
                    match http_ok(t) {
                        Ok(()) => ok += 1,
                        Err(e) => failed.push(format!("{t}: {e:#}")),
                    }
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            (ok, failed)
        })
    };
    let counts_before = client_counts(kc, ns)?;
    // The other of the two tags `agent-image` pushes.
    let current = kc
        .output(&[
            "-n",
            "kube-system",
            "get",
            "daemonset",
            "rudder-agent",
            "-o",
            "jsonpath={.spec.template.spec.containers[0].image}",
        ])
        .context("the agent DaemonSet's image")?;
    let image = if current.trim().ends_with(":latest") {
        format!("rudder/agent:{}", env!("CARGO_PKG_VERSION"))
    } else {
        "rudder/agent:latest".to_string()
    };
    let started = Instant::now();
    let rolled = kubectl_run(
        kc,
        &[
            "-n",
            "kube-system",
            "set",
            "image",
            "daemonset/rudder-agent",
            &format!("agent={image}"),
            &format!("install-cni={image}"),
        ],
    )
    .and_then(|()| rollout(kc));
    // Requests go on a little after the last new pod is ready.
    std::thread::sleep(Duration::from_secs(3));
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (outside_ok, outside_failed) = outside.join().expect("the NodePort client thread");
    rolled?;
    let counts_after = client_counts(kc, ns)?;
    let mut inside_ok = 0;
    let mut inside_failed = 0;
    for (pod, (ok, failed)) in &counts_after {
        let (ok0, failed0) = counts_before.get(pod).copied().unwrap_or((0, 0));
        inside_ok += ok - ok0;
        inside_failed += failed - failed0;
    }
    println!(
        "    rollout to {image} in {:.1} s: pods' requests {inside_ok} answered, {inside_failed} failed; \
         NodePort requests from this machine {outside_ok} answered, {} failed",
        started.elapsed().as_secs_f64(),
        outside_failed.len()
    );
    if inside_failed > 0 || !outside_failed.is_empty() {
        bail!(
            "requests failed while the agent rolled over: {inside_failed} from pods, {} from \
             outside ({:?})",
            outside_failed.len(),
            outside_failed.iter().take(5).collect::<Vec<_>>()
        );
    }
    if inside_ok < 10 * nodes.len() as u32 || outside_ok < 10 {
        bail!(
            "too few requests during the rollout ({inside_ok} from pods, {outside_ok} from outside)"
        );
    }
    Ok(())
}

/// Each client pod's (answered, failed) request count so far, from its log.
fn client_counts(
    kc: &Kubectl,
    ns: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, (u32, u32)>> {
    let pods = kc
        .output(&["-n", ns, "get", "pods", "-l", "app=client", "-o", "name"])
        .context("listing the client pods")?;
    let mut counts = std::collections::BTreeMap::new();
    for pod in pods.lines().filter(|p| !p.is_empty()) {
        let log = kc
            .output(&["-n", ns, "logs", pod])
            .with_context(|| format!("the log of {pod}"))?;
        let ok = log.lines().filter(|l| *l == "ok").count() as u32;
        let failed = log.lines().filter(|l| *l == "FAIL").count() as u32;
        counts.insert(pod.to_string(), (ok, failed));
    }
    Ok(counts)
}

/// One HTTP GET with a short timeout; Ok on a 200.
fn http_ok(addr: &str) -> anyhow::Result<()> {
    use std::io::{Read as _, Write as _};
    let sock: std::net::SocketAddr = addr.parse()?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(3)))?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: web\r\n\r\n")?;
    let mut head = [0u8; 16];
    s.read_exact(&mut head[..12])?;
    if !head.starts_with(b"HTTP/1.1 200") && !head.starts_with(b"HTTP/1.0 200") {
        bail!("answered {:?}", String::from_utf8_lossy(&head[..12]));
    }
    Ok(())
}

/// Deletes the DaemonSet, runs the documented clean-up on every node
/// (`rudder agent run --no-kubelet --uninstall` with the ConfigMap's
/// configuration) and compares each node with what it was before the
/// agent came.
pub(crate) fn remove_agent(rudder: &Path, kc: &Kubectl, nodes: &[NodeDirs]) -> anyhow::Result<()> {
    util::step("removing the agent: the DaemonSet, then the clean-up on every node");
    kubectl_run(
        kc,
        &[
            "-n",
            "kube-system",
            "delete",
            "daemonset",
            "rudder-agent",
            "--wait=true",
            "--timeout=120s",
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while !kc
        .output(&[
            "-n",
            "kube-system",
            "get",
            "pods",
            "-l",
            "app.kubernetes.io/name=rudder-agent",
            "-o",
            "name",
        ])
        .is_some_and(|s| s.trim().is_empty())
    {
        if Instant::now() > deadline {
            bail!("the agent's pods were still there 120 s after the DaemonSet was deleted");
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let config = kc
        .output(&[
            "-n",
            "kube-system",
            "get",
            "configmap",
            "rudder-agent",
            "-o",
            "jsonpath={.data.agent\\.toml}",
        ])
        .context("the agent's ConfigMap")?;
    let mut differ = Vec::new();
    for n in nodes {
        let conf = n.data.join("agent-daemonset.toml");
        std::fs::write(&conf, &config)?;
        let out = process::output_in(
            n,
            Command::new(rudder)
                .args([
                    "agent",
                    "run",
                    "--no-kubelet",
                    "--uninstall",
                    "--node-cgroup=off",
                ])
                .args(["--node-name", &n.name])
                .arg("--config")
                .arg(&conf),
        )?;
        if !out.status.success() {
            bail!(
                "the clean-up on {} failed: {}",
                n.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The plugin the DaemonSet's init container installed.
        let out = process::output_in(n, Command::new("rm").args(["-f", "/opt/cni/bin/rudder"]))?;
        if !out.status.success() {
            bail!(
                "removing the CNI plugin of {}: {}",
                n.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let before = std::fs::read_to_string(state_file(n))
            .with_context(|| format!("the state of {} before the agent", n.name))?;
        let after = node_state(n)?;
        if before != after {
            differ.push(format!(
                "{}:\n  before: {:?}\n  after:  {:?}",
                n.name,
                lines_not_in(&before, &after),
                lines_not_in(&after, &before)
            ));
        }
    }
    if !differ.is_empty() {
        bail!(
            "the nodes are not as they were before the agent:\n{}",
            differ.join("\n")
        );
    }
    println!(
        "    every node is as it was before the agent (links, addresses, routes, rules, pins, files)"
    );
    Ok(())
}

fn lines_not_in<'a>(a: &'a str, b: &str) -> Vec<&'a str> {
    a.lines().filter(|l| !b.lines().any(|x| x == *l)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifests_are_applied_with_the_local_address_and_no_cgroup_hooks() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let text = manifests(root, 16443, None).unwrap();
        assert!(text.contains("  apiserver-host: \"10.99.0.1\"\n  apiserver-port: \"16443\"\n"));
        assert!(text.contains("- --no-kubelet\n        - --node-cgroup=off\n        - --config"));
        assert!(text.contains("kind: ClusterRole\n"));
        let text = manifests(root, 16443, Some("nftables")).unwrap();
        assert!(text.contains("- --node-cgroup=off\n        - --proxy-mode=nftables\n"));
    }

    #[test]
    fn differences_are_the_lines_one_side_lacks() {
        assert_eq!(lines_not_in("a\nb\nc", "a\nc"), vec!["b"]);
        assert!(lines_not_in("a", "a\nb").is_empty());
    }
}
