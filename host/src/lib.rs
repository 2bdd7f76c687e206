//! What the agent's parts share about the node they run on, below all of
//! them: the supervisor that keeps each part (kubelet, service proxy,
//! network daemon) running beside the others ([`supervise`]), the
//! iptables userland in both flavours ([`iptables`], used by the network
//! daemon's forward rules, the take-over from kube-proxy and flannel and
//! the proxy's iptables mode), the nftables userland ([`nft`]: the
//! masquerade table, the proxy's nftables mode), the kernel's release, and the kubelet-to-proxy hand-off when
//! a pod's network is up ([`Rescan`]).

pub mod iptables;
pub mod nft;
mod rescan;
pub mod supervise;

pub use rescan::{Rescan, RescanRx};

/// The running kernel's release (`uname -r`), or `unknown`.
pub fn kernel_release() -> String {
    nix::sys::utsname::uname().map_or_else(
        |_| "unknown".to_string(),
        |u| u.release().to_string_lossy().into_owned(),
    )
}
