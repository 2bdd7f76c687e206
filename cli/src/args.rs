//! The command line: every subcommand and flag of `rudder` (clap), the
//! log set-up they choose, and the value parsers flags share.

use clap::{Parser, Subcommand};

use crate::duration;

#[derive(Parser)]
#[command(name = "rudder", version, about = "Rudder: a Kubernetes node stack")]
pub(crate) struct Cli {
    /// `text`, or `json` (one object per line, for log collectors).
    #[arg(long, global = true, default_value = "text")]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum LogFormat {
    Text,
    Json,
}

/// `--cgroup-driver`.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub(crate) enum CgroupDriver {
    Cgroupfs,
    Systemd,
}

/// The log subscriber: `RUST_LOG`'s filter (default `info`), to standard
/// error, coloured only on a terminal.
pub(crate) fn init_logs(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "info,openraft=warn".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        // Colours for a terminal only: log files and collectors get text.
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
}

/// A containerd socket given as a path or, as the kubelet's
/// `--container-runtime-endpoint`, as `unix://<path>`.
pub(crate) fn socket_path(s: &str) -> Result<std::path::PathBuf, String> {
    let path = s.strip_prefix("unix://").unwrap_or(s);
    if path.contains("://") {
        return Err(format!("{s:?}: only unix sockets are supported"));
    }
    Ok(path.into())
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// The control plane: the Raft-replicated store and the
    /// Kubernetes-compatible apiserver.
    Server(Box<ServerArgs>),
    /// Bootstrap tokens for joining nodes (`rudder token create`).
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Get this node's credentials from the apiserver with a bootstrap
    /// token, and write them as a kubeconfig for `rudder agent`.
    Join {
        /// The apiserver, `https://host:6443`.
        #[arg(long)]
        server: String,
        /// A bootstrap token from `rudder token create`.
        #[arg(long)]
        token: String,
        /// The cluster CA (`/etc/rudder/pki/ca.crt` on the server).
        #[arg(long)]
        ca_file: std::path::PathBuf,
        /// This node's name (default: the hostname).
        #[arg(long)]
        node_name: Option<String>,
        /// Where to write the node's kubeconfig.
        #[arg(long, default_value = "/etc/rudder/node.kubeconfig")]
        kubeconfig_out: std::path::PathBuf,
    },
    /// The node agent.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
}

#[derive(Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a bootstrap token (a Secret in kube-system) and print it.
    Create {
        /// An admin's kubeconfig.
        #[arg(long, default_value = "/etc/rudder/admin.kubeconfig")]
        kubeconfig: std::path::PathBuf,
        /// How long the token is valid (`24h0m0s` as kubeadm spells it,
        /// or seconds).
        #[arg(long, default_value = "24h", value_parser = duration::seconds)]
        ttl: u64,
        /// A note stored with the token.
        #[arg(long, default_value = "joins a node to the cluster")]
        description: String,
    },
}

/// `rudder server` flags.
#[derive(clap::Args)]
pub(crate) struct ServerArgs {
    /// Where the store keeps its data.
    #[arg(long, default_value = "/var/lib/rudder/control")]
    pub(crate) data_dir: std::path::PathBuf,
    /// The apiserver's HTTPS address.
    #[arg(long, default_value = "0.0.0.0:6443")]
    pub(crate) listen: std::net::SocketAddr,
    /// Names and addresses for the serving certificate; the first is
    /// written into the admin kubeconfig (default: 127.0.0.1).
    #[arg(long = "host", value_delimiter = ',')]
    pub(crate) hosts: Vec<String>,
    /// The cluster CA and serving certificate (made on first start).
    #[arg(long, default_value = "/etc/rudder/pki")]
    pub(crate) pki_dir: std::path::PathBuf,
    /// Written on first start: a kubeconfig for cluster-admin.
    #[arg(long, default_value = "/etc/rudder/admin.kubeconfig")]
    pub(crate) admin_kubeconfig: std::path::PathBuf,
    /// Static bearer tokens: CSV lines `token,user,uid[,"group1,group2"]`.
    #[arg(long)]
    pub(crate) token_file: Option<std::path::PathBuf>,
    /// The Service ClusterIP range.
    #[arg(long, default_value = "10.96.0.0/12")]
    pub(crate) service_cidr: String,
    /// The NodePort range.
    #[arg(long, default_value = "30000-32767")]
    pub(crate) node_port_range: String,
    /// Refuse new Service `externalIPs` (the DenyServiceExternalIPs
    /// admission plugin).
    #[arg(long)]
    pub(crate) deny_service_external_ips: bool,
    /// Seconds a watch that names no `timeoutSeconds` lasts at least (it
    /// ends between this and twice this, as kube-apiserver's
    /// `--min-request-timeout`; clients watch again from where they were).
    #[arg(long, default_value_t = 1800)]
    pub(crate) min_request_timeout: u64,
    /// Read-only requests served at once before 429 (long-running ones,
    /// watches, exec and logs, do not count).
    #[arg(long, default_value_t = 400)]
    pub(crate) max_requests_inflight: usize,
    /// The most bytes of keys and values the embedded store holds (in
    /// memory); writes beyond are refused until objects are deleted.
    #[arg(long, default_value_t = 2 << 30)]
    pub(crate) quota_backend_bytes: usize,
    /// Mutating requests served at once before 429.
    #[arg(long, default_value_t = 200)]
    pub(crate) max_mutating_requests_inflight: usize,
    /// The Pod Security Standards level enforced in namespaces without a
    /// `pod-security.kubernetes.io/enforce` label: privileged, baseline or
    /// restricted.
    #[arg(long, default_value = "privileged")]
    pub(crate) pod_security_enforce: String,
    /// The level warned about in namespaces without a
    /// `pod-security.kubernetes.io/warn` label.
    #[arg(long, default_value = "privileged")]
    pub(crate) pod_security_warn: String,
    /// The level audited in namespaces without a
    /// `pod-security.kubernetes.io/audit` label (violations are logged with
    /// the target `rudder::audit`; there is no audit log).
    #[arg(long, default_value = "privileged")]
    pub(crate) pod_security_audit: String,
    /// Users whose requests PodSecurity admission does not check.
    #[arg(long, value_delimiter = ',')]
    pub(crate) pod_security_exempt_usernames: Vec<String>,
    /// Namespaces PodSecurity admission does not check.
    #[arg(long, value_delimiter = ',')]
    pub(crate) pod_security_exempt_namespaces: Vec<String>,
    /// Runtime classes whose pods PodSecurity admission does not check.
    #[arg(long, value_delimiter = ',')]
    pub(crate) pod_security_exempt_runtime_classes: Vec<String>,
    /// Serve the cluster DNS on this address (UDP and TCP port; e.g. the
    /// node's address and 53), behind the `kube-system/kube-dns` Service.
    /// Off by default.
    #[arg(long)]
    pub(crate) dns_listen: Option<std::net::SocketAddr>,
    /// Where the cluster DNS sends names outside the cluster (default: the
    /// nameservers of /etc/resolv.conf).
    #[arg(long, value_delimiter = ',')]
    pub(crate) dns_upstream: Vec<std::net::SocketAddr>,
    /// Networks (CIDRs, IPv4 or IPv6) whose clients the cluster DNS
    /// resolves outside names for, besides the pod and service networks
    /// (default: loopback and the private ranges). Others get REFUSED.
    #[arg(long, value_delimiter = ',')]
    pub(crate) dns_forward_for: Vec<String>,
    /// The ClusterIP of the kube-dns Service (the kubelets' --cluster-dns).
    #[arg(long, default_value = "10.96.0.10")]
    pub(crate) cluster_dns_ip: std::net::Ipv4Addr,
    /// The cluster's DNS domain.
    #[arg(long, default_value = "cluster.local")]
    pub(crate) cluster_domain: String,
    /// This store member's id.
    #[arg(long, default_value_t = 1)]
    pub(crate) member_id: u64,
    /// The store's peer port.
    #[arg(long, default_value = "127.0.0.1:2380")]
    pub(crate) peer_listen: std::net::SocketAddr,
    /// The initial store members, `id=host:port,...` (default: this one).
    #[arg(long, value_delimiter = ',')]
    pub(crate) initial_cluster: Vec<String>,
    /// Join a running cluster (wait to be added) instead of forming one.
    #[arg(long)]
    pub(crate) join: bool,
    /// Do not run the scheduler and controllers in this server. (With
    /// several servers they may all run them: one at a time leads, chosen
    /// by the `kube-system/rudder-controller-manager` Lease.)
    #[arg(long)]
    pub(crate) no_controllers: bool,
    /// The pod network nodes get their podCIDRs from.
    #[arg(long, default_value = "10.244.0.0/16")]
    pub(crate) cluster_cidr: String,
    /// The prefix length of each node's podCIDR.
    #[arg(long, default_value_t = 24)]
    pub(crate) node_cidr_mask_size: u8,
    /// How long without a node heartbeat (Lease renewal or status) before
    /// the node is marked Unknown and tainted unreachable (`40s`, or
    /// seconds).
    #[arg(long, default_value = "40s", value_parser = duration::seconds)]
    pub(crate) node_monitor_grace_period: u64,
    /// Between evaluations of each HorizontalPodAutoscaler (`15s`, or
    /// seconds).
    #[arg(long, default_value = "15s", value_parser = duration::seconds)]
    pub(crate) horizontal_pod_autoscaler_sync_period: u64,
    /// For tests: a file holding a number of seconds added to the
    /// controllers' clock (read on every use).
    #[arg(long, hide = true)]
    pub(crate) test_clock_offset_file: Option<std::path::PathBuf>,
    /// Seconds between compactions of the store's history (watches from
    /// older resourceVersions get 410 Gone); kube-apiserver's default is 300.
    #[arg(long, default_value_t = 300)]
    pub(crate) compaction_interval: u64,
    /// Keep the cluster's data in this external etcd v3 cluster (client
    /// URLs, comma-separated) instead of the embedded Raft store.
    #[arg(long, value_delimiter = ',')]
    pub(crate) etcd_servers: Vec<String>,
    /// CA bundle for https etcd endpoints.
    #[arg(long)]
    pub(crate) etcd_cafile: Option<std::path::PathBuf>,
    /// Client certificate for etcd.
    #[arg(long)]
    pub(crate) etcd_certfile: Option<std::path::PathBuf>,
    /// Client key for etcd.
    #[arg(long)]
    pub(crate) etcd_keyfile: Option<std::path::PathBuf>,
}

#[derive(Subcommand)]
pub(crate) enum AgentCommand {
    /// Check that this node's kernel can run the agent's eBPF dataplane:
    /// BTF, bpffs, cgroup layout, loading a tc program and attaching it (TCX
    /// or clsact, probed in a private network namespace). Exits 1 on failure.
    Preflight,
    /// Run the network daemon: this node's pod subnet, the CNI
    /// configuration, and routes to every other node's pods (the `[network]`
    /// section of the configuration).
    Network {
        /// This node's name (default: the host name).
        #[arg(long, env = "NODE_NAME", alias = "hostname-override")]
        node_name: Option<String>,
        /// Kubeconfig to reach the apiserver (default: in-cluster, then
        /// $KUBECONFIG, then ~/.kube/config).
        #[arg(long)]
        kubeconfig: Option<std::path::PathBuf>,
        /// The agent configuration file (defaults apply if it does not exist).
        #[arg(long, default_value = rudder_agent::config::DEFAULT_PATH)]
        config: std::path::PathBuf,
        /// IPAM state directory to write into the CNI configuration
        /// (default: the plugin's, /var/lib/cni/networks).
        #[arg(long)]
        ipam_dir: Option<std::path::PathBuf>,
        /// Remove everything the daemon made on this node, and exit.
        #[arg(long)]
        uninstall: bool,
    },
    /// Run the kubelet: register this node, renew its Lease, and run the
    /// pods bound to it through containerd.
    #[cfg(feature = "kubelet")]
    Kubelet(Box<KubeletArgs>),
    /// Run the service proxy: Services and EndpointSlices into the eBPF
    /// dataplane's maps, attached to every pod interface.
    Proxy(Box<ProxyArgs>),
    /// Run the whole node agent in one process: the network daemon, the
    /// service proxy and the kubelet (each can be left out).
    Run(Box<RunArgs>),
    /// Validate an agent configuration file and print it as understood.
    CheckConfig {
        #[arg(default_value = rudder_agent::config::DEFAULT_PATH)]
        path: std::path::PathBuf,
    },
    /// Remove what kube-proxy (its iptables chains in every flavour, its
    /// nftables tables, IPVS) and flannel (its chains, devices, subnet file
    /// and CNI configuration) left on this node, as `kube-proxy --cleanup`
    /// does; prints each thing removed. Run it once they are stopped.
    TakeOver {
        /// kube-proxy's rules.
        #[arg(long)]
        kube_proxy: bool,
        /// flannel's rules, devices and files.
        #[arg(long)]
        flannel: bool,
        /// Where flannel's CNI configuration is.
        #[arg(long, default_value = "/etc/cni/net.d")]
        cni_conf_dir: std::path::PathBuf,
        /// flannel's subnet file.
        #[arg(long, default_value = "/run/flannel/subnet.env")]
        flannel_subnet_file: std::path::PathBuf,
    },
}

/// `rudder agent kubelet` flags (without the `kubelet` feature, only the
/// node's name, address, kubeconfig and configuration file are read, by
/// `rudder agent run --no-kubelet`).
#[derive(clap::Args)]
pub(crate) struct KubeletArgs {
    /// This node's name (default: the host name).
    #[arg(long, env = "NODE_NAME", alias = "hostname-override")]
    pub(crate) node_name: Option<String>,
    /// The address of this node (default: the default route's source).
    #[arg(long, env = "NODE_IP")]
    pub(crate) node_ip: Option<String>,
    /// Kubeconfig to reach the apiserver (default: in-cluster, then
    /// $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub(crate) kubeconfig: Option<std::path::PathBuf>,
    /// The agent configuration file (registry mirrors; defaults apply if it
    /// does not exist).
    #[arg(long, default_value = rudder_agent::config::DEFAULT_PATH)]
    pub(crate) config: std::path::PathBuf,
    /// containerd's socket (`--container-runtime-endpoint`, with or
    /// without `unix://`, as the kubelet spells it).
    #[arg(long, default_value = "/run/containerd/containerd.sock",
          alias = "container-runtime-endpoint", value_parser = socket_path)]
    pub(crate) containerd_socket: std::path::PathBuf,
    /// The containerd namespace of the pods.
    #[arg(long, default_value = "rudder")]
    pub(crate) containerd_namespace: String,
    #[arg(long, default_value = "/var/lib/rudder/kubelet")]
    pub(crate) root_dir: std::path::PathBuf,
    #[arg(long, default_value = "/run/rudder/kubelet")]
    pub(crate) run_dir: std::path::PathBuf,
    #[arg(long, default_value = "/var/log/pods")]
    pub(crate) pod_log_dir: std::path::PathBuf,
    #[arg(long, default_value = "/etc/cni/net.d")]
    pub(crate) cni_conf_dir: std::path::PathBuf,
    #[arg(long, default_value = "/opt/cni/bin", value_delimiter = ',')]
    pub(crate) cni_bin_dir: Vec<std::path::PathBuf>,
    #[arg(long, default_value = "/var/lib/rudder/cni")]
    pub(crate) cni_cache_dir: std::path::PathBuf,
    /// The cluster DNS Service address(es) written into pods' resolv.conf.
    #[arg(long, default_value = "10.96.0.10", value_delimiter = ',')]
    pub(crate) cluster_dns: Vec<String>,
    #[arg(long, default_value = "cluster.local")]
    pub(crate) cluster_domain: String,
    /// Where the pods' `kubepods` cgroup goes, relative to the cgroup
    /// root, as the kubelet's `--cgroup-root` (`/`: `/kubepods`, or
    /// `kubepods.slice` with the systemd driver).
    #[arg(long, default_value = "/")]
    pub(crate) cgroup_root: String,
    /// `cgroupfs`, or `systemd` (pod slices under `kubepods.slice`, runc's
    /// systemd cgroups) where systemd is the node's init: the node's
    /// other container runtimes' setting, as the kubelet's.
    #[arg(long, value_enum, default_value = "cgroupfs")]
    pub(crate) cgroup_driver: CgroupDriver,
    #[arg(long, default_value_t = 110)]
    pub(crate) max_pods: u32,
    /// Hard eviction thresholds the node's MemoryPressure and DiskPressure
    /// conditions follow (kubelet syntax).
    #[cfg(feature = "kubelet")]
    #[arg(long, default_value = rudder_agent::kubelet::eviction::EvictionHard::DEFAULT)]
    pub(crate) eviction_hard: rudder_agent::kubelet::eviction::EvictionHard,
    #[arg(long, default_value = "/etc/resolv.conf")]
    pub(crate) resolv_conf: std::path::PathBuf,
    /// The kubelet API's port (`kubectl logs` through the apiserver).
    #[arg(long, default_value_t = 10250)]
    pub(crate) port: u16,
    /// CA bundle (PEM) for client certificates on the kubelet API
    /// (default: the CA of the kubeconfig's cluster).
    #[arg(long)]
    pub(crate) client_ca_file: Option<std::path::PathBuf>,
    /// A directory of static pod manifests (the kubelet's staticPodPath):
    /// run from the files, mirrored to the apiserver.
    #[arg(long)]
    pub(crate) pod_manifest_path: Option<std::path::PathBuf>,
    /// Run containers that name no seccomp profile under `RuntimeDefault`
    /// (containerd's profile) rather than `Unconfined`, as the kubelet's
    /// `--seccomp-default`. `Localhost` profiles are read from
    /// `<root-dir>/seccomp`.
    #[arg(long)]
    pub(crate) seccomp_default: bool,
    /// Label containers and the volumes the kubelet makes for SELinux
    /// (containerd's `enable_selinux`): each pod a level of its own, the
    /// node policy's container contexts, `seLinuxOptions` honoured. The
    /// agent refuses to start with it on a node without SELinux.
    #[arg(long)]
    pub(crate) selinux: bool,
}

/// `rudder agent proxy` flags.
#[derive(clap::Args)]
pub(crate) struct ProxyArgs {
    /// This node's name (default: the host name).
    #[arg(long, env = "NODE_NAME", alias = "hostname-override")]
    pub(crate) node_name: Option<String>,
    /// Kubeconfig to reach the apiserver (default: in-cluster, then
    /// $KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    pub(crate) kubeconfig: Option<std::path::PathBuf>,
    /// The agent configuration file (its `[network]` bridge is the default
    /// pod bridge; defaults apply if it does not exist).
    #[arg(long, default_value = rudder_agent::config::DEFAULT_PATH)]
    pub(crate) config: std::path::PathBuf,
    #[command(flatten)]
    pub(crate) proxy: ProxyFlags,
}

/// The service proxy's own flags (shared by `proxy` and `run`).
#[derive(clap::Args)]
pub(crate) struct ProxyFlags {
    /// bpffs directory for the dataplane's maps and links.
    #[arg(long, default_value = rudder_agent::proxy::daemon::DEFAULT_PIN_DIR)]
    pub(crate) bpf_pin_dir: std::path::PathBuf,
    /// Pod bridges: the datapath goes on every veth enslaved to one
    /// (default: the `[network]` bridge of the configuration, `cni0`).
    #[arg(long, value_delimiter = ',')]
    pub(crate) pod_bridge: Vec<String>,
    /// `/metrics` and `/healthz` of the proxy; `off` disables them.
    #[arg(long, default_value = "127.0.0.1:10249")]
    pub(crate) proxy_metrics_address: String,
    /// kube-proxy's health server (`/healthz` with the node's eligibility,
    /// `/livez`), which load balancers probe; `off` disables it.
    #[arg(long, default_value = "0.0.0.0:10256")]
    pub(crate) healthz_bind_address: String,
    /// The address a pod reaching itself through a Service sees its own
    /// connection come from (link-local, otherwise unused).
    #[arg(long, default_value = "169.254.42.1")]
    pub(crate) hairpin_address: std::net::Ipv4Addr,
    /// `auto` (TCX where the kernel has it, else clsact), `tcx` or `clsact`.
    #[arg(long, default_value = "auto")]
    pub(crate) bpf_attach: String,
    /// The cgroup v2 directory whose processes reach Services through
    /// socket hooks (default: the cgroup2 root, every process of the node);
    /// `off`: Services only from pods.
    #[arg(long)]
    pub(crate) node_cgroup: Option<String>,
    /// The node's interfaces that serve NodePorts, externalIPs and
    /// LoadBalancer IPs to outside (default: every interface with an IPv4
    /// address and every VXLAN device, except loopback and the pod bridges).
    #[arg(long, value_delimiter = ',')]
    pub(crate) nodeport_interfaces: Vec<String>,
    /// NodePort, externalIP and LoadBalancer traffic from outside handled at
    /// XDP, in the driver, where its backend is reached back out of the same
    /// interface (as Cilium's `loadBalancer.acceleration`): `disabled` (tc
    /// only), `best-effort` (the NodePort interfaces that are NICs with
    /// native XDP; tc on the others) or `native` (every NodePort interface
    /// but VXLAN devices, virtual ones included; said where refused).
    #[arg(long, default_value = "disabled")]
    pub(crate) nodeport_acceleration: String,
    /// kube-proxy's `--nodeport-addresses`: the node addresses NodePorts
    /// answer on, as CIDRs (`10.0.0.0/8,192.168.0.0/16`) or `primary` (the
    /// node's primary address); default every address. IPv6 CIDRs are
    /// accepted and skipped (the dataplane is IPv4).
    #[arg(long, value_delimiter = ',')]
    pub(crate) nodeport_addresses: Vec<String>,
    /// The cluster's NodePort range (the apiserver's
    /// `--service-node-port-range`): node ports outside it are not served.
    #[arg(long, default_value = "30000-32767")]
    pub(crate) service_node_port_range: String,
    /// How Services are served (kube-proxy's `--proxy-mode`): `ebpf`,
    /// `nftables` (kube-proxy's nftables shape, in the table `ip
    /// rudder-proxy`; kernel 5.13 and nft 1.0.1), `iptables` (kube-proxy's
    /// iptables shape, with the node's `iptables`), or `auto`: eBPF where its
    /// programs load, else nftables where the node can run it, else
    /// iptables, said in the log.
    #[arg(long, default_value = "auto")]
    pub(crate) proxy_mode: String,
    /// Remove the dataplane (programs, maps, flows) from this node, and exit.
    #[arg(long)]
    pub(crate) uninstall: bool,
}

/// `rudder agent run` flags: the kubelet's and the proxy's, and which
/// parts to leave out.
#[derive(clap::Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) kubelet: KubeletArgs,
    #[command(flatten)]
    pub(crate) proxy: ProxyFlags,
    /// Do not run the network daemon (another pod network is installed).
    #[arg(long)]
    pub(crate) no_network: bool,
    /// Do not run the service proxy (kube-proxy or another one runs).
    #[arg(long)]
    pub(crate) no_proxy: bool,
    /// Do not run the kubelet (the cluster's own runs the pods: the agent
    /// as a DaemonSet replacing kube-proxy and flannel).
    #[arg(long)]
    pub(crate) no_kubelet: bool,
    /// IPAM state directory the network daemon writes into the CNI
    /// configuration (default: the plugin's, /var/lib/cni/networks).
    #[arg(long)]
    pub(crate) ipam_dir: Option<std::path::PathBuf>,
}
