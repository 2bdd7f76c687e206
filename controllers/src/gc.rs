//! The garbage collector and the namespace finalizer as pure planning: the
//! object graph (every object's owners, finalizers and deletion state, as the
//! watches last saw it) in, the API calls to make out.
//!
//! Kubernetes semantics:
//! - an owner deleted with `propagationPolicy: Orphan` carries the `orphan`
//!   finalizer: its dependents lose their reference to it, then the
//!   finalizer goes;
//! - `Foreground` carries `foregroundDeletion`: the dependents are deleted
//!   (those that block with `blockOwnerDeletion` in the foreground too), and
//!   the finalizer goes when no blocking dependent is left;
//! - `Background` deletes the owner at once; a dependent all of whose owners
//!   are gone is deleted (after a live check: the watch may lag a creation);
//! - a Terminating namespace has its contents deleted, and its `kubernetes`
//!   finalizer removed through `namespaces/{name}/finalize` when it is empty.

use std::collections::{BTreeMap, HashMap, HashSet};

/// `metadata.finalizers` entries the collector owns.
pub const ORPHAN: &str = "orphan";
pub const FOREGROUND: &str = "foregroundDeletion";
/// `spec.finalizers` entry of a namespace, removed when it is empty.
pub const NAMESPACE_FINALIZER: &str = "kubernetes";

/// An owner reference, as far as the collector needs it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub block_owner_deletion: bool,
}

/// Where an object lives: its resource (an index into the watched list),
/// namespace and name, and its uid (the precondition of every write).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ObjRef {
    pub resource: usize,
    pub namespace: Option<String>,
    pub name: String,
    pub uid: String,
}

/// One object in the graph.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub obj: ObjRef,
    pub owners: Vec<OwnerRef>,
    pub finalizers: Vec<String>,
    pub deleting: bool,
    /// For namespaces: `spec.finalizers`.
    pub namespace_finalizers: Vec<String>,
    pub is_namespace: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Policy {
    Background,
    Foreground,
}

/// What to do next. Every action is idempotent and carries the uid it was
/// planned for, so a stale plan cannot touch a re-created object.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Action {
    /// Drop the references to `owner_uid` from `dependent`.
    RemoveOwnerRef {
        dependent: ObjRef,
        owner_uid: String,
    },
    /// Drop `finalizer` from `object`'s `metadata.finalizers`.
    RemoveFinalizer {
        object: ObjRef,
        finalizer: &'static str,
    },
    /// Delete a dependent of an owner deleted in the foreground.
    Delete { object: ObjRef, policy: Policy },
    /// Delete `object` if a live read confirms that none of its owners
    /// exists (by uid).
    DeleteIfOwnersGone {
        object: ObjRef,
        owners: Vec<OwnerRef>,
    },
    /// Delete everything in a Terminating namespace.
    EmptyNamespace { namespace: String },
    /// Remove the `kubernetes` finalizer of an empty Terminating namespace.
    FinalizeNamespace { namespace: ObjRef },
}

/// The objects the watches have seen, by uid, with the indexes that let a
/// plan look only at what can need an action (the dependents of an owner,
/// the objects whose deletion the collector finishes, the objects whose
/// owners are all gone, the namespaces being emptied), so planning costs
/// what is pending rather than the size of the cluster. The indexes are
/// kept by [`Graph::upsert`] and [`Graph::remove`], and checked against a
/// plan over every node in the tests.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
    /// Owner uid → the uids of the nodes naming it (the owner need not be
    /// in the graph).
    dependents: HashMap<String, HashSet<String>>,
    /// Nodes being deleted with the `orphan` or `foregroundDeletion`
    /// finalizer.
    finalizing: HashSet<String>,
    /// Nodes not being deleted, with owners, none of them in the graph.
    dangling: HashSet<String>,
    /// Namespaces being deleted with the `kubernetes` finalizer: name → uid.
    terminating: BTreeMap<String, String>,
    /// Namespace → (objects in it, those of them not being deleted).
    occupancy: HashMap<String, (usize, usize)>,
}

impl Graph {
    pub fn upsert(&mut self, node: Node) {
        let uid = node.obj.uid.clone();
        if let Some(old) = self.nodes.remove(&uid) {
            self.unindex(&old);
        }
        self.index(&node);
        self.nodes.insert(uid.clone(), node);
        self.recheck(&uid);
        // Its dependents have an owner again.
        for d in self.dependents_of(&uid) {
            self.recheck(&d);
        }
    }

    pub fn remove(&mut self, uid: &str) {
        if let Some(old) = self.nodes.remove(uid) {
            self.unindex(&old);
            self.dangling.remove(uid);
            // Its dependents may have lost their last owner.
            for d in self.dependents_of(uid) {
                self.recheck(&d);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    fn dependents_of(&self, uid: &str) -> Vec<String> {
        self.dependents
            .get(uid)
            .map(|d| d.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn index(&mut self, n: &Node) {
        let uid = &n.obj.uid;
        for o in &n.owners {
            self.dependents
                .entry(o.uid.clone())
                .or_default()
                .insert(uid.clone());
        }
        if n.deleting && n.finalizers.iter().any(|f| f == ORPHAN || f == FOREGROUND) {
            self.finalizing.insert(uid.clone());
        }
        if let Some(ns) = &n.obj.namespace {
            let o = self.occupancy.entry(ns.clone()).or_default();
            o.0 += 1;
            o.1 += usize::from(!n.deleting);
        }
        if is_terminating_namespace(n) {
            self.terminating.insert(n.obj.name.clone(), uid.clone());
        }
    }

    fn unindex(&mut self, n: &Node) {
        let uid = &n.obj.uid;
        for o in &n.owners {
            if let Some(d) = self.dependents.get_mut(&o.uid) {
                d.remove(uid);
                if d.is_empty() {
                    self.dependents.remove(&o.uid);
                }
            }
        }
        self.finalizing.remove(uid);
        if let Some(ns) = &n.obj.namespace
            && let Some(o) = self.occupancy.get_mut(ns)
        {
            o.0 -= 1;
            o.1 -= usize::from(!n.deleting);
            if o.0 == 0 {
                self.occupancy.remove(ns);
            }
        }
        if is_terminating_namespace(n) && self.terminating.get(&n.obj.name) == Some(uid) {
            self.terminating.remove(&n.obj.name);
        }
    }

    /// Whether `uid` is dangling: in the graph, not being deleted, with
    /// owners, none of them in the graph.
    fn recheck(&mut self, uid: &str) {
        let dangling = self.nodes.get(uid).is_some_and(|n| {
            !n.owners.is_empty()
                && !n.deleting
                && n.owners.iter().all(|o| !self.nodes.contains_key(&o.uid))
        });
        if dangling {
            self.dangling.insert(uid.to_owned());
        } else {
            self.dangling.remove(uid);
        }
    }

    /// The actions that move the cluster towards what the deletions asked
    /// for. `synced` says whether every watch has listed once: before that,
    /// an owner missing from the graph proves nothing, so nothing is
    /// deleted for lack of owners and no namespace is declared empty.
    pub fn plan(&self, synced: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        for n in self.finalizing.iter().filter_map(|u| self.nodes.get(u)) {
            let deps: Vec<&Node> = self
                .dependents
                .get(&n.obj.uid)
                .into_iter()
                .flatten()
                .filter_map(|d| self.nodes.get(d))
                .collect();
            plan_finalizing(n, &deps, &mut actions);
        }
        if synced {
            for n in self.dangling.iter().filter_map(|u| self.nodes.get(u)) {
                actions.push(Action::DeleteIfOwnersGone {
                    object: n.obj.clone(),
                    owners: n.owners.clone(),
                });
            }
        }
        actions.extend(self.plan_namespaces(synced));
        actions.sort();
        actions.dedup();
        actions
    }

    fn plan_namespaces(&self, synced: bool) -> Vec<Action> {
        let mut actions = Vec::new();
        for (name, uid) in &self.terminating {
            let Some(ns) = self.nodes.get(uid) else {
                continue;
            };
            let (occupied, undeleted) = self.occupancy.get(name).copied().unwrap_or_default();
            if undeleted > 0 || !synced {
                actions.push(Action::EmptyNamespace {
                    namespace: name.clone(),
                });
            } else if occupied == 0 {
                actions.push(Action::FinalizeNamespace {
                    namespace: ns.obj.clone(),
                });
            }
        }
        actions
    }
}

fn is_terminating_namespace(n: &Node) -> bool {
    n.is_namespace
        && n.deleting
        && n.namespace_finalizers
            .iter()
            .any(|f| f == NAMESPACE_FINALIZER)
}

/// What a node being deleted with the orphan or foreground finalizer needs,
/// given its dependents.
fn plan_finalizing(n: &Node, deps: &[&Node], actions: &mut Vec<Action>) {
    if n.finalizers.iter().any(|f| f == ORPHAN) {
        if deps.is_empty() {
            actions.push(Action::RemoveFinalizer {
                object: n.obj.clone(),
                finalizer: ORPHAN,
            });
        }
        for d in deps {
            actions.push(Action::RemoveOwnerRef {
                dependent: d.obj.clone(),
                owner_uid: n.obj.uid.clone(),
            });
        }
    } else if n.finalizers.iter().any(|f| f == FOREGROUND) {
        let mut blocking = false;
        for d in deps {
            let blocks = d
                .owners
                .iter()
                .any(|o| o.uid == n.obj.uid && o.block_owner_deletion);
            blocking |= blocks;
            if !d.deleting {
                let policy = if blocks {
                    Policy::Foreground
                } else {
                    Policy::Background
                };
                actions.push(Action::Delete {
                    object: d.obj.clone(),
                    policy,
                });
            }
        }
        if !blocking {
            actions.push(Action::RemoveFinalizer {
                object: n.obj.clone(),
                finalizer: FOREGROUND,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(res: usize, ns: Option<&str>, name: &str, uid: &str) -> Node {
        Node {
            obj: ObjRef {
                resource: res,
                namespace: ns.map(str::to_owned),
                name: name.into(),
                uid: uid.into(),
            },
            owners: Vec::new(),
            finalizers: Vec::new(),
            deleting: false,
            namespace_finalizers: Vec::new(),
            is_namespace: false,
        }
    }

    fn owned_by(mut n: Node, owner: &Node, block: bool) -> Node {
        n.owners.push(OwnerRef {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            name: owner.obj.name.clone(),
            uid: owner.obj.uid.clone(),
            block_owner_deletion: block,
        });
        n
    }

    fn deleting(mut n: Node, finalizer: &str) -> Node {
        n.deleting = true;
        n.finalizers.push(finalizer.into());
        n
    }

    #[test]
    fn orphan_drops_references_then_the_finalizer() {
        let rs = deleting(node(1, Some("a"), "rs", "u-rs"), ORPHAN);
        let pod = owned_by(node(0, Some("a"), "p", "u-p"), &rs, true);
        let mut g = Graph::default();
        g.upsert(rs.clone());
        g.upsert(pod.clone());
        assert_eq!(
            g.plan(true),
            vec![Action::RemoveOwnerRef {
                dependent: pod.obj.clone(),
                owner_uid: "u-rs".into()
            }]
        );
        g.upsert(node(0, Some("a"), "p", "u-p"));
        assert_eq!(
            g.plan(true),
            vec![Action::RemoveFinalizer {
                object: rs.obj,
                finalizer: ORPHAN
            }]
        );
    }

    #[test]
    fn foreground_deletes_dependents_and_waits_for_the_blocking_ones() {
        let rs = deleting(node(1, Some("a"), "rs", "u-rs"), FOREGROUND);
        let blocking = owned_by(node(0, Some("a"), "p1", "u-p1"), &rs, true);
        let loose = owned_by(node(0, Some("a"), "p2", "u-p2"), &rs, false);
        let mut g = Graph::default();
        for n in [&rs, &blocking, &loose] {
            g.upsert(n.clone());
        }
        assert_eq!(
            g.plan(true),
            vec![
                Action::Delete {
                    object: blocking.obj.clone(),
                    policy: Policy::Foreground
                },
                Action::Delete {
                    object: loose.obj.clone(),
                    policy: Policy::Background
                },
            ]
        );
        // Both are being deleted; the blocking one still exists: wait.
        let mut b = blocking.clone();
        b.deleting = true;
        g.upsert(b);
        g.remove("u-p2");
        assert_eq!(g.plan(true), vec![]);
        g.remove("u-p1");
        assert_eq!(
            g.plan(true),
            vec![Action::RemoveFinalizer {
                object: rs.obj,
                finalizer: FOREGROUND
            }]
        );
    }

    #[test]
    fn dependents_of_vanished_owners_are_checked_then_deleted_only_once_synced() {
        let rs = node(1, Some("a"), "rs", "u-rs");
        let pod = owned_by(node(0, Some("a"), "p", "u-p"), &rs, true);
        let mut g = Graph::default();
        g.upsert(rs.clone());
        g.upsert(pod.clone());
        assert_eq!(g.plan(true), vec![]);
        g.remove("u-rs");
        assert_eq!(g.plan(false), vec![]);
        assert_eq!(
            g.plan(true),
            vec![Action::DeleteIfOwnersGone {
                object: pod.obj,
                owners: pod.owners.clone()
            }]
        );
        // One owner of two still there: kept.
        let other = node(2, Some("a"), "other", "u-o");
        let two = owned_by(
            owned_by(node(0, Some("a"), "q", "u-q"), &rs, false),
            &other,
            false,
        );
        let mut g = Graph::default();
        g.upsert(other);
        g.upsert(two);
        assert_eq!(g.plan(true), vec![]);
    }

    #[test]
    fn a_terminating_namespace_is_emptied_then_finalized() {
        let mut ns = node(3, None, "team", "u-ns");
        ns.is_namespace = true;
        ns.deleting = true;
        ns.namespace_finalizers = vec![NAMESPACE_FINALIZER.into()];
        let cm = node(4, Some("team"), "cfg", "u-cm");
        let mut g = Graph::default();
        g.upsert(ns.clone());
        g.upsert(cm.clone());
        g.upsert(node(4, Some("other"), "cfg", "u-cm2"));
        assert_eq!(
            g.plan(true),
            vec![Action::EmptyNamespace {
                namespace: "team".into()
            }]
        );
        // A pod still terminating gracefully: wait, do not re-delete.
        let mut pod = node(0, Some("team"), "p", "u-p");
        pod.deleting = true;
        g.remove("u-cm");
        g.upsert(pod);
        assert_eq!(g.plan(true), vec![]);
        g.remove("u-p");
        // Before every watch has listed, emptiness is not trusted.
        assert_eq!(
            g.plan(false),
            vec![Action::EmptyNamespace {
                namespace: "team".into()
            }]
        );
        assert_eq!(
            g.plan(true),
            vec![Action::FinalizeNamespace { namespace: ns.obj }]
        );
    }

    // The plan as it was before the indexes: every node looked at (what a
    // node being finalized needs, given its dependents, is shared). The
    // indexed plan must always agree with it.
    fn plan_by_scan(g: &Graph, synced: bool) -> Vec<Action> {
        let mut dependents: HashMap<&str, Vec<&Node>> = HashMap::new();
        for n in g.nodes.values() {
            for o in &n.owners {
                dependents.entry(o.uid.as_str()).or_default().push(n);
            }
        }
        let mut actions = Vec::new();
        for n in g.nodes.values() {
            let deps = dependents
                .get(n.obj.uid.as_str())
                .map_or(&[][..], Vec::as_slice);
            if n.deleting {
                plan_finalizing(n, deps, &mut actions);
            }
            if synced
                && !n.owners.is_empty()
                && !n.deleting
                && n.owners.iter().all(|o| !g.nodes.contains_key(&o.uid))
            {
                actions.push(Action::DeleteIfOwnersGone {
                    object: n.obj.clone(),
                    owners: n.owners.clone(),
                });
            }
        }
        actions.extend(namespaces_by_scan(g, synced));
        actions.sort();
        actions.dedup();
        actions
    }

    fn namespaces_by_scan(g: &Graph, synced: bool) -> Vec<Action> {
        let terminating: BTreeMap<&str, &Node> = g
            .nodes
            .values()
            .filter(|n| {
                n.is_namespace
                    && n.deleting
                    && n.namespace_finalizers
                        .iter()
                        .any(|f| f == NAMESPACE_FINALIZER)
            })
            .map(|n| (n.obj.name.as_str(), n))
            .collect();
        if terminating.is_empty() {
            return Vec::new();
        }
        let mut occupied: HashSet<&str> = HashSet::new();
        let mut undeleted: HashSet<&str> = HashSet::new();
        for n in g.nodes.values() {
            if let Some(ns) = n.obj.namespace.as_deref() {
                occupied.insert(ns);
                if !n.deleting {
                    undeleted.insert(ns);
                }
            }
        }
        let mut actions = Vec::new();
        for (name, ns) in terminating {
            if undeleted.contains(name) || !synced {
                actions.push(Action::EmptyNamespace {
                    namespace: name.to_owned(),
                });
            } else if !occupied.contains(name) {
                actions.push(Action::FinalizeNamespace {
                    namespace: ns.obj.clone(),
                });
            }
        }
        actions
    }

    /// A small xorshift generator: the same sequence in every run.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: u64) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0 % n
        }
    }

    #[test]
    fn the_indexed_plan_agrees_with_a_plan_over_every_node() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut g = Graph::default();
        let uids: Vec<String> = (0..24).map(|i| format!("u{i}")).collect();
        for step in 0..4000 {
            let uid = &uids[rng.below(24) as usize];
            if rng.below(5) == 0 {
                if rng.below(6) == 0 {
                    g.remove(["ns-a", "ns-b"][rng.below(2) as usize]);
                } else {
                    g.remove(uid);
                }
            } else {
                let namespace = ["a", "b"][rng.below(2) as usize];
                // A namespace's name is unique: one uid per name.
                let mut n = if rng.below(6) == 0 {
                    let mut n = node(0, None, namespace, &format!("ns-{namespace}"));
                    n.is_namespace = true;
                    if rng.below(2) == 0 {
                        n.namespace_finalizers.push(NAMESPACE_FINALIZER.into());
                    }
                    n
                } else {
                    node(1, Some(namespace), uid, uid)
                };
                for _ in 0..rng.below(3) {
                    let owner = node(1, Some(namespace), "o", &uids[rng.below(24) as usize]);
                    n = owned_by(n, &owner, rng.below(2) == 0);
                }
                if rng.below(3) == 0 {
                    n.deleting = true;
                    match rng.below(3) {
                        0 => n.finalizers.push(ORPHAN.into()),
                        1 => n.finalizers.push(FOREGROUND.into()),
                        _ => {}
                    }
                }
                g.upsert(n);
            }
            for synced in [false, true] {
                assert_eq!(
                    g.plan(synced),
                    plan_by_scan(&g, synced),
                    "step {step}, synced {synced}"
                );
            }
        }
        assert!(!g.is_empty());
    }
}
