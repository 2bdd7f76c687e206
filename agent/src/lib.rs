//! Rudder's node agent, over the crates that do the work: the agent
//! configuration (`config`), the start-up checks of the kernel
//! (`preflight`), the node's own credentials and their renewal
//! (`credentials`), and the take-over from kube-proxy and flannel
//! (`takeover`). The parts it runs side by side under `rudder_host`'s
//! supervisor live in crates of their own and are re-exported here under
//! their old names: the kubelet (`rudder-kubelet`, on `rudder-runtime`'s
//! containerd client; only with the `kubelet` feature, so the DaemonSet
//! build links no containerd client), the eBPF service proxy
//! (`rudder-proxy`, programming `rudder-dataplane`), and the flannel-style
//! network daemon (`rudder-network`).

pub mod config;
pub mod credentials;
pub mod preflight;
pub mod takeover;

pub use rudder_dataplane as bpf;
pub use rudder_host::{iptables, nft, supervise};
#[cfg(feature = "kubelet")]
pub use rudder_kubelet as kubelet;
pub use rudder_network as network;
pub use rudder_proxy as proxy;
