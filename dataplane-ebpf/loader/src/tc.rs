//! Attaching tc programs: TCX links where the kernel has them (6.6+),
//! otherwise the `clsact` qdisc with a direct-action `cls_bpf` filter (4.5+).
//!
//! The choice is made by trying, not by reading the kernel version: vendor
//! kernels (RHEL/CentOS) backport features, so a version says little.

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    tc::{self, NlOptions, TcAttachOptions},
};

use super::BpfError;

/// Which side of an interface a program sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Ingress,
    Egress,
}

impl From<Direction> for TcAttachType {
    fn from(d: Direction) -> Self {
        match d {
            Direction::Ingress => TcAttachType::Ingress,
            Direction::Egress => TcAttachType::Egress,
        }
    }
}

/// How to attach: a particular mechanism, or the best one the kernel has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AttachMode {
    /// TCX if the kernel supports it, else clsact.
    #[default]
    Auto,
    Tcx,
    Clsact,
}

/// The mechanism a program was attached with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attached {
    Tcx,
    Clsact,
}

impl std::fmt::Display for Attached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Attached::Tcx => "tcx",
            Attached::Clsact => "clsact",
        })
    }
}

/// Attaches `prog` to `iface` (in the calling thread's network namespace).
pub(crate) fn attach(
    prog: &mut SchedClassifier,
    program: &'static str,
    iface: &str,
    direction: Direction,
    mode: AttachMode,
) -> Result<Attached, BpfError> {
    match mode {
        AttachMode::Tcx => {
            tcx_attach(prog, program, iface, direction)?;
            Ok(Attached::Tcx)
        }
        AttachMode::Clsact => {
            clsact_attach(prog, program, iface, direction)?;
            Ok(Attached::Clsact)
        }
        AttachMode::Auto => match tcx_attach(prog, program, iface, direction) {
            Ok(()) => Ok(Attached::Tcx),
            Err(tcx_err) => match clsact_attach(prog, program, iface, direction) {
                Ok(()) => {
                    tracing::info!(iface, error = %error_chain(&tcx_err), "TCX unavailable, attached with clsact");
                    Ok(Attached::Clsact)
                }
                Err(cls_err) => Err(BpfError::Attach {
                    iface: iface.to_string(),
                    tcx: error_chain(&tcx_err),
                    clsact: error_chain(&cls_err),
                }),
            },
        },
    }
}

/// Attaches with the given options; `how` names the mechanism in errors.
fn prog_attach(
    prog: &mut SchedClassifier,
    program: &'static str,
    iface: &str,
    direction: Direction,
    how: &str,
    options: TcAttachOptions,
) -> Result<(), BpfError> {
    prog.attach_with_options(iface, direction.into(), options)
        .map(drop)
        .map_err(|e| BpfError::Program {
            program,
            action: format!("{how} attach to {iface} ({direction:?})"),
            source: Box::new(e),
        })
}

fn tcx_attach(
    prog: &mut SchedClassifier,
    program: &'static str,
    iface: &str,
    direction: Direction,
) -> Result<(), BpfError> {
    let options = TcAttachOptions::TcxOrder(LinkOrder::default());
    prog_attach(prog, program, iface, direction, "TCX", options)
}

fn clsact_attach(
    prog: &mut SchedClassifier,
    program: &'static str,
    iface: &str,
    direction: Direction,
) -> Result<(), BpfError> {
    // An existing clsact qdisc (ours or another tool's) is fine: filters stack.
    if let Err(e) = tc::qdisc_add_clsact(iface)
        && !matches!(e, tc::TcError::AlreadyAttached)
        && !is_eexist(&e)
    {
        return Err(BpfError::Program {
            program,
            action: format!("adding the clsact qdisc to {iface}"),
            source: Box::new(e.into()),
        });
    }
    let options = TcAttachOptions::Netlink(NlOptions::default());
    prog_attach(prog, program, iface, direction, "clsact", options)
}

fn is_eexist(e: &tc::TcError) -> bool {
    error_chain(e).contains("File exists")
}

/// The error and its sources, joined: aya's errors put the errno in a source.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}
