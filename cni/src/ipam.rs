//! Address management with host-local semantics and host-local's on-disk
//! layout, so the reference plugin and this one can read each other's
//! state: one directory per network (`<dataDir>/<name>/`), one file per
//! allocated address holding `<containerID>\r\n<ifname>`,
//! `last_reserved_ip.0` for round-robin, and a `lock` file held with
//! `flock` for the whole of every operation.
//!
//! Crash safety: an address is reserved by writing a temporary file and
//! hard-linking it to the address's name, so an allocation file is either
//! absent or complete; a plugin killed at any point leaves at worst a
//! temporary file (removed by the next caller) or a complete allocation
//! that the runtime's DEL (or GC) releases. The lock dies with its holder.

use std::{
    collections::HashSet,
    fs::{self, File, OpenOptions},
    io::Write as _,
    net::Ipv4Addr,
    os::fd::AsRawFd as _,
    path::{Path, PathBuf},
};

use crate::net::Ipv4Net;

const LAST_RESERVED: &str = "last_reserved_ip.0";
const LOCK: &str = "lock";
const RESERVING: &str = ".reserving";

/// The addresses a node's pods get: the subnet's hosts except the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Range {
    pub subnet: Ipv4Net,
    pub start: Ipv4Addr,
    pub end: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl Range {
    /// From a gateway-form subnet (`10.244.1.1/24`): `.2`…`.254` (the
    /// gateway skipped wherever it is).
    pub fn from_gateway_subnet(subnet: Ipv4Net) -> Self {
        let net = subnet.trunc();
        Self {
            subnet: net,
            start: Ipv4Addr::from(u32::from(net.network()) + 1),
            end: Ipv4Addr::from(u32::from(net.broadcast()) - 1),
            gateway: subnet.addr,
        }
    }

    fn len(&self) -> u32 {
        u32::from(self.end) - u32::from(self.start) + 1
    }

    fn contains(&self, ip: Ipv4Addr) -> bool {
        (u32::from(self.start)..=u32::from(self.end)).contains(&u32::from(ip))
    }
}

/// One allocated address and its owner.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allocation {
    pub ip: Ipv4Addr,
    pub container_id: String,
    pub ifname: String,
}

#[derive(Debug, thiserror::Error)]
pub enum IpamError {
    #[error("IPAM store {}: {op}: {source}", .dir.display())]
    Io {
        dir: PathBuf,
        op: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{ip} has been allocated to {container_id}/{ifname} already, duplicate allocation is not \
         allowed (the runtime must DEL before it ADDs again)"
    )]
    Duplicate {
        ip: Ipv4Addr,
        container_id: String,
        ifname: String,
    },
    #[error("no IP addresses available in range set: {start}-{end} ({used} in use)")]
    Exhausted {
        start: Ipv4Addr,
        end: Ipv4Addr,
        used: usize,
    },
}

/// The store of one network, locked for as long as this value lives.
#[derive(Debug)]
pub struct Store {
    dir: PathBuf,
    _lock: File,
}

impl Store {
    /// Opens (creating) `<data_dir>/<network>/` and takes its lock,
    /// waiting for other callers.
    pub fn open(data_dir: &Path, network: &str) -> Result<Self, IpamError> {
        let dir = data_dir.join(network);
        let io = |op: &str| {
            let dir = dir.clone();
            let op = op.to_string();
            move |source| IpamError::Io { dir, op, source }
        };
        fs::create_dir_all(&dir).map_err(io("create directory"))?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK))
            .map_err(io("open lock file"))?;
        loop {
            // SAFETY: flock on a descriptor we own; it is released when the
            // file is closed (or the process dies).
            let rc = unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) };
            if rc == 0 {
                break;
            }
            let e = std::io::Error::last_os_error();
            if e.kind() != std::io::ErrorKind::Interrupted {
                return Err(io("lock")(e));
            }
        }
        let store = Self { dir, _lock: lock };
        // A caller killed between writing and linking left this behind.
        let _ = fs::remove_file(store.dir.join(RESERVING));
        Ok(store)
    }

    fn io(&self, op: impl Into<String>) -> impl FnOnce(std::io::Error) -> IpamError {
        let dir = self.dir.clone();
        let op = op.into();
        move |source| IpamError::Io { dir, op, source }
    }

    /// Every allocation in the store, sorted by address.
    pub fn allocations(&self) -> Result<Vec<Allocation>, IpamError> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(self.io("list"))? {
            let entry = entry.map_err(self.io("list"))?;
            let name = entry.file_name();
            let Some(ip) = name.to_str().and_then(|n| n.parse::<Ipv4Addr>().ok()) else {
                continue;
            };
            let text = match fs::read_to_string(entry.path()) {
                Ok(t) => t,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(self.io(format!("read {ip}"))(e)),
            };
            let mut lines = text.split("\r\n").map(str::trim);
            let container_id = lines.next().unwrap_or_default().to_string();
            let ifname = lines.next().unwrap_or_default().to_string();
            out.push(Allocation {
                ip,
                container_id,
                ifname,
            });
        }
        out.sort();
        Ok(out)
    }

    /// The address held by `(container_id, ifname)`, if any. A legacy
    /// allocation without an interface name matches any interface.
    pub fn find(&self, container_id: &str, ifname: &str) -> Result<Option<Ipv4Addr>, IpamError> {
        Ok(self
            .allocations()?
            .into_iter()
            .find(|a| owned_by(a, container_id, ifname))
            .map(|a| a.ip))
    }

    /// Reserves the next free address after the last one reserved.
    pub fn allocate(
        &mut self,
        range: &Range,
        container_id: &str,
        ifname: &str,
    ) -> Result<Ipv4Addr, IpamError> {
        let allocs = self.allocations()?;
        if let Some(a) = allocs.iter().find(|a| owned_by(a, container_id, ifname)) {
            return Err(IpamError::Duplicate {
                ip: a.ip,
                container_id: container_id.to_string(),
                ifname: ifname.to_string(),
            });
        }
        let taken: HashSet<Ipv4Addr> = allocs.iter().map(|a| a.ip).collect();
        let last = fs::read_to_string(self.dir.join(LAST_RESERVED))
            .ok()
            .and_then(|s| s.trim().parse::<Ipv4Addr>().ok())
            .filter(|ip| range.contains(*ip));
        // Start just after the last reservation; wrap around the range.
        let first = last.map_or(0, |ip| u32::from(ip) - u32::from(range.start) + 1);
        for i in 0..range.len() {
            let off = (first + i) % range.len();
            let ip = Ipv4Addr::from(u32::from(range.start) + off);
            if ip == range.gateway || taken.contains(&ip) {
                continue;
            }
            if self.reserve(ip, container_id, ifname)? {
                crate::subnet::write_atomic(
                    &self.dir.join(LAST_RESERVED),
                    ip.to_string().as_bytes(),
                )
                .map_err(self.io("record last reserved address"))?;
                return Ok(ip);
            }
        }
        Err(IpamError::Exhausted {
            start: range.start,
            end: range.end,
            used: taken.len(),
        })
    }

    /// Creates the allocation file for `ip` atomically; false if taken.
    fn reserve(&self, ip: Ipv4Addr, container_id: &str, ifname: &str) -> Result<bool, IpamError> {
        let tmp = self.dir.join(RESERVING);
        let mut f = File::create(&tmp).map_err(self.io("write reservation"))?;
        f.write_all(format!("{container_id}\r\n{ifname}").as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(self.io("write reservation"))?;
        drop(f);
        let res = match fs::hard_link(&tmp, self.dir.join(ip.to_string())) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(self.io(format!("reserve {ip}"))(e)),
        };
        let _ = fs::remove_file(&tmp);
        res
    }

    /// Releases what `(container_id, ifname)` holds; returns the addresses.
    /// Releasing nothing is not an error (DEL is idempotent).
    pub fn release(
        &mut self,
        container_id: &str,
        ifname: &str,
    ) -> Result<Vec<Ipv4Addr>, IpamError> {
        let mut out = Vec::new();
        for a in self.allocations()? {
            if owned_by(&a, container_id, ifname) {
                self.remove(a.ip)?;
                out.push(a.ip);
            }
        }
        Ok(out)
    }

    /// Releases every allocation whose `(container_id, ifname)` is not in
    /// `valid`; returns what it released.
    pub fn gc(&mut self, valid: &HashSet<(String, String)>) -> Result<Vec<Allocation>, IpamError> {
        let mut out = Vec::new();
        for a in self.allocations()? {
            let keep = valid.contains(&(a.container_id.clone(), a.ifname.clone()))
                || (a.ifname.is_empty() && valid.iter().any(|(id, _)| *id == a.container_id));
            if !keep {
                self.remove(a.ip)?;
                out.push(a);
            }
        }
        Ok(out)
    }

    fn remove(&self, ip: Ipv4Addr) -> Result<(), IpamError> {
        match fs::remove_file(self.dir.join(ip.to_string())) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.io(format!("release {ip}"))(e)),
        }
    }
}

fn owned_by(a: &Allocation, container_id: &str, ifname: &str) -> bool {
    a.container_id == container_id && (a.ifname == ifname || a.ifname.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tmpdir() -> PathBuf {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let d = std::env::temp_dir().join(format!(
            "rudder-ipam-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&d);
        d
    }

    fn range(s: &str) -> Range {
        Range::from_gateway_subnet(s.parse().unwrap())
    }

    #[test]
    fn range_skips_network_gateway_and_broadcast() {
        let r = range("10.244.1.1/24");
        assert_eq!(r.start, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(r.end, Ipv4Addr::new(10, 244, 1, 254));
        assert_eq!(r.gateway, Ipv4Addr::new(10, 244, 1, 1));
    }

    #[test]
    fn round_robin_release_and_reuse_later() {
        let dir = tmpdir();
        let r = range("10.244.1.1/29"); // hosts .1–.6, gateway .1
        let mut s = Store::open(&dir, "net").unwrap();
        let a = s.allocate(&r, "a", "eth0").unwrap();
        let b = s.allocate(&r, "b", "eth0").unwrap();
        assert_eq!(
            (a, b),
            (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 1, 3))
        );
        assert_eq!(s.release("a", "eth0").unwrap(), vec![a]);
        assert!(s.release("a", "eth0").unwrap().is_empty(), "idempotent");
        // Round robin: the freed .2 is not handed out next.
        assert_eq!(
            s.allocate(&r, "c", "eth0").unwrap(),
            Ipv4Addr::new(10, 244, 1, 4)
        );
        assert_eq!(s.find("b", "eth0").unwrap(), Some(b));
        // Same owner twice is refused and names the holder.
        let e = s.allocate(&r, "b", "eth0").unwrap_err().to_string();
        assert!(e.contains("10.244.1.3") && e.contains("b/eth0"), "{e}");
        // Fill up, then the error names the range.
        for id in ["d", "e", "f"] {
            s.allocate(&r, id, "eth0").unwrap();
        }
        let e = s.allocate(&r, "g", "eth0").unwrap_err().to_string();
        assert!(e.contains("10.244.1.1-10.244.1.6"), "{e}");
        // The reference plugin's file format.
        let text = fs::read_to_string(dir.join("net/10.244.1.3")).unwrap();
        assert_eq!(text, "b\r\neth0");
        drop(s);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn gc_keeps_only_valid_attachments() {
        let dir = tmpdir();
        let r = range("10.244.1.1/24");
        let mut s = Store::open(&dir, "net").unwrap();
        for id in ["a", "b", "c"] {
            s.allocate(&r, id, "eth0").unwrap();
        }
        let valid: HashSet<_> = [("b".to_string(), "eth0".to_string())].into();
        let gone: Vec<_> = s
            .gc(&valid)
            .unwrap()
            .into_iter()
            .map(|a| a.container_id)
            .collect();
        assert_eq!(gone, ["a", "c"]);
        let left: Vec<_> = s
            .allocations()
            .unwrap()
            .into_iter()
            .map(|a| a.container_id)
            .collect();
        assert_eq!(left, ["b"]);
        drop(s);
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn concurrent_allocations_never_collide() {
        let dir = tmpdir();
        let r = range("10.244.1.1/24");
        let ips: Vec<Ipv4Addr> = std::thread::scope(|s| {
            let hs: Vec<_> = (0..16)
                .map(|t| {
                    let dir = &dir;
                    s.spawn(move || {
                        (0..10)
                            .map(|i| {
                                Store::open(dir, "net")
                                    .unwrap()
                                    .allocate(&r, &format!("c{t}-{i}"), "eth0")
                                    .unwrap()
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let uniq: HashSet<_> = ips.iter().collect();
        assert_eq!(uniq.len(), 160);
        fs::remove_dir_all(dir).unwrap();
    }
}
