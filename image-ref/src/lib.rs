//! Image references and where to fetch them from, without any I/O: a
//! reference normalised as containerd and the Docker CLI normalise it
//! ([`reference`]), and the registry mirror configuration with containerd's
//! `hosts.toml` rule ([`mirror`]). A crate of its own so that the agent's
//! configuration can name registries without linking the containerd client
//! (the DaemonSet build of the agent has no kubelet).

pub mod mirror;
pub mod reference;

pub use mirror::{Endpoint, MirrorSpec, Registries, RegistryConfig};
pub use reference::{Reference, ReferenceError};
