//! Rudder's CNI plugin library. So far: the spec's error codes and version
//! negotiation, which every command of the plugin answers with. The plugin
//! commands (ADD, DEL, CHECK, STATUS, GC) and IPAM come with the pod-network
//! work.

pub mod spec;
