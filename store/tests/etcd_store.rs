//! The store conformance suite on an external etcd (Debian's `etcd-server`,
//! started here on loopback ports with its own data dir), through
//! [`EtcdStore`] on etcd's gRPC API; failover between endpoints; watches
//! sharing one connection; etcd serving TLS with client certificates, as
//! kubeadm's etcd does.

use std::{
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use rudder_store::{
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
        Self::start_with(None)
    }

    /// With `tls`, clients speak TLS and must show a certificate of the
    /// same CA (`--client-cert-auth`).
    fn start_with(tls: Option<&Pki>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let client_url = format!("{scheme}://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let mut cmd = Command::new("etcd");
        if let Some(pki) = tls {
            cmd.arg("--cert-file")
                .arg(pki.path("server.crt"))
                .arg("--key-file")
                .arg(pki.path("server.key"))
                .arg("--trusted-ca-file")
                .arg(pki.path("ca.crt"))
                .arg("--client-cert-auth");
        }
        let child = cmd
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

/// A store on `etcd` alone, once it answers.
async fn store_on(etcd: &Etcd) -> EtcdStore {
    let store = EtcdStore::connect(&EtcdConfig {
        endpoints: vec![etcd.client_url.clone()],
        ..EtcdConfig::default()
    })
    .await
    .unwrap();
    ready(&store).await;
    store
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_passes_the_conformance_suite() {
    let etcd = Etcd::start();
    let store = store_on(&etcd).await;
    conformance::run(&store, "/conformance").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_endpoint_is_skipped_and_none_is_unavailable() {
    let etcd = Etcd::start();
    let dead = format!("http://127.0.0.1:{}", free_port());
    let store = EtcdStore::connect(&EtcdConfig {
        endpoints: vec![dead.clone(), etcd.client_url.clone()],
        ..EtcdConfig::default()
    })
    .await
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
    let none = EtcdStore::connect(&EtcdConfig {
        endpoints: vec![dead],
        timeout: Duration::from_secs(2),
        ..EtcdConfig::default()
    })
    .await
    .unwrap();
    assert!(matches!(
        none.get("/x").await,
        Err(rudder_store::StoreError::Unavailable(_))
    ));
    assert!(
        EtcdStore::connect(&EtcdConfig {
            endpoints: vec!["127.0.0.1:2379".into()],
            ..EtcdConfig::default()
        })
        .await
        .is_err()
    );
}

/// This process's established TCP connections to `port` on loopback.
fn connections_to(port: u16) -> usize {
    let inodes: std::collections::HashSet<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|l| {
            let l = l.to_string_lossy().into_owned();
            Some(l.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let remote_port = f[2].rsplit(':').next().unwrap();
            f[3] == "01"
                && u16::from_str_radix(remote_port, 16) == Ok(port)
                && inodes.contains(f[9])
        })
        .count()
}

/// Watches are streams on the store's one HTTP/2 connection, not a
/// connection each (as they were through etcd's JSON gateway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watches_share_one_connection() {
    let etcd = Etcd::start();
    let port: u16 = etcd.client_url.rsplit(':').next().unwrap().parse().unwrap();
    let store = store_on(&etcd).await;
    let mut watches = Vec::new();
    for i in 0..20 {
        watches.push(store.watch(format!("/w/{i}/"), 0).await.unwrap());
    }
    store.create("/w/7/a".into(), b"v".to_vec()).await.unwrap();
    let event = loop {
        match tokio::time::timeout(Duration::from_secs(10), watches[7].recv())
            .await
            .expect("an event within 10 s")
        {
            Some(Ok(rudder_store::WatchItem::Event(e))) => break e,
            Some(Ok(_)) => {}
            other => panic!("watch ended: {other:?}"),
        }
    };
    assert_eq!(event.kv.key, "/w/7/a");
    assert_eq!(
        connections_to(port),
        1,
        "20 watches and the calls on one connection"
    );
}

/// A CA, a serving certificate for 127.0.0.1 and a client certificate, as
/// PEM files in a directory of their own.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        rudder_test_harness::pki::write_tls_pki(dir.path());
        Self { dir }
    }

    fn path(&self, name: &str) -> std::path::PathBuf {
        self.dir.path().join(name)
    }
}

/// etcd serving TLS and asking for client certificates: the store given
/// the CA and a client certificate passes the conformance suite; without
/// the certificate, or trusting another CA, it is refused and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_over_tls_with_client_certificates() {
    let pki = Pki::new();
    let etcd = Etcd::start_with(Some(&pki));
    assert!(etcd.client_url.starts_with("https://"));
    let config = |ca: std::path::PathBuf, client: bool| EtcdConfig {
        endpoints: vec![etcd.client_url.clone()],
        ca_file: Some(ca),
        cert_file: client.then(|| pki.path("client.crt")),
        key_file: client.then(|| pki.path("client.key")),
        timeout: Duration::from_secs(3),
    };
    let store = EtcdStore::connect(&config(pki.path("ca.crt"), true))
        .await
        .unwrap();
    ready(&store).await;
    conformance::run(&store, "/tls").await;

    // No client certificate: etcd ends the handshake.
    let anonymous = EtcdStore::connect(&config(pki.path("ca.crt"), false))
        .await
        .unwrap();
    let got = anonymous.get("/tls/x").await;
    assert!(
        matches!(got, Err(rudder_store::StoreError::Unavailable(_))),
        "{got:?}"
    );
    // A CA that did not sign etcd's certificate: the store refuses etcd.
    let other = Pki::new();
    let wrong_ca = EtcdStore::connect(&config(other.path("ca.crt"), true))
        .await
        .unwrap();
    let got = wrong_ca.get("/tls/x").await;
    assert!(
        matches!(&got, Err(rudder_store::StoreError::Unavailable(m)) if m.contains("certificate")),
        "{got:?}"
    );
    // Half-given settings are refused before any call.
    assert!(
        EtcdStore::connect(&EtcdConfig {
            key_file: None,
            ..config(pki.path("ca.crt"), true)
        })
        .await
        .is_err()
    );
}
