//! Serving certificates made with openssl and small HTTPS servers written
//! in Python (tests/python), for the webhook and aggregation tests.

use std::{
    io::BufRead as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use base64::Engine as _;
use rudder_test_harness::ChildGuard;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA and a serving certificate (`tls.crt`, `tls.key` in `dir`) for
/// 127.0.0.1 and the DNS names given; returns the CA as a caBundle
/// (base64 PEM).
pub(crate) fn certificates(dir: &Path, dns: &[&str]) -> String {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=test-serving-ca",
        ],
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            "/CN=test-server",
        ],
    );
    let mut san = String::from("subjectAltName=IP:127.0.0.1");
    for d in dns {
        san.push_str(&format!(",DNS:{d}"));
    }
    std::fs::write(dir.join("ext"), format!("{san}\n")).unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "tls.crt",
            "-days",
            "1",
            "-extfile",
            "ext",
        ],
    );
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(dir.join("ca.crt")).unwrap())
}

/// The virtualenv's Python (`cargo xtask setup` makes it: the official
/// client and kopf).
pub(crate) fn python() -> PathBuf {
    let python =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/rudder/python/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run `cargo xtask setup`",
        python.display()
    );
    python
}

/// Starts `tests/python/<script>` with `args`; it prints `listening
/// <port>` once ready. Returns the process (killed on drop) and the port.
pub(crate) fn python_server(script: &str, args: &[&std::ffi::OsStr]) -> (ChildGuard, u16) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let mut child = Command::new(python())
        .arg(path)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python server");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("listening ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("{script} said {line:?}"));
    (ChildGuard(child), port)
}

/// This host's address on its default route: an endpoint address the
/// API accepts (loopback ones are refused), for a server bound to it alone.
pub(crate) fn host_address() -> String {
    let out = Command::new("ip")
        .args(["-4", "-o", "route", "get", "192.0.2.1"])
        .output()
        .expect("run ip");
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut words = text.split_whitespace();
    words
        .find(|w| *w == "src")
        .and_then(|_| words.next())
        .map(str::to_owned)
        .unwrap_or_else(|| panic!("no source address in {text:?}"))
}

/// A selector-less Service `name` in `default` whose one endpoint is
/// `address:port`, as YAML for kubectl.
pub(crate) fn service_at(name: &str, address: &str, port: u16) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: default}}\nspec: {{ports: [{{name: https, port: 443, targetPort: {port}}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {name}-1, namespace: default, labels: {{kubernetes.io/service-name: {name}}}}}\naddressType: IPv4\nports: [{{name: https, port: {port}, protocol: TCP}}]\nendpoints: [{{addresses: ['{address}'], conditions: {{ready: true}}}}]\n"
    )
}
