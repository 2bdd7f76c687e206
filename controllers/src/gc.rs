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

/// The objects the watches have seen, by uid.
#[derive(Debug, Default)]
pub struct Graph {
    nodes: HashMap<String, Node>,
}

impl Graph {
    pub fn upsert(&mut self, node: Node) {
        self.nodes.insert(node.obj.uid.clone(), node);
    }

    pub fn remove(&mut self, uid: &str) {
        self.nodes.remove(uid);
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The actions that move the cluster towards what the deletions asked
    /// for. `synced` says whether every watch has listed once: before that,
    /// an owner missing from the graph proves nothing, so nothing is
    /// deleted for lack of owners and no namespace is declared empty.
    pub fn plan(&self, synced: bool) -> Vec<Action> {
        let mut dependents: HashMap<&str, Vec<&Node>> = HashMap::new();
        for n in self.nodes.values() {
            for o in &n.owners {
                dependents.entry(o.uid.as_str()).or_default().push(n);
            }
        }
        let mut actions = Vec::new();
        for n in self.nodes.values() {
            let deps = dependents
                .get(n.obj.uid.as_str())
                .map_or(&[][..], Vec::as_slice);
            if n.deleting && n.finalizers.iter().any(|f| f == ORPHAN) {
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
            } else if n.deleting && n.finalizers.iter().any(|f| f == FOREGROUND) {
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
            if synced
                && !n.owners.is_empty()
                && !n.deleting
                && n.owners.iter().all(|o| !self.nodes.contains_key(&o.uid))
            {
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
        let terminating: BTreeMap<&str, &Node> = self
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
        for n in self.nodes.values() {
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
}
