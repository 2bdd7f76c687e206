//! The Raft log and vote on redb. Every append and vote is committed with
//! `Durability::Immediate` (fsync) before openraft is told it is done, as
//! the `append` contract requires; the state machine itself lives in memory
//! and is rebuilt from the last snapshot plus the log at start.

use std::{fmt::Debug, ops::RangeBounds, sync::Arc};

use openraft::{
    AnyError, Entry, LogId, LogState, OptionalSend, RaftLogReader, StorageError, StorageIOError,
    Vote,
    storage::{LogFlushed, RaftLogStorage},
};
use redb::{Database, ReadableDatabase as _, ReadableTable, TableDefinition};

use super::{NodeId, TypeConfig};

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";
pub(super) const SNAPSHOT: &str = "snapshot";

type SErr = StorageError<NodeId>;

fn io(e: impl std::error::Error + 'static) -> AnyError {
    AnyError::new(&e)
}

/// Creates the tables so that readers never see them missing.
pub(super) fn init_tables(db: &Database) -> Result<(), redb::Error> {
    let tx = db.begin_write()?;
    tx.open_table(LOG)?;
    tx.open_table(META)?;
    tx.commit()?;
    Ok(())
}

pub(super) fn read_meta<T: serde::de::DeserializeOwned>(
    db: &Database,
    key: &str,
) -> Result<Option<T>, AnyError> {
    let tx = db.begin_read().map_err(io)?;
    let t = tx.open_table(META).map_err(io)?;
    let Some(v) = t.get(key).map_err(io)? else {
        return Ok(None);
    };
    serde_json::from_slice(v.value()).map(Some).map_err(io)
}

pub(super) fn write_meta<T: serde::Serialize>(
    db: &Database,
    key: &str,
    value: &T,
    durable: bool,
) -> Result<(), AnyError> {
    let bytes = serde_json::to_vec(value).map_err(io)?;
    let mut tx = db.begin_write().map_err(io)?;
    if !durable {
        tx.set_durability(redb::Durability::None).map_err(io)?;
    }
    {
        let mut t = tx.open_table(META).map_err(io)?;
        t.insert(key, bytes.as_slice()).map_err(io)?;
    }
    tx.commit().map_err(io)
}

pub(super) fn delete_meta(db: &Database, key: &str) -> Result<(), AnyError> {
    let tx = db.begin_write().map_err(io)?;
    {
        let mut t = tx.open_table(META).map_err(io)?;
        t.remove(key).map_err(io)?;
    }
    tx.commit().map_err(io)
}

/// Runs blocking redb work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, AnyError> + Send + 'static,
) -> Result<T, AnyError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AnyError::error(format!("storage task failed: {e}")))?
}

#[derive(Clone, Debug)]
pub(super) struct LogStore {
    db: Arc<Database>,
}

impl LogStore {
    pub(super) fn new(db: Arc<Database>) -> Self {
        Self { db }
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, SErr> {
        let db = self.db.clone();
        let start = range.start_bound().cloned();
        let end = range.end_bound().cloned();
        blocking(move || {
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(LOG).map_err(io)?;
            let mut out = Vec::new();
            for item in t.range::<u64>((start, end)).map_err(io)? {
                let (_, v) = item.map_err(io)?;
                out.push(serde_json::from_slice(v.value()).map_err(io)?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, SErr> {
        let db = self.db.clone();
        blocking(move || {
            let last_purged: Option<LogId<NodeId>> = read_meta(&db, LAST_PURGED)?;
            let tx = db.begin_read().map_err(io)?;
            let t = tx.open_table(LOG).map_err(io)?;
            let last = match t.last().map_err(io)? {
                Some((_, v)) => {
                    let e: Entry<TypeConfig> = serde_json::from_slice(v.value()).map_err(io)?;
                    Some(e.log_id)
                }
                None => last_purged,
            };
            Ok(LogState {
                last_purged_log_id: last_purged,
                last_log_id: last,
            })
        })
        .await
        .map_err(|e| StorageIOError::read_logs(e).into())
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> Result<(), SErr> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(move || write_meta(&db, VOTE, &vote, true))
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<NodeId>>, SErr> {
        let db = self.db.clone();
        blocking(move || read_meta(&db, VOTE))
            .await
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> Result<(), SErr> {
        // A hint for replay at start: losing it loses nothing (the leader
        // commits again), so it does not pay for an fsync of its own.
        let db = self.db.clone();
        blocking(move || write_meta(&db, COMMITTED, &committed, false))
            .await
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<NodeId>>, SErr> {
        let db = self.db.clone();
        blocking(move || Ok(read_meta::<Option<LogId<NodeId>>>(&db, COMMITTED)?.flatten()))
            .await
            .map_err(|e| StorageIOError::read(e).into())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), SErr>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut encoded = Vec::new();
        for e in entries {
            let bytes =
                serde_json::to_vec(&e).map_err(|err| StorageIOError::write_logs(io(err)))?;
            encoded.push((e.log_id.index, bytes));
        }
        let db = self.db.clone();
        let res = blocking(move || {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut t = tx.open_table(LOG).map_err(io)?;
                for (index, bytes) in &encoded {
                    t.insert(*index, bytes.as_slice()).map_err(io)?;
                }
            }
            tx.commit().map_err(io)
        })
        .await;
        match res {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let db = self.db.clone();
        blocking(move || {
            let tx = db.begin_write().map_err(io)?;
            {
                let mut t = tx.open_table(LOG).map_err(io)?;
                t.retain_in(log_id.index.., |_, _| false).map_err(io)?;
            }
            tx.commit().map_err(io)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> Result<(), SErr> {
        let db = self.db.clone();
        blocking(move || {
            write_meta(&db, LAST_PURGED, &log_id, true)?;
            let tx = db.begin_write().map_err(io)?;
            {
                let mut t = tx.open_table(LOG).map_err(io)?;
                t.retain_in(..=log_id.index, |_, _| false).map_err(io)?;
            }
            tx.commit().map_err(io)
        })
        .await
        .map_err(|e| StorageIOError::write_logs(e).into())
    }
}
