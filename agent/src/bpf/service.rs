//! The Service dataplane's BPF side: loads the `service` object with its
//! maps pinned under a directory (so a restarted agent finds the same maps,
//! flows and affinities), attaches it to pod interfaces, and applies the
//! proxy's [`MapOp`]s.

use std::{collections::BTreeSet, net::Ipv4Addr, path::Path};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, MapData, PerCpuArray},
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions},
};
use rudder_ebpf_common::service::{
    AffinityKey, AffinityValue, Backend, CtValue, FlowKey, MAP_AFFINITY, MAP_BACKENDS, MAP_CONFIG,
    MAP_CONNTRACK, MAP_MEMBERS, MAP_REV_NAT, MAP_SERVICES, MAP_SLOTS, MAP_STATS, MemberKey,
    PROG_FROM_POD, PROG_TO_POD, RevNatValue, SVC_COUNTERS, ServiceKey, ServiceValue, SlotKey,
    SvcCounter, config,
};

use super::{
    BpfError, SERVICE_OBJECT,
    packet_stats::TestRunOutput,
    tc::{self, AttachMode, Attached, Direction},
};
use crate::proxy::MapOp;

const OBJECT: &str = "service";

/// The loaded Service dataplane.
pub struct ServiceDataplane {
    ebpf: Ebpf,
    services: HashMap<MapData, ServiceKey, ServiceValue>,
    slots: HashMap<MapData, SlotKey, u32>,
    backends: HashMap<MapData, u32, Backend>,
    members: HashMap<MapData, MemberKey, u32>,
    conntrack: HashMap<MapData, FlowKey, CtValue>,
    rev_nat: HashMap<MapData, FlowKey, RevNatValue>,
    affinity: HashMap<MapData, AffinityKey, AffinityValue>,
    config: Array<MapData, u32>,
    stats: PerCpuArray<MapData, u64>,
}

impl std::fmt::Debug for ServiceDataplane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceDataplane").finish_non_exhaustive()
    }
}

/// Datapath counters summed over CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SvcCounts([u64; SVC_COUNTERS as usize]);

impl SvcCounts {
    pub fn get(&self, c: SvcCounter) -> u64 {
        self.0[c as usize]
    }

    /// Non-zero counters as `(name, value)`.
    pub fn non_zero(&self) -> Vec<(&'static str, u64)> {
        SvcCounter::ALL
            .iter()
            .filter(|c| self.get(**c) > 0)
            .map(|c| (c.name(), self.get(*c)))
            .collect()
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, BpfError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf.take_map(name).ok_or(BpfError::NoMap {
        object: OBJECT,
        map: name,
    })?;
    T::try_from(map).map_err(|e| map_error(name, "open", e))
}

fn map_error(map: &'static str, action: &str, e: aya::maps::MapError) -> BpfError {
    BpfError::Map {
        map,
        action: action.to_string(),
        source: Box::new(e),
    }
}

fn program_error(program: &'static str, action: &str, e: ProgramError) -> BpfError {
    BpfError::Program {
        program,
        action: action.to_string(),
        source: Box::new(e),
    }
}

impl ServiceDataplane {
    /// Loads the object; its maps are pinned in `pin_dir` (created maps are
    /// pinned there, maps already pinned there are reused).
    pub fn load(pin_dir: &Path) -> Result<Self, BpfError> {
        if SERVICE_OBJECT.is_empty() {
            return Err(BpfError::NotEmbedded(OBJECT));
        }
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(pin_dir)
            .load(SERVICE_OBJECT)
            .map_err(|e| BpfError::Load {
                object: OBJECT,
                source: Box::new(e),
            })?;
        for name in [PROG_FROM_POD, PROG_TO_POD] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| program_error(name, "load", e))?;
        }
        Ok(Self {
            services: take(&mut ebpf, MAP_SERVICES)?,
            slots: take(&mut ebpf, MAP_SLOTS)?,
            backends: take(&mut ebpf, MAP_BACKENDS)?,
            members: take(&mut ebpf, MAP_MEMBERS)?,
            conntrack: take(&mut ebpf, MAP_CONNTRACK)?,
            rev_nat: take(&mut ebpf, MAP_REV_NAT)?,
            affinity: take(&mut ebpf, MAP_AFFINITY)?,
            config: take(&mut ebpf, MAP_CONFIG)?,
            stats: take(&mut ebpf, MAP_STATS)?,
            ebpf,
        })
    }

    /// Attaches to a pod's host-side interface: `from_pod` on its ingress
    /// (what the pod sends), `to_pod` on its egress (what the pod receives).
    pub fn attach_pod_interface(
        &mut self,
        iface: &str,
        mode: AttachMode,
    ) -> Result<Attached, BpfError> {
        let a = tc::attach(
            classifier(&mut self.ebpf, PROG_FROM_POD)?,
            PROG_FROM_POD,
            iface,
            Direction::Ingress,
            mode,
        )?;
        let mode = match a {
            Attached::Tcx => AttachMode::Tcx,
            Attached::Clsact => AttachMode::Clsact,
        };
        tc::attach(
            classifier(&mut self.ebpf, PROG_TO_POD)?,
            PROG_TO_POD,
            iface,
            Direction::Egress,
            mode,
        )
    }

    /// Sets the address hairpin flows are masqueraded as (link-local, not
    /// used by anything else on the node).
    pub fn set_hairpin_addr(&mut self, addr: Ipv4Addr) -> Result<(), BpfError> {
        self.config
            .set(config::HAIRPIN_ADDR, u32::from(addr).to_be(), 0)
            .map_err(|e| map_error(MAP_CONFIG, "set the hairpin address", e))
    }

    /// Moves the datapath's clock forward by `seconds` (tests of affinity
    /// expiry use it instead of waiting).
    pub fn set_clock_offset(&mut self, seconds: u32) -> Result<(), BpfError> {
        self.config
            .set(config::CLOCK_OFFSET, seconds, 0)
            .map_err(|e| map_error(MAP_CONFIG, "set the clock offset", e))
    }

    /// Applies the operations in order. Flow purges are batched into one
    /// pass over the flow tables at the end.
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<(), BpfError> {
        let mut purge_ids = BTreeSet::new();
        let mut purge_backends = BTreeSet::new();
        for op in ops {
            match *op {
                MapOp::PutBackend(id, b) => self
                    .backends
                    .insert(id, b, 0)
                    .map_err(|e| map_error(MAP_BACKENDS, &format!("put backend {id}"), e))?,
                MapOp::PutSlot(k, v) => self
                    .slots
                    .insert(k, v, 0)
                    .map_err(|e| map_error(MAP_SLOTS, &format!("put {k:?}"), e))?,
                MapOp::PutMember(k) => self
                    .members
                    .insert(k, 1, 0)
                    .map_err(|e| map_error(MAP_MEMBERS, &format!("put {k:?}"), e))?,
                MapOp::PutService(k, v) => self
                    .services
                    .insert(k, v, 0)
                    .map_err(|e| map_error(MAP_SERVICES, &format!("put {k:?}"), e))?,
                MapOp::DeleteService(k) => ignore_missing(self.services.remove(&k))
                    .map_err(|e| map_error(MAP_SERVICES, &format!("delete {k:?}"), e))?,
                MapOp::DeleteSlot(k) => ignore_missing(self.slots.remove(&k))
                    .map_err(|e| map_error(MAP_SLOTS, &format!("delete {k:?}"), e))?,
                MapOp::DeleteMember(k) => ignore_missing(self.members.remove(&k))
                    .map_err(|e| map_error(MAP_MEMBERS, &format!("delete {k:?}"), e))?,
                MapOp::DeleteBackend(id) => ignore_missing(self.backends.remove(&id))
                    .map_err(|e| map_error(MAP_BACKENDS, &format!("delete backend {id}"), e))?,
                MapOp::PurgeBackendFlows(id, b) => {
                    purge_ids.insert(id);
                    purge_backends.insert((b.addr, b.port));
                }
            }
        }
        if !purge_ids.is_empty() {
            self.purge(&purge_ids, &purge_backends)?;
        }
        Ok(())
    }

    fn purge(
        &mut self,
        ids: &BTreeSet<u32>,
        backends: &BTreeSet<(u32, u16)>,
    ) -> Result<(), BpfError> {
        let ct: Vec<FlowKey> = self
            .conntrack
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| ids.contains(&v.backend_id))
            .map(|(k, _)| k)
            .collect();
        for k in ct {
            ignore_missing(self.conntrack.remove(&k))
                .map_err(|e| map_error(MAP_CONNTRACK, "purge", e))?;
        }
        let rev: Vec<FlowKey> = self
            .rev_nat
            .keys()
            .filter_map(Result::ok)
            .filter(|k| backends.contains(&(k.saddr, k.sport)))
            .collect();
        for k in rev {
            ignore_missing(self.rev_nat.remove(&k))
                .map_err(|e| map_error(MAP_REV_NAT, "purge", e))?;
        }
        let aff: Vec<AffinityKey> = self
            .affinity
            .iter()
            .filter_map(Result::ok)
            .filter(|(_, v)| ids.contains(&v.backend_id))
            .map(|(k, _)| k)
            .collect();
        for k in aff {
            ignore_missing(self.affinity.remove(&k))
                .map_err(|e| map_error(MAP_AFFINITY, "purge", e))?;
        }
        Ok(())
    }

    /// Number of tracked flows.
    pub fn flow_count(&self) -> usize {
        self.conntrack.keys().filter(Result::is_ok).count()
    }

    /// Datapath counters.
    pub fn counts(&self) -> Result<SvcCounts, BpfError> {
        let mut c = SvcCounts::default();
        for counter in SvcCounter::ALL {
            let v = self
                .stats
                .get(&(counter as u32), 0)
                .map_err(|e| map_error(MAP_STATS, &format!("read {}", counter.name()), e))?;
            c.0[counter as usize] = v.iter().sum();
        }
        Ok(c)
    }

    /// Runs `from_pod` (`true`) or `to_pod` once on `packet` through
    /// `BPF_PROG_TEST_RUN`.
    pub fn test_run(&mut self, from_pod: bool, packet: &[u8]) -> Result<TestRunOutput, BpfError> {
        let name = if from_pod { PROG_FROM_POD } else { PROG_TO_POD };
        let prog = classifier(&mut self.ebpf, name)?;
        let mut out = vec![0u8; packet.len() + 256];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ..TestRunOptions::default()
            })
            .map_err(|e| program_error(name, "BPF_PROG_TEST_RUN", e))?;
        out.truncate(r.data_size_out as usize);
        Ok(TestRunOutput {
            verdict: r.return_value as i32,
            data: out,
        })
    }
}

fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, BpfError> {
    let prog = ebpf.program_mut(name).ok_or(BpfError::NoProgram {
        object: OBJECT,
        program: name,
    })?;
    prog.try_into()
        .map_err(|e| program_error(name, "open as a tc classifier", e))
}

/// Deleting what is already gone (an LRU eviction, a repeated sync) is fine.
fn ignore_missing(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        other => other,
    }
}
