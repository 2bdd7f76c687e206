//! Applying the translator's [`MapOp`]s to the maps: consecutive operations
//! on one map go to the kernel as one batch (`super::super::batch`), in the
//! order given, so the maps pass through exactly the states the operations
//! one by one would give them; flow purges are one pass over the flow
//! tables at the end.

use std::collections::BTreeSet;

use aya::maps::{HashMap, IterableMap as _, MapData};
use rudder_ebpf_common::service::{
    Backend, MAP_AFFINITY, MAP_BACKENDS, MAP_CONNTRACK, MAP_FLOWS, MAP_MEMBERS, MAP_REV_NAT,
    MAP_SERVICES, MAP_SLOTS, MemberKey, ServiceKey, ServiceValue, SlotKey,
};

use super::{ServiceDataplane, ignore_missing, map_error, remove_where};
use crate::{BpfError, MapOp, batch};

/// A run of consecutive operations of one kind on one map.
enum Run {
    PutBackends(Vec<u32>, Vec<Backend>),
    PutSlots(Vec<SlotKey>, Vec<u32>),
    PutMembers(Vec<MemberKey>, Vec<u32>),
    PutServices(Vec<ServiceKey>, Vec<ServiceValue>),
    DeleteServices(Vec<ServiceKey>),
    DeleteSlots(Vec<SlotKey>),
    DeleteMembers(Vec<MemberKey>),
    DeleteBackends(Vec<u32>),
}

impl Run {
    /// Adds `op` to this run if it is of the same kind.
    fn extend(&mut self, op: &MapOp) -> bool {
        match (self, *op) {
            (Run::PutBackends(k, v), MapOp::PutBackend(id, b)) => {
                k.push(id);
                v.push(b);
            }
            (Run::PutSlots(k, v), MapOp::PutSlot(key, id)) => {
                k.push(key);
                v.push(id);
            }
            (Run::PutMembers(k, v), MapOp::PutMember(key)) => {
                k.push(key);
                v.push(1);
            }
            (Run::PutServices(k, v), MapOp::PutService(key, value)) => {
                k.push(key);
                v.push(value);
            }
            (Run::DeleteServices(k), MapOp::DeleteService(key)) => k.push(key),
            (Run::DeleteSlots(k), MapOp::DeleteSlot(key)) => k.push(key),
            (Run::DeleteMembers(k), MapOp::DeleteMember(key)) => k.push(key),
            (Run::DeleteBackends(k), MapOp::DeleteBackend(id)) => k.push(id),
            _ => return false,
        }
        true
    }

    /// A run starting with `op`; `None` for a flow purge.
    fn start(op: &MapOp) -> Option<Run> {
        let mut run = match op {
            MapOp::PutBackend(..) => Run::PutBackends(vec![], vec![]),
            MapOp::PutSlot(..) => Run::PutSlots(vec![], vec![]),
            MapOp::PutMember(..) => Run::PutMembers(vec![], vec![]),
            MapOp::PutService(..) => Run::PutServices(vec![], vec![]),
            MapOp::DeleteService(..) => Run::DeleteServices(vec![]),
            MapOp::DeleteSlot(..) => Run::DeleteSlots(vec![]),
            MapOp::DeleteMember(..) => Run::DeleteMembers(vec![]),
            MapOp::DeleteBackend(..) => Run::DeleteBackends(vec![]),
            MapOp::PurgeBackendFlows(..) => return None,
        };
        run.extend(op);
        Some(run)
    }
}

impl ServiceDataplane {
    /// Applies the operations in order. Flow purges are batched into one
    /// pass over the flow tables at the end.
    pub fn apply(&mut self, ops: &[MapOp]) -> Result<(), BpfError> {
        let mut purge_ids = BTreeSet::new();
        let mut purge_backends = BTreeSet::new();
        let mut run: Option<Run> = None;
        for op in ops {
            if let MapOp::PurgeBackendFlows(id, b) = *op {
                purge_ids.insert(id);
                purge_backends.insert((b.addr, b.port));
                continue;
            }
            if run.as_mut().is_some_and(|r| r.extend(op)) {
                continue;
            }
            if let Some(done) = run.take() {
                self.apply_run(done)?;
            }
            run = Run::start(op);
        }
        if let Some(done) = run {
            self.apply_run(done)?;
        }
        if !purge_ids.is_empty() {
            self.purge(&purge_ids, &purge_backends)?;
        }
        Ok(())
    }

    fn apply_run(&mut self, run: Run) -> Result<(), BpfError> {
        match run {
            Run::PutBackends(k, v) => put(&mut self.backends, MAP_BACKENDS, &k, &v),
            Run::PutSlots(k, v) => put(&mut self.slots, MAP_SLOTS, &k, &v),
            Run::PutMembers(k, v) => put(&mut self.members, MAP_MEMBERS, &k, &v),
            Run::PutServices(k, v) => put(&mut self.services, MAP_SERVICES, &k, &v),
            Run::DeleteServices(k) => delete(&mut self.services, MAP_SERVICES, &k),
            Run::DeleteSlots(k) => delete(&mut self.slots, MAP_SLOTS, &k),
            Run::DeleteMembers(k) => delete(&mut self.members, MAP_MEMBERS, &k),
            Run::DeleteBackends(k) => delete(&mut self.backends, MAP_BACKENDS, &k),
        }
    }

    pub(super) fn purge(
        &mut self,
        ids: &BTreeSet<u32>,
        backends: &BTreeSet<(u32, u16)>,
    ) -> Result<(), BpfError> {
        remove_where(&mut self.flows, MAP_FLOWS, |_, v| {
            ids.contains(&v.backend_id)
        })?;
        remove_where(&mut self.conntrack, MAP_CONNTRACK, |_, v| {
            ids.contains(&v.backend_id)
        })?;
        remove_where(&mut self.rev_nat, MAP_REV_NAT, |k, _| {
            backends.contains(&(k.saddr, k.sport))
        })?;
        remove_where(&mut self.affinity, MAP_AFFINITY, |_, v| {
            ids.contains(&v.backend_id)
        })
    }
}

/// Writes a run of elements: one batch, or one by one where the kernel has
/// no batches.
fn put<K: aya::Pod + std::fmt::Debug, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    keys: &[K],
    values: &[V],
) -> Result<(), BpfError> {
    if batch::supported() {
        match batch::update(map.map(), keys, values) {
            Ok(batch::Outcome::Done) => return Ok(()),
            Ok(batch::Outcome::Unsupported) => {}
            Err(f) => return Err(batch_error(name, &format!("put {:?}", keys[f.index]), f)),
        }
    }
    for (k, v) in keys.iter().zip(values) {
        map.insert(k, v, 0)
            .map_err(|e| map_error(name, &format!("put {k:?}"), e))?;
    }
    Ok(())
}

/// Deletes a run of keys; keys already gone are fine.
fn delete<K: aya::Pod + std::fmt::Debug, V: aya::Pod>(
    map: &mut HashMap<MapData, K, V>,
    name: &'static str,
    keys: &[K],
) -> Result<(), BpfError> {
    if batch::supported() {
        match batch::delete(map.map(), keys) {
            Ok(batch::Outcome::Done) => return Ok(()),
            Ok(batch::Outcome::Unsupported) => {}
            Err(f) => return Err(batch_error(name, &format!("delete {:?}", keys[f.index]), f)),
        }
    }
    for k in keys {
        ignore_missing(map.remove(k)).map_err(|e| map_error(name, &format!("delete {k:?}"), e))?;
    }
    Ok(())
}

fn batch_error(map: &'static str, action: &str, f: batch::Failed) -> BpfError {
    BpfError::MapBatch {
        map,
        action: action.to_string(),
        source: f.error,
    }
}
