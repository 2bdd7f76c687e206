//! The one informer of Rudder: every part that follows the API (the service
//! proxy, cluster DNS, the controllers' cache, the garbage collector, the
//! kubelet and the network daemon) reads a kube-rs watch stream through
//! [`events`] and keeps what it has seen in a [`Reflector`].
//!
//! The reflector is pure: [`Reflector::apply`] takes one watch event and
//! returns the [`Change`]s it makes, so the relist protocol is written and
//! tested once here. Its rules follow client-go's reflector and DeltaFIFO
//! `Replace`:
//! - during a relist (`Init`, `InitApply`…, `InitDone`) the old objects stay
//!   visible and nothing changes until the list is complete; a relist that
//!   never completes changes nothing;
//! - at `InitDone` the new list replaces the old one at once, reported as
//!   the difference: an `Upsert` for each object that is new or whose
//!   `resourceVersion` moved, a `Remove` for each object the list no longer
//!   holds (client-go's `DeletedFinalStateUnknown`);
//! - an `Apply` whose `resourceVersion` equals the stored one changes
//!   nothing (a watch resumed after a relist may replay it);
//! - a `Delete` of an object never seen is still reported, with the
//!   event's object, so a consumer can clean up state it built elsewhere.
//!
//! Secondary indexes ([`Reflector::with_index`]) are kept in step with the
//! store, as client-go's `Indexer` does, so "the EndpointSlices of this
//! Service" is a lookup rather than a scan.
//!
//! Why not kube-rs's own `reflector::Store`: it has neither secondary
//! indexes nor a change set per event, and its writer applies a relist
//! without saying what went away, which every consumer here needs.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    sync::{Arc, PoisonError, RwLock},
};

use futures_util::{Stream, StreamExt};
pub use kube::runtime::watcher::{self, Event};
use kube::{Resource, api::ObjectMeta};

/// An object's identity within its kind: namespace (empty for cluster-scoped
/// kinds) and name.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    pub namespace: String,
    pub name: String,
}

impl ObjectKey {
    /// The key of an object's metadata.
    pub fn of(meta: &ObjectMeta) -> Self {
        Self {
            namespace: meta.namespace.clone().unwrap_or_default(),
            name: meta.name.clone().unwrap_or_default(),
        }
    }

    /// A key from its parts.
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() {
            f.write_str(&self.name)
        } else {
            write!(f, "{}/{}", self.namespace, self.name)
        }
    }
}

/// One change a watch event made to the reflector's store.
#[derive(Debug)]
pub enum Change<T> {
    /// An object appeared or moved to a new version (`old` is the version it
    /// replaced, if any).
    Upsert {
        key: ObjectKey,
        old: Option<Arc<T>>,
        new: Arc<T>,
    },
    /// An object went away: deleted, or absent from a relist (`old` is the
    /// last version seen, or the deleted object's final state).
    Remove { key: ObjectKey, old: Arc<T> },
}

impl<T> Change<T> {
    /// The object's key.
    pub fn key(&self) -> &ObjectKey {
        match self {
            Change::Upsert { key, .. } | Change::Remove { key, .. } => key,
        }
    }

    /// The object after the change, if it still exists.
    pub fn after(&self) -> Option<&Arc<T>> {
        match self {
            Change::Upsert { new, .. } => Some(new),
            Change::Remove { .. } => None,
        }
    }

    /// The object before the change, if it existed.
    pub fn before(&self) -> Option<&Arc<T>> {
        match self {
            Change::Upsert { old, .. } => old.as_ref(),
            Change::Remove { old, .. } => Some(old),
        }
    }
}

/// What one event did: its changes, and whether it completed a relist.
#[derive(Debug)]
pub struct Delta<T> {
    pub changes: Vec<Change<T>>,
    /// The event was `InitDone`: the store now holds exactly the list.
    pub relisted: bool,
}

impl<T> Default for Delta<T> {
    fn default() -> Self {
        Self {
            changes: Vec::new(),
            relisted: false,
        }
    }
}

/// The values an object is indexed under.
pub type IndexFn<T> = fn(&T) -> Vec<String>;

struct Index<T> {
    name: &'static str,
    values_of: IndexFn<T>,
    keys: BTreeMap<String, BTreeSet<ObjectKey>>,
}

/// The objects of one kind the watch has delivered, with secondary indexes.
pub struct Reflector<T> {
    objects: BTreeMap<ObjectKey, Arc<T>>,
    relist: Option<BTreeMap<ObjectKey, Arc<T>>>,
    indexes: Vec<Index<T>>,
    synced: bool,
}

impl<T> Default for Reflector<T> {
    fn default() -> Self {
        Self {
            objects: BTreeMap::new(),
            relist: None,
            indexes: Vec::new(),
            synced: false,
        }
    }
}

impl<T> fmt::Debug for Reflector<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reflector")
            .field("objects", &self.objects.len())
            .field("relisting", &self.relist.is_some())
            .field("synced", &self.synced)
            .finish()
    }
}

impl<T: Resource> Reflector<T> {
    /// An empty reflector.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a secondary index: `values_of` names the values an object is
    /// found under by [`Reflector::by_index`].
    pub fn with_index(mut self, name: &'static str, values_of: IndexFn<T>) -> Self {
        let mut index = Index {
            name,
            values_of,
            keys: BTreeMap::new(),
        };
        for (k, o) in &self.objects {
            for v in (index.values_of)(o) {
                index.keys.entry(v).or_default().insert(k.clone());
            }
        }
        self.indexes.push(index);
        self
    }

    /// Whether a list has completed at least once.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// The object under a key.
    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<T>> {
        self.objects.get(key)
    }

    /// Every object, by key.
    pub fn objects(&self) -> &BTreeMap<ObjectKey, Arc<T>> {
        &self.objects
    }

    /// How many objects the store holds.
    pub fn len(&self) -> usize {
        self.objects.len()
    }

    /// Whether the store is empty.
    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// The objects an index holds under a value (none for an unknown index).
    pub fn by_index<'a>(
        &'a self,
        index: &str,
        value: &str,
    ) -> impl Iterator<Item = (&'a ObjectKey, &'a Arc<T>)> + use<'a, T> {
        self.indexes
            .iter()
            .find(|i| i.name == index)
            .and_then(|i| i.keys.get(value))
            .into_iter()
            .flatten()
            .filter_map(|k| self.objects.get_key_value(k))
    }

    /// Applies one watch event and says what it changed.
    pub fn apply(&mut self, ev: Event<T>) -> Delta<T> {
        let mut delta = Delta::default();
        match ev {
            Event::Init => self.relist = Some(BTreeMap::new()),
            Event::InitApply(o) => {
                let o = Arc::new(o);
                self.relist
                    .get_or_insert_default()
                    .insert(ObjectKey::of(o.meta()), o);
            }
            Event::InitDone => {
                let fresh = self.relist.take().unwrap_or_default();
                self.replace(fresh, &mut delta.changes);
                self.synced = true;
                delta.relisted = true;
            }
            Event::Apply(o) => {
                let o = Arc::new(o);
                let key = ObjectKey::of(o.meta());
                match &mut self.relist {
                    // Not sent by kube-rs mid-list; kept for the list's end.
                    Some(fresh) => {
                        fresh.insert(key, o);
                    }
                    None => self.upsert(key, o, &mut delta.changes),
                }
            }
            Event::Delete(o) => {
                let key = ObjectKey::of(o.meta());
                if let Some(fresh) = &mut self.relist {
                    fresh.remove(&key);
                }
                let old = self.remove(&key).unwrap_or_else(|| Arc::new(o));
                delta.changes.push(Change::Remove { key, old });
            }
        }
        delta
    }

    fn upsert(&mut self, key: ObjectKey, new: Arc<T>, changes: &mut Vec<Change<T>>) {
        if let Some(old) = self.objects.get(&key)
            && same_version(old.meta(), new.meta())
        {
            return;
        }
        let old = self.remove(&key);
        self.index(&key, &new);
        self.objects.insert(key.clone(), new.clone());
        changes.push(Change::Upsert { key, old, new });
    }

    fn replace(&mut self, fresh: BTreeMap<ObjectKey, Arc<T>>, changes: &mut Vec<Change<T>>) {
        let gone: Vec<ObjectKey> = self
            .objects
            .keys()
            .filter(|k| !fresh.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            if let Some(old) = self.remove(&key) {
                changes.push(Change::Remove { key, old });
            }
        }
        for (key, new) in fresh {
            self.upsert(key, new, changes);
        }
    }

    fn remove(&mut self, key: &ObjectKey) -> Option<Arc<T>> {
        let old = self.objects.remove(key)?;
        for index in &mut self.indexes {
            for v in (index.values_of)(&old) {
                if let Some(set) = index.keys.get_mut(&v) {
                    set.remove(key);
                    if set.is_empty() {
                        index.keys.remove(&v);
                    }
                }
            }
        }
        Some(old)
    }

    fn index(&mut self, key: &ObjectKey, o: &T) {
        for index in &mut self.indexes {
            for v in (index.values_of)(o) {
                index.keys.entry(v).or_default().insert(key.clone());
            }
        }
    }
}

/// A reflector shared by the task that feeds it ([`Shared::follow`]) and
/// readers in other tasks ([`Shared::read`], [`Shared::synced`]).
pub struct Shared<T> {
    reflector: Arc<RwLock<Reflector<T>>>,
    synced: Arc<tokio::sync::watch::Sender<bool>>,
}

impl<T> Clone for Shared<T> {
    fn clone(&self) -> Self {
        Self {
            reflector: Arc::clone(&self.reflector),
            synced: Arc::clone(&self.synced),
        }
    }
}

impl<T> fmt::Debug for Shared<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("synced", &*self.synced.borrow())
            .finish()
    }
}

impl<T: Resource> Shared<T> {
    /// Shares a reflector (with whatever indexes it was given).
    pub fn new(reflector: Reflector<T>) -> Self {
        let synced = reflector.synced();
        Self {
            reflector: Arc::new(RwLock::new(reflector)),
            synced: Arc::new(tokio::sync::watch::channel(synced).0),
        }
    }

    /// Reads the reflector (a short read: the feeding task waits).
    pub fn read<R>(&self, f: impl FnOnce(&Reflector<T>) -> R) -> R {
        f(&self
            .reflector
            .read()
            .unwrap_or_else(PoisonError::into_inner))
    }

    /// Applies one watch event.
    pub fn apply(&self, ev: Event<T>) -> Delta<T> {
        let delta = self
            .reflector
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .apply(ev);
        if delta.relisted {
            self.synced.send_replace(true);
        }
        delta
    }

    /// Returns once a list has completed.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        // The sender lives in `self`, so the wait cannot fail.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Applies the events of a stream until it ends.
    pub async fn follow(&self, events: impl Stream<Item = Event<T>>) {
        let mut events = std::pin::pin!(events);
        while let Some(ev) = events.next().await {
            self.apply(ev);
        }
    }
}

/// Whether two versions of an object are the same one: same uid and a
/// non-empty, equal `resourceVersion`.
fn same_version(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    a.uid == b.uid && a.resource_version.is_some() && a.resource_version == b.resource_version
}

/// The watch events of `api` under `config`, for as long as the caller
/// reads: errors are logged (under `what`) and retried with kube-rs's
/// default backoff (exponential from 0.8 s up to 30 s, reset once
/// events flow again), and a watch that expired (410 Gone)
/// relists, so the stream never ends while the API can be reached.
///
/// Objects arrive without `metadata.managedFields` ([`trim`]).
pub fn events<K>(
    api: kube::Api<K>,
    config: watcher::Config,
    what: &'static str,
) -> impl Stream<Item = Event<K>> + Send + 'static
where
    K: Resource + Clone + fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
{
    use kube::runtime::WatchStreamExt;
    watcher::watcher(api, config)
        .default_backoff()
        .filter_map(move |ev| async move {
            match ev {
                Ok(ev) => Some(ev.modify(trim)),
                Err(e) => {
                    tracing::warn!(watch = what, error = %e, "watch failed; retrying");
                    None
                }
            }
        })
}

/// Drops what no follower of the API reads: `metadata.managedFields`,
/// often the largest part of a small object, as kube-controller-manager's
/// and kube-scheduler's informers do (kubernetes#118455, #119556). An
/// update sent without managed fields keeps the server's (it takes them
/// from the live object), so no write is changed by it.
pub fn trim<K: Resource>(o: &mut K) {
    o.meta_mut().managed_fields = None;
}

#[cfg(test)]
mod tests;
