//! Loading, attaching and reading Rudder's eBPF programs.
//!
//! The objects are built by `dataplane-ebpf/` and embedded at compile time
//! (see `build.rs`), so the agent binary is all a node needs.

mod batch;
mod map_op;
pub mod packet_stats;
pub mod service;
pub mod tc;

use aya::{Ebpf, EbpfLoader};

pub use map_op::MapOp;

/// Where the BPF filesystem lives.
pub const BPFFS: &str = "/sys/fs/bpf";

/// Mounts the BPF filesystem at `/sys/fs/bpf` when `pin_dir` is under it
/// and nothing is mounted there (a fresh boot of many distributions; a
/// mount made here is what systemd would have made). Returns whether it
/// mounted one.
pub fn ensure_bpffs(pin_dir: &std::path::Path) -> std::io::Result<bool> {
    let root = std::path::Path::new(BPFFS);
    if !pin_dir.starts_with(root) {
        return Ok(false);
    }
    let mounts = std::fs::read_to_string("/proc/self/mounts")?;
    let mounted = mounts.lines().any(|l| {
        let mut f = l.split_whitespace().skip(1);
        (f.next(), f.next()) == (Some(BPFFS), Some("bpf"))
    });
    if mounted {
        return Ok(false);
    }
    std::fs::create_dir_all(root)?;
    nix::mount::mount(
        Some("bpf"),
        root,
        Some("bpf"),
        nix::mount::MsFlags::empty(),
        Some("mode=0700"),
    )
    .map_err(std::io::Error::from)?;
    tracing::info!(path = BPFFS, "mounted the BPF filesystem");
    Ok(true)
}

/// Lifts `RLIMIT_MEMLOCK` for this process, once: kernels before 5.11
/// charge BPF maps to it (5.11 moved them to the memory cgroup), and its
/// default (64 KiB, shared by every process of the user) does not hold the
/// Service maps, so map creation fails there with ENOMEM. As aya's
/// documentation and Cilium do. Best effort: without CAP_SYS_RESOURCE the
/// soft limit is raised to the hard one only.
pub fn lift_memlock() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let infinity = libc::rlimit {
            rlim_cur: libc::RLIM_INFINITY,
            rlim_max: libc::RLIM_INFINITY,
        };
        // SAFETY: a valid rlimit read by the call.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const infinity) } == 0 {
            return;
        }
        let mut current = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: a writable rlimit the call fills.
        if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &raw mut current) } == 0 {
            current.rlim_cur = current.rlim_max;
            // SAFETY: as above.
            unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const current) };
            tracing::debug!(
                hard = current.rlim_max,
                "RLIMIT_MEMLOCK raised to its hard limit only (no CAP_SYS_RESOURCE); kernels before 5.11 charge BPF maps to it"
            );
        }
    });
}

/// The embedded `packet-stats` object.
pub static PACKET_STATS_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/packet-stats.bpf.o"));

/// The embedded `service` object.
pub static SERVICE_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/service.bpf.o"));

/// Failures of loading, attaching or reading a BPF program or map.
#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "the eBPF object `{0}` is not in this build (built with RUDDER_SKIP_EBPF_BUILD=1); rebuild without it"
    )]
    NotEmbedded(&'static str),
    #[error("failed to load the eBPF object `{object}` into the kernel")]
    Load {
        object: &'static str,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("the eBPF object `{object}` has no program `{program}`")]
    NoProgram {
        object: &'static str,
        program: &'static str,
    },
    #[error("the eBPF object `{object}` has no map `{map}`")]
    NoMap {
        object: &'static str,
        map: &'static str,
    },
    #[error("BPF program `{program}`: {action} failed")]
    Program {
        program: &'static str,
        action: String,
        #[source]
        source: Box<aya::programs::ProgramError>,
    },
    #[error("BPF map `{map}`: {action} failed")]
    Map {
        map: &'static str,
        action: String,
        #[source]
        source: Box<aya::maps::MapError>,
    },
    #[error("BPF map `{map}`: {action} failed (batch)")]
    MapBatch {
        map: &'static str,
        action: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no network interface `{0}` in this network namespace")]
    NoInterface(String),
    #[error("BPF program `{program}`: the link pinned at {} is unusable", .path.display())]
    Link {
        program: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: aya::programs::links::LinkError,
    },
    #[error("BPF pin {}", .path.display())]
    Pin {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot attach to interface `{iface}`: TCX failed ({tcx}) and clsact failed ({clsact})"
    )]
    Attach {
        iface: String,
        tcx: String,
        clsact: String,
    },
}

/// Loads an embedded object with BTF from the running kernel when it has it.
pub(crate) fn load_object(name: &'static str, bytes: &[u8]) -> Result<Ebpf, BpfError> {
    if bytes.is_empty() {
        return Err(BpfError::NotEmbedded(name));
    }
    EbpfLoader::new().load(bytes).map_err(|e| BpfError::Load {
        object: name,
        source: Box::new(e),
    })
}
