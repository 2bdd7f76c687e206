//! Unit tests of the translator: every operation applied to fake maps
//! whose invariant is checked after each one.

use super::*;

/// The maps as the datapath sees them, checking after every single
/// operation that each service's slot set is complete and every slot
/// names an existing backend.
#[derive(Default, Debug)]
struct FakeMaps {
    services: BTreeMap<ServiceKey, ServiceValue>,
    slots: BTreeMap<SlotKey, u32>,
    members: BTreeSet<MemberKey>,
    backends: BTreeMap<u32, Backend>,
    purged: Vec<u32>,
}

impl FakeMaps {
    fn apply(&mut self, ops: &[MapOp]) {
        for op in ops {
            match *op {
                MapOp::PutBackend(id, b) => drop(self.backends.insert(id, b)),
                MapOp::PutSlot(k, v) => drop(self.slots.insert(k, v)),
                MapOp::PutMember(k) => drop(self.members.insert(k)),
                MapOp::PutService(k, v) => drop(self.services.insert(k, v)),
                MapOp::DeleteService(k) => {
                    assert!(self.services.remove(&k).is_some(), "{op:?}");
                }
                MapOp::DeleteSlot(k) => assert!(self.slots.remove(&k).is_some(), "{op:?}"),
                MapOp::DeleteMember(k) => assert!(self.members.remove(&k), "{op:?}"),
                MapOp::DeleteBackend(id) => {
                    assert!(self.backends.remove(&id).is_some(), "{op:?}");
                }
                MapOp::PurgeBackendFlows(id, _) => self.purged.push(id),
            }
            self.check(op);
        }
    }

    fn check(&self, after: &MapOp) {
        for (k, v) in &self.services {
            for slot in 0..v.count {
                let id = self.slots.get(&SlotKey {
                    slots_id: v.slots_id,
                    slot,
                });
                let id = id.unwrap_or_else(|| panic!("after {after:?}: {k:?} slot {slot} missing"));
                assert!(
                    self.backends.contains_key(id),
                    "after {after:?}: backend {id} missing"
                );
                let m = MemberKey {
                    service_id: v.service_id,
                    backend_id: *id,
                };
                assert!(
                    v.affinity_timeout == 0 || self.members.contains(&m),
                    "after {after:?}: member {m:?} missing"
                );
            }
            for slot in 0..v.maglev_size() {
                let id = self.slots.get(&SlotKey {
                    slots_id: v.maglev_slots_id,
                    slot,
                });
                let id = id
                    .unwrap_or_else(|| panic!("after {after:?}: {k:?} Maglev slot {slot} missing"));
                assert!(
                    self.backends.contains_key(id),
                    "after {after:?}: Maglev backend {id} missing"
                );
            }
        }
    }

    /// Backends of a service, as addresses.
    fn backends_of(&self, f: &Frontend) -> Vec<(Ipv4Addr, u16)> {
        let v = self.services[&f.key()];
        let mut out: Vec<_> = (0..v.count)
            .map(|slot| {
                let b = self.backends[&self.slots[&SlotKey {
                    slots_id: v.slots_id,
                    slot,
                }]];
                (Ipv4Addr::from(u32::from_be(b.addr)), u16::from_be(b.port))
            })
            .collect();
        out.sort();
        out
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 244, 0, last)
}

fn fe(last: u8, port: u16) -> Frontend {
    Frontend {
        addr: Ipv4Addr::new(10, 96, 0, last),
        port,
        proto: Proto::Tcp,
    }
}

fn svc(f: Frontend, eps: &[Endpoint]) -> ServiceSpec {
    ServiceSpec {
        frontend: f,
        endpoints: eps.to_vec(),
        affinity_timeout: None,
        keep_source: false,
        maglev: false,
        dsr: false,
    }
}

#[test]
fn ready_then_terminating_serving_then_nothing() {
    let mut s = svc(
        fe(1, 80),
        &[Endpoint::ready(ip(2), 8080), Endpoint::ready(ip(1), 8080)],
    );
    assert_eq!(s.backends(), vec![(ip(1), 8080), (ip(2), 8080)], "sorted");
    s.endpoints = vec![
        Endpoint {
            addr: ip(1),
            port: 8080,
            ready: false,
            serving: true,
            terminating: true,
        },
        Endpoint {
            addr: ip(2),
            port: 8080,
            ready: false,
            serving: false,
            terminating: true,
        },
        Endpoint {
            addr: ip(3),
            port: 8080,
            ready: false,
            serving: false,
            terminating: false,
        },
    ];
    assert_eq!(
        s.backends(),
        vec![(ip(1), 8080)],
        "fallback to serving terminating"
    );
    s.endpoints.push(Endpoint::ready(ip(4), 8080));
    assert_eq!(
        s.backends(),
        vec![(ip(4), 8080)],
        "ready wins over terminating"
    );
    s.endpoints.retain(|e| !e.ready && !e.serving);
    assert!(s.backends().is_empty());
}

#[test]
fn every_intermediate_state_is_complete() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let (a, b) = (fe(1, 80), fe(2, 53));
    maps.apply(&t.sync(&[
        svc(a, &[Endpoint::ready(ip(1), 80), Endpoint::ready(ip(2), 80)]),
        svc(b, &[Endpoint::ready(ip(2), 80)]),
    ]));
    assert_eq!(maps.backends_of(&a), vec![(ip(1), 80), (ip(2), 80)]);
    // Replace a backend, add one, drop a service: checked after each op.
    maps.apply(&t.sync(&[svc(
        a,
        &[
            Endpoint::ready(ip(2), 80),
            Endpoint::ready(ip(3), 80),
            Endpoint::ready(ip(4), 80),
        ],
    )]));
    assert_eq!(
        maps.backends_of(&a),
        vec![(ip(2), 80), (ip(3), 80), (ip(4), 80)]
    );
    assert!(!maps.services.contains_key(&b.key()));
    // 10.244.0.1 left every service: deleted, and its flows purged.
    assert_eq!(maps.backends.len(), 3);
    assert_eq!(maps.purged.len(), 1);
    assert_eq!(t.sizes(), (1, 3));
    // Nothing left behind when all goes.
    maps.apply(&t.sync(&[]));
    assert!(
        maps.services.is_empty()
            && maps.slots.is_empty()
            && maps.members.is_empty()
            && maps.backends.is_empty()
    );
}

#[test]
fn an_unchanged_state_needs_no_operation() {
    let mut t = Translator::new();
    let desired = [svc(fe(1, 80), &[Endpoint::ready(ip(1), 80)])];
    assert!(!t.sync(&desired).is_empty());
    assert_eq!(t.sync(&desired), vec![]);
    assert_eq!(t.sizes(), (1, 1));
}

#[test]
fn the_switch_is_one_service_update_after_the_new_slots() {
    let mut t = Translator::new();
    let a = fe(1, 80);
    t.sync(&[svc(a, &[Endpoint::ready(ip(1), 80)])]);
    let ops = t.sync(&[svc(a, &[Endpoint::ready(ip(2), 80)])]);
    let switch = ops
        .iter()
        .position(|o| matches!(o, MapOp::PutService(..)))
        .unwrap();
    assert_eq!(
        ops.iter()
            .filter(|o| matches!(o, MapOp::PutService(..)))
            .count(),
        1
    );
    assert!(ops[..switch].iter().all(|o| matches!(
        o,
        MapOp::PutBackend(..) | MapOp::PutSlot(..) | MapOp::PutMember(..)
    )));
    assert!(ops[switch + 1..].iter().all(|o| matches!(
        o,
        MapOp::DeleteSlot(..)
            | MapOp::DeleteMember(..)
            | MapOp::DeleteBackend(..)
            | MapOp::PurgeBackendFlows(..)
    )));
}

#[test]
fn no_endpoints_keeps_the_service_with_zero_backends() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let a = fe(1, 80);
    maps.apply(&t.sync(&[svc(a, &[])]));
    assert_eq!(
        maps.services[&a.key()].count,
        0,
        "present, so the datapath refuses"
    );
    maps.apply(&t.sync(&[svc(a, &[Endpoint::ready(ip(1), 80)])]));
    assert_eq!(maps.services[&a.key()].count, 1);
}

#[test]
fn affinity_changes_and_ids_are_stable() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let a = fe(1, 80);
    let mut s = svc(a, &[Endpoint::ready(ip(1), 80)]);
    maps.apply(&t.sync(&[s.clone()]));
    let id = maps.services[&a.key()].service_id;
    s.affinity_timeout = Some(10800);
    maps.apply(&t.sync(&[s]));
    let v = maps.services[&a.key()];
    assert_eq!((v.affinity_timeout, v.service_id), (10800, id));
}

#[test]
fn shared_backends_are_counted() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let shared = [Endpoint::ready(ip(9), 80)];
    maps.apply(&t.sync(&[svc(fe(1, 80), &shared), svc(fe(2, 80), &shared)]));
    assert_eq!(maps.backends.len(), 1);
    maps.apply(&t.sync(&[svc(fe(2, 80), &shared)]));
    assert_eq!(maps.backends.len(), 1, "still used by the second service");
    assert!(maps.purged.is_empty());
}

#[test]
fn single_service_events_match_a_full_sync() {
    let mut by_events = Translator::new();
    let mut by_sync = Translator::new();
    let (mut a, mut b) = (FakeMaps::default(), FakeMaps::default());
    let s1 = svc(
        fe(1, 80),
        &[Endpoint::ready(ip(1), 80), Endpoint::ready(ip(2), 80)],
    );
    let s2 = svc(fe(2, 80), &[Endpoint::ready(ip(2), 80)]);
    a.apply(&by_events.update(&s1).unwrap());
    a.apply(&by_events.update(&s2).unwrap());
    b.apply(&by_sync.sync(&[s1.clone(), s2.clone()]));
    assert_eq!(a.backends_of(&fe(1, 80)), b.backends_of(&fe(1, 80)));
    let s1b = svc(fe(1, 80), &[Endpoint::ready(ip(3), 80)]);
    a.apply(&by_events.update(&s1b).unwrap());
    a.apply(&by_events.remove(&fe(2, 80)));
    b.apply(&by_sync.sync(&[s1b]));
    assert_eq!(a.backends_of(&fe(1, 80)), vec![(ip(3), 80)]);
    assert_eq!(
        (a.services.len(), a.backends.len(), a.slots.len()),
        (b.services.len(), b.backends.len(), b.slots.len())
    );
    assert_eq!(a.purged.len(), 2, "10.244.0.1 and .2 left every service");
    assert_eq!(
        by_events.remove(&fe(9, 80)),
        vec![],
        "removing what is not there is a no-op"
    );
}

#[test]
fn adopting_the_maps_after_a_restart_changes_nothing() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let desired = vec![
        svc(
            fe(1, 80),
            &[Endpoint::ready(ip(1), 80), Endpoint::ready(ip(2), 80)],
        ),
        svc(fe(2, 80), &[Endpoint::ready(ip(2), 80)]),
    ];
    maps.apply(&t.sync(&desired));
    let mut again = Translator::adopt(&maps.services, &maps.slots, &maps.backends);
    assert_eq!(again.sync(&desired), vec![], "nothing changed");
    // Later changes allocate fresh ids and leave the maps consistent.
    let mut changed = desired.clone();
    changed[1] = svc(fe(2, 80), &[Endpoint::ready(ip(3), 80)]);
    changed.push(svc(fe(3, 80), &[Endpoint::ready(ip(1), 80)]));
    let ops = again.sync(&changed);
    maps.apply(&ops);
    assert_eq!(maps.backends_of(&fe(2, 80)), vec![(ip(3), 80)]);
    assert_eq!(maps.backends_of(&fe(3, 80)), vec![(ip(1), 80)]);
    let ids: BTreeSet<u32> = maps.services.values().map(|v| v.service_id).collect();
    assert_eq!(ids.len(), 3, "service ids stay distinct");
}

#[test]
fn ten_thousand_services_translate_and_remove_cleanly() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let desired: Vec<ServiceSpec> = (0..10_000u32)
        .map(|i| {
            let f = Frontend {
                addr: Ipv4Addr::from(0x0a60_0000 + i),
                port: 80,
                proto: Proto::Tcp,
            };
            let eps: Vec<Endpoint> = (0..3)
                .map(|j| Endpoint::ready(Ipv4Addr::from(0x0af4_0000 + i * 3 + j), 8080))
                .collect();
            svc(f, &eps)
        })
        .collect();
    let ops = t.sync(&desired);
    // Backends, slots, the switch; no members without affinity.
    assert_eq!(ops.len(), 10_000 * (3 + 3 + 1));
    for op in &ops {
        match *op {
            MapOp::PutBackend(id, b) => drop(maps.backends.insert(id, b)),
            MapOp::PutSlot(k, v) => drop(maps.slots.insert(k, v)),
            MapOp::PutMember(k) => drop(maps.members.insert(k)),
            MapOp::PutService(k, v) => drop(maps.services.insert(k, v)),
            _ => unreachable!("only puts on first sync"),
        }
    }
    maps.check(&ops[ops.len() - 1]);
    assert_eq!(t.sync(&[]).len(), 10_000 * (1 + 3 + 3 + 3));
}

#[test]
fn a_maglev_service_keeps_a_table_switched_with_its_backends() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let f = Frontend {
        addr: Ipv4Addr::UNSPECIFIED,
        port: 30080,
        proto: Proto::Tcp,
    };
    let eps: Vec<Endpoint> = (1..=3)
        .map(|i| Endpoint::ready(Ipv4Addr::new(10, 244, 0, i), 80))
        .collect();
    let mut spec = svc(f, &eps);
    spec.maglev = true;
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    let v = maps.services[&f.key()];
    assert_eq!(v.maglev_size(), 1_021);
    assert_eq!(maps.slots.len(), 3 + 1_021);
    // The table in the maps is the pure table, by backend id.
    let addrs = spec.backends();
    let table = maglev::table(&addrs);
    for (slot, i) in table.iter().enumerate() {
        let id = maps.slots[&SlotKey {
            slots_id: v.maglev_slots_id,
            slot: slot as u32,
        }];
        let b = maps.backends[&id];
        assert_eq!(
            (Ipv4Addr::from(u32::from_be(b.addr)), u16::from_be(b.port)),
            addrs[*i]
        );
    }
    // A backend leaves: a new table replaces the old, which goes.
    spec.endpoints.pop();
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    assert_eq!(maps.slots.len(), 2 + 251);
    // Maglev off: the table goes too; the capacity count follows.
    spec.maglev = false;
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    assert_eq!(maps.slots.len(), 2);
    assert_eq!(t.slots_used, 2);
    maps.apply(&t.sync(&[]));
    assert!(maps.slots.is_empty());
    assert_eq!(t.slots_used, 0);
}

#[test]
fn direct_server_return_is_a_flag_switched_in_one_update() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let f = Frontend {
        addr: Ipv4Addr::UNSPECIFIED,
        port: 30080,
        proto: Proto::Tcp,
    };
    let eps = [Endpoint::ready(Ipv4Addr::new(10, 244, 0, 1), 80)];
    let mut spec = svc(f, &eps);
    spec.dsr = true;
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    let on = maps.services[&f.key()];
    assert_eq!(on.flags & SVC_F_DSR, SVC_F_DSR);
    // Unchanged: nothing to do.
    assert!(t.sync(std::slice::from_ref(&spec)).is_empty());
    // Off again: the same service id, the flag gone.
    spec.dsr = false;
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    let off = maps.services[&f.key()];
    assert_eq!((off.service_id, off.flags & SVC_F_DSR), (on.service_id, 0));
}

#[test]
fn members_exist_exactly_while_a_service_has_affinity() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let f = Frontend {
        addr: Ipv4Addr::new(10, 96, 0, 1),
        port: 80,
        proto: Proto::Tcp,
    };
    let eps = [
        Endpoint::ready(Ipv4Addr::new(10, 244, 0, 1), 80),
        Endpoint::ready(Ipv4Addr::new(10, 244, 0, 2), 80),
    ];
    let mut spec = svc(f, &eps);
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    assert!(maps.members.is_empty());
    spec.affinity_timeout = Some(10_800);
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    assert_eq!(maps.members.len(), 2);
    spec.endpoints.pop();
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    assert_eq!(maps.members.len(), 1);
    spec.affinity_timeout = None;
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    assert!(maps.members.is_empty());
    spec.affinity_timeout = Some(60);
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    assert_eq!(maps.members.len(), 1);
    maps.apply(&t.sync(&[]));
    assert!(maps.members.is_empty());
}

#[test]
fn terminating_endpoints_drain_their_flows_until_they_leave_the_slices() {
    let mut t = Translator::new();
    let mut maps = FakeMaps::default();
    let a = fe(1, 80);
    maps.apply(&t.sync(&[svc(
        a,
        &[Endpoint::ready(ip(1), 80), Endpoint::ready(ip(2), 80)],
    )]));
    // 10.244.0.1 starts terminating: no new flow goes there, but its
    // backend (and the flows on it) stays.
    let terminating = Endpoint {
        addr: ip(1),
        port: 80,
        ready: false,
        serving: true,
        terminating: true,
    };
    let spec = svc(a, &[terminating, Endpoint::ready(ip(2), 80)]);
    assert_eq!(spec.draining(), vec![(ip(1), 80)]);
    maps.apply(&t.sync(std::slice::from_ref(&spec)));
    assert_eq!(maps.backends_of(&a), vec![(ip(2), 80)]);
    assert_eq!(maps.backends.len(), 2, "the draining backend is kept");
    assert!(maps.purged.is_empty(), "{:?}", maps.purged);
    // The same state again changes nothing.
    assert!(t.sync(std::slice::from_ref(&spec)).is_empty());
    // Gone from the slice: deleted, its flows purged.
    maps.apply(&t.sync(&[svc(a, &[Endpoint::ready(ip(2), 80)])]));
    assert_eq!(maps.backends.len(), 1);
    assert_eq!(maps.purged.len(), 1);
    // A service deleted while an endpoint drains leaves nothing behind.
    maps.apply(&t.sync(&[svc(a, &[terminating, Endpoint::ready(ip(2), 80)])]));
    maps.apply(&t.sync(&[]));
    assert!(maps.backends.is_empty() && maps.services.is_empty());
}
