//! Types shared by Rudder's eBPF programs and user space.
//!
//! Everything here is `#[repr(C)]` or a plain index so that both sides agree on
//! the layout of map keys and values. The crate is `no_std`; the `user` feature
//! adds `aya::Pod` implementations for user space.
#![cfg_attr(not(test), no_std)]

pub mod packet_stats;
pub mod service;
