//! A node for CNI tests: a network namespace standing in for the node's
//! host namespace, with its own subnet file, IPAM dir, result cache, conf
//! dir and bin dir (Rudder's plugin as `rudder`, and Debian's reference
//! plugins from `/usr/lib/cni`).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
};

use serde_json::{Value, json};

use crate::{NetNs, TempDir, workspace_bin};

/// Where Debian's containernetworking-plugins are installed.
pub const REFERENCE_PLUGINS: &str = "/usr/lib/cni";

#[derive(Debug)]
pub struct CniNode {
    pub ns: NetNs,
    pub dir: TempDir,
}

/// One plugin call's outcome.
#[derive(Debug, Clone)]
pub struct CniCall {
    pub success: bool,
    pub stdout: Value,
    pub stderr: String,
}

impl CniCall {
    /// The error code of a failed call.
    #[track_caller]
    pub fn code(&self) -> u64 {
        assert!(!self.success, "the call succeeded: {}", self.stdout);
        self.stdout["code"]
            .as_u64()
            .unwrap_or_else(|| panic!("no error code in {} (stderr {})", self.stdout, self.stderr))
    }
}

impl CniNode {
    #[track_caller]
    pub fn new() -> Self {
        let dir = TempDir::new();
        let bin = dir.join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        std::os::unix::fs::symlink(workspace_bin("rudder-cni"), bin.join("rudder")).unwrap();
        for p in ["bridge", "host-local", "portmap", "bandwidth", "loopback"] {
            let src = PathBuf::from(REFERENCE_PLUGINS).join(p);
            assert!(
                src.is_file(),
                "{} is missing: install containernetworking-plugins (`cargo xtask setup`)",
                src.display()
            );
            std::os::unix::fs::symlink(src, bin.join(p)).unwrap();
        }
        for d in ["conf", "cache", "ipam"] {
            std::fs::create_dir_all(dir.join(d)).unwrap();
        }
        Self {
            ns: NetNs::new(),
            dir,
        }
    }

    pub fn bin_dir(&self) -> PathBuf {
        self.dir.join("bin")
    }
    pub fn conf_dir(&self) -> PathBuf {
        self.dir.join("conf")
    }
    pub fn cache_dir(&self) -> PathBuf {
        self.dir.join("cache")
    }
    pub fn ipam_dir(&self) -> PathBuf {
        self.dir.join("ipam")
    }
    pub fn subnet_file(&self) -> PathBuf {
        self.dir.join("subnet.env")
    }

    /// Writes the subnet file as the network daemon would.
    pub fn write_subnet(&self, network: &str, subnet: &str, mtu: u32) {
        std::fs::write(
            self.subnet_file(),
            format!("RUDDER_NETWORK={network}\nRUDDER_SUBNET={subnet}\nRUDDER_MTU={mtu}\nRUDDER_IPMASQ=true\n"),
        )
        .unwrap();
    }

    /// Rudder's plugin config, pointing at this node's files.
    pub fn rudder_conf(&self, version: &str) -> Value {
        json!({
            "cniVersion": version,
            "name": "cbr0",
            "type": "rudder",
            "subnetFile": self.subnet_file(),
            "dataDir": self.ipam_dir(),
        })
    }

    /// Runs the plugin binary `plugin` (from the bin dir) inside the node's
    /// namespace with `CNI_COMMAND=command`, `env` and `stdin`.
    pub fn call_raw(
        &self,
        plugin: &str,
        command: &str,
        env: &[(&str, &str)],
        stdin: &[u8],
    ) -> CniCall {
        let mut cmd = Command::new(self.bin_dir().join(plugin));
        cmd.env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_PATH", self.bin_dir())
            .envs(env.iter().copied())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = self.ns.spawn(&mut cmd).expect("spawn the plugin");
        {
            use std::io::Write as _;
            let mut i = child.stdin.take().unwrap();
            let _ = i.write_all(stdin);
        }
        let out = child.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        CniCall {
            success: out.status.success(),
            stdout: if text.trim().is_empty() {
                Value::Null
            } else {
                serde_json::from_str(text.trim())
                    .unwrap_or_else(|e| panic!("plugin output is not JSON ({e}): {text}"))
            },
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs Rudder's plugin for one attachment.
    pub fn call(
        &self,
        command: &str,
        conf: &Value,
        id: &str,
        netns: &str,
        ifname: &str,
    ) -> CniCall {
        self.call_raw(
            "rudder",
            command,
            &[
                ("CNI_CONTAINERID", id),
                ("CNI_NETNS", netns),
                ("CNI_IFNAME", ifname),
            ],
            conf.to_string().as_bytes(),
        )
    }

    /// The allocation files in the IPAM dir of network `name`.
    pub fn allocations(&self, name: &str) -> Vec<(String, String)> {
        let dir = self.ipam_dir().join(name);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            return Vec::new();
        };
        let mut out: Vec<_> = rd
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .parse::<std::net::Ipv4Addr>()
                    .is_ok()
            })
            .map(|e| {
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read_to_string(e.path()).unwrap_or_default(),
                )
            })
            .collect();
        out.sort();
        out
    }

    /// Names of the links in the node namespace.
    pub fn links(&self) -> Vec<String> {
        links_in(&self.ns)
    }
}

impl Default for CniNode {
    fn default() -> Self {
        Self::new()
    }
}

/// Names of the links in a namespace (`ip -o link`).
pub fn links_in(ns: &NetNs) -> Vec<String> {
    ns.ip(&["-o", "link", "show"])
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?;
            Some(name.split('@').next()?.to_string())
        })
        .collect()
}
