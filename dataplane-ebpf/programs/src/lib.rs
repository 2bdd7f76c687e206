//! Helpers shared by Rudder's eBPF programs. Each program is a `[[bin]]` of
//! this crate; this library holds the packet parsing they have in common.
#![no_std]

pub mod parse;

/// The verifier rejects a program that can reach a loop, so no panic path may
/// survive compilation: every panic site must be proven unreachable. One
/// handler for every program of this crate.
#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    loop {}
}
