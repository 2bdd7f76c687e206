//! Rudder's control plane: the Kubernetes-compatible apiserver on a
//! Raft-replicated store. The scheduler and the controllers come next (see
//! the README's table of what works).

pub mod api;
pub mod controllers;
pub mod server;
pub mod store;
