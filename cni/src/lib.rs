//! Rudder's flannel-style CNI plugin (spec 1.0.0 and 1.1.0): a bridge per
//! node, a veth per pod, host-local style IPAM from the node's subnet (read
//! from the network daemon's subnet file), and a small CNI runtime (the
//! caller's side: conflists, chaining, result cache) for the kubelet and
//! the tests.

pub mod ipam;
pub mod net;
pub mod plugin;
pub mod runtime;
pub mod spec;
pub mod subnet;
pub mod types;
