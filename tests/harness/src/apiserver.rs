//! A test double of the Kubernetes apiserver for Node objects only: list,
//! get, watch (chunked, from a resourceVersion), and merge-patch of nodes
//! and nodes/status, over plain HTTP inside a test's namespace. Enough for
//! the network daemon's real Kubernetes client (kube-rs) until Rudder's own
//! apiserver exists; tests drive it with [`FakeApiServer::put_node`] and
//! [`FakeApiServer::delete_node`].

use std::{
    collections::BTreeMap,
    io::{BufRead as _, BufReader, Read as _, Write as _},
    net::{SocketAddrV4, TcpListener, TcpStream},
    os::fd::AsRawFd as _,
    path::Path,
    sync::{
        Arc, Condvar, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::{Value, json};

use crate::NetNs;

#[derive(Debug, Default)]
struct State {
    rv: u64,
    nodes: BTreeMap<String, Value>,
    events: Vec<(u64, &'static str, Value)>,
}

type Shared = Arc<(Mutex<State>, Condvar)>;

#[derive(Debug)]
pub struct FakeApiServer {
    state: Shared,
    stop: Arc<AtomicBool>,
    listener: TcpListener,
    thread: Option<JoinHandle<()>>,
    addr: SocketAddrV4,
}

impl FakeApiServer {
    /// Listens on `addr` inside `ns`.
    #[track_caller]
    pub fn start(ns: &NetNs, addr: SocketAddrV4) -> Self {
        let listener = ns
            .run(|| TcpListener::bind(addr))
            .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        let state: Shared = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (l, st, sp) = (listener.try_clone().unwrap(), state.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            for conn in l.incoming() {
                if sp.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(c) = conn {
                    let (st, sp) = (st.clone(), sp.clone());
                    std::thread::spawn(move || serve(c, &st, &sp));
                }
            }
        });
        Self {
            state,
            stop,
            listener,
            thread: Some(thread),
            addr,
        }
    }

    /// Writes a kubeconfig for this server (plain HTTP, no credentials).
    pub fn write_kubeconfig(&self, path: &Path) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\n\
             users:\n- name: fake\n  user: {{}}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n\
             current-context: fake\n",
            self.addr
        );
        std::fs::write(path, text).unwrap();
    }

    /// Creates or replaces a Node.
    pub fn put_node(&self, mut node: Value) {
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        s.rv += 1;
        let name = node["metadata"]["name"]
            .as_str()
            .expect("metadata.name")
            .to_string();
        let kind = if s.nodes.contains_key(&name) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        node["apiVersion"] = json!("v1");
        node["kind"] = json!("Node");
        node["metadata"]["resourceVersion"] = json!(s.rv.to_string());
        if node["metadata"]["uid"].is_null() {
            node["metadata"]["uid"] = json!(format!("uid-{name}"));
        }
        let rv = s.rv;
        s.events.push((rv, kind, node.clone()));
        s.nodes.insert(name, node);
        cv.notify_all();
    }

    /// Deletes a Node.
    pub fn delete_node(&self, name: &str) {
        let (m, cv) = &*self.state;
        let mut s = m.lock().unwrap();
        if let Some(mut n) = s.nodes.remove(name) {
            s.rv += 1;
            n["metadata"]["resourceVersion"] = json!(s.rv.to_string());
            let rv = s.rv;
            s.events.push((rv, "DELETED", n));
            cv.notify_all();
        }
    }

    /// The Node as stored.
    pub fn node(&self, name: &str) -> Option<Value> {
        self.state.0.lock().unwrap().nodes.get(name).cloned()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        self.state.1.notify_all();
        // SAFETY: shutdown of a listener clone this value owns; wakes accept.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn respond(c: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let text = body.to_string();
    write!(
        c,
        "HTTP/1.1 {code} {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{text}",
        if code < 300 { "OK" } else { "Error" },
        text.len()
    )
}

fn status(code: u16, reason: &str, msg: &str) -> Value {
    json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
           "message": msg, "reason": reason, "code": code})
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

fn serve(c: TcpStream, state: &Shared, stop: &AtomicBool) {
    let mut reader = BufReader::new(c.try_clone().unwrap());
    let mut c = c;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let mut len = 0usize;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("content-length")
            {
                len = v.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let (path, query) = target.split_once('?').unwrap_or((&target, ""));
        let q: BTreeMap<&str, &str> = query
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        let seg: Vec<&str> = path
            .trim_start_matches("/api/v1/nodes")
            .trim_start_matches('/')
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        let res = if !path.starts_with("/api/v1/nodes") {
            respond(
                &mut c,
                404,
                &status(404, "NotFound", &format!("{path}: only nodes are served")),
            )
        } else if method == "GET"
            && seg.is_empty()
            && matches!(q.get("watch"), Some(&"true" | &"1"))
        {
            let from: u64 = q
                .get("resourceVersion")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let timeout: u64 = q
                .get("timeoutSeconds")
                .and_then(|v| v.parse().ok())
                .unwrap_or(60);
            watch(&mut c, state, stop, from, Duration::from_secs(timeout));
            return;
        } else if method == "GET" && seg.is_empty() {
            let s = state.0.lock().unwrap();
            let items: Vec<Value> = s.nodes.values().cloned().collect();
            let list = json!({"kind": "NodeList", "apiVersion": "v1",
                              "metadata": {"resourceVersion": s.rv.to_string()}, "items": items});
            drop(s);
            respond(&mut c, 200, &list)
        } else if let [name, rest @ ..] = seg.as_slice() {
            let name = (*name).to_string();
            match (method.as_str(), rest) {
                ("GET", []) => match state.0.lock().unwrap().nodes.get(&name).cloned() {
                    Some(n) => respond(&mut c, 200, &n),
                    None => respond(
                        &mut c,
                        404,
                        &status(404, "NotFound", &format!("nodes \"{name}\" not found")),
                    ),
                },
                ("PATCH", [] | ["status"]) => {
                    let patch: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let (m, cv) = &**state;
                    let mut s = m.lock().unwrap();
                    if let Some(mut n) = s.nodes.get(&name).cloned() {
                        merge(&mut n, &patch);
                        s.rv += 1;
                        n["metadata"]["resourceVersion"] = json!(s.rv.to_string());
                        let rv = s.rv;
                        s.events.push((rv, "MODIFIED", n.clone()));
                        s.nodes.insert(name, n.clone());
                        cv.notify_all();
                        drop(s);
                        respond(&mut c, 200, &n)
                    } else {
                        drop(s);
                        respond(
                            &mut c,
                            404,
                            &status(404, "NotFound", &format!("nodes \"{name}\" not found")),
                        )
                    }
                }
                _ => respond(
                    &mut c,
                    405,
                    &status(405, "MethodNotAllowed", &format!("{method} {path}")),
                ),
            }
        } else {
            respond(&mut c, 404, &status(404, "NotFound", path))
        };
        if res.is_err() {
            return;
        }
    }
}

fn watch(c: &mut TcpStream, state: &Shared, stop: &AtomicBool, mut from: u64, timeout: Duration) {
    let end = Instant::now() + timeout;
    if write!(
        c,
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .is_err()
    {
        return;
    }
    let (m, cv) = &**state;
    while !stop.load(Ordering::Relaxed) && Instant::now() < end {
        let pending: Vec<Value> = {
            let s = m.lock().unwrap();
            let s = if s.events.last().is_none_or(|e| e.0 <= from) {
                cv.wait_timeout(s, Duration::from_millis(500)).unwrap().0
            } else {
                s
            };
            let since = from;
            from = s.events.last().map_or(from, |e| e.0.max(from));
            s.events
                .iter()
                .filter(|e| e.0 > since)
                .map(|(_, t, o)| json!({"type": t, "object": o}))
                .collect()
        };
        for ev in pending {
            let line = format!("{ev}\n");
            if write!(c, "{:x}\r\n{line}\r\n", line.len())
                .and_then(|()| c.flush())
                .is_err()
            {
                return;
            }
        }
    }
    let _ = write!(c, "0\r\n\r\n");
}
