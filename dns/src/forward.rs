//! Names outside the cluster, asked of the upstream resolvers, as a
//! resolver that does not become anyone's weapon:
//!
//! - only for clients in the configured networks (the pod and service
//!   networks, loopback and private ranges by default): anyone else gets
//!   `REFUSED`, so the cluster DNS is not an open resolver;
//! - at most [`MAX_INFLIGHT`] forwards at once (more get `SERVFAIL` at
//!   once rather than a task and a socket each);
//! - each upstream query has an id of its own, and only an answer from the
//!   upstream asked, with that id and the same question, is taken (an
//!   off-path spoofer must guess a 16-bit id and a port, and cannot answer
//!   for the client's own id);
//! - answers are cached (keyed by name, type and class; for their smallest
//!   TTL, at most [`MAX_TTL`]; TTLs counted down when served; at most
//!   [`MAX_ENTRIES`] entries).

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Mutex,
    time::{Duration, Instant},
};

use tokio::{net::UdpSocket, sync::Semaphore};

use super::message::{self, Query};

/// Forwards in flight at once.
pub const MAX_INFLIGHT: usize = 256;
/// The longest an answer is cached.
pub const MAX_TTL: u32 = 300;
/// How long an answer without records (NXDOMAIN without SOA) is cached.
const EMPTY_TTL: u32 = 5;
/// Answers cached at most.
pub const MAX_ENTRIES: usize = 10_000;
/// How long each upstream has to answer.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);

/// A network: an address and a prefix length.
pub type Cidr = (IpAddr, u8);

/// Whether `ip` is in `net`.
pub fn contains(net: &Cidr, ip: IpAddr) -> bool {
    match (net.0, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(net.1.min(32)))
                .unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(net.1.min(128)))
                .unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        (IpAddr::V4(_), IpAddr::V6(a)) => a
            .to_ipv4_mapped()
            .is_some_and(|a| contains(net, IpAddr::V4(a))),
        _ => false,
    }
}

/// The networks forwarded for when none are configured: loopback, the
/// private ranges (RFC 1918, CGNAT, unique local) and link-local.
pub fn default_networks() -> Vec<Cidr> {
    [
        ("127.0.0.0", 8),
        ("10.0.0.0", 8),
        ("172.16.0.0", 12),
        ("192.168.0.0", 16),
        ("100.64.0.0", 10),
        ("169.254.0.0", 16),
        ("::1", 128),
        ("fc00::", 7),
        ("fe80::", 10),
    ]
    .iter()
    .filter_map(|(a, p)| Some((a.parse().ok()?, *p)))
    .collect()
}

struct Cached {
    bytes: Vec<u8>,
    ttl_offsets: Vec<usize>,
    stored: Instant,
    ttl: u32,
}

type Key = (String, u16, u16);

/// The forwarder: upstreams, the in-flight limit, the cache.
pub struct Forwarder {
    upstreams: Vec<SocketAddr>,
    allowed: Vec<Cidr>,
    permits: Semaphore,
    cache: Mutex<HashMap<Key, Cached>>,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Forwarder")
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

impl Forwarder {
    pub fn new(upstreams: Vec<SocketAddr>, allowed: Vec<Cidr>) -> Self {
        Self {
            upstreams,
            allowed,
            permits: Semaphore::new(MAX_INFLIGHT),
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Whether names outside the cluster are resolved for `client`.
    pub fn serves(&self, client: IpAddr) -> bool {
        self.allowed.iter().any(|n| contains(n, client))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Cached>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn cached(&self, key: &Key, id: u16) -> Option<Vec<u8>> {
        let mut cache = self.lock();
        let c = cache.get(key)?;
        let age = c.stored.elapsed().as_secs();
        if age >= u64::from(c.ttl) {
            cache.remove(key);
            return None;
        }
        let mut out = c.bytes.clone();
        out[..2].copy_from_slice(&id.to_be_bytes());
        let age = age as u32;
        for &at in &c.ttl_offsets {
            let ttl = u32::from_be_bytes([out[at], out[at + 1], out[at + 2], out[at + 3]]);
            out[at..at + 4].copy_from_slice(&ttl.saturating_sub(age).to_be_bytes());
        }
        Some(out)
    }

    fn store(&self, key: Key, bytes: &[u8]) {
        let Ok(info) = message::parse_response(bytes) else {
            return;
        };
        if info.truncated || !matches!(info.rcode, message::RCODE_NOERROR | message::RCODE_NXDOMAIN)
        {
            return;
        }
        let ttl = info.min_ttl.unwrap_or(EMPTY_TTL).min(MAX_TTL);
        if ttl == 0 {
            return;
        }
        let mut cache = self.lock();
        if cache.len() >= MAX_ENTRIES {
            let now = Instant::now();
            cache.retain(|_, c| now.duration_since(c.stored).as_secs() < u64::from(c.ttl));
            if cache.len() >= MAX_ENTRIES {
                cache.clear();
            }
        }
        cache.insert(
            key,
            Cached {
                bytes: bytes.to_vec(),
                ttl_offsets: info.ttl_offsets,
                stored: Instant::now(),
                ttl,
            },
        );
    }

    /// The answer to `msg` (query `q`) from the cache or the upstreams, or
    /// `None` (then the caller answers SERVFAIL).
    pub async fn resolve(&self, q: &Query, msg: &[u8]) -> Option<Vec<u8>> {
        let key = (q.name.to_ascii_lowercase(), q.qtype, q.qclass);
        if let Some(hit) = self.cached(&key, q.id) {
            return Some(hit);
        }
        let _permit = self.permits.try_acquire().ok()?;
        for up in &self.upstreams {
            if let Some(mut answer) = ask(*up, q, msg).await {
                self.store(key, &answer);
                answer[..2].copy_from_slice(&q.id.to_be_bytes());
                return Some(answer);
            }
        }
        None
    }
}

/// One upstream, over UDP, with an id of our own: the first datagram from
/// it that answers this id and question, within the timeout.
async fn ask(up: SocketAddr, q: &Query, msg: &[u8]) -> Option<Vec<u8>> {
    let bind: SocketAddr = if up.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = UdpSocket::bind(bind).await.ok()?;
    let id: u16 = rand::random();
    let mut out = msg.to_vec();
    out[..2].copy_from_slice(&id.to_be_bytes());
    sock.send_to(&out, up).await.ok()?;
    let deadline = tokio::time::Instant::now() + UPSTREAM_TIMEOUT;
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = tokio::time::timeout_at(deadline, sock.recv_from(&mut buf))
            .await
            .ok()?
            .ok()?;
        let answer = &buf[..n];
        let matches = from == up
            && n >= 12
            && answer[..2] == id.to_be_bytes()
            && answer[2] & 0x80 != 0
            && message::parse_response(answer)
                .is_ok_and(|i| i.question.eq_ignore_ascii_case(&q.question));
        if matches {
            return Some(answer.to_vec());
        }
        tracing::debug!(%from, "cluster DNS: an upstream answer that does not match was dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks() {
        let n: Cidr = ("10.244.0.0".parse().unwrap(), 16);
        assert!(contains(&n, "10.244.3.4".parse().unwrap()));
        assert!(!contains(&n, "10.245.0.1".parse().unwrap()));
        assert!(contains(&n, "::ffff:10.244.0.1".parse().unwrap()));
        let f = Forwarder::new(vec![], default_networks());
        assert!(f.serves("192.168.1.5".parse().unwrap()));
        assert!(f.serves("127.0.0.1".parse().unwrap()));
        assert!(!f.serves("8.8.8.8".parse().unwrap()));
        assert!(!f.serves("2001:db8::1".parse().unwrap()));
    }

    #[tokio::test]
    async fn only_the_upstream_asked_with_our_id_is_believed_and_answers_are_cached() {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let up = upstream.local_addr().unwrap();
        let spoofer = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let f = Forwarder::new(vec![up], default_networks());
        let msg = message::encode_query(0x1234, "example.com", message::TYPE_A);
        let q = message::parse_query(&msg).unwrap();
        let served = tokio::spawn(async move {
            let mut buf = [0u8; 512];
            let (n, client) = upstream.recv_from(&mut buf).await.unwrap();
            let asked = message::parse_query(&buf[..n]).unwrap();
            let answer = |id: u16| {
                let mut r = message::encode_response(
                    &asked,
                    message::RCODE_NOERROR,
                    false,
                    &[message::Record {
                        name: "example.com".into(),
                        ttl: 60,
                        data: message::RData::A("93.184.216.34".parse().unwrap()),
                    }],
                    &[],
                    512,
                );
                r[..2].copy_from_slice(&id.to_be_bytes());
                r
            };
            // A spoofed answer from elsewhere, one with the client's id,
            // then the real one.
            spoofer.send_to(&answer(asked.id), client).await.unwrap();
            upstream.send_to(&answer(0x1234), client).await.unwrap();
            upstream.send_to(&answer(asked.id), client).await.unwrap();
            asked.id
        });
        let got = f.resolve(&q, &msg).await.unwrap();
        let upstream_id = served.await.unwrap();
        assert_ne!(
            upstream_id, 0x1234,
            "upstream queries carry an id of their own"
        );
        assert_eq!(&got[..2], &[0x12, 0x34]);
        let (_, _, answers) = message::decode_answer(&got).unwrap();
        assert_eq!(answers[0].2, "93.184.216.34");
        // The upstream is gone: the cache answers, with the new id.
        let again = message::encode_query(0x4321, "EXAMPLE.com", message::TYPE_A);
        let q2 = message::parse_query(&again).unwrap();
        let hit = f.resolve(&q2, &again).await.unwrap();
        assert_eq!(&hit[..2], &[0x43, 0x21]);
    }
}
