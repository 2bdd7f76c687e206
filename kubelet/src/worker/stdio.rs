//! A container's stdio, set up before its task is created: the log
//! driver (started by the shim, or by the kubelet for a container with
//! stdin and no terminal, which containerd's logging binaries cannot give
//! stdin), the attach socket it serves and the stdin FIFO it holds
//! ([`super::super::attach`]).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::Container;

use super::{
    super::{attach, exec::mkfifo, logs},
    Worker,
};

/// What the task is created with, and what to undo if it is not.
pub(super) struct Stdio {
    /// stdin (a FIFO or empty), stdout, stderr.
    pub(super) uris: [String; 3],
    pub(super) terminal: bool,
    /// A write end of the stdin FIFO, held until the task exists (a FIFO
    /// without a writer reads as the end of input).
    holder: Option<std::fs::File>,
    /// The driver the kubelet started, if it did.
    driver: Option<u32>,
    files: Vec<PathBuf>,
}

impl Stdio {
    /// The task exists: the driver holds stdin from now on.
    pub(super) fn created(&mut self) {
        self.holder = None;
    }

    /// The task could not be made: the driver and the FIFOs go.
    pub(super) fn abandon(self) {
        if let Some(pid) = self.driver
            && let Ok(pid) = i32::try_from(pid)
        {
            // SAFETY: a signal to the driver this kubelet started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// Makes a FIFO at `p` (anew).
fn fifo(p: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(p);
    mkfifo(p).map_err(|e| format!("mkfifo {}: {e}", p.display()))
}

impl Worker {
    /// Prepares container `id`'s stdio, its output going to `log_path`.
    pub(super) async fn stdio(
        &self,
        c: &Container,
        id: &str,
        log_path: &Path,
    ) -> Result<Stdio, String> {
        use std::os::unix::fs::DirBuilderExt as _;
        let p = attach::paths(&self.shared.cfg.run_dir, id);
        let dir = p.socket.parent().unwrap_or(&self.shared.cfg.run_dir);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("attach directory {}: {e}", dir.display()))?;
        let terminal = c.tty == Some(true);
        let with_stdin = c.stdin == Some(true);
        let mut args = logs::DriverArgs {
            path: log_path.to_path_buf(),
            max_size: logs::DEFAULT_MAX_SIZE,
            max_files: logs::DEFAULT_MAX_FILES,
            attach: Some(p.socket.clone()),
            stdin: None,
            stdin_once: c.stdin_once == Some(true),
            fifos: None,
        };
        let mut files = vec![p.socket.clone()];
        let mut holder = None;
        if with_stdin {
            fifo(&p.stdin)?;
            files.push(p.stdin.clone());
            holder = std::fs::File::options()
                .read(true)
                .write(true)
                .open(&p.stdin)
                .ok();
            args.stdin = Some(p.stdin.clone());
        }
        let stdin = args
            .stdin
            .as_ref()
            .map(|s| s.display().to_string())
            .unwrap_or_default();
        if !with_stdin || terminal {
            let uri = logs::driver_uri(&self.shared.cfg.log_driver, &args);
            return Ok(Stdio {
                uris: [stdin, uri.clone(), uri],
                terminal,
                holder,
                driver: None,
                files,
            });
        }
        fifo(&p.stdout)?;
        fifo(&p.stderr)?;
        files.extend([p.stdout.clone(), p.stderr.clone()]);
        args.fifos = Some((p.stdout.clone(), p.stderr.clone()));
        let mut s = Stdio {
            uris: [
                stdin,
                p.stdout.display().to_string(),
                p.stderr.display().to_string(),
            ],
            terminal,
            holder,
            driver: None,
            files,
        };
        match attach::spawn_driver(&self.shared.cfg.log_driver, id, &args).await {
            Ok(pid) => {
                s.driver = Some(pid);
                Ok(s)
            }
            Err(e) => {
                s.abandon();
                Err(format!("starting the container's log driver: {e}"))
            }
        }
    }
}
