//! `rudder`: one binary for the control plane (`rudder server`), node joining
//! (`rudder token`, `rudder join`) and the node agent (kubelet, network
//! daemon, service proxy); the flags are in [`args`].

use anyhow::{Context as _, bail};
use clap::Parser as _;
use rudder_agent::{config::AgentConfig, network, preflight};

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
        } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            let token = rt.block_on(async {
                let client = kube_client(Some(&kubeconfig)).await?;
                anyhow::Ok(
                    join::client::create_token(
                        client,
                        std::time::Duration::from_secs(ttl),
                        &description,
                    )
                    .await?,
                )
            })?;
            println!("{token}");
        }
        Command::Join {
            server,
            token,
            ca_file,
            node_name,
            kubeconfig_out,
        } => {
            let ca = std::fs::read(&ca_file)
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
                .block_on(join::client::request_credentials(
                    &server, &ca, &token, &node,
                ))
                .with_context(|| format!("joining node {node} to {server}"))?;
            rudder_control::api::pki::write_file(&kubeconfig_out, &kc, true)
                .with_context(|| format!("writing {}", kubeconfig_out.display()))?;
            eprintln!(
                "node {node}: credentials written to {}",
                kubeconfig_out.display()
            );
        }
        Command::Agent {
            command: AgentCommand::Preflight,
        } => {
            let checks = preflight::run();
            for c in &checks {
                println!("{c}");
            }
            if !preflight::passed(&checks) {
                bail!("this node cannot run the Rudder agent: see the FAIL lines above");
            }
        }
        Command::Agent {
            command:
                AgentCommand::Network {
                    node_name,
                    kubeconfig,
                    config,
                    ipam_dir,
                    uninstall,
                },
        } => {
            let cfg = agent_config(&config)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async {
                if uninstall {
                    return network::uninstall(&cfg.network, ipam_dir.as_deref())
                        .await
                        .context("removing the pod network");
                }
                let node = match node_name {
                    Some(n) => n,
                    None => hostname()?,
                };
                let client = kube_client(kubeconfig.as_deref()).await?;
                network::run(cfg.network, node, client, ipam_dir.as_deref())
                    .await
                    .context("network daemon")
            })?;
        }
        #[cfg(feature = "kubelet")]
        Command::Agent {
            command: AgentCommand::Kubelet(a),
        } => kubelet::run(*a)?,
        Command::Agent {
            command: AgentCommand::Proxy(a),
        } => {
            let cfg = agent_config(&a.config)?;
            let node = match a.node_name {
                Some(n) => n,
                None => hostname()?,
            };
            let pcfg = proxy_config(&a.proxy, node, &cfg)?;
            if a.proxy.uninstall {
                return uninstall_proxy(&pcfg);
            }
            let rt = runtime()?;
            rt.block_on(async {
                let client = kube_client(a.kubeconfig.as_deref()).await?;
                let (rescan, rx) = rudder_agent::proxy::daemon::Rescan::channel();
                let socket = cfg.network.proxy_socket.clone();
                let _attach = rudder_agent::supervise::spawn_scoped(async move {
                    let _ = rudder_agent::supervise::supervise("attach socket", move || {
                        rudder_agent::proxy::attach_socket::serve(socket.clone(), rescan.clone())
                    })
                    .await;
                });
                rudder_agent::proxy::daemon::run(client, pcfg, rx)
                    .await
                    .context("service proxy")
            })?;
        }
        Command::Agent {
            command: AgentCommand::Run(a),
        } => run_agent(*a)?,
        Command::Agent {
            command: AgentCommand::CheckConfig { path },
        } => {
            let cfg = AgentConfig::load(&path).context("checking the agent configuration")?;
            println!("{cfg:#?}");
        }
        Command::Agent {
            command:
                AgentCommand::TakeOver {
                    kube_proxy,
                    flannel,
                    cni_conf_dir,
                    flannel_subnet_file,
                },
        } => {
            if !kube_proxy && !flannel {
                anyhow::bail!(
                    "rudder agent take-over: name what to take over: --kube-proxy, --flannel or both"
                );
            }
            let t = rudder_agent::takeover::Takeover {
                kube_proxy,
                flannel,
                cni_conf_dir,
                flannel_subnet_file,
            };
            let done = runtime()?
                .block_on(rudder_agent::takeover::take_over(&t))
                .context("taking the node over")?;
            if done.is_empty() {
                println!("nothing to remove");
            }
            for line in done {
                println!("{line}");
            }
        }
    }
    Ok(())
}

/// `--nodeport-addresses` as kube-proxy reads it: empty for every address,
/// `primary`, or CIDRs of either family (IPv6 ones skipped here).
fn nodeport_addresses(
    values: &[String],
) -> anyhow::Result<rudder_agent::proxy::daemon::NodePortAddresses> {
    use rudder_agent::proxy::daemon::NodePortAddresses;
    let values: Vec<&str> = values
        .iter()
        .map(|v| v.trim())
        .filter(|v| !v.is_empty())
        .collect();
    if values.is_empty() {
        return Ok(NodePortAddresses::All);
    }
    if values == ["primary"] {
        return Ok(NodePortAddresses::Primary);
    }
    let mut cidrs = Vec::new();
    for v in values {
        if v.contains(':') {
            let (addr, prefix) = v.split_once('/').unwrap_or((v, "128"));
            let valid = addr.parse::<std::net::Ipv6Addr>().is_ok()
                && prefix.parse::<u8>().is_ok_and(|p| p <= 128);
            if !valid {
                anyhow::bail!("--nodeport-addresses {v:?}: not a CIDR");
            }
            tracing::info!(
                cidr = v,
                "--nodeport-addresses: an IPv6 CIDR, skipped (the dataplane is IPv4)"
            );
            continue;
        }
        cidrs.push(v.parse().map_err(|e| {
            anyhow::anyhow!("--nodeport-addresses {v:?}: want CIDRs or `primary` ({e})")
        })?);
    }
    Ok(NodePortAddresses::Cidrs(cidrs))
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
    use rudder_control::{api::admission::ServiceRanges, server};
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

fn proxy_config(
    f: &ProxyFlags,
    node_name: String,
    agent: &AgentConfig,
) -> anyhow::Result<rudder_agent::proxy::daemon::ProxyConfig> {
    use rudder_agent::bpf::tc::AttachMode;
    let mut c = rudder_agent::proxy::daemon::ProxyConfig::new(node_name);
    c.pin_dir = f.bpf_pin_dir.clone();
    c.bridges = if f.pod_bridge.is_empty() {
        vec![agent.network.bridge.clone()]
    } else {
        f.pod_bridge.clone()
    };
    c.hairpin_addr = f.hairpin_address;
    c.metrics_addr = match f.proxy_metrics_address.as_str() {
        "off" | "" => None,
        a => Some(
            a.parse()
                .with_context(|| format!("--proxy-metrics-address {a:?}: want IP:PORT or off"))?,
        ),
    };
    c.healthz_addr = match f.healthz_bind_address.as_str() {
        "off" | "" => None,
        a => Some(
            a.parse()
                .with_context(|| format!("--healthz-bind-address {a:?}: want IP:PORT or off"))?,
        ),
    };
    if !f.nodeport_interfaces.is_empty() {
        c.node_interfaces = Some(f.nodeport_interfaces.clone());
    }
    c.nodeport_addresses = nodeport_addresses(&f.nodeport_addresses)?;
    let (lo, hi) = port_range("--service-node-port-range", &f.service_node_port_range)?;
    c.node_ports = lo..=hi;
    match f.node_cgroup.as_deref() {
        Some("off") => c.host_services = false,
        Some(p) => c.node_cgroup = Some(p.into()),
        None => {}
    }
    c.attach = match f.bpf_attach.as_str() {
        "auto" => AttachMode::Auto,
        "tcx" => AttachMode::Tcx,
        "clsact" => AttachMode::Clsact,
        other => bail!("--bpf-attach {other:?}: want auto, tcx or clsact"),
    };
    Ok(c)
}

fn uninstall_proxy(c: &rudder_agent::proxy::daemon::ProxyConfig) -> anyhow::Result<()> {
    if !c.pin_dir.exists() {
        println!("nothing to remove: {} does not exist", c.pin_dir.display());
        return Ok(());
    }
    let dp = rudder_agent::bpf::service::ServiceDataplane::load(&c.pin_dir)
        .with_context(|| format!("loading the dataplane pinned in {}", c.pin_dir.display()))?;
    dp.uninstall().context("removing the service dataplane")?;
    // Its parent too when that leaves it empty (`rudder` of the default
    // /sys/fs/bpf/rudder/service; never the bpffs root, a mount point).
    if let Some(parent) = c.pin_dir.parent()
        && parent != std::path::Path::new(rudder_agent::bpf::BPFFS)
    {
        let _ = std::fs::remove_dir(parent);
    }
    println!("removed the service dataplane ({})", c.pin_dir.display());
    Ok(())
}

#[cfg_attr(
    not(feature = "kubelet"),
    expect(
        clippy::needless_pass_by_value,
        reason = "only the kubelet's configuration consumes the flags"
    )
)]
fn run_agent(a: RunArgs) -> anyhow::Result<()> {
    let agent_cfg = agent_config(&a.kubelet.config)?;
    let rt = runtime()?;
    if a.proxy.uninstall {
        let pcfg = proxy_config(&a.proxy, String::new(), &agent_cfg)?;
        if !a.no_proxy {
            uninstall_proxy(&pcfg)?;
        }
        if !a.no_network {
            rt.block_on(network::uninstall(
                &agent_cfg.network,
                a.ipam_dir.as_deref(),
            ))
            .context("removing the pod network")?;
            println!("removed the pod network");
        }
        return Ok(());
    }
    let ipam_dir = a.ipam_dir.clone();
    let kubeconfig_path = a.kubelet.kubeconfig.clone();
    let (rescan, rescan_rx) = rudder_agent::proxy::daemon::Rescan::channel();
    // With --no-kubelet (a DaemonSet beside the cluster's own kubelet) the
    // kubelet's settings are not needed: the node and the client only.
    let (kcfg, kube_cfg, node, node_ip) = if a.no_kubelet {
        let node = match a.kubelet.node_name.clone() {
            Some(n) => n,
            None => hostname()?,
        };
        let ip = a.kubelet.node_ip.clone();
        let kube_cfg = rt.block_on(kube_config(a.kubelet.kubeconfig.as_deref()))?;
        (None, kube_cfg, node, ip)
    } else {
        #[cfg(not(feature = "kubelet"))]
        bail!(
            "this rudder is built without the kubelet (cargo feature `kubelet`): pass --no-kubelet"
        );
        #[cfg(feature = "kubelet")]
        {
            let (mut kcfg, kube_cfg) = kubelet::config(a.kubelet, &rt)?;
            if !a.no_proxy {
                kcfg.proxy = Some(rescan.clone());
            }
            let (node, ip) = (kcfg.node_name.clone(), Some(kcfg.node_ip.clone()));
            (Some(kcfg), kube_cfg, node, ip)
        }
    };
    let mut pcfg = proxy_config(&a.proxy, node.clone(), &agent_cfg)?;
    pcfg.node_ip = node_ip.and_then(|ip| ip.parse().ok());
    rt.block_on(async move {
        use rudder_agent::supervise::supervise;
        let client = kube::Client::try_from(kube_cfg).context("building the Kubernetes client")?;
        // Each part in a task of its own, restarted on failure: one failing
        // (or a bad object panicking it) leaves the others serving.
        let mut parts = tokio::task::JoinSet::new();
        if !a.no_network {
            let (client, ncfg, node) = (client.clone(), agent_cfg.network.clone(), node.clone());
            parts.spawn(supervise("network daemon", move || {
                let (client, ncfg, node, ipam) =
                    (client.clone(), ncfg.clone(), node.clone(), ipam_dir.clone());
                async move { network::run(ncfg, node, client, ipam.as_deref()).await }
            }));
        }
        if !a.no_proxy {
            let (socket, rescan) = (agent_cfg.network.proxy_socket.clone(), rescan.clone());
            parts.spawn(supervise("attach socket", move || {
                rudder_agent::proxy::attach_socket::serve(socket.clone(), rescan.clone())
            }));
            let client = client.clone();
            parts.spawn(supervise("service proxy", move || {
                let (client, pcfg, rx) = (client.clone(), pcfg.clone(), rescan_rx.clone());
                rudder_agent::proxy::daemon::run(client, pcfg, rx)
            }));
        }
        if let Some(path) = kubeconfig_path {
            parts.spawn(async move {
                rudder_agent::credentials::keep_fresh(path)
                    .await
                    .map_err(|e| rudder_agent::supervise::StartError {
                        name: "credentials",
                        message: e.to_string(),
                    })
            });
        }
        #[cfg(feature = "kubelet")]
        if let Some(kcfg) = kcfg {
            parts.spawn(supervise("kubelet", move || {
                rudder_agent::kubelet::run(client.clone(), kcfg.clone())
            }));
        }
        #[cfg(not(feature = "kubelet"))]
        let _: Option<std::convert::Infallible> = kcfg;
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .context("installing the SIGTERM handler")?;
        tokio::select! {
            Some(r) = parts.join_next() => match r {
                Ok(r) => r.map_err(anyhow::Error::from),
                Err(e) => Err(anyhow::anyhow!("an agent part stopped: {e}")),
            },
            _ = tokio::signal::ctrl_c() => Ok(()),
            _ = term.recv() => Ok(()),
        }
    })
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

mod duration;
#[cfg(feature = "kubelet")]
mod kubelet;
#[cfg(test)]
mod tests;
