//! Servers that answer with their own address, in a test's namespace: what
//! Service tests and benchmarks send traffic to.

use std::{
    io::Write as _,
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread::JoinHandle,
    time::Duration,
};

use crate::NetNs;

/// What the server does with UDP datagrams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Udp {
    /// Answer each datagram with the server's address.
    Answer,
    /// Bind the port but never read: datagrams are dropped once the buffer
    /// is full (benchmarks: no reply traffic).
    Sink,
}

/// A TCP server (accept, write the server's address, close) and a UDP
/// socket on the same address, in a namespace; stopped on drop.
#[derive(Debug)]
pub struct AddressServer {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    listener: TcpListener,
    _sink: Option<UdpSocket>,
}

impl AddressServer {
    #[track_caller]
    pub fn start(ns: &NetNs, addr: SocketAddrV4, udp: Udp) -> Self {
        Self::start_inner(ns, addr, udp, false)
    }

    /// Like [`AddressServer::start`], answering `<server address> <client
    /// address>` (TCP and UDP): what NAT tests need to see.
    #[track_caller]
    pub fn start_reporting_peer(ns: &NetNs, addr: SocketAddrV4) -> Self {
        Self::start_inner(ns, addr, Udp::Answer, true)
    }

    #[track_caller]
    fn start_inner(ns: &NetNs, addr: SocketAddrV4, udp: Udp, peer: bool) -> Self {
        let (tcp, socket) = ns.run(|| {
            let t = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind tcp {addr}: {e}"));
            let u = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
            (t, u)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let listener = tcp.try_clone().expect("clone the listener");
        let answer = addr.ip().to_string();
        let mut threads = vec![];
        let (s, a) = (stop.clone(), answer.clone());
        threads.push(std::thread::spawn(move || {
            for conn in tcp.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(mut c) = conn {
                    let reply = match c.peer_addr() {
                        Ok(p) if peer => format!("{a} {}", p.ip()),
                        _ => a.clone(),
                    };
                    let _ = c.write_all(reply.as_bytes());
                }
            }
        }));
        let sink = match udp {
            Udp::Sink => Some(socket),
            Udp::Answer => {
                socket
                    .set_read_timeout(Some(Duration::from_millis(20)))
                    .expect("set timeout");
                let s = stop.clone();
                threads.push(std::thread::spawn(move || {
                    let mut buf = [0u8; 1500];
                    while !s.load(Ordering::Relaxed) {
                        if let Ok((_, from)) = socket.recv_from(&mut buf) {
                            let reply = if peer {
                                format!("{answer} {}", from.ip())
                            } else {
                                answer.clone()
                            };
                            let _ = socket.send_to(reply.as_bytes(), from);
                        }
                    }
                }));
                None
            }
        };
        Self {
            stop,
            threads,
            listener,
            _sink: sink,
        }
    }
}

impl Drop for AddressServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // shutdown(2) on a listening socket wakes the blocked accept (EINVAL),
        // whatever became of the address meanwhile.
        // SAFETY: shutdown on a descriptor this value owns (a clone of the
        // listener's), which stays open until after the threads are joined.
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// From inside `ns`: connects over TCP to `addr` and returns the answer.
pub fn tcp_ask(ns: &NetNs, addr: SocketAddrV4) -> std::io::Result<String> {
    use std::io::Read as _;
    ns.run(|| {
        let mut c = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(3))?;
        c.set_read_timeout(Some(Duration::from_secs(3)))?;
        let mut s = String::new();
        c.read_to_string(&mut s)?;
        Ok(s)
    })
}

/// From inside `ns`: sends one UDP datagram to `addr` and returns the
/// answer.
pub fn udp_ask(ns: &NetNs, addr: SocketAddrV4) -> std::io::Result<String> {
    ns.run(|| {
        let s = UdpSocket::bind("0.0.0.0:0")?;
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        for _ in 0..3 {
            s.send_to(b"hello", addr)?;
            let mut buf = [0u8; 200];
            if let Ok((n, _)) = s.recv_from(&mut buf) {
                return Ok(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no UDP answer from {addr}"),
        ))
    })
}
