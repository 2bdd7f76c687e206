//! The official Python client (`kubernetes` on PyPI, installed by `cargo
//! xtask setup` into target/rudder/python) against `rudder server`:
//! tests/python/client_flow.py, with a server that compacts every second so
//! that watch resumption and the informer's re-list after 410 Gone are
//! exercised; tests/python/node_flow.py, exec, attach and port-forward through a
//! real kubelet.

mod support;

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rudder_test_harness::{ChildGuard, TempDir, workspace_bin};
use support::node::{Node, start_httpd_pod};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn python() -> PathBuf {
    let python = repo().join("target/rudder/python/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup` (it installs the Python client)",
        python.display()
    );
    python
}

#[test]
fn official_python_client_exec_and_port_forward_through_a_kubelet() {
    let node = Node::start();
    start_httpd_pod(&node, "py");
    let kubeconfig = node.server.kubeconfig();
    let out = Command::new(python())
        .arg(repo().join("tests/python/node_flow.py"))
        .env("KUBECONFIG", &kubeconfig)
        .env("NS", "default")
        .env("POD", "py")
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("python node flow: OK"),
        "{text}\nkubelet log (tail):\n{}",
        node.log_of()
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .join("\n")
    );
}

#[test]
fn official_python_client_crud_watch_and_resume_after_410() {
    let python = python();
    let dir = TempDir::new();
    let kubeconfig = dir.path().join("admin.kubeconfig");
    let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
    let _server = ChildGuard(
        Command::new(workspace_bin("rudder"))
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--peer-listen",
                "127.0.0.1:0",
            ])
            .args(["--compaction-interval", "1"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--pki-dir")
            .arg(dir.path().join("pki"))
            .arg("--admin-kubeconfig")
            .arg(&kubeconfig)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rudder server"),
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let ready = kubeconfig.exists()
            && Command::new("kubectl")
                .args(["get", "--raw", "/readyz"])
                .env("KUBECONFIG", &kubeconfig)
                .env("HOME", dir.path())
                .output()
                .is_ok_and(|o| o.status.success());
        if ready {
            break;
        }
        assert!(Instant::now() < deadline, "rudder server not ready in 60 s");
        std::thread::sleep(Duration::from_millis(100));
    }
    let out = Command::new(&python)
        .arg(repo().join("tests/python/client_flow.py"))
        .env("KUBECONFIG", &kubeconfig)
        .output()
        .expect("run python");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("python client flow: OK"),
        "{text}\nserver log:\n{}",
        std::fs::read_to_string(dir.path().join("server.log")).unwrap_or_default()
    );
}
