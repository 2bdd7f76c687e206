//! The Pod Security Standards (`baseline` and `restricted`, as of
//! Kubernetes 1.33), checked as the PodSecurity admission plugin checks
//! them: each control looks at the whole pod and, when violated, names
//! what and which containers, in the words kube-apiserver uses
//! (`privileged (container "c" must not set securityContext.privileged=true)`).
//!
//! A [`Version`] pin (`v1.25`) checks the controls as that release had
//! them, as upstream's versioned checks do: the field-based seccomp
//! controls from 1.19, `restricted`'s capabilities from 1.22 and
//! `runAsUser=0` from 1.23, Windows pods exempt from `restricted`'s
//! seccomp, capabilities and privilege-escalation controls from 1.25, and
//! the safe sysctls as each release widened them (1.27, 1.29, 1.32). The
//! annotation-based checks of releases before 1.19 (seccomp and AppArmor
//! annotations) are not made.
//!
//! Pure: the apiserver picks the level from the namespace's
//! `pod-security.kubernetes.io/*` labels and decides what to do with the
//! violations (refuse, warn).

use k8s_openapi::api::core::v1::{
    Capabilities, Container, ContainerPort, PodSecurityContext, PodSpec, SecurityContext,
};

/// A Pod Security Standards level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Privileged,
    Baseline,
    Restricted,
}

impl Level {
    /// A label value (`privileged`, `baseline`, `restricted`).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "privileged" => Some(Self::Privileged),
            "baseline" => Some(Self::Baseline),
            "restricted" => Some(Self::Restricted),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Privileged => "privileged",
            Self::Baseline => "baseline",
            Self::Restricted => "restricted",
        }
    }
}

/// One failed control: its short name and the detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub control: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.control, self.detail)
    }
}

/// The capabilities `baseline` lets a container add.
const BASELINE_CAPS: &[&str] = &[
    "AUDIT_WRITE",
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "MKNOD",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
];

/// A Pod Security Standards version (a `-version` label's value):
/// `latest`, or the controls of Kubernetes `v1.<minor>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    Latest,
    V1(u32),
}

impl Version {
    /// `latest` or `v1.<minor>` (no leading zeros), as upstream's
    /// `ParseVersion`.
    pub fn parse(s: &str) -> Option<Self> {
        if s == "latest" {
            return Some(Self::Latest);
        }
        let minor = s.strip_prefix("v1.")?;
        let canonical = minor == "0" || (!minor.starts_with('0') && !minor.is_empty());
        if !canonical || !minor.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        minor.parse().ok().map(Self::V1)
    }

    /// Whether a control that came in `v1.<minor>` applies.
    fn since(self, minor: u32) -> bool {
        match self {
            Self::Latest => true,
            Self::V1(m) => m >= minor,
        }
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latest => f.write_str("latest"),
            Self::V1(m) => write!(f, "v1.{m}"),
        }
    }
}

/// The sysctls `baseline` allows (namespaced and safe), with the release
/// that allowed each.
const SAFE_SYSCTLS: &[(&str, u32)] = &[
    ("kernel.shm_rmid_forced", 0),
    ("net.ipv4.ip_local_port_range", 0),
    ("net.ipv4.ip_unprivileged_port_start", 0),
    ("net.ipv4.tcp_syncookies", 0),
    ("net.ipv4.ping_group_range", 0),
    ("net.ipv4.ip_local_reserved_ports", 27),
    ("net.ipv4.tcp_keepalive_time", 29),
    ("net.ipv4.tcp_fin_timeout", 29),
    ("net.ipv4.tcp_keepalive_intvl", 29),
    ("net.ipv4.tcp_keepalive_probes", 29),
    ("net.ipv4.tcp_rmem", 32),
    ("net.ipv4.tcp_wmem", 32),
];

/// The SELinux types `baseline` allows.
const SELINUX_TYPES: &[&str] = &[
    "container_t",
    "container_init_t",
    "container_kvm_t",
    "container_engine_t",
];

/// The volume types `restricted` allows.
const RESTRICTED_VOLUMES: &[&str] = &[
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "image",
    "persistentVolumeClaim",
    "projected",
    "secret",
];

/// Every container of the pod (init, app, ephemeral) with its security
/// context, if any, and its ports.
fn containers(spec: &PodSpec) -> Vec<(&str, Option<&SecurityContext>, &[ContainerPort])> {
    let regular = spec
        .init_containers
        .iter()
        .flatten()
        .chain(&spec.containers)
        .map(|c: &Container| {
            (
                c.name.as_str(),
                c.security_context.as_ref(),
                c.ports.as_deref().unwrap_or_default(),
            )
        });
    let ephemeral = spec.ephemeral_containers.iter().flatten().map(|e| {
        (
            e.name.as_str(),
            e.security_context.as_ref(),
            e.ports.as_deref().unwrap_or_default(),
        )
    });
    regular.chain(ephemeral).collect()
}

/// `container "a"` or `containers "a", "b"`.
fn names(list: &[&str]) -> String {
    let quoted: Vec<String> = list.iter().map(|n| format!("{n:?}")).collect();
    if list.len() == 1 {
        format!("container {}", quoted[0])
    } else {
        format!("containers {}", quoted.join(", "))
    }
}

/// The violations of `spec` at `level` as of `version` (none at
/// `privileged`).
pub fn check(level: Level, version: Version, spec: &PodSpec) -> Vec<Violation> {
    let mut out = Vec::new();
    if level == Level::Privileged {
        return out;
    }
    baseline(spec, version, &mut out);
    if level == Level::Restricted {
        restricted(spec, version, &mut out);
    }
    out
}

fn push(out: &mut Vec<Violation>, control: &'static str, detail: String) {
    out.push(Violation { control, detail });
}

fn baseline(spec: &PodSpec, version: Version, out: &mut Vec<Violation>) {
    let pod = spec.security_context.as_ref();
    let cs = containers(spec);
    let hp = |sc: Option<&SecurityContext>| {
        sc.and_then(|s| s.windows_options.as_ref())
            .and_then(|w| w.host_process)
            == Some(true)
    };
    if pod
        .and_then(|p| p.windows_options.as_ref())
        .and_then(|w| w.host_process)
        == Some(true)
        || cs.iter().any(|(_, sc, _)| hp(*sc))
    {
        push(
            out,
            "hostProcess",
            "pod or containers must not set securityContext.windowsOptions.hostProcess=true".into(),
        );
    }
    let host: Vec<&str> = [
        ("hostNetwork=true", spec.host_network),
        ("hostPID=true", spec.host_pid),
        ("hostIPC=true", spec.host_ipc),
    ]
    .iter()
    .filter(|(_, v)| *v == Some(true))
    .map(|(n, _)| *n)
    .collect();
    if !host.is_empty() {
        push(
            out,
            "host namespaces",
            format!("{} must not be set", host.join(", ")),
        );
    }
    let privileged: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| sc.and_then(|s| s.privileged) == Some(true))
        .map(|(n, _, _)| *n)
        .collect();
    if !privileged.is_empty() {
        push(
            out,
            "privileged",
            format!(
                "{} must not set securityContext.privileged=true",
                names(&privileged)
            ),
        );
    }
    capabilities_baseline(&cs, out);
    let host_paths: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter(|v| v.host_path.is_some())
        .map(|v| format!("{:?}", v.name))
        .collect();
    if !host_paths.is_empty() {
        let what = if host_paths.len() == 1 {
            "volume"
        } else {
            "volumes"
        };
        push(
            out,
            "hostPath volumes",
            format!("{what} {}", host_paths.join(", ")),
        );
    }
    host_ports(&cs, out);
    apparmor(pod, &cs, out);
    selinux(pod, &cs, out);
    let proc_mount: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| {
            sc.and_then(|s| s.proc_mount.as_deref())
                .is_some_and(|m| m != "Default")
        })
        .map(|(n, _, _)| *n)
        .collect();
    if !proc_mount.is_empty() {
        push(
            out,
            "procMount",
            format!(
                "{} must not set securityContext.procMount",
                names(&proc_mount)
            ),
        );
    }
    if version.since(19) {
        seccomp_baseline(pod, &cs, out);
    }
    let safe = |n: &str| {
        SAFE_SYSCTLS
            .iter()
            .any(|(s, since)| *s == n && version.since(*since))
    };
    let bad_sysctls: Vec<&str> = pod
        .and_then(|p| p.sysctls.as_ref())
        .into_iter()
        .flatten()
        .map(|s| s.name.as_str())
        .filter(|n| !safe(n))
        .collect();
    if !bad_sysctls.is_empty() {
        push(out, "forbidden sysctls", bad_sysctls.join(", "));
    }
}

type Cs<'a> = [(&'a str, Option<&'a SecurityContext>, &'a [ContainerPort])];

fn added(sc: Option<&SecurityContext>) -> Vec<&str> {
    sc.and_then(|s| s.capabilities.as_ref())
        .and_then(|c: &Capabilities| c.add.as_ref())
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect()
}

fn capabilities_baseline(cs: &Cs<'_>, out: &mut Vec<Violation>) {
    let mut who = Vec::new();
    let mut caps: Vec<&str> = Vec::new();
    for (n, sc, _) in cs {
        let bad: Vec<&str> = added(*sc)
            .into_iter()
            .filter(|c| !BASELINE_CAPS.contains(&c.trim_start_matches("CAP_")))
            .collect();
        if !bad.is_empty() {
            who.push(*n);
            for c in bad {
                if !caps.contains(&c) {
                    caps.push(c);
                }
            }
        }
    }
    if !who.is_empty() {
        let quoted: Vec<String> = caps.iter().map(|c| format!("{c:?}")).collect();
        push(
            out,
            "non-default capabilities",
            format!(
                "{} must not include {} in securityContext.capabilities.add",
                names(&who),
                quoted.join(", ")
            ),
        );
    }
}

fn host_ports(cs: &Cs<'_>, out: &mut Vec<Violation>) {
    let mut who = Vec::new();
    let mut ports = Vec::new();
    for (n, _, c) in cs {
        let used: Vec<i32> = c
            .iter()
            .filter_map(|p| p.host_port)
            .filter(|p| *p != 0)
            .collect();
        if !used.is_empty() {
            who.push(*n);
            ports.extend(used.iter().map(ToString::to_string));
        }
    }
    if !who.is_empty() {
        push(
            out,
            "hostPort",
            format!("{} uses hostPort {}", names(&who), ports.join(", ")),
        );
    }
}

fn apparmor(pod: Option<&PodSecurityContext>, cs: &Cs<'_>, out: &mut Vec<Violation>) {
    let bad = |t: Option<&str>| t.is_some_and(|t| t != "RuntimeDefault" && t != "Localhost");
    let mut forbidden = Vec::new();
    if bad(pod
        .and_then(|p| p.app_armor_profile.as_ref())
        .map(|a| a.type_.as_str()))
    {
        forbidden.push(
            "pod must not set securityContext.appArmorProfile.type to \"Unconfined\"".to_owned(),
        );
    }
    let who: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| {
            bad(sc
                .and_then(|s| s.app_armor_profile.as_ref())
                .map(|a| a.type_.as_str()))
        })
        .map(|(n, _, _)| *n)
        .collect();
    if !who.is_empty() {
        forbidden.push(format!(
            "{} must not set securityContext.appArmorProfile.type to \"Unconfined\"",
            names(&who)
        ));
    }
    if !forbidden.is_empty() {
        push(out, "appArmorProfile", forbidden.join("; "));
    }
}

fn selinux(pod: Option<&PodSecurityContext>, cs: &Cs<'_>, out: &mut Vec<Violation>) {
    let bad = |o: Option<&k8s_openapi::api::core::v1::SELinuxOptions>| {
        o.is_some_and(|o| {
            o.type_
                .as_deref()
                .is_some_and(|t| !t.is_empty() && !SELINUX_TYPES.contains(&t))
                || o.user.as_deref().is_some_and(|u| !u.is_empty())
                || o.role.as_deref().is_some_and(|r| !r.is_empty())
        })
    };
    let pod_bad = bad(pod.and_then(|p| p.se_linux_options.as_ref()));
    let who: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| bad(sc.and_then(|s| s.se_linux_options.as_ref())))
        .map(|(n, _, _)| *n)
        .collect();
    if pod_bad || !who.is_empty() {
        let whom = match (pod_bad, who.is_empty()) {
            (true, true) => "pod".to_owned(),
            (true, false) => format!("pod and {}", names(&who)),
            _ => names(&who),
        };
        push(
            out,
            "seLinuxOptions",
            format!("{whom} set forbidden securityContext.seLinuxOptions: type, user or role"),
        );
    }
}

fn seccomp_type(sc: Option<&SecurityContext>) -> Option<&str> {
    sc.and_then(|s| s.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str())
}

fn seccomp_baseline(pod: Option<&PodSecurityContext>, cs: &Cs<'_>, out: &mut Vec<Violation>) {
    let pod_bad = pod
        .and_then(|p| p.seccomp_profile.as_ref())
        .is_some_and(|p| p.type_ == "Unconfined");
    let who: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| seccomp_type(*sc) == Some("Unconfined"))
        .map(|(n, _, _)| *n)
        .collect();
    if pod_bad || !who.is_empty() {
        let whom = if pod_bad {
            "pod".to_owned()
        } else {
            names(&who)
        };
        push(
            out,
            "seccompProfile",
            format!("{whom} must not set securityContext.seccompProfile.type to \"Unconfined\""),
        );
    }
}

fn restricted(spec: &PodSpec, version: Version, out: &mut Vec<Violation>) {
    let pod = spec.security_context.as_ref();
    let cs = containers(spec);
    restricted_volumes(spec, out);
    // Windows pods have none of these Linux controls (from 1.25).
    let windows = version.since(25) && spec.os.as_ref().is_some_and(|os| os.name == "windows");
    if !windows {
        privilege_escalation(&cs, out);
    }
    run_as(pod, &cs, version, out);
    if version.since(19) && !windows {
        seccomp_restricted(pod, &cs, out);
    }
    if version.since(22) && !windows {
        capabilities_restricted(&cs, out);
    }
}

fn restricted_volumes(spec: &PodSpec, out: &mut Vec<Violation>) {
    let bad_volumes: Vec<String> = spec
        .volumes
        .iter()
        .flatten()
        .filter_map(|v| {
            let json = serde_json::to_value(v).ok()?;
            let kind = json.as_object()?.keys().find(|k| *k != "name")?.clone();
            (!RESTRICTED_VOLUMES.contains(&kind.as_str()) && kind != "hostPath")
                .then(|| format!("{:?} uses restricted volume type {kind:?}", v.name))
        })
        .collect();
    if !bad_volumes.is_empty() {
        push(out, "restricted volume types", bad_volumes.join(", "));
    }
}

fn privilege_escalation(cs: &Cs<'_>, out: &mut Vec<Violation>) {
    let escalation: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| sc.and_then(|s| s.allow_privilege_escalation) != Some(false))
        .map(|(n, _, _)| *n)
        .collect();
    if !escalation.is_empty() {
        push(
            out,
            "allowPrivilegeEscalation != false",
            format!(
                "{} must set securityContext.allowPrivilegeEscalation=false",
                names(&escalation)
            ),
        );
    }
}

fn run_as(
    pod: Option<&PodSecurityContext>,
    cs: &Cs<'_>,
    version: Version,
    out: &mut Vec<Violation>,
) {
    let pod_non_root = pod.and_then(|p| p.run_as_non_root);
    let not_non_root: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| match sc.and_then(|s| s.run_as_non_root) {
            Some(v) => !v,
            None => pod_non_root != Some(true),
        })
        .map(|(n, _, _)| *n)
        .collect();
    if !not_non_root.is_empty() {
        push(
            out,
            "runAsNonRoot != true",
            format!(
                "pod or {} must set securityContext.runAsNonRoot=true",
                names(&not_non_root)
            ),
        );
    }
    if !version.since(23) {
        return;
    }
    let root: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| sc.and_then(|s| s.run_as_user) == Some(0))
        .map(|(n, _, _)| *n)
        .collect();
    if pod.and_then(|p| p.run_as_user) == Some(0) || !root.is_empty() {
        let whom = if root.is_empty() {
            "pod".to_owned()
        } else {
            names(&root)
        };
        push(
            out,
            "runAsUser=0",
            format!("{whom} must not set runAsUser=0"),
        );
    }
}

fn seccomp_restricted(pod: Option<&PodSecurityContext>, cs: &Cs<'_>, out: &mut Vec<Violation>) {
    let pod_seccomp = pod
        .and_then(|p| p.seccomp_profile.as_ref())
        .map(|p| p.type_.as_str());
    let unset: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| {
            let t = seccomp_type(*sc).or(pod_seccomp);
            !matches!(t, Some("RuntimeDefault" | "Localhost"))
        })
        .map(|(n, _, _)| *n)
        .collect();
    if !unset.is_empty() {
        push(
            out,
            "seccompProfile",
            format!(
                "pod or {} must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\"",
                names(&unset)
            ),
        );
    }
}

fn capabilities_restricted(cs: &Cs<'_>, out: &mut Vec<Violation>) {
    let no_drop: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| {
            !sc.and_then(|s| s.capabilities.as_ref())
                .and_then(|c| c.drop.as_ref())
                .is_some_and(|d| d.iter().any(|c| c == "ALL"))
        })
        .map(|(n, _, _)| *n)
        .collect();
    let mut adds: Vec<&str> = Vec::new();
    let extra: Vec<&str> = cs
        .iter()
        .filter(|(_, sc, _)| {
            let bad: Vec<&str> = added(*sc)
                .into_iter()
                .filter(|c| c.trim_start_matches("CAP_") != "NET_BIND_SERVICE")
                .collect();
            for c in &bad {
                if !adds.contains(c) {
                    adds.push(c);
                }
            }
            !bad.is_empty()
        })
        .map(|(n, _, _)| *n)
        .collect();
    if !no_drop.is_empty() || !extra.is_empty() {
        let mut parts = Vec::new();
        if !no_drop.is_empty() {
            parts.push(format!(
                "{} must set securityContext.capabilities.drop=[\"ALL\"]",
                names(&no_drop)
            ));
        }
        if !extra.is_empty() {
            let quoted: Vec<String> = adds.iter().map(|c| format!("{c:?}")).collect();
            parts.push(format!(
                "{} must not include {} in securityContext.capabilities.add",
                names(&extra),
                quoted.join(", ")
            ));
        }
        push(out, "unrestricted capabilities", parts.join("; "));
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(v: serde_json::Value) -> PodSpec {
        serde_json::from_value(v).unwrap()
    }

    fn said(level: Level, v: serde_json::Value) -> Vec<String> {
        said_at(level, Version::Latest, v)
    }

    fn said_at(level: Level, version: Version, v: serde_json::Value) -> Vec<String> {
        check(level, version, &spec(v))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn privileged_allows_everything_and_baseline_stops_the_node_escapes() {
        let root = json!({"hostNetwork": true, "hostPID": true,
            "containers": [{"name": "c", "image": "i",
                "securityContext": {"privileged": true, "capabilities": {"add": ["SYS_ADMIN", "CHOWN"]}},
                "ports": [{"containerPort": 80, "hostPort": 8080}]}],
            "volumes": [{"name": "root", "hostPath": {"path": "/"}}]});
        assert!(said(Level::Privileged, root.clone()).is_empty());
        assert_eq!(
            said(Level::Baseline, root),
            [
                "host namespaces (hostNetwork=true, hostPID=true must not be set)",
                "privileged (container \"c\" must not set securityContext.privileged=true)",
                "non-default capabilities (container \"c\" must not include \"SYS_ADMIN\" in securityContext.capabilities.add)",
                "hostPath volumes (volume \"root\")",
                "hostPort (container \"c\" uses hostPort 8080)",
            ]
        );
        let plain = json!({"containers": [{"name": "c", "image": "i"}]});
        assert!(said(Level::Baseline, plain.clone()).is_empty());
        assert_eq!(
            said(Level::Restricted, plain),
            [
                "allowPrivilegeEscalation != false (container \"c\" must set securityContext.allowPrivilegeEscalation=false)",
                "runAsNonRoot != true (pod or container \"c\" must set securityContext.runAsNonRoot=true)",
                "seccompProfile (pod or container \"c\" must set securityContext.seccompProfile.type to \"RuntimeDefault\" or \"Localhost\")",
                "unrestricted capabilities (container \"c\" must set securityContext.capabilities.drop=[\"ALL\"])",
            ]
        );
    }

    #[test]
    fn a_restricted_pod_passes() {
        let good = json!({"securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{"name": "c", "image": "i", "securityContext": {
                "allowPrivilegeEscalation": false,
                "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}}],
            "volumes": [{"name": "v", "emptyDir": {}}, {"name": "s", "secret": {"secretName": "x"}}]});
        assert!(
            said(Level::Restricted, good.clone()).is_empty(),
            "{:?}",
            said(Level::Restricted, good)
        );
        let unsafe_sysctl = json!({"securityContext": {"sysctls": [{"name": "kernel.msgmax", "value": "1"}]},
            "containers": [{"name": "c", "image": "i", "securityContext": {"procMount": "Unmasked",
                "seccompProfile": {"type": "Unconfined"}}}],
            "volumes": [{"name": "n", "nfs": {"server": "s", "path": "/"}}]});
        let v = said(Level::Restricted, unsafe_sysctl);
        assert!(v.iter().any(|s| s.starts_with("procMount")), "{v:?}");
        assert!(
            v.iter()
                .any(|s| s.starts_with("seccompProfile (container \"c\" must not")),
            "{v:?}"
        );
        assert!(
            v.iter().any(|s| s == "forbidden sysctls (kernel.msgmax)"),
            "{v:?}"
        );
        assert!(
            v.iter()
                .any(|s| s.contains("restricted volume type \"nfs\"")),
            "{v:?}"
        );
    }

    #[test]
    fn versions_parse_as_upstream_and_pin_the_controls_of_their_release() {
        assert_eq!(Version::parse("latest"), Some(Version::Latest));
        assert_eq!(Version::parse("v1.0"), Some(Version::V1(0)));
        assert_eq!(Version::parse("v1.25"), Some(Version::V1(25)));
        for bad in [
            "", "v1.", "v1.025", "1.25", "v2.0", "v1.x", "Latest", "v1.-1",
        ] {
            assert_eq!(Version::parse(bad), None, "{bad:?}");
        }
        assert_eq!(Version::V1(27).to_string(), "v1.27");
        let sysctl = |name: &str| {
            json!({"securityContext": {"sysctls": [{"name": name, "value": "1"}]},
                "containers": [{"name": "c", "image": "i"}]})
        };
        let keepalive = sysctl("net.ipv4.tcp_keepalive_time");
        assert!(said_at(Level::Baseline, Version::V1(29), keepalive.clone()).is_empty());
        assert_eq!(
            said_at(Level::Baseline, Version::V1(28), keepalive),
            ["forbidden sysctls (net.ipv4.tcp_keepalive_time)"]
        );
        assert!(said(Level::Baseline, sysctl("net.ipv4.tcp_rmem")).is_empty());
        assert_eq!(
            said_at(
                Level::Baseline,
                Version::V1(31),
                sysctl("net.ipv4.tcp_rmem")
            )
            .len(),
            1
        );
        // Before 1.22 restricted had no capabilities control, before 1.23
        // no runAsUser=0 one, before 1.19 no seccomp field control.
        let root = json!({"securityContext": {"runAsNonRoot": true, "runAsUser": 0},
            "containers": [{"name": "c", "image": "i", "securityContext": {
                "allowPrivilegeEscalation": false, "seccompProfile": {"type": "Unconfined"}}}]});
        let controls = |v: Version| -> Vec<String> {
            said_at(Level::Restricted, v, root.clone())
                .iter()
                .map(|s| s.split(" (").next().unwrap().to_owned())
                .collect()
        };
        assert_eq!(
            controls(Version::Latest),
            [
                "seccompProfile",
                "runAsUser=0",
                "seccompProfile",
                "unrestricted capabilities"
            ]
        );
        assert_eq!(
            controls(Version::V1(22)),
            [
                "seccompProfile",
                "seccompProfile",
                "unrestricted capabilities"
            ]
        );
        assert_eq!(controls(Version::V1(18)), Vec::<String>::new());
        // Windows pods: no Linux-only restricted controls from 1.25.
        let windows = json!({"os": {"name": "windows"}, "securityContext": {"runAsNonRoot": true},
            "containers": [{"name": "c", "image": "i"}]});
        assert!(said(Level::Restricted, windows.clone()).is_empty());
        assert_eq!(
            said_at(Level::Restricted, Version::V1(24), windows).len(),
            3
        );
    }
}
