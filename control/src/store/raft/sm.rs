//! The replicated state machine: the MVCC key space in memory, fed by
//! openraft in log order. Snapshots are the serialised key space and its
//! history window, kept in redb; at start the last snapshot is loaded and
//! openraft replays the committed log after it.

use std::{collections::VecDeque, io::Cursor, sync::Arc};

use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, storage::RaftStateMachine,
};
use redb::Database;
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, broadcast, watch};

use super::{Node, NodeId, Request, RequestId, TypeConfig, log};
use crate::store::{
    Event,
    mvcc::{Mvcc, Outcome},
};

type SErr = StorageError<NodeId>;

/// What watchers are sent as the state machine moves.
#[derive(Clone, Debug)]
pub(crate) enum SmEvent {
    Event(Event),
    /// The state was replaced by a snapshot: watches cannot continue.
    Reset,
}

/// The state shared by the state machine, the snapshot builder and the
/// store's read path.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) mvcc: RwLock<Applied>,
    pub(crate) events: broadcast::Sender<SmEvent>,
    /// The revision applied so far, for read-your-writes waits.
    pub(crate) revision: watch::Sender<i64>,
    db: Arc<Database>,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct Applied {
    pub(crate) mvcc: Mvcc,
    pub(crate) last_applied: Option<LogId<NodeId>>,
    pub(crate) membership: StoredMembership<NodeId, Node>,
    /// Outcomes of the latest requests by id, so that a write retried after
    /// a leader change (which may or may not have committed) is applied
    /// once and answered with its first outcome. The value a create or an
    /// update wrote is not kept (its writer has it); a delete's is.
    recent: VecDeque<(RequestId, Outcome)>,
    /// The value bytes `recent` holds (recounted after a snapshot load).
    #[serde(skip)]
    recent_bytes: usize,
}

/// How many request outcomes are remembered for retries, and how many
/// bytes of values they may hold.
const RECENT_REQUESTS: usize = 10_000;
const RECENT_BYTES: usize = 32 << 20;

/// What of an outcome is kept for a retry.
fn for_retries(o: &Outcome) -> Outcome {
    let bare = |kv: &crate::store::KeyValue| crate::store::KeyValue {
        value: bytes::Bytes::new(),
        ..kv.clone()
    };
    match o {
        // A delete (its `kv` is the deleted value, at the same version as
        // `prev`) answers with the deleted value; `prev` is never used.
        Outcome::Written { kv, prev: Some(p) } if kv.version == p.version => Outcome::Written {
            kv: kv.clone(),
            prev: None,
        },
        Outcome::Written { kv, .. } => Outcome::Written {
            kv: bare(kv),
            prev: None,
        },
        Outcome::AlreadyExists(kv) => Outcome::AlreadyExists(bare(kv)),
        Outcome::Conflict(kv) => Outcome::Conflict(bare(kv)),
        other => other.clone(),
    }
}

/// The value bytes a kept outcome holds.
fn held(o: &Outcome) -> usize {
    match o {
        Outcome::Written { kv, prev } => {
            kv.value.len() + prev.as_ref().map_or(0, |p| p.value.len())
        }
        Outcome::AlreadyExists(kv) | Outcome::Conflict(kv) => kv.value.len(),
        _ => 0,
    }
}

impl Applied {
    fn apply_request(&mut self, req: Request) -> (Outcome, Option<Event>) {
        if let Some((_, o)) = self.recent.iter().rev().find(|(id, _)| *id == req.id) {
            return (o.clone(), None);
        }
        let (outcome, event) = self.mvcc.apply(req.cmd);
        let kept = for_retries(&outcome);
        self.recent_bytes += held(&kept);
        self.recent.push_back((req.id, kept));
        while self.recent.len() > RECENT_REQUESTS || self.recent_bytes > RECENT_BYTES {
            let Some((_, old)) = self.recent.pop_front() else {
                break;
            };
            self.recent_bytes = self.recent_bytes.saturating_sub(held(&old));
        }
        (outcome, event)
    }

    /// Counts what is held in memory again, after a snapshot was loaded.
    fn recount(&mut self) {
        self.mvcc.recount();
        self.recent_bytes = self.recent.iter().map(|(_, o)| held(o)).sum();
    }
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    #[serde(with = "crate::store::value_serde")]
    data: Vec<u8>,
}

/// Watch channel depth: a watcher further behind than this is closed and
/// must relist (as kine and the apiserver's watch cache do).
const EVENT_BUFFER: usize = 8192;

impl Shared {
    /// Loads the last snapshot, if any.
    pub(crate) fn open(db: Arc<Database>, history_limit: usize) -> Result<Arc<Self>, AnyError> {
        let mut applied = Applied {
            mvcc: Mvcc::new(history_limit),
            ..Applied::default()
        };
        if let Some(snap) = log::read_meta::<StoredSnapshot>(&db, log::SNAPSHOT)? {
            applied = serde_json::from_slice(&snap.data).map_err(|e| AnyError::new(&e))?;
            applied.recount();
        }
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (revision, _) = watch::channel(applied.mvcc.revision());
        Ok(Arc::new(Self {
            mvcc: RwLock::new(applied),
            events,
            revision,
            db,
        }))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct StateMachine {
    pub(crate) shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        // A copy under the lock (a memory copy, short), serialised
        // without it, so writes are not held up by the encoding.
        let copy = self.shared.mvcc.read().await.clone();
        let (last_applied, membership) = (copy.last_applied, copy.membership.clone());
        let data = tokio::task::spawn_blocking(move || serde_json::to_vec(&copy))
            .await
            .map_err(|e| StorageIOError::read_state_machine(AnyError::error(e)))?
            .map_err(|e| StorageIOError::read_state_machine(AnyError::new(&e)))?;
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let db = self.shared.db.clone();
        tokio::task::spawn_blocking(move || log::write_meta(&db, log::SNAPSHOT, &stored, true))
            .await
            .map_err(|e| StorageIOError::write_snapshot(None, AnyError::error(e)))?
            .map_err(|e| StorageIOError::write_snapshot(None, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = Self;

    async fn applied_state(
        &mut self,
    ) -> Result<(Option<LogId<NodeId>>, StoredMembership<NodeId, Node>), SErr> {
        let a = self.shared.mvcc.read().await;
        Ok((a.last_applied, a.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Outcome>, SErr>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self.shared.mvcc.write().await;
        let mut out = Vec::new();
        for entry in entries {
            a.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Outcome::Nothing),
                EntryPayload::Normal(req) => {
                    let (outcome, event) = a.apply_request(req);
                    if let Some(e) = event {
                        // No receivers is fine: nobody is watching.
                        let _ = self.shared.events.send(SmEvent::Event(e));
                    }
                    out.push(outcome);
                }
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Outcome::Nothing);
                }
            }
        }
        self.shared.revision.send_replace(a.mvcc.revision());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, SErr> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), SErr> {
        let data = snapshot.into_inner();
        let mut new: Applied = serde_json::from_slice(&data).map_err(|e| {
            StorageIOError::read_snapshot(Some(meta.signature()), AnyError::new(&e))
        })?;
        new.last_applied = meta.last_log_id;
        new.membership = meta.last_membership.clone();
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let db = self.shared.db.clone();
        let sig = meta.signature();
        tokio::task::spawn_blocking(move || log::write_meta(&db, log::SNAPSHOT, &stored, true))
            .await
            .map_err(|e| StorageIOError::write_snapshot(Some(sig.clone()), AnyError::error(e)))?
            .map_err(|e| StorageIOError::write_snapshot(Some(sig), e))?;
        let mut a = self.shared.mvcc.write().await;
        *a = new;
        let _ = self.shared.events.send(SmEvent::Reset);
        self.shared.revision.send_replace(a.mvcc.revision());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let db = self.shared.db.clone();
        let stored = tokio::task::spawn_blocking(move || {
            log::read_meta::<StoredSnapshot>(&db, log::SNAPSHOT)
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, AnyError::error(e)))?
        .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(stored.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
