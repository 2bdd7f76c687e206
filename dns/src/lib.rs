//! Cluster DNS served by `rudder server`: the zone of Services and their
//! endpoints (see [`zone`]) over UDP and TCP, everything else forwarded to
//! the host's resolvers for the cluster's own clients ([`forward`]). TCP
//! clients get 10 s per read and at most [`MAX_TCP`] connections. It watches Services and EndpointSlices through the
//! API like any client. The `kube-system/kube-dns` Service (the cluster DNS
//! IP the kubelets write into pods' resolv.conf) points at it.

pub mod forward;
pub mod message;
pub mod zone;

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Arc, RwLock},
    time::Duration,
};

use futures_util::StreamExt as _;
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::{Api, Client, runtime::watcher};
use rudder_informer::Reflector;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, UdpSocket},
};

use message::{Query, RCODE_FORMERR, RCODE_NOTIMP, RCODE_REFUSED, RCODE_SERVFAIL};
use zone::{Resolution, Zone};

/// How the DNS server runs.
#[derive(Debug, Clone)]
pub struct DnsConfig {
    pub listen: SocketAddr,
    /// The cluster domain, `cluster.local`.
    pub domain: String,
    pub service_cidr: (Ipv4Addr, u8),
    /// Where names outside the cluster go (the host's resolv.conf).
    pub upstreams: Vec<SocketAddr>,
    /// The clients names outside the cluster are resolved for.
    pub forward_for: Vec<forward::Cidr>,
}

/// TCP connections served at once.
pub const MAX_TCP: usize = 256;
/// How long a TCP client has for each read.
const TCP_READ: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DnsError {
    #[error("cluster DNS: cannot listen on {addr} ({proto}): {source}")]
    Listen {
        addr: SocketAddr,
        proto: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The nameservers of a resolv.conf, port 53, except `exclude`.
pub fn upstreams_from_resolv_conf(text: &str, exclude: &[Ipv4Addr]) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .filter_map(|a| a.trim().parse::<std::net::IpAddr>().ok())
        .filter(|a| !matches!(a, std::net::IpAddr::V4(v4) if exclude.contains(v4)))
        .map(|a| SocketAddr::new(a, 53))
        .collect()
}

struct State {
    zone: RwLock<Option<Arc<Zone>>>,
    cfg: DnsConfig,
    forwarder: forward::Forwarder,
}

/// Binds the sockets (so a bad address fails at start) and serves until
/// `stop` turns true.
pub async fn run(
    client: Client,
    cfg: DnsConfig,
    mut stop: tokio::sync::watch::Receiver<bool>,
    ready: Option<tokio::sync::oneshot::Sender<Result<(), String>>>,
) -> Result<(), DnsError> {
    let bound = async {
        let udp = UdpSocket::bind(cfg.listen)
            .await
            .map_err(|source| DnsError::Listen {
                addr: cfg.listen,
                proto: "udp",
                source,
            })?;
        let tcp = TcpListener::bind(cfg.listen)
            .await
            .map_err(|source| DnsError::Listen {
                addr: cfg.listen,
                proto: "tcp",
                source,
            })?;
        Ok::<_, DnsError>((udp, tcp))
    }
    .await;
    let (udp, tcp) = match bound {
        Ok(b) => {
            if let Some(r) = ready {
                let _ = r.send(Ok(()));
            }
            b
        }
        Err(e) => {
            if let Some(r) = ready {
                let _ = r.send(Err(e.to_string()));
            }
            return Err(e);
        }
    };
    tracing::info!(listen = %cfg.listen, domain = %cfg.domain, upstreams = ?cfg.upstreams, "cluster DNS");
    let state = Arc::new(State {
        zone: RwLock::new(None),
        forwarder: forward::Forwarder::new(cfg.upstreams.clone(), cfg.forward_for.clone()),
        cfg,
    });
    let tasks = [
        tokio::spawn(follow(client, Arc::clone(&state))),
        tokio::spawn(serve_udp(Arc::new(udp), Arc::clone(&state))),
        tokio::spawn(serve_tcp(tcp, Arc::clone(&state))),
    ];
    let _ = stop.wait_for(|s| *s).await;
    for t in tasks {
        t.abort();
    }
    Ok(())
}

enum Input {
    Service(Box<watcher::Event<Service>>),
    Slice(Box<watcher::Event<EndpointSlice>>),
}

/// Keeps the zone current from the watches (the informer's reflectors: a
/// relist replaces a kind's objects only once complete). The zone is
/// rebuilt once per burst of events, after both kinds have been listed.
async fn follow(client: Client, state: Arc<State>) {
    let services = rudder_informer::events(
        Api::<Service>::all(client.clone()),
        watcher::Config::default(),
        "cluster DNS services",
    )
    .map(|e| Input::Service(Box::new(e)));
    let slices = rudder_informer::events(
        Api::<EndpointSlice>::all(client),
        watcher::Config::default(),
        "cluster DNS endpointslices",
    )
    .map(|e| Input::Slice(Box::new(e)));
    let mut inputs = futures_util::stream::select(services.boxed(), slices.boxed());
    let mut svcs = Reflector::<Service>::new();
    let mut sls = Reflector::<EndpointSlice>::new();
    while let Some(first) = inputs.next().await {
        let mut changed = false;
        let mut input = Some(first);
        while let Some(i) = input {
            changed |= match i {
                Input::Service(ev) => moved(&svcs.apply(*ev)),
                Input::Slice(ev) => moved(&sls.apply(*ev)),
            };
            input = futures_util::FutureExt::now_or_never(inputs.next()).flatten();
        }
        if svcs.synced() && sls.synced() && changed {
            let z = Zone::build(
                &state.cfg.domain,
                Some(state.cfg.service_cidr),
                svcs.objects().values().map(AsRef::as_ref),
                sls.objects().values().map(AsRef::as_ref),
            );
            *state
                .zone
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(z));
        }
    }
}

/// Whether a watch event changed what the zone is built from.
fn moved<T>(d: &rudder_informer::Delta<T>) -> bool {
    d.relisted || !d.changes.is_empty()
}

/// The answer to one message, or `None` to forward it upstream (or drop it).
enum Reply {
    Bytes(Vec<u8>),
    Forward,
    Drop,
}

fn answer(state: &State, msg: &[u8], max_len: usize) -> Reply {
    let q = match message::parse_query(msg) {
        Ok(q) => q,
        Err(e) => {
            tracing::debug!(error = %e, "cluster DNS: bad query");
            return formerr(msg).map_or(Reply::Drop, Reply::Bytes);
        }
    };
    if q.opcode != 0 || q.qclass != 1 {
        return Reply::Bytes(message::encode_response(
            &q,
            RCODE_NOTIMP,
            false,
            &[],
            &[],
            max_len,
        ));
    }
    let zone = state
        .zone
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    let max = q
        .edns_size
        .map_or(max_len, |s| usize::from(s).min(max_len.max(512)));
    let Some(zone) = zone else {
        // Not synced yet: in-zone names fail so clients retry.
        if q.name.ends_with(&state.cfg.domain) {
            return Reply::Bytes(message::encode_response(
                &q,
                RCODE_SERVFAIL,
                false,
                &[],
                &[],
                max,
            ));
        }
        return Reply::Forward;
    };
    match zone.resolve(&q.name, q.qtype) {
        Resolution::Answer {
            rcode,
            answers,
            authority,
        } => Reply::Bytes(message::encode_response(
            &q, rcode, true, &answers, &authority, max,
        )),
        Resolution::Forward => Reply::Forward,
    }
}

/// FORMERR for a message whose header at least is readable.
fn formerr(msg: &[u8]) -> Option<Vec<u8>> {
    if msg.len() < 12 || msg[2] & 0x80 != 0 {
        return None;
    }
    let mut out = msg[..12].to_vec();
    out[2] = 0x80 | (msg[2] & 0x79);
    out[3] = 0x80 | RCODE_FORMERR;
    out[4..12].fill(0);
    Some(out)
}

fn rcode_only(msg: &[u8], rcode: u8) -> Option<Vec<u8>> {
    let q: Query = message::parse_query(msg).ok()?;
    Some(message::encode_response(&q, rcode, false, &[], &[], 512))
}

/// The answer to a query outside the cluster from `client`: the
/// forwarder's, `REFUSED` for clients it does not serve, `SERVFAIL` when
/// the upstreams do not answer (or too many are in flight).
async fn forward(state: &State, client: std::net::IpAddr, msg: &[u8]) -> Option<Vec<u8>> {
    if !state.forwarder.serves(client) {
        return rcode_only(msg, RCODE_REFUSED);
    }
    let q = message::parse_query(msg).ok()?;
    match state.forwarder.resolve(&q, msg).await {
        Some(b) => Some(b),
        None => rcode_only(msg, RCODE_SERVFAIL),
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, state: Arc<State>) {
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, peer)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let msg = buf[..n].to_vec();
        match answer(&state, &msg, 4096) {
            Reply::Bytes(b) => {
                let _ = sock.send_to(&b, peer).await;
            }
            Reply::Drop => {}
            Reply::Forward => {
                let sock = Arc::clone(&sock);
                let state = Arc::clone(&state);
                tokio::spawn(async move {
                    if let Some(b) = forward(&state, peer.ip(), &msg).await {
                        let _ = sock.send_to(&b, peer).await;
                    }
                });
            }
        }
    }
}

async fn serve_tcp(listener: TcpListener, state: Arc<State>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP));
    loop {
        let Ok(slot) = Arc::clone(&slots).acquire_owned().await else {
            return;
        };
        let Ok((mut conn, peer)) = listener.accept().await else {
            // Out of descriptors: back off rather than spin.
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let _slot = slot;
            loop {
                let mut len = [0u8; 2];
                let read = tokio::time::timeout(TCP_READ, conn.read_exact(&mut len));
                if !matches!(read.await, Ok(Ok(_))) {
                    return;
                }
                let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
                let read = tokio::time::timeout(TCP_READ, conn.read_exact(&mut msg));
                if !matches!(read.await, Ok(Ok(_))) {
                    return;
                }
                let out = match answer(&state, &msg, 65535) {
                    Reply::Bytes(b) => Some(b),
                    Reply::Drop => None,
                    Reply::Forward => forward(&state, peer.ip(), &msg).await,
                };
                let Some(out) = out else {
                    return;
                };
                let mut framed = (out.len() as u16).to_be_bytes().to_vec();
                framed.extend_from_slice(&out);
                if conn.write_all(&framed).await.is_err() {
                    return;
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_skip_the_cluster_dns_itself() {
        let conf = "search default.svc.cluster.local\nnameserver 10.96.0.10\nnameserver 192.0.2.53\nnameserver ::1\noptions ndots:5\n";
        let ups = upstreams_from_resolv_conf(conf, &["10.96.0.10".parse().unwrap()]);
        assert_eq!(
            ups,
            vec![
                "192.0.2.53:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
    }

    #[test]
    fn formerr_keeps_the_id() {
        let mut q = message::encode_query(0xbeef, "x", message::TYPE_A);
        q.truncate(14);
        let r = formerr(&q).unwrap();
        assert_eq!(&r[..2], &[0xbe, 0xef]);
        assert_eq!(r[3] & 0x0f, RCODE_FORMERR);
        assert_eq!(r[2] & 0x80, 0x80);
    }
}
