//! The store on an external etcd v3 cluster, through etcd's gRPC API
//! (`etcd-client`, on tonic): one HTTP/2 channel balanced over the
//! endpoints, every call and every watch a stream multiplexed on it, bytes
//! as bytes (no JSON, no base64).
//!
//! Writes are etcd transactions guarded on `mod_revision` (or on
//! `create_revision == 0` for a create), exactly as kube-apiserver's etcd3
//! storage does, so revisions are etcd's and `resourceVersion`s stay valid
//! across apiserver restarts.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, PutOptions, Txn, TxnOp,
    TxnOpResponse, TxnResponse, WatchOptions,
};

use super::{
    BoxFuture, Event, EventKind, KeyValue, ListRequest, ListResponse, Revision, Store, StoreError,
    WatchItem, WatchStream,
};

/// Where the etcd cluster is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    /// Client URLs (`http://127.0.0.1:2379`, `https://10.0.0.1:2379`);
    /// calls go to the endpoints that answer.
    pub endpoints: Vec<String>,
    /// CA bundle for `https` endpoints (the system's roots otherwise are not
    /// used: etcd clusters have their own CA).
    pub ca_file: Option<PathBuf>,
    /// Client certificate and key, for etcd's `--client-cert-auth`.
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    /// Per-request timeout (watches excepted).
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum EtcdConfigError {
    #[error("no etcd endpoint given")]
    NoEndpoints,
    #[error("etcd endpoint {0:?} is not an http:// or https:// URL")]
    BadEndpoint(String),
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("etcd TLS settings: {0}")]
    Tls(String),
    #[error("etcd client: {0}")]
    Client(String),
}

/// The largest response accepted (a list of a whole prefix, a watch
/// response): kube-apiserver takes up to 2 GiB; this bounds it lower.
const MAX_MESSAGE: usize = 512 << 20;

/// How long connecting to one endpoint may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Events buffered per watch before the pump waits for its reader.
const WATCH_BUFFER: usize = 1024;

/// The etcd-backed store.
#[derive(Clone)]
pub struct EtcdStore {
    /// One client (one HTTP/2 connection) per endpoint.
    clients: Arc<Vec<Client>>,
    /// The endpoint in use: calls stay on it until it cannot be reached,
    /// then move to the next (as etcd's own client pins one endpoint).
    current: Arc<AtomicUsize>,
    endpoints: Arc<Vec<String>>,
    timeout: Duration,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("endpoints", &self.endpoints)
            .finish_non_exhaustive()
    }
}

fn read(path: &PathBuf) -> Result<Vec<u8>, EtcdConfigError> {
    std::fs::read(path).map_err(|source| EtcdConfigError::Read {
        path: path.clone(),
        source,
    })
}

/// The TLS settings for `https` endpoints, if any are given.
fn tls_options(cfg: &EtcdConfig) -> Result<Option<etcd_client::TlsOptions>, EtcdConfigError> {
    if cfg.ca_file.is_none() && cfg.cert_file.is_none() && cfg.key_file.is_none() {
        return Ok(None);
    }
    let mut tls = etcd_client::TlsOptions::new();
    if let Some(ca) = &cfg.ca_file {
        tls = tls.ca_certificate(etcd_client::Certificate::from_pem(read(ca)?));
    }
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => Ok(Some(
            tls.identity(etcd_client::Identity::from_pem(read(c)?, read(k)?)),
        )),
        (None, None) => Ok(Some(tls)),
        _ => Err(EtcdConfigError::Tls(
            "give both the client certificate and its key".into(),
        )),
    }
}

/// The first key after every key starting with `prefix` (etcd's range end
/// for a prefix).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn key_value(kv: &etcd_client::KeyValue) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: Bytes::copy_from_slice(kv.value()),
        create_revision: kv.create_revision(),
        mod_revision: kv.mod_revision(),
        version: kv.version(),
    }
}

fn header_revision(h: Option<&etcd_client::ResponseHeader>) -> Revision {
    h.map_or(0, etcd_client::ResponseHeader::revision)
}

/// An etcd error message as a store error.
fn etcd_error(code: Option<tonic::Code>, msg: &str) -> StoreError {
    if msg.contains("required revision has been compacted") {
        return StoreError::Compacted {
            requested: 0,
            oldest: 0,
        };
    }
    if msg.contains("required revision is a future revision") {
        return StoreError::FutureRevision {
            requested: 0,
            current: 0,
        };
    }
    let transient = matches!(
        code,
        None | Some(
            tonic::Code::Unavailable
                | tonic::Code::DeadlineExceeded
                | tonic::Code::Aborted
                | tonic::Code::Cancelled
        )
    );
    if transient || msg.contains("no leader") || msg.contains("timed out") {
        return StoreError::Unavailable(format!("etcd: {msg}"));
    }
    StoreError::Internal(format!("etcd answered {code:?}: {msg}"))
}

fn client_error(e: etcd_client::Error) -> StoreError {
    match e {
        // The connection failed under the call (tonic reports it as a
        // status): a TLS handshake etcd or the store refused, a reset.
        // Unavailable, with the cause, which the status's message omits.
        etcd_client::Error::GRpcStatus(s)
            if s.code() == tonic::Code::Unknown && s.message() == "transport error" =>
        {
            StoreError::Unavailable(format!("etcd: transport error{}", causes(&s)))
        }
        etcd_client::Error::GRpcStatus(s) => etcd_error(Some(s.code()), s.message()),
        etcd_client::Error::TransportError(e) => StoreError::Unavailable(format!("etcd: {e}")),
        etcd_client::Error::IoError(e) => StoreError::Unavailable(format!("etcd: {e}")),
        etcd_client::Error::WatchError(e) => StoreError::Unavailable(format!("etcd watch: {e}")),
        other => StoreError::Internal(format!("etcd: {other}")),
    }
}

/// `: cause: its cause …` for each error under `e`.
fn causes(e: &dyn std::error::Error) -> String {
    let mut out = String::new();
    let mut next = e.source();
    while let Some(cause) = next {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        next = cause.source();
    }
    out
}

/// Whether a call failed before reaching etcd (nothing was sent).
fn is_connect_error(e: &etcd_client::Error) -> bool {
    match e {
        etcd_client::Error::TransportError(_) => true,
        etcd_client::Error::GRpcStatus(s) => {
            s.code() == tonic::Code::Unavailable && s.message().contains("connect")
        }
        _ => false,
    }
}

/// The value of a transaction's first operation, of the kind expected.
fn first_op(resp: &TxnResponse) -> Option<TxnOpResponse> {
    resp.op_responses().into_iter().next()
}

impl EtcdStore {
    /// Checks the settings and sets up the channel; endpoints are dialled
    /// when first used (a store that cannot reach any answers
    /// [`StoreError::Unavailable`] within the timeout).
    pub async fn connect(cfg: &EtcdConfig) -> Result<Self, EtcdConfigError> {
        if cfg.endpoints.is_empty() {
            return Err(EtcdConfigError::NoEndpoints);
        }
        for e in &cfg.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(EtcdConfigError::BadEndpoint(e.clone()));
            }
        }
        let mut options = ConnectOptions::new().with_connect_timeout(CONNECT_TIMEOUT);
        if let Some(tls) = tls_options(cfg)? {
            options = options.with_tls(tls);
        }
        let endpoints: Vec<String> = cfg
            .endpoints
            .iter()
            .map(|e| e.trim_end_matches('/').to_owned())
            .collect();
        let mut clients = Vec::new();
        for e in &endpoints {
            clients.push(
                Client::connect([e], Some(options.clone()))
                    .await
                    .map_err(|e| EtcdConfigError::Client(e.to_string()))?,
            );
        }
        Ok(Self {
            clients: Arc::new(clients),
            current: Arc::new(AtomicUsize::new(0)),
            endpoints: Arc::new(endpoints),
            timeout: if cfg.timeout.is_zero() {
                Duration::from_secs(10)
            } else {
                cfg.timeout
            },
        })
    }

    /// One call on the endpoint in use, bounded by the timeout. A call
    /// that could not connect never reached etcd, so it is made again on
    /// the next endpoint; any other failure is the answer (a write that
    /// timed out may have been applied), and the next call starts on the
    /// next endpoint.
    async fn bounded<T, F>(&self, call: impl Fn(Client) -> F) -> Result<T, StoreError>
    where
        F: Future<Output = Result<T, etcd_client::Error>>,
    {
        let n = self.clients.len();
        let first = self.current.load(Ordering::Relaxed);
        let mut last = String::new();
        for attempt in 0..n {
            let i = (first + attempt) % n;
            match tokio::time::timeout(self.timeout, call(self.clients[i].clone())).await {
                Ok(Ok(v)) => {
                    self.current.store(i, Ordering::Relaxed);
                    return Ok(v);
                }
                Ok(Err(e)) if is_connect_error(&e) => {
                    last = format!("{}: {e}", self.endpoints[i]);
                }
                Ok(Err(e)) => return Err(client_error(e)),
                Err(_) => {
                    self.current.store((i + 1) % n, Ordering::Relaxed);
                    return Err(StoreError::Unavailable(format!(
                        "etcd {} did not answer within {:?}",
                        self.endpoints[i], self.timeout
                    )));
                }
            }
        }
        Err(StoreError::Unavailable(format!(
            "no etcd endpoint could be reached ({last})"
        )))
    }

    fn kv(client: &Client) -> etcd_client::KvClient {
        client.kv_client().max_decoding_message_size(MAX_MESSAGE)
    }

    async fn range_one(&self, key: &str) -> Result<(Option<KeyValue>, Revision), StoreError> {
        let resp = self
            .bounded(|c| async move { Self::kv(&c).get(key, None).await })
            .await?;
        Ok((
            resp.kvs().first().map(key_value),
            header_revision(resp.header()),
        ))
    }

    /// `op` on `key` if `compare` holds; otherwise the key is read back.
    async fn txn(&self, key: &str, compare: Compare, op: TxnOp) -> Result<TxnResponse, StoreError> {
        let txn = Txn::new()
            .when([compare])
            .and_then([op])
            .or_else([TxnOp::get(key, None)]);
        self.bounded(|c| {
            let txn = txn.clone();
            async move { Self::kv(&c).txn(txn).await }
        })
        .await
    }

    /// `op` on an existing `key`, if its mod revision is `expected` (when
    /// set): the transaction's response, or Conflict / NotFound.
    async fn guarded(
        &self,
        key: &str,
        expected: Option<Revision>,
        op: TxnOp,
    ) -> Result<TxnResponse, StoreError> {
        let compare = match expected {
            Some(rev) => Compare::mod_revision(key, CompareOp::Equal, rev),
            None => Compare::create_revision(key, CompareOp::Greater, 0),
        };
        let resp = self.txn(key, compare, op).await?;
        if resp.succeeded() {
            return Ok(resp);
        }
        let current = match first_op(&resp) {
            Some(TxnOpResponse::Get(g)) => g.kvs().first().map(key_value),
            _ => None,
        };
        Err(match (current, expected) {
            (Some(cur), Some(expected)) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                current: cur.mod_revision,
            },
            _ => StoreError::NotFound(key.to_owned()),
        })
    }
}

impl Store for EtcdStore {
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(Option<KeyValue>, Revision), StoreError>> {
        Box::pin(self.range_one(key))
    }

    fn list(&self, req: ListRequest) -> BoxFuture<'_, Result<ListResponse, StoreError>> {
        Box::pin(async move {
            let start = match &req.after {
                Some(after) => {
                    let mut k = after.as_bytes().to_vec();
                    k.push(0);
                    k
                }
                None => req.prefix.as_bytes().to_vec(),
            };
            let mut options = GetOptions::new().with_range(prefix_end(req.prefix.as_bytes()));
            if req.limit > 0 {
                options = options.with_limit(i64::try_from(req.limit).unwrap_or(i64::MAX));
            }
            if req.revision > 0 {
                options = options.with_revision(req.revision);
            }
            let resp = self
                .bounded(|c| {
                    let (start, options) = (start.clone(), options.clone());
                    async move { Self::kv(&c).get(start, Some(options)).await }
                })
                .await?;
            Ok(ListResponse {
                kvs: resp.kvs().iter().map(key_value).collect(),
                more: resp.more(),
                revision: if req.revision > 0 {
                    req.revision
                } else {
                    header_revision(resp.header())
                },
            })
        })
    }

    fn create(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue, StoreError>> {
        Box::pin(async move {
            super::check_size(&value)?;
            let value = Bytes::from(value);
            let resp = self
                .txn(
                    &key,
                    Compare::create_revision(key.as_str(), CompareOp::Equal, 0),
                    TxnOp::put(key.as_str(), value.to_vec(), None),
                )
                .await?;
            if !resp.succeeded() {
                return Err(StoreError::AlreadyExists(key));
            }
            let rev = header_revision(resp.header());
            Ok(KeyValue {
                key,
                value,
                create_revision: rev,
                mod_revision: rev,
                version: 1,
            })
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
            let value = Bytes::from(value);
            let put = TxnOp::put(
                key.as_str(),
                value.to_vec(),
                Some(PutOptions::new().with_prev_key()),
            );
            let resp = self.guarded(&key, expected, put).await?;
            let rev = header_revision(resp.header());
            let prev = match first_op(&resp) {
                Some(TxnOpResponse::Put(p)) => p.prev_key().map(key_value),
                _ => None,
            };
            let (create_revision, version) =
                prev.map_or((rev, 1), |p| (p.create_revision, p.version + 1));
            Ok(KeyValue {
                key,
                value,
                create_revision,
                mod_revision: rev,
                version,
            })
        })
    }

    fn delete(
        &self,
        key: String,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<KeyValue, StoreError>> {
        Box::pin(async move {
            let op = TxnOp::delete(key.as_str(), Some(DeleteOptions::new().with_prev_key()));
            let resp = self.guarded(&key, expected, op).await?;
            let rev = header_revision(resp.header());
            let mut kv = match first_op(&resp) {
                Some(TxnOpResponse::Delete(d)) => d.prev_kvs().first().map(key_value),
                _ => None,
            }
            .ok_or_else(|| StoreError::NotFound(key.clone()))?;
            kv.mod_revision = rev;
            Ok(kv)
        })
    }

    fn watch(
        &self,
        prefix: String,
        from: Revision,
    ) -> BoxFuture<'_, Result<WatchStream, StoreError>> {
        Box::pin(async move {
            let mut options = WatchOptions::new()
                .with_range(prefix_end(prefix.as_bytes()))
                .with_prev_key()
                .with_progress_notify();
            if from > 0 {
                options = options.with_start_revision(from);
            }
            let (watcher, stream) = self
                .bounded(|c| {
                    let (prefix, options) = (prefix.clone(), options.clone());
                    async move {
                        c.watch_client()
                            .max_decoding_message_size(MAX_MESSAGE)
                            .watch(prefix, Some(options))
                            .await
                    }
                })
                .await?;
            let (tx, rx) = tokio::sync::mpsc::channel(WATCH_BUFFER);
            tokio::spawn(pump(watcher, stream, tx));
            Ok(rx)
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            match self
                .bounded(|c| async move { Self::kv(&c).compact(revision, None).await })
                .await
            {
                // Compacting what already is compacted is fine.
                Ok(_) | Err(StoreError::Compacted { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
    }

    fn current_revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>> {
        Box::pin(async move {
            let options = GetOptions::new().with_count_only();
            let resp = self
                .bounded(|c| {
                    let options = options.clone();
                    async move { Self::kv(&c).get("/", Some(options)).await }
                })
                .await?;
            Ok(header_revision(resp.header()))
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.current_revision().await.map(drop) })
    }
}

/// A refusal in a watch response (`canceled`, with `compact_revision` when
/// the start revision is gone).
fn watch_refusal(r: &etcd_client::WatchResponse) -> Option<StoreError> {
    if !r.canceled() {
        return None;
    }
    if r.compact_revision() > 0 {
        return Some(StoreError::Compacted {
            requested: 0,
            oldest: r.compact_revision(),
        });
    }
    let reason = match r.cancel_reason() {
        "" => "canceled",
        reason => reason,
    };
    Some(StoreError::Unavailable(format!(
        "etcd canceled the watch: {reason}"
    )))
}

/// An etcd watch event as the store's.
fn event_of(e: &etcd_client::Event) -> Event {
    let kind = match e.event_type() {
        etcd_client::EventType::Delete => EventKind::Delete,
        etcd_client::EventType::Put => EventKind::Put,
    };
    let cur = e.kv().map(key_value).unwrap_or_else(|| KeyValue {
        key: String::new(),
        value: Bytes::new(),
        create_revision: 0,
        mod_revision: 0,
        version: 0,
    });
    let prev = e.prev_kv().map(key_value);
    let kv = match (kind, &prev) {
        // The deleted value, at the delete's revision.
        (EventKind::Delete, Some(p)) => KeyValue {
            mod_revision: cur.mod_revision,
            ..p.clone()
        },
        _ => cur,
    };
    Event { kind, kv, prev }
}

/// Forwards one etcd watch to its reader until either ends; the watch is
/// cancelled when the reader goes away (the watcher is dropped with it).
async fn pump(
    _watcher: etcd_client::Watcher,
    mut stream: etcd_client::WatchStream,
    tx: tokio::sync::mpsc::Sender<Result<WatchItem, StoreError>>,
) {
    loop {
        let resp = match stream.message().await {
            Ok(Some(r)) => r,
            Ok(None) => {
                let _ = tx
                    .send(Err(StoreError::Unavailable("etcd closed the watch".into())))
                    .await;
                return;
            }
            Err(e) => {
                let _ = tx.send(Err(client_error(e))).await;
                return;
            }
        };
        if let Some(err) = watch_refusal(&resp) {
            let _ = tx.send(Err(err)).await;
            return;
        }
        if resp.events().is_empty() {
            // A progress notification.
            let rev = header_revision(resp.header());
            if !resp.created() && rev > 0 && tx.send(Ok(WatchItem::Progress(rev))).await.is_err() {
                return;
            }
            continue;
        }
        for e in resp.events() {
            if tx.send(Ok(WatchItem::Event(event_of(e)))).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
    }

    #[test]
    fn etcd_errors_map_to_store_errors() {
        assert!(matches!(
            etcd_error(
                Some(tonic::Code::OutOfRange),
                "etcdserver: mvcc: required revision has been compacted"
            ),
            StoreError::Compacted { .. }
        ));
        assert!(matches!(
            etcd_error(
                Some(tonic::Code::OutOfRange),
                "etcdserver: mvcc: required revision is a future revision"
            ),
            StoreError::FutureRevision { .. }
        ));
        assert!(matches!(
            etcd_error(Some(tonic::Code::Unavailable), "etcdserver: no leader"),
            StoreError::Unavailable(_)
        ));
        assert!(matches!(
            etcd_error(
                Some(tonic::Code::InvalidArgument),
                "etcdserver: request is too large"
            ),
            StoreError::Internal(_)
        ));
    }

    #[tokio::test]
    async fn settings_are_checked_before_connecting() {
        let cfg = |endpoints: &[&str]| EtcdConfig {
            endpoints: endpoints.iter().map(|e| (*e).to_owned()).collect(),
            ..EtcdConfig::default()
        };
        assert!(matches!(
            EtcdStore::connect(&cfg(&[])).await,
            Err(EtcdConfigError::NoEndpoints)
        ));
        assert!(matches!(
            EtcdStore::connect(&cfg(&["127.0.0.1:2379"])).await,
            Err(EtcdConfigError::BadEndpoint(_))
        ));
        let half = EtcdConfig {
            cert_file: Some("/nonexistent/cert.pem".into()),
            ..cfg(&["https://127.0.0.1:2379"])
        };
        assert!(matches!(
            EtcdStore::connect(&half).await,
            Err(EtcdConfigError::Tls(_))
        ));
    }
}
