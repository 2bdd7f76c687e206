//! The replicated state machine: the MVCC key space in memory, fed by
//! openraft in log order. Snapshots are the serialised key space and its
//! history window, streamed to and from files ([`super::snapshot`]); at
//! start the last snapshot is loaded and openraft replays the committed
//! log after it.

use std::{
    collections::{HashSet, VecDeque},
    sync::Arc,
};

use openraft::{
    AnyError, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot, SnapshotMeta,
    StorageError, StorageIOError, StoredMembership, storage::RaftStateMachine,
};
use redb::Database;
use serde::{Deserialize, Serialize};
use tokio::sync::{RwLock, broadcast, watch};

use super::{
    Node, NodeId, Request, RequestId, TypeConfig, log,
    snapshot::{self, Record, Snapshots},
};
use crate::{
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
    snapshots: Snapshots,
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
    /// The ids in `recent`, so that a new request (nearly all of them) is
    /// told apart without a scan (rebuilt after a snapshot load).
    #[serde(skip)]
    recent_ids: HashSet<RequestId>,
}

/// How many request outcomes are remembered for retries, and how many
/// bytes of values they may hold.
const RECENT_REQUESTS: usize = 10_000;
const RECENT_BYTES: usize = 32 << 20;

/// What of an outcome is kept for a retry.
fn for_retries(o: &Outcome) -> Outcome {
    let bare = |kv: &crate::KeyValue| crate::KeyValue {
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
        if self.recent_ids.contains(&req.id)
            && let Some((_, o)) = self.recent.iter().rev().find(|(id, _)| *id == req.id)
        {
            return (o.clone(), None);
        }
        let (outcome, event) = self.mvcc.apply(req.cmd);
        let kept = for_retries(&outcome);
        self.recent_bytes += held(&kept);
        self.recent.push_back((req.id, kept));
        self.recent_ids.insert(req.id);
        while self.recent.len() > RECENT_REQUESTS || self.recent_bytes > RECENT_BYTES {
            let Some((old_id, old)) = self.recent.pop_front() else {
                break;
            };
            self.recent_ids.remove(&old_id);
            self.recent_bytes = self.recent_bytes.saturating_sub(held(&old));
        }
        (outcome, event)
    }

    /// Counts what is held in memory again, after a snapshot was loaded.
    fn recount(&mut self) {
        self.mvcc.recount();
        self.recent_bytes = self.recent.iter().map(|(_, o)| held(o)).sum();
        self.recent_ids = self.recent.iter().map(|(id, _)| *id).collect();
    }
}

/// A snapshot as versions before [`super::snapshot`] kept it: one value
/// in the log database.
#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta<NodeId, Node>,
    #[serde(with = "crate::value_serde")]
    data: Vec<u8>,
}

fn storage(e: std::io::Error) -> AnyError {
    AnyError::error(e)
}

/// Watch channel depth: a watcher further behind than this is closed and
/// must relist (as kine and the apiserver's watch cache do).
const EVENT_BUFFER: usize = 8192;

impl Shared {
    /// Loads the last snapshot, if any (converting one kept the old way).
    pub(crate) fn open(
        db: Arc<Database>,
        history_limit: usize,
        data_dir: &std::path::Path,
    ) -> Result<Arc<Self>, AnyError> {
        let snapshots = Snapshots::open(data_dir).map_err(storage)?;
        if let Some(old) = log::read_meta::<StoredSnapshot>(&db, log::SNAPSHOT)? {
            let index = old.meta.last_log_id.map_or(0, |l| l.index);
            let file = snapshots.write_bytes(&old.data, index).map_err(storage)?;
            let record = Record {
                meta: old.meta,
                file,
            };
            log::write_meta(&db, snapshot::RECORD, &record, true)?;
            log::delete_meta(&db, log::SNAPSHOT)?;
            tracing::info!(file = %record.file, "moved the store's snapshot out of the log database");
        }
        let mut applied = Applied {
            mvcc: Mvcc::new(history_limit),
            ..Applied::default()
        };
        if let Some(record) = log::read_meta::<Record>(&db, snapshot::RECORD)? {
            applied = snapshots.read(&record.file).map_err(storage)?;
            applied.recount();
        }
        let (events, _) = broadcast::channel(EVENT_BUFFER);
        let (revision, _) = watch::channel(applied.mvcc.revision());
        Ok(Arc::new(Self {
            mvcc: RwLock::new(applied),
            events,
            revision,
            db,
            snapshots,
        }))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct StateMachine {
    pub(crate) shared: Arc<Shared>,
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, SErr> {
        // A copy under the lock (the map, its values shared, short),
        // streamed to a file without it, so writes are not held up.
        let copy = self.shared.mvcc.read().await.clone();
        let (last_applied, membership) = (copy.last_applied, copy.membership.clone());
        let snapshot_id = match last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id, l.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
            snapshot_id,
        };
        let (db, snaps, m) = (
            self.shared.db.clone(),
            self.shared.snapshots.clone(),
            meta.clone(),
        );
        let file = tokio::task::spawn_blocking(move || {
            let index = m.last_log_id.map_or(0, |l| l.index);
            let file = snaps.write(&copy, index).map_err(storage)?;
            drop(copy);
            let opened = snaps.open_file(&file).map_err(storage)?;
            snaps.prune(&file).map_err(storage)?;
            log::write_meta(&db, snapshot::RECORD, &Record { meta: m, file }, true)?;
            Ok::<_, AnyError>(opened)
        })
        .await
        .map_err(|e| StorageIOError::write_snapshot(None, AnyError::error(e)))?
        .map_err(|e| StorageIOError::write_snapshot(None, e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
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

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Vec<Outcome>>, SErr>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut a = self.shared.mvcc.write().await;
        let mut out = Vec::new();
        for entry in entries {
            a.last_applied = Some(entry.log_id);
            match entry.payload {
                EntryPayload::Blank => out.push(Vec::new()),
                EntryPayload::Normal(proposal) => {
                    let requests = proposal.into_requests();
                    let mut outcomes = Vec::with_capacity(requests.len());
                    for req in requests {
                        let (outcome, event) = a.apply_request(req);
                        if let Some(e) = event {
                            // No receivers is fine: nobody is watching.
                            let _ = self.shared.events.send(SmEvent::Event(e));
                        }
                        outcomes.push(outcome);
                    }
                    out.push(outcomes);
                }
                EntryPayload::Membership(m) => {
                    a.membership = StoredMembership::new(Some(entry.log_id), m);
                    out.push(Vec::new());
                }
            }
        }
        self.shared.revision.send_replace(a.mvcc.revision());
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, SErr> {
        let f = self
            .shared
            .snapshots
            .incoming()
            .map_err(|e| StorageIOError::write_snapshot(None, storage(e)))?;
        Ok(Box::new(tokio::fs::File::from_std(f)))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, Node>,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), SErr> {
        use tokio::io::AsyncWriteExt as _;
        let sig = meta.signature();
        let write_err = |e: AnyError| StorageIOError::write_snapshot(Some(sig.clone()), e);
        snapshot.flush().await.map_err(|e| write_err(storage(e)))?;
        let f = snapshot.into_std().await;
        let (db, snaps, m) = (
            self.shared.db.clone(),
            self.shared.snapshots.clone(),
            meta.clone(),
        );
        let mut new = tokio::task::spawn_blocking(move || {
            let index = m.last_log_id.map_or(0, |l| l.index);
            let (new, file) = snaps.adopt(f, index).map_err(storage)?;
            snaps.prune(&file).map_err(storage)?;
            log::write_meta(&db, snapshot::RECORD, &Record { meta: m, file }, true)?;
            Ok::<_, AnyError>(new)
        })
        .await
        .map_err(|e| write_err(AnyError::error(e)))?
        .map_err(write_err)?;
        new.last_applied = meta.last_log_id;
        new.membership = meta.last_membership.clone();
        new.recount();
        let mut a = self.shared.mvcc.write().await;
        *a = new;
        let _ = self.shared.events.send(SmEvent::Reset);
        self.shared.revision.send_replace(a.mvcc.revision());
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, SErr> {
        let (db, snaps) = (self.shared.db.clone(), self.shared.snapshots.clone());
        let found = tokio::task::spawn_blocking(move || {
            // A newer snapshot may land between reading the record and
            // opening its file; the two newest are kept, so a second look
            // finds the one the record then names.
            let mut tries = 0;
            loop {
                let Some(record) = log::read_meta::<Record>(&db, snapshot::RECORD)? else {
                    return Ok(None);
                };
                match snaps.open_file(&record.file) {
                    Ok(f) => return Ok(Some((record.meta, f))),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && tries < 3 => tries += 1,
                    Err(e) => return Err(storage(e)),
                }
            }
        })
        .await
        .map_err(|e| StorageIOError::read_snapshot(None, AnyError::error(e)))?
        .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(found.map(|(meta, f)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(f)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mvcc::Command;

    /// A store whose snapshot an older version kept inside the log
    /// database starts from it, and keeps it as a file from then on.
    #[test]
    fn a_snapshot_kept_the_old_way_is_moved_to_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = Arc::new(Database::create(dir.path().join("raft.redb")).unwrap());
        log::init_tables(&db).unwrap();
        let mut old = Applied::default();
        old.mvcc.apply(Command::Create {
            key: "/k".into(),
            value: bytes::Bytes::from_static(b"v"),
        });
        let meta = SnapshotMeta {
            last_log_id: None,
            last_membership: StoredMembership::default(),
            snapshot_id: "old".into(),
        };
        let stored = StoredSnapshot {
            meta,
            data: serde_json::to_vec(&old).unwrap(),
        };
        log::write_meta(&db, log::SNAPSHOT, &stored, true).unwrap();
        let shared = Shared::open(db.clone(), 100, dir.path()).unwrap();
        let loaded = shared.mvcc.try_read().unwrap();
        assert_eq!(loaded.mvcc.revision(), old.mvcc.revision());
        assert!(loaded.mvcc.get("/k", 0).unwrap().is_some());
        assert!(
            log::read_meta::<StoredSnapshot>(&db, log::SNAPSHOT)
                .unwrap()
                .is_none()
        );
        let record: Record = log::read_meta(&db, snapshot::RECORD).unwrap().unwrap();
        assert_eq!(record.meta.snapshot_id, "old");
        assert!(dir.path().join("snapshots").join(&record.file).exists());
    }
}
