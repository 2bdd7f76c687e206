//! Rudder's control plane: the Kubernetes-compatible apiserver on a
//! Raft-replicated store (or etcd), the scheduler and the controllers.
//! The store (`rudder-store`), the controllers and scheduler
//! (`rudder-controllers`) and the cluster DNS (`rudder-dns`) are crates of
//! their own, re-exported here as [`store`], [`controllers`] and [`dns`].

pub use rudder_controllers as controllers;
pub use rudder_dns as dns;
pub use rudder_store as store;

pub mod api;
pub mod server;
