//! The official JavaScript client (`@kubernetes/client-node` from npm,
//! installed by `cargo xtask setup` into tests/js/node_modules) against
//! `rudder server`: tests/js/client_flow.mjs (CRUD, Status bodies, patches,
//! Watch, an informer) and tests/js/node_flow.mjs (Exec over v5, PortForward
//! and Log through a real kubelet).

mod support;

use std::{path::PathBuf, process::Command};

use support::{
    kube::Server,
    node::{Node, start_httpd_pod},
};

fn js_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("js");
    assert!(
        dir.join("node_modules/@kubernetes/client-node").exists(),
        "{} has no @kubernetes/client-node: run `cargo xtask setup` (it runs npm ci there)",
        dir.display()
    );
    dir
}

/// Runs one flow script; its output must end with `ok_line`.
fn run(script: &str, envs: &[(&str, &std::ffi::OsStr)], ok_line: &str) -> Result<(), String> {
    let dir = js_dir();
    let out = Command::new("node")
        .arg(dir.join(script))
        .current_dir(&dir)
        .envs(envs.iter().copied())
        .output()
        .expect("run node");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains(ok_line) {
        Ok(())
    } else {
        Err(text)
    }
}

#[test]
fn official_js_client_crud_patches_watch_and_informer() {
    // Watches that name no timeout end within 2-4 s, as kube-apiserver's
    // do within 30-60 min: the informer must watch again.
    let server = Server::start_in(
        rudder_test_harness::TempDir::new(),
        &["--min-request-timeout", "2"],
    );
    let kc = server.kubeconfig();
    if let Err(text) = run(
        "client_flow.mjs",
        &[("KUBECONFIG", kc.as_os_str())],
        "js client flow: OK",
    ) {
        panic!(
            "{text}\nserver log:\n{}",
            std::fs::read_to_string(server.dir.path().join("server.log")).unwrap_or_default()
        );
    }
}

#[test]
fn official_js_client_exec_port_forward_and_logs_through_a_kubelet() {
    let node = Node::start();
    start_httpd_pod(&node, "js");
    let kc = node.server.kubeconfig();
    let envs = [
        ("KUBECONFIG", kc.as_os_str()),
        ("NS", "default".as_ref()),
        ("POD", "js".as_ref()),
    ];
    if let Err(text) = run("node_flow.mjs", &envs, "js node flow: OK") {
        panic!(
            "{text}\nkubelet log (tail):\n{}",
            node.log_of()
                .lines()
                .rev()
                .take(40)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}
