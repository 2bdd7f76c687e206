//! The store on an external etcd v3 cluster, through etcd's own JSON gateway
//! (`/v3/kv/range`, `/v3/kv/txn`, `/v3/watch`, …; served by etcd 3.4+ on its
//! client port). The gateway is the gRPC API with JSON bodies: bytes are
//! base64, 64-bit integers are strings, zero values are left out.
//!
//! Writes are etcd transactions guarded on `mod_revision` (or on
//! `create_revision == 0` for a create), exactly as kube-apiserver's etcd3
//! storage does, so revisions are etcd's and `resourceVersion`s stay valid
//! across apiserver restarts.

use std::{path::PathBuf, sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::STANDARD as B64};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use serde_json::{Value, json};

use super::{
    BoxFuture, Event, EventKind, KeyValue, ListRequest, ListResponse, Revision, Store, StoreError,
    WatchItem, WatchStream,
};

/// Where the etcd cluster is and how to reach it.
#[derive(Clone, Debug, Default)]
pub struct EtcdConfig {
    /// Client URLs (`http://127.0.0.1:2379`, `https://10.0.0.1:2379`); the
    /// next one is tried when one does not answer.
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
}

type HttpsClient = Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    Full<Bytes>,
>;

/// The etcd-backed store.
#[derive(Clone)]
pub struct EtcdStore {
    client: HttpsClient,
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

fn tls_config(cfg: &EtcdConfig) -> Result<rustls::ClientConfig, EtcdConfigError> {
    let tls = |e: &dyn std::fmt::Display| EtcdConfigError::Tls(e.to_string());
    let mut roots = rustls::RootCertStore::empty();
    if let Some(ca) = &cfg.ca_file {
        let pem = read(ca)?;
        for cert in rustls_pemfile_certs(&pem).map_err(|e| tls(&e))? {
            roots.add(cert).map_err(|e| tls(&e))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls(&e))?
        .with_root_certificates(roots);
    match (&cfg.cert_file, &cfg.key_file) {
        (Some(c), Some(k)) => {
            let certs = rustls_pemfile_certs(&read(c)?).map_err(|e| tls(&e))?;
            let key = <rustls::pki_types::PrivateKeyDer<'static> as rustls::pki_types::pem::PemObject>::from_pem_slice(&read(k)?)
                .map_err(|e| tls(&e))?;
            builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls(&e))
        }
        (None, None) => Ok(builder.with_no_client_auth()),
        _ => Err(EtcdConfigError::Tls(
            "give both the client certificate and its key".into(),
        )),
    }
}

fn rustls_pemfile_certs(
    pem: &[u8],
) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, rustls::pki_types::pem::Error> {
    use rustls::pki_types::pem::PemObject as _;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem).collect()
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

fn int(v: &Value, k: &str) -> i64 {
    match v.get(k) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn bytes_of(v: &Value, k: &str) -> Vec<u8> {
    v.get(k)
        .and_then(Value::as_str)
        .and_then(|s| B64.decode(s).ok())
        .unwrap_or_default()
}

fn key_value(v: &Value) -> KeyValue {
    KeyValue {
        key: String::from_utf8_lossy(&bytes_of(v, "key")).into_owned(),
        value: bytes_of(v, "value").into(),
        create_revision: int(v, "create_revision"),
        mod_revision: int(v, "mod_revision"),
        version: int(v, "version"),
    }
}

fn header_revision(resp: &Value) -> Revision {
    resp.get("header").map_or(0, |h| int(h, "revision"))
}

/// An etcd error body (`{"error", "code", "message"}`) as a store error.
fn etcd_error(status: u16, body: &Value) -> StoreError {
    let msg = body
        .get("message")
        .or_else(|| body.get("error"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
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
    if status >= 500 || msg.contains("no leader") || msg.contains("timed out") {
        return StoreError::Unavailable(format!("etcd: {msg}"));
    }
    StoreError::Internal(format!("etcd answered {status}: {msg}"))
}

impl EtcdStore {
    pub fn new(cfg: &EtcdConfig) -> Result<Self, EtcdConfigError> {
        if cfg.endpoints.is_empty() {
            return Err(EtcdConfigError::NoEndpoints);
        }
        for e in &cfg.endpoints {
            if !(e.starts_with("http://") || e.starts_with("https://")) {
                return Err(EtcdConfigError::BadEndpoint(e.clone()));
            }
        }
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls_config(cfg)?)
            .https_or_http()
            .enable_http1()
            .build();
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            client,
            endpoints: Arc::new(
                cfg.endpoints
                    .iter()
                    .map(|e| e.trim_end_matches('/').to_owned())
                    .collect(),
            ),
            timeout: if cfg.timeout.is_zero() {
                Duration::from_secs(10)
            } else {
                cfg.timeout
            },
        })
    }

    fn request(&self, endpoint: &str, path: &str, body: &Value) -> hyper::Request<Full<Bytes>> {
        hyper::Request::post(format!("{endpoint}{path}"))
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(
                serde_json::to_vec(body).expect("json"),
            )))
            .expect("valid request")
    }

    /// One call to the gateway, failing over between endpoints on
    /// connection errors.
    async fn call(&self, path: &str, body: Value) -> Result<Value, StoreError> {
        let mut last = String::new();
        for endpoint in self.endpoints.iter() {
            let req = self.request(endpoint, path, &body);
            let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => {
                    last = format!("{endpoint}: {e}");
                    continue;
                }
                Err(_) => {
                    last = format!("{endpoint}: no answer in {:?}", self.timeout);
                    continue;
                }
            };
            let status = resp.status().as_u16();
            let bytes = tokio::time::timeout(self.timeout, resp.into_body().collect())
                .await
                .map_err(|_| StoreError::Unavailable(format!("{endpoint}: body timed out")))?
                .map_err(|e| StoreError::Unavailable(format!("{endpoint}: {e}")))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
                StoreError::Internal(format!("etcd {endpoint}{path}: not JSON: {e}"))
            })?;
            if status != 200 {
                return Err(etcd_error(status, &v));
            }
            return Ok(v);
        }
        Err(StoreError::Unavailable(format!(
            "no etcd endpoint answered ({last})"
        )))
    }

    async fn range_one(&self, key: &str) -> Result<(Option<KeyValue>, Revision), StoreError> {
        let resp = self
            .call("/v3/kv/range", json!({"key": B64.encode(key)}))
            .await?;
        let kv = resp
            .get("kvs")
            .and_then(Value::as_array)
            .and_then(|a| a.first())
            .map(key_value);
        Ok((kv, header_revision(&resp)))
    }

    /// A transaction: `compare` must hold for `success`; `failure` reads the key.
    async fn txn(
        &self,
        key: &str,
        compare: Value,
        success: Value,
    ) -> Result<(bool, Value), StoreError> {
        let resp = self
            .call(
                "/v3/kv/txn",
                json!({
                    "compare": [compare],
                    "success": [success],
                    "failure": [{"request_range": {"key": B64.encode(key)}}],
                }),
            )
            .await?;
        Ok((
            resp.get("succeeded").and_then(Value::as_bool) == Some(true),
            resp,
        ))
    }

    /// `op` on an existing `key`, if its mod revision is `expected` (when
    /// set): the transaction's response, or Conflict / NotFound.
    async fn guarded(
        &self,
        key: &str,
        expected: Option<Revision>,
        op: Value,
    ) -> Result<Value, StoreError> {
        let k = B64.encode(key);
        let compare = match expected {
            Some(rev) => {
                json!({"key": k, "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()})
            }
            None => {
                json!({"key": k, "target": "CREATE", "result": "GREATER", "create_revision": "0"})
            }
        };
        let (ok, resp) = self.txn(key, compare, op).await?;
        if ok {
            return Ok(resp);
        }
        Err(match (Self::failure_kv(&resp), expected) {
            (Some(cur), Some(expected)) => StoreError::Conflict {
                key: key.to_owned(),
                expected,
                current: cur.mod_revision,
            },
            _ => StoreError::NotFound(key.to_owned()),
        })
    }

    fn failure_kv(resp: &Value) -> Option<KeyValue> {
        resp.pointer("/responses/0/response_range/kvs/0")
            .map(key_value)
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
            let mut body = json!({
                "key": B64.encode(&start),
                "range_end": B64.encode(prefix_end(req.prefix.as_bytes())),
            });
            if req.limit > 0 {
                body["limit"] = json!(req.limit.to_string());
            }
            if req.revision > 0 {
                body["revision"] = json!(req.revision.to_string());
            }
            let resp = self.call("/v3/kv/range", body).await?;
            let kvs: Vec<KeyValue> = resp
                .get("kvs")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(key_value).collect())
                .unwrap_or_default();
            Ok(ListResponse {
                kvs,
                more: resp.get("more").and_then(Value::as_bool) == Some(true),
                revision: if req.revision > 0 {
                    req.revision
                } else {
                    header_revision(&resp)
                },
            })
        })
    }

    fn create(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue, StoreError>> {
        Box::pin(async move {
            super::check_size(&value)?;
            let k = B64.encode(&key);
            let (ok, resp) = self
                .txn(
                    &key,
                    json!({"key": k, "target": "CREATE", "result": "EQUAL", "create_revision": "0"}),
                    json!({"request_put": {"key": k, "value": B64.encode(&value)}}),
                )
                .await?;
            if !ok {
                return Err(StoreError::AlreadyExists(key));
            }
            let rev = header_revision(&resp);
            Ok(KeyValue {
                key,
                value: value.into(),
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
            let k = B64.encode(&key);
            let resp = self
                .guarded(
                    &key,
                    expected,
                    json!({"request_put": {"key": k, "value": B64.encode(&value), "prev_kv": true}}),
                )
                .await?;
            let rev = header_revision(&resp);
            let prev = resp
                .pointer("/responses/0/response_put/prev_kv")
                .map(key_value);
            let (create_revision, version) =
                prev.map_or((rev, 1), |p| (p.create_revision, p.version + 1));
            Ok(KeyValue {
                key,
                value: value.into(),
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
            let k = B64.encode(&key);
            let resp = self
                .guarded(
                    &key,
                    expected,
                    json!({"request_delete_range": {"key": k, "prev_kv": true}}),
                )
                .await?;
            let rev = header_revision(&resp);
            let mut kv = resp
                .pointer("/responses/0/response_delete_range/prev_kvs/0")
                .map(key_value)
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
            let mut create = json!({
                "key": B64.encode(&prefix),
                "range_end": B64.encode(prefix_end(prefix.as_bytes())),
                "prev_kv": true,
                "progress_notify": true,
            });
            if from > 0 {
                create["start_revision"] = json!(from.to_string());
            }
            let body = json!({"create_request": create});
            let mut last = String::new();
            for endpoint in self.endpoints.iter() {
                let req = self.request(endpoint, "/v3/watch", &body);
                let resp = match tokio::time::timeout(self.timeout, self.client.request(req)).await
                {
                    Ok(Ok(r)) if r.status() == 200 => r,
                    Ok(Ok(r)) => {
                        last = format!("{endpoint}: status {}", r.status());
                        continue;
                    }
                    Ok(Err(e)) => {
                        last = format!("{endpoint}: {e}");
                        continue;
                    }
                    Err(_) => {
                        last = format!("{endpoint}: no answer");
                        continue;
                    }
                };
                let mut stream = WatchDecoder::new(resp.into_body());
                // The first message says whether the watch was created or
                // refused (a compacted start revision).
                match stream.next().await {
                    Some(Ok(first)) => {
                        if let Some(err) = watch_refusal(&first) {
                            return Err(err);
                        }
                        let (tx, rx) = tokio::sync::mpsc::channel(1024);
                        tokio::spawn(pump(stream, first, tx));
                        return Ok(rx);
                    }
                    Some(Err(e)) => return Err(e),
                    None => last = format!("{endpoint}: watch closed at once"),
                }
            }
            Err(StoreError::Unavailable(format!(
                "no etcd endpoint accepted the watch ({last})"
            )))
        })
    }

    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            match self
                .call(
                    "/v3/kv/compaction",
                    json!({"revision": revision.to_string()}),
                )
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
            let resp = self
                .call(
                    "/v3/kv/range",
                    json!({"key": B64.encode("/"), "count_only": true}),
                )
                .await?;
            Ok(header_revision(&resp))
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move { self.current_revision().await.map(drop) })
    }
}

/// A refusal in a watch response (`canceled`, with `compact_revision` when
/// the start revision is gone).
fn watch_refusal(msg: &Value) -> Option<StoreError> {
    let r = msg.get("result").unwrap_or(msg);
    if let Some(e) = msg.get("error") {
        return Some(etcd_error(500, e));
    }
    if r.get("canceled").and_then(Value::as_bool) == Some(true) {
        let compact = int(r, "compact_revision");
        if compact > 0 {
            return Some(StoreError::Compacted {
                requested: 0,
                oldest: compact,
            });
        }
        let reason = r
            .get("cancel_reason")
            .and_then(Value::as_str)
            .unwrap_or("canceled");
        return Some(StoreError::Unavailable(format!(
            "etcd canceled the watch: {reason}"
        )));
    }
    None
}

/// Splits the gateway's stream of JSON messages.
struct WatchDecoder {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl WatchDecoder {
    fn new(body: hyper::body::Incoming) -> Self {
        Self {
            body,
            buf: Vec::new(),
        }
    }

    async fn next(&mut self) -> Option<Result<Value, StoreError>> {
        loop {
            // Skip separators, then try to read one complete value.
            let start = self
                .buf
                .iter()
                .position(|b| !b.is_ascii_whitespace())
                .unwrap_or(self.buf.len());
            self.buf.drain(..start);
            if !self.buf.is_empty() {
                let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
                match it.next() {
                    Some(Ok(v)) => {
                        let used = it.byte_offset();
                        self.buf.drain(..used);
                        return Some(Ok(v));
                    }
                    Some(Err(e)) if !e.is_eof() => {
                        return Some(Err(StoreError::Internal(format!(
                            "etcd watch: bad JSON: {e}"
                        ))));
                    }
                    _ => {}
                }
            }
            match self.body.frame().await {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
                Some(Err(e)) => {
                    return Some(Err(StoreError::Unavailable(format!("etcd watch: {e}"))));
                }
                None => return None,
            }
        }
    }
}

async fn pump(
    mut stream: WatchDecoder,
    first: Value,
    tx: tokio::sync::mpsc::Sender<Result<WatchItem, StoreError>>,
) {
    let mut msg = Some(Ok(first));
    loop {
        let m = match msg.take() {
            Some(m) => m,
            None => match stream.next().await {
                Some(m) => m,
                None => {
                    let _ = tx
                        .send(Err(StoreError::Unavailable("etcd closed the watch".into())))
                        .await;
                    return;
                }
            },
        };
        let v = match m {
            Ok(v) => v,
            Err(e) => {
                let _ = tx.send(Err(e)).await;
                return;
            }
        };
        if let Some(err) = watch_refusal(&v) {
            let _ = tx.send(Err(err)).await;
            return;
        }
        let r = v.get("result").unwrap_or(&v);
        let events = r.get("events").and_then(Value::as_array);
        match events {
            Some(events) if !events.is_empty() => {
                for e in events {
                    let kind = if e.get("type").and_then(Value::as_str) == Some("DELETE") {
                        EventKind::Delete
                    } else {
                        EventKind::Put
                    };
                    let cur = e
                        .get("kv")
                        .map(key_value)
                        .unwrap_or_else(|| key_value(&Value::Null));
                    let prev = e.get("prev_kv").map(key_value);
                    let kv = match (kind, &prev) {
                        // The deleted value, at the delete's revision.
                        (EventKind::Delete, Some(p)) => KeyValue {
                            mod_revision: cur.mod_revision,
                            ..p.clone()
                        },
                        _ => cur,
                    };
                    if tx
                        .send(Ok(WatchItem::Event(Event { kind, kv, prev })))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            // A progress notification (no events, not the creation).
            _ if r.get("created").and_then(Value::as_bool) != Some(true) => {
                let rev = header_revision(r);
                if rev > 0 && tx.send(Ok(WatchItem::Progress(rev))).await.is_err() {
                    return;
                }
            }
            _ => {}
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
    fn gateway_values_decode() {
        let kv = key_value(&json!({"key": B64.encode("/a"), "value": B64.encode("v"),
            "create_revision": "3", "mod_revision": "7", "version": "2"}));
        assert_eq!(
            kv,
            KeyValue {
                key: "/a".into(),
                value: Bytes::from_static(b"v"),
                create_revision: 3,
                mod_revision: 7,
                version: 2
            }
        );
        assert!(matches!(
            etcd_error(
                400,
                &json!({"code": 11, "message": "etcdserver: mvcc: required revision has been compacted"})
            ),
            StoreError::Compacted { .. }
        ));
        assert!(matches!(
            watch_refusal(&json!({"result": {"canceled": true, "compact_revision": "9"}})),
            Some(StoreError::Compacted { oldest: 9, .. })
        ));
        assert!(watch_refusal(&json!({"result": {"created": true}})).is_none());
    }
}
