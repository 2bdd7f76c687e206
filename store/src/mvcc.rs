//! The store's state machine: a multi-version key-value map with etcd's
//! revision model, as pure logic. Raft applies [`Command`]s to it in log
//! order on every member, so it must be deterministic: no clock, no
//! randomness, no I/O. Reads at an older revision and watches from a revision
//! are served from a bounded window of history; anything older is compacted
//! and answered with [`MvccError::Compacted`], which the apiserver turns into
//! `410 Gone`.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

use super::{Event, EventKind, KeyValue, Revision};

/// How many events the history window keeps at most, whatever the
/// time-based compaction says (it bounds memory on a busy cluster).
pub const DEFAULT_HISTORY_LIMIT: usize = 20_000;
/// How many bytes of values the history window may hold (values still
/// current are shared with the key space and cost nothing more).
pub const HISTORY_BYTES: usize = 64 << 20;

/// A write, as replicated through the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// Create `key`; fails if it exists.
    Create {
        key: String,
        #[serde(with = "super::value_serde")]
        value: bytes::Bytes,
    },
    /// Replace `key`'s value; with `expected`, only if its mod revision is
    /// that one (optimistic concurrency).
    Update {
        key: String,
        #[serde(with = "super::value_serde")]
        value: bytes::Bytes,
        expected: Option<Revision>,
    },
    /// Delete `key`; with `expected`, only if its mod revision is that one.
    Delete {
        key: String,
        expected: Option<Revision>,
    },
    /// Drop history at and below `revision`.
    Compact { revision: Revision },
}

/// What a command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    /// A put or a delete at a new revision. For a delete, `kv` is the value
    /// that was deleted, with `mod_revision` set to the deletion's revision.
    Written {
        kv: KeyValue,
        prev: Option<KeyValue>,
    },
    /// Create of an existing key; carries the current value.
    AlreadyExists(KeyValue),
    /// Update or delete of a missing key.
    NotFound,
    /// The expected mod revision did not match; carries the current value.
    Conflict(KeyValue),
    /// Compaction done (or nothing to do); the compacted revision now.
    Compacted(Revision),
    /// A membership change or a blank entry: nothing for the key space.
    Nothing,
}

/// Why a read could not be served.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MvccError {
    #[error("required revision {requested} has been compacted (oldest available is {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("required revision {requested} is a future revision (current is {current})")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
}

/// A page of a range read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Range {
    pub kvs: Vec<KeyValue>,
    /// More keys follow the last one returned.
    pub more: bool,
    /// The revision the read was served at.
    pub revision: Revision,
}

/// The key space at the current revision plus a window of history.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Mvcc {
    kv: BTreeMap<String, KeyValue>,
    /// Events in revision order, each with a revision above `compacted`.
    history: VecDeque<Event>,
    revision: Revision,
    compacted: Revision,
    history_limit: usize,
    /// The value bytes the history holds (recounted after a snapshot load).
    #[serde(skip)]
    history_bytes: usize,
    /// The bytes of the current keys and values (recounted likewise).
    #[serde(skip)]
    kv_bytes: usize,
}

impl Default for Mvcc {
    fn default() -> Self {
        Self::new(DEFAULT_HISTORY_LIMIT)
    }
}

impl Mvcc {
    pub fn new(history_limit: usize) -> Self {
        Self {
            kv: BTreeMap::new(),
            history: VecDeque::new(),
            // Revision 1 is the empty store, as in etcd: the first write is 2.
            revision: 1,
            compacted: 0,
            history_limit: history_limit.max(1),
            history_bytes: 0,
            kv_bytes: 0,
        }
    }

    /// The bytes of the current keys and values: what the backend quota
    /// counts.
    pub fn bytes(&self) -> usize {
        self.kv_bytes
    }

    fn kv_size(kv: &KeyValue) -> usize {
        kv.key.len() + kv.value.len()
    }

    /// The bytes an event's values take.
    fn event_bytes(e: &Event) -> usize {
        e.kv.value.len() + e.prev.as_ref().map_or(0, |p| p.value.len())
    }

    /// Counts the history's bytes again (after a snapshot was loaded).
    pub fn recount(&mut self) {
        self.history_bytes = self.history.iter().map(Self::event_bytes).sum();
        self.kv_bytes = self.kv.values().map(Self::kv_size).sum();
    }

    /// The revision of the last write.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// History at and below this revision is gone.
    pub fn compacted(&self) -> Revision {
        self.compacted
    }

    pub fn len(&self) -> usize {
        self.kv.len()
    }

    pub fn is_empty(&self) -> bool {
        self.kv.is_empty()
    }

    /// Applies one command; returns what it did and, for a write, the event
    /// that watchers see.
    pub fn apply(&mut self, cmd: Command) -> (Outcome, Option<Event>) {
        match cmd {
            Command::Create { key, value } => {
                if let Some(cur) = self.kv.get(&key) {
                    return (Outcome::AlreadyExists(cur.clone()), None);
                }
                let rev = self.next_revision();
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: rev,
                    mod_revision: rev,
                    version: 1,
                };
                self.kv.insert(key, kv.clone());
                self.record(EventKind::Put, kv, None)
            }
            Command::Update {
                key,
                value,
                expected,
            } => {
                let Some(cur) = self.kv.get(&key) else {
                    return (Outcome::NotFound, None);
                };
                if expected.is_some_and(|e| e != cur.mod_revision) {
                    return (Outcome::Conflict(cur.clone()), None);
                }
                let prev = cur.clone();
                let rev = self.next_revision();
                let kv = KeyValue {
                    key: key.clone(),
                    value,
                    create_revision: prev.create_revision,
                    mod_revision: rev,
                    version: prev.version + 1,
                };
                self.kv.insert(key, kv.clone());
                self.record(EventKind::Put, kv, Some(prev))
            }
            Command::Delete { key, expected } => {
                let Some(cur) = self.kv.get(&key) else {
                    return (Outcome::NotFound, None);
                };
                if expected.is_some_and(|e| e != cur.mod_revision) {
                    return (Outcome::Conflict(cur.clone()), None);
                }
                let prev = self.kv.remove(&key).expect("checked above");
                let rev = self.next_revision();
                let kv = KeyValue {
                    mod_revision: rev,
                    ..prev.clone()
                };
                self.record(EventKind::Delete, kv, Some(prev))
            }
            Command::Compact { revision } => {
                self.compact(revision);
                (Outcome::Compacted(self.compacted), None)
            }
        }
    }

    fn next_revision(&mut self) -> Revision {
        self.revision += 1;
        self.revision
    }

    fn record(
        &mut self,
        kind: EventKind,
        kv: KeyValue,
        prev: Option<KeyValue>,
    ) -> (Outcome, Option<Event>) {
        let event = Event {
            kind,
            kv: kv.clone(),
            prev: prev.clone(),
        };
        self.history_bytes += Self::event_bytes(&event);
        if let Some(p) = &prev {
            self.kv_bytes = self.kv_bytes.saturating_sub(Self::kv_size(p));
        }
        if kind == EventKind::Put {
            self.kv_bytes += Self::kv_size(&kv);
        }
        self.history.push_back(event.clone());
        while self.history.len() > self.history_limit
            || (self.history_bytes > HISTORY_BYTES && self.history.len() > 1)
        {
            let Some(oldest) = self.history.pop_front() else {
                break;
            };
            self.history_bytes = self
                .history_bytes
                .saturating_sub(Self::event_bytes(&oldest));
            self.compacted = oldest.kv.mod_revision;
        }
        (Outcome::Written { kv, prev }, Some(event))
    }

    /// Drops history at and below `revision` (never above the current one).
    pub fn compact(&mut self, revision: Revision) {
        let revision = revision.min(self.revision);
        if revision <= self.compacted {
            return;
        }
        while self
            .history
            .front()
            .is_some_and(|e| e.kv.mod_revision <= revision)
        {
            if let Some(e) = self.history.pop_front() {
                self.history_bytes = self.history_bytes.saturating_sub(Self::event_bytes(&e));
            }
        }
        self.compacted = revision;
    }

    fn check_revision(&self, at: Revision) -> Result<(), MvccError> {
        if at > self.revision {
            return Err(MvccError::FutureRevision {
                requested: at,
                current: self.revision,
            });
        }
        if at < self.revision && at <= self.compacted {
            return Err(MvccError::Compacted {
                requested: at,
                oldest: self.compacted + 1,
            });
        }
        Ok(())
    }

    /// One key at the current revision, or at `at` (0 = current).
    pub fn get(&self, key: &str, at: Revision) -> Result<Option<KeyValue>, MvccError> {
        if at == 0 || at == self.revision {
            return Ok(self.kv.get(key).cloned());
        }
        self.check_revision(at)?;
        let mut value = self.kv.get(key).cloned();
        for e in self.history.iter().rev() {
            if e.kv.mod_revision <= at {
                break;
            }
            if e.kv.key == key {
                value = e.prev.clone();
            }
        }
        Ok(value)
    }

    /// Keys starting with `prefix` and sorting after `after` (exclusive), at
    /// most `limit` of them (0 = all), at revision `at` (0 = current).
    pub fn range(
        &self,
        prefix: &str,
        after: Option<&str>,
        limit: usize,
        at: Revision,
    ) -> Result<Range, MvccError> {
        let at = if at == 0 { self.revision } else { at };
        self.check_revision(at)?;
        let lower = match after {
            Some(a) if a >= prefix => std::ops::Bound::Excluded(a.to_owned()),
            _ => std::ops::Bound::Included(prefix.to_owned()),
        };
        let in_range = |k: &str| k.starts_with(prefix) && after.is_none_or(|a| k > a);
        let limit = if limit == 0 { usize::MAX } else { limit };
        if at == self.revision {
            let mut kvs = Vec::new();
            let mut more = false;
            for (k, v) in self.kv.range((lower, std::ops::Bound::Unbounded)) {
                if !k.starts_with(prefix) {
                    break;
                }
                if kvs.len() == limit {
                    more = true;
                    break;
                }
                kvs.push(v.clone());
            }
            return Ok(Range {
                kvs,
                more,
                revision: at,
            });
        }
        // An older revision: undo the later history over the keys in range.
        let mut view: BTreeMap<&str, &KeyValue> = self
            .kv
            .range((lower, std::ops::Bound::Unbounded))
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        for e in self.history.iter().rev() {
            if e.kv.mod_revision <= at {
                break;
            }
            if !in_range(&e.kv.key) {
                continue;
            }
            match &e.prev {
                Some(p) => view.insert(p.key.as_str(), p),
                None => view.remove(e.kv.key.as_str()),
            };
        }
        let more = view.len() > limit;
        Ok(Range {
            kvs: view.into_values().take(limit).cloned().collect(),
            more,
            revision: at,
        })
    }

    /// Events under `prefix` with a revision of `from` or later, for a watch
    /// that starts at `from`.
    pub fn events_since(&self, prefix: &str, from: Revision) -> Result<Vec<Event>, MvccError> {
        if from <= self.compacted {
            return Err(MvccError::Compacted {
                requested: from,
                oldest: self.compacted + 1,
            });
        }
        let start = self.history.partition_point(|e| e.kv.mod_revision < from);
        Ok(self
            .history
            .range(start..)
            .filter(|e| e.kv.key.starts_with(prefix))
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create(m: &mut Mvcc, k: &str, v: &str) -> KeyValue {
        match m
            .apply(Command::Create {
                key: k.into(),
                value: bytes::Bytes::copy_from_slice(v.as_bytes()),
            })
            .0
        {
            Outcome::Written { kv, .. } => kv,
            o => panic!("create {k}: {o:?}"),
        }
    }

    fn update(m: &mut Mvcc, k: &str, v: &str, expected: Option<Revision>) -> Outcome {
        m.apply(Command::Update {
            key: k.into(),
            value: bytes::Bytes::copy_from_slice(v.as_bytes()),
            expected,
        })
        .0
    }

    #[test]
    fn revisions_versions_and_preconditions() {
        let mut m = Mvcc::default();
        assert_eq!(m.revision(), 1);
        let a = create(&mut m, "/a", "1");
        assert_eq!((a.create_revision, a.mod_revision, a.version), (2, 2, 1));
        assert!(matches!(
            m.apply(Command::Create {
                key: "/a".into(),
                value: bytes::Bytes::from_static(b"x")
            })
            .0,
            Outcome::AlreadyExists(kv) if kv.value == b"1"[..]
        ));
        // A stale precondition conflicts and changes nothing.
        assert!(matches!(
            update(&mut m, "/a", "2", Some(1)),
            Outcome::Conflict(_)
        ));
        assert_eq!(m.revision(), 2);
        let Outcome::Written { kv, prev } = update(&mut m, "/a", "2", Some(2)) else {
            panic!()
        };
        assert_eq!((kv.create_revision, kv.mod_revision, kv.version), (2, 3, 2));
        assert_eq!(prev.unwrap().value, &b"1"[..]);
        assert_eq!(update(&mut m, "/b", "x", None), Outcome::NotFound);
        let (out, ev) = m.apply(Command::Delete {
            key: "/a".into(),
            expected: None,
        });
        let Outcome::Written { kv, .. } = out else {
            panic!()
        };
        assert_eq!(kv.mod_revision, 4);
        assert_eq!(ev.unwrap().kind, EventKind::Delete);
        assert_eq!(m.get("/a", 0).unwrap(), None);
        // Recreated keys start a new life.
        let a2 = create(&mut m, "/a", "3");
        assert_eq!((a2.create_revision, a2.version), (5, 1));
    }

    #[test]
    fn reads_at_old_revisions() {
        let mut m = Mvcc::default();
        create(&mut m, "/r/a", "a1"); // 2
        create(&mut m, "/r/b", "b1"); // 3
        update(&mut m, "/r/a", "a2", None); // 4
        m.apply(Command::Delete {
            key: "/r/b".into(),
            expected: None,
        }); // 5
        create(&mut m, "/r/c", "c1"); // 6
        create(&mut m, "/s/x", "x"); // 7
        let vals = |r: Range| {
            r.kvs
                .into_iter()
                .map(|kv| String::from_utf8(kv.value.to_vec()).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(vals(m.range("/r/", None, 0, 0).unwrap()), ["a2", "c1"]);
        assert_eq!(vals(m.range("/r/", None, 0, 3).unwrap()), ["a1", "b1"]);
        assert_eq!(vals(m.range("/r/", None, 0, 4).unwrap()), ["a2", "b1"]);
        assert_eq!(vals(m.range("/r/", None, 0, 5).unwrap()), ["a2"]);
        assert_eq!(m.get("/r/b", 4).unwrap().unwrap().value, &b"b1"[..]);
        // Paging: limit and the exclusive start key, at a fixed revision.
        let p1 = m.range("/r/", None, 1, 4).unwrap();
        assert!(p1.more);
        assert_eq!(vals(p1), ["a2"]);
        let p2 = m.range("/r/", Some("/r/a"), 1, 4).unwrap();
        assert!(!p2.more);
        assert_eq!(vals(p2), ["b1"]);
        assert!(matches!(
            m.range("/r/", None, 0, 99),
            Err(MvccError::FutureRevision { .. })
        ));
    }

    #[test]
    fn watch_history_and_compaction() {
        let mut m = Mvcc::new(3);
        for i in 0..5 {
            create(&mut m, &format!("/k/{i}"), "v"); // revisions 2..=6
        }
        // Only the last three events are kept: 4, 5, 6.
        assert_eq!(m.compacted(), 3);
        let evs = m.events_since("/k/", 4).unwrap();
        assert_eq!(
            evs.iter().map(|e| e.kv.mod_revision).collect::<Vec<_>>(),
            [4, 5, 6]
        );
        assert_eq!(
            m.events_since("/k/", 3),
            Err(MvccError::Compacted {
                requested: 3,
                oldest: 4
            })
        );
        assert!(m.events_since("/k/", 7).unwrap().is_empty());
        assert!(matches!(
            m.range("/k/", None, 0, 3),
            Err(MvccError::Compacted { .. })
        ));
        assert_eq!(
            m.apply(Command::Compact { revision: 5 }).0,
            Outcome::Compacted(5)
        );
        assert_eq!(m.events_since("/k/", 6).unwrap().len(), 1);
        // Compaction never goes past the current revision or backwards.
        m.compact(100);
        assert_eq!(m.compacted(), 6);
        m.compact(2);
        assert_eq!(m.compacted(), 6);
        // The current revision is always readable.
        assert_eq!(m.range("/k/", None, 0, 6).unwrap().kvs.len(), 5);
    }

    #[test]
    fn prefix_filter_on_events() {
        let mut m = Mvcc::default();
        create(&mut m, "/a/1", "v");
        create(&mut m, "/b/1", "v");
        create(&mut m, "/a/2", "v");
        let evs = m.events_since("/a/", 1).unwrap();
        assert_eq!(
            evs.iter().map(|e| e.kv.key.as_str()).collect::<Vec<_>>(),
            ["/a/1", "/a/2"]
        );
    }
}
