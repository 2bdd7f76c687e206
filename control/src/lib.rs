//! Rudder's control plane: the Kubernetes-compatible apiserver on a
//! Raft-replicated store (or etcd), the scheduler and the controllers.

pub mod api;
pub mod controllers;
pub mod dns;
pub mod files;
pub mod server;
pub mod store;
