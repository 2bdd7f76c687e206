//! The stock kubectl, run as a user runs it: one binary (`kubectl`, or a
//! pinned version such as `kubectl.1.27`), one kubeconfig, arguments and
//! optionally a manifest on stdin. Shared by the test suites and `cargo
//! xtask smoke`, so both drive clusters the same way.

use std::{
    fmt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

/// kubectl bound to a kubeconfig.
#[derive(Clone, Debug)]
pub struct Kubectl {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
}

/// A kubectl run that exited non-zero (or could not start).
#[derive(Debug)]
pub struct Failed {
    pub args: Vec<String>,
    /// What it printed on stdout and stderr.
    pub output: String,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kubectl {}: {}",
            self.args.join(" "),
            self.output.trim_end()
        )
    }
}

impl std::error::Error for Failed {}

/// What one run printed.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Kubectl {
    /// The `kubectl` on the PATH with this kubeconfig.
    pub fn new(kubeconfig: impl Into<PathBuf>) -> Self {
        Self {
            bin: PathBuf::from("kubectl"),
            kubeconfig: kubeconfig.into(),
        }
    }

    /// Another kubectl binary with the same kubeconfig.
    pub fn with_bin(&self, bin: impl Into<PathBuf>) -> Self {
        Self {
            bin: bin.into(),
            kubeconfig: self.kubeconfig.clone(),
        }
    }

    /// The kubeconfig.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// Runs kubectl with `stdin` (or none) and says what it printed. Its
    /// discovery cache is private to the kubeconfig's folder.
    pub fn exec(&self, args: &[&str], stdin: Option<&str>) -> Run {
        let mut cmd = Command::new(&self.bin);
        cmd.args(args)
            .env("KUBECONFIG", &self.kubeconfig)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(dir) = self.kubeconfig.parent() {
            cmd.env("HOME", dir);
        }
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                return Run {
                    success: false,
                    stdout: String::new(),
                    stderr: format!("cannot run {}: {e}", self.bin.display()),
                };
            }
        };
        if let (Some(s), Some(mut pipe)) = (stdin, child.stdin.take()) {
            use std::io::Write as _;
            // A kubectl that exits early closes its stdin: its output says why.
            let _ = pipe.write_all(s.as_bytes());
        }
        match child.wait_with_output() {
            Ok(out) => Run {
                success: out.status.success(),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => Run {
                success: false,
                stdout: String::new(),
                stderr: format!("waiting for kubectl: {e}"),
            },
        }
    }

    /// Its stdout when it succeeds; otherwise what it printed, as an error.
    pub fn run(&self, args: &[&str]) -> Result<String, Failed> {
        let r = self.exec(args, None);
        if r.success {
            Ok(r.stdout)
        } else {
            Err(Failed {
                args: args.iter().map(|a| (*a).to_owned()).collect(),
                output: format!("{}{}", r.stdout, r.stderr),
            })
        }
    }

    /// Its stdout when it succeeds.
    pub fn output(&self, args: &[&str]) -> Option<String> {
        self.run(args).ok()
    }

    /// Whether it succeeds.
    pub fn ok(&self, args: &[&str]) -> bool {
        self.exec(args, None).success
    }
}
