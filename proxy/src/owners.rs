//! Which Service owns each front end (address, port, protocol).
//!
//! Two Services can ask for the same front end: an `externalIPs` entry equal
//! to another Service's ClusterIP (the cluster DNS's `10.96.0.10:53`, say),
//! or two Services with the same externalIP and port. Without an owner, the
//! last writer would take the other's traffic, and deleting it would remove
//! the victim's front end. So each front end has one owner, chosen the same
//! way on every node whatever order the events came in:
//!
//! 1. a ClusterIP beats a NodePort, which beats an externalIP or
//!    LoadBalancer IP (the apiserver allocates ClusterIPs and NodePorts
//!    uniquely; externalIPs are whatever a user wrote);
//! 2. among equals, the older Service (`creationTimestamp`) keeps it;
//! 3. then the namespace and name, so the choice is total.
//!
//! The others' claims are refused (the proxy reports them) and wait: when
//! the owner lets go, the next claimant takes the front end over. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use super::Frontend;

/// A Service: (namespace, name).
pub type Key = (String, String);

/// How strong a claim is; the lowest wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Rank {
    ClusterIp,
    NodePort,
    External,
}

/// One Service's claim on a front end, ordered as the owner is chosen.
type Claim = (Rank, String, Key);

/// The claims on every front end.
#[derive(Debug, Default)]
pub struct Owners {
    claims: BTreeMap<Frontend, BTreeSet<Claim>>,
    by_key: HashMap<Key, Vec<(Frontend, Rank)>>,
    created: HashMap<Key, String>,
}

impl Owners {
    /// The owner of `f`, if anyone claims it.
    pub fn owner(&self, f: &Frontend) -> Option<&Key> {
        self.claims.get(f)?.first().map(|(_, _, k)| k)
    }

    /// Replaces the claims of Service `key` (created at `created`, an RFC
    /// 3339 time, which sorts as text) with `claims` (empty: the Service is
    /// gone). Returns the front ends whose owner changed, each with its new
    /// owner (`None`: nobody wants it any more).
    pub fn set(
        &mut self,
        key: &Key,
        created: &str,
        claims: &[(Frontend, Rank)],
    ) -> Vec<(Frontend, Option<Key>)> {
        let old = self.by_key.remove(key).unwrap_or_default();
        let old_created = self.created.remove(key).unwrap_or_default();
        let touched: BTreeSet<Frontend> = old.iter().chain(claims).map(|(f, _)| *f).collect();
        let before: Vec<Option<Key>> = touched.iter().map(|f| self.owner(f).cloned()).collect();
        for (f, rank) in &old {
            if let Some(set) = self.claims.get_mut(f) {
                set.remove(&(*rank, old_created.clone(), key.clone()));
                if set.is_empty() {
                    self.claims.remove(f);
                }
            }
        }
        for (f, rank) in claims {
            self.claims
                .entry(*f)
                .or_default()
                .insert((*rank, created.to_owned(), key.clone()));
        }
        if !claims.is_empty() {
            self.by_key.insert(key.clone(), claims.to_vec());
            self.created.insert(key.clone(), created.to_owned());
        }
        touched
            .into_iter()
            .zip(before)
            .filter_map(|(f, was)| {
                let now = self.owner(&f).cloned();
                (now != was).then_some((f, now))
            })
            .collect()
    }

    /// The front ends `key` claims but another Service owns, with that
    /// owner.
    pub fn conflicts(&self, key: &Key) -> Vec<(Frontend, Key)> {
        self.by_key
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|(f, _)| {
                let owner = self.owner(f)?;
                (owner != key).then(|| (*f, owner.clone()))
            })
            .collect()
    }

    /// The Services claiming `f`, the owner first.
    pub fn claimants(&self, f: &Frontend) -> impl Iterator<Item = &Key> {
        self.claims.get(f).into_iter().flatten().map(|(_, _, k)| k)
    }

    /// The front ends someone owns.
    pub fn owned(&self) -> impl Iterator<Item = &Frontend> {
        self.claims.keys()
    }

    /// The Services with claims.
    pub fn keys(&self) -> impl Iterator<Item = &Key> {
        self.by_key.keys()
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::Proto;

    fn fe(last: u8, port: u16) -> Frontend {
        Frontend {
            addr: Ipv4Addr::new(10, 96, 0, last),
            port,
            proto: Proto::Udp,
        }
    }

    fn key(n: &str) -> Key {
        ("default".into(), n.into())
    }

    #[test]
    fn a_cluster_ip_is_never_displaced_by_an_external_ip() {
        let mut o = Owners::default();
        let dns = fe(10, 53);
        // The attacker comes first, as an externalIP, and is older.
        assert_eq!(
            o.set(
                &key("evil"),
                "2020-01-01T00:00:00Z",
                &[(dns, Rank::External)]
            ),
            [(dns, Some(key("evil")))]
        );
        // The real owner takes it over.
        assert_eq!(
            o.set(
                &key("kube-dns"),
                "2026-01-01T00:00:00Z",
                &[(dns, Rank::ClusterIp)]
            ),
            [(dns, Some(key("kube-dns")))]
        );
        assert_eq!(o.conflicts(&key("evil")), [(dns, key("kube-dns"))]);
        // Deleting the attacker changes nothing of the owner's.
        assert!(o.set(&key("evil"), "", &[]).is_empty());
        assert_eq!(o.owner(&dns), Some(&key("kube-dns")));
        // The owner gone, nobody has it.
        assert_eq!(o.set(&key("kube-dns"), "", &[]), [(dns, None)]);
    }

    #[test]
    fn among_equals_the_older_keeps_it_and_the_next_takes_over() {
        let mut o = Owners::default();
        let ext = fe(200, 80);
        o.set(&key("b"), "2026-02-01T00:00:00Z", &[(ext, Rank::External)]);
        assert!(
            o.set(&key("a"), "2026-03-01T00:00:00Z", &[(ext, Rank::External)])
                .is_empty()
        );
        assert_eq!(o.owner(&ext), Some(&key("b")));
        // Order of arrival does not matter: the same owner either way.
        let mut p = Owners::default();
        p.set(&key("a"), "2026-03-01T00:00:00Z", &[(ext, Rank::External)]);
        p.set(&key("b"), "2026-02-01T00:00:00Z", &[(ext, Rank::External)]);
        assert_eq!(p.owner(&ext), Some(&key("b")));
        // b drops it: a takes over.
        assert_eq!(
            o.set(&key("b"), "2026-02-01T00:00:00Z", &[]),
            [(ext, Some(key("a")))]
        );
        // A service changing its own claims reports only real changes.
        let other = fe(201, 80);
        assert_eq!(
            o.set(
                &key("a"),
                "2026-03-01T00:00:00Z",
                &[(other, Rank::External)]
            ),
            [(ext, None), (other, Some(key("a")))]
        );
        assert_eq!(o.keys().count(), 1);
    }
}
