//! Servers that answer with their own address, in a test's namespace: what
//! Service tests and benchmarks send traffic to.

use std::{
    io::Write as _,
    net::{SocketAddrV4, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd as _,
    path::PathBuf,
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
    ns: PathBuf,
    addr: SocketAddrV4,
    _sink: Option<UdpSocket>,
}

impl AddressServer {
    #[track_caller]
    pub fn start(ns: &NetNs, addr: SocketAddrV4, udp: Udp) -> Self {
        let (tcp, socket) = ns.run(|| {
            let t = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind tcp {addr}: {e}"));
            let u = UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind udp {addr}: {e}"));
            (t, u)
        });
        let stop = Arc::new(AtomicBool::new(false));
        let answer = addr.ip().to_string();
        let mut threads = vec![];
        let (s, a) = (stop.clone(), answer.clone());
        threads.push(std::thread::spawn(move || {
            for conn in tcp.incoming() {
                if s.load(Ordering::Relaxed) {
                    return;
                }
                if let Ok(mut c) = conn {
                    let _ = c.write_all(a.as_bytes());
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
                        if let Ok((_, peer)) = socket.recv_from(&mut buf) {
                            let _ = socket.send_to(answer.as_bytes(), peer);
                        }
                    }
                }));
                None
            }
        };
        Self {
            stop,
            threads,
            ns: ns.path(),
            addr,
            _sink: sink,
        }
    }
}

impl Drop for AddressServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocked accept with a connection from inside the namespace.
        let (ns, addr) = (self.ns.clone(), self.addr);
        let _ = std::thread::spawn(move || {
            let f = std::fs::File::open(ns).ok()?;
            // SAFETY: a netns file; only this short-lived thread changes namespace.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            TcpStream::connect_timeout(&addr.into(), Duration::from_secs(1)).ok()
        })
        .join();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
