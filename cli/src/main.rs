//! `rudder`: one binary for the node agent and (later) the control plane.

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rudder_agent::{config::AgentConfig, network, preflight};

#[derive(Parser)]
#[command(name = "rudder", version, about = "Rudder: a Kubernetes node stack")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The node agent.
    Agent {
        #[command(subcommand)]
        command: AgentCommand,
    },
}

#[derive(Subcommand)]
enum AgentCommand {
    /// Check that this node's kernel can run the agent's eBPF dataplane:
    /// BTF, bpffs, cgroup layout, loading a tc program and attaching it (TCX
    /// or clsact, probed in a private network namespace). Exits 1 on failure.
    Preflight,
    /// Run the network daemon: this node's pod subnet, the CNI
    /// configuration, and routes to every other node's pods (the `[network]`
    /// section of the configuration).
    Network {
        /// This node's name (default: the host name).
        #[arg(long, env = "NODE_NAME")]
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
    /// Validate an agent configuration file and print it as understood.
    CheckConfig {
        #[arg(default_value = rudder_agent::config::DEFAULT_PATH)]
        path: std::path::PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
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
            let cfg = if config.exists() {
                AgentConfig::load(&config).context("reading the agent configuration")?
            } else {
                AgentConfig::default()
            };
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .context("starting the async runtime")?;
            rt.block_on(async {
                if uninstall {
                    return network::uninstall(&cfg.network)
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
        Command::Agent {
            command: AgentCommand::CheckConfig { path },
        } => {
            let cfg = AgentConfig::load(&path).context("checking the agent configuration")?;
            println!("{cfg:#?}");
        }
    }
    Ok(())
}

/// The host name, as the kubelet names its Node (lower-cased).
fn hostname() -> anyhow::Result<String> {
    let name =
        std::fs::read_to_string("/proc/sys/kernel/hostname").context("reading the host name")?;
    Ok(name.trim().to_lowercase())
}

/// A client from `--kubeconfig`, or inferred (in-cluster, $KUBECONFIG,
/// ~/.kube/config).
async fn kube_client(path: Option<&std::path::Path>) -> anyhow::Result<kube::Client> {
    let config = match path {
        Some(p) => {
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
    kube::Client::try_from(config).context("building the Kubernetes client")
}
