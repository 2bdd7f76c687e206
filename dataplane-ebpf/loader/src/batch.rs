//! Batched writes to BPF hash maps: `BPF_MAP_UPDATE_BATCH` and
//! `BPF_MAP_DELETE_BATCH` (kernel 5.6), one syscall for many elements
//! where one per element made programming 100,000 services mostly syscall
//! cost. aya 0.14 has no batch operations, so the `bpf(2)` calls are made
//! here; on a kernel without them the first call says so and every later
//! one goes element by element through aya, as before.
//!
//! The kernel applies a batch's elements in order and stops at the first
//! that fails, reporting how many it did, so a batch means exactly what the
//! same calls one by one mean: a deletion of a key that is already gone is
//! skipped and the rest go on; a failed update is reported with its key.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    sync::atomic::{AtomicBool, Ordering},
};

use aya::maps::MapData;

/// `bpf(2)` commands (include/uapi/linux/bpf.h).
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// Elements per call: bounds the time the kernel spends in one syscall.
const CHUNK: usize = 65_536;

/// Cleared by the first batch call the kernel refuses as unknown.
static SUPPORTED: AtomicBool = AtomicBool::new(true);

/// The `batch` member of `union bpf_attr`.
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// What a batch call did.
#[derive(Debug)]
pub(super) enum Outcome {
    /// Every element was applied (deletions of missing keys skipped).
    Done,
    /// The kernel has no batch operations: apply them one by one.
    Unsupported,
}

/// A batch that failed at one element (its index in the slice given).
#[derive(Debug)]
pub(super) struct Failed {
    pub(super) index: usize,
    pub(super) error: std::io::Error,
}

/// Writes `keys[i] → values[i]` into `map` in order.
pub(super) fn update<K: aya::Pod, V: aya::Pod>(
    map: &MapData,
    keys: &[K],
    values: &[V],
) -> Result<Outcome, Failed> {
    assert_eq!(keys.len(), values.len(), "one value per key");
    let mut done = 0;
    while done < keys.len() {
        let end = (done + CHUNK).min(keys.len());
        match call(
            BPF_MAP_UPDATE_BATCH,
            map,
            &keys[done..end],
            Some(&values[done..end]),
        ) {
            Ok(()) => done = end,
            Err((n, e)) if done == 0 && n == 0 && unsupported(&e) => {
                SUPPORTED.store(false, Ordering::Relaxed);
                return Ok(Outcome::Unsupported);
            }
            Err((n, error)) => {
                return Err(Failed {
                    index: done + n,
                    error,
                });
            }
        }
        if !SUPPORTED.load(Ordering::Relaxed) {
            return Ok(Outcome::Unsupported);
        }
    }
    Ok(Outcome::Done)
}

/// Deletes `keys` from `map` in order; keys already gone are skipped.
pub(super) fn delete<K: aya::Pod>(map: &MapData, keys: &[K]) -> Result<Outcome, Failed> {
    let mut done = 0;
    while done < keys.len() {
        let end = (done + CHUNK).min(keys.len());
        match call::<K, u8>(BPF_MAP_DELETE_BATCH, map, &keys[done..end], None) {
            Ok(()) => done = end,
            Err((n, e)) if done == 0 && n == 0 && unsupported(&e) => {
                SUPPORTED.store(false, Ordering::Relaxed);
                return Ok(Outcome::Unsupported);
            }
            // Already gone (an LRU eviction, a repeated sync): skip it.
            Err((n, e)) if e.raw_os_error() == Some(libc::ENOENT) => done += n + 1,
            Err((n, error)) => {
                return Err(Failed {
                    index: done + n,
                    error,
                });
            }
        }
    }
    Ok(Outcome::Done)
}

/// Whether batch calls are worth trying on this kernel.
pub(super) fn supported() -> bool {
    SUPPORTED.load(Ordering::Relaxed)
}

/// An error that means "no such command" rather than "bad element".
fn unsupported(e: &std::io::Error) -> bool {
    // ENOTSUPP (524) is the kernel's internal "not supported" for maps
    // without the operation.
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL | libc::EOPNOTSUPP | libc::ENOSYS | 524)
    )
}

/// One batch syscall. On failure, how many elements were applied first.
fn call<K: aya::Pod, V: aya::Pod>(
    cmd: libc::c_long,
    map: &MapData,
    keys: &[K],
    values: Option<&[V]>,
) -> Result<(), (usize, std::io::Error)> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut attr = BatchAttr {
        keys: keys.as_ptr() as u64,
        values: values.map_or(0, |v| v.as_ptr() as u64),
        count: keys.len() as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr.batch` whose key and value
    // pointers refer to `count` elements of the map's key and value types
    // (aya's `Pod` types are the maps' exact layouts), alive for the call;
    // the kernel writes only `attr.count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut BatchAttr,
            size_of::<BatchAttr>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        let error = std::io::Error::last_os_error();
        Err(((attr.count as usize).min(keys.len()), error))
    }
}
