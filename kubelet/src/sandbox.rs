//! The pod sandbox without a pause container: the agent creates the pod's
//! network, IPC and UTS namespaces on a thread of its own and keeps them
//! alive as bind-mounted nsfs files under the pod's run directory; every
//! container joins them by path. No sandbox image to pull, no extra process
//! per pod, and the namespaces outlive agent restarts (they are mounts, not
//! processes). CNI ADD/DEL run against the network namespace file.
//!
//! The one exception is a shared PID namespace (`shareProcessNamespace`):
//! a PID namespace dies with its first process, so one is held by a pause
//! process ([`super::pause`]), started here and stopped at teardown.

use std::{
    ffi::CString,
    os::unix::ffi::OsStrExt as _,
    path::{Path, PathBuf},
};

use super::spec::PodNamespaces;

/// A failed sandbox step, naming the path.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the namespace thread panicked")]
    Thread,
    #[error("the pod's PID namespace holder: {0}")]
    Pause(String),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> SandboxError + 'a {
    move |source| SandboxError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The namespace files of a pod under `dir`.
pub fn namespace_paths(dir: &Path, host_network: bool) -> PodNamespaces {
    PodNamespaces {
        net: (!host_network).then(|| dir.join("net")),
        ipc: Some(dir.join("ipc")),
        uts: (!host_network).then(|| dir.join("uts")),
        pid: None,
        host_pid: false,
    }
}

/// The pod's shared PID namespace file (`shareProcessNamespace`).
pub fn shared_pid_path(dir: &Path) -> PathBuf {
    dir.join("pid")
}

fn pause_pid_file(dir: &Path) -> PathBuf {
    dir.join("pause.pid")
}

/// Creates the namespaces (network and UTS only without `host_network`)
/// and sets the hostname in the new UTS namespace; with `pause` (the
/// binary to run as one), also a PID namespace the containers share.
pub fn create_namespaces(
    dir: &Path,
    hostname: &str,
    host_network: bool,
    pause: Option<&Path>,
) -> Result<PodNamespaces, SandboxError> {
    std::fs::create_dir_all(dir).map_err(io("creating", dir))?;
    let paths = namespace_paths(dir, host_network);
    let mut flags = libc::CLONE_NEWIPC;
    if !host_network {
        flags |= libc::CLONE_NEWNET | libc::CLONE_NEWUTS;
    }
    let targets: Vec<(&'static str, PathBuf)> = [
        ("net", paths.net.clone()),
        ("ipc", paths.ipc.clone()),
        ("uts", paths.uts.clone()),
    ]
    .into_iter()
    .filter_map(|(n, p)| p.map(|p| (n, p)))
    .collect();
    for (_, p) in &targets {
        std::fs::File::create(p).map_err(io("creating", p))?;
    }
    let host = hostname.to_string();
    let result = std::thread::spawn(move || -> Result<(), SandboxError> {
        // SAFETY: unshare only affects this new thread, which does nothing
        // but set the hostname and bind-mount its namespaces, then exits.
        if unsafe { libc::unshare(flags) } != 0 {
            return Err(SandboxError::Io {
                what: "unshare for",
                path: PathBuf::from("/proc/thread-self/ns"),
                source: std::io::Error::last_os_error(),
            });
        }
        if flags & libc::CLONE_NEWUTS != 0 {
            // SAFETY: a valid buffer and its length.
            if unsafe { libc::sethostname(host.as_ptr().cast(), host.len()) } != 0 {
                return Err(SandboxError::Io {
                    what: "sethostname in",
                    path: PathBuf::from("/proc/thread-self/ns/uts"),
                    source: std::io::Error::last_os_error(),
                });
            }
        }
        for (name, target) in &targets {
            let source = PathBuf::from(format!("/proc/thread-self/ns/{name}"));
            bind(&source, target)?;
        }
        Ok(())
    })
    .join()
    .map_err(|_| SandboxError::Thread)?;
    if let Err(e) = result.and_then(|()| pause.map_or(Ok(()), |bin| start_pause(dir, bin))) {
        remove_namespaces(dir);
        return Err(e);
    }
    Ok(paths)
}

/// Starts the pause process holding the pod's PID namespace and mounts
/// that namespace at [`shared_pid_path`].
fn start_pause(dir: &Path, binary: &Path) -> Result<(), SandboxError> {
    let mut cmd = std::process::Command::new(binary);
    cmd.arg(super::pause::ARG)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    super::pause::in_own_session(&mut cmd);
    let out = cmd
        .output()
        .map_err(|e| SandboxError::Pause(format!("{}: {e}", binary.display())))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let pid: i32 = match text.trim().parse() {
        Ok(p) if out.status.success() && p > 0 => p,
        _ => {
            return Err(SandboxError::Pause(format!(
                "{} exited {}: {}",
                binary.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    };
    let target = shared_pid_path(dir);
    let mounted = std::fs::File::create(&target)
        .map_err(io("creating", &target))
        .and_then(|_| bind(Path::new(&format!("/proc/{pid}/ns/pid")), &target))
        .and_then(|()| {
            let f = pause_pid_file(dir);
            std::fs::write(&f, pid.to_string()).map_err(io("writing", &f))
        });
    if mounted.is_err() && super::pause::holds(pid, Path::new(&format!("/proc/{pid}/ns/pid"))) {
        // SAFETY: a signal to the process just started, still alive.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    mounted
}

/// Stops the pause process of `dir`, if it is still the one holding the
/// namespace mounted there.
fn stop_pause(dir: &Path) {
    let Some(pid) = pause_pid(dir) else {
        return;
    };
    if super::pause::holds(pid, &shared_pid_path(dir)) {
        // SAFETY: a signal to a process checked just now to be this pod's
        // namespace holder; its namespace's other processes die with it.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    let _ = std::fs::remove_file(pause_pid_file(dir));
}

/// Whether the pod's shared PID namespace is still held.
fn pause_alive(dir: &Path) -> bool {
    pause_pid(dir).is_some_and(|pid| super::pause::holds(pid, &shared_pid_path(dir)))
}

/// The pause process's PID as recorded when it was started.
fn pause_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(pause_pid_file(dir))
        .ok()
        .and_then(|t| t.trim().parse().ok())
}

fn bind(source: &Path, target: &Path) -> Result<(), SandboxError> {
    let s = CString::new(source.as_os_str().as_bytes()).unwrap_or_default();
    let t = CString::new(target.as_os_str().as_bytes()).unwrap_or_default();
    // SAFETY: NUL-terminated paths; a bind mount has no data argument.
    let rc = unsafe {
        libc::mount(
            s.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(SandboxError::Io {
            what: "bind-mounting the namespace onto",
            path: target.to_path_buf(),
            source: std::io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// Unmounts and removes the namespace files (the namespaces go away with
/// their last user).
pub fn remove_namespaces(dir: &Path) {
    stop_pause(dir);
    for name in ["net", "ipc", "uts", "pid"] {
        let p = dir.join(name);
        if let Ok(c) = CString::new(p.as_os_str().as_bytes()) {
            // SAFETY: a NUL-terminated path; a failure (not mounted) is fine.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        let _ = std::fs::remove_file(&p);
    }
}

/// Whether the pod's namespace files are mounted (and, with `shared_pid`,
/// its PID namespace still held).
pub fn namespaces_exist(dir: &Path, host_network: bool, shared_pid: bool) -> bool {
    if shared_pid && !pause_alive(dir) {
        return false;
    }
    let paths = namespace_paths(dir, host_network);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    [paths.net, paths.ipc, paths.uts]
        .into_iter()
        .flatten()
        .all(|p| {
            let s = p.display().to_string();
            mounts
                .lines()
                .any(|l| l.split(' ').nth(4) == Some(s.as_str()))
        })
}

/// `/etc/hosts` as the kubelet writes it: localhost entries, the pod's own
/// address and name, then `hostAliases`.
pub fn hosts_file(
    pod_ip: Option<&str>,
    hostname: &str,
    fqdn: Option<&str>,
    aliases: &[(String, Vec<String>)],
) -> String {
    let mut s = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        match fqdn {
            Some(f) => s.push_str(&format!("{ip}\t{f}\t{hostname}\n")),
            None => s.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    if !aliases.is_empty() {
        s.push_str("\n# Entries added by HostAliases.\n");
        for (ip, names) in aliases {
            s.push_str(&format!("{ip}\t{}\n", names.join("\t")));
        }
    }
    s
}

/// `/etc/resolv.conf` per `dnsPolicy`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DnsInputs {
    pub policy: String,
    pub host_network: bool,
    pub cluster_dns: Vec<String>,
    pub cluster_domain: String,
    pub namespace: String,
    /// The node's resolv.conf.
    pub host_resolv: String,
    pub config_nameservers: Vec<String>,
    pub config_searches: Vec<String>,
    pub config_options: Vec<(String, Option<String>)>,
}

/// Renders the pod's resolv.conf (Kubernetes' rules: ClusterFirst uses the
/// cluster DNS with `<ns>.svc.<domain> svc.<domain> <domain>` and
/// `ndots:5`, falling back to Default on the host network unless
/// `ClusterFirstWithHostNet`; Default copies the node's; None only
/// `dnsConfig`; `dnsConfig` merged in; at most 3 nameservers, 32 searches).
pub fn resolv_conf(d: &DnsInputs) -> String {
    let (host_ns, host_search, host_opts) = parse_resolv(&d.host_resolv);
    let policy = match d.policy.as_str() {
        "" => "ClusterFirst",
        p => p,
    };
    let cluster_first = match policy {
        "ClusterFirst" => !d.host_network && !d.cluster_dns.is_empty(),
        "ClusterFirstWithHostNet" => !d.cluster_dns.is_empty(),
        _ => false,
    };
    let (mut ns, mut search, mut opts): Resolv = if policy == "None" {
        (vec![], vec![], vec![])
    } else if cluster_first {
        let dom = &d.cluster_domain;
        let mut s = vec![
            format!("{}.svc.{dom}", d.namespace),
            format!("svc.{dom}"),
            dom.clone(),
        ];
        s.extend(host_search);
        (
            d.cluster_dns.clone(),
            s,
            vec![("ndots".into(), Some("5".into()))],
        )
    } else {
        (host_ns, host_search, host_opts)
    };
    for n in &d.config_nameservers {
        if !ns.contains(n) {
            ns.push(n.clone());
        }
    }
    for s in &d.config_searches {
        if !search.contains(s) {
            search.push(s.clone());
        }
    }
    for (k, v) in &d.config_options {
        opts.retain(|(n, _)| n != k);
        opts.push((k.clone(), v.clone()));
    }
    ns.truncate(3);
    search.dedup();
    search.truncate(32);
    let mut out = String::new();
    for n in ns {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !search.is_empty() {
        out.push_str(&format!("search {}\n", search.join(" ")));
    }
    if !opts.is_empty() {
        let o: Vec<String> = opts
            .iter()
            .map(|(k, v)| v.as_ref().map_or_else(|| k.clone(), |v| format!("{k}:{v}")))
            .collect();
        out.push_str(&format!("options {}\n", o.join(" ")));
    }
    out
}

type Resolv = (Vec<String>, Vec<String>, Vec<(String, Option<String>)>);

fn parse_resolv(text: &str) -> Resolv {
    let (mut ns, mut search, mut opts) = (vec![], vec![], vec![]);
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => ns.extend(f.next().map(str::to_string)),
            Some("search" | "domain") => search = f.map(str::to_string).collect(),
            Some("options") => {
                opts = f
                    .map(|o| match o.split_once(':') {
                        Some((k, v)) => (k.to_string(), Some(v.to_string())),
                        None => (o.to_string(), None),
                    })
                    .collect();
            }
            _ => {}
        }
    }
    (ns, search, opts)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: &str =
        "nameserver 192.168.1.1\nnameserver 8.8.8.8\nsearch corp.example\noptions timeout:2\n";

    fn d(policy: &str) -> DnsInputs {
        DnsInputs {
            policy: policy.into(),
            cluster_dns: vec!["10.96.0.10".into()],
            cluster_domain: "cluster.local".into(),
            namespace: "web".into(),
            host_resolv: HOST.into(),
            ..DnsInputs::default()
        }
    }

    #[test]
    fn dns_policies() {
        assert_eq!(
            resolv_conf(&d("ClusterFirst")),
            "nameserver 10.96.0.10\nsearch web.svc.cluster.local svc.cluster.local cluster.local corp.example\noptions ndots:5\n"
        );
        assert_eq!(
            resolv_conf(&d("Default")),
            "nameserver 192.168.1.1\nnameserver 8.8.8.8\nsearch corp.example\noptions timeout:2\n"
        );
        let mut host = d("ClusterFirst");
        host.host_network = true;
        assert!(
            resolv_conf(&host).starts_with("nameserver 192.168.1.1"),
            "host network falls back"
        );
        host.policy = "ClusterFirstWithHostNet".into();
        assert!(resolv_conf(&host).starts_with("nameserver 10.96.0.10"));
        let mut none = d("None");
        none.config_nameservers = vec!["1.1.1.1".into()];
        none.config_searches = vec!["a.example".into()];
        none.config_options = vec![("ndots".into(), Some("2".into())), ("edns0".into(), None)];
        assert_eq!(
            resolv_conf(&none),
            "nameserver 1.1.1.1\nsearch a.example\noptions ndots:2 edns0\n"
        );
        let mut merged = d("ClusterFirst");
        merged.config_options = vec![("ndots".into(), Some("1".into()))];
        assert!(resolv_conf(&merged).ends_with("options ndots:1\n"));
    }

    #[test]
    fn hosts_with_aliases() {
        let h = hosts_file(
            Some("10.244.0.7"),
            "web-0",
            Some("web-0.web.ns.svc.cluster.local"),
            &[(
                "127.0.0.1".into(),
                vec!["foo.local".into(), "bar.local".into()],
            )],
        );
        assert!(h.contains("10.244.0.7\tweb-0.web.ns.svc.cluster.local\tweb-0\n"));
        assert!(h.ends_with("# Entries added by HostAliases.\n127.0.0.1\tfoo.local\tbar.local\n"));
    }
}
