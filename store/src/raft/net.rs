//! Raft's transport: JSON over HTTP between members (the peer port, like
//! etcd's 2380), plus the two calls a follower makes to its leader on behalf
//! of its clients: forward a write, and ask for a read index.
//!
//! The peer port can change anything in the store, so it speaks mutual TLS
//! (the configurations come from the cluster CA, see `api::pki`), and plain
//! HTTP only on loopback (tests, a one-member store nobody else reaches:
//! [`super::RaftStore::open`] refuses it elsewhere). Request bodies are
//! bounded per route.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, State},
    routing::{get, post},
};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::client::legacy::{Client, connect::HttpConnector};
use openraft::{
    BasicNode, RaftNetwork, RaftNetworkFactory,
    error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable},
    network::RPCOption,
    raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    },
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::{NodeId, Raft, Request, TypeConfig, propose::Proposer};
use crate::mvcc::Outcome;

#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerError {
    #[error("peer {addr} unreachable: {reason}")]
    Unreachable { addr: String, reason: String },
    #[error("peer {addr} answered {path} with HTTP {status}: {body}")]
    Status {
        addr: String,
        path: &'static str,
        status: u16,
        body: String,
    },
    #[error("peer {addr} sent an unreadable answer to {path}: {reason}")]
    Decode {
        addr: String,
        path: &'static str,
        reason: String,
    },
}

/// The peer port's mutual TLS: how this member serves, and how it calls
/// the others.
#[derive(Clone, Debug)]
pub struct PeerTls {
    pub server: Arc<rustls::ServerConfig>,
    pub client: Arc<rustls::ClientConfig>,
}

type Connector = hyper_rustls::HttpsConnector<HttpConnector>;

/// An HTTP client for peer calls, shared by every connection.
#[derive(Clone, Debug)]
pub(crate) struct PeerClient {
    http: Client<Connector, Full<Bytes>>,
    scheme: &'static str,
}

impl PeerClient {
    pub(crate) fn new(tls: Option<&PeerTls>) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        connector.enforce_http(false);
        let builder = hyper_rustls::HttpsConnectorBuilder::new();
        let (connector, scheme) = match tls {
            Some(t) => (
                builder
                    .with_tls_config((*t.client).clone())
                    .https_only()
                    .enable_http1()
                    .wrap_connector(connector),
                "https",
            ),
            None => (
                builder
                    .with_tls_config(
                        rustls::ClientConfig::builder_with_provider(Arc::new(
                            rustls::crypto::ring::default_provider(),
                        ))
                        .with_safe_default_protocol_versions()
                        .expect("the ring provider has the default versions")
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                    )
                    .https_or_http()
                    .enable_http1()
                    .wrap_connector(connector),
                "http",
            ),
        };
        Self {
            http: Client::builder(hyper_util::rt::TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector),
            scheme,
        }
    }

    pub(crate) async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        addr: &str,
        path: &'static str,
        req: &Req,
        timeout: Duration,
    ) -> Result<Resp, PeerError> {
        let unreachable = |reason: String| PeerError::Unreachable {
            addr: addr.to_owned(),
            reason,
        };
        let body = serde_json::to_vec(req).map_err(|e| unreachable(e.to_string()))?;
        let request = hyper::Request::post(format!("{}://{addr}{path}", self.scheme))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| unreachable(e.to_string()))?;
        let call = async {
            let resp = self
                .http
                .request(request)
                .await
                .map_err(|e| unreachable(format!("{e:#}")))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(e.to_string()))?
                .to_bytes();
            if !status.is_success() {
                return Err(PeerError::Status {
                    addr: addr.to_owned(),
                    path,
                    status: status.as_u16(),
                    body: String::from_utf8_lossy(&bytes).into_owned(),
                });
            }
            serde_json::from_slice(&bytes).map_err(|e| PeerError::Decode {
                addr: addr.to_owned(),
                path,
                reason: e.to_string(),
            })
        };
        tokio::time::timeout(timeout, call)
            .await
            .map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
    }
}

pub(crate) struct Network {
    client: PeerClient,
    target: NodeId,
    addr: String,
}

#[derive(Clone, Debug)]
pub(crate) struct NetworkFactory {
    pub(crate) client: PeerClient,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = Network;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Network {
        Network {
            client: self.client.clone(),
            target,
            addr: node.addr.clone(),
        }
    }
}

impl Network {
    async fn rpc<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &self,
        path: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let res: Result<Resp, RaftError<NodeId, E>> = self
            .client
            .call(&self.addr, path, req, option.hard_ttl())
            .await
            .map_err(|e| match e {
                PeerError::Unreachable { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                _ => RPCError::Network(NetworkError::new(&e)),
            })?;
        res.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Network {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("/raft/append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.rpc("/raft/snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.rpc("/raft/vote", &rpc, &option).await
    }
}

/// A member's view of the cluster, served at `GET /raft/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberStatus {
    pub id: NodeId,
    pub state: String,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub last_applied: Option<u64>,
    pub voters: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, String>,
}

pub(crate) fn status(raft: &Raft) -> MemberStatus {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    MemberStatus {
        id: m.id,
        state: format!("{:?}", m.state),
        leader: m.current_leader,
        term: m.current_term,
        last_applied: m.last_applied.map(|l| l.index),
        voters: membership.voter_ids().collect(),
        nodes: membership
            .nodes()
            .map(|(id, n)| (*id, n.addr.clone()))
            .collect(),
    }
}

/// A membership change, as sent to `POST /raft/members`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MembershipRequest {
    /// Members to add (id → peer address); they join as learners, catch up,
    /// then become voters.
    #[serde(default)]
    pub add: BTreeMap<NodeId, String>,
    /// Voters to remove.
    #[serde(default)]
    pub remove: Vec<NodeId>,
}

type Reply<T> = Json<Result<T, String>>;

/// The peer port's routes.
pub(crate) fn router(raft: Raft, proposer: Proposer) -> Router {
    Router::new()
        .route(
            "/raft/append",
            post(
                |State(r): State<Raft>, Json(req): Json<AppendEntriesRequest<TypeConfig>>| async move {
                    Json(r.append_entries(req).await)
                },
            )
            .layer(DefaultBodyLimit::max(MAX_APPEND)),
        )
        .route(
            "/raft/vote",
            post(
                |State(r): State<Raft>, Json(req): Json<VoteRequest<NodeId>>| async move {
                    Json(r.vote(req).await)
                },
            ),
        )
        .route(
            "/raft/snapshot",
            post(
                |State(r): State<Raft>, Json(req): Json<InstallSnapshotRequest<TypeConfig>>| async move {
                    Json(r.install_snapshot(req).await)
                },
            )
            .layer(DefaultBodyLimit::max(MAX_SNAPSHOT_CHUNK)),
        )
        .route(
            "/raft/write",
            post(
                move |Json(req): Json<Request>| async move {
                    let res: Result<(u64, Outcome), String> =
                        proposer.propose(req).await.map_err(|e| e.to_string());
                    Json(res)
                },
            ),
        )
        .route(
            "/raft/read-index",
            post(|State(r): State<Raft>| async move {
                let res: Result<u64, String> = r
                    .get_read_log_id()
                    .await
                    .map(|(read, _)| read.map_or(0, |l| l.index))
                    .map_err(|e| e.to_string());
                Json(res)
            }),
        )
        .route(
            "/raft/status",
            get(|State(r): State<Raft>| async move { Json(status(&r)) }),
        )
        .route(
            "/raft/members",
            post(
                |State(r): State<Raft>, Json(req): Json<MembershipRequest>| async move {
                    let res: Reply<MemberStatus> = Json(change_members(&r, req).await);
                    res
                },
            ),
        )
        .layer(DefaultBodyLimit::max(MAX_REQUEST))
        .with_state(raft)
}

/// Body limits of the peer routes: a batch of entries (at most
/// [`MAX_PAYLOAD_ENTRIES`] of at most 1.5 MiB, JSON-encoded), a snapshot
/// chunk, and everything else (a forwarded write of one object).
pub(crate) const MAX_PAYLOAD_ENTRIES: u64 = 16;
const MAX_APPEND: usize = 64 << 20;
pub(crate) const SNAPSHOT_CHUNK: u64 = 4 << 20;
/// How long one chunk of a snapshot may take to be sent and stored.
pub(crate) const SNAPSHOT_CHUNK_TIMEOUT: Duration = Duration::from_secs(10);
const MAX_SNAPSHOT_CHUNK: usize = 24 << 20;
const MAX_REQUEST: usize = 8 << 20;

/// Serves the peer routes, over mutual TLS when `tls` is set.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
) {
    use tower::ServiceExt as _;
    let Some(tls) = tls else {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "raft peer server stopped");
        }
        return;
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "raft peer accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let (acceptor, app) = (acceptor.clone(), app.clone());
        tokio::spawn(async move {
            let stream =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        tracing::info!(%peer, error = %e, "refused a peer connection");
                        return;
                    }
                    Err(_) => return,
                };
            let svc =
                hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    app.clone().oneshot(req.map(axum::body::Body::new))
                });
            let mut conn =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            conn.http1()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30));
            let _ = conn
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

async fn change_members(raft: &Raft, req: MembershipRequest) -> Result<MemberStatus, String> {
    for (id, addr) in &req.add {
        raft.add_learner(*id, BasicNode::new(addr), true)
            .await
            .map_err(|e| format!("adding member {id} at {addr}: {e}"))?;
    }
    let mut voters: std::collections::BTreeSet<NodeId> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    voters.extend(req.add.keys());
    for id in &req.remove {
        voters.remove(id);
    }
    if voters.is_empty() {
        return Err("refusing to remove every voter".into());
    }
    raft.change_membership(voters, false)
        .await
        .map_err(|e| format!("changing membership: {e}"))?;
    Ok(status(raft))
}
