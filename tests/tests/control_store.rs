//! Fault test of the embedded store: three `rudder server` processes (one
//! Raft member each, loopback ports, their own data dirs) under a stream of
//! writes and reads through the Kubernetes API. The leader is killed
//! mid-stream and restarted; then a minority is left alone and must refuse
//! writes. Checked: no acknowledged write is lost, and the history of the
//! register (reads and writes of one ConfigMap) is linearizable.

use std::{
    collections::{BTreeMap, HashSet},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::{
    Api, Client,
    api::{Patch, PatchParams, PostParams},
};
use rudder_test_harness::{ChildGuard, TempDir, workspace_bin};
use serde_json::json;

fn free_port() -> u16 {
    rudder_test_harness::unused_port()
}

struct Member {
    id: u64,
    api_port: u16,
    peer_port: u16,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl Member {
    fn kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    fn start(&mut self, cluster: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("server.log"))
            .unwrap();
        let child = Command::new(workspace_bin("rudder"))
            .arg("server")
            .args(["--listen", &format!("127.0.0.1:{}", self.api_port)])
            .args(["--peer-listen", &format!("127.0.0.1:{}", self.peer_port)])
            .args([
                "--member-id",
                &self.id.to_string(),
                "--initial-cluster",
                cluster,
            ])
            // Every member runs the controllers; the Lease picks one.
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--pki-dir")
            .arg(self.dir.join("pki"))
            .arg("--admin-kubeconfig")
            .arg(self.kubeconfig())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start rudder server");
        self.child = Some(ChildGuard(child));
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.0.kill();
            let _ = c.0.wait();
        }
    }

    /// The member's view of the leader, from its peer port (mutual TLS:
    /// with a member certificate of the cluster CA).
    fn leader(&self) -> Option<u64> {
        let pki = self.dir.join("pki");
        let out = Command::new("curl")
            .args(["-sf", "-k", "--max-time", "2", "--cert"])
            .arg(pki.join("member-probe.crt"))
            .arg("--key")
            .arg(pki.join("member-probe.key"))
            .arg(format!("https://127.0.0.1:{}/raft/status", self.peer_port))
            .output()
            .ok()?;
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["leader"].as_u64()
    }
}

async fn client(kubeconfig: &Path) -> Client {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
    let mut cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
            .await
            .unwrap();
    // Operations during a failover end quickly, as "unknown outcome".
    cfg.read_timeout = Some(Duration::from_secs(3));
    cfg.connect_timeout = Some(Duration::from_secs(1));
    Client::try_from(cfg).unwrap()
}

/// One operation on the register, as a client saw it.
#[derive(Clone, Debug)]
struct Op {
    write: bool,
    /// Written value, or the value read.
    value: String,
    start: Duration,
    /// `None`: no answer (a write that may or may not have happened).
    end: Option<Duration>,
}

/// Wing & Gong's linearizability check for a register, with memoisation
/// (Lowe's): is there an order of the operations, consistent with their
/// real-time order, in which every read returns the latest write?
fn linearizable(ops: &[Op], initial: &str) -> bool {
    // Failed reads tell nothing; unknown writes may land at any time after
    // their start, or never, and one that no read observed may as well
    // never have happened (leaving it out cannot make a read fail).
    let observed: HashSet<&str> = ops
        .iter()
        .filter(|o| !o.write && o.end.is_some())
        .map(|o| o.value.as_str())
        .collect();
    let ops: Vec<&Op> = ops
        .iter()
        .filter(|o| {
            if o.write {
                o.end.is_some() || observed.contains(o.value.as_str())
            } else {
                o.end.is_some()
            }
        })
        .collect();
    let n = ops.len();
    let end = |o: &Op| o.end.unwrap_or(Duration::MAX);
    let mut seen: HashSet<(Vec<u64>, String)> = HashSet::new();
    let mut done = vec![0u64; n.div_ceil(64)];
    fn search(
        ops: &[&Op],
        done: &mut Vec<u64>,
        state: &str,
        seen: &mut HashSet<(Vec<u64>, String)>,
        end: &dyn Fn(&Op) -> Duration,
    ) -> bool {
        let is_done = |d: &Vec<u64>, i: usize| d[i / 64] & (1 << (i % 64)) != 0;
        // Finished when every operation that completed is placed (unknown
        // writes may be left out: they never happened).
        if (0..ops.len()).all(|i| is_done(done, i) || ops[i].end.is_none()) {
            return true;
        }
        if !seen.insert((done.clone(), state.to_owned())) {
            return false;
        }
        // The earliest end among pending operations bounds which may go next.
        let horizon = (0..ops.len())
            .filter(|&i| !is_done(done, i))
            .map(|i| end(ops[i]))
            .min()
            .unwrap_or(Duration::MAX);
        for i in 0..ops.len() {
            if is_done(done, i) || ops[i].start > horizon {
                continue;
            }
            let o = ops[i];
            let next = if o.write {
                o.value.as_str()
            } else if o.value == state {
                state
            } else {
                continue;
            };
            done[i / 64] |= 1 << (i % 64);
            if search(ops, done, next, seen, end) {
                return true;
            }
            done[i / 64] &= !(1 << (i % 64));
        }
        false
    }
    search(&ops, &mut done, initial, &mut seen, &end)
}

#[test]
fn linearizability_checker_accepts_and_rejects() {
    let op = |write: bool, v: &str, s: u64, e: Option<u64>| Op {
        write,
        value: v.into(),
        start: Duration::from_millis(s),
        end: e.map(Duration::from_millis),
    };
    // Sequential and overlapping histories that are fine.
    assert!(linearizable(
        &[op(true, "a", 0, Some(10)), op(false, "a", 20, Some(30))],
        "0"
    ));
    assert!(linearizable(
        &[op(true, "a", 0, Some(30)), op(false, "0", 10, Some(20))],
        "0"
    ));
    assert!(linearizable(
        &[op(true, "a", 0, None), op(false, "a", 50, Some(60))],
        "0"
    ));
    assert!(linearizable(
        &[op(true, "a", 0, None), op(false, "0", 50, Some(60))],
        "0"
    ));
    // A stale read after a completed write, and a value never written.
    assert!(!linearizable(
        &[op(true, "a", 0, Some(10)), op(false, "0", 20, Some(30))],
        "0"
    ));
    assert!(!linearizable(&[op(false, "zz", 0, Some(10))], "0"));
    // Reads going back in time.
    assert!(!linearizable(
        &[
            op(true, "a", 0, Some(5)),
            op(true, "b", 10, Some(40)),
            op(false, "b", 15, Some(20)),
            op(false, "a", 25, Some(30)),
        ],
        "0"
    ));
}

struct Recorder {
    t0: Instant,
    ops: Mutex<Vec<Op>>,
    acked: Mutex<Vec<String>>,
}

async fn worker(
    id: usize,
    client: Client,
    rec: Arc<Recorder>,
    stop: Arc<std::sync::atomic::AtomicBool>,
) {
    let api: Api<ConfigMap> = Api::namespaced(client, "default");
    let mut n = 0u64;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        n += 1;
        let value = format!("w{id}-{n}");
        // A write of the register.
        let start = rec.t0.elapsed();
        let r = api
            .patch(
                "register",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"v": value}})),
            )
            .await;
        let end = r.as_ref().is_ok().then(|| rec.t0.elapsed());
        // A refused connection means the write was never sent.
        let refused = r
            .as_ref()
            .err()
            .is_some_and(|e| format!("{e:?}").contains("ConnectionRefused"));
        if !refused {
            rec.ops.lock().unwrap().push(Op {
                write: true,
                value: value.clone(),
                start,
                end,
            });
        }
        if r.is_err() {
            // This member is down or has no quorum: do not spin.
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        // A read of it.
        let start = rec.t0.elapsed();
        if let Ok(cm) = api.get("register").await {
            let v = cm
                .data
                .and_then(|d| d.get("v").cloned())
                .unwrap_or_default();
            rec.ops.lock().unwrap().push(Op {
                write: false,
                value: v,
                start,
                end: Some(rec.t0.elapsed()),
            });
        }
        // A create whose acknowledgement is remembered.
        let name = format!("ack-{id}-{n}");
        let cm = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(name.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        if api.create(&PostParams::default(), &cm).await.is_ok() {
            rec.acked.lock().unwrap().push(name);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_ready(m: &Member) -> Client {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if m.kubeconfig().exists() {
            let c = client(&m.kubeconfig()).await;
            let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
            if api.list(&Default::default()).await.is_ok() {
                return c;
            }
        }
        assert!(
            Instant::now() < deadline,
            "member {} not ready in 60 s",
            m.id
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Writes one CA (and a store member certificate of it, for probes) into
/// each of `dirs`.
fn shared_ca(dirs: impl Iterator<Item = PathBuf>) {
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "rudder-test-ca");
    p.key_usages = vec![
        rcgen::KeyUsagePurpose::KeyCertSign,
        rcgen::KeyUsagePurpose::CrlSign,
        rcgen::KeyUsagePurpose::DigitalSignature,
    ];
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = p.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::from_ca_cert_pem(&ca.pem(), ca_key).unwrap();
    let mut m = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    m.distinguished_name
        .push(rcgen::DnType::CommonName, "rudder-store-member-probe");
    m.distinguished_name
        .push(rcgen::DnType::OrganizationName, "rudder:store-members");
    m.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let member_key = rcgen::KeyPair::generate().unwrap();
    let member = m.signed_by(&member_key, &issuer).unwrap();
    for d in dirs {
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(d.join("ca.key"), issuer.key().serialize_pem()).unwrap();
        std::fs::write(d.join("member-probe.crt"), member.pem()).unwrap();
        std::fs::write(d.join("member-probe.key"), member_key.serialize_pem()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_members_lose_no_acknowledged_write_and_stay_linearizable() {
    let root = TempDir::new();
    let mut members: Vec<Member> = (1..=3)
        .map(|id| {
            let dir = root.path().join(format!("m{id}"));
            std::fs::create_dir_all(&dir).unwrap();
            Member {
                id,
                api_port: free_port(),
                peer_port: free_port(),
                dir,
                child: None,
            }
        })
        .collect();
    let cluster = members
        .iter()
        .map(|m| format!("{}=127.0.0.1:{}", m.id, m.peer_port))
        .collect::<Vec<_>>()
        .join(",");
    // The members share the cluster CA, as an operator copies it to each
    // before their first start; the test keeps a member certificate of it
    // to ask the peer ports who leads.
    shared_ca(members.iter().map(|m| m.dir.join("pki")));
    for m in &mut members {
        m.start(&cluster);
    }
    let mut clients = Vec::new();
    for m in &members {
        clients.push(wait_ready(m).await);
    }
    let api: Api<ConfigMap> = Api::namespaced(clients[0].clone(), "default");
    let reg = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("register".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("v".to_owned(), "init".to_owned())])),
        ..Default::default()
    };
    api.create(&PostParams::default(), &reg).await.unwrap();

    let rec = Arc::new(Recorder {
        t0: Instant::now(),
        ops: Mutex::default(),
        acked: Mutex::default(),
    });
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let workers: Vec<_> = clients
        .iter()
        .enumerate()
        .map(|(i, c)| tokio::spawn(worker(i, c.clone(), rec.clone(), stop.clone())))
        .collect();

    // Kill the leader mid-stream, then bring it back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let leader = members.iter().find_map(Member::leader).expect("a leader");
    let li = members.iter().position(|m| m.id == leader).unwrap();
    members[li].kill();
    let killed_at = rec.t0.elapsed();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let acked_without_leader = rec.acked.lock().unwrap().len();
    members[li].start(&cluster);
    clients[li] = wait_ready(&members[li]).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let ops = rec.ops.lock().unwrap().clone();
    let acked = rec.acked.lock().unwrap().clone();
    let after_kill = ops
        .iter()
        .filter(|o| o.write && o.end.is_some_and(|e| e > killed_at))
        .count();
    assert!(after_kill > 0, "writes went on after the leader was killed");
    assert!(acked_without_leader > 0);

    // Every acknowledged create is there, on every member.
    for c in &clients {
        let api: Api<ConfigMap> = Api::namespaced(c.clone(), "default");
        let have: HashSet<String> = api
            .list(&Default::default())
            .await
            .unwrap()
            .items
            .into_iter()
            .filter_map(|cm| cm.metadata.name)
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|a| !have.contains(*a)).collect();
        assert!(lost.is_empty(), "acknowledged but lost: {lost:?}");
    }
    eprintln!(
        "fault test: {} register operations ({} without an answer), {} acknowledged creates, leader {leader} killed at {killed_at:?}",
        ops.len(),
        ops.iter().filter(|o| o.end.is_none()).count(),
        acked.len()
    );
    assert!(
        linearizable(&ops, "init"),
        "the register's history ({} operations) is not linearizable",
        ops.len()
    );

    // A minority alone refuses writes (and linearizable reads).
    let survivor = (li + 1) % 3;
    for (i, m) in members.iter_mut().enumerate() {
        if i != survivor {
            m.kill();
        }
    }
    let alone: Api<ConfigMap> = Api::namespaced(clients[survivor].clone(), "default");
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("minority".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    assert!(
        alone.create(&PostParams::default(), &cm).await.is_err(),
        "a lone member acknowledged a write"
    );
    assert!(
        alone.get("register").await.is_err(),
        "a lone member served a linearizable read"
    );
    // Back to a majority: writes are served again.
    for (i, m) in members.iter_mut().enumerate() {
        if i != survivor {
            m.start(&cluster);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let c = wait_ready(&members[survivor]).await;
        let api: Api<ConfigMap> = Api::namespaced(c, "default");
        let probe = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some("after-recovery".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        if api.create(&PostParams::default(), &probe).await.is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no write served within 60 s of the majority's return"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // After all that, one member leads the controllers (the Lease names
    // it) and they act: a Deployment gets its ReplicaSet.
    let c = wait_ready(&members[survivor]).await;
    let d: k8s_openapi::api::apps::v1::Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "after"},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "after"}},
                 "template": {"metadata": {"labels": {"app": "after"}},
                              "spec": {"containers": [{"name": "c", "image": "nginx"}]}}},
    }))
    .unwrap();
    let deploys: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(c.clone(), "default");
    deploys.create(&PostParams::default(), &d).await.unwrap();
    let rss: Api<k8s_openapi::api::apps::v1::ReplicaSet> = Api::namespaced(c.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(60);
    while rss
        .list(&kube::api::ListParams::default().labels("app=after"))
        .await
        .map_or(true, |l| l.items.is_empty())
    {
        assert!(Instant::now() < deadline, "no controller acted within 60 s");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> = Api::namespaced(c, "kube-system");
    let lease = leases.get("rudder-controller-manager").await.unwrap();
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(!holder.is_empty(), "the controller Lease has a holder");
    for m in &mut members {
        m.kill();
    }
}
