//! The kubelet (`rudder agent kubelet`) against real containerd + runc,
//! images from the local registry under the names manifests use, the
//! reference `bridge` + `host-local` CNI plugins, and `rudder server`
//! (scheduler included) driven with the stock kubectl 1.33.
//!
//! The kubelet runs inside a network namespace of the test's own (so the
//! pod bridge and veths never touch the host's network); a loopback relay
//! lets it reach the test's apiserver and the registry.
//!
//! One test binary, its tests grouped by what they exercise: `pods`
//! (lifecycle, restarts, bad input, probes, hooks), `config` (environment
//! and volumes), `streams` (logs, exec, port-forward), `node` (Services,
//! static pods, usage, autoscaling).

#[path = "../support/mod.rs"]
mod support;

mod config;
mod node;
mod pods;
mod streams;

pub(crate) use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

pub(crate) use rudder_test_harness::{ChildGuard, NetNs, unique_name};
pub(crate) use serde_json::Value;
pub(crate) use support::{
    kube::{Kubectl, newest},
    node::{Node, condition, phase, status_of, tail, wait},
};
