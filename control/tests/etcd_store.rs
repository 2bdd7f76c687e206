//! The store conformance suite on an external etcd (Debian's `etcd-server`,
//! started here on loopback ports with its own data dir), through
//! [`EtcdStore`].

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rudder_control::store::{
    Store as _, conformance,
    etcd::{EtcdConfig, EtcdStore},
};

/// One etcd member, stopped (by pid) and its data removed on drop.
struct Etcd {
    child: Child,
    client_url: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    rudder_test_harness::unused_port()
}

impl Etcd {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("etcd")
            .args(["--name", "conformance"])
            .arg("--data-dir")
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", &client_url])
            .args(["--advertise-client-urls", &client_url])
            .args(["--listen-peer-urls", &peer_url])
            .args(["--initial-advertise-peer-urls", &peer_url])
            .args(["--initial-cluster", &format!("conformance={peer_url}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start etcd (Debian's etcd-server; `cargo xtask setup` installs it)");
        Self {
            child,
            client_url,
            _dir: dir,
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn ready(store: &EtcdStore) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.current_revision().await.is_err() {
        assert!(Instant::now() < deadline, "etcd did not answer within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_conformance_suite() {
    let etcd = Etcd::start();
    let store = EtcdStore::new(&EtcdConfig {
        endpoints: vec![etcd.client_url.clone()],
        ..EtcdConfig::default()
    })
    .unwrap();
    ready(&store).await;
    conformance::run(&store, "/conformance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_skipped_and_none_is_unavailable() {
    let etcd = Etcd::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let store = EtcdStore::new(&EtcdConfig {
        endpoints: vec![dead.clone(), etcd.client_url.clone()],
        ..EtcdConfig::default()
    })
    .unwrap();
    ready(&store).await;
    let kv = store
        .create("/failover/a".into(), b"1".to_vec())
        .await
        .unwrap();
    assert_eq!(
        store
            .get("/failover/a")
            .await
            .unwrap()
            .0
            .unwrap()
            .mod_revision,
        kv.mod_revision
    );
    let none = EtcdStore::new(&EtcdConfig {
        endpoints: vec![dead],
        timeout: Duration::from_secs(2),
        ..EtcdConfig::default()
    })
    .unwrap();
    assert!(matches!(
        none.get("/x").await,
        Err(rudder_control::store::StoreError::Unavailable(_))
    ));
    assert!(
        EtcdStore::new(&EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            ..EtcdConfig::default()
        })
        .is_err()
    );
}
