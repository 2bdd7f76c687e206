//! Start-up checks of what the node's kernel offers the agent. Each check
//! names the feature, what was found and, when missing, the minimum kernel
//! that has it, so an operator on an older CentOS/RHEL node sees at once why
//! the agent refuses to start.

use std::{fmt, path::Path};

use rudder_dataplane::{
    packet_stats::PacketStats,
    tc::{AttachMode, Attached, Direction, error_chain},
};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    /// Works, but something is degraded or must be set up by the agent.
    Warn,
    /// The agent cannot run its dataplane.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
}

impl fmt::Display for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self.status {
            Status::Ok => "ok  ",
            Status::Warn => "warn",
            Status::Fail => "FAIL",
        };
        write!(f, "[{s}] {:<22} {}", self.name, self.detail)
    }
}

/// The cgroup layout of the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupMode {
    /// cgroup v1 only.
    Legacy,
    /// v1 controllers with cgroup2 at `/sys/fs/cgroup/unified` (CentOS 7/8, systemd's hybrid).
    Hybrid,
    /// cgroup2 at `/sys/fs/cgroup`.
    Unified,
}

/// Reads the cgroup layout from the filesystem types mounted at
/// `<root>` and `<root>/unified`.
pub fn cgroup_mode(root: &Path) -> Option<CgroupMode> {
    const CGROUP2_SUPER_MAGIC: i64 = 0x6367_7270;
    let fs_type = |p: &Path| -> Option<i64> {
        let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: `c` is a valid NUL-terminated path and `st` a properly
        // sized, writable statfs buffer that outlives the call.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: see above.
        let rc = unsafe { libc::statfs(c.as_ptr(), &raw mut st) };
        (rc == 0).then_some(st.f_type)
    };
    let root_type = fs_type(root)?;
    if root_type == CGROUP2_SUPER_MAGIC {
        return Some(CgroupMode::Unified);
    }
    if fs_type(&root.join("unified")) == Some(CGROUP2_SUPER_MAGIC) {
        Some(CgroupMode::Hybrid)
    } else {
        Some(CgroupMode::Legacy)
    }
}

/// Runs every check. Loading and test-running a program needs CAP_BPF (or
/// root); the attach probe runs in a private network namespace, so the
/// host's interfaces are never touched.
pub fn run() -> Vec<Check> {
    let mut checks = vec![kernel(), btf(), bpffs(), cgroups(), selinux()];
    checks.push(bpf_program());
    checks.push(tc_attach());
    checks.extend(service_dataplane());
    let iptables = std::process::Command::new("iptables")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let fallback = Fallback {
        nftables: rudder_proxy::nftables::probe().map_err(|e| e.to_string()),
        iptables,
    };
    proxy_mode(&mut checks, &fallback);
    checks
}

/// What the netfilter fallbacks can do on this node.
struct Fallback {
    /// Whether kube-proxy's nftables shape can run, or why not.
    nftables: Result<(), String>,
    /// Whether there is an iptables binary.
    iptables: bool,
}

/// The checks whose failure the netfilter fallbacks make up for.
const BPF_CHECKS: [&str; 3] = ["BPF tc program", "tc attach", "Service dataplane"];

/// Which Service proxy `--proxy-mode auto` runs, as a last check: the eBPF
/// dataplane when its checks pass; else, where the node can run it,
/// kube-proxy's nftables shape; else, with an iptables binary on the node,
/// its iptables shape; the BPF checks' failures then become warnings (the
/// agent runs without them); with neither, a failure.
fn proxy_mode(checks: &mut Vec<Check>, fallback: &Fallback) {
    let failed: Vec<&'static str> = checks
        .iter()
        .filter(|c| BPF_CHECKS.contains(&c.name) && c.status == Status::Fail)
        .map(|c| c.name)
        .collect();
    checks.push(fallbacks(fallback));
    let name = "Service proxy";
    if failed.is_empty() {
        checks.push(Check {
            name,
            status: Status::Ok,
            detail: "the eBPF dataplane (--proxy-mode auto)".into(),
        });
        return;
    }
    let why = format!(
        "the eBPF dataplane cannot run here ({} above); --proxy-mode auto falls back, \
         --proxy-mode ebpf would refuse to start",
        failed.join(", ")
    );
    let detail = match (&fallback.nftables, fallback.iptables) {
        (Ok(()), _) => format!("nftables rules in kube-proxy's shape: {why}"),
        (Err(no_nft), true) => {
            format!("iptables rules in kube-proxy's shape (no nftables mode: {no_nft}): {why}")
        }
        (Err(no_nft), false) => {
            checks.push(Check {
                name,
                status: Status::Fail,
                detail: format!(
                    "none: the eBPF dataplane cannot run here ({} above), nor the nftables mode \
                     ({no_nft}), and there is no iptables binary for the fallback",
                    failed.join(", ")
                ),
            });
            return;
        }
    };
    for c in checks.iter_mut().filter(|c| failed.contains(&c.name)) {
        c.status = Status::Warn;
    }
    checks.push(Check {
        name,
        status: Status::Warn,
        detail,
    });
}

/// What the netfilter fallbacks could do here, whichever mode runs: said
/// even where eBPF runs, so that an operator knows what `--proxy-mode`
/// could choose.
fn fallbacks(f: &Fallback) -> Check {
    let nft = match &f.nftables {
        Ok(()) => "nftables mode usable".to_string(),
        Err(why) => format!("no nftables mode ({why})"),
    };
    let ipt = if f.iptables {
        "iptables mode usable"
    } else {
        "no iptables binary"
    };
    Check {
        name: "netfilter fallback",
        status: Status::Ok,
        detail: format!("{nft}; {ipt}"),
    }
}

/// True when no check failed.
pub fn passed(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.status != Status::Fail)
}

fn kernel() -> Check {
    Check {
        name: "kernel",
        status: Status::Ok,
        detail: kernel_release(),
    }
}

pub use rudder_host::kernel_release;

fn btf() -> Check {
    let p = Path::new("/sys/kernel/btf/vmlinux");
    if p.exists() {
        Check {
            name: "kernel BTF",
            status: Status::Ok,
            detail: p.display().to_string(),
        }
    } else {
        Check {
            name: "kernel BTF",
            status: Status::Warn,
            detail: "no /sys/kernel/btf/vmlinux (needs 5.5+ with CONFIG_DEBUG_INFO_BTF, or RHEL 8.2+); programs load without CO-RE".into(),
        }
    }
}

/// Whether a bpf filesystem is mounted at `dir`.
fn bpffs_mounted_at(dir: &Path) -> bool {
    std::fs::read_to_string("/proc/self/mounts").is_ok_and(|m| {
        m.lines().any(|l| {
            let mut f = l.split_whitespace().skip(1);
            (f.next(), f.next()) == (dir.to_str(), Some("bpf"))
        })
    })
}

fn bpffs() -> Check {
    if bpffs_mounted_at(Path::new("/sys/fs/bpf")) {
        Check {
            name: "bpf filesystem",
            status: Status::Ok,
            detail: "mounted".into(),
        }
    } else {
        Check {
            name: "bpf filesystem",
            status: Status::Warn,
            detail: "not mounted; the agent mounts it at /sys/fs/bpf to pin maps".into(),
        }
    }
}

fn cgroups() -> Check {
    // The kubelet's `--cgroup-driver systemd` needs systemd as init
    // (`sd_booted`: /run/systemd/system).
    let drivers = if Path::new("/run/systemd/system").is_dir() {
        "systemd is init: --cgroup-driver cgroupfs or systemd"
    } else {
        "systemd is not init: --cgroup-driver cgroupfs only"
    };
    match cgroup_mode(Path::new("/sys/fs/cgroup")) {
        Some(m) => Check {
            name: "cgroups",
            status: Status::Ok,
            detail: format!(
                "{}; {drivers}",
                match m {
                    CgroupMode::Legacy => "v1 (legacy)",
                    CgroupMode::Hybrid =>
                        "v1 controllers + cgroup2 at /sys/fs/cgroup/unified (hybrid)",
                    CgroupMode::Unified => "v2 (unified)",
                }
            ),
        },
        None => Check {
            name: "cgroups",
            status: Status::Fail,
            detail: "/sys/fs/cgroup is not mounted".into(),
        },
    }
}

/// Whether the kernel has SELinux on, and in which mode: containers are
/// labelled only with `--selinux` (containerd's `enable_selinux`).
fn selinux() -> Check {
    let enforce = std::fs::read_to_string("/sys/fs/selinux/enforce").ok();
    selinux_check(enforce.as_deref())
}

fn selinux_check(enforce: Option<&str>) -> Check {
    let detail = match enforce.map(str::trim) {
        None => "off (no /sys/fs/selinux)".to_string(),
        Some("1") => "enforcing: run the kubelet with --selinux to label containers and their \
                      volumes (needs the container-selinux policy)"
            .to_string(),
        Some(_) => "permissive: --selinux labels containers and their volumes".to_string(),
    };
    Check {
        name: "SELinux",
        status: Status::Ok,
        detail,
    }
}

/// A minimal Ethernet + IPv4 + UDP frame for the load check.
fn probe_packet() -> Vec<u8> {
    let mut p = vec![0u8; 14 + 20 + 8];
    p[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
    p[14] = 0x45;
    p[16..18].copy_from_slice(&28u16.to_be_bytes());
    p[22] = 64;
    p[23] = 17;
    p[38..40].copy_from_slice(&8u16.to_be_bytes());
    p
}

fn bpf_program() -> Check {
    let name = "BPF tc program";
    let mut stats = match PacketStats::load() {
        Ok(s) => s,
        Err(e) => {
            return Check {
                name,
                status: Status::Fail,
                detail: format!(
                    "{} (needs root or CAP_BPF+CAP_NET_ADMIN, tc BPF 4.4+ and per-CPU arrays 4.6+)",
                    error_chain(&e)
                ),
            };
        }
    };
    match stats.test_run(&probe_packet()) {
        Ok(_) => Check {
            name,
            status: Status::Ok,
            detail: "loaded, BPF_PROG_TEST_RUN works".into(),
        },
        Err(e) => Check {
            name,
            status: Status::Warn,
            detail: format!(
                "loaded, but BPF_PROG_TEST_RUN failed (needs 4.12+): {}",
                error_chain(&e)
            ),
        },
    }
}

/// Loads the Service dataplane's object: whether the verifier accepts it is
/// the real test of the kernel's BPF features, vendor backports included.
/// With it, whether the NodePort XDP program loads (a warning if not: tc
/// serves NodePorts without it).
fn service_dataplane() -> Vec<Check> {
    let name = "Service dataplane";
    let root = Path::new("/sys/fs/bpf");
    if !bpffs_mounted_at(root) {
        return vec![Check {
            name,
            status: Status::Warn,
            detail: "not checked: the bpf filesystem is not mounted at /sys/fs/bpf".into(),
        }];
    }
    let dir = root.join(format!("rudder-preflight-{}", std::process::id()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        return vec![Check {
            name,
            status: Status::Fail,
            detail: format!("cannot create {}: {e}", dir.display()),
        }];
    }
    let loaded = rudder_dataplane::service::ServiceDataplane::load(&dir).map(|mut dp| {
        let netdev = dp.load_netdev().map_err(|e| error_chain(&e));
        let xdp = netdev
            .is_ok()
            .then(|| dp.load_xdp().map_err(|e| error_chain(&e)));
        (netdev, xdp)
    });
    let _ = std::fs::remove_dir_all(&dir);
    match loaded {
        Ok((Ok(()), xdp)) => {
            let mut checks = vec![Check {
                name,
                status: Status::Ok,
                detail:
                    "the verifier accepts the service programs, node-interface program included"
                        .into(),
            }];
            checks.extend(xdp.map(nodeport_xdp));
            checks
        }
        Ok((Err(chain), _)) => vec![Check {
            name,
            status: Status::Warn,
            detail: format!(
                "pods' Service traffic works, but the kernel refused the node-interface program \
                 ({}): no NodePorts, externalIPs or LoadBalancer IPs (they need kernel 5.10: \
                 bpf_fib_lookup, bpf_redirect_neigh)",
                verifier_reason(&chain)
            ),
        }],
        Err(e) => vec![Check {
            name,
            status: Status::Fail,
            detail: format!(
                "the kernel refused the service programs ({}); they need direct packet access, \
                 bpf_skb_adjust_room with BPF_ADJ_ROOM_MAC (5.2), bounded loops (5.3) and LRU maps \
                 (4.10): kernel 5.3 or later, or a vendor kernel with those backports",
                verifier_reason(&error_chain(&e))
            ),
        }],
    }
}

/// Whether the NodePort XDP program loaded (`--nodeport-acceleration`).
fn nodeport_xdp(loaded: Result<(), String>) -> Check {
    let name = "NodePort XDP";
    match loaded {
        Ok(()) => Check {
            name,
            status: Status::Ok,
            detail: "the verifier accepts xdp_from_netdev; --nodeport-acceleration also needs \
                     a NIC driver with native XDP"
                .into(),
        },
        Err(chain) => Check {
            name,
            status: Status::Warn,
            detail: format!(
                "the kernel refused xdp_from_netdev ({}): NodePorts on tc only",
                verifier_reason(&chain)
            ),
        },
    }
}

/// What a verifier log says failed: the line before its closing
/// statistics (`verification time`, `stack depth`, `processed … insns`),
/// with the error the load returned; the last lines when the log has no
/// statistics.
fn verifier_reason(chain: &str) -> String {
    let lines: Vec<&str> = chain
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let is_stat = |l: &str| {
        l.starts_with("verification time")
            || l.starts_with("stack depth")
            || l.starts_with("processed ")
    };
    let Some(first_stat) = lines.iter().position(|l| is_stat(l)) else {
        let tail: Vec<&str> = lines.iter().rev().take(3).rev().copied().collect();
        return tail.join(" / ");
    };
    let mut parts: Vec<&str> = lines[..first_stat].iter().rev().take(1).copied().collect();
    parts.extend(
        lines[first_stat..]
            .iter()
            .filter(|l| l.starts_with("stack depth"))
            .copied(),
    );
    if let Some(last) = lines.last().filter(|l| !is_stat(l)) {
        parts.push(last.trim_start_matches(": "));
    }
    parts.join(" / ")
}

fn tc_attach() -> Check {
    let name = "tc attach";
    let probe = std::thread::spawn(|| -> Result<Attached, String> {
        // SAFETY: unshare only changes this (short-lived) thread's network
        // namespace; no other thread observes it.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "unshare(CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        let mut stats = PacketStats::load().map_err(|e| error_chain(&e))?;
        stats
            .attach("lo", Direction::Ingress, AttachMode::Auto)
            .map_err(|e| error_chain(&e))
    });
    match probe.join() {
        Ok(Ok(Attached::Tcx)) => Check {
            name,
            status: Status::Ok,
            detail: "TCX links (6.6+)".into(),
        },
        Ok(Ok(Attached::Clsact)) => Check {
            name,
            status: Status::Ok,
            detail: "clsact qdisc + cls_bpf direct-action (TCX needs 6.6+)".into(),
        },
        Ok(Err(e)) => Check {
            name,
            status: Status::Fail,
            detail: format!("{e} (needs clsact, kernel 4.5+, or TCX, 6.6+)"),
        },
        Err(_) => Check {
            name,
            status: Status::Fail,
            detail: "the probe thread panicked".into(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(name: &'static str, status: Status) -> Check {
        Check {
            name,
            status,
            detail: String::new(),
        }
    }

    #[test]
    fn the_proxy_mode_says_ebpf_nftables_iptables_or_none_and_why() {
        let both = Fallback {
            nftables: Ok(()),
            iptables: true,
        };
        let iptables_only = Fallback {
            nftables: Err("kernel 4.18.0 is older than 5.13".into()),
            iptables: true,
        };
        let neither = Fallback {
            nftables: Err("cannot run `nft`".into()),
            iptables: false,
        };
        let ok = || {
            vec![
                check("kernel", Status::Ok),
                check("Service dataplane", Status::Ok),
            ]
        };
        let mut checks = ok();
        proxy_mode(&mut checks, &both);
        assert_eq!(checks.last().unwrap().status, Status::Ok);
        assert!(checks.last().unwrap().detail.contains("eBPF"));
        // What the fallbacks could do is said whichever mode runs.
        let f = &checks[checks.len() - 2];
        assert_eq!(f.name, "netfilter fallback");
        assert_eq!(f.detail, "nftables mode usable; iptables mode usable");
        let mut checks = ok();
        proxy_mode(&mut checks, &neither);
        assert!(
            checks[checks.len() - 2]
                .detail
                .starts_with("no nftables mode (cannot run `nft`)")
        );

        let failing = || {
            vec![
                check("cgroups", Status::Ok),
                check("BPF tc program", Status::Fail),
                check("Service dataplane", Status::Fail),
            ]
        };
        let mut checks = failing();
        proxy_mode(&mut checks, &both);
        assert!(passed(&checks), "the fallback serves: {checks:?}");
        let last = checks.last().unwrap();
        assert_eq!(last.status, Status::Warn);
        assert!(
            last.detail.starts_with("nftables rules")
                && last.detail.contains("BPF tc program, Service dataplane"),
            "{last:?}"
        );

        let mut checks = failing();
        proxy_mode(&mut checks, &iptables_only);
        assert!(passed(&checks), "the fallback serves: {checks:?}");
        let last = checks.last().unwrap();
        assert!(
            last.detail.starts_with("iptables rules")
                && last.detail.contains("older than 5.13")
                && last.detail.contains("BPF tc program, Service dataplane"),
            "{last:?}"
        );

        let mut checks = failing();
        proxy_mode(&mut checks, &neither);
        assert!(!passed(&checks));
        assert_eq!(checks.last().unwrap().status, Status::Fail);
        assert!(checks.last().unwrap().detail.contains("cannot run `nft`"));
        // A failure the fallback does not make up for stays one.
        let mut checks = vec![
            check("cgroups", Status::Fail),
            check("Service dataplane", Status::Fail),
        ];
        proxy_mode(&mut checks, &both);
        assert!(!passed(&checks));
    }

    #[test]
    fn the_verifiers_reason_is_the_line_before_its_statistics() {
        let log = "loading the service programs\n\
            0: (bf) r6 = r1\n\
            combined stack size of 4 calls is 576. Too large\n\
            verification time 39210 usec\n\
            stack depth 0+360+136+0+80\n\
            processed 44503 insns (limit 1000000) max_states_per_insn 10\n\
            : Permission denied (os error 13)";
        assert_eq!(
            verifier_reason(log),
            "combined stack size of 4 calls is 576. Too large / stack depth 0+360+136+0+80 / \
             Permission denied (os error 13)"
        );
        assert_eq!(verifier_reason("a\nb\nc\nd"), "b / c / d");
    }

    #[test]
    fn selinux_says_off_enforcing_or_permissive() {
        assert!(selinux_check(None).detail.starts_with("off"));
        assert!(selinux_check(Some("1\n")).detail.starts_with("enforcing"));
        assert!(selinux_check(Some("0")).detail.starts_with("permissive"));
        assert_eq!(selinux_check(Some("1")).status, Status::Ok);
    }

    #[test]
    fn cgroup_mode_of_a_plain_directory_is_legacy_and_missing_is_none() {
        let dir = std::env::temp_dir();
        assert_eq!(cgroup_mode(&dir), Some(CgroupMode::Legacy));
        assert_eq!(cgroup_mode(Path::new("/nonexistent/rudder")), None);
    }

    #[test]
    fn probe_packet_is_a_valid_udp_frame() {
        let p = probe_packet();
        assert_eq!(p.len(), 42);
        assert_eq!(u16::from_be_bytes([p[16], p[17]]), 28);
        assert_eq!(p[23], 17);
    }
}
