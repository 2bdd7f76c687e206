//! Network namespaces of a test's own, and links inside them.

use std::{
    fs::File,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use crate::{run, unique_name};

const NETNS_DIR: &str = "/run/netns";

/// A named network namespace (`ip netns add`), deleted on drop. Its `lo` is
/// up.
#[derive(Debug)]
pub struct NetNs {
    name: String,
}

impl NetNs {
    #[track_caller]
    pub fn new() -> Self {
        let name = unique_name();
        run("ip", &["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        Path::new(NETNS_DIR).join(&self.name)
    }

    /// `ip -n <ns> <args>`.
    #[track_caller]
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Runs a program inside the namespace (`ip netns exec`).
    pub fn exec(&self, program: &str, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, program])
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{program}` in {}: {e}", self.name))
    }

    /// Runs `f` on a thread that has entered this namespace, and returns its
    /// result. Sockets and netlink calls made by `f` belong to the namespace;
    /// a panic in `f` is re-raised here.
    pub fn run<F, R>(&self, f: F) -> R
    where
        F: FnOnce() -> R + Send,
        R: Send,
    {
        let file = File::open(self.path())
            .unwrap_or_else(|e| panic!("cannot open {}: {e}", self.path().display()));
        std::thread::scope(|s| {
            s.spawn(move || {
                // SAFETY: `file` is an open netns file; setns only changes the
                // network namespace of this scoped thread, which ends with `f`.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p))
        })
    }

    /// A veth pair from this namespace to `peer`, with the given interface
    /// names (which are local to each namespace, so they never collide with
    /// the host's or other tests'). Both ends are up, with the given
    /// addresses (CIDR) if any.
    #[track_caller]
    pub fn veth_to(
        &self,
        peer: &NetNs,
        (local_name, local_addr): (&str, Option<&str>),
        (peer_name, peer_addr): (&str, Option<&str>),
    ) -> Veth {
        self.ip(&[
            "link", "add", local_name, "type", "veth", "peer", "name", peer_name, "netns",
            &peer.name,
        ]);
        for (ns, name, addr) in [(self, local_name, local_addr), (peer, peer_name, peer_addr)] {
            if let Some(a) = addr {
                ns.ip(&["addr", "add", a, "dev", name]);
            }
            ns.ip(&["link", "set", name, "up"]);
        }
        Veth {
            local: local_name.to_string(),
            peer: peer_name.to_string(),
        }
    }

    /// A bridge in this namespace, up, with an optional address.
    #[track_caller]
    pub fn bridge(&self, name: &str, addr: Option<&str>) {
        self.ip(&["link", "add", name, "type", "bridge"]);
        if let Some(a) = addr {
            self.ip(&["addr", "add", a, "dev", name]);
        }
        self.ip(&["link", "set", name, "up"]);
    }
}

impl Default for NetNs {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace removes every link in it; veth peers in other
        // namespaces go with their partner.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// The interface names of a veth pair made by [`NetNs::veth_to`].
#[derive(Debug, Clone)]
pub struct Veth {
    pub local: String,
    pub peer: String,
}

/// Deletes leftover namespaces for which `stale(name)` holds.
pub(crate) fn sweep(stale: impl Fn(&str) -> bool) {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if stale(&name) {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

impl NetNs {
    /// Sends one ICMP echo request to `dst` from inside this namespace and
    /// waits up to `timeout` for the matching reply. Returns the address
    /// the reply came from.
    pub fn ping(
        &self,
        dst: std::net::Ipv4Addr,
        timeout: std::time::Duration,
    ) -> Option<std::net::Ipv4Addr> {
        self.run(|| icmp_echo(dst, timeout))
    }
}

fn icmp_echo(dst: std::net::Ipv4Addr, timeout: std::time::Duration) -> Option<std::net::Ipv4Addr> {
    // SAFETY: plain socket(2) call; the descriptor is owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::IPPROTO_ICMP,
        )
    };
    assert!(
        fd >= 0,
        "raw ICMP socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: `fd` is a fresh descriptor that nothing else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    let id = (std::process::id() as u16) ^ 0x5a5a;
    let mut req = vec![8u8, 0, 0, 0];
    req.extend_from_slice(&id.to_be_bytes());
    req.extend_from_slice(&1u16.to_be_bytes());
    req.extend_from_slice(b"rudder-ping-payload");
    let sum = crate::packet::checksum(&req, 0);
    req[2..4].copy_from_slice(&sum.to_be_bytes());
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(dst).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `req` and `addr` are valid for the lengths passed.
    let rc = unsafe {
        libc::sendto(
            sock.as_raw_fd(),
            req.as_ptr().cast(),
            req.len(),
            0,
            std::ptr::from_ref(&addr).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    if rc < 0 {
        return None;
    }
    let deadline = std::time::Instant::now() + timeout;
    let mut buf = [0u8; 2048];
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        let mut pfd = libc::pollfd {
            fd: sock.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis().max(1) as i32) };
        if n <= 0 {
            return None;
        }
        // SAFETY: `buf` is writable for its length.
        let got = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if got < 28 {
            continue;
        }
        let ihl = usize::from(buf[0] & 0x0f) * 4;
        let icmp = &buf[ihl..got as usize];
        if icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes() {
            return Some(std::net::Ipv4Addr::new(buf[12], buf[13], buf[14], buf[15]));
        }
    }
    None
}

/// Makes TCP ports of the host's loopback reachable on a namespace's own
/// loopback (`127.0.0.1:<port>` inside → `127.0.0.1:<port>` outside), by a
/// user-space relay: a process inside the namespace (a kubelet) can reach
/// the test's apiserver and the local registry without any link or route
/// being added to the host. Stops listening on drop.
#[derive(Debug)]
pub struct LoopbackRelay {
    listeners: Vec<std::os::fd::RawFd>,
}

impl LoopbackRelay {
    /// Host loopback ports made reachable inside `ns`.
    #[track_caller]
    pub fn start(ns: &NetNs, ports: &[u16]) -> Self {
        Self::relay(Some(ns), None, ports)
    }

    /// The other way round: ports of `ns`'s loopback made reachable on the
    /// host's loopback (the apiserver reaching a kubelet inside).
    #[track_caller]
    pub fn start_into(ns: &NetNs, ports: &[u16]) -> Self {
        Self::relay(None, Some(ns), ports)
    }

    #[track_caller]
    fn relay(listen_in: Option<&NetNs>, connect_in: Option<&NetNs>, ports: &[u16]) -> Self {
        use std::{
            io::copy,
            net::{TcpListener, TcpStream},
            sync::mpsc,
        };
        // Accepted connections go to a connector thread living where the
        // targets are (threads it spawns stay in its namespace).
        let (tx, rx) = mpsc::channel::<(TcpStream, u16)>();
        let target_ns = connect_in.map(|n| File::open(n.path()).expect("open the netns"));
        std::thread::spawn(move || {
            if let Some(f) = target_ns {
                // SAFETY: an open netns file; only this thread (and the ones
                // it spawns) move into the namespace.
                if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return;
                }
            }
            for (inside, port) in rx {
                std::thread::spawn(move || {
                    let Ok(outside) = TcpStream::connect(("127.0.0.1", port)) else {
                        return;
                    };
                    let (Ok(mut a), Ok(mut b)) = (inside.try_clone(), outside.try_clone()) else {
                        return;
                    };
                    let t = std::thread::spawn(move || {
                        let _ = copy(&mut a, &mut b);
                        let _ = b.shutdown(std::net::Shutdown::Write);
                    });
                    let (mut ri, mut ro) = (inside, outside);
                    let _ = copy(&mut ro, &mut ri);
                    let _ = ri.shutdown(std::net::Shutdown::Both);
                    let _ = ro.shutdown(std::net::Shutdown::Both);
                    let _ = t.join();
                });
            }
        });
        let mut listeners = vec![];
        for &port in ports {
            let bind = || TcpListener::bind(("127.0.0.1", port));
            let listener: TcpListener = match listen_in {
                Some(ns) => ns.run(bind),
                None => bind(),
            }
            .unwrap_or_else(|e| panic!("relay: cannot listen on 127.0.0.1:{port}: {e}"));
            listeners.push(listener.as_raw_fd());
            let tx = tx.clone();
            std::thread::spawn(move || {
                for conn in listener.incoming() {
                    match conn {
                        Ok(c) => {
                            if tx.send((c, port)).is_err() {
                                return;
                            }
                        }
                        Err(_) => return,
                    }
                }
            });
        }
        Self { listeners }
    }
}

impl Drop for LoopbackRelay {
    fn drop(&mut self) {
        for fd in &self.listeners {
            // SAFETY: shutdown(2) on a listening socket we own wakes its
            // accept loop, which then ends and closes it.
            unsafe { libc::shutdown(*fd, libc::SHUT_RDWR) };
        }
    }
}
