//! Kubernetes semantics that both sides of Rudder enforce: the apiserver
//! when an object comes in, the kubelet again before it acts on one (as
//! upstream's kubelet re-validates every pod, whatever its source). Written
//! once here so that the two can never disagree.
//!
//! Pure functions over `k8s-openapi` types: no async runtime, no I/O.
//!
//! - [`events`]: which Events to make, bump or drop (client-go's correlator).
//! - [`field`]: field paths and per-field errors (apimachinery's
//!   `field.Error`), rendered as kube-apiserver renders them.
//! - [`names`]: DNS labels and subdomains, qualified names, label values,
//!   configuration keys.
//! - [`net`]: the addresses a Service or an endpoint may use.
//! - [`paths`]: the file paths and modes a pod may ask for inside a volume.
//! - [`pod`]: validation of a pod spec (containers, volumes, mounts).
//! - [`pod_security`]: the Pod Security Standards' controls.
//! - [`qos`]: a pod's quality-of-service class.
//! - [`quantity`]: resource quantities, exact.
//! - [`query`]: query parameters as kube-apiserver reads them.
//! - [`resources`]: what a pod requests of a node.
//! - [`selectors`]: label and node selectors, node affinity, tolerations.
//! - [`time`]: times as Kubernetes writes them (truncated, never rounded).

pub mod events;
pub mod field;
pub mod label_selector;
pub mod names;
pub mod net;
pub mod paths;
pub mod pod;
pub mod pod_security;
pub mod proxy;
pub mod qos;
pub mod quantity;
pub mod query;
pub mod resources;
pub mod selectors;
pub mod served;
pub mod time;
