//! Rudder's node agent: the kubelet (`kubelet`, on `containerd`, pulling
//! with `image`), the eBPF service proxy (`proxy`, loading `bpf`), the
//! flannel-style network daemon (`network`), the agent configuration
//! (`config`), the start-up checks of the kernel (`preflight`), the
//! node's own credentials and their renewal (`credentials`), and the
//! supervisor that runs the three side by side (`supervise`).

pub mod bpf;
pub mod config;
pub mod containerd;
pub mod credentials;
pub mod image;
pub mod iptables;
pub mod kubelet;
pub mod network;
pub mod preflight;
pub mod proxy;
pub mod supervise;
pub mod takeover;
