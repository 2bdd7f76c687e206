//! The JSON the runtime and plugins exchange: network configuration, the
//! ADD result, and attachments for GC.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// An interface in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interface {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mtu: Option<u32>,
    /// The netns path for interfaces inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<String>,
}

/// An address in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpConfig {
    /// `0.4.0` results carry `"version": "4"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// CIDR form, e.g. `10.244.1.5/24`.
    pub address: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// Index into `interfaces`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<usize>,
}

/// A route in a result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteConf {
    pub dst: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gw: Option<String>,
}

/// The ADD result (also `prevResult` for chained plugins, CHECK and DEL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CniResult {
    #[serde(rename = "cniVersion")]
    pub cni_version: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<Interface>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ips: Vec<IpConfig>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<RouteConf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<Value>,
}

/// A `(containerID, ifname)` pair that GC must keep.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Attachment {
    #[serde(rename = "containerID")]
    pub container_id: String,
    pub ifname: String,
}

fn default_bridge() -> String {
    "cni0".to_string()
}
fn default_subnet_file() -> PathBuf {
    PathBuf::from(crate::subnet::DEFAULT_PATH)
}
/// Where the agent's service proxy listens for attach requests.
pub const DEFAULT_PROXY_SOCKET: &str = "/run/rudder/proxy.sock";

/// The IPAM state directory, host-local's.
pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";

fn default_data_dir() -> PathBuf {
    PathBuf::from(DEFAULT_DATA_DIR)
}
fn yes() -> bool {
    true
}

/// Rudder's plugin configuration (one entry of a conflist, with what the
/// runtime injects). Keys the plugin does not know are ignored, as CNI
/// expects (runtimes add `runtimeConfig`, `args`, `capabilities`, …).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetConf {
    pub cni_version: String,
    pub name: String,
    #[serde(rename = "type")]
    pub plugin_type: String,
    /// The node bridge, created when missing (default `cni0`).
    #[serde(default = "default_bridge")]
    pub bridge: String,
    /// The network daemon's subnet file (default `/run/rudder/subnet.env`).
    #[serde(default = "default_subnet_file")]
    pub subnet_file: PathBuf,
    /// The service proxy's attach socket, asked (bounded, best effort) to
    /// put the Service dataplane on the pod's interface before ADD returns.
    #[serde(default)]
    pub proxy_socket: Option<PathBuf>,
    /// IPAM state directory (default `/var/lib/cni/networks`, as host-local).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Hairpin mode on the pod's bridge port (default on).
    #[serde(default = "yes")]
    pub hairpin_mode: bool,
    /// Overrides the subnet file's MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
    /// Default route in the pod via the bridge (default on).
    #[serde(default = "yes")]
    pub is_default_gateway: bool,
    /// Passed through to the result.
    #[serde(default)]
    pub dns: Option<Value>,
    #[serde(default)]
    pub prev_result: Option<Value>,
    #[serde(default, rename = "cni.dev/valid-attachments")]
    pub valid_attachments: Option<Vec<Attachment>>,
    /// The key's name in the 1.1.0 tag of the spec.
    #[serde(default, rename = "cni.dev/attachments")]
    pub attachments: Option<Vec<Attachment>>,
}
