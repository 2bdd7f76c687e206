//! The `RuntimeDefault` seccomp profile, as containerd's CRI builds it
//! (`contrib/seccomp/seccomp_default.go`, the 2.x list): an allow-list
//! with `SCMP_ACT_ERRNO` (EPERM) for everything else, widened by the
//! capabilities the container is granted (a container with
//! `CAP_SYS_ADMIN` may `mount`, `unshare`, `setns`; one without it may
//! `clone` only without namespace flags and gets `ENOSYS` from `clone3`, so
//! that its C library falls back to `clone`), by the architecture and by
//! the kernel (`ptrace` from 4.8, before which seccomp could be bypassed
//! with it). Names the node's libseccomp does not know are skipped by runc,
//! so the list can name syscalls newer than the node.
//!
//! Written here rather than taken from a crate: no maintained Rust crate
//! carries containerd's (or Docker's) profile.

use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArgBuilder,
    LinuxSeccompOperator, LinuxSyscall,
};

use super::KernelVersion;

/// Allowed for every container.
#[rustfmt::skip]
const BASE: &[&str] = &[
    "accept", "accept4", "access", "adjtimex", "alarm", "bind", "brk", "cachestat", "capget",
    "capset", "chdir", "chmod", "chown", "chown32", "clock_adjtime", "clock_adjtime64",
    "clock_getres", "clock_getres_time64", "clock_gettime", "clock_gettime64", "clock_nanosleep",
    "clock_nanosleep_time64", "close", "close_range", "connect", "copy_file_range", "creat", "dup",
    "dup2", "dup3", "epoll_create", "epoll_create1", "epoll_ctl", "epoll_ctl_old", "epoll_pwait",
    "epoll_pwait2", "epoll_wait", "epoll_wait_old", "eventfd", "eventfd2", "execve", "execveat",
    "exit", "exit_group", "faccessat", "faccessat2", "fadvise64", "fadvise64_64", "fallocate",
    "fanotify_mark", "fchdir", "fchmod", "fchmodat", "fchmodat2", "fchown", "fchown32",
    "fchownat", "fcntl", "fcntl64", "fdatasync", "fgetxattr", "flistxattr", "flock", "fork",
    "fremovexattr", "fsetxattr", "fstat", "fstat64", "fstatat64", "fstatfs", "fstatfs64", "fsync",
    "ftruncate", "ftruncate64", "futex", "futex_requeue", "futex_time64", "futex_wait",
    "futex_waitv", "futex_wake", "futimesat", "getcpu", "getcwd", "getdents", "getdents64",
    "getegid", "getegid32", "geteuid", "geteuid32", "getgid", "getgid32", "getgroups",
    "getgroups32", "getitimer", "getpeername", "getpgid", "getpgrp", "getpid", "getppid",
    "getpriority", "getrandom", "getresgid", "getresgid32", "getresuid", "getresuid32",
    "getrlimit", "get_robust_list", "getrusage", "getsid", "getsockname", "getsockopt",
    "get_thread_area", "gettid", "gettimeofday", "getuid", "getuid32", "getxattr",
    "inotify_add_watch", "inotify_init", "inotify_init1", "inotify_rm_watch", "io_cancel", "ioctl",
    "io_destroy", "io_getevents", "io_pgetevents", "io_pgetevents_time64", "ioprio_get",
    "ioprio_set", "io_setup", "io_submit", "ipc", "kill", "landlock_add_rule",
    "landlock_create_ruleset", "landlock_restrict_self", "lchown", "lchown32", "lgetxattr", "link",
    "linkat", "listen", "listxattr", "llistxattr", "_llseek", "lremovexattr", "lseek", "lsetxattr",
    "lstat", "lstat64", "madvise", "membarrier", "memfd_create", "memfd_secret", "mincore",
    "mkdir", "mkdirat", "mknod", "mknodat", "mlock", "mlock2", "mlockall", "map_shadow_stack",
    "mmap", "mmap2", "mprotect", "mq_getsetattr", "mq_notify", "mq_open", "mq_timedreceive",
    "mq_timedreceive_time64", "mq_timedsend", "mq_timedsend_time64", "mq_unlink", "mremap",
    "msgctl", "msgget", "msgrcv", "msgsnd", "msync", "munlock", "munlockall", "munmap",
    "name_to_handle_at", "nanosleep", "newfstatat", "_newselect", "open", "openat", "openat2",
    "pause", "pidfd_open", "pidfd_send_signal", "pipe", "pipe2", "pkey_alloc", "pkey_free",
    "pkey_mprotect", "poll", "ppoll", "ppoll_time64", "prctl", "pread64", "preadv", "preadv2",
    "prlimit64", "process_mrelease", "pselect6", "pselect6_time64", "pwrite64", "pwritev",
    "pwritev2", "read", "readahead", "readlink", "readlinkat", "readv", "recv", "recvfrom",
    "recvmmsg", "recvmmsg_time64", "recvmsg", "remap_file_pages", "removexattr", "rename",
    "renameat", "renameat2", "restart_syscall", "rmdir", "rseq", "rt_sigaction", "rt_sigpending",
    "rt_sigprocmask", "rt_sigqueueinfo", "rt_sigreturn", "rt_sigsuspend", "rt_sigtimedwait",
    "rt_sigtimedwait_time64", "rt_tgsigqueueinfo", "sched_getaffinity", "sched_getattr",
    "sched_getparam", "sched_get_priority_max", "sched_get_priority_min", "sched_getscheduler",
    "sched_rr_get_interval", "sched_rr_get_interval_time64", "sched_setaffinity",
    "sched_setattr", "sched_setparam", "sched_setscheduler", "sched_yield", "seccomp", "select",
    "semctl", "semget", "semop", "semtimedop", "semtimedop_time64", "send", "sendfile",
    "sendfile64", "sendmmsg", "sendmsg", "sendto", "setfsgid", "setfsgid32", "setfsuid",
    "setfsuid32", "setgid", "setgid32", "setgroups", "setgroups32", "setitimer", "setpgid",
    "setpriority", "setregid", "setregid32", "setresgid", "setresgid32", "setresuid",
    "setresuid32", "setreuid", "setreuid32", "setrlimit", "set_robust_list", "setsid",
    "setsockopt", "set_thread_area", "set_tid_address", "setuid", "setuid32", "setxattr", "shmat",
    "shmctl", "shmdt", "shmget", "shutdown", "sigaltstack", "signalfd", "signalfd4",
    "sigprocmask", "sigreturn", "socketcall", "socketpair", "splice", "stat", "stat64", "statfs",
    "statfs64", "statx", "symlink", "symlinkat", "sync", "sync_file_range", "syncfs", "sysinfo",
    "tee", "tgkill", "time", "timer_create", "timer_delete", "timer_getoverrun", "timer_gettime",
    "timer_gettime64", "timer_settime", "timer_settime64", "timerfd_create", "timerfd_gettime",
    "timerfd_gettime64", "timerfd_settime", "timerfd_settime64", "times", "tkill", "truncate",
    "truncate64", "ugetrlimit", "umask", "uname", "unlink", "unlinkat", "utime", "utimensat",
    "utimensat_time64", "utimes", "vfork", "vmsplice", "wait4", "waitid", "waitpid", "write",
    "writev",
];

/// Allowed only with a capability of the container's bounding set.
#[rustfmt::skip]
const BY_CAPABILITY: &[(Capability, &[&str])] = &[
    (Capability::DacReadSearch, &["open_by_handle_at"]),
    (
        Capability::SysAdmin,
        &[
            "bpf", "clone", "clone3", "fanotify_init", "fsconfig", "fsmount", "fsopen", "fspick",
            "lookup_dcookie", "mount", "mount_setattr", "move_mount", "open_tree",
            "perf_event_open", "quotactl", "quotactl_fd", "setdomainname", "sethostname", "setns",
            "syslog", "umount", "umount2", "unshare",
        ],
    ),
    (Capability::SysBoot, &["reboot"]),
    (Capability::SysChroot, &["chroot"]),
    (
        Capability::SysModule,
        &["delete_module", "init_module", "finit_module"],
    ),
    (Capability::SysPacct, &["acct"]),
    (
        Capability::SysPtrace,
        &[
            "kcmp", "pidfd_getfd", "process_madvise", "process_vm_readv", "process_vm_writev",
            "ptrace",
        ],
    ),
    (Capability::SysRawio, &["iopl", "ioperm"]),
    (
        Capability::SysTime,
        &["settimeofday", "stime", "clock_settime", "clock_settime64"],
    ),
    (Capability::SysTtyConfig, &["vhangup"]),
    (
        Capability::SysNice,
        &["get_mempolicy", "mbind", "set_mempolicy", "set_mempolicy_home_node"],
    ),
    (Capability::Syslog, &["syslog"]),
    (Capability::Bpf, &["bpf"]),
    (Capability::Perfmon, &["perf_event_open"]),
];

/// `personality(2)` personas a container may switch to: `PER_LINUX`,
/// `PER_LINUX32`, `UNAME26`, `PER_LINUX32|UNAME26`, and the query.
const PERSONAS: &[u64] = &[0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

/// `AF_ALG` and `AF_VSOCK`: the address families `socket(2)` refuses.
const AF_ALG: u64 = 38;
const AF_VSOCK: u64 = 40;

/// The namespace flags of `clone(2)`: NEWNS, NEWCGROUP, NEWUTS, NEWIPC,
/// NEWUSER, NEWPID, NEWNET.
const CLONE_NAMESPACES: u64 =
    0x0002_0000 | 0x0200_0000 | 0x0400_0000 | 0x0800_0000 | 0x1000_0000 | 0x2000_0000 | 0x4000_0000;

const ENOSYS: u32 = 38;

fn allow(names: &[&str]) -> LinuxSyscall {
    let mut s = LinuxSyscall::default();
    s.set_names(names.iter().map(ToString::to_string).collect());
    s.set_action(LinuxSeccompAction::ScmpActAllow);
    s
}

fn allow_if(name: &str, index: usize, op: LinuxSeccompOperator, value: u64) -> LinuxSyscall {
    let mut arg = LinuxSeccompArgBuilder::default()
        .index(index)
        .op(op)
        .value(value);
    if op == LinuxSeccompOperator::ScmpCmpMaskedEq {
        arg = arg.value_two(0u64);
    }
    let arg = arg.build().expect("every field has a default");
    let mut s = allow(&[name]);
    s.set_args(Some(vec![arg]));
    s
}

/// The architectures the filter covers on a host of `arch`
/// (`std::env::consts::ARCH`): the native one and those its binaries may
/// also run as (32-bit x86 and x32 on x86-64).
pub fn architectures(arch: &str) -> Vec<Arch> {
    match arch {
        "x86_64" => vec![Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32],
        "x86" => vec![Arch::ScmpArchX86],
        "aarch64" => vec![Arch::ScmpArchArm, Arch::ScmpArchAarch64],
        "s390x" => vec![Arch::ScmpArchS390, Arch::ScmpArchS390x],
        "riscv64" => vec![Arch::ScmpArchRiscv64],
        "loongarch64" => vec![Arch::ScmpArchLoongarch64],
        _ => Vec::new(),
    }
}

/// The seccomp name of a host of `arch` (`std::env::consts::ARCH`).
pub fn native_arch(arch: &str) -> Option<Arch> {
    Some(match arch {
        "x86_64" => Arch::ScmpArchX86_64,
        "x86" => Arch::ScmpArchX86,
        "aarch64" => Arch::ScmpArchAarch64,
        "arm" => Arch::ScmpArchArm,
        "s390x" => Arch::ScmpArchS390x,
        "powerpc64" => Arch::ScmpArchPpc64le,
        "riscv64" => Arch::ScmpArchRiscv64,
        "loongarch64" => Arch::ScmpArchLoongarch64,
        _ => return None,
    })
}

/// Syscalls only some architectures have.
fn by_arch(arch: &str) -> &'static [&'static str] {
    match arch {
        "x86_64" => &["arch_prctl", "modify_ldt"],
        "x86" => &["modify_ldt"],
        "aarch64" | "arm" => &[
            "arm_fadvise64_64",
            "arm_sync_file_range",
            "sync_file_range2",
            "breakpoint",
            "cacheflush",
            "set_tls",
        ],
        "powerpc64" => &["sync_file_range2", "swapcontext"],
        "s390x" => &[
            "s390_pci_mmio_read",
            "s390_pci_mmio_write",
            "s390_runtime_instr",
        ],
        "riscv64" => &["riscv_flush_icache"],
        _ => &[],
    }
}

/// The profile for a container whose bounding set is `caps`, on a host
/// of architecture `arch` running `kernel`.
pub fn runtime_default(caps: &Capabilities, kernel: KernelVersion, arch: &str) -> LinuxSeccomp {
    use LinuxSeccompOperator::{ScmpCmpEq, ScmpCmpGt, ScmpCmpLt, ScmpCmpMaskedEq};
    let mut syscalls = vec![
        allow(BASE),
        // Three single-condition rules: runc would OR two conditions on
        // the same argument, letting both families through.
        allow_if("socket", 0, ScmpCmpLt, AF_ALG),
        allow_if("socket", 0, ScmpCmpEq, AF_ALG + 1),
        allow_if("socket", 0, ScmpCmpGt, AF_VSOCK),
    ];
    syscalls.extend(
        PERSONAS
            .iter()
            .map(|p| allow_if("personality", 0, ScmpCmpEq, *p)),
    );
    if kernel >= (KernelVersion { major: 4, minor: 8 }) {
        syscalls.push(allow(&["process_vm_readv", "process_vm_writev", "ptrace"]));
    }
    if !by_arch(arch).is_empty() {
        syscalls.push(allow(by_arch(arch)));
    }
    for (cap, names) in BY_CAPABILITY {
        if caps.contains(cap) {
            syscalls.push(allow(names));
        }
    }
    if !caps.contains(&Capability::SysAdmin) {
        // s390's clone takes the flags second.
        let index = usize::from(arch == "s390x");
        syscalls.push(allow_if("clone", index, ScmpCmpMaskedEq, CLONE_NAMESPACES));
        let mut clone3 = LinuxSyscall::default();
        clone3.set_names(vec!["clone3".into()]);
        clone3.set_action(LinuxSeccompAction::ScmpActErrno);
        clone3.set_errno_ret(Some(ENOSYS));
        syscalls.push(clone3);
    }
    let mut s = LinuxSeccomp::default();
    s.set_default_action(LinuxSeccompAction::ScmpActErrno);
    s.set_architectures(Some(architectures(arch)).filter(|a| !a.is_empty()));
    s.set_syscalls(Some(syscalls));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allowed(p: &LinuxSeccomp, name: &str) -> Vec<LinuxSyscall> {
        p.syscalls()
            .iter()
            .flatten()
            .filter(|s| s.names().iter().any(|n| n == name))
            .cloned()
            .collect()
    }

    const NEW: KernelVersion = KernelVersion { major: 6, minor: 1 };

    #[test]
    fn the_default_caps_get_the_base_list_and_no_namespace_escapes() {
        let caps: Capabilities = [Capability::Chown, Capability::SysChroot]
            .into_iter()
            .collect();
        let p = runtime_default(&caps, NEW, "x86_64");
        assert_eq!(p.default_action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(
            p.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        for name in ["read", "execve", "arch_prctl", "chroot", "ptrace"] {
            assert!(!allowed(&p, name).is_empty(), "{name}");
        }
        for name in [
            "mount", "unshare", "setns", "bpf", "reboot", "syslog", "keyctl",
        ] {
            assert!(allowed(&p, name).is_empty(), "{name}");
        }
        // clone only without namespace flags; clone3 answers ENOSYS.
        let clone = allowed(&p, "clone");
        assert_eq!(clone.len(), 1);
        let arg = clone[0].args().as_ref().unwrap()[0];
        assert_eq!(
            (arg.index(), arg.value(), arg.value_two()),
            (0, 0x7E02_0000, Some(0))
        );
        let clone3 = allowed(&p, "clone3");
        assert_eq!(clone3[0].action(), LinuxSeccompAction::ScmpActErrno);
        assert_eq!(clone3[0].errno_ret(), Some(38));
        // socket(2) for every family but AF_ALG (38) and AF_VSOCK (40).
        let socket = allowed(&p, "socket");
        let passes = |family: u64| {
            socket.iter().any(|s| {
                let a = s.args().as_ref().unwrap()[0];
                match a.op() {
                    LinuxSeccompOperator::ScmpCmpLt => family < a.value(),
                    LinuxSeccompOperator::ScmpCmpEq => family == a.value(),
                    LinuxSeccompOperator::ScmpCmpGt => family > a.value(),
                    _ => unreachable!(),
                }
            })
        };
        assert!(passes(2) && passes(10) && passes(16) && passes(39) && passes(44));
        assert!(!passes(38) && !passes(40));
    }

    #[test]
    fn capabilities_architecture_and_kernel_widen_it() {
        let caps: Capabilities = [Capability::SysAdmin, Capability::SysPtrace]
            .into_iter()
            .collect();
        let p = runtime_default(&caps, NEW, "aarch64");
        for name in ["mount", "unshare", "setns", "clone3", "kcmp", "set_tls"] {
            assert!(!allowed(&p, name).is_empty(), "{name}");
        }
        assert!(allowed(&p, "arch_prctl").is_empty());
        // With CAP_SYS_ADMIN, clone and clone3 are plainly allowed.
        assert!(
            allowed(&p, "clone")
                .iter()
                .all(|s| s.args().is_none() && s.action() == LinuxSeccompAction::ScmpActAllow)
        );
        // CentOS 7's kernel: no ptrace without CAP_SYS_PTRACE.
        let old = KernelVersion {
            major: 3,
            minor: 10,
        };
        let p = runtime_default(&Capabilities::new(), old, "x86_64");
        assert!(allowed(&p, "ptrace").is_empty());
    }
}
