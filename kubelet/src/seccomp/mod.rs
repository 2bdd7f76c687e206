//! Seccomp for a container, as the kubelet and containerd's CRI choose
//! it: the container's `securityContext.seccompProfile`, else the pod's,
//! else `RuntimeDefault` when the kubelet runs with `--seccomp-default`
//! and `Unconfined` otherwise (upstream's default). Privileged containers
//! run unconfined whatever they ask, as containerd does.
//!
//! - `RuntimeDefault`: containerd's profile ([`default`]).
//! - `Localhost`: a profile file under the kubelet's `<root-dir>/seccomp`,
//!   named by a relative path without `..` (checked again here, whatever
//!   the apiserver let through), at most 1 MiB, in the Docker/containerd
//!   profile format (`names`/`name`, `archMap`, `includes`/`excludes` by
//!   capability, architecture and kernel, `errnoRet`, `args`, `flags`),
//!   turned into the OCI form against the container's capabilities.
//! - A node whose kernel has no seccomp refuses any profile but
//!   `Unconfined` (`CreateContainerError`), as containerd does.
//!
//! Resolution reads files; the conversion into the OCI form is pure.

pub mod default;

use std::{
    io::Read as _,
    path::{Path, PathBuf},
};

use k8s_openapi::api::core::v1::{Container, Pod, SeccompProfile};
use oci_spec::runtime::{
    Arch, Capabilities, Capability, LinuxSeccomp, LinuxSeccompAction, LinuxSeccompArg,
    LinuxSeccompFilterFlag, LinuxSyscall,
};
use serde::Deserialize;

/// The largest profile file read.
const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// A kernel's `major.minor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    pub major: u32,
    pub minor: u32,
}

impl KernelVersion {
    /// From a release string such as `3.10.0-1160.el7.x86_64` or `6.1`.
    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.trim().split(['.', '-']);
        let major = parts.next()?.parse().ok()?;
        let minor = parts
            .next()
            .map(|m| m.trim_end_matches(|c: char| !c.is_ascii_digit()).parse())
            .transpose()
            .ok()?
            .unwrap_or(0);
        Some(Self { major, minor })
    }

    /// This host's kernel (0.0 if unreadable, which enables nothing
    /// version-gated).
    pub fn host() -> Self {
        static V: std::sync::OnceLock<KernelVersion> = std::sync::OnceLock::new();
        *V.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .and_then(|s| Self::parse(&s))
                .unwrap_or(Self { major: 0, minor: 0 })
        })
    }
}

/// Whether this kernel filters syscalls (`Seccomp:` in
/// /proc/self/status, CONFIG_SECCOMP).
pub fn host_supports_seccomp() -> bool {
    static S: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *S.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .is_ok_and(|s| s.lines().any(|l| l.starts_with("Seccomp:")))
    })
}

/// What a container runs under.
#[derive(Debug, Clone, PartialEq)]
pub enum Seccomp {
    Unconfined,
    RuntimeDefault,
    Localhost(Box<Profile>),
}

/// Why a container's profile could not be had: its waiting reason is
/// `CreateContainerError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp is not supported on this node")]
    Unsupported,
    #[error("seccomp profile type {0:?} is not supported")]
    Type(String),
    #[error("localhostProfile must be set when seccomp type is Localhost")]
    NoPath,
    #[error("localhostProfile {0:?} must be a relative path without '..'")]
    Path(String),
    #[error("cannot load seccomp profile {}: {reason}", .path.display())]
    Load { path: PathBuf, reason: String },
    #[error("invalid seccomp profile: {0}")]
    Invalid(String),
}

/// The profile field that applies to container `c` of `pod`.
pub fn profile_field<'a>(pod: &'a Pod, c: &'a Container) -> Option<&'a SeccompProfile> {
    c.security_context
        .as_ref()
        .and_then(|s| s.seccomp_profile.as_ref())
        .or_else(|| {
            pod.spec
                .as_ref()
                .and_then(|s| s.security_context.as_ref())
                .and_then(|s| s.seccomp_profile.as_ref())
        })
}

/// What container `c` of `pod` runs under: `seccomp_default` is the
/// kubelet's `--seccomp-default`, `root` its `<root-dir>/seccomp`.
pub fn resolve(
    pod: &Pod,
    c: &Container,
    seccomp_default: bool,
    root: &Path,
) -> Result<Seccomp, SeccompError> {
    if c.security_context.as_ref().and_then(|s| s.privileged) == Some(true) {
        return Ok(Seccomp::Unconfined);
    }
    let chosen = match profile_field(pod, c) {
        Some(p) => match p.type_.as_str() {
            "Unconfined" => Seccomp::Unconfined,
            "RuntimeDefault" => Seccomp::RuntimeDefault,
            "Localhost" => {
                let rel = p.localhost_profile.as_deref().ok_or(SeccompError::NoPath)?;
                Seccomp::Localhost(Box::new(load(root, rel)?))
            }
            other => return Err(SeccompError::Type(other.to_string())),
        },
        None if seccomp_default => Seccomp::RuntimeDefault,
        None => Seccomp::Unconfined,
    };
    if chosen != Seccomp::Unconfined && !host_supports_seccomp() {
        return Err(SeccompError::Unsupported);
    }
    Ok(chosen)
}

/// The profile file `rel` under `root`.
fn load(root: &Path, rel: &str) -> Result<Profile, SeccompError> {
    if rel.is_empty() || !rudder_k8s::paths::is_local_descending(rel) {
        return Err(SeccompError::Path(rel.to_string()));
    }
    let path = root.join(rel);
    let failed = |reason: String| SeccompError::Load {
        path: path.clone(),
        reason,
    };
    let file = std::fs::File::open(&path).map_err(|e| failed(e.to_string()))?;
    let mut text = Vec::new();
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_end(&mut text)
        .map_err(|e| failed(e.to_string()))?;
    if text.len() as u64 > MAX_PROFILE_BYTES {
        return Err(failed(format!("larger than {MAX_PROFILE_BYTES} bytes")));
    }
    serde_json::from_slice(&text).map_err(|e| failed(e.to_string()))
}

/// A profile in the Docker/containerd file format.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Profile {
    default_action: LinuxSeccompAction,
    default_errno_ret: Option<u32>,
    architectures: Option<Vec<Arch>>,
    arch_map: Option<Vec<ArchMap>>,
    syscalls: Option<Vec<Syscall>>,
    flags: Option<Vec<LinuxSeccompFilterFlag>>,
    listener_path: Option<PathBuf>,
    listener_metadata: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArchMap {
    architecture: Arch,
    sub_architectures: Option<Vec<Arch>>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Syscall {
    name: Option<String>,
    names: Option<Vec<String>>,
    action: LinuxSeccompAction,
    errno_ret: Option<u32>,
    args: Option<Vec<LinuxSeccompArg>>,
    includes: Option<Filter>,
    excludes: Option<Filter>,
}

/// When a rule applies: every listed capability held (`includes`) or any
/// held (`excludes`), the architecture listed, the kernel at least
/// `minKernel`.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Filter {
    caps: Option<Vec<String>>,
    arches: Option<Vec<String>>,
    min_kernel: Option<String>,
}

/// The Docker name of an architecture (Go's `GOARCH`, as profiles'
/// `arches` spell it) from Rust's `std::env::consts::ARCH`.
fn docker_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "loongarch64" => "loong64",
        other => other,
    }
}

fn held(caps: &Capabilities, name: &str) -> bool {
    let n = name.trim_start_matches("CAP_");
    n.parse::<Capability>().is_ok_and(|c| caps.contains(&c))
}

impl Filter {
    fn min_kernel(&self) -> Result<Option<KernelVersion>, SeccompError> {
        self.min_kernel
            .as_deref()
            .map(|k| {
                KernelVersion::parse(k)
                    .ok_or_else(|| SeccompError::Invalid(format!("minKernel {k:?}")))
            })
            .transpose()
    }
}

impl Syscall {
    /// Whether the rule applies to a container with `caps` on `arch` and
    /// `kernel`.
    fn applies(
        &self,
        caps: &Capabilities,
        kernel: KernelVersion,
        arch: &str,
    ) -> Result<bool, SeccompError> {
        let arch = docker_arch(arch);
        let none = Filter::default();
        let x = self.excludes.as_ref().unwrap_or(&none);
        let excluded = x.arches.iter().flatten().any(|a| a == arch)
            || x.caps.iter().flatten().any(|c| held(caps, c))
            || x.min_kernel()?.is_some_and(|k| kernel >= k);
        let i = self.includes.as_ref().unwrap_or(&none);
        let included = i
            .arches
            .as_ref()
            .is_none_or(|a| a.is_empty() || a.iter().any(|a| a == arch))
            && i.caps.iter().flatten().all(|c| held(caps, c))
            && i.min_kernel()?.is_none_or(|k| kernel >= k);
        Ok(included && !excluded)
    }
}

impl Profile {
    /// The OCI form for a container with bounding set `caps`.
    pub fn to_oci(
        &self,
        caps: &Capabilities,
        kernel: KernelVersion,
        arch: &str,
    ) -> Result<LinuxSeccomp, SeccompError> {
        let mut arches = self.architectures.clone().unwrap_or_default();
        if let Some(map) = &self.arch_map {
            if !arches.is_empty() && !map.is_empty() {
                return Err(SeccompError::Invalid(
                    "'architectures' and 'archMap' were both specified".into(),
                ));
            }
            let native = default::native_arch(arch);
            for m in map.iter().filter(|m| native == Some(m.architecture)) {
                arches.push(m.architecture);
                arches.extend(m.sub_architectures.iter().flatten());
            }
        }
        let mut syscalls = Vec::new();
        for call in self.syscalls.iter().flatten() {
            if !call.applies(caps, kernel, arch)? {
                continue;
            }
            let mut names = call.names.clone().unwrap_or_default();
            if let Some(n) = call.name.clone().filter(|n| !n.is_empty()) {
                if !names.is_empty() {
                    return Err(SeccompError::Invalid(
                        "'name' and 'names' were both specified".into(),
                    ));
                }
                names.push(n);
            }
            let mut s = LinuxSyscall::default();
            s.set_names(names);
            s.set_action(call.action);
            s.set_errno_ret(call.errno_ret);
            s.set_args(call.args.clone().filter(|a| !a.is_empty()));
            syscalls.push(s);
        }
        let mut out = LinuxSeccomp::default();
        out.set_default_action(self.default_action);
        out.set_default_errno_ret(self.default_errno_ret);
        out.set_architectures(Some(arches).filter(|a| !a.is_empty()));
        out.set_flags(self.flags.clone().filter(|f| !f.is_empty()));
        out.set_listener_path(self.listener_path.clone());
        out.set_listener_metadata(self.listener_metadata.clone());
        out.set_syscalls(Some(syscalls));
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn first(p: &Pod) -> Container {
        p.spec.as_ref().unwrap().containers[0].clone()
    }

    #[test]
    fn kernel_versions_parse_as_uname_prints_them() {
        let v = |s| KernelVersion::parse(s).unwrap();
        assert_eq!(
            v("3.10.0-1160.el7.x86_64"),
            KernelVersion {
                major: 3,
                minor: 10
            }
        );
        assert_eq!(
            v("6.18.0+"),
            KernelVersion {
                major: 6,
                minor: 18
            }
        );
        assert_eq!(v("4.8"), KernelVersion { major: 4, minor: 8 });
        assert_eq!(v("5"), KernelVersion { major: 5, minor: 0 });
        assert!(KernelVersion::parse("x.y").is_none());
        assert!(v("4.8") > v("4.7.10") && v("3.10") < v("4.8"));
    }

    #[test]
    fn the_container_field_wins_then_the_pod_then_the_kubelet_default() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let p = pod(serde_json::json!({"metadata": {"name": "p"}, "spec": {
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i",
                "securityContext": {"seccompProfile": {"type": "Unconfined"}}}]}}));
        assert_eq!(resolve(&p, &first(&p), true, root), Ok(Seccomp::Unconfined));
        let p = pod(serde_json::json!({"metadata": {"name": "p"}, "spec": {
            "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i"}]}}));
        let c = first(&p);
        if host_supports_seccomp() {
            assert_eq!(resolve(&p, &c, false, root), Ok(Seccomp::RuntimeDefault));
        }
        // Privileged containers run unconfined, whatever is asked.
        let mut privileged = c.clone();
        privileged.security_context = Some(k8s_openapi::api::core::v1::SecurityContext {
            privileged: Some(true),
            ..Default::default()
        });
        assert_eq!(
            resolve(&p, &privileged, true, root),
            Ok(Seccomp::Unconfined)
        );
        let bare = pod(serde_json::json!({"metadata": {"name": "p"}, "spec": {
            "containers": [{"name": "c", "image": "i"}]}}));
        assert_eq!(
            resolve(&bare, &first(&bare), false, root),
            Ok(Seccomp::Unconfined)
        );
        if host_supports_seccomp() {
            assert_eq!(
                resolve(&bare, &first(&bare), true, root),
                Ok(Seccomp::RuntimeDefault)
            );
        }
    }

    #[test]
    fn localhost_profiles_stay_under_the_root_and_are_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("seccomp");
        std::fs::create_dir_all(root.join("team")).unwrap();
        std::fs::write(
            dir.path().join("outside.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW"}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("team/deny-mkdir.json"),
            r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1, "args": null}]}"#,
        )
        .unwrap();
        std::fs::write(
            root.join("big.json"),
            vec![b' '; (MAX_PROFILE_BYTES + 1) as usize],
        )
        .unwrap();
        let with = |local: Option<&str>| {
            let mut sp = serde_json::json!({"type": "Localhost"});
            if let Some(l) = local {
                sp["localhostProfile"] = l.into();
            }
            let p = pod(serde_json::json!({"metadata": {"name": "p"}, "spec": {
                "containers": [{"name": "c", "image": "i",
                    "securityContext": {"seccompProfile": sp}}]}}));
            resolve(&p, &first(&p), false, &root)
        };
        if host_supports_seccomp() {
            let Ok(Seccomp::Localhost(profile)) = with(Some("team/deny-mkdir.json")) else {
                panic!("{:?}", with(Some("team/deny-mkdir.json")));
            };
            let oci = profile
                .to_oci(&Capabilities::new(), KernelVersion::host(), "x86_64")
                .unwrap();
            let rule = &oci.syscalls().as_ref().unwrap()[0];
            assert_eq!(rule.names(), &["mkdir", "mkdirat"]);
            assert_eq!(rule.errno_ret(), Some(1));
        }
        assert_eq!(with(None), Err(SeccompError::NoPath));
        for bad in [
            "../outside.json",
            "/etc/passwd",
            "team/../../outside.json",
            "",
        ] {
            assert_eq!(
                with(Some(bad)),
                Err(SeccompError::Path(bad.into())),
                "{bad}"
            );
        }
        for missing in ["nope.json", "big.json"] {
            assert!(
                matches!(with(Some(missing)), Err(SeccompError::Load { .. })),
                "{missing}: {:?}",
                with(Some(missing))
            );
        }
    }

    #[test]
    fn docker_profiles_filter_by_capability_architecture_and_kernel() {
        let profile: Profile = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "archMap": [
                {"architecture": "SCMP_ARCH_X86_64",
                 "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
                {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]}],
            "syscalls": [
                {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW"},
                {"name": "mount", "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}},
                {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64", "x32"]}},
                {"names": ["ptrace"], "action": "SCMP_ACT_ALLOW", "includes": {"minKernel": "4.8"}},
                {"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                 "args": [{"index": 0, "value": 2114060288, "valueTwo": 0, "op": "SCMP_CMP_MASKED_EQ"}],
                 "excludes": {"caps": ["CAP_SYS_ADMIN"]}}
            ]
        }))
        .unwrap();
        let names = |p: &LinuxSeccomp| -> Vec<String> {
            p.syscalls()
                .iter()
                .flatten()
                .flat_map(|s| s.names().clone())
                .collect()
        };
        let new = KernelVersion { major: 6, minor: 1 };
        let old = KernelVersion {
            major: 3,
            minor: 10,
        };
        let plain = profile.to_oci(&Capabilities::new(), new, "x86_64").unwrap();
        assert_eq!(
            names(&plain),
            ["read", "write", "arch_prctl", "ptrace", "clone"]
        );
        assert_eq!(
            plain.architectures().as_deref(),
            Some(&[Arch::ScmpArchX86_64, Arch::ScmpArchX86, Arch::ScmpArchX32][..])
        );
        assert_eq!(plain.default_errno_ret(), Some(1));
        let admin: Capabilities = [Capability::SysAdmin].into_iter().collect();
        let arm = profile.to_oci(&admin, old, "aarch64").unwrap();
        assert_eq!(names(&arm), ["read", "write", "mount"]);
        assert_eq!(
            arm.architectures().as_deref(),
            Some(&[Arch::ScmpArchAarch64, Arch::ScmpArchArm][..])
        );
        let both: Profile = serde_json::from_value(serde_json::json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"name": "a", "names": ["b"], "action": "SCMP_ACT_ERRNO"}]}))
        .unwrap();
        assert!(matches!(
            both.to_oci(&Capabilities::new(), new, "x86_64"),
            Err(SeccompError::Invalid(_))
        ));
    }
}
