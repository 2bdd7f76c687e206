//! The test images of `cargo xtask images`: listed by the local registry,
//! found through the agent's mirror convention under the names manifests use
//! (`busybox:1.28`, `nginx`), and runnable on real containerd + runc.
//!
//! `cargo xtask test` builds and pushes the images before running this.

use std::{
    io::{Read as _, Write as _},
    net::{TcpStream, UdpSocket},
    path::Path,
    time::{Duration, Instant},
};

use rudder_agent::config::AgentConfig;
use rudder_image_ref::{Reference, mirror};
use rudder_test_harness::{Containerd, NetNs, require_root};

const REGISTRY: &str = "127.0.0.1:5000";

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

fn get_json(url: &str, accept: &str) -> serde_json::Value {
    let mut resp = http()
        .get(url)
        .header("Accept", accept)
        .call()
        .unwrap_or_else(|e| {
            panic!("GET {url}: {e} (is the registry up? run `cargo xtask images`)")
        });
    assert_eq!(resp.status().as_u16(), 200, "GET {url}");
    serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap()
}

/// The agent configuration shipped in `configs/`, whose mirror sends
/// docker.io to the local registry.
fn shipped_config() -> AgentConfig {
    AgentConfig::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/agent.toml")).unwrap()
}

/// Where the mirror convention sends `image`: `127.0.0.1:5000/<repo>:<tag>`.
fn mirrored(image: &str) -> String {
    let r = Reference::parse(image).unwrap();
    let e = &mirror::endpoints(&shipped_config().registries, &r)[0];
    assert!(
        e.mirror && e.base_url == format!("http://{REGISTRY}"),
        "{image} → {e:?}"
    );
    format!("{REGISTRY}/{}:{}", e.repository, r.manifest_reference())
}

#[test]
fn the_catalog_lists_every_test_image() {
    let cat = get_json(
        &format!("http://{REGISTRY}/v2/_catalog"),
        "application/json",
    );
    let repos: Vec<&str> = cat["repositories"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    for want in ["library/busybox", "library/nginx", "rudder/echo"] {
        assert!(repos.contains(&want), "{want} missing from {repos:?}");
    }
    let tags = get_json(
        &format!("http://{REGISTRY}/v2/library/busybox/tags/list"),
        "application/json",
    );
    let tags: Vec<&str> = tags["tags"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| v.as_str())
        .collect();
    assert!(
        tags.contains(&"1.28") && tags.contains(&"latest"),
        "{tags:?}"
    );
}

#[test]
fn manifest_names_resolve_through_the_mirror() {
    let cfg = shipped_config();
    for (image, layers) in [
        ("busybox:1.28", 1),
        ("busybox", 1),
        ("nginx", 2),
        ("nginx:1.16.1", 2),
        ("rudder/echo", 2),
    ] {
        let r = Reference::parse(image).unwrap();
        let endpoints = mirror::endpoints(&cfg.registries, &r);
        let url = endpoints[0].manifest_url(&r);
        assert!(
            url.starts_with(&format!("http://{REGISTRY}/v2/")),
            "{image} → {url}"
        );
        let m = get_json(&url, "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(m["layers"].as_array().unwrap().len(), layers, "{image}");
        // The registry itself comes after the mirror, as the fallback.
        assert_eq!(
            endpoints.last().unwrap().base_url,
            "https://registry-1.docker.io"
        );
    }
}

/// Waits for a TCP connection to `addr` in the calling thread's namespace.
fn connect(addr: &str) -> TcpStream {
    let start = Instant::now();
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => return s,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(20),
                    "connect {addr}: {e}"
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[test]
#[cfg_attr(rudder_skip_privileged, ignore = "RUDDER_SKIP_PRIVILEGED=1")]
fn images_run_on_containerd_and_runc() {
    require_root();
    let containerd = Containerd::start();
    let ns = NetNs::new();
    let netns = format!("network:{}", ns.path().display());

    // busybox:1.28, pulled by the name the mirror gives it, runs a shell.
    let busybox = mirrored("busybox:1.28");
    containerd.ctr_ok(&["images", "pull", "--plain-http", &busybox]);
    let out = containerd.ctr_ok(&[
        "run",
        "--rm",
        "--with-ns",
        &netns,
        &busybox,
        "sh1",
        "sh",
        "-c",
        "echo hello $((40+2)); command -v nslookup",
    ]);
    assert!(out.contains("hello 42"), "{out}");
    assert!(
        out.to_lowercase().contains("usage") || out.contains("nslookup"),
        "busybox has nslookup: {out}"
    );

    // nginx:1.14.2 is the echo server on port 80, in the test's namespace.
    let nginx = mirrored("nginx:1.14.2");
    containerd.ctr_ok(&["images", "pull", "--plain-http", &nginx]);
    containerd.ctr_ok(&["run", "-d", "--with-ns", &netns, &nginx, "web"]);
    let (page, udp_reply) = ns.run(|| {
        let mut s = connect("127.0.0.1:80");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        let u = UdpSocket::bind("127.0.0.1:0").unwrap();
        u.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        u.send_to(b"ping", "127.0.0.1:9000").unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = u.recv_from(&mut buf).unwrap();
        (page, String::from_utf8_lossy(&buf[..n]).into_owned())
    });
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(
        page.contains("version=1.14.2") && page.contains("pod_ip=127.0.0.1"),
        "{page}"
    );
    assert_eq!(udp_reply, "ping");

    // busybox's wget takes Docker Hub's -T and --timeout (as the Kubernetes
    // documentation's `wget --spider --timeout=1 nginx`), and a server that
    // never answers times out with 1.
    let silent = ns.run(|| std::net::TcpListener::bind("127.0.0.1:81").unwrap());
    let started = Instant::now();
    let out = containerd.ctr_ok(&[
        "run",
        "--rm",
        "--with-ns",
        &netns,
        &busybox,
        "wget1",
        "sh",
        "-c",
        "wget -q -T 2 -O - http://127.0.0.1/ | head -c 200; echo; \
         wget --spider --timeout=1 http://127.0.0.1/ && echo spider-ok; \
         wget -q -O - -T 1 http://127.0.0.1:81/ 2>&1; echo silent-rc=$?",
    ]);
    drop(silent);
    assert!(out.contains("Welcome to nginx!"), "{out}");
    assert!(out.contains("spider-ok"), "{out}");
    assert!(!out.contains("Terminated"), "{out}");
    assert!(
        out.contains("download timed out") && out.contains("silent-rc=1"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "wget -T 1 took {:?}",
        started.elapsed()
    );

    // As PID 1 it stops on SIGTERM, with status 0.
    containerd.ctr_ok(&["task", "kill", "-s", "SIGTERM", "web"]);
    let start = Instant::now();
    loop {
        let tasks = containerd.ctr_ok(&["task", "ls"]);
        if tasks
            .lines()
            .any(|l| l.starts_with("web") && l.contains("STOPPED"))
        {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "web did not stop on SIGTERM: {tasks}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    containerd.ctr_ok(&["task", "delete", "web"]);
    containerd.ctr_ok(&["containers", "delete", "web"]);
}

/// A DNS server on the namespace's 127.0.0.1:53 that knows one name, as the
/// cluster DNS does once a Service exists: `myservice` in the first search
/// domain answers, every other search domain says NXDOMAIN.
fn one_name_dns(
    ns: &NetNs,
) -> (
    std::sync::Arc<std::sync::atomic::AtomicBool>,
    std::thread::JoinHandle<()>,
) {
    use rudder_control::dns::message::{self as m, RData, Record};
    let sock = ns
        .run(|| UdpSocket::bind("127.0.0.1:53"))
        .expect("bind :53 in the namespace");
    sock.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stopped = std::sync::Arc::clone(&stop);
    let server = std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while !stopped.load(std::sync::atomic::Ordering::Relaxed) {
            let Ok((n, peer)) = sock.recv_from(&mut buf) else {
                continue;
            };
            let Ok(q) = m::parse_query(&buf[..n]) else {
                continue;
            };
            let known = q.name == "myservice.ns1.svc.cluster.local";
            let (rcode, answers) = match (known, q.qtype) {
                (true, m::TYPE_A) => (
                    m::RCODE_NOERROR,
                    vec![Record {
                        name: q.name.clone(),
                        ttl: 5,
                        data: RData::A(std::net::Ipv4Addr::new(10, 96, 0, 7)),
                    }],
                ),
                (true, _) => (m::RCODE_NOERROR, vec![]),
                (false, _) => (m::RCODE_NXDOMAIN, vec![]),
            };
            let _ = sock.send_to(
                &m::encode_response(&q, rcode, true, &answers, &[], 512),
                peer,
            );
        }
    });
    (stop, server)
}

#[test]
#[cfg_attr(rudder_skip_privileged, ignore = "RUDDER_SKIP_PRIVILEGED=1")]
fn busybox_nslookup_ends_the_documented_wait_loop_and_nginx_says_welcome() {
    require_root();
    let containerd = Containerd::start();
    let ns = NetNs::new();
    let netns = format!("network:{}", ns.path().display());
    let (stop, server) = one_name_dns(&ns);
    let dir = rudder_test_harness::TempDir::new();
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "nameserver 127.0.0.1\nsearch ns1.svc.cluster.local svc.cluster.local cluster.local\noptions ndots:5\n",
    )
    .unwrap();
    let mount = format!(
        "type=bind,src={},dst=/etc/resolv.conf,options=rbind:ro",
        resolv.display()
    );
    // The Kubernetes documentation's init container, with the short name:
    // the loop ends at once when the name resolves in one search domain
    // (the others answering NXDOMAIN), and a name nowhere still fails.
    let busybox = mirrored("busybox:1.28");
    containerd.ctr_ok(&["images", "pull", "--plain-http", &busybox]);
    let out = containerd.ctr_ok(&[
        "run",
        "--rm",
        "--with-ns",
        &netns,
        "--mount",
        &mount,
        &busybox,
        "wait-loop",
        "sh",
        "-c",
        "n=0; until nslookup myservice; do n=$((n+1)); [ $n -ge 3 ] && break; sleep 1; done; echo tries=$n; nslookup nothere; echo nothere=$?",
    ]);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    server.join().unwrap();
    assert!(out.contains("10.96.0.7"), "{out}");
    assert!(out.contains("tries=0"), "the wait loop went round: {out}");
    assert!(
        out.contains("nothere=1"),
        "an unknown name succeeded: {out}"
    );

    // nginx's default page at /, the echo lines inside it.
    let nginx = mirrored("nginx");
    containerd.ctr_ok(&["images", "pull", "--plain-http", &nginx]);
    containerd.ctr_ok(&["run", "-d", "--with-ns", &netns, &nginx, "welcome"]);
    let page = ns.run(|| {
        let mut s = connect("127.0.0.1:80");
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .unwrap();
        let mut page = String::new();
        s.read_to_string(&mut page).unwrap();
        page
    });
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    assert!(
        page.contains("Server: nginx\r\n") && page.contains("Content-Type: text/html"),
        "{page}"
    );
    assert!(page.contains("<title>Welcome to nginx!</title>"), "{page}");
    assert!(page.lines().any(|l| l == "version=latest"), "{page}");
    containerd.ctr_ok(&["task", "kill", "-s", "SIGKILL", "welcome"]);
    let start = Instant::now();
    while !containerd
        .ctr_ok(&["task", "ls"])
        .lines()
        .any(|l| l.starts_with("welcome") && l.contains("STOPPED"))
    {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "welcome did not stop"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    containerd.ctr_ok(&["task", "delete", "welcome"]);
    containerd.ctr_ok(&["containers", "delete", "welcome"]);
}
