//! A test node: `rudder server`, a private containerd, and `rudder agent
//! kubelet` (or `agent run --no-network`, the kubelet and the eBPF service
//! proxy) inside a network namespace of the test's own, with the reference
//! `bridge` + `host-local` CNI plugins; the polling helpers the kubelet
//! tests share.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rudder_test_harness::{
    BpfPinDir, ChildGuard, Containerd, LoopbackRelay, NetNs, TempDir, require_root, unique_name,
    workspace_bin,
};
use serde_json::Value;

use super::kube::{Kubectl, Server, newest};

pub(crate) const REGISTRY_PORT: u16 = 5000;

pub(crate) struct Node {
    // Drop order: the kubelet first, then containerd, the relay, the netns.
    pub(crate) kubelet: Option<ChildGuard>,
    pub(crate) containerd: Containerd,
    // After containerd (whose shims hold the containers' cgroups).
    pub(crate) _cgroups: CgroupRoot,
    pub(crate) _relay: LoopbackRelay,
    pub(crate) _back: LoopbackRelay,
    pub(crate) ns: NetNs,
    pub(crate) kubelet_port: u16,
    pub(crate) server: Server,
    pub(crate) dir: TempDir,
    pub(crate) name: String,
    pub(crate) cgroup_root: String,
    /// `rudder agent run --no-network` (kubelet + service proxy) instead of
    /// `rudder agent kubelet`: the proxy's pins (removed after the agent
    /// stops) and its metrics port inside the namespace.
    pub(crate) proxy: Option<(BpfPinDir, u16)>,
    /// Flags the next [`Node::start_kubelet`] adds.
    pub(crate) extra_kubelet_args: Vec<String>,
}

impl Node {
    pub(crate) fn start() -> Self {
        Self::start_agent(false)
    }

    /// The kubelet and the eBPF service proxy in one agent.
    pub(crate) fn start_with_proxy() -> Self {
        Self::start_agent(true)
    }

    pub(crate) fn start_agent(with_proxy: bool) -> Self {
        require_root();
        let server = Server::start();
        let port: u16 = std::fs::read_to_string(server.kubeconfig())
            .unwrap()
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("server: https://127.0.0.1:")
                    .map(|p| p.trim().parse().unwrap())
            })
            .expect("the kubeconfig names a loopback port");
        let ns = NetNs::new();
        let relay = LoopbackRelay::start(&ns, &[port, REGISTRY_PORT]);
        // The kubelet API inside, on a port free on the host, relayed out
        // for the apiserver.
        let kubelet_port = rudder_test_harness::unused_port();
        let back = LoopbackRelay::start_into(&ns, &[kubelet_port]);
        let containerd = Containerd::start();
        let dir = TempDir::new();
        let name = format!("node-{}", unique_name().to_lowercase().replace('_', "-"));
        let name: String = name
            .chars()
            .take(40)
            .collect::<String>()
            .trim_end_matches('-')
            .to_string();
        // A conflist for the reference plugins on a bridge of this test's.
        let conf_dir = dir.join("net.d");
        std::fs::create_dir_all(&conf_dir).unwrap();
        std::fs::write(
            conf_dir.join("10-test.conflist"),
            serde_json::json!({
                "cniVersion": "1.0.0",
                "name": "kubelet-test",
                "plugins": [{
                    "type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false,
                    "hairpinMode": true,
                    "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/24"}]],
                             "routes": [{"dst": "0.0.0.0/0"}],
                             "dataDir": dir.join("ipam").display().to_string()}
                }]
            })
            .to_string(),
        )
        .unwrap();
        let cgroup_root = format!("/{}", unique_name());
        let mut n = Self {
            kubelet: None,
            containerd,
            _cgroups: CgroupRoot(cgroup_root.clone()),
            _relay: relay,
            _back: back,
            ns,
            kubelet_port,
            server,
            dir,
            name,
            cgroup_root,
            proxy: with_proxy.then(|| (BpfPinDir::new(), 10249)),
            extra_kubelet_args: Vec::new(),
        };
        n.start_kubelet();
        let k = n.kubectl();
        wait("the node to be Ready", 60, || {
            let out = k.ok(&["get", "nodes", "--no-headers"]);
            out.lines()
                .any(|l| l.starts_with(&n.name) && l.contains(" Ready "))
                .then_some(())
        });
        n
    }

    pub(crate) fn start_kubelet(&mut self) {
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.dir.join("kubelet.log"))
            .unwrap();
        let config = self.dir.join("agent.toml");
        std::fs::write(&config, "[registries.\"docker.io\"]\nmirrors = [\"http://127.0.0.1:5000\"]\nmirrors_only = true\n").unwrap();
        let mut cmd = Command::new(workspace_bin("rudder"));
        match &self.proxy {
            None => {
                cmd.args(["agent", "kubelet"]);
            }
            Some((pins, port)) => {
                cmd.args(["agent", "run", "--no-network", "--pod-bridge", "cni0"])
                    .arg("--bpf-pin-dir")
                    .arg(pins.path())
                    .args(["--proxy-metrics-address", &format!("127.0.0.1:{port}")]);
            }
        }
        cmd.args(["--node-name", &self.name, "--node-ip", "127.0.0.1"])
            .arg("--kubeconfig")
            .arg(self.server.kubeconfig())
            .arg("--config")
            .arg(&config)
            .arg("--containerd-socket")
            .arg(self.containerd.address())
            .args(["--containerd-namespace", self.containerd.namespace()])
            .arg("--root-dir")
            .arg(self.dir.join("root"))
            .arg("--run-dir")
            .arg(self.dir.join("run"))
            .arg("--pod-log-dir")
            .arg(self.dir.join("logs"))
            .arg("--cni-conf-dir")
            .arg(self.dir.join("net.d"))
            .args(["--cni-bin-dir", "/usr/lib/cni"])
            .arg("--cni-cache-dir")
            .arg(self.dir.join("cni-cache"))
            .args(["--cgroup-root", &self.cgroup_root])
            .args(["--port", &self.kubelet_port.to_string()])
            // Test machines' disks are mostly build output: DiskPressure at
            // 2 % free rather than the kubelet's 10 %, as kind users set it.
            .args([
                "--eviction-hard",
                "memory.available<100Mi,nodefs.available<2%,nodefs.inodesFree<5%",
            ])
            .arg("--pod-manifest-path")
            .arg(self.dir.join("manifests"))
            .args(&self.extra_kubelet_args)
            .env(
                "RUST_LOG",
                "info,rudder_agent=debug,rudder_kubelet=debug,rudder_runtime=debug",
            )
            .stdout(Stdio::null())
            .stderr(log);
        self.kubelet = Some(ChildGuard(
            self.ns.spawn(&mut cmd).expect("start the kubelet"),
        ));
    }

    pub(crate) fn kubectl(&self) -> Kubectl<'_> {
        Kubectl {
            bin: newest(),
            server: &self.server,
        }
    }

    pub(crate) fn pod(&self, name: &str) -> Value {
        serde_json::from_str(&self.kubectl().ok(&["get", "pod", name, "-o", "json"])).unwrap()
    }

    pub(crate) fn log_of(&self) -> String {
        std::fs::read_to_string(self.dir.join("kubelet.log")).unwrap_or_default()
    }

    /// Waits for `f` to hold on the pod's JSON.
    pub(crate) fn wait_pod(
        &self,
        name: &str,
        what: &str,
        secs: u64,
        f: impl Fn(&Value) -> bool,
    ) -> Value {
        let start = Instant::now();
        loop {
            let p = self.pod(name);
            if f(&p) {
                return p;
            }
            assert!(
                start.elapsed() < Duration::from_secs(secs),
                "pod {name}: {what} not within {secs} s; pod status:\n{}\nkubelet log (tail):\n{}",
                serde_json::to_string_pretty(&p["status"]).unwrap(),
                tail(&self.log_of(), 40)
            );
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    pub(crate) fn containers_of(&self) -> Vec<String> {
        self.containerd
            .ctr_ok(&["containers", "ls", "-q"])
            .lines()
            .map(str::to_string)
            .collect()
    }

    pub(crate) fn container_log(&self, pod: &Value, container: &str, attempt: u32) -> String {
        let m = &pod["metadata"];
        let dir = self.dir.join("logs").join(format!(
            "{}_{}_{}",
            m["namespace"].as_str().unwrap(),
            m["name"].as_str().unwrap(),
            m["uid"].as_str().unwrap()
        ));
        std::fs::read_to_string(dir.join(container).join(format!("{attempt}.log")))
            .unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kubelet.take();
        // Sandboxes the kubelet left (tests that stop it midway).
        for e in std::fs::read_dir(self.dir.join("run/pods"))
            .into_iter()
            .flatten()
            .flatten()
        {
            // A shared PID namespace's holder, by its recorded PID and
            // only while it still holds that namespace.
            if let Some(pid) = std::fs::read_to_string(e.path().join("pause.pid"))
                .ok()
                .and_then(|t| t.trim().parse::<i32>().ok())
            {
                use std::os::unix::fs::MetadataExt as _;
                let ino = |p: PathBuf| std::fs::metadata(p).map(|m| (m.dev(), m.ino())).ok();
                let theirs = ino(PathBuf::from(format!("/proc/{pid}/ns/pid")));
                if pid > 0 && theirs.is_some() && theirs == ino(e.path().join("pid")) {
                    // SAFETY: a signal to the process just checked.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            for n in ["net", "ipc", "uts", "pid"] {
                if let Ok(c) = std::ffi::CString::new(e.path().join(n).display().to_string()) {
                    // SAFETY: a NUL-terminated path; not being mounted is fine.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
    }
}

/// The test's cgroup parent, removed (with what the pods left below it)
/// once containerd and its shims are gone.
pub(crate) struct CgroupRoot(pub(crate) String);

impl Drop for CgroupRoot {
    fn drop(&mut self) {
        let rel = self.0.trim_start_matches('/');
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            remove_tree(&hierarchy.path().join(rel));
        }
        remove_tree(&PathBuf::from("/sys/fs/cgroup").join(rel));
    }
}

pub(crate) fn remove_tree(p: &std::path::Path) {
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                remove_tree(&e.path());
            }
        }
        let _ = std::fs::remove_dir(p);
    }
}

pub(crate) fn tail(s: &str, n: usize) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

pub(crate) fn wait<T>(what: &str, secs: u64, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(secs),
            "{what}: not within {secs} s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

pub(crate) fn phase(p: &Value) -> &str {
    p["status"]["phase"].as_str().unwrap_or_default()
}

pub(crate) fn status_of<'a>(p: &'a Value, key: &str, name: &str) -> &'a Value {
    p["status"][key]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["name"] == name))
        .unwrap_or(&Value::Null)
}

pub(crate) fn condition(p: &Value, t: &str) -> String {
    p["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|c| c["type"] == t))
        .and_then(|c| c["status"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A pod that requests `url` `n` times (5 s timeout each) and prints each
/// answer on a line, then `done`.
pub(crate) fn client(k: &Kubectl<'_>, name: &str, url: &str, n: u32) {
    k.apply(
        &["apply", "-f", "-"],
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  restartPolicy: Never
  containers:
  - name: c
    image: busybox:1.28
    command: ['sh', '-c', 'for i in $(seq 1 {n}); do timeout 5 wget -q -O - {url} 2>&1; echo; done; echo done']
"#
        ),
    );
}

/// Runs a [`client`] to the end and returns its answers.
pub(crate) fn answers(node: &Node, name: &str, url: &str, n: u32) -> Vec<String> {
    let k = node.kubectl();
    client(&k, name, url, n);
    let log = wait(&format!("{name} to finish"), 120, || {
        let p = node.pod(name);
        matches!(p["status"]["phase"].as_str(), Some("Succeeded" | "Failed"))
            .then(|| k.ok(&["logs", name]))
    });
    log.lines()
        .filter(|l| !l.is_empty() && *l != "done")
        .map(str::to_owned)
        .collect()
}

/// A pod whose container `web` serves /www on 127.0.0.1:8080 only (so
/// only port-forward reaches it): index.html says hello-from-the-pod, `big`
/// is 3 MiB of random bytes with its sha256sum in big.sum. Started and
/// Running when this returns; for the client libraries' stream tests.
pub(crate) fn start_httpd_pod(node: &Node, name: &str) {
    let manifest = format!(
        r#"
apiVersion: v1
kind: Pod
metadata: {{name: {name}}}
spec:
  containers:
  - name: web
    image: busybox:1.28
    command: ['sh', '-c', 'mkdir -p /www && echo hello-from-the-pod > /www/index.html && dd if=/dev/urandom of=/www/big bs=1024 count=3072 2>/dev/null && sha256sum /www/big > /www/big.sum && exec httpd -f -p 127.0.0.1:8080 -h /www']
"#
    );
    node.kubectl().apply(&["apply", "-f", "-"], &manifest);
    node.wait_pod(name, "Running", 90, |p| p["status"]["phase"] == "Running");
}
