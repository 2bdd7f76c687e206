//! The store conformance suite on the embedded Raft store: one member, and
//! three members in this process on loopback ports (the fault test with
//! separate processes is `tests/tests/control_store.rs`).

use std::{collections::BTreeMap, net::SocketAddr, time::Duration};

use rudder_store::{
    Store as _, conformance,
    raft::{RaftConfig, RaftStore},
};

fn loopback() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

async fn list_all(store: &RaftStore, prefix: &str) -> rudder_store::ListResponse {
    store
        .list(rudder_store::ListRequest {
            prefix: prefix.into(),
            after: None,
            limit: 0,
            revision: 0,
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = RaftStore::open(RaftConfig::single(dir.path(), loopback()))
        .await
        .unwrap();
    store.wait_ready(Duration::from_secs(10)).await.unwrap();
    conformance::run(&store, "/conformance").await;
    store.shutdown().await;
}

/// A peer port anyone could reach, without TLS, is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routable_peer_port_without_tls_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let err = RaftStore::open(RaftConfig::single(dir.path(), "0.0.0.0:0".parse().unwrap()))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("without TLS"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_keeps_data_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RaftConfig::single(dir.path(), loopback());
    cfg.snapshot_every = 50;
    let store = RaftStore::open(cfg.clone()).await.unwrap();
    store.wait_ready(Duration::from_secs(10)).await.unwrap();
    // Past a snapshot, so that the restart loads one and replays the rest.
    let mut last = 0;
    for i in 0..120 {
        last = store
            .create(format!("/k/{i:03}"), vec![1])
            .await
            .unwrap()
            .mod_revision;
    }
    store.shutdown().await;
    drop(store);
    let store = RaftStore::open(cfg).await.unwrap();
    store.wait_ready(Duration::from_secs(10)).await.unwrap();
    let list = list_all(&store, "/k/").await;
    assert_eq!(list.kvs.len(), 120);
    assert_eq!(list.revision, last);
    store.shutdown().await;
}

/// Group commit: writes that wait together share log entries (one fsync
/// each), every one is answered with its own revision, and all of them are
/// there after a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_log_entries_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = RaftConfig::single(dir.path(), loopback());
    let store = std::sync::Arc::new(RaftStore::open(cfg.clone()).await.unwrap());
    store.wait_ready(Duration::from_secs(10)).await.unwrap();
    let before = store.status().last_applied.unwrap_or(0);
    const WRITES: usize = 400;
    let tasks: Vec<_> = (0..WRITES)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .create(format!("/g/{i:04}"), format!("v{i}").into_bytes())
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut revisions = std::collections::BTreeSet::new();
    for (i, t) in tasks.into_iter().enumerate() {
        let kv = t.await.unwrap();
        assert_eq!(kv.key, format!("/g/{i:04}"));
        assert_eq!(kv.value, format!("v{i}").as_bytes());
        revisions.insert(kv.mod_revision);
    }
    assert_eq!(revisions.len(), WRITES, "every write has its own revision");
    let entries = store.status().last_applied.unwrap() - before;
    assert!(
        entries < WRITES as u64 / 2,
        "{WRITES} concurrent writes took {entries} log entries"
    );
    store.shutdown().await;
    drop(store);
    let store = RaftStore::open(cfg).await.unwrap();
    store.wait_ready(Duration::from_secs(10)).await.unwrap();
    for i in [0, WRITES / 2, WRITES - 1] {
        let (kv, _) = store.get(&format!("/g/{i:04}")).await.unwrap();
        assert_eq!(kv.unwrap().value, format!("v{i}").as_bytes());
    }
    assert_eq!(list_all(&store, "/g/").await.kvs.len(), WRITES);
    store.shutdown().await;
}

async fn three_members(dirs: &[tempfile::TempDir]) -> Vec<RaftStore> {
    // Bind first to learn free ports, then give every member the full map.
    let ports: Vec<u16> = (0..3).map(|_| rudder_test_harness::unused_port()).collect();
    let members: BTreeMap<u64, String> = ports
        .iter()
        .enumerate()
        .map(|(i, p)| (i as u64 + 1, format!("127.0.0.1:{p}")))
        .collect();
    let mut stores = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        let mut cfg =
            RaftConfig::single(dirs[i].path(), format!("127.0.0.1:{port}").parse().unwrap());
        cfg.id = i as u64 + 1;
        cfg.initial_members = members.clone();
        stores.push(RaftStore::open(cfg).await.unwrap());
    }
    for s in &stores {
        s.wait_ready(Duration::from_secs(20)).await.unwrap();
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_members_pass_the_conformance_suite_on_every_member() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let stores = three_members(&dirs).await;
    let leader = stores[0].status().leader.expect("a leader");
    assert!(stores.iter().all(|s| s.status().voters == [1, 2, 3]));
    // Followers forward writes and serve linearizable reads.
    for s in &stores {
        conformance::run(s, &format!("/member-{}", s.id())).await;
    }
    // A write on a follower is visible on every member at once.
    let follower = stores.iter().find(|s| s.id() != leader).unwrap();
    follower
        .create("/shared".into(), b"v".to_vec())
        .await
        .unwrap();
    for s in &stores {
        assert_eq!(s.get("/shared").await.unwrap().0.unwrap().value, &b"v"[..]);
    }
    for s in &stores {
        s.shutdown().await;
    }
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], rudder_test_harness::unused_port()))
}

/// Growing one member to three (members join as learners, catch up, become
/// voters), then removing the first: the data follows, writes go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn membership_grows_from_one_to_three_and_drops_the_first() {
    use rudder_store::raft::MembershipRequest;
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let first = RaftStore::open(RaftConfig::single(dirs[0].path(), loopback()))
        .await
        .unwrap();
    first.wait_ready(Duration::from_secs(10)).await.unwrap();
    for i in 0..20 {
        first.create(format!("/before/{i}"), vec![1]).await.unwrap();
    }
    let mut joiners = Vec::new();
    let mut add = BTreeMap::new();
    for (i, dir) in dirs.iter().enumerate().skip(1) {
        let addr = free_addr();
        let mut cfg = RaftConfig::single(dir.path(), addr);
        cfg.id = i as u64 + 1;
        cfg.join = true;
        joiners.push(RaftStore::open(cfg).await.unwrap());
        add.insert(i as u64 + 1, addr.to_string());
    }
    let status = first
        .change_members(MembershipRequest {
            add,
            remove: vec![],
        })
        .await
        .unwrap();
    assert_eq!(status.voters, [1, 2, 3]);
    for j in &joiners {
        j.wait_ready(Duration::from_secs(20)).await.unwrap();
        assert!(
            j.get("/before/19").await.unwrap().0.is_some(),
            "member {} caught up",
            j.id()
        );
    }
    let status = joiners[0]
        .change_members(MembershipRequest {
            add: BTreeMap::new(),
            remove: vec![1],
        })
        .await
        .unwrap();
    assert_eq!(status.voters, [2, 3]);
    first.shutdown().await;
    // Two voters of two: writes are served without the first member.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match joiners[1].create("/after".into(), vec![2]).await {
            Ok(_) => break,
            Err(e) => assert!(
                std::time::Instant::now() < deadline,
                "no write after removing member 1: {e}"
            ),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(joiners[0].get("/after").await.unwrap().0.is_some());
    for j in &joiners {
        j.shutdown().await;
    }
}

/// A member that joins after the log was purged gets the state as a
/// snapshot, streamed from the leader's snapshot file into its own; it
/// keeps it across a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_member_catches_up_from_a_snapshot_file() {
    use rudder_store::raft::MembershipRequest;
    let dirs: Vec<_> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let mut cfg = RaftConfig::single(dirs[0].path(), loopback());
    cfg.snapshot_every = 20;
    cfg.keep_log_after_snapshot = 0;
    let first = RaftStore::open(cfg).await.unwrap();
    first.wait_ready(Duration::from_secs(10)).await.unwrap();
    // Values of 200 KB: the snapshot spans several transfer chunks.
    let value = vec![b'v'; 200_000];
    for i in 0..60 {
        first
            .create(format!("/early/{i:02}"), value.clone())
            .await
            .unwrap();
    }
    let snapshots = |d: &tempfile::TempDir| -> Vec<String> {
        std::fs::read_dir(d.path().join("snapshots"))
            .map(|r| {
                r.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .filter(|n| n.starts_with("snapshot-"))
                    .collect()
            })
            .unwrap_or_default()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while snapshots(&dirs[0]).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "no snapshot was taken"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(snapshots(&dirs[0]).len() <= 2, "old snapshots are removed");
    let addr = free_addr();
    let mut jcfg = RaftConfig::single(dirs[1].path(), addr);
    jcfg.id = 2;
    jcfg.join = true;
    let joiner = RaftStore::open(jcfg.clone()).await.unwrap();
    first
        .change_members(MembershipRequest {
            add: [(2, addr.to_string())].into(),
            remove: vec![],
        })
        .await
        .unwrap();
    joiner.wait_ready(Duration::from_secs(20)).await.unwrap();
    let got = joiner.get("/early/59").await.unwrap().0.expect("caught up");
    assert_eq!(got.value.len(), 200_000);
    assert!(!snapshots(&dirs[1]).is_empty(), "installed from a snapshot");
    joiner.shutdown().await;
    drop(joiner);
    first.shutdown().await;
    drop(first);
    // The joiner alone (its peer gone) still loads what it installed: it
    // starts at the snapshot's index, which its log alone never held.
    let mut alone = jcfg;
    alone.join = false;
    let joiner = RaftStore::open(alone).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while joiner.status().last_applied.unwrap_or(0) < 60 {
        assert!(
            std::time::Instant::now() < deadline,
            "the snapshot was not loaded: {:?}",
            joiner.status()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    joiner.shutdown().await;
}

/// The backend quota: writes that would take the store past it are
/// refused with a clear error; deleting frees room again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quota_refuses_writes_until_room_is_freed() {
    use rudder_store::StoreError;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = RaftConfig::single(dir.path(), loopback());
    cfg.quota_bytes = 10_000;
    let store = RaftStore::open(cfg).await.unwrap();
    store.wait_ready(Duration::from_secs(10)).await.unwrap();
    let value = vec![b'x'; 3_000];
    for i in 0..3 {
        store
            .create(format!("/q/{i}"), value.clone())
            .await
            .unwrap();
    }
    let err = store
        .create("/q/3".into(), value.clone())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::NoSpace { .. }), "{err}");
    assert!(err.to_string().contains("database space exceeded"), "{err}");
    // Updates that add bytes are refused too; deletes are not.
    assert!(
        store
            .update("/q/0".into(), vec![b'y'; 4_000], None)
            .await
            .is_err()
    );
    store.delete("/q/0".into(), None).await.unwrap();
    store.create("/q/3".into(), value).await.unwrap();
    store.shutdown().await;
}
