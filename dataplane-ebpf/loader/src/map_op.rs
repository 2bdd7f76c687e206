//! The map protocol between the service proxy and the dataplane: one
//! change to the service maps. The proxy's translator emits them in the
//! order they must be applied (see `rudder_proxy::translate`); the
//! [`ServiceDataplane`](crate::service::ServiceDataplane) applies them,
//! batching runs of one kind.

use rudder_ebpf_common::service::{Backend, MemberKey, ServiceKey, ServiceValue, SlotKey};

/// One change to the maps, in the order it must be applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapOp {
    PutBackend(u32, Backend),
    PutSlot(SlotKey, u32),
    PutMember(MemberKey),
    PutService(ServiceKey, ServiceValue),
    DeleteService(ServiceKey),
    DeleteSlot(SlotKey),
    DeleteMember(MemberKey),
    DeleteBackend(u32),
    /// Forget conntrack, reverse-NAT and affinity entries of a removed
    /// backend, so that UDP flows (which never end by themselves) move on at
    /// once rather than waiting for their entries to age out.
    PurgeBackendFlows(u32, Backend),
}
