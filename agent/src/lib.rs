//! Rudder's node agent.
//!
//! Today it holds the eBPF loading machinery (`bpf`), the image reference and
//! registry-mirror rules (`image`), the agent configuration (`config`) and the
//! start-up checks of the kernel (`preflight`). The kubelet, service proxy and
//! network daemon build on these.

pub mod bpf;
pub mod config;
pub mod containerd;
pub mod image;
pub mod kubelet;
pub mod network;
pub mod preflight;
pub mod proxy;
