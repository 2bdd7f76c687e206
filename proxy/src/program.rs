//! From the cache to the maps, one Service at a time.
//!
//! Each dirty Service becomes one [`Batch`]: the map operations that
//! install the front ends it owns (see [`super::owners`]), hand over those
//! it let go to their next claimant or remove them, with the claims the
//! maps could not take ([`Refused`]) and those another Service owns
//! (conflicts). The daemon applies batch by batch: a batch that fails
//! (a map full in the kernel, memory) is reported, its Service is retried
//! alone with back-off, and every other Service is programmed as usual.
//! Nothing here does I/O.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::RangeInclusive,
    time::{Duration, Instant},
};

use rudder_ebpf_common::service::ServiceKey;

use super::{
    Frontend, MapOp, Refused, Translator,
    cache::{Cache, Key},
    desired,
    owners::{Owners, Rank},
};

/// First retry of a failed Service, doubling up to [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(300);

/// One Service's share of a sync.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    pub key: Key,
    pub ops: Vec<MapOp>,
    /// Front ends (of this or another Service) the maps could not take.
    pub refused: Vec<(Key, Refused)>,
    /// For each Service whose conflicts this batch may have changed (this
    /// one, and those whose front end it took over or let go), every front
    /// end it asks for that another Service owns, with that owner.
    pub conflicts: BTreeMap<Key, Vec<(Frontend, Key)>>,
}

/// Front ends, owners and the translator, with the Services to retry.
#[derive(Debug, Default)]
pub(crate) struct Programmer {
    pub translator: Translator,
    owners: Owners,
    /// Services whose batch failed: when to try again, and the wait after.
    retry: HashMap<Key, (Instant, Duration)>,
}

impl Programmer {
    pub(crate) fn new(translator: Translator) -> Self {
        Self {
            translator,
            ..Self::default()
        }
    }

    /// The batch of one dirty Service.
    pub(crate) fn plan(
        &mut self,
        cache: &Cache,
        key: &Key,
        node: &str,
        node_ports: &RangeInclusive<u16>,
    ) -> Batch {
        let specs = cache.specs(key, node, node_ports);
        let svc = cache.service(key);
        let claims: Vec<(Frontend, Rank)> = specs
            .iter()
            .map(|s| {
                let rank = svc.map_or(Rank::External, |svc| desired::rank(svc, &s.frontend));
                (s.frontend, rank)
            })
            .collect();
        let created = svc
            .and_then(|s| s.metadata.creation_timestamp.as_ref())
            .map(|t| t.0.to_string())
            .unwrap_or_default();
        let touched: BTreeSet<Frontend> = claims.iter().map(|(f, _)| *f).collect();
        let mut affected: BTreeSet<Key> = touched
            .iter()
            .flat_map(|f| self.owners.claimants(f))
            .cloned()
            .collect();
        let changed = self.owners.set(key, &created, &claims);
        affected.insert(key.clone());
        affected.extend(
            changed
                .iter()
                .flat_map(|(f, _)| self.owners.claimants(f))
                .cloned(),
        );
        let mut b = Batch {
            key: key.clone(),
            ..Batch::default()
        };
        for s in &specs {
            if self.owners.owner(&s.frontend) == Some(key) {
                match self.translator.update(s) {
                    Ok(ops) => b.ops.extend(ops),
                    Err(r) => b.refused.push((key.clone(), r)),
                }
            }
        }
        for (f, owner) in changed {
            match owner {
                Some(o) if o == *key => {}
                Some(o) => {
                    let spec = cache
                        .specs(&o, node, node_ports)
                        .into_iter()
                        .find(|s| s.frontend == f);
                    match spec.map(|s| self.translator.update(&s)) {
                        Some(Ok(ops)) => b.ops.extend(ops),
                        Some(Err(r)) => b.refused.push((o, r)),
                        None => b.ops.extend(self.translator.remove(&f)),
                    }
                }
                None => b.ops.extend(self.translator.remove(&f)),
            }
        }
        b.conflicts = affected
            .into_iter()
            .map(|k| {
                let c = self.owners.conflicts(&k);
                (k, c)
            })
            .collect();
        b
    }

    /// The batches of a full sync: every Service, then the removal of what
    /// the maps hold that no Service owns (left by a proxy that stopped
    /// before it saw a deletion).
    pub(crate) fn plan_all(
        &mut self,
        cache: &Cache,
        node: &str,
        node_ports: &RangeInclusive<u16>,
    ) -> Vec<Batch> {
        let mut keys: Vec<Key> = cache.service_keys().collect();
        keys.extend(self.owners.keys().cloned());
        keys.sort();
        keys.dedup();
        let mut out: Vec<Batch> = keys
            .iter()
            .map(|k| self.plan(cache, k, node, node_ports))
            .collect();
        let owned: BTreeSet<ServiceKey> = self.owners.owned().map(Frontend::key).collect();
        out.push(Batch {
            ops: self.translator.prune(&owned),
            ..Batch::default()
        });
        out
    }

    /// A batch reached the maps: its Service is no longer retried.
    pub(crate) fn applied(&mut self, key: &Key) {
        self.retry.remove(key);
    }

    /// A batch failed part-way: what the translator believes is no longer
    /// what the maps hold, so it adopts the maps again (`adopted`, read
    /// back from them), and the Service is tried again after a back-off.
    pub(crate) fn failed(&mut self, key: &Key, adopted: Translator, now: Instant) {
        self.translator = adopted;
        let wait = self
            .retry
            .get(key)
            .map_or(RETRY_FIRST, |(_, w)| (*w * 2).min(RETRY_MAX));
        self.retry.insert(key.clone(), (now + wait, wait));
    }

    /// Services whose retry time has come (they stay listed until a batch
    /// of theirs is applied).
    pub(crate) fn due(&self, now: Instant) -> Vec<Key> {
        self.retry
            .iter()
            .filter(|(_, (at, _))| *at <= now)
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// How many Services are waiting for a retry.
    pub(crate) fn failing(&self) -> usize {
        self.retry.len()
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashSet, net::Ipv4Addr};

    use k8s_openapi::api::core::v1::Service;
    use kube::runtime::watcher;
    use serde_json::json;

    use super::*;
    use crate::{
        Limits,
        cache::tests::{service, slice},
        desired::DEFAULT_NODE_PORTS,
    };

    fn key(n: &str) -> Key {
        ("default".into(), n.into())
    }

    fn apply_all(p: &mut Programmer, cache: &Cache, dirty: &HashSet<Key>) -> Vec<Batch> {
        let mut keys: Vec<&Key> = dirty.iter().collect();
        keys.sort();
        keys.into_iter()
            .map(|k| p.plan(cache, k, "n1", &DEFAULT_NODE_PORTS))
            .collect()
    }

    fn backends_of(p: &Programmer, ip: &str, port: u16) -> Option<usize> {
        let f = Frontend {
            addr: ip.parse().unwrap(),
            port,
            proto: crate::Proto::Tcp,
        };
        p.translator.installed_backends(&f)
    }

    #[test]
    fn events_mark_their_service_dirty_and_batches_follow() {
        let mut cache = Cache::default();
        let mut p = Programmer::default();
        let mut dirty = HashSet::new();
        cache.on_service(watcher::Event::Apply(service("a", "10.96.0.1")), &mut dirty);
        cache.on_slice(
            watcher::Event::Apply(slice("a-1", "a", &["10.244.0.5"])),
            &mut dirty,
        );
        assert_eq!(dirty, HashSet::from([key("a")]));
        let b = apply_all(&mut p, &cache, &dirty);
        assert!(b[0].ops.iter().any(|o| matches!(o, MapOp::PutService(..))));
        assert_eq!(p.translator.sizes(), (1, 1));

        // The slice moves to another service: both are dirty.
        dirty.clear();
        cache.on_service(watcher::Event::Apply(service("b", "10.96.0.2")), &mut dirty);
        cache.on_slice(
            watcher::Event::Apply(slice("a-1", "b", &["10.244.0.5"])),
            &mut dirty,
        );
        assert_eq!(dirty.len(), 2);
        apply_all(&mut p, &cache, &dirty);
        assert_eq!(p.translator.sizes(), (2, 1));
        assert_eq!(backends_of(&p, "10.96.0.1", 80), Some(0));

        // The service is deleted: its front end goes.
        dirty.clear();
        cache.on_service(
            watcher::Event::Delete(service("b", "10.96.0.2")),
            &mut dirty,
        );
        let b = apply_all(&mut p, &cache, &dirty);
        assert!(
            b[0].ops
                .iter()
                .any(|o| matches!(o, MapOp::DeleteService(..)))
        );
        assert_eq!(p.translator.sizes().0, 1);
    }

    fn svc(v: serde_json::Value) -> Service {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn an_external_ip_cannot_take_or_remove_the_dns_front_end() {
        let mut cache = Cache::default();
        let mut p = Programmer::default();
        let mut dirty = HashSet::new();
        let dns = svc(json!({
            "metadata": {"name": "kube-dns", "namespace": "default",
                         "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 80}]}
        }));
        let evil = svc(json!({
            "metadata": {"name": "evil", "namespace": "default",
                         "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"clusterIP": "10.96.0.66", "externalIPs": ["10.96.0.10"], "ports": [{"port": 80}]}
        }));
        cache.on_service(watcher::Event::Apply(dns.clone()), &mut dirty);
        cache.on_slice(
            watcher::Event::Apply(slice("dns-1", "kube-dns", &["10.244.0.10"])),
            &mut dirty,
        );
        cache.on_service(watcher::Event::Apply(evil.clone()), &mut dirty);
        cache.on_slice(
            watcher::Event::Apply(slice("evil-1", "evil", &["10.244.6.6", "10.244.6.7"])),
            &mut dirty,
        );
        let batches = apply_all(&mut p, &cache, &dirty);
        // Whichever came first, the conflict is the attacker's.
        let last = batches.last().unwrap();
        assert_eq!(
            last.conflicts[&key("evil")],
            [(
                Frontend {
                    addr: Ipv4Addr::new(10, 96, 0, 10),
                    port: 80,
                    proto: crate::Proto::Tcp
                },
                key("kube-dns")
            )]
        );
        assert_eq!(backends_of(&p, "10.96.0.10", 80), Some(1));
        assert_eq!(backends_of(&p, "10.96.0.66", 80), Some(2));
        // Deleting the attacker leaves the DNS front end alone.
        dirty.clear();
        cache.on_service(watcher::Event::Delete(evil), &mut dirty);
        let b = apply_all(&mut p, &cache, &dirty);
        assert_eq!(backends_of(&p, "10.96.0.10", 80), Some(1));
        assert_eq!(backends_of(&p, "10.96.0.66", 80), None);
        assert!(b[0].conflicts.values().all(Vec::is_empty));
    }

    #[test]
    fn a_service_too_big_for_the_maps_is_refused_alone_and_failures_back_off() {
        let mut cache = Cache::default();
        let mut p = Programmer::new(Translator::with_limits(Limits {
            services: 10,
            slots: 10,
            backends: 10,
            backends_per_service: 4,
        }));
        let mut dirty = HashSet::new();
        cache.on_service(
            watcher::Event::Apply(service("small", "10.96.0.1")),
            &mut dirty,
        );
        cache.on_slice(
            watcher::Event::Apply(slice("small-1", "small", &["10.244.0.1"])),
            &mut dirty,
        );
        cache.on_service(
            watcher::Event::Apply(service("huge", "10.96.0.2")),
            &mut dirty,
        );
        let ips: Vec<String> = (1..=5).map(|i| format!("10.244.1.{i}")).collect();
        let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
        cache.on_slice(
            watcher::Event::Apply(slice("huge-1", "huge", &ips)),
            &mut dirty,
        );
        let batches = apply_all(&mut p, &cache, &dirty);
        let huge = batches.iter().find(|b| b.key == key("huge")).unwrap();
        assert!(huge.ops.is_empty());
        assert_eq!(huge.refused.len(), 1);
        assert!(
            huge.refused[0]
                .1
                .to_string()
                .contains("5 backends, more than the 4")
        );
        assert_eq!(backends_of(&p, "10.96.0.1", 80), Some(1));

        // A failed batch is retried alone, later and later.
        let t0 = Instant::now();
        p.failed(&key("small"), Translator::new(), t0);
        assert!(p.due(t0).is_empty());
        assert_eq!(p.due(t0 + RETRY_FIRST), [key("small")]);
        p.failed(&key("small"), Translator::new(), t0);
        assert!(p.due(t0 + RETRY_FIRST).is_empty());
        p.applied(&key("small"));
        assert_eq!(p.failing(), 0);
    }

    #[test]
    fn a_full_sync_prunes_what_no_service_owns() {
        let cache = Cache::default();
        let mut p = Programmer::default();
        let stale = crate::ServiceSpec {
            frontend: Frontend {
                addr: Ipv4Addr::new(10, 96, 9, 9),
                port: 80,
                proto: crate::Proto::Tcp,
            },
            endpoints: vec![],
            affinity_timeout: None,
            keep_source: false,
            maglev: false,
            dsr: false,
        };
        p.translator.update(&stale).unwrap();
        let batches = p.plan_all(&cache, "n1", &DEFAULT_NODE_PORTS);
        assert!(
            batches
                .last()
                .unwrap()
                .ops
                .iter()
                .any(|o| matches!(o, MapOp::DeleteService(..)))
        );
        assert_eq!(p.translator.sizes().0, 0);
    }
}
