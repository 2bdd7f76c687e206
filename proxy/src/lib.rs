//! The service proxy: Services and their endpoints in, BPF map contents out.
//!
//! [`translate`] is pure: it keeps what is installed and turns each new
//! desired state into an ordered list of [`MapOp`]s. The order is what makes
//! updates safe: a service's new backends are written as a complete new slot
//! set before the one update that switches the service to it, and nothing a
//! service still points to is removed before that switch.

pub mod accelerate;
pub mod attach_socket;
mod cache;
pub mod daemon;
pub mod desired;
pub mod health;
pub mod maglev;
pub mod metrics;
pub mod netfilter;
pub mod nftables;
pub mod owners;
mod program;
mod service_health;
pub mod translate;

pub use translate::{
    Capacity, Endpoint, Frontend, Limits, MapOp, Proto, Refused, ServiceSpec, Translator,
};
