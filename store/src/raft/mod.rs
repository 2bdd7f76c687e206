//! The embedded store: the MVCC state machine replicated with openraft, the
//! log on redb (fsync before acknowledging), members talking JSON over HTTP
//! on the peer port. One member by default; three or five by listing peers.
//!
//! Writes go to the leader (a follower forwards them) and carry a request id
//! so that a retry after a leader change is applied at most once. Reads are
//! linearizable through a read index: the leader confirms its leadership
//! with a quorum, and the member serving the read waits until it has applied
//! up to that index.

mod log;
mod net;
mod propose;
mod sm;
mod snapshot;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
    time::{Duration, Instant},
};

pub use net::{MemberStatus, MembershipRequest, PeerTls};
use openraft::{
    BasicNode, Config, SnapshotPolicy,
    error::{CheckIsLeaderError, RaftError},
};
use propose::ProposeError;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast::error::RecvError;

use super::{
    BoxFuture, KeyValue, ListRequest, ListResponse, Revision, Store, StoreError, WatchItem,
    WatchStream,
    mvcc::{Command, Outcome},
};

pub type NodeId = u64;
pub type Node = BasicNode;

/// A client request id, unique per request (random).
pub type RequestId = (u64, u64);

/// What goes through the Raft log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: RequestId,
    pub cmd: Command,
}

openraft::declare_raft_types!(
    /// Rudder's Raft types: a log entry carries the store commands of one
    /// group commit, and applying it answers each.
    pub TypeConfig:
        D = propose::Proposal,
        R = Vec<Outcome>,
        SnapshotData = tokio::fs::File,
);

type Raft = openraft::Raft<TypeConfig>;

/// A quiet watch reports progress this often (the apiserver's bookmarks).
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// How long a write or a linearizable read waits for a leader and a quorum.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Clone, Debug)]
pub struct RaftConfig {
    /// This member's id (stable across restarts, unique in the cluster).
    pub id: NodeId,
    pub data_dir: PathBuf,
    /// Where the peer port listens.
    pub peer_listen: SocketAddr,
    /// The address other members reach this one at (default: peer_listen).
    pub peer_advertise: Option<String>,
    /// The initial members (id → peer address), this one included; empty
    /// means a one-member cluster. Used only the first time.
    pub initial_members: BTreeMap<NodeId, String>,
    /// Join an existing cluster instead of forming one: wait to be added.
    pub join: bool,
    pub history_limit: usize,
    pub heartbeat: Duration,
    pub election_timeout: (Duration, Duration),
    /// Take a snapshot (and purge the log) after this many entries.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot, so that a member a little
    /// behind catches up from the log rather than a whole snapshot.
    pub keep_log_after_snapshot: u64,
    /// Mutual TLS on the peer port; without it the peer port must listen
    /// on loopback.
    pub tls: Option<PeerTls>,
    /// The most bytes of keys and values the store holds (it holds them
    /// in memory): writes that would add beyond are refused with
    /// [`StoreError::NoSpace`]. etcd's `--quota-backend-bytes`, 2 GiB.
    pub quota_bytes: usize,
}

/// The page cache of the log's database. redb's default is 1 GiB, all of
/// which a busy store would fill with log pages it reads back rarely (the
/// key space itself is in memory): a small cache keeps the server's memory
/// near its data.
const REDB_CACHE_BYTES: usize = 16 << 20;

impl RaftConfig {
    pub fn single(data_dir: impl Into<PathBuf>, peer_listen: SocketAddr) -> Self {
        Self {
            id: 1,
            data_dir: data_dir.into(),
            peer_listen,
            peer_advertise: None,
            initial_members: BTreeMap::new(),
            join: false,
            history_limit: super::mvcc::DEFAULT_HISTORY_LIMIT,
            heartbeat: Duration::from_millis(100),
            election_timeout: (Duration::from_millis(1000), Duration::from_millis(2000)),
            snapshot_every: 10_000,
            keep_log_after_snapshot: 1000,
            tls: None,
            quota_bytes: 2 << 30,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RaftStoreError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store database {path}: {source}")]
    Database { path: PathBuf, source: redb::Error },
    #[error(
        "data directory {path} belongs to member {found}, not {wanted}: \
         use that member id or an empty directory"
    )]
    WrongMember {
        path: PathBuf,
        found: NodeId,
        wanted: NodeId,
    },
    #[error("cannot listen on the peer address {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "refusing to serve the store's peer port on {0} without TLS: anyone reaching it could \
         rewrite the store (listen on loopback, or give the members the cluster CA)"
    )]
    InsecurePeer(SocketAddr),
    #[error("the initial members do not include this member ({0})")]
    NotAMember(NodeId),
    #[error("raft: {0}")]
    Raft(String),
}

/// The embedded, Raft-replicated store.
pub struct RaftStore {
    id: NodeId,
    raft: Raft,
    proposer: propose::Proposer,
    shared: Arc<sm::Shared>,
    client: net::PeerClient,
    peer_addr: SocketAddr,
    server: tokio::task::JoinHandle<()>,
    quota: usize,
}

impl std::fmt::Debug for RaftStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftStore")
            .field("id", &self.id)
            .field("peer_addr", &self.peer_addr)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize, Deserialize)]
struct MemberFile {
    id: NodeId,
}

fn check_member_file(dir: &Path, id: NodeId) -> Result<(), RaftStoreError> {
    let path = dir.join("member.json");
    let data_dir = |source| RaftStoreError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read(&path) {
        Ok(bytes) => {
            let m: MemberFile =
                serde_json::from_slice(&bytes).map_err(|e| data_dir(std::io::Error::other(e)))?;
            if m.id != id {
                return Err(RaftStoreError::WrongMember {
                    path: dir.to_owned(),
                    found: m.id,
                    wanted: id,
                });
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let bytes = serde_json::to_vec(&MemberFile { id }).expect("serialisable");
            std::fs::write(&path, bytes).map_err(data_dir)
        }
        Err(e) => Err(data_dir(e)),
    }
}

impl RaftStore {
    /// Opens (or creates) the member's data and starts Raft and the peer
    /// port. Returns once the member runs; [`RaftStore::wait_ready`] waits
    /// for a leader.
    pub async fn open(cfg: RaftConfig) -> Result<Self, RaftStoreError> {
        // The store holds every Secret: no one else may enter its folder.
        crate::files::own_private_dir(&cfg.data_dir).map_err(|source| RaftStoreError::DataDir {
            path: cfg.data_dir.clone(),
            source,
        })?;
        check_member_file(&cfg.data_dir, cfg.id)?;
        let db_path = cfg.data_dir.join("raft.redb");
        let db_err = |source: redb::Error| RaftStoreError::Database {
            path: db_path.clone(),
            source,
        };
        // A store of this process that was just shut down may still be
        // dropping its last handle (aborted tasks finish on their own
        // schedule): wait a little for it rather than fail.
        let deadline = Instant::now() + Duration::from_secs(5);
        let db = loop {
            match redb::Builder::new()
                .set_cache_size(REDB_CACHE_BYTES)
                .create(&db_path)
            {
                Ok(db) => break db,
                Err(redb::DatabaseError::DatabaseAlreadyOpen) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => return Err(db_err(e.into())),
            }
        };
        log::init_tables(&db).map_err(db_err)?;
        let db = Arc::new(db);
        let shared = sm::Shared::open(db.clone(), cfg.history_limit, &cfg.data_dir)
            .map_err(|e| db_err(redb::Error::Corrupted(e.to_string())))?;

        if cfg.tls.is_none() && !cfg.peer_listen.ip().is_loopback() {
            return Err(RaftStoreError::InsecurePeer(cfg.peer_listen));
        }
        let listener = tokio::net::TcpListener::bind(cfg.peer_listen)
            .await
            .map_err(|source| RaftStoreError::Bind {
                addr: cfg.peer_listen,
                source,
            })?;
        let peer_addr = listener
            .local_addr()
            .map_err(|source| RaftStoreError::Bind {
                addr: cfg.peer_listen,
                source,
            })?;
        let advertise = cfg
            .peer_advertise
            .clone()
            .unwrap_or_else(|| peer_addr.to_string());

        let config = Config {
            cluster_name: "rudder".into(),
            heartbeat_interval: cfg.heartbeat.as_millis() as u64,
            election_timeout_min: cfg.election_timeout.0.as_millis() as u64,
            election_timeout_max: cfg.election_timeout.1.as_millis() as u64,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(cfg.snapshot_every),
            max_in_snapshot_log_to_keep: cfg.keep_log_after_snapshot,
            max_payload_entries: net::MAX_PAYLOAD_ENTRIES,
            snapshot_max_chunk_size: net::SNAPSHOT_CHUNK,
            // openraft's default, 200 ms per chunk, is too short for a
            // chunk of 4 MiB sent as JSON: every transfer of a snapshot
            // larger than a chunk or two timed out and began again.
            install_snapshot_timeout: net::SNAPSHOT_CHUNK_TIMEOUT.as_millis() as u64,
            ..Config::default()
        }
        .validate()
        .map_err(|e| RaftStoreError::Raft(e.to_string()))?;
        let client = net::PeerClient::new(cfg.tls.as_ref());
        let raft = Raft::new(
            cfg.id,
            Arc::new(config),
            net::NetworkFactory {
                client: client.clone(),
            },
            log::LogStore::new(db),
            sm::StateMachine {
                shared: shared.clone(),
            },
        )
        .await
        .map_err(|e| RaftStoreError::Raft(e.to_string()))?;

        let proposer = propose::Proposer::start(raft.clone());
        let app = net::router(raft.clone(), proposer.clone());
        let server = tokio::spawn(net::serve(
            listener,
            app,
            cfg.tls.as_ref().map(|t| t.server.clone()),
        ));

        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| RaftStoreError::Raft(e.to_string()))?;
        if !initialized && !cfg.join {
            let mut members: BTreeMap<NodeId, BasicNode> = cfg
                .initial_members
                .iter()
                .map(|(id, addr)| (*id, BasicNode::new(addr)))
                .collect();
            if members.is_empty() {
                members.insert(cfg.id, BasicNode::new(&advertise));
            }
            if !members.contains_key(&cfg.id) {
                return Err(RaftStoreError::NotAMember(cfg.id));
            }
            // The lowest id forms the cluster; the others wait to be
            // contacted by it.
            if members.keys().next() == Some(&cfg.id) {
                tracing::info!(member = cfg.id, members = ?members.keys().collect::<Vec<_>>(), "forming the store cluster");
                raft.initialize(members)
                    .await
                    .map_err(|e| RaftStoreError::Raft(e.to_string()))?;
            }
        }
        Ok(Self {
            id: cfg.id,
            raft,
            proposer,
            shared,
            client,
            peer_addr,
            server,
            quota: cfg.quota_bytes,
        })
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The address the peer port listens on.
    pub fn peer_addr(&self) -> SocketAddr {
        self.peer_addr
    }

    pub fn status(&self) -> MemberStatus {
        net::status(&self.raft)
    }

    /// Waits until the cluster has a leader and this member can serve
    /// linearizable reads.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), StoreError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.read_barrier(deadline).await {
                Ok(()) => return Ok(()),
                Err(e) if Instant::now() >= deadline => return Err(e),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Adds and removes members (on any member: forwarded to the leader).
    pub async fn change_members(&self, req: MembershipRequest) -> Result<MemberStatus, StoreError> {
        let leader = self.leader_addr().await?;
        self.client
            .call::<_, Result<MemberStatus, String>>(
                &leader,
                "/raft/members",
                &req,
                Duration::from_secs(60),
            )
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?
            .map_err(StoreError::Unavailable)
    }

    async fn leader_addr(&self) -> Result<String, StoreError> {
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        loop {
            let m = self.raft.metrics().borrow().clone();
            if let Some(l) = m.current_leader
                && let Some(n) = m.membership_config.membership().get_node(&l)
            {
                return Ok(n.addr.clone());
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable("no leader elected".into()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops Raft and the peer port.
    pub async fn shutdown(&self) {
        self.server.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
    }

    async fn write(&self, cmd: Command) -> Result<Outcome, StoreError> {
        let req = Request {
            id: (rand::random(), rand::random()),
            cmd,
        };
        let deadline = Instant::now() + REQUEST_TIMEOUT;
        let mut last_error = String::from("no leader elected");
        while Instant::now() < deadline {
            let leader = match self.proposer.propose(req.clone()).await {
                Ok((_, out)) => return Ok(out),
                Err(ProposeError::ForwardToLeader(leader)) => leader,
                Err(ProposeError::Refused(e)) => return Err(StoreError::Internal(e)),
                Err(ProposeError::Stopped(e)) => return Err(StoreError::Unavailable(e)),
            };
            if let Some(node) = leader {
                let remaining = deadline.saturating_duration_since(Instant::now());
                match self
                    .client
                    .call::<_, Result<(u64, Outcome), String>>(
                        &node.addr,
                        "/raft/write",
                        &req,
                        remaining,
                    )
                    .await
                {
                    Ok(Ok((index, out))) => {
                        // Read-your-writes on this member.
                        let remaining = deadline.saturating_duration_since(Instant::now());
                        self.raft
                            .wait(Some(remaining))
                            .applied_index_at_least(Some(index), "forwarded write")
                            .await
                            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
                        return Ok(out);
                    }
                    // The request id makes the retry safe even if the
                    // leader did apply it before failing.
                    Ok(Err(e)) => last_error = e,
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StoreError::Unavailable(format!(
            "write not committed within {REQUEST_TIMEOUT:?}: {last_error}"
        )))
    }

    async fn wait_applied_revision(
        &self,
        revision: Revision,
        deadline: Instant,
    ) -> Result<(), StoreError> {
        let mut rx = self.shared.revision.subscribe();
        let wait = rx.wait_for(|r| *r >= revision);
        match tokio::time::timeout_at(deadline.into(), wait).await {
            Ok(Ok(_)) => Ok(()),
            _ => Err(StoreError::Unavailable(format!(
                "this member has not applied revision {revision} yet"
            ))),
        }
    }

    /// Makes the next local read linearizable.
    async fn read_barrier(&self, deadline: Instant) -> Result<(), StoreError> {
        let mut last_error = String::from("no leader elected");
        while Instant::now() < deadline {
            let index = match self.raft.get_read_log_id().await {
                Ok((read, _)) => Some(read.map_or(0, |l| l.index)),
                Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f))) => {
                    match f.leader_node {
                        Some(node) => {
                            let remaining = deadline.saturating_duration_since(Instant::now());
                            match self
                                .client
                                .call::<_, Result<u64, String>>(
                                    &node.addr,
                                    "/raft/read-index",
                                    &(),
                                    remaining,
                                )
                                .await
                            {
                                Ok(Ok(i)) => Some(i),
                                Ok(Err(e)) => {
                                    last_error = e;
                                    None
                                }
                                Err(e) => {
                                    last_error = e.to_string();
                                    None
                                }
                            }
                        }
                        None => None,
                    }
                }
                Err(RaftError::APIError(e)) => {
                    last_error = e.to_string();
                    None
                }
                Err(RaftError::Fatal(e)) => return Err(StoreError::Unavailable(e.to_string())),
            };
            if let Some(index) = index {
                let remaining = deadline.saturating_duration_since(Instant::now());
                return self
                    .raft
                    .wait(Some(remaining))
                    .applied_index_at_least(Some(index), "linearizable read")
                    .await
                    .map(|_| ())
                    .map_err(|e| StoreError::Unavailable(e.to_string()));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(StoreError::Unavailable(format!(
            "no read quorum within {REQUEST_TIMEOUT:?}: {last_error}"
        )))
    }

    async fn linearizable(&self) -> Result<(), StoreError> {
        self.read_barrier(Instant::now() + REQUEST_TIMEOUT).await
    }
}

impl RaftStore {
    /// Refuses a write that would take the store past its quota (checked
    /// before proposing, on this member's view: the state machine itself
    /// stays the same on every member whatever their quotas).
    async fn check_quota(&self, adding: usize) -> Result<(), StoreError> {
        let used = self.shared.mvcc.read().await.mvcc.bytes();
        if used + adding > self.quota {
            return Err(StoreError::NoSpace {
                used,
                quota: self.quota,
            });
        }
        Ok(())
    }
}

fn written(out: Outcome, key: &str, expected: Option<Revision>) -> Result<KeyValue, StoreError> {
    match out {
        Outcome::Written { kv, .. } => Ok(kv),
        Outcome::AlreadyExists(_) => Err(StoreError::AlreadyExists(key.to_owned())),
        Outcome::NotFound => Err(StoreError::NotFound(key.to_owned())),
        Outcome::Conflict(cur) => Err(StoreError::Conflict {
            key: key.to_owned(),
            expected: expected.unwrap_or_default(),
            current: cur.mod_revision,
        }),
        o => Err(StoreError::Internal(format!(
            "unexpected outcome {o:?} for {key}"
        ))),
    }
}

impl Store for RaftStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(Option<KeyValue>, Revision), StoreError>> {
        Box::pin(async move {
            self.linearizable().await?;
            let a = self.shared.mvcc.read().await;
            Ok((a.mvcc.get(key, 0)?, a.mvcc.revision()))
        })
    }

    fn list(&self, req: ListRequest) -> BoxFuture<'_, Result<ListResponse, StoreError>> {
        Box::pin(async move {
            if req.revision == 0 {
                self.linearizable().await?;
            } else {
                // An exact revision this member has not applied yet: wait
                // briefly for it, as etcd's followers do.
                self.wait_applied_revision(req.revision, Instant::now() + Duration::from_secs(3))
                    .await
                    .map_err(|_| StoreError::FutureRevision {
                        requested: req.revision,
                        current: *self.shared.revision.borrow(),
                    })?;
            }
            let a = self.shared.mvcc.read().await;
            let r = a
                .mvcc
                .range(&req.prefix, req.after.as_deref(), req.limit, req.revision)?;
            Ok(ListResponse {
                kvs: r.kvs,
                more: r.more,
                revision: r.revision,
            })
        })
    }

    fn create(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue, StoreError>> {
        Box::pin(async move {
            super::check_size(&value)?;
            self.check_quota(key.len() + value.len()).await?;
            let value = bytes::Bytes::from(value);
            let out = self
                .write(Command::Create {
                    key: key.clone(),
                    value: value.clone(),
                })
                .await?;
            // The value written is the one sent (a retried request's
            // remembered outcome does not keep it).
            written(out, &key, None).map(|kv| KeyValue { value, ..kv })
        })
    }

    fn update(
        &self,
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<KeyValue, StoreError>> {
        Box::pin(async move {
            super::check_size(&value)?;
            self.check_quota(key.len() + value.len()).await?;
            let value = bytes::Bytes::from(value);
            let out = self
                .write(Command::Update {
                    key: key.clone(),
                    value: value.clone(),
                    expected,
                })
                .await?;
            written(out, &key, expected).map(|kv| KeyValue { value, ..kv })
        })
    }

    fn delete(
        &self,
        key: String,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<KeyValue, StoreError>> {
        Box::pin(async move {
            let out = self
                .write(Command::Delete {
                    key: key.clone(),
                    expected,
                })
                .await?;
            written(out, &key, expected)
        })
    }

    fn watch(
        &self,
        prefix: String,
        from: Revision,
    ) -> BoxFuture<'_, Result<WatchStream, StoreError>> {
        Box::pin(async move {
            let (tx, rx) = tokio::sync::mpsc::channel(1024);
            // Holding the read lock while subscribing means no event is
            // applied between the history read and the live stream.
            let mut applied = self.shared.revision.subscribe();
            let (backlog, mut live, start) = {
                let a = self.shared.mvcc.read().await;
                let live = self.shared.events.subscribe();
                let from = if from == 0 {
                    a.mvcc.revision() + 1
                } else {
                    from
                };
                (a.mvcc.events_since(&prefix, from)?, live, a.mvcc.revision())
            };
            tokio::spawn(async move {
                for e in backlog {
                    if tx.send(Ok(WatchItem::Event(e))).await.is_err() {
                        return;
                    }
                }
                if tx.send(Ok(WatchItem::Progress(start))).await.is_err() {
                    return;
                }
                let convert = |r: Result<sm::SmEvent, RecvError>| match r {
                    Ok(sm::SmEvent::Event(e)) => {
                        e.kv.key
                            .starts_with(&prefix)
                            .then_some(Ok(WatchItem::Event(e)))
                    }
                    Ok(sm::SmEvent::Reset) | Err(RecvError::Lagged(_)) => {
                        Some(Err(StoreError::WatchLagged))
                    }
                    Err(RecvError::Closed) => {
                        Some(Err(StoreError::Unavailable("store shut down".into())))
                    }
                };
                let mut quiet = tokio::time::interval(PROGRESS_EVERY);
                quiet.reset();
                loop {
                    let item = tokio::select! {
                        r = live.recv() => {
                            quiet.reset();
                            match convert(r) {
                                Some(item) => item,
                                None => continue,
                            }
                        }
                        _ = quiet.tick() => {
                            // Events reach the channel before the applied
                            // revision moves, so once the channel is drained
                            // everything up to that revision was sent.
                            let rev = *applied.borrow_and_update();
                            loop {
                                match live.try_recv() {
                                    Ok(e) => match convert(Ok(e)) {
                                        #[allow(clippy::collapsible_match, reason = "the send must not run in a guard: it moves the item")]
                                        Some(Ok(i)) => {
                                            if tx.send(Ok(i)).await.is_err() {
                                                return;
                                            }
                                        }
                                        None => {}
                                        Some(Err(e)) => {
                                            let _ = tx.send(Err(e)).await;
                                            return;
                                        }
                                    },
                                    Err(tokio::sync::broadcast::error::TryRecvError::Empty) => break,
                                    Err(_) => {
                                        let _ = tx.send(Err(StoreError::WatchLagged)).await;
                                        return;
                                    }
                                }
                            }
                            Ok(WatchItem::Progress(rev))
                        }
                    };
                    let end = item.is_err();
                    if tx.send(item).await.is_err() || end {
                        return;
                    }
                }
            });
            Ok(rx)
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.write(Command::Compact { revision }).await?;
            Ok(())
        })
    }

    fn current_revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            self.linearizable().await?;
            Ok(self.shared.mvcc.read().await.mvcc.revision())
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            self.read_barrier(Instant::now() + Duration::from_secs(2))
                .await
        })
    }
}
