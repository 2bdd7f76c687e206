//! The OCI runtime spec of one container, from the pod, the container, the
//! image's configuration and what the worker prepared (environment,
//! namespaces, mounts, cgroup path). Pure.

use std::{path::PathBuf, str::FromStr as _};

use k8s_openapi::{
    api::core::v1::{Container, Pod, PodSecurityContext, SecurityContext},
    apimachinery::pkg::api::resource::Quantity,
};
use oci_spec::runtime::{
    Capabilities, Capability, Linux, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResources,
    LinuxResourcesBuilder, Mount, MountBuilder, Spec, User, UserBuilder,
};

use super::{
    env::expand,
    quantity,
    seccomp::{self, KernelVersion, Seccomp},
};
use rudder_runtime::image::ImageConfig;

/// containerd's (and Docker's) default capability set.
const DEFAULT_CAPS: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// Every capability by its number (`linux/capability.h`), to match them
/// against the bounding set the runtime can grant.
const ALL_CAPS: &[(&str, u32)] = &[
    ("CHOWN", 0),
    ("DAC_OVERRIDE", 1),
    ("DAC_READ_SEARCH", 2),
    ("FOWNER", 3),
    ("FSETID", 4),
    ("KILL", 5),
    ("SETGID", 6),
    ("SETUID", 7),
    ("SETPCAP", 8),
    ("LINUX_IMMUTABLE", 9),
    ("NET_BIND_SERVICE", 10),
    ("NET_BROADCAST", 11),
    ("NET_ADMIN", 12),
    ("NET_RAW", 13),
    ("IPC_LOCK", 14),
    ("IPC_OWNER", 15),
    ("SYS_MODULE", 16),
    ("SYS_RAWIO", 17),
    ("SYS_CHROOT", 18),
    ("SYS_PTRACE", 19),
    ("SYS_PACCT", 20),
    ("SYS_ADMIN", 21),
    ("SYS_BOOT", 22),
    ("SYS_NICE", 23),
    ("SYS_RESOURCE", 24),
    ("SYS_TIME", 25),
    ("SYS_TTY_CONFIG", 26),
    ("MKNOD", 27),
    ("LEASE", 28),
    ("AUDIT_WRITE", 29),
    ("AUDIT_CONTROL", 30),
    ("SETFCAP", 31),
    ("MAC_OVERRIDE", 32),
    ("MAC_ADMIN", 33),
    ("SYSLOG", 34),
    ("WAKE_ALARM", 35),
    ("BLOCK_SUSPEND", 36),
    ("AUDIT_READ", 37),
    ("PERFMON", 38),
    ("BPF", 39),
    ("CHECKPOINT_RESTORE", 40),
];

/// The capability bounding set of this process (`CapBnd` of
/// /proc/self/status; every bit if unreadable): what the runtime started
/// beside it can grant. A node in a container of its own or under a
/// restricted service unit lacks some (CAP_SYS_RESOURCE, say), and runc
/// fails with "unable to apply caps" when asked for one.
pub fn host_bounding_set() -> u64 {
    static SET: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *SET.get_or_init(|| {
        std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                let hex = s.lines().find_map(|l| l.strip_prefix("CapBnd:"))?;
                u64::from_str_radix(hex.trim(), 16).ok()
            })
            .unwrap_or(u64::MAX)
    })
}

/// "All capabilities" as containerd's CRI grants them to a privileged
/// container (`WithAllCurrentCapabilities`): those of the bounding set.
fn all_caps(bounding: u64) -> impl Iterator<Item = Capability> {
    ALL_CAPS
        .iter()
        .filter(move |(_, n)| bounding & (1u64 << n) != 0)
        .filter_map(|(name, _)| capability(name).ok())
}

/// Why no spec could be made: `CreateContainerConfigError` (bad
/// configuration) or `CreateContainerError`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("no command specified")]
    NoCommand,
    #[error("invalid capability {0:?}")]
    Capability(String),
    #[error("image user {0:?} is not numeric and runAsUser is not set")]
    User(String),
    #[error("invalid resource quantity {what}: {value:?}")]
    Quantity { what: &'static str, value: String },
    #[error("cannot build the OCI spec: {0}")]
    Oci(String),
    #[error("failed to generate seccomp spec opts: {0}")]
    Seccomp(String),
}

impl SpecError {
    /// The Kubernetes waiting reason this error shows as.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::NoCommand | Self::Oci(_) | Self::Seccomp(_) => "CreateContainerError",
            _ => "CreateContainerConfigError",
        }
    }
}

fn oci(e: impl std::fmt::Display) -> SpecError {
    SpecError::Oci(e.to_string())
}

/// A mount the worker prepared (volume, `/etc/hosts`, termination log).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountSpec {
    pub destination: String,
    pub source: PathBuf,
    pub read_only: bool,
    /// Something the kubelet made (a volume, `/etc/hosts`): mounted
    /// `nosuid,nodev`, so that nothing in it can be a setuid program or a
    /// device node.
    pub nosuid_nodev: bool,
}

/// The namespaces the pod's containers join (`None`: the host's).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodNamespaces {
    pub net: Option<PathBuf>,
    pub ipc: Option<PathBuf>,
    pub uts: Option<PathBuf>,
    /// The PID namespace to join (an ephemeral container's target's);
    /// `None`: a new one.
    pub pid: Option<PathBuf>,
    /// `hostPID`: the host's PID namespace.
    pub host_pid: bool,
}

/// Everything one container's spec is made of.
#[derive(Debug)]
pub struct SpecInput<'a> {
    pub pod: &'a Pod,
    pub container: &'a Container,
    pub image: &'a ImageConfig,
    /// The Kubernetes environment, resolved and in order.
    pub env: &'a [(String, String)],
    pub namespaces: &'a PodNamespaces,
    pub mounts: &'a [MountSpec],
    /// Relative to the cgroup root, e.g. `/rudder/pod<uid>/<id>`.
    pub cgroups_path: &'a str,
    pub hostname: &'a str,
    /// The capability bounding set the runtime can grant (`privileged`
    /// and `add: [ALL]` get these): `host_bounding_set()`.
    pub bounding_caps: u64,
    /// The seccomp profile chosen for the container
    /// ([`seccomp::resolve`]); privileged containers get none.
    pub seccomp: &'a Seccomp,
    /// The node's kernel (version-gated seccomp rules).
    pub kernel: KernelVersion,
    /// The SELinux labels of the process and its mounts, on a node that
    /// labels containers ([`crate::selinux`]).
    pub selinux: Option<&'a crate::selinux::Labels>,
}

/// The process arguments: the rules of `command`/`args` against the
/// image's Entrypoint/Cmd, with `$(VAR)` expanded from `env`.
pub fn command_line(c: &Container, image: &ImageConfig, env: &[(String, String)]) -> Vec<String> {
    let lookup = |n: &str| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone());
    let x = |v: &Vec<String>| v.iter().map(|s| expand(s, &lookup)).collect::<Vec<_>>();
    let command = c.command.clone().unwrap_or_default();
    let args = c.args.clone().unwrap_or_default();
    match (command.is_empty(), args.is_empty()) {
        (false, _) => [x(&command), x(&args)].concat(),
        (true, false) => [image.entrypoint.clone(), x(&args)].concat(),
        (true, true) => [image.entrypoint.clone(), image.cmd.clone()].concat(),
    }
}

fn capability(name: &str) -> Result<Capability, SpecError> {
    let n = name.trim_start_matches("CAP_");
    Capability::from_str(n).map_err(|_| SpecError::Capability(name.to_string()))
}

/// Builds the spec.
pub fn build(input: &SpecInput<'_>) -> Result<Spec, SpecError> {
    let c = input.container;
    let pod_sc = input
        .pod
        .spec
        .as_ref()
        .and_then(|s| s.security_context.clone());
    let sc = c.security_context.clone().unwrap_or_default();
    let privileged = sc.privileged == Some(true);

    let args = command_line(c, input.image, input.env);
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    let env = environment(input);
    let user = user(&sc, pod_sc.as_ref(), input.image)?;
    let caps = capability_set(&sc, privileged, input.bounding_caps)?;
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps.clone())
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(oci)?;

    let mut spec = Spec::default();
    // The host's own UTS namespace (hostNetwork) keeps its name: runc
    // refuses to set one there, and containerd's CRI sets only $HOSTNAME.
    spec.set_hostname(
        input
            .namespaces
            .uts
            .is_some()
            .then(|| input.hostname.to_string()),
    );
    if let Some(root) = spec.root_mut() {
        root.set_path(PathBuf::from("rootfs"));
        root.set_readonly(Some(sc.read_only_root_filesystem == Some(true)));
    }
    if let Some(p) = spec.process_mut() {
        p.set_args(Some(args));
        p.set_env(Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()));
        let cwd = c
            .working_dir
            .clone()
            .filter(|w| !w.is_empty())
            .or_else(|| Some(input.image.working_dir.clone()).filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        p.set_cwd(PathBuf::from(cwd));
        p.set_user(user);
        p.set_capabilities(Some(capabilities));
        p.set_terminal(Some(c.tty == Some(true)));
        p.set_no_new_privileges(Some(
            !privileged && sc.allow_privilege_escalation == Some(false),
        ));
        p.set_selinux_label(input.selinux.map(|l| l.process.clone()));
    }
    let defaults = spec.mounts().clone().unwrap_or_default();
    spec.set_mounts(Some(mounts(defaults, privileged, input.mounts)?));
    let default_linux = spec.linux().clone().unwrap_or_default();
    spec.set_linux(Some(linux(input, &default_linux, privileged, &caps)?));
    let uid = input.pod.metadata.uid.clone().unwrap_or_default();
    spec.set_annotations(Some(std::collections::HashMap::from([
        // One runc shim per pod, as the CRI plugin groups them.
        (
            "io.containerd.runc.v2.group".to_string(),
            format!("rudder-{uid}"),
        ),
        ("io.kubernetes.pod.uid".to_string(), uid),
        ("io.kubernetes.container.name".to_string(), c.name.clone()),
    ])));
    Ok(spec)
}

/// The environment: the image's (with a default `PATH`), `HOSTNAME`, then
/// the container's, which overrides.
fn environment(input: &SpecInput<'_>) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = input
        .image
        .env
        .iter()
        .filter_map(|e| {
            e.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.insert(
            0,
            (
                "PATH".into(),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
            ),
        );
    }
    env.push(("HOSTNAME".into(), input.hostname.to_string()));
    for (k, v) in input.env {
        if let Some(e) = env.iter_mut().find(|(n, _)| n == k) {
            e.1 = v.clone();
        } else {
            env.push((k.clone(), v.clone()));
        }
    }
    env
}

/// The process's user: runAsUser/Group (container over pod), else the
/// image's numeric user; supplemental groups and the fsGroup.
fn user(
    sc: &SecurityContext,
    pod_sc: Option<&PodSecurityContext>,
    image: &ImageConfig,
) -> Result<User, SpecError> {
    let run_as_user = sc.run_as_user.or(pod_sc.and_then(|p| p.run_as_user));
    let run_as_group = sc.run_as_group.or(pod_sc.and_then(|p| p.run_as_group));
    let (image_uid, image_gid) = match image.user.as_str() {
        "" | "root" => (0, None),
        u => {
            let (user, group) = u.split_once(':').map_or((u, None), |(a, b)| (a, Some(b)));
            let uid = match user.parse::<u32>() {
                Ok(uid) => uid,
                Err(_) if run_as_user.is_some() => 0,
                Err(_) => return Err(SpecError::User(u.to_string())),
            };
            (uid, group.and_then(|g| g.parse::<u32>().ok()))
        }
    };
    let uid = run_as_user.map_or(image_uid, |u| u as u32);
    let gid = run_as_group.map_or(image_gid.unwrap_or(0), |g| g as u32);
    let mut additional: Vec<u32> = pod_sc
        .and_then(|p| p.supplemental_groups.clone())
        .unwrap_or_default()
        .into_iter()
        .map(|g| g as u32)
        .collect();
    if let Some(fs) = pod_sc.and_then(|p| p.fs_group) {
        additional.push(fs as u32);
    }
    let mut user = UserBuilder::default().uid(uid).gid(gid);
    if !additional.is_empty() {
        user = user.additional_gids(additional);
    }
    user.build().map_err(oci)
}

/// The capability set: containerd's defaults (all for privileged), with
/// the container's adds and drops; adds win over a drop of ALL, as in
/// containerd's CRI.
fn capability_set(
    sc: &SecurityContext,
    privileged: bool,
    bounding: u64,
) -> Result<Capabilities, SpecError> {
    let mut caps: Capabilities = if privileged {
        all_caps(bounding).collect()
    } else {
        DEFAULT_CAPS
            .iter()
            .filter_map(|n| capability(n).ok())
            .collect()
    };
    let Some(k) = &sc.capabilities else {
        return Ok(caps);
    };
    for a in k.add.iter().flatten() {
        if a == "ALL" {
            caps.extend(all_caps(bounding));
        } else {
            caps.insert(capability(a)?);
        }
    }
    for d in k.drop.iter().flatten() {
        if d == "ALL" {
            caps.clear();
        } else {
            caps.remove(&capability(d)?);
        }
    }
    if k.drop.iter().flatten().any(|d| d == "ALL") {
        for a in k.add.iter().flatten().filter(|a| *a != "ALL") {
            caps.insert(capability(a)?);
        }
    }
    Ok(caps)
}

/// The mounts: the defaults (`/sys` read-write for privileged
/// containers), then the pod's, each replacing a default at its
/// destination.
fn mounts(
    mut mounts: Vec<Mount>,
    privileged: bool,
    pod_mounts: &[MountSpec],
) -> Result<Vec<Mount>, SpecError> {
    if privileged {
        for m in &mut mounts {
            if m.destination() == &PathBuf::from("/sys") {
                m.set_options(Some(vec![
                    "nosuid".into(),
                    "noexec".into(),
                    "nodev".into(),
                    "rw".into(),
                ]));
            }
        }
    }
    for m in pod_mounts {
        let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
        options.push(if m.read_only { "ro" } else { "rw" }.into());
        if m.nosuid_nodev {
            options.extend(["nosuid".to_string(), "nodev".to_string()]);
        }
        mounts.retain(|x| x.destination() != &PathBuf::from(&m.destination));
        mounts.push(
            MountBuilder::default()
                .destination(PathBuf::from(&m.destination))
                .typ("bind")
                .source(m.source.clone())
                .options(options)
                .build()
                .map_err(oci)?,
        );
    }
    Ok(mounts)
}

/// The Linux section: namespaces, resources, cgroup, masked and
/// read-only paths, the seccomp profile.
fn linux(
    input: &SpecInput<'_>,
    defaults: &Linux,
    privileged: bool,
    caps: &Capabilities,
) -> Result<Linux, SpecError> {
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces(input.namespaces)?)
        .resources(resources(input.container)?)
        .cgroups_path(PathBuf::from(input.cgroups_path));
    if privileged {
        // Nothing masked, /proc/sys writable (the builder's own default
        // has runtime-spec's lists, so they are cleared explicitly).
        linux = linux.masked_paths(Vec::new()).readonly_paths(Vec::new());
    } else {
        if let Some(m) = defaults.masked_paths() {
            linux = linux.masked_paths(m.clone());
        }
        if let Some(r) = defaults.readonly_paths() {
            linux = linux.readonly_paths(r.clone());
        }
    }
    let profile = match input.seccomp {
        _ if privileged => None,
        Seccomp::Unconfined => None,
        Seccomp::RuntimeDefault => Some(seccomp::default::runtime_default(
            caps,
            input.kernel,
            std::env::consts::ARCH,
        )),
        Seccomp::Localhost(p) => Some(
            p.to_oci(caps, input.kernel, std::env::consts::ARCH)
                .map_err(|e| SpecError::Seccomp(e.to_string()))?,
        ),
    };
    if let Some(p) = profile {
        linux = linux.seccomp(p);
    }
    if let Some(l) = input.selinux {
        linux = linux.mount_label(l.mount.clone());
    }
    linux.build().map_err(oci)
}

/// The namespaces: PID (the host's with `hostPID`, so no entry; an
/// ephemeral container's target's; else a new one), a new mount
/// namespace, and the sandbox's network, IPC and UTS.
fn namespaces(ns: &PodNamespaces) -> Result<Vec<LinuxNamespace>, SpecError> {
    let mut namespaces = Vec::new();
    if !ns.host_pid {
        let mut pid = LinuxNamespaceBuilder::default().typ(LinuxNamespaceType::Pid);
        if let Some(p) = &ns.pid {
            pid = pid.path(p.clone());
        }
        namespaces.push(pid.build().map_err(oci)?);
    }
    namespaces.push(
        LinuxNamespaceBuilder::default()
            .typ(LinuxNamespaceType::Mount)
            .build()
            .map_err(oci)?,
    );
    for (typ, path) in [
        (LinuxNamespaceType::Network, &ns.net),
        (LinuxNamespaceType::Ipc, &ns.ipc),
        (LinuxNamespaceType::Uts, &ns.uts),
    ] {
        if let Some(p) = path {
            namespaces.push(
                LinuxNamespaceBuilder::default()
                    .typ(typ)
                    .path(p.clone())
                    .build()
                    .map_err(oci)?,
            );
        }
    }
    Ok(namespaces)
}

/// CPU shares from the request (2 at least, as the kubelet), quota from
/// the limit, the memory limit.
fn resources(c: &Container) -> Result<LinuxResources, SpecError> {
    let res = c.resources.clone().unwrap_or_default();
    let q = |map: &Option<std::collections::BTreeMap<String, Quantity>>, k: &str| {
        map.as_ref().and_then(|m| m.get(k)).map(|q| q.0.clone())
    };
    let millis = |v: String| {
        quantity::parse_millis(&v).ok_or(SpecError::Quantity {
            what: "cpu",
            value: v,
        })
    };
    let shares = match q(&res.requests, "cpu").or_else(|| q(&res.limits, "cpu")) {
        Some(v) => (millis(v)? * 1024 / 1000).max(2) as u64,
        None => 2,
    };
    let mut cpu = LinuxCpuBuilder::default().shares(shares);
    if let Some(v) = q(&res.limits, "cpu") {
        cpu = cpu.quota((millis(v)? * 100).max(1000)).period(100_000u64);
    }
    let mut resources = LinuxResourcesBuilder::default().cpu(cpu.build().map_err(oci)?);
    if let Some(v) = q(&res.limits, "memory") {
        let b = quantity::parse_bytes(&v).ok_or(SpecError::Quantity {
            what: "memory",
            value: v,
        })?;
        resources = resources.memory(
            LinuxMemoryBuilder::default()
                .limit(b)
                .build()
                .map_err(oci)?,
        );
    }
    resources.build().map_err(oci)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    fn image() -> ImageConfig {
        ImageConfig {
            entrypoint: vec!["/echo".into()],
            cmd: vec!["--port".into(), "80".into()],
            env: vec!["PATH=/bin".into(), "MODE=image".into()],
            working_dir: "/srv".into(),
            user: "1000:1000".into(),
            stop_signal: String::new(),
        }
    }

    #[test]
    fn command_and_args_against_entrypoint_and_cmd() {
        let img = image();
        let c = |v: serde_json::Value| -> Container { serde_json::from_value(v).unwrap() };
        let env = vec![("X".to_string(), "42".to_string())];
        assert_eq!(
            command_line(&c(serde_json::json!({"name": "a"})), &img, &env),
            ["/echo", "--port", "80"]
        );
        assert_eq!(
            command_line(
                &c(serde_json::json!({"name": "a", "args": ["-v"]})),
                &img,
                &env
            ),
            ["/echo", "-v"]
        );
        assert_eq!(
            command_line(
                &c(
                    serde_json::json!({"name": "a", "command": ["sh", "-c"], "args": ["echo $(X)"]})
                ),
                &img,
                &env
            ),
            ["sh", "-c", "echo 42"]
        );
        assert_eq!(
            command_line(
                &c(serde_json::json!({"name": "a", "command": ["sh"]})),
                &img,
                &env
            ),
            ["sh"]
        );
    }

    #[test]
    fn a_full_spec() {
        let p = pod(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u1"},
            "spec": {
                "securityContext": {"runAsGroup": 3000, "fsGroup": 2000},
                "containers": [{
                    "name": "c", "image": "x",
                    "securityContext": {"runAsUser": 65534, "readOnlyRootFilesystem": true, "allowPrivilegeEscalation": false,
                        "capabilities": {"add": ["NET_ADMIN"], "drop": ["KILL"]}},
                    "resources": {"requests": {"cpu": "500m"}, "limits": {"cpu": "1", "memory": "64Mi"}}
                }]
            }
        }));
        let c = &p.spec.as_ref().unwrap().containers[0];
        let img = image();
        let env = vec![("MODE".to_string(), "pod".to_string())];
        let ns = PodNamespaces {
            net: Some("/run/rudder/ns/u1/net".into()),
            ipc: Some("/run/rudder/ns/u1/ipc".into()),
            uts: Some("/run/rudder/ns/u1/uts".into()),
            pid: None,
            host_pid: false,
        };
        let mounts = vec![MountSpec {
            destination: "/etc/hosts".into(),
            source: "/var/lib/rudder/pods/u1/etc-hosts".into(),
            read_only: false,
            nosuid_nodev: true,
        }];
        let input = |selinux| SpecInput {
            pod: &p,
            container: c,
            image: &img,
            env: &env,
            namespaces: &ns,
            mounts: &mounts,
            cgroups_path: "/rudder/podu1/abc",
            hostname: "p",
            bounding_caps: u64::MAX,
            seccomp: &Seccomp::Unconfined,
            kernel: KernelVersion::host(),
            selinux,
        };
        let spec = build(&input(None)).unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        assert_eq!(
            v["process"]["args"],
            serde_json::json!(["/echo", "--port", "80"])
        );
        assert_eq!(v["process"]["cwd"], "/srv");
        assert_eq!(v["process"]["user"]["uid"], 65534);
        assert_eq!(v["process"]["user"]["gid"], 3000);
        assert_eq!(
            v["process"]["user"]["additionalGids"],
            serde_json::json!([2000])
        );
        assert_eq!(v["process"]["noNewPrivileges"], true);
        let envs: Vec<&str> = v["process"]["env"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(
            envs.contains(&"MODE=pod")
                && envs.contains(&"PATH=/bin")
                && envs.contains(&"HOSTNAME=p"),
            "{envs:?}"
        );
        let caps: Vec<&str> = v["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e.as_str().unwrap())
            .collect();
        assert!(
            caps.contains(&"CAP_NET_ADMIN")
                && !caps.contains(&"CAP_KILL")
                && caps.contains(&"CAP_CHOWN")
        );
        assert_eq!(v["root"]["readonly"], true);
        assert_eq!(v["hostname"], "p");
        assert_eq!(v["linux"]["cgroupsPath"], "/rudder/podu1/abc");
        // No SELinux labels unless the node labels containers.
        assert!(v["process"].get("selinuxLabel").is_none());
        assert!(v["linux"].get("mountLabel").is_none());
        let labels = crate::selinux::Labels {
            process: "system_u:system_r:container_t:s0:c1,c2".into(),
            mount: "system_u:object_r:container_file_t:s0:c1,c2".into(),
        };
        let labelled = build(&input(Some(&labels))).unwrap();
        let l = serde_json::to_value(&labelled).unwrap();
        assert_eq!(l["process"]["selinuxLabel"], labels.process.as_str());
        assert_eq!(l["linux"]["mountLabel"], labels.mount.as_str());
        assert_eq!(v["linux"]["resources"]["cpu"]["shares"], 512);
        assert_eq!(v["linux"]["resources"]["cpu"]["quota"], 100_000);
        assert_eq!(v["linux"]["resources"]["memory"]["limit"], 64 << 20);
        let nss = v["linux"]["namespaces"].as_array().unwrap();
        assert!(
            nss.iter()
                .any(|n| n["type"] == "network" && n["path"] == "/run/rudder/ns/u1/net")
        );
        assert!(
            nss.iter()
                .any(|n| n["type"] == "pid" && n.get("path").is_none())
        );
        assert!(
            v["mounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["destination"] == "/etc/hosts"
                    && m["type"] == "bind"
                    && m["options"]
                        == serde_json::json!(["rbind", "rprivate", "rw", "nosuid", "nodev"]))
        );
        assert!(
            v["linux"]["maskedPaths"]
                .as_array()
                .is_some_and(|m| !m.is_empty())
        );
    }

    /// The spec of `p`'s first container under `seccomp`, as JSON.
    fn seccomp_spec(p: &Pod, seccomp: &Seccomp) -> serde_json::Value {
        spec_json(p, "h", u64::MAX, seccomp)
    }

    #[test]
    fn the_seccomp_profile_follows_the_granted_capabilities() {
        let p = pod(serde_json::json!({"metadata": {"uid": "u"}, "spec": {
            "containers": [{"name": "c", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}}));
        let v = seccomp_spec(&p, &Seccomp::RuntimeDefault);
        let seccomp = &v["linux"]["seccomp"];
        assert_eq!(seccomp["defaultAction"], "SCMP_ACT_ERRNO");
        let allows = |name: &str| {
            seccomp["syscalls"].as_array().unwrap().iter().any(|s| {
                s["action"] == "SCMP_ACT_ALLOW"
                    && s["names"].as_array().unwrap().iter().any(|n| n == name)
            })
        };
        // CAP_SYS_ADMIN granted: mount allowed; no CAP_SYS_BOOT: no reboot.
        assert!(allows("mount") && allows("read") && !allows("reboot"));
        assert!(
            seccomp_spec(&p, &Seccomp::Unconfined)["linux"]
                .get("seccomp")
                .is_none()
        );
        // Privileged: no filter whatever was resolved.
        let p = pod(serde_json::json!({"metadata": {"uid": "u"}, "spec": {
            "containers": [{"name": "c", "securityContext": {"privileged": true}}]}}));
        assert!(
            seccomp_spec(&p, &Seccomp::RuntimeDefault)["linux"]
                .get("seccomp")
                .is_none()
        );
    }

    #[test]
    fn host_pid_keeps_the_nodes_pid_namespace() {
        let p = pod(serde_json::json!({"metadata": {"uid": "u"}, "spec": {
            "hostPID": true, "containers": [{"name": "c"}]}}));
        let ns = PodNamespaces {
            host_pid: true,
            ..PodNamespaces::default()
        };
        let spec = build(&SpecInput {
            pod: &p,
            container: &p.spec.as_ref().unwrap().containers[0],
            image: &image(),
            env: &[],
            namespaces: &ns,
            mounts: &[],
            cgroups_path: "/x",
            hostname: "h",
            bounding_caps: u64::MAX,
            seccomp: &Seccomp::Unconfined,
            kernel: KernelVersion { major: 6, minor: 1 },
            selinux: None,
        })
        .unwrap();
        let v = serde_json::to_value(&spec).unwrap();
        let types: Vec<&str> = v["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(types, ["mount"]);
    }

    /// The spec of `p`'s first container in the host's namespaces, as JSON.
    fn host_spec(p: &Pod, hostname: &str, bounding_caps: u64) -> serde_json::Value {
        spec_json(p, hostname, bounding_caps, &Seccomp::Unconfined)
    }

    fn spec_json(
        p: &Pod,
        hostname: &str,
        bounding_caps: u64,
        seccomp: &Seccomp,
    ) -> serde_json::Value {
        let spec = build(&SpecInput {
            pod: p,
            container: &p.spec.as_ref().unwrap().containers[0],
            image: &image(),
            env: &[],
            namespaces: &PodNamespaces::default(),
            mounts: &[],
            cgroups_path: "/x",
            hostname,
            bounding_caps,
            seccomp,
            kernel: KernelVersion { major: 6, minor: 1 },
            selinux: None,
        })
        .unwrap();
        serde_json::to_value(&spec).unwrap()
    }

    #[test]
    fn a_host_network_pod_keeps_the_hosts_name() {
        let p = pod(serde_json::json!({"metadata": {"uid": "u"}, "spec": {
            "hostNetwork": true, "containers": [{"name": "c"}]}}));
        let v = host_spec(&p, "node-1", !(1 << 24));
        assert!(v.get("hostname").is_none(), "{:?}", v.get("hostname"));
        let env = v["process"]["env"].as_array().unwrap();
        assert!(env.iter().any(|e| e == "HOSTNAME=node-1"), "{env:?}");
        // Not privileged: the default set.
        assert_eq!(
            v["process"]["capabilities"]["bounding"]
                .as_array()
                .unwrap()
                .len(),
            14
        );
    }

    #[test]
    fn privileged_gets_every_capability_the_runtime_can_grant() {
        let p = pod(
            serde_json::json!({"metadata": {"uid": "u"}, "spec": {"containers": [
            {"name": "c", "securityContext": {"privileged": true}}]}}),
        );
        let spec = |bounding: u64| host_spec(&p, "h", bounding);
        let caps = |v: &serde_json::Value| -> Vec<String> {
            serde_json::from_value(v["process"]["capabilities"]["permitted"].clone()).unwrap()
        };
        let all = spec(u64::MAX);
        assert_eq!(caps(&all).len(), 41);
        // Nothing masked or read-only (sysctls are written through /proc/sys).
        for k in ["maskedPaths", "readonlyPaths"] {
            assert!(
                all["linux"][k].as_array().is_none_or(Vec::is_empty),
                "{k}: {}",
                all["linux"][k]
            );
        }
        let without = caps(&spec(!(1 << 24)));
        assert_eq!(without.len(), 40);
        assert!(!without.contains(&"CAP_SYS_RESOURCE".to_string()));
        assert!(without.contains(&"CAP_SYS_ADMIN".to_string()));
    }

    #[test]
    fn bad_input_is_reported_with_its_reason() {
        let p = pod(
            serde_json::json!({"metadata": {"uid": "u"}, "spec": {"containers": [
            {"name": "c", "securityContext": {"capabilities": {"add": ["NOT_A_CAP"]}}}]}}),
        );
        let c = &p.spec.as_ref().unwrap().containers[0];
        let input = |img: &ImageConfig| {
            build(&SpecInput {
                pod: &p,
                container: c,
                image: img,
                env: &[],
                namespaces: &PodNamespaces::default(),
                mounts: &[],
                cgroups_path: "/x",
                hostname: "h",
                bounding_caps: u64::MAX,
                seccomp: &Seccomp::Unconfined,
                kernel: KernelVersion::host(),
                selinux: None,
            })
        };
        let e = input(&image()).unwrap_err();
        assert_eq!(e, SpecError::Capability("NOT_A_CAP".into()));
        assert_eq!(e.reason(), "CreateContainerConfigError");
        let e = input(&ImageConfig::default()).unwrap_err();
        assert_eq!(e, SpecError::NoCommand);
        assert_eq!(e.reason(), "CreateContainerError");
    }
}
