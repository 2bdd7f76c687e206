//! Support for Rudder's privileged tests. Used only by tests.
//!
//! Every resource a test makes here has a name unique to the test process
//! and the call (`rdt-<pid>-<n>`), lives in network namespaces the test made
//! (so the host's own network is never touched), and is removed when its
//! guard is dropped, which also happens when the test panics. Leftovers of
//! test processes that were killed are swept on the next use.
//!
//! Privileged tests call [`require_root`] first. If the suite is not running
//! as root, that fails the test with a message saying why. Setting
//! `RUDDER_SKIP_PRIVILEGED=1` when building the tests marks them ignored
//! instead (see the `tests/` crate's build script): they are then reported as
//! ignored, never as passed.

pub mod apiserver;
pub mod bpffs;
pub mod cgroup;
pub mod cni;
pub mod containerd;
pub mod kubectl;
pub mod netns;
pub mod packet;
pub mod pki;
pub mod podnet;
pub mod process;
pub mod servers;
pub mod underlay;
pub mod wait;

use std::{
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
};

pub use apiserver::FakeApiServer;
pub use bpffs::BpfPinDir;
pub use cgroup::TestCgroup;
pub use cni::CniNode;
pub use containerd::Containerd;
pub use kubectl::Kubectl;
pub use netns::{LoopbackRelay, NetNs, Veth};
pub use process::{ChildGuard, TempDir, live_pid, unmount_under, workspace_bin};
pub use servers::{AddressServer, Udp, tcp_ask, udp_ask};
pub use underlay::Underlay;
pub use wait::{poll, until};

/// Prefix of every resource name the harness makes.
pub const PREFIX: &str = "rdt";

/// Fails the calling test unless it runs as root.
#[track_caller]
pub fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "this test needs root (network namespaces, BPF, cgroups): run the suite as root, e.g. \
         `sudo -E cargo xtask test`; or build the tests with RUDDER_SKIP_PRIVILEGED=1 to report \
         privileged tests as ignored"
    );
    sweep_stale();
}

/// Declares privileged tests: each is a `#[test]` that first calls
/// [`require_root`], compiled as ignored when the calling crate is built
/// with the `rudder_skip_privileged` cfg (`RUDDER_SKIP_PRIVILEGED=1`; see
/// the `tests/` crate's build script).
#[macro_export]
macro_rules! privileged_tests {
    ($($(#[$m:meta])* fn $name:ident() $body:block)*) => {$(
        #[test]
        #[cfg_attr(rudder_skip_privileged, ignore = "RUDDER_SKIP_PRIVILEGED=1")]
        $(#[$m])*
        fn $name() {
            $crate::require_root();
            $body
        }
    )*};
}

/// A name unique to this process and call: `rdt-<pid>-<n>`.
pub fn unique_name() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{PREFIX}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The name of a containerd namespace of this test's own.
pub fn containerd_namespace() -> String {
    unique_name()
}

/// A port on which nothing listens, for a server this test starts in
/// another process: TCP and UDP are both free on every address.
///
/// It is drawn below the kernel's ephemeral range (32768 and up by
/// default), so the outgoing connections and `:0` binds of the tests
/// running in parallel cannot take it between this check and the child's
/// own bind; picks are random and never repeated within a process.
pub fn unused_port() -> u16 {
    use std::{
        collections::HashSet,
        net::{Ipv4Addr, TcpListener, UdpSocket},
        sync::Mutex,
    };
    static TAKEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let low = ephemeral_low().clamp(12_000, 60_000);
    let seed = std::process::id()
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
    let mut taken = TAKEN
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let taken = taken.get_or_insert_with(HashSet::new);
    for i in 0..10_000u32 {
        let x = seed
            .wrapping_add(i.wrapping_mul(2_654_435_761))
            .rotate_left(7);
        let port = 10_000 + (x % u32::from(low - 10_000)) as u16;
        if taken.contains(&port) {
            continue;
        }
        let any = (Ipv4Addr::UNSPECIFIED, port);
        if TcpListener::bind(any).is_ok() && UdpSocket::bind(any).is_ok() && claim(port) {
            taken.insert(port);
            return port;
        }
    }
    panic!("no unused port below the ephemeral range {low}");
}

/// Claims `port` among the test processes running at once (the test
/// binaries run in parallel, each picking at random): an exclusive lock on
/// a file named after it, held until this process exits. A port another
/// process holds is not claimed.
fn claim(port: u16) -> bool {
    let dir = std::env::temp_dir().join("rudder-test-ports");
    if std::fs::create_dir_all(&dir).is_err() {
        return true;
    }
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(port.to_string()))
    else {
        return true;
    };
    match file.try_lock() {
        Ok(()) => {
            // Held (and the lock with it) for the rest of the process.
            std::mem::forget(file);
            true
        }
        Err(_) => false,
    }
}

/// The first port of the kernel's ephemeral range.
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Runs a command, panicking with its output if it fails.
#[track_caller]
pub fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `{program}`: {e}"));
    assert!(
        out.status.success(),
        "`{program} {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The pid embedded in a harness name, if it is one.
fn owner_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix(PREFIX)?.strip_prefix('-')?;
    rest.split('-').next()?.parse().ok()
}

fn pid_alive(pid: i32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

/// Removes network namespaces and pin dirs left by test processes that died
/// without running their destructors (SIGKILL, abort).
fn sweep_stale() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        netns::sweep(|name| owner_pid(name).is_some_and(|p| !pid_alive(p)));
        bpffs::sweep(|name| owner_pid(name).is_some_and(|p| !pid_alive(p)));
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn unused_ports_are_below_the_ephemeral_range_and_distinct() {
        let low = ephemeral_low();
        let ports: Vec<u16> = (0..50).map(|_| unused_port()).collect();
        assert!(
            ports.iter().all(|&p| p >= 10_000 && p < low.max(12_000)),
            "{ports:?}"
        );
        let set: std::collections::HashSet<_> = ports.iter().collect();
        assert_eq!(set.len(), ports.len());
    }

    use super::*;

    #[test]
    fn names_are_unique_and_carry_the_pid() {
        let a = unique_name();
        let b = unique_name();
        assert_ne!(a, b);
        assert_eq!(owner_pid(&a), Some(std::process::id() as i32));
        assert_eq!(owner_pid("other-123-1"), None);
    }
}
