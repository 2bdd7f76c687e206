//! The store conformance suite: what the apiserver relies on, checked the
//! same way on every backend (the embedded Raft store with one and three
//! members, and etcd). Each check uses its own key prefix so that the suite
//! can run against a shared store.

use std::time::Duration;

use super::{EventKind, ListRequest, Store, StoreError, WatchItem, WatchStream};

/// Runs every check against `store`, under keys starting with `prefix`.
/// Panics with the failed check's name.
pub async fn run(store: &dyn Store, prefix: &str) {
    crud_and_revisions(store, &format!("{prefix}/crud/")).await;
    optimistic_concurrency(store, &format!("{prefix}/occ/")).await;
    list_paging_and_revisions(store, &format!("{prefix}/list/")).await;
    watch_from_revision(store, &format!("{prefix}/watch/")).await;
    compaction(store, &format!("{prefix}/compact/")).await;
    value_limit(store, &format!("{prefix}/limit/")).await;
}

/// A value over the limit is refused whole, on create and on update.
async fn value_limit(s: &dyn Store, p: &str) {
    let k = format!("{p}a");
    let big = vec![b'x'; super::MAX_VALUE + 1];
    assert!(
        matches!(
            s.create(k.clone(), big.clone()).await,
            Err(StoreError::TooLarge { .. })
        ),
        "value_limit: create"
    );
    s.create(k.clone(), b"small".to_vec())
        .await
        .expect("value_limit: small");
    assert!(
        matches!(
            s.update(k.clone(), big, None).await,
            Err(StoreError::TooLarge { .. })
        ),
        "value_limit: update"
    );
    let (kv, _) = s.get(&k).await.expect("value_limit: get");
    assert_eq!(kv.expect("value_limit: kept").value, &b"small"[..]);
}

async fn next_event(w: &mut WatchStream) -> super::Event {
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), w.recv())
            .await
            .expect("watch event within 10 s")
            .expect("watch stream open")
            .expect("watch item");
        if let WatchItem::Event(e) = item {
            return e;
        }
    }
}

async fn crud_and_revisions(s: &dyn Store, p: &str) {
    let k = format!("{p}a");
    let r0 = s.current_revision().await.expect("current revision");
    let a = s.create(k.clone(), b"1".to_vec()).await.expect("create");
    assert!(a.mod_revision > r0, "create: revision moves forward");
    assert_eq!(a.create_revision, a.mod_revision);
    assert_eq!(a.version, 1);
    assert_eq!(
        s.create(k.clone(), b"2".to_vec()).await,
        Err(StoreError::AlreadyExists(k.clone())),
        "create of an existing key"
    );
    let (got, rev) = s.get(&k).await.expect("get");
    let got = got.expect("created key is there");
    assert_eq!(got.value, &b"1"[..]);
    assert!(rev >= a.mod_revision, "get: served at or after the write");
    let b = s
        .update(k.clone(), b"2".to_vec(), None)
        .await
        .expect("update");
    assert!(b.mod_revision > a.mod_revision);
    assert_eq!(
        (b.create_revision, b.version),
        (a.create_revision, 2),
        "update keeps create revision, bumps version"
    );
    let d = s.delete(k.clone(), None).await.expect("delete");
    assert!(
        d.mod_revision > b.mod_revision,
        "delete gets its own revision"
    );
    assert_eq!(d.value, &b"2"[..], "delete returns the deleted value");
    assert_eq!(s.get(&k).await.expect("get").0, None);
    assert_eq!(
        s.update(k.clone(), b"3".to_vec(), None).await,
        Err(StoreError::NotFound(k.clone()))
    );
    assert_eq!(
        s.delete(k.clone(), None).await,
        Err(StoreError::NotFound(k.clone()))
    );
    let c = s.create(k.clone(), b"4".to_vec()).await.expect("re-create");
    assert_eq!(c.version, 1, "a re-created key starts over");
    assert!(c.create_revision > d.mod_revision);
}

async fn optimistic_concurrency(s: &dyn Store, p: &str) {
    let k = format!("{p}x");
    let a = s.create(k.clone(), b"1".to_vec()).await.expect("create");
    let b = s
        .update(k.clone(), b"2".to_vec(), Some(a.mod_revision))
        .await
        .expect("update at the current revision");
    match s
        .update(k.clone(), b"3".to_vec(), Some(a.mod_revision))
        .await
    {
        Err(StoreError::Conflict { current, .. }) => assert_eq!(current, b.mod_revision),
        r => panic!("stale update: want Conflict, got {r:?}"),
    }
    assert!(matches!(
        s.delete(k.clone(), Some(a.mod_revision)).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        s.get(&k).await.expect("get").0.expect("still there").value,
        &b"2"[..]
    );
    s.delete(k.clone(), Some(b.mod_revision))
        .await
        .expect("delete at the current revision");
}

async fn list_paging_and_revisions(s: &dyn Store, p: &str) {
    let mut revs = Vec::new();
    for i in 0..5 {
        revs.push(
            s.create(format!("{p}{i}"), vec![b'0' + i])
                .await
                .expect("create")
                .mod_revision,
        );
    }
    // Something outside the prefix never shows.
    s.create(format!("{p}~/other"), b"x".to_vec()).await.ok();
    let all = s
        .list(ListRequest {
            prefix: p.to_owned(),
            after: None,
            limit: 0,
            revision: 0,
        })
        .await
        .expect("list");
    let keys: Vec<_> = all.kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(
        keys[..5],
        (0..5).map(|i| format!("{p}{i}")).collect::<Vec<_>>()[..],
        "list: sorted by key"
    );
    // Pages of 2 at one revision, while the data moves on.
    let at = all.revision;
    s.update(format!("{p}4"), b"changed".to_vec(), None)
        .await
        .expect("update");
    s.delete(format!("{p}0"), None).await.expect("delete");
    let mut after = None;
    let mut seen = Vec::new();
    loop {
        let page = s
            .list(ListRequest {
                prefix: p.to_owned(),
                after: after.clone(),
                limit: 2,
                revision: at,
            })
            .await
            .expect("list page at a revision");
        assert_eq!(page.revision, at, "pages are served at the asked revision");
        assert!(page.kvs.len() <= 2);
        after = page.kvs.last().map(|kv| kv.key.clone());
        seen.extend(page.kvs);
        if !page.more {
            break;
        }
    }
    let values: Vec<_> = seen.iter().take(5).map(|kv| kv.value.clone()).collect();
    assert_eq!(
        values,
        (0..5u8).map(|i| vec![b'0' + i]).collect::<Vec<_>>(),
        "the old revision's values, not the new ones"
    );
    assert!(seen.iter().all(|kv| kv.mod_revision <= at));
    let _ = revs;
}

async fn watch_from_revision(s: &dyn Store, p: &str) {
    let a = s
        .create(format!("{p}a"), b"1".to_vec())
        .await
        .expect("create");
    s.update(format!("{p}a"), b"2".to_vec(), None)
        .await
        .expect("update");
    let mut w = s
        .watch(p.to_owned(), a.mod_revision)
        .await
        .expect("watch from a past revision");
    let e1 = next_event(&mut w).await;
    assert_eq!((e1.kind, e1.kv.value.as_ref()), (EventKind::Put, &b"1"[..]));
    assert_eq!(e1.kv.mod_revision, a.mod_revision);
    let e2 = next_event(&mut w).await;
    assert_eq!(e2.kv.value, &b"2"[..]);
    assert_eq!(
        e2.prev.as_ref().map(|kv| kv.value.clone()),
        Some(bytes::Bytes::from_static(b"1"))
    );
    // Live events, in order, only under the prefix.
    s.create(format!("{p}~"), b"x".to_vec()).await.ok();
    s.create("/elsewhere-conformance".to_owned(), b"y".to_vec())
        .await
        .ok();
    s.delete(format!("{p}a"), None).await.expect("delete");
    let e3 = next_event(&mut w).await;
    assert_eq!(e3.kv.key, format!("{p}~"));
    let e4 = next_event(&mut w).await;
    assert_eq!(e4.kind, EventKind::Delete);
    assert_eq!(e4.kv.key, format!("{p}a"));
    assert_eq!(
        e4.prev.map(|kv| kv.value),
        Some(bytes::Bytes::from_static(b"2")),
        "a delete carries the last value"
    );
    assert!(e4.kv.mod_revision > e3.kv.mod_revision);
    s.delete("/elsewhere-conformance".to_owned(), None)
        .await
        .ok();
}

async fn compaction(s: &dyn Store, p: &str) {
    let a = s
        .create(format!("{p}a"), b"1".to_vec())
        .await
        .expect("create");
    let b = s
        .update(format!("{p}a"), b"2".to_vec(), None)
        .await
        .expect("update");
    s.compact(b.mod_revision).await.expect("compact");
    match s.watch(p.to_owned(), a.mod_revision).await {
        Err(StoreError::Compacted { .. }) => {}
        Ok(mut w) => match w.recv().await {
            Some(Err(StoreError::Compacted { .. })) => {}
            other => panic!("watch from a compacted revision: got {other:?}"),
        },
        Err(e) => panic!("watch from a compacted revision: got {e}"),
    }
    match s
        .list(ListRequest {
            prefix: p.to_owned(),
            after: None,
            limit: 0,
            revision: a.mod_revision,
        })
        .await
    {
        Err(StoreError::Compacted { .. }) => {}
        r => panic!("list at a compacted revision: got {r:?}"),
    }
    // After the compacted revision, all still works.
    let c = s
        .update(format!("{p}a"), b"3".to_vec(), None)
        .await
        .expect("update after compaction");
    let mut w = s
        .watch(p.to_owned(), c.mod_revision)
        .await
        .expect("watch after the compacted revision");
    assert_eq!(next_event(&mut w).await.kv.value, &b"3"[..]);
}
