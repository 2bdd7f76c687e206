//! Shared by the control-plane tests: a `rudder server` per test on
//! loopback ports with its own data, PKI and kubeconfig, and the stock
//! kubectl binaries this host ships.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use rudder_test_harness::{ChildGuard, TempDir, workspace_bin};

pub(crate) struct Server {
    _child: ChildGuard,
    pub(crate) dir: TempDir,
}

impl Server {
    pub(crate) fn start() -> Self {
        Self::start_in(TempDir::new(), &[])
    }

    pub(crate) fn start_in(dir: TempDir, extra: &[&str]) -> Self {
        let log = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let child = Command::new(workspace_bin("rudder"))
            .args([
                "server",
                "--listen",
                "127.0.0.1:0",
                "--peer-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .arg("--pki-dir")
            .arg(dir.path().join("pki"))
            .arg("--admin-kubeconfig")
            .arg(dir.path().join("admin.kubeconfig"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rudder server");
        let s = Self {
            _child: ChildGuard(child),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if s.kubeconfig().exists()
                && kubectl_at(&newest(), &s.kubeconfig(), &["get", "--raw", "/readyz"]).0
            {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "rudder server not ready in 60 s; log:\n{}",
                std::fs::read_to_string(s.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Stops the server as an operator would (SIGTERM, up to 15 s),
    /// keeping its directory (data, PKI, log).
    pub(crate) fn stop(mut self) -> TempDir {
        assert!(
            self._child.terminate(Duration::from_secs(15)),
            "rudder server did not stop on SIGTERM within 15 s"
        );
        self.dir
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self._child.pid()
    }

    pub(crate) fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("admin.kubeconfig")
    }

    /// The apiserver's `https://127.0.0.1:<port>`.
    pub(crate) fn url(&self) -> String {
        std::fs::read_to_string(self.kubeconfig())
            .unwrap()
            .lines()
            .find_map(|l| l.trim().strip_prefix("server: ").map(str::to_owned))
            .expect("the kubeconfig names the server")
    }

    /// The admin's client certificate and key, written as files (for curl).
    pub(crate) fn admin_credentials(&self) -> (PathBuf, PathBuf) {
        use base64::Engine as _;
        let text = std::fs::read_to_string(self.kubeconfig()).unwrap();
        let field = |k: &str| {
            let b64 = text
                .lines()
                .find_map(|l| l.trim().strip_prefix(k).map(str::trim))
                .unwrap_or_else(|| panic!("{k} in the kubeconfig"));
            base64::engine::general_purpose::STANDARD
                .decode(b64)
                .unwrap()
        };
        let (c, k) = (
            self.dir.path().join("admin.crt"),
            self.dir.path().join("admin.key"),
        );
        std::fs::write(&c, field("client-certificate-data:")).unwrap();
        std::fs::write(&k, field("client-key-data:")).unwrap();
        (c, k)
    }

    /// One raw HTTPS request with curl: as the admin (`admin`), or with
    /// no credentials; `extra` are more curl arguments. Returns the status
    /// code and the body.
    pub(crate) fn curl(
        &self,
        admin: bool,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<&[u8]>,
        extra: &[&str],
    ) -> (u16, String) {
        use std::io::Write as _;
        let mut cmd = Command::new("curl");
        cmd.args([
            "-sS",
            "-k",
            "-X",
            method,
            "-w",
            "\n%{http_code}",
            "--max-time",
            "60",
        ])
        .args(["-H", &format!("Content-Type: {content_type}")])
        .args(extra);
        if admin {
            let (c, k) = self.admin_credentials();
            cmd.arg("--cert").arg(c).arg("--key").arg(k);
        }
        if body.is_some() {
            cmd.args(["--data-binary", "@-"]);
        }
        let mut child = cmd
            .arg(format!("{}{path}", self.url()))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run curl");
        if let Some(b) = body {
            // A server that answers before reading everything closes the
            // pipe: that is an answer too.
            let _ = child.stdin.take().unwrap().write_all(b);
        }
        drop(child.stdin.take());
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        (code.trim().parse().unwrap_or(0), body.to_owned())
    }
}

/// The folder holding `kubectl.1.27` … beside `kubectl`.
pub(crate) fn kubectl_dir() -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", "readlink -f \"$(command -v kubectl)\""])
        .output()
        .expect("find kubectl");
    let p = PathBuf::from(String::from_utf8(out.stdout).unwrap().trim());
    p.parent().expect("kubectl has a folder").to_owned()
}

pub(crate) fn oldest() -> PathBuf {
    kubectl_dir().join("kubectl.1.27")
}

pub(crate) fn newest() -> PathBuf {
    kubectl_dir().join("kubectl.1.33")
}

pub(crate) fn kubectl_at(bin: &Path, kubeconfig: &Path, args: &[&str]) -> (bool, String) {
    kubectl_stdin(bin, kubeconfig, args, None)
}

pub(crate) fn kubectl_stdin(
    bin: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> (bool, String) {
    let kubectl = rudder_test_harness::Kubectl {
        bin: bin.to_owned(),
        kubeconfig: kubeconfig.to_owned(),
    };
    let r = kubectl.exec(args, stdin);
    (r.success, format!("{}{}", r.stdout, r.stderr))
}

pub(crate) struct Kubectl<'a> {
    pub(crate) bin: PathBuf,
    pub(crate) server: &'a Server,
}

impl Kubectl<'_> {
    #[track_caller]
    pub(crate) fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = kubectl_at(&self.bin, &self.server.kubeconfig(), args);
        assert!(ok, "kubectl {args:?} failed:\n{out}");
        out
    }

    #[track_caller]
    pub(crate) fn fails(&self, args: &[&str], stdin: Option<&str>) -> String {
        let (ok, out) = kubectl_stdin(&self.bin, &self.server.kubeconfig(), args, stdin);
        assert!(!ok, "kubectl {args:?} should have failed:\n{out}");
        out
    }

    #[track_caller]
    pub(crate) fn apply(&self, args: &[&str], manifest: &str) -> String {
        let (ok, out) = kubectl_stdin(&self.bin, &self.server.kubeconfig(), args, Some(manifest));
        assert!(ok, "kubectl {args:?} failed:\n{out}");
        out
    }
}

/// A kubeconfig for a static-token user of `server`.
pub(crate) fn token_kubeconfig(server: &Server, user: &str, token: &str) -> PathBuf {
    let admin = server.kubeconfig();
    let url = kubectl_at(
        &newest(),
        &admin,
        &[
            "config",
            "view",
            "-o",
            "jsonpath={.clusters[0].cluster.server}",
        ],
    )
    .1;
    let path = server.dir.path().join(format!("{user}.kubeconfig"));
    let ca = server.dir.path().join("pki/ca.crt");
    let kc = |args: &[&str]| {
        let (ok, out) = kubectl_at(&newest(), &path, args);
        assert!(ok, "kubectl {args:?}: {out}");
    };
    kc(&[
        "config",
        "set-cluster",
        "rudder",
        &format!("--server={url}"),
        &format!("--certificate-authority={}", ca.display()),
        "--embed-certs",
    ]);
    kc(&[
        "config",
        "set-credentials",
        user,
        &format!("--token={token}"),
    ]);
    kc(&[
        "config",
        "set-context",
        "rudder",
        "--cluster=rudder",
        &format!("--user={user}"),
    ]);
    kc(&["config", "use-context", "rudder"]);
    path
}

/// Polls `f` every 200 ms until it holds; fails after `secs` seconds with
/// `what` and whatever `context` then says.
#[track_caller]
pub(crate) fn wait_until(
    what: &str,
    secs: u64,
    context: impl Fn() -> String,
    mut f: impl FnMut() -> bool,
) {
    let every = Duration::from_millis(200);
    if let Err(e) =
        rudder_test_harness::wait::poll_every(what, Duration::from_secs(secs), every, || {
            f().then_some(())
        })
    {
        panic!("timed out: {e}{}", context());
    }
}
