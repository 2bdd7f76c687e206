//! The local OCI registry (Debian's `docker-registry`) and pushing to it over
//! the distribution API.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ureq::Agent;

use crate::util;

pub(crate) const DEFAULT_ADDR: &str = "127.0.0.1:5000";

fn http() -> Agent {
    Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(60)))
        .build()
        .into()
}

/// State directory for the registry started by xtask.
pub(crate) fn state_dir(root: &Path) -> PathBuf {
    util::target_dir(root).join("rudder").join("registry")
}

fn answers(addr: &str) -> bool {
    http()
        .get(&format!("http://{addr}/v2/"))
        .config()
        .timeout_global(Some(Duration::from_secs(2)))
        .build()
        .call()
        .is_ok_and(|r| r.status().as_u16() == 200)
}

/// The registry's configuration: listening on `addr`, storage in the
/// state directory (shared by every listener xtask starts).
pub(crate) fn config(root: &Path, addr: &str) -> String {
    format!(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\nhttp:\n  addr: {addr}\n",
        state_dir(root).join("data").display()
    )
}

/// Debian's registry binary.
pub(crate) fn binary() -> anyhow::Result<&'static str> {
    ["/usr/bin/docker-registry", "/usr/bin/registry"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .context("docker-registry is not installed: run `cargo xtask setup`")
}

/// Makes sure a registry answers at `addr`, starting one if needed; returns
/// whether it started one.
pub(crate) fn ensure_running(root: &Path, addr: &str) -> anyhow::Result<bool> {
    if answers(addr) {
        return Ok(false);
    }
    let dir = state_dir(root);
    std::fs::create_dir_all(dir.join("data"))?;
    let config = dir.join("config.yml");
    std::fs::write(&config, self::config(root, addr))?;
    let bin = binary()?;
    util::step(&format!(
        "starting the local registry on {addr} (data in {})",
        dir.display()
    ));
    let log = std::fs::File::create(dir.join("registry.log"))?;
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid is async-signal-safe; it detaches the registry from our
    // session so it outlives xtask.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::setsid();
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("cannot start {bin}"))?;
    std::fs::write(dir.join("pid"), child.id().to_string())?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(20) {
        if answers(addr) {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!(
        "the registry did not answer on {addr} within 20 s; see {}",
        dir.join("registry.log").display()
    )
}

/// Stops the registry that xtask started, if it is still running.
pub(crate) fn stop(root: &Path) -> anyhow::Result<bool> {
    let pid_file = state_dir(root).join("pid");
    let Ok(pid) = std::fs::read_to_string(&pid_file) else {
        return Ok(false);
    };
    let pid: i32 = pid.trim().parse().context("bad registry pid file")?;
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let ours = cmdline.contains("registry");
    if ours {
        // SAFETY: kill has no memory-safety preconditions; the pid is the
        // registry we started (checked by its command line).
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    std::fs::remove_file(pid_file)?;
    Ok(ours)
}

/// A client for pushing blobs and manifests.
pub(crate) struct Registry {
    base: String,
    http: Agent,
}

impl Registry {
    pub(crate) fn new(addr: &str) -> Self {
        Self {
            base: format!("http://{addr}"),
            http: http(),
        }
    }

    /// Uploads a blob unless the repository already has it. Returns whether
    /// it was uploaded.
    pub(crate) fn push_blob(&self, repo: &str, digest: &str, data: &[u8]) -> anyhow::Result<bool> {
        let head = self
            .http
            .head(&format!("{}/v2/{repo}/blobs/{digest}", self.base))
            .call()?;
        if head.status().as_u16() == 200 {
            return Ok(false);
        }
        let start = self
            .http
            .post(&format!("{}/v2/{repo}/blobs/uploads/", self.base))
            .send_empty()?;
        if start.status().as_u16() != 202 {
            bail!(
                "starting the upload of {digest} to {repo}: HTTP {}",
                start.status()
            );
        }
        let location = start
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .context("the registry gave no upload location")?;
        let location = if location.starts_with('/') {
            format!("{}{location}", self.base)
        } else {
            location.to_string()
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = self
            .http
            .put(&format!("{location}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(data)?;
        if done.status().as_u16() != 201 {
            bail!("uploading {digest} to {repo}: HTTP {}", done.status());
        }
        Ok(true)
    }

    pub(crate) fn push_manifest(
        &self,
        repo: &str,
        tag: &str,
        media_type: &str,
        body: &[u8],
    ) -> anyhow::Result<()> {
        let mut resp = self
            .http
            .put(&format!("{}/v2/{repo}/manifests/{tag}", self.base))
            .header("Content-Type", media_type)
            .send(body)?;
        if resp.status().as_u16() != 201 {
            let text = resp.body_mut().read_to_string().unwrap_or_default();
            bail!("pushing {repo}:{tag}: HTTP {}: {text}", resp.status());
        }
        Ok(())
    }

    pub(crate) fn catalog(&self) -> anyhow::Result<Vec<String>> {
        let mut resp = self
            .http
            .get(&format!("{}/v2/_catalog", self.base))
            .call()?;
        let v: serde_json::Value = serde_json::from_str(&resp.body_mut().read_to_string()?)?;
        Ok(v["repositories"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|r| r.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }
}
