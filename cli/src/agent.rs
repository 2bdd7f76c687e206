//! `rudder agent …`: each subcommand's flags turned into its crate's
//! configuration and run (the kubelet's in `kubelet.rs`).

use anyhow::{Context as _, bail};
use rudder_agent::{config::AgentConfig, network, preflight};

use crate::{agent_config, args::*, hostname, kube_client, kube_config, port_range, runtime};

/// Runs one `rudder agent` subcommand.
pub(crate) fn run(command: AgentCommand) -> anyhow::Result<()> {
    match command {
        AgentCommand::Preflight => {
            let checks = preflight::run();
            for c in &checks {
                println!("{c}");
            }
            if !preflight::passed(&checks) {
                bail!("this node cannot run the Rudder agent: see the FAIL lines above");
            }
        }
        AgentCommand::Network {
            node_name,
            kubeconfig,
            config,
            ipam_dir,
            uninstall,
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
        AgentCommand::Kubelet(a) => crate::kubelet::run(*a)?,
        AgentCommand::Proxy(a) => {
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
        AgentCommand::Run(a) => run_agent(*a)?,
        AgentCommand::CheckConfig { path } => {
            let cfg = AgentConfig::load(&path).context("checking the agent configuration")?;
            println!("{cfg:#?}");
        }
        AgentCommand::TakeOver {
            kube_proxy,
            flannel,
            cni_conf_dir,
            flannel_subnet_file,
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
pub(crate) fn nodeport_addresses(
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

fn proxy_config(
    f: &ProxyFlags,
    node_name: String,
    agent: &AgentConfig,
) -> anyhow::Result<rudder_agent::proxy::daemon::ProxyConfig> {
    use rudder_agent::{bpf::tc::AttachMode, proxy::daemon::ProxyMode};
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
    c.acceleration = f
        .nodeport_acceleration
        .parse()
        .map_err(|e: String| anyhow::anyhow!("--nodeport-acceleration: {e}"))?;
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
    c.mode = match f.proxy_mode.as_str() {
        "auto" => ProxyMode::Auto,
        "ebpf" => ProxyMode::Ebpf,
        "nftables" => ProxyMode::Nftables,
        "iptables" => ProxyMode::Iptables("iptables".into()),
        other => bail!("--proxy-mode {other:?}: want auto, ebpf, nftables or iptables"),
    };
    let cidr = agent.network.cluster_cidr;
    c.cluster_cidr = Some((cidr.network(), cidr.prefix));
    Ok(c)
}

fn uninstall_proxy(c: &rudder_agent::proxy::daemon::ProxyConfig) -> anyhow::Result<()> {
    // The nftables mode's table, and the iptables mode's rules in whichever
    // flavour holds them.
    use rudder_agent::{
        iptables,
        proxy::{netfilter, nftables},
    };
    match rudder_agent::nft::objects("ip", nftables::TABLE) {
        Ok(o) if o != rudder_agent::nft::TableObjects::default() => {
            nftables::remove().context("removing the nftables Service rules")?;
            println!(
                "removed the nftables Service rules (table ip {})",
                nftables::TABLE
            );
        }
        // Empty, absent, or no nft on this node: nothing of ours there.
        Ok(_) | Err(_) => {}
    }
    for bin in iptables::flavours() {
        if iptables::save(bin).is_ok_and(|s| s.contains(netfilter::PREFIX)) {
            netfilter::remove(bin)
                .with_context(|| format!("removing the Service rules from {bin}"))?;
            println!("removed the iptables Service rules ({bin})");
        }
    }
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
            let (mut kcfg, kube_cfg) = crate::kubelet::config(a.kubelet, &rt)?;
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
