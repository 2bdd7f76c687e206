//! Helpers shared by several test binaries (each uses a part of them).
#![allow(dead_code, reason = "each test binary uses a different part")]

pub(crate) mod kube;
pub(crate) mod node;
pub(crate) mod proxy;
pub(crate) mod sim;
pub(crate) mod tls;
