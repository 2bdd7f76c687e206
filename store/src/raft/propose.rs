//! Group commit: the writes waiting for the log go into it together.
//!
//! openraft 0.9 appends one client write at a time and waits for each
//! append's fsync before it takes the next, so a log entry per write costs
//! an fsync per write. etcd instead hands all the proposals that arrived
//! during one WAL fsync to the next one. Rudder does the same one level up:
//! writes queue here, and whatever is waiting when a slot opens becomes one
//! log entry (a [`Proposal`] of many [`Request`]s), appended with one fsync,
//! replicated as one entry and applied in order, each request with its own
//! outcome and its own retry id. At most [`IN_FLIGHT`] entries are in
//! openraft at once, so while one is being made durable the next gathers
//! everything that arrives meanwhile.
//!
//! Durability is unchanged: a write is answered only when the entry holding
//! it is committed (on disk on a majority) and applied.

use std::sync::Arc;

use openraft::{
    BasicNode,
    error::{ClientWriteError, RaftError},
};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::{Raft, Request, RequestId};
use crate::mvcc::{Command, Outcome};

/// Log entries being committed at once (one being made durable, one
/// queued behind it, and one gathering).
const IN_FLIGHT: usize = 2;

/// A batch closes at this many requests or this many bytes of keys and
/// values (a single larger request goes alone): an append of
/// `MAX_PAYLOAD_ENTRIES` such entries stays within the peer port's body
/// limit.
const MAX_BATCH: usize = 512;
const MAX_BATCH_BYTES: usize = 1 << 20;

/// Writes waiting for a slot; beyond this, callers wait to enqueue.
const QUEUE: usize = 4096;

/// What one log entry carries: the requests of one group commit, applied in
/// order. Entries written before group commit carry a single request in
/// `id` and `cmd` (kept readable so that an existing log replays).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Proposal {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub batch: Vec<Request>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    id: Option<RequestId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    cmd: Option<Command>,
}

impl Proposal {
    pub fn new(batch: Vec<Request>) -> Self {
        Self {
            batch,
            ..Self::default()
        }
    }

    /// The requests in the order they apply.
    pub fn into_requests(self) -> Vec<Request> {
        let mut out = self.batch;
        if let (Some(id), Some(cmd)) = (self.id, self.cmd) {
            out.insert(0, Request { id, cmd });
        }
        out
    }
}

/// Why a proposal was not committed.
#[derive(Clone, Debug, thiserror::Error)]
pub(super) enum ProposeError {
    /// This member is not the leader; the leader, if known.
    #[error("not the leader")]
    ForwardToLeader(Option<BasicNode>),
    #[error("{0}")]
    Refused(String),
    #[error("raft stopped: {0}")]
    Stopped(String),
}

struct Waiting {
    req: Request,
    done: oneshot::Sender<Result<(u64, Outcome), ProposeError>>,
}

/// The queue in front of openraft's client writes.
#[derive(Clone, Debug)]
pub(super) struct Proposer {
    tx: mpsc::Sender<Waiting>,
}

impl std::fmt::Debug for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Waiting").field("id", &self.req.id).finish()
    }
}

impl Proposer {
    /// Starts the batching task; it ends when every handle is dropped.
    pub(super) fn start(raft: Raft) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(raft, rx));
        Self { tx }
    }

    /// Commits `req` and returns its log index and outcome.
    pub(super) async fn propose(&self, req: Request) -> Result<(u64, Outcome), ProposeError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Waiting { req, done })
            .await
            .map_err(|_| ProposeError::Stopped("the proposal queue is closed".into()))?;
        rx.await
            .map_err(|_| ProposeError::Stopped("the proposal was dropped".into()))?
    }
}

/// The bytes a request adds to an entry, roughly.
fn weight(r: &Request) -> usize {
    match &r.cmd {
        Command::Create { key, value } | Command::Update { key, value, .. } => {
            key.len() + value.len()
        }
        Command::Delete { key, .. } => key.len(),
        Command::Compact { .. } => 0,
    }
}

async fn run(raft: Raft, mut rx: mpsc::Receiver<Waiting>) {
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    loop {
        // Take a slot first: while none is free, writes gather in the queue.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut bytes = weight(&first.req);
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(w) => {
                    bytes += weight(&w.req);
                    batch.push(w);
                }
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            commit(&raft, batch).await;
            drop(slot);
        });
    }
}

async fn commit(raft: &Raft, batch: Vec<Waiting>) {
    let (reqs, dones): (Vec<_>, Vec<_>) = batch.into_iter().map(|w| (w.req, w.done)).unzip();
    match raft.client_write(Proposal::new(reqs)).await {
        Ok(resp) => {
            let index = resp.log_id.index;
            let mut outcomes = resp.data.into_iter();
            for done in dones {
                let out = outcomes.next().ok_or_else(|| {
                    ProposeError::Refused("the state machine answered fewer requests".into())
                });
                // A caller that gave up is fine: its write stands.
                let _ = done.send(out.map(|o| (index, o)));
            }
        }
        Err(e) => {
            let err = match e {
                RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => {
                    ProposeError::ForwardToLeader(f.leader_node)
                }
                RaftError::APIError(e) => ProposeError::Refused(e.to_string()),
                RaftError::Fatal(e) => ProposeError::Stopped(e.to_string()),
            };
            for done in dones {
                let _ = done.send(Err(err.clone()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A log entry written before group commit (one request) still reads.
    #[test]
    fn an_entry_of_one_request_from_before_group_commit_reads() {
        let old = r#"{"id":[1,2],"cmd":{"Delete":{"key":"/k","expected":null}}}"#;
        let p: Proposal = serde_json::from_str(old).unwrap();
        assert_eq!(
            p.into_requests(),
            vec![Request {
                id: (1, 2),
                cmd: Command::Delete {
                    key: "/k".into(),
                    expected: None
                }
            }]
        );
        let new = Proposal::new(vec![
            Request {
                id: (3, 4),
                cmd: Command::Compact { revision: 5 },
            },
            Request {
                id: (5, 6),
                cmd: Command::Compact { revision: 6 },
            },
        ]);
        let text = serde_json::to_value(&new).unwrap();
        let keys: Vec<_> = text.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["batch"]);
        let back: Proposal = serde_json::from_value(text).unwrap();
        assert_eq!(back, new);
    }
}
