//! The container runtime side of the node: the one seam to containerd
//! ([`containerd`], its native gRPC API) and pulling images into it
//! ([`image`]). Only the kubelet depends on this crate, so an agent built
//! without the kubelet (the DaemonSet mode) does not link the containerd
//! client.

pub mod containerd;
pub mod image;
pub mod seam;

pub use seam::ContainerRuntime;
