//! Routing by the programs themselves: a FIB lookup and a redirect to the
//! next hop it names, for translated packets the stack would not forward
//! (their new source is a node address) and for traffic from outside.

#[allow(clippy::wildcard_imports)]
use super::*;

/// Sends a translated packet on by a FIB lookup and a redirect, as the
/// stack would have routed it (used when its new source is a node address,
/// which the stack refuses to forward, and for traffic from outside).
/// Falls back to the stack when the lookup does not give a next hop.
#[inline(always)]
pub(super) fn route(
    ctx: &TcContext,
    p: &Packet,
    saddr: u32,
    daddr: u32,
    sport: u16,
    dport: u16,
) -> i32 {
    fib_redirect(
        ctx,
        p.ip.protocol,
        p.ip.total_len as u16,
        (saddr, sport),
        (daddr, dport),
    )
}

/// The FIB lookup and redirect of [`route`], for a packet of `protocol` and
/// `total_len` bytes between two (address, port) pairs (network order).
#[inline(always)]
pub(super) fn fib_redirect(
    ctx: &TcContext,
    protocol: u8,
    total_len: u16,
    source: (u32, u16),
    dest: (u32, u16),
) -> i32 {
    match fib_lookup(ctx, protocol, total_len, source, dest) {
        Some((rc, fib)) => fib_send(ctx, rc, fib),
        None => TC_ACT_UNSPEC,
    }
}

/// The FIB lookup of [`fib_redirect`]: its result code and parameter block.
/// With `total_len` given, kernels from 5.12 also check it against the
/// route's MTU (`BPF_FIB_LKUP_RET_FRAG_NEEDED`, the MTU in `mtu_result`).
#[inline(always)]
pub(super) fn fib_lookup(
    ctx: &TcContext,
    protocol: u8,
    total_len: u16,
    (saddr, sport): (u32, u16),
    (daddr, dport): (u32, u16),
) -> Option<(i64, &'static mut FibParams)> {
    // The parameter block lives in a per-CPU scratch slot, not on the
    // stack: 64 bytes that `from_netdev` cannot spare.
    let slot = SCRATCH_FIB.get_ptr_mut(0)?;
    let fib = zeroed_fib(slot);
    fib.family = 2; // AF_INET
    fib.l4_protocol = protocol;
    fib.sport = sport;
    fib.dport = dport;
    fib.__bindgen_anon_1.tot_len = total_len;
    fib.ifindex = ifindex(ctx);
    fib.__bindgen_anon_3.ipv4_src = saddr;
    fib.__bindgen_anon_4.ipv4_dst = daddr;
    // SAFETY: the skb context and a parameter block of the size passed.
    let rc = unsafe { bpf_fib_lookup(ctx.as_ptr(), fib, size_of::<FibParams>() as i32, 0) };
    Some((rc, fib))
}

/// The per-CPU FIB parameter block at `slot`, zeroed word by word: a
/// `write_bytes` becomes a call to `memset`, one more frame on the stack
/// of its caller's call chain (which Debian's 5.10 and 6.1 verifiers
/// round up to 32 bytes against the 512 they allow).
#[inline(always)]
pub(super) fn zeroed_fib(slot: *mut FibParams) -> &'static mut FibParams {
    const WORDS: usize = size_of::<FibParams>() / 8;
    const _: () = assert!(size_of::<FibParams>().is_multiple_of(8));
    let words = slot.cast::<u64>();
    for i in 0..WORDS {
        // SAFETY: within the map value (`WORDS` 8-byte words, aligned as
        // map values are); volatile, so it is not turned into `memset`.
        unsafe { core::ptr::write_volatile(words.add(i), 0) };
    }
    // SAFETY: a valid map value pointer of this CPU, used only until the
    // program returns (programs do not nest on a CPU); an all-zero
    // bpf_fib_lookup is a valid request to fill in.
    unsafe { &mut *slot }
}

/// Sends the packet where a FIB lookup said: to the next hop it resolved,
/// or through the neighbour subsystem when it had none; to the stack for
/// anything else.
#[inline(always)]
pub(super) fn fib_send(ctx: &TcContext, rc: i64, fib: &FibParams) -> i32 {
    if rc == i64::from(BPF_FIB_LKUP_RET_SUCCESS) {
        let mut macs = [0u8; 12];
        macs[..6].copy_from_slice(&fib.dmac);
        macs[6..].copy_from_slice(&fib.smac);
        if ctx.store(0, &macs, 0).is_err() {
            return TC_ACT_SHOT;
        }
        count(SvcCounter::Routed);
        // SAFETY: no preconditions.
        return unsafe { bpf_redirect(fib.ifindex, 0) } as i32;
    }
    if rc == i64::from(BPF_FIB_LKUP_RET_NO_NEIGH) {
        count(SvcCounter::Routed);
        // SAFETY: no neighbour parameters: the kernel resolves the next hop.
        return unsafe { bpf_redirect_neigh(fib.ifindex, core::ptr::null_mut(), 0, 0) } as i32;
    }
    TC_ACT_UNSPEC
}
