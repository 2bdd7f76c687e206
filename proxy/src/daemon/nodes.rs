//! The cluster's nodes' addresses, from the Node watch: the addresses a
//! direct-server-return option naming a node port may carry (the node the
//! client reached is one of them; anyone else's option is not believed).
//!
//! A Node's `InternalIP` and `ExternalIP` addresses count, IPv4 and usable
//! as a front end only. A re-list (the watch's `Init` … `InitDone`) replaces
//! the whole set when it is complete, so a node deleted while the watch was
//! down is forgotten and one listed is never missing half-way.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::Ipv4Addr,
};

use k8s_openapi::api::core::v1::Node;
use kube::runtime::watcher;

use crate::desired::usable;

/// The nodes' addresses by node name, and a re-list in progress.
#[derive(Debug, Default)]
pub(super) struct NodeAddrs {
    nodes: BTreeMap<String, BTreeSet<Ipv4Addr>>,
    relist: Option<BTreeMap<String, BTreeSet<Ipv4Addr>>>,
    /// Whether a first list has completed (before it, nothing is known).
    listed: bool,
}

impl NodeAddrs {
    /// Takes one watch event; whether the address set may have changed.
    pub(super) fn take(&mut self, ev: &watcher::Event<Node>) -> bool {
        match ev {
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(n) => {
                if let Some(r) = &mut self.relist {
                    r.insert(name(n), addrs(n));
                }
                false
            }
            watcher::Event::InitDone => {
                if let Some(r) = self.relist.take() {
                    self.nodes = r;
                }
                self.listed = true;
                true
            }
            watcher::Event::Apply(n) => {
                let (k, v) = (name(n), addrs(n));
                self.nodes.insert(k, v.clone()) != Some(v)
            }
            watcher::Event::Delete(n) => self.nodes.remove(&name(n)).is_some(),
        }
    }

    /// Every node's addresses, once the first list is in.
    pub(super) fn all(&self) -> Option<BTreeSet<Ipv4Addr>> {
        self.listed
            .then(|| self.nodes.values().flatten().copied().collect())
    }
}

fn name(n: &Node) -> String {
    n.metadata.name.clone().unwrap_or_default()
}

/// A Node's IPv4 `InternalIP` and `ExternalIP` addresses.
fn addrs(n: &Node) -> BTreeSet<Ipv4Addr> {
    n.status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
        .filter_map(|a| a.address.parse::<Ipv4Addr>().ok())
        .filter(|a| usable(*a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, addrs: &[(&str, &str)]) -> Node {
        serde_json::from_value(serde_json::json!({
            "metadata": {"name": name},
            "status": {"addresses": addrs.iter()
                .map(|(t, a)| serde_json::json!({"type": t, "address": a}))
                .collect::<Vec<_>>()},
        }))
        .unwrap()
    }

    fn set(a: &[[u8; 4]]) -> Option<BTreeSet<Ipv4Addr>> {
        Some(a.iter().map(|a| Ipv4Addr::from(*a)).collect())
    }

    #[test]
    fn internal_and_external_ipv4_addresses_count_once_listed() {
        let mut n = NodeAddrs::default();
        let a = node(
            "a",
            &[
                ("InternalIP", "10.0.0.1"),
                ("ExternalIP", "203.0.113.1"),
                ("Hostname", "10.9.9.9"),
                ("InternalIP", "fd00::1"),
                ("InternalIP", "127.0.0.1"),
                ("InternalIP", "not an address"),
            ],
        );
        assert!(!n.take(&watcher::Event::Init));
        assert!(!n.take(&watcher::Event::InitApply(a.clone())));
        assert_eq!(n.all(), None, "nothing is known before the list is in");
        assert!(n.take(&watcher::Event::InitDone));
        assert_eq!(n.all(), set(&[[10, 0, 0, 1], [203, 0, 113, 1]]));
        // The same object again changes nothing.
        assert!(!n.take(&watcher::Event::Apply(a)));
    }

    #[test]
    fn changes_deletions_and_relists() {
        let mut n = NodeAddrs::default();
        n.take(&watcher::Event::Init);
        n.take(&watcher::Event::InitApply(node(
            "a",
            &[("InternalIP", "10.0.0.1")],
        )));
        n.take(&watcher::Event::InitApply(node(
            "b",
            &[("InternalIP", "10.0.0.2")],
        )));
        n.take(&watcher::Event::InitDone);
        assert!(n.take(&watcher::Event::Apply(node(
            "a",
            &[("InternalIP", "10.0.0.3")]
        ))));
        assert_eq!(n.all(), set(&[[10, 0, 0, 2], [10, 0, 0, 3]]));
        assert!(n.take(&watcher::Event::Delete(node("b", &[]))));
        assert!(!n.take(&watcher::Event::Delete(node("b", &[]))));
        assert_eq!(n.all(), set(&[[10, 0, 0, 3]]));
        // A re-list keeps the old set until it is complete, then replaces it.
        n.take(&watcher::Event::Init);
        n.take(&watcher::Event::InitApply(node(
            "c",
            &[("InternalIP", "10.0.0.4")],
        )));
        assert_eq!(n.all(), set(&[[10, 0, 0, 3]]));
        n.take(&watcher::Event::InitDone);
        assert_eq!(n.all(), set(&[[10, 0, 0, 4]]));
    }
}
