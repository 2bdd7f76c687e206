//! The cluster DNS of `rudder server` (`--dns-listen`) asked by real
//! resolvers: busybox's `nslookup` (what the test images' pods run) over
//! UDP, and a TCP query, while Services and EndpointSlices change through
//! the stock kubectl.

mod support;

use std::{
    io::{Read as _, Write as _},
    net::{SocketAddr, TcpStream, UdpSocket},
    process::Command,
    time::{Duration, Instant},
};

use rudder_test_harness::{TempDir, require_root};
use support::kube::{Kubectl, Server, newest};

/// Where the test's DNS server listens: a port free for UDP and TCP.
fn dns_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], rudder_test_harness::unused_port()))
}

/// `busybox nslookup [-type=T] name ADDR:PORT`: (success, output).
fn nslookup(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = Command::new("busybox")
        .arg("nslookup")
        .args(args)
        .arg(addr.to_string())
        .output()
        .expect("run busybox nslookup");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn wait_for(what: &str, f: impl FnMut() -> Option<()>) {
    let every = Duration::from_millis(200);
    rudder_test_harness::wait::poll_every(what, Duration::from_secs(30), every, f).unwrap();
}

/// A hand-made query (RFC 1035) for `name`, type A, over TCP; returns the
/// answer's rcode and answer count, and the message.
fn tcp_query(addr: SocketAddr, name: &str) -> (u8, u16, Vec<u8>) {
    let mut q = vec![0x42, 0x42, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&(q.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&q).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut a = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut a).unwrap();
    assert_eq!(&a[..2], &[0x42, 0x42], "the id is echoed");
    (a[3] & 0x0f, u16::from_be_bytes([a[6], a[7]]), a)
}

#[test]
fn cluster_dns_answers_for_services_and_forwards_the_rest() {
    require_root();
    // An "upstream" resolver that answers every query with 192.0.2.99.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = upstream.recv_from(&mut buf) {
            let mut a = buf[..n].to_vec();
            a[2] |= 0x80;
            a[3] = 0x80;
            a[6..8].copy_from_slice(&[0, 1]);
            a.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 99]);
            let _ = upstream.send_to(&a, peer);
        }
    });
    let dns = dns_addr();
    let server = Server::start_in(
        TempDir::new(),
        &[
            "--dns-listen",
            &dns.to_string(),
            "--dns-upstream",
            &up_addr.to_string(),
        ],
    );
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    // The kube-dns Service exists on the cluster DNS address.
    let ip = k.ok(&[
        "-n",
        "kube-system",
        "get",
        "service",
        "kube-dns",
        "-o",
        "jsonpath={.spec.clusterIP}",
    ]);
    assert_eq!(ip, "10.96.0.10");

    k.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    let web_ip = k.ok(&["get", "service", "web", "-o", "jsonpath={.spec.clusterIP}"]);
    wait_for("web in DNS", || {
        nslookup(dns, &["web.default.svc.cluster.local"])
            .1
            .contains(&web_ip)
            .then_some(())
    });
    let (ok, out) = nslookup(
        dns,
        &["-type=srv", "_80-8080._tcp.web.default.svc.cluster.local"],
    );
    assert!(
        ok && out.contains("80 web.default.svc.cluster.local"),
        "{out}"
    );
    let (ok, out) = nslookup(dns, &[&web_ip]);
    assert!(
        ok && out.contains("name = web.default.svc.cluster.local"),
        "PTR: {out}"
    );
    let (rcode, count, a) = tcp_query(dns, "web.default.svc.cluster.local");
    let octets: Vec<u8> = web_ip.split('.').map(|o| o.parse().unwrap()).collect();
    assert_eq!((rcode, count), (0, 1));
    assert!(
        a.windows(4).any(|w| w == octets.as_slice()),
        "the A record over TCP"
    );

    // A headless service with endpoints that have host names (as a
    // StatefulSet's), one not ready.
    k.apply(
        &["apply", "-f", "-"],
        r#"
apiVersion: v1
kind: Service
metadata: {name: db}
spec:
  clusterIP: None
  ports: [{name: pg, port: 5432}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: db-1
  labels: {kubernetes.io/service-name: db}
addressType: IPv4
ports: [{name: pg, port: 5432}]
endpoints:
- {addresses: [10.244.1.5], hostname: db-0, conditions: {ready: true}}
- {addresses: [10.244.2.6], hostname: db-1, conditions: {ready: true}}
- {addresses: [10.244.2.7], hostname: db-2, conditions: {ready: false}}
"#,
    );
    wait_for("db in DNS", || {
        let out = nslookup(dns, &["db.default.svc.cluster.local"]).1;
        (out.contains("10.244.1.5") && out.contains("10.244.2.6")).then_some(())
    });
    let (_, out) = nslookup(dns, &["db.default.svc.cluster.local"]);
    assert!(
        !out.contains("10.244.2.7"),
        "not-ready endpoints are left out: {out}"
    );
    let (ok, out) = nslookup(dns, &["db-1.db.default.svc.cluster.local"]);
    assert!(ok && out.contains("10.244.2.6"), "{out}");
    let (ok, out) = nslookup(dns, &["-type=srv", "_pg._tcp.db.default.svc.cluster.local"]);
    assert!(
        ok && out.contains("db-0.db.default.svc.cluster.local") && out.contains("db-1.db"),
        "{out}"
    );

    // ExternalName → CNAME; unknown names → NXDOMAIN; outside → upstream.
    k.ok(&[
        "create",
        "service",
        "externalname",
        "ext",
        "--external-name",
        "example.com",
    ]);
    wait_for("ext in DNS", || {
        nslookup(dns, &["-type=cname", "ext.default.svc.cluster.local"])
            .1
            .contains("example.com")
            .then_some(())
    });
    let (ok, out) = nslookup(dns, &["nope.default.svc.cluster.local"]);
    assert!(!ok && out.contains("NXDOMAIN"), "{out}");
    let (ok, out) = nslookup(dns, &["-type=a", "rudder.example.org"]);
    assert!(ok && out.contains("192.0.2.99"), "forwarded: {out}");

    // Deleted: gone from DNS.
    k.ok(&["delete", "service", "web"]);
    wait_for("web gone from DNS", || {
        nslookup(dns, &["web.default.svc.cluster.local"])
            .1
            .contains("NXDOMAIN")
            .then_some(())
    });
}

#[test]
fn a_taken_dns_port_fails_the_server_start_with_its_reason() {
    require_root();
    let taken = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new();
    let out = Command::new(rudder_test_harness::workspace_bin("rudder"))
        .args([
            "server",
            "--listen",
            "127.0.0.1:0",
            "--peer-listen",
            "127.0.0.1:0",
        ])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .arg("--pki-dir")
        .arg(dir.join("pki"))
        .arg("--admin-kubeconfig")
        .arg(dir.join("admin.kubeconfig"))
        .args(["--dns-listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && err.contains("udp"),
        "{err}"
    );
}

/// Not an open resolver: outside names are resolved only for the clients
/// of the configured networks (here 192.0.2.0/24, so not the test's
/// loopback) and others get REFUSED, while cluster names still answer; a
/// TCP client that sends a length and stops is cut off.
#[test]
fn the_cluster_dns_is_not_an_open_resolver_nor_stalled_by_slow_clients() {
    require_root();
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = std::sync::Arc::clone(&asked);
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while upstream.recv_from(&mut buf).is_ok() {
            seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    });
    let dns = dns_addr();
    let server = Server::start_in(
        TempDir::new(),
        &[
            "--dns-listen",
            &dns.to_string(),
            "--dns-upstream",
            &up_addr.to_string(),
            "--dns-forward-for",
            "192.0.2.0/24",
        ],
    );
    let k = Kubectl {
        bin: newest(),
        server: &server,
    };
    k.ok(&["create", "service", "clusterip", "web", "--tcp=80:8080"]);
    wait_for("web in DNS", || {
        nslookup(dns, &["web.default.svc.cluster.local"])
            .0
            .then_some(())
    });
    let (ok, out) = nslookup(dns, &["-type=a", "example.com"]);
    assert!(!ok && out.contains("REFUSED"), "{out}");
    let (rcode, _, _) = tcp_query(dns, "example.com");
    assert_eq!(rcode, 5, "REFUSED over TCP too");
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "nothing was forwarded"
    );
    // A length prefix and then nothing: closed after the read deadline.
    let mut s = TcpStream::connect(dns).unwrap();
    s.write_all(&[0, 40, 0x42]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = s.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}
