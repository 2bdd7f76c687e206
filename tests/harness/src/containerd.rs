//! A private containerd for one test: its own root, state, socket and
//! containerd namespace under a fresh directory, stopped (with its shims) and
//! removed on drop. The CRI plugin is disabled: Rudder talks to containerd's
//! native API.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

use crate::unique_name;

/// A running containerd of the test's own.
#[derive(Debug)]
pub struct Containerd {
    dir: PathBuf,
    child: Child,
    namespace: String,
}

/// The configuration of a private containerd (the tests' and the local
/// clusters' of `cargo xtask up`): its own root, state, sockets and opt
/// folder, no CRI plugin, no debug or metrics listeners.
pub fn config_toml(root: &Path, state: &Path, sock: &Path, opt: &Path) -> String {
    format!(
        "version = 2\nroot = \"{root}\"\nstate = \"{state}\"\n\
         disabled_plugins = [\"io.containerd.grpc.v1.cri\"]\n\
         [grpc]\n  address = \"{sock}\"\n[ttrpc]\n  address = \"{sock}.ttrpc\"\n\
         [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
         [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{opt}\"\n",
        root = root.display(),
        state = state.display(),
        sock = sock.display(),
        opt = opt.display(),
    )
}

impl Containerd {
    /// Starts containerd and waits until it answers.
    #[track_caller]
    pub fn start() -> Self {
        let name = unique_name();
        let dir = std::env::temp_dir().join(&name);
        std::fs::create_dir_all(&dir).unwrap();
        let config = config_toml(
            &dir.join("root"),
            &dir.join("state"),
            &dir.join("containerd.sock"),
            &dir.join("opt"),
        );
        std::fs::write(dir.join("config.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("containerd.log")).unwrap();
        let child = Command::new("containerd")
            .arg("--config")
            .arg(dir.join("config.toml"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start containerd (install it: `cargo xtask setup`): {e}")
            });
        let c = Self {
            dir,
            child,
            namespace: name,
        };
        let start = Instant::now();
        loop {
            if c.address().exists() && c.ctr(&["version"]).status.success() {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "containerd did not start within 20 s: {}",
                std::fs::read_to_string(c.dir.join("containerd.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    /// The gRPC socket.
    pub fn address(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// This test's containerd namespace.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Runs `ctr` against this containerd, in this test's namespace.
    pub fn ctr(&self, args: &[&str]) -> Output {
        Command::new("ctr")
            .arg("--address")
            .arg(self.address())
            .args(["--namespace", &self.namespace])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("cannot run ctr")
    }

    /// Like [`Containerd::ctr`], panicking with the output on failure.
    #[track_caller]
    pub fn ctr_ok(&self, args: &[&str]) -> String {
        let out = self.ctr(args);
        assert!(
            out.status.success(),
            "ctr {} failed: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// Pids whose command line mentions `needle` (our shims name our socket).
fn pids_mentioning(needle: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).contains(needle))
        })
        .collect()
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // Tasks first (their shims are separate processes), then containerd.
        if let Ok(list) = String::from_utf8(self.ctr(&["task", "ls", "-q"]).stdout) {
            for id in list.lines() {
                let _ = self.ctr(&["task", "kill", "-s", "SIGKILL", id]);
                let _ = self.ctr(&["task", "delete", "-f", id]);
            }
        }
        if let Ok(list) = String::from_utf8(self.ctr(&["containers", "ls", "-q"]).stdout) {
            for id in list.lines() {
                let _ = self.ctr(&["containers", "delete", id]);
            }
        }
        let address = self.address().display().to_string();
        for pid in pids_mentioning(&address) {
            if pid != self.child.id() as i32 {
                // SAFETY: kill has no memory-safety preconditions; these are
                // shims serving our containerd.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        crate::process::unmount_under(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        // runc removes each container's cgroup, not the per-namespace parent
        // that containerd's default spec puts it under.
        for hierarchy in std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
        {
            let _ = std::fs::remove_dir(hierarchy.path().join(&self.namespace));
        }
        let _ = std::fs::remove_dir(Path::new("/sys/fs/cgroup").join(&self.namespace));
    }
}
