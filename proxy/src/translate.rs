//! Desired Services → ordered BPF map operations.
//!
//! The translator also keeps the maps' capacity: a service port whose new
//! state would not fit (front ends, slots, backends, or more backends than
//! one service may have) is refused as a whole and keeps what it had, so one
//! oversized Service never leaves another with partial backends, and the
//! maps never hold a half-written service.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use rudder_ebpf_common::service::{
    Backend, MAX_BACKENDS, MAX_SERVICES, MAX_SLOTS, MemberKey, PROTO_TCP, PROTO_UDP, SCOPE_ADDR,
    SCOPE_NODEPORT, SVC_F_DSR, SVC_F_KEEP_SOURCE, SVC_F_MAGLEV, SVC_MAGLEV_SIZE_SHIFT, ServiceKey,
    ServiceValue, SlotKey,
};

pub use rudder_dataplane::MapOp;

use super::maglev;

/// How much the maps hold, and how many backends one service port may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub services: usize,
    /// Slots (and members): a service's old and new sets both exist while
    /// it switches.
    pub slots: usize,
    pub backends: usize,
    pub backends_per_service: usize,
}

impl Default for Limits {
    /// The datapath's map sizes; 65,536 backends per service port (Cilium's
    /// limit too).
    fn default() -> Self {
        Self {
            services: MAX_SERVICES as usize,
            slots: MAX_SLOTS as usize,
            backends: MAX_BACKENDS as usize,
            backends_per_service: 1 << 16,
        }
    }
}

/// A service port the maps cannot take; it keeps its previous state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("service {frontend:?} refused: {why}")]
pub struct Refused {
    pub frontend: Frontend,
    pub why: Capacity,
}

/// Which limit a service port ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capacity {
    /// More backends than one service port may have (the count, the limit).
    BackendsPerService(usize, usize),
    /// The front-end map is full.
    Services(usize),
    /// The slot map cannot take this service's new set.
    Slots(usize),
    /// The backend map cannot take this service's new backends.
    Backends(usize),
}

impl std::fmt::Display for Capacity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BackendsPerService(n, max) => {
                write!(
                    f,
                    "{n} backends, more than the {max} one service port may have"
                )
            }
            Self::Services(max) => write!(f, "the dataplane's {max} service front ends are in use"),
            Self::Slots(max) => write!(f, "the dataplane's {max} backend slots are in use"),
            Self::Backends(max) => write!(f, "the dataplane's {max} backends are in use"),
        }
    }
}

/// Transport protocol of a service port.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    fn number(self) -> u8 {
        match self {
            Proto::Tcp => PROTO_TCP,
            Proto::Udp => PROTO_UDP,
        }
    }
}

/// A service front end: an address (ClusterIP, externalIP, LoadBalancer IP)
/// or, with the address 0.0.0.0, a NodePort (the port on every node
/// address); a port and a protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Frontend {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub proto: Proto,
}

impl Frontend {
    pub fn key(&self) -> ServiceKey {
        ServiceKey {
            addr: u32::from(self.addr).to_be(),
            port: self.port.to_be(),
            proto: self.proto.number(),
            scope: if self.addr.is_unspecified() {
                SCOPE_NODEPORT
            } else {
                SCOPE_ADDR
            },
        }
    }
}

/// One endpoint of a service port, with its EndpointSlice conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    pub addr: Ipv4Addr,
    pub port: u16,
    pub ready: bool,
    pub serving: bool,
    pub terminating: bool,
}

impl Endpoint {
    pub fn ready(addr: Ipv4Addr, port: u16) -> Self {
        Self {
            addr,
            port,
            ready: true,
            serving: true,
            terminating: false,
        }
    }
}

/// What one service port should do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub frontend: Frontend,
    pub endpoints: Vec<Endpoint>,
    /// `sessionAffinity: ClientIP` timeout in seconds.
    pub affinity_timeout: Option<u32>,
    /// Traffic from outside keeps its source address
    /// (`externalTrafficPolicy: Local`; the endpoints are then this node's).
    pub keep_source: bool,
    /// Traffic from outside picks its backend by Maglev consistent hashing
    /// (the same on every node) rather than at random.
    pub maglev: bool,
    /// Traffic from outside is forwarded by direct server return: the
    /// client's address kept, the backends' replies sent from their node.
    pub dsr: bool,
}

impl ServiceSpec {
    /// A TCP service port at `addr:port` (`0.0.0.0`: a NodePort) whose
    /// endpoints are `backends`, all ready, with nothing else asked for
    /// (no affinity, masquerade as usual, random choice).
    pub fn tcp(
        addr: Ipv4Addr,
        port: u16,
        backends: impl IntoIterator<Item = (Ipv4Addr, u16)>,
    ) -> Self {
        Self {
            frontend: Frontend {
                addr,
                port,
                proto: Proto::Tcp,
            },
            endpoints: backends
                .into_iter()
                .map(|(a, p)| Endpoint::ready(a, p))
                .collect(),
            affinity_timeout: None,
            keep_source: false,
            maglev: false,
            dsr: false,
        }
    }

    /// The backends new flows may go to, as kube-proxy chooses them: the
    /// ready endpoints; if there are none, the serving terminating ones; else
    /// none (and the service refuses connections). Sorted and deduplicated,
    /// so the result does not depend on the order endpoints were listed in.
    pub fn backends(&self) -> Vec<(Ipv4Addr, u16)> {
        let pick = |f: fn(&Endpoint) -> bool| -> BTreeSet<(Ipv4Addr, u16)> {
            self.endpoints
                .iter()
                .filter(|e| f(e))
                .map(|e| (e.addr, e.port))
                .collect()
        };
        let ready = pick(|e| e.ready);
        let chosen = if ready.is_empty() {
            pick(|e| e.serving && e.terminating)
        } else {
            ready
        };
        chosen.into_iter().collect()
    }

    /// Terminating endpoints new flows no longer go to: their backends are
    /// kept (with the flows already on them) until they leave the
    /// EndpointSlices, so that established connections drain as they do
    /// through kube-proxy's conntrack, rather than being cut or moved.
    pub fn draining(&self) -> Vec<(Ipv4Addr, u16)> {
        let active: BTreeSet<(Ipv4Addr, u16)> = self.backends().into_iter().collect();
        let out: BTreeSet<(Ipv4Addr, u16)> = self
            .endpoints
            .iter()
            .filter(|e| e.terminating && !active.contains(&(e.addr, e.port)))
            .map(|e| (e.addr, e.port))
            .collect();
        out.into_iter().collect()
    }
}

/// Operations being gathered: puts and switches first, then `later`
/// (deletions that must follow every switch), then released backends.
#[derive(Default)]
struct Batch {
    ops: Vec<MapOp>,
    later: Vec<MapOp>,
    released: Vec<(Ipv4Addr, u16)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Installed {
    value: ServiceValue,
    backends: Vec<u32>,
    /// Backends of draining (terminating) endpoints: referenced, in no
    /// slot.
    held: Vec<u32>,
}

/// Keeps what is installed and computes the operations that move the maps
/// to a new desired state. Pure: no I/O.
#[derive(Debug, Default)]
pub struct Translator {
    limits: Limits,
    /// Slots in use: the sum of the installed services' counts.
    slots_used: usize,
    services: BTreeMap<ServiceKey, Installed>,
    /// Backend id by (address, port), with the number of services using it.
    backends: BTreeMap<(Ipv4Addr, u16), (u32, usize)>,
    /// The same, by id.
    backend_addrs: BTreeMap<u32, (Ipv4Addr, u16)>,
    next_service_id: u32,
    next_slots_id: u32,
    next_backend_id: u32,
}

impl Translator {
    pub fn new() -> Self {
        Self::default()
    }

    /// A translator for maps of other sizes (tests, small nodes).
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    /// Rebuilds the translator from what the maps hold (after an agent
    /// restart), so that the first sync changes only what really changed.
    /// Slot sets that are incomplete (an update cut short) are kept as they
    /// are; the next sync replaces them.
    pub fn adopt(
        services: &BTreeMap<ServiceKey, ServiceValue>,
        slots: &BTreeMap<SlotKey, u32>,
        backends: &BTreeMap<u32, Backend>,
    ) -> Self {
        let mut t = Self::new();
        for (id, b) in backends {
            let addr = (Ipv4Addr::from(u32::from_be(b.addr)), u16::from_be(b.port));
            t.backends.insert(addr, (*id, 0));
            t.backend_addrs.insert(*id, addr);
            t.next_backend_id = t.next_backend_id.max(id.wrapping_add(1));
        }
        for (key, value) in services {
            let ids: Vec<u32> = (0..value.count)
                .filter_map(|slot| {
                    slots
                        .get(&SlotKey {
                            slots_id: value.slots_id,
                            slot,
                        })
                        .copied()
                })
                .collect();
            for id in &ids {
                if let Some(addr) = t.backend_addrs.get(id) {
                    t.backends.get_mut(addr).expect("indexed together").1 += 1;
                }
            }
            t.next_service_id = t.next_service_id.max(value.service_id);
            t.next_slots_id = t.next_slots_id.max(value.slots_id);
            t.slots_used += slots_of(value);
            t.services.insert(
                *key,
                Installed {
                    value: *value,
                    backends: ids,
                    // Draining backends are taken again by the first sync.
                    held: Vec::new(),
                },
            );
        }
        t
    }

    /// Number of installed service front ends and backends.
    pub fn sizes(&self) -> (usize, usize) {
        (self.services.len(), self.backends.len())
    }

    /// The operations that make the maps match `desired` (the whole set of
    /// services: front ends not in it are removed). For a resync; events
    /// about single services go through [`Translator::update`] and
    /// [`Translator::remove`], which cost O(1) in the number of services.
    /// Service ports the maps cannot take keep their previous state (see
    /// [`Translator::update`] for why one was refused).
    pub fn sync(&mut self, desired: &[ServiceSpec]) -> Vec<MapOp> {
        let mut batch = Batch::default();
        let mut wanted: BTreeSet<ServiceKey> = BTreeSet::new();
        for spec in desired {
            // A duplicate front end: the first one wins.
            if !wanted.insert(spec.frontend.key()) {
                continue;
            }
            let addrs = spec.backends();
            if self.check_capacity(spec, &addrs).is_ok() {
                self.upsert(spec, &addrs, &mut batch);
            }
        }
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !wanted.contains(k))
            .copied()
            .collect();
        for key in gone {
            self.delete(key, &mut batch);
        }
        self.finish(batch)
    }

    /// The operations for one service port that was added or changed, or
    /// why the maps cannot take it (it then keeps what it had).
    pub fn update(&mut self, spec: &ServiceSpec) -> Result<Vec<MapOp>, Refused> {
        let addrs = spec.backends();
        self.check_capacity(spec, &addrs)?;
        let mut batch = Batch::default();
        self.upsert(spec, &addrs, &mut batch);
        Ok(self.finish(batch))
    }

    /// Whether `spec`'s new state fits: its new slot set beside the old
    /// one, its new backends, a new front end.
    fn check_capacity(&self, spec: &ServiceSpec, addrs: &[(Ipv4Addr, u16)]) -> Result<(), Refused> {
        let refuse = |why| {
            Err(Refused {
                frontend: spec.frontend,
                why,
            })
        };
        let l = &self.limits;
        if addrs.len() > l.backends_per_service {
            return refuse(Capacity::BackendsPerService(
                addrs.len(),
                l.backends_per_service,
            ));
        }
        let key = spec.frontend.key();
        if !self.services.contains_key(&key) && self.services.len() >= l.services {
            return refuse(Capacity::Services(l.services));
        }
        let table = if spec.maglev && !addrs.is_empty() {
            maglev::size_for(addrs.len()) as usize
        } else {
            0
        };
        if self.slots_used + addrs.len() + table > l.slots {
            return refuse(Capacity::Slots(l.slots));
        }
        let draining = spec.draining();
        let new = addrs
            .iter()
            .chain(&draining)
            .filter(|a| !self.backends.contains_key(a))
            .count();
        if self.backends.len() + new > l.backends {
            return refuse(Capacity::Backends(l.backends));
        }
        Ok(())
    }

    /// The operations that remove every installed front end not in `keep`.
    pub fn prune(&mut self, keep: &BTreeSet<ServiceKey>) -> Vec<MapOp> {
        let mut batch = Batch::default();
        let gone: Vec<ServiceKey> = self
            .services
            .keys()
            .filter(|k| !keep.contains(k))
            .copied()
            .collect();
        for key in gone {
            self.delete(key, &mut batch);
        }
        self.finish(batch)
    }

    /// How many backends the installed front end `f` has, if it is
    /// installed.
    pub fn installed_backends(&self, f: &Frontend) -> Option<usize> {
        self.services.get(&f.key()).map(|i| i.backends.len())
    }

    /// The operations for one service port that was deleted.
    pub fn remove(&mut self, frontend: &Frontend) -> Vec<MapOp> {
        let mut batch = Batch::default();
        self.delete(frontend.key(), &mut batch);
        self.finish(batch)
    }

    fn upsert(&mut self, spec: &ServiceSpec, addrs: &[(Ipv4Addr, u16)], batch: &mut Batch) {
        let key = spec.frontend.key();
        let affinity = spec.affinity_timeout.unwrap_or(0);
        let maglev = (spec.maglev && !addrs.is_empty()).then(|| maglev::table(addrs));
        let mut flags = if spec.keep_source {
            SVC_F_KEEP_SOURCE
        } else {
            0
        };
        if let Some(table) = &maglev {
            flags |= SVC_F_MAGLEV | ((table.len() as u32) << SVC_MAGLEV_SIZE_SHIFT);
        }
        if spec.dsr {
            flags |= SVC_F_DSR;
        }
        // Backend ids for this service, creating backends as needed.
        let ids: Vec<u32> = addrs
            .iter()
            .map(|a| self.backend_id(*a, &mut batch.ops))
            .collect();
        let draining = spec.draining();
        let held: Vec<u32> = draining
            .iter()
            .map(|a| self.backend_id(*a, &mut batch.ops))
            .collect();
        let old = self.services.get(&key).cloned();
        if let Some(old) = &old
            && old.backends == ids
            && old.held == held
            && old.value.affinity_timeout == affinity
            && old.value.flags == flags
        {
            // Unchanged: undo the reference counts just taken.
            for a in addrs.iter().chain(&draining) {
                self.backends.get_mut(a).expect("just referenced").1 -= 1;
            }
            return;
        }
        let service_id = old
            .as_ref()
            .map_or_else(|| self.fresh_service_id(), |o| o.value.service_id);
        let slots_id = self.put_slots(ids.iter().copied(), batch);
        let maglev_slots_id = maglev
            .as_ref()
            .map_or(0, |t| self.put_slots(t.iter().map(|i| ids[*i]), batch));
        let new_members = members(affinity, &ids);
        let old_members = old
            .as_ref()
            .map(|o| members(o.value.affinity_timeout, &o.backends))
            .unwrap_or_default();
        for id in new_members.difference(&old_members) {
            batch.ops.push(MapOp::PutMember(MemberKey {
                service_id,
                backend_id: *id,
            }));
        }
        let value = ServiceValue {
            service_id,
            slots_id,
            count: ids.len() as u32,
            affinity_timeout: affinity,
            flags,
            maglev_slots_id,
        };
        self.slots_used += slots_of(&value);
        batch.ops.push(MapOp::PutService(key, value));
        if let Some(old) = old {
            self.delete_slots(&old.value, batch);
            for id in old_members.difference(&new_members) {
                batch.later.push(MapOp::DeleteMember(MemberKey {
                    service_id,
                    backend_id: *id,
                }));
            }
            batch.released.extend(
                old.backends
                    .iter()
                    .chain(&old.held)
                    .filter_map(|id| self.addr_of(*id)),
            );
        }
        self.services.insert(
            key,
            Installed {
                value,
                backends: ids,
                held,
            },
        );
    }

    fn delete(&mut self, key: ServiceKey, batch: &mut Batch) {
        let Some(old) = self.services.remove(&key) else {
            return;
        };
        batch.ops.push(MapOp::DeleteService(key));
        self.delete_slots(&old.value, batch);
        for id in members(old.value.affinity_timeout, &old.backends) {
            batch.later.push(MapOp::DeleteMember(MemberKey {
                service_id: old.value.service_id,
                backend_id: id,
            }));
        }
        batch.released.extend(
            old.backends
                .iter()
                .chain(&old.held)
                .filter_map(|id| self.addr_of(*id)),
        );
    }

    /// Writes `ids` as a new slot set; returns its id.
    fn put_slots(&mut self, ids: impl Iterator<Item = u32>, batch: &mut Batch) -> u32 {
        let slots_id = self.fresh_slots_id();
        for (slot, id) in ids.enumerate() {
            batch.ops.push(MapOp::PutSlot(
                SlotKey {
                    slots_id,
                    slot: slot as u32,
                },
                id,
            ));
        }
        slots_id
    }

    /// Deletes a replaced or removed service state's slot sets, after the
    /// switch.
    fn delete_slots(&mut self, old: &ServiceValue, batch: &mut Batch) {
        self.slots_used -= slots_of(old);
        let sets = [
            (old.slots_id, old.count),
            (old.maglev_slots_id, old.maglev_size()),
        ];
        for (slots_id, n) in sets {
            for slot in 0..n {
                batch
                    .later
                    .push(MapOp::DeleteSlot(SlotKey { slots_id, slot }));
            }
        }
    }

    /// Orders a batch: puts and switches, then deletions of what no service
    /// points to any more, then backends no service uses, with their flows.
    /// Within each part, operations are grouped by map (backends, slots,
    /// members, then the switches), keeping their order within a map: every
    /// switch still follows everything its new set refers to, and the maps
    /// take each group as one batch.
    fn finish(&mut self, batch: Batch) -> Vec<MapOp> {
        let Batch {
            ops,
            later,
            released,
        } = batch;
        let mut ops = by_group(ops);
        ops.extend(by_group(later));
        let mut purges = vec![];
        for addr in released {
            let entry = self
                .backends
                .get_mut(&addr)
                .expect("released backends are known");
            entry.1 -= 1;
            if entry.1 == 0 {
                let id = entry.0;
                self.backends.remove(&addr);
                self.backend_addrs.remove(&id);
                ops.push(MapOp::DeleteBackend(id));
                purges.push(MapOp::PurgeBackendFlows(id, backend_value(addr)));
            }
        }
        ops.extend(purges);
        ops
    }

    fn backend_id(&mut self, addr: (Ipv4Addr, u16), ops: &mut Vec<MapOp>) -> u32 {
        if let Some(e) = self.backends.get_mut(&addr) {
            e.1 += 1;
            return e.0;
        }
        let id = self.next_backend_id;
        self.next_backend_id = self.next_backend_id.wrapping_add(1);
        self.backends.insert(addr, (id, 1));
        self.backend_addrs.insert(id, addr);
        let backend = Backend {
            addr: u32::from(addr.0).to_be(),
            port: addr.1.to_be(),
            _pad: 0,
        };
        ops.push(MapOp::PutBackend(id, backend));
        id
    }

    fn addr_of(&self, id: u32) -> Option<(Ipv4Addr, u16)> {
        self.backend_addrs.get(&id).copied()
    }

    fn fresh_service_id(&mut self) -> u32 {
        self.next_service_id = self.next_service_id.wrapping_add(1);
        self.next_service_id
    }

    fn fresh_slots_id(&mut self) -> u32 {
        self.next_slots_id = self.next_slots_id.wrapping_add(1);
        self.next_slots_id
    }
}

/// The slots a service state holds: its backends' and its Maglev table's.
fn slots_of(v: &ServiceValue) -> usize {
    v.count as usize + v.maglev_size() as usize
}

/// The `MEMBERS` entries of a service: its backends if it has session
/// affinity (the datapath checks an affinity entry's backend there), none
/// otherwise (nothing else reads them, and they were a third of the writes
/// of programming a large service set).
fn members(affinity_timeout: u32, backends: &[u32]) -> BTreeSet<u32> {
    if affinity_timeout == 0 {
        BTreeSet::new()
    } else {
        backends.iter().copied().collect()
    }
}

/// The group an operation is applied in, within its part of a batch (a
/// stable sort keeps the order within a group).
fn group(op: &MapOp) -> u8 {
    match op {
        MapOp::PutBackend(..) => 0,
        MapOp::PutSlot(..) | MapOp::DeleteSlot(..) => 1,
        MapOp::PutMember(..) | MapOp::DeleteMember(..) => 2,
        MapOp::PutService(..) | MapOp::DeleteService(..) => 3,
        MapOp::DeleteBackend(..) => 4,
        MapOp::PurgeBackendFlows(..) => 5,
    }
}

/// `ops` grouped by [`group`], in their order within each group (a stable
/// bucket sort: linear, where a comparison sort of a full sync's million
/// operations took a tenth of the translation).
fn by_group(ops: Vec<MapOp>) -> Vec<MapOp> {
    let mut buckets: [Vec<MapOp>; 6] = Default::default();
    for op in ops {
        buckets[usize::from(group(&op))].push(op);
    }
    buckets.into_iter().flatten().collect()
}

fn backend_value((addr, port): (Ipv4Addr, u16)) -> Backend {
    Backend {
        addr: u32::from(addr).to_be(),
        port: port.to_be(),
        _pad: 0,
    }
}

#[cfg(test)]
mod tests;
