//! Rudder's control plane: the Kubernetes-compatible apiserver on a
//! Raft-replicated store, the scheduler and the controllers. Nothing is here
//! yet; the README's table says what works today.
