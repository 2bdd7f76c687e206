//! `rudder agent kubelet` and the kubelet's part of `rudder agent run`:
//! the kubelet's configuration from its flags, and the helpers the kubelet
//! starts as `rudder` itself (a container's log driver, a pod's PID
//! namespace holder). Only with the `kubelet` feature: the DaemonSet build
//! of the agent (network daemon and service proxy) has none of it and
//! links no containerd client.

use anyhow::{Context as _, bail};

use rudder_agent::kubelet::cgroups;

use crate::{
    agent_config,
    args::{CgroupDriver, KubeletArgs},
    hostname, kube_config, runtime,
};

/// Runs a helper the kubelet started (`rudder` with a private argument)
/// and exits, or returns for a normal command.
pub(crate) fn run_helper_if_asked() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    rudder_agent::kubelet::pause::run_if_asked(&argv);
    if let Some(a) = rudder_agent::kubelet::logs::driver_args(&argv) {
        rudder_agent::kubelet::logs::run_driver(&a)
            .with_context(|| format!("log driver for {}", a.path.display()))?;
        std::process::exit(0);
    }
    Ok(())
}

/// `rudder agent kubelet`.
pub(crate) fn run(a: KubeletArgs) -> anyhow::Result<()> {
    let rt = runtime()?;
    let (cfg, kube_cfg) = config(a, &rt)?;
    rt.block_on(async {
        let client = kube::Client::try_from(kube_cfg).context("building the Kubernetes client")?;
        rudder_agent::kubelet::run(client, cfg)
            .await
            .context("kubelet")
    })
}

pub(crate) fn config(
    a: KubeletArgs,
    rt: &tokio::runtime::Runtime,
) -> anyhow::Result<(rudder_agent::kubelet::KubeletConfig, kube::Config)> {
    let agent_cfg = agent_config(&a.config)?;
    let node_name = match a.node_name {
        Some(n) => n,
        None => hostname()?,
    };
    let node_ip = match a.node_ip {
        Some(ip) => ip,
        None => default_source_ip().context("finding this node's address: pass --node-ip")?,
    };
    let log_driver =
        std::env::current_exe().context("finding the rudder binary for the log driver")?;
    let kube_cfg = rt.block_on(kube_config(a.kubeconfig.as_deref()))?;
    let client_ca = match &a.client_ca_file {
        Some(p) => {
            let pem =
                std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?;
            pem_certificates(&pem).with_context(|| format!("parsing {}", p.display()))?
        }
        None => kube_cfg.root_cert.clone().unwrap_or_default(),
    };
    if client_ca.is_empty() {
        bail!("no CA for the kubelet API's clients: pass --client-ca-file");
    }
    let cfg = rudder_agent::kubelet::KubeletConfig {
        node_name,
        node_ip,
        containerd_socket: a.containerd_socket,
        containerd_namespace: a.containerd_namespace,
        root_dir: a.root_dir,
        run_dir: a.run_dir,
        pod_log_dir: a.pod_log_dir,
        cni_conf_dir: a.cni_conf_dir,
        cni_bin_dirs: a.cni_bin_dir,
        cni_cache_dir: a.cni_cache_dir,
        cluster_dns: a.cluster_dns,
        cluster_domain: a.cluster_domain,
        registries: agent_cfg.registries,
        log_driver,
        cgroup_root: a.cgroup_root,
        cgroup_driver: match a.cgroup_driver {
            CgroupDriver::Cgroupfs => cgroups::Driver::Cgroupfs,
            CgroupDriver::Systemd => cgroups::Driver::Systemd,
        },
        max_pods: a.max_pods,
        eviction_hard: a.eviction_hard,
        resolv_conf: a.resolv_conf,
        port: a.port,
        client_ca,
        proxy: None,
        static_pod_dir: a.pod_manifest_path,
        seccomp_default: a.seccomp_default,
        selinux: a.selinux,
    };
    Ok((cfg, kube_cfg))
}

/// The certificates (DER) of a PEM bundle.
fn pem_certificates(text: &str) -> anyhow::Result<Vec<Vec<u8>>> {
    use rustls::pki_types::{CertificateDer, pem::PemObject as _};
    let certs = CertificateDer::pem_slice_iter(text.as_bytes())
        .map(|c| c.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(certs)
}

/// The source address of the default route (a UDP socket "connected" to a
/// public address sends nothing).
fn default_source_ip() -> anyhow::Result<String> {
    let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
    s.connect("192.0.2.1:9")?;
    Ok(s.local_addr()?.ip().to_string())
}
