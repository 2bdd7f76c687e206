//! `rudder`: one binary for the node agent and (later) the control plane.

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand};
use rudder_agent::{config::AgentConfig, preflight};

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
            command: AgentCommand::CheckConfig { path },
        } => {
            let cfg = AgentConfig::load(&path).context("checking the agent configuration")?;
            println!("{cfg:#?}");
        }
    }
    Ok(())
}
