//! `rudder`: one binary for the control plane (`rudder server`), node joining
//! (`rudder token`, `rudder join`) and the node agent (kubelet, network
//! daemon, service proxy); the flags are in [`args`], `rudder agent …` in
//! [`agent`] (the kubelet's part in `kubelet.rs`, only with the `kubelet`
//! feature), the server, token and join here.

use anyhow::{Context as _, bail};
use clap::Parser as _;
use rudder_agent::config::AgentConfig;

mod args;
use args::*;

use rudder_control::api::join;

fn main() -> anyhow::Result<()> {
    // Started by a containerd shim as a container's log driver?
    // Or by the kubelet to hold a pod's shared PID namespace?
    #[cfg(feature = "kubelet")]
    kubelet::run_helper_if_asked()?;
    let cli = Cli::parse();
    init_logs(cli.log_format);
    match cli.command {
        Command::Server(args) => run_server(*args)?,
        Command::Token {
            command:
                TokenCommand::Create {
                    kubeconfig,
                    ttl,
                    description,
                },
        } => create_token(&kubeconfig, ttl, &description)?,
        Command::Join {
            server,
            token,
            ca_file,
            node_name,
            kubeconfig_out,
        } => join(&server, &token, &ca_file, node_name, &kubeconfig_out)?,
        Command::Agent { command } => agent::run(command)?,
    }
    Ok(())
}

/// `rudder token create`: a bootstrap token, printed.
fn create_token(kubeconfig: &std::path::Path, ttl: u64, description: &str) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let token = rt.block_on(async {
        let client = kube_client(Some(kubeconfig)).await?;
        anyhow::Ok(
            join::client::create_token(client, std::time::Duration::from_secs(ttl), description)
                .await?,
        )
    })?;
    println!("{token}");
    Ok(())
}

/// `rudder join`: this node's credentials, written as a kubeconfig.
fn join(
    server: &str,
    token: &str,
    ca_file: &std::path::Path,
    node_name: Option<String>,
    kubeconfig_out: &std::path::Path,
) -> anyhow::Result<()> {
    let ca = std::fs::read(ca_file)
        .with_context(|| format!("reading the cluster CA {}", ca_file.display()))?;
    let node = match node_name {
        Some(n) => n,
        None => hostname()?,
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let kc = rt
        .block_on(join::client::request_credentials(server, &ca, token, &node))
        .with_context(|| format!("joining node {node} to {server}"))?;
    rudder_control::api::pki::write_file(kubeconfig_out, &kc, true)
        .with_context(|| format!("writing {}", kubeconfig_out.display()))?;
    eprintln!(
        "node {node}: credentials written to {}",
        kubeconfig_out.display()
    );
    Ok(())
}

fn parse_cidr(flag: &str, s: &str) -> anyhow::Result<(std::net::Ipv4Addr, u8)> {
    let (ip, len) = s
        .split_once('/')
        .with_context(|| format!("{flag} {s:?}: want ADDRESS/PREFIX"))?;
    let ip = ip
        .parse()
        .with_context(|| format!("{flag} {s:?}: bad address"))?;
    let len: u8 = len
        .parse()
        .with_context(|| format!("{flag} {s:?}: bad prefix"))?;
    if !(8..=30).contains(&len) {
        bail!("{flag} {s:?}: the prefix must be between 8 and 30");
    }
    Ok((ip, len))
}

/// An IPv4 or IPv6 `ADDRESS/PREFIX`.
fn parse_any_cidr(flag: &str, s: &str) -> anyhow::Result<(std::net::IpAddr, u8)> {
    let (ip, len) = s
        .split_once('/')
        .and_then(|(a, l)| Some((a.parse::<std::net::IpAddr>().ok()?, l.parse::<u8>().ok()?)))
        .with_context(|| format!("{flag} {s:?}: want ADDRESS/PREFIX"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        bail!("{flag} {s:?}: the prefix is longer than {max}");
    }
    Ok((ip, len))
}

/// A Pod Security Standards level flag.
fn pod_security_level(flag: &str, s: &str) -> anyhow::Result<rudder_k8s::pod_security::Level> {
    rudder_k8s::pod_security::Level::parse(s)
        .with_context(|| format!("{flag} {s:?}: want privileged, baseline or restricted"))
}

/// A `LOW-HIGH` port range.
fn port_range(flag: &str, s: &str) -> anyhow::Result<(u16, u16)> {
    s.split_once('-')
        .and_then(|(l, h)| Some((l.parse::<u16>().ok()?, h.parse::<u16>().ok()?)))
        .filter(|(l, h)| l < h)
        .with_context(|| format!("{flag} {s:?}: want LOW-HIGH"))
}

fn run_server(a: ServerArgs) -> anyhow::Result<()> {
    use rudder_control::server::{self, ServiceRanges};
    let (lo, hi) = port_range("--node-port-range", &a.node_port_range)?;
    let mut initial_members = std::collections::BTreeMap::new();
    for m in &a.initial_cluster {
        let (id, addr) = m
            .split_once('=')
            .and_then(|(i, addr)| Some((i.parse::<u64>().ok()?, addr.to_owned())))
            .with_context(|| format!("--initial-cluster entry {m:?}: want ID=HOST:PORT"))?;
        initial_members.insert(id, addr);
    }
    let hosts = if a.hosts.is_empty() {
        vec!["127.0.0.1".to_owned()]
    } else {
        a.hosts
    };
    let cfg = server::ServerConfig {
        data_dir: a.data_dir,
        listen: a.listen,
        hosts,
        pki_dir: a.pki_dir,
        admin_kubeconfig: a.admin_kubeconfig,
        token_file: a.token_file,
        services: ServiceRanges {
            cidr: parse_cidr("--service-cidr", &a.service_cidr)?,
            node_ports: (lo, hi),
            deny_external_ips: a.deny_service_external_ips,
        },
        max_inflight: a.max_requests_inflight,
        max_mutating_inflight: a.max_mutating_requests_inflight,
        min_request_timeout: std::time::Duration::from_secs(a.min_request_timeout),
        quota_backend_bytes: a.quota_backend_bytes,
        pod_security: rudder_control::api::pod_security::PodSecurityConfig {
            enforce: pod_security_level("--pod-security-enforce", &a.pod_security_enforce)?,
            warn: pod_security_level("--pod-security-warn", &a.pod_security_warn)?,
            audit: pod_security_level("--pod-security-audit", &a.pod_security_audit)?,
            exempt_usernames: a.pod_security_exempt_usernames.clone(),
            exempt_namespaces: a.pod_security_exempt_namespaces.clone(),
            exempt_runtime_classes: a.pod_security_exempt_runtime_classes.clone(),
        },
        member_id: a.member_id,
        peer_listen: a.peer_listen,
        initial_members,
        join: a.join,
        compaction_interval: std::time::Duration::from_secs(a.compaction_interval.max(1)),
        controllers: !a.no_controllers,
        cluster_cidr: parse_cidr("--cluster-cidr", &a.cluster_cidr)?,
        node_cidr_mask: a.node_cidr_mask_size,
        node_monitor_grace_seconds: i64::try_from(a.node_monitor_grace_period)
            .context("--node-monitor-grace-period is too long")?,
        hpa_sync_period: std::time::Duration::from_secs(
            a.horizontal_pod_autoscaler_sync_period.max(1),
        ),
        clock_offset_file: a.test_clock_offset_file.clone(),
        dns_listen: a.dns_listen,
        dns_upstreams: a.dns_upstream.clone(),
        dns_forward_for: a
            .dns_forward_for
            .iter()
            .map(|c| parse_any_cidr("--dns-forward-for", c))
            .collect::<anyhow::Result<_>>()?,
        cluster_dns_ip: a.cluster_dns_ip,
        cluster_domain: a.cluster_domain.clone(),
        etcd: (!a.etcd_servers.is_empty()).then(|| rudder_store::etcd::EtcdConfig {
            endpoints: a.etcd_servers.clone(),
            ca_file: a.etcd_cafile.clone(),
            cert_file: a.etcd_certfile.clone(),
            key_file: a.etcd_keyfile.clone(),
            timeout: std::time::Duration::from_secs(10),
        }),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    rt.block_on(async {
        let srv = server::Server::start(cfg)
            .await
            .context("starting rudder server")?;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        eprintln!("rudder server: shutting down");
        srv.shutdown().await;
        Ok::<_, anyhow::Error>(())
    })
}

/// The host name, as the kubelet names its Node (lower-cased).
fn hostname() -> anyhow::Result<String> {
    let name =
        std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the host name")?;
    Ok(name.trim().to_lowercase())
}

/// The agent configuration at `path`; defaults when there is no file.
fn agent_config(path: &std::path::Path) -> anyhow::Result<AgentConfig> {
    if path.exists() {
        AgentConfig::load(path).context("reading the agent configuration")
    } else {
        Ok(AgentConfig::default())
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

/// A client from `--kubeconfig`, or inferred (in-cluster, $KUBECONFIG,
/// ~/.kube/config).
async fn kube_client(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    kube::Client::try_from(kube_config(path).await?).context("building the Kubernetes client")
}

/// The client configuration from `--kubeconfig`, or inferred.
async fn kube_config(path: Option<&std::path::Path>) -> anyhow::Result<kube::Config> {
    let config = match path {
        Some(p) => {
            // A node's certificate near its end is renewed before use.
            if let Err(e) = rudder_agent::credentials::renew_if_due(p).await {
                tracing::warn!(error = %e, "the node's credentials could not be renewed; using them as they are");
            }
            let kc = kube::config::Kubeconfig::read_from(p)
                .with_context(|| format!("reading kubeconfig {}", p.display()))?;
            kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("using kubeconfig {}", p.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no kubeconfig: pass --kubeconfig, set KUBECONFIG, or run in a cluster")?,
    };
    Ok(config)
}

mod agent;
mod duration;
#[cfg(feature = "kubelet")]
mod kubelet;
#[cfg(test)]
mod tests;
