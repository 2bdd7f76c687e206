//! Helpers shared by Rudder's eBPF programs. Each program is a `[[bin]]` of
//! this crate; this library holds the packet parsing they have in common.
#![no_std]

pub mod parse;
