//! The apiserver's storage: a revisioned key-value store with watches,
//! behind one trait with two backends: the embedded Raft store
//! ([`raft::RaftStore`], openraft + redb) and an external etcd v3 cluster
//! (`etcd::EtcdStore`). Both pass the same conformance suite
//! ([`conformance`], behind the `conformance` feature; run on each backend
//! by `tests/raft_store.rs` and `tests/etcd_store.rs`). The crate stands
//! alone: nothing here knows of the apiserver above it.

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod etcd;
pub mod files;
pub mod mvcc;
pub mod raft;

/// Serde for stored values (`Vec<u8>`) in the JSON the Raft log, peers
/// and snapshots use: a UTF-8 value (every Kubernetes object) is written
/// as a JSON string, anything else as `{"base64": "..."}`. Reading also
/// accepts the older array-of-numbers form, which took four times the
/// bytes.
pub mod value_serde {
    use base64::Engine as _;
    use serde::{Deserializer, Serializer, de};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(v) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap as _;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(v),
                )?;
                m.end()
            }
        }
    }

    struct Visitor;

    impl<'de> de::Visitor<'de> for Visitor {
        type Value = Vec<u8>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a string, {\"base64\": ...} or an array of bytes")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Vec<u8>, E> {
            Ok(v.as_bytes().to_vec())
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Vec<u8>, E> {
            Ok(v.into_bytes())
        }

        fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
            Ok(v.to_vec())
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0));
            while let Some(b) = seq.next_element::<u8>()? {
                out.push(b);
            }
            Ok(out)
        }

        fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Vec<u8>, A::Error> {
            let mut out = None;
            while let Some(k) = map.next_key::<String>()? {
                let v: String = map.next_value()?;
                if k == "base64" {
                    out = Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(v)
                            .map_err(de::Error::custom)?,
                    );
                }
            }
            out.ok_or_else(|| de::Error::missing_field("base64"))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: From<Vec<u8>>>(d: D) -> Result<T, D::Error> {
        d.deserialize_any(Visitor).map(T::from)
    }

    #[cfg(test)]
    mod tests {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct V(#[serde(with = "super")] Vec<u8>);

        #[test]
        fn text_is_a_string_binary_is_base64_and_old_arrays_still_read() {
            assert_eq!(
                serde_json::to_string(&V(b"{\"a\":1}".to_vec())).unwrap(),
                r#""{\"a\":1}""#
            );
            let bin = V(vec![0xff, 0, 1]);
            let s = serde_json::to_string(&bin).unwrap();
            assert_eq!(s, r#"{"base64":"/wAB"}"#);
            assert_eq!(serde_json::from_str::<V>(&s).unwrap(), bin);
            assert_eq!(
                serde_json::from_str::<V>("[104,105]").unwrap(),
                V(b"hi".to_vec())
            );
            assert_eq!(
                serde_json::from_str::<V>(r#""hi""#).unwrap(),
                V(b"hi".to_vec())
            );
        }
    }
}

use std::{future::Future, pin::Pin};

use serde::{Deserialize, Serialize};

/// etcd's revision: one counter for the whole key space, bumped by every
/// write. The apiserver exposes it as `resourceVersion`.
pub type Revision = i64;

/// A boxed future, so that the trait can be used as `dyn Store`.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A key's value at one revision. The value is shared, not copied,
/// between the key space, its history, the watchers and the snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    pub key: String,
    #[serde(with = "value_serde")]
    pub value: bytes::Bytes,
    pub create_revision: Revision,
    pub mod_revision: Revision,
    /// Writes to this key since it was created (1 after the create).
    pub version: i64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventKind {
    Put,
    Delete,
}

/// A change, as watchers see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub kind: EventKind,
    /// The new value; for a delete, the deleted value with `mod_revision`
    /// set to the revision of the delete.
    pub kv: KeyValue,
    /// The value before this change, if there was one.
    pub prev: Option<KeyValue>,
}

/// What a watch stream carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WatchItem {
    Event(Event),
    /// Every event up to this revision has been delivered (for bookmarks).
    Progress(Revision),
}

/// A watch: items in revision order; ends with an `Err` when the watch
/// cannot go on (compacted history, a watcher that fell too far behind, the
/// store shutting down).
pub type WatchStream = tokio::sync::mpsc::Receiver<Result<WatchItem, StoreError>>;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListRequest {
    pub prefix: String,
    /// Start after this key (exclusive); for paging.
    pub after: Option<String>,
    /// At most this many (0 = no limit).
    pub limit: usize,
    /// Read at this revision (0 = the latest, linearizable).
    pub revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListResponse {
    pub kvs: Vec<KeyValue>,
    pub more: bool,
    /// The revision the list was served at.
    pub revision: Revision,
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The store holds its quota of bytes (etcd's "database space
    /// exceeded"): writes that add bytes are refused until some are freed.
    #[error(
        "etcdserver: mvcc: database space exceeded: the store holds {used} bytes and its quota is \
         {quota} (delete objects or raise --quota-backend-bytes)"
    )]
    NoSpace { used: usize, quota: usize },
    /// A value over [`MAX_VALUE`] (etcd's `--max-request-bytes`).
    #[error("etcdserver: request is too large: {size} bytes, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("key {0} already exists")]
    AlreadyExists(String),
    #[error("key {0} not found")]
    NotFound(String),
    #[error("key {key} was modified at revision {current}, not {expected}")]
    Conflict {
        key: String,
        expected: Revision,
        current: Revision,
    },
    #[error("revision {requested} has been compacted (oldest available is {oldest})")]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
    #[error("revision {requested} is newer than the store's {current}")]
    FutureRevision {
        requested: Revision,
        current: Revision,
    },
    #[error("the watch fell too far behind and was closed")]
    WatchLagged,
    /// No quorum, no leader or the leader unreachable: the write or the
    /// linearizable read may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("store failure: {0}")]
    Internal(String),
}

impl From<mvcc::MvccError> for StoreError {
    fn from(e: mvcc::MvccError) -> Self {
        match e {
            mvcc::MvccError::Compacted { requested, oldest } => {
                Self::Compacted { requested, oldest }
            }
            mvcc::MvccError::FutureRevision { requested, current } => {
                Self::FutureRevision { requested, current }
            }
        }
    }
}

/// The largest value a key may hold: etcd's default request limit (1.5 MiB),
/// on every backend.
pub const MAX_VALUE: usize = 3 << 19;

/// Returns once something under `prefix` changes after revision `after`
/// (a second later if the watch cannot be had or ends, so that a caller
/// re-reading in a loop never spins). For the apiserver's own followers
/// of a few objects (CRDs, webhook configurations, APIServices), which
/// re-read everything on any change.
pub async fn next_change(store: &dyn Store, prefix: &str, after: Revision) {
    let pause = || tokio::time::sleep(std::time::Duration::from_secs(1));
    if after <= 0 {
        return pause().await;
    }
    let Ok(mut rx) = store.watch(prefix.to_owned(), after + 1).await else {
        return pause().await;
    };
    loop {
        match rx.recv().await {
            Some(Ok(WatchItem::Progress(_))) => {}
            Some(Ok(WatchItem::Event(_))) => return,
            Some(Err(_)) | None => return pause().await,
        }
    }
}

/// Refuses a value over [`MAX_VALUE`].
pub fn check_size(value: &[u8]) -> Result<(), StoreError> {
    if value.len() > MAX_VALUE {
        return Err(StoreError::TooLarge {
            size: value.len(),
            limit: MAX_VALUE,
        });
    }
    Ok(())
}

/// The store the apiserver runs on. Every read is linearizable unless it
/// names a revision; every write is acknowledged only once durable on a
/// quorum.
pub trait Store: Send + Sync + 'static {
    /// One key, at the latest revision. Returns the value and the revision
    /// the read was served at.
    fn get<'a>(
        &'a self,
        key: &'a str,
    ) -> BoxFuture<'a, Result<(Option<KeyValue>, Revision), StoreError>>;

    fn list(&self, req: ListRequest) -> BoxFuture<'_, Result<ListResponse, StoreError>>;

    /// Creates `key`; [`StoreError::AlreadyExists`] if it exists.
    fn create(&self, key: String, value: Vec<u8>) -> BoxFuture<'_, Result<KeyValue, StoreError>>;

    /// Replaces `key`'s value, if its mod revision is `expected` (when set).
    fn update(
        &self,
        key: String,
        value: Vec<u8>,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<KeyValue, StoreError>>;

    /// Deletes `key`, if its mod revision is `expected` (when set). Returns
    /// the deleted value with `mod_revision` set to the delete's revision.
    fn delete(
        &self,
        key: String,
        expected: Option<Revision>,
    ) -> BoxFuture<'_, Result<KeyValue, StoreError>>;

    /// Events under `prefix` from revision `from` on (0 = from now).
    fn watch(
        &self,
        prefix: String,
        from: Revision,
    ) -> BoxFuture<'_, Result<WatchStream, StoreError>>;

    /// Drops history at and below `revision`.
    fn compact(&self, revision: Revision) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The latest revision (linearizable).
    fn current_revision(&self) -> BoxFuture<'_, Result<Revision, StoreError>>;

    /// Human-readable health for `/readyz`: `Ok` when reads and writes can
    /// be served.
    fn health(&self) -> BoxFuture<'_, Result<(), StoreError>>;
}
