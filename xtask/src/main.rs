//! `cargo xtask`: builds Rudder's BPF objects and test images, installs what
//! the project needs, and runs the whole test suite. See `cargo xtask --help`.

mod agent_image;
mod bench;
mod ebpf;
mod images;
mod kernels;
mod openapi;
mod protoschema;
mod python_image;
mod registry;
mod setup;
mod test;
mod up;
mod util;

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "Rudder's development tasks",
    long_about = "Rudder's development tasks.\n\n\
        First time on a Debian/Ubuntu machine: `cargo xtask setup` (as root), then \
        `cargo xtask test`. `cargo xtask up` does the set-up and starts a one-node cluster."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the eBPF objects (release, with BTF) into target/bpf/.
    ///
    /// Needs the `nightly` toolchain with `rust-src` and bpf-linker 0.10;
    /// says which is missing and how to install it. The agent embeds the same
    /// objects through its build script.
    BuildEbpf {
        /// Where to put the `<program>.bpf.o` files.
        #[arg(long, default_value = "target/bpf")]
        out: PathBuf,
    },
    /// Regenerate the Kubernetes API schemas the apiserver serves under
    /// /openapi/v3 (control/src/api/openapi/) from the PyPI package
    /// kubernetes-validate (needs pip and the registry; the output is
    /// checked in).
    Openapi,
    /// Install what the project needs (idempotent) and print what changed.
    ///
    /// On Debian/Ubuntu: apt packages (containerd, runc, CNI plugins, iproute2,
    /// iptables, nftables, docker-registry, skopeo, busybox-static, iperf3,
    /// etcd, ...), the nightly `rust-src` component, bpf-linker 0.10.0 and
    /// the official Python client (`kubernetes`, in target/rudder/python).
    /// Elsewhere (CentOS/RHEL, Fedora, ...) prints the packages to install.
    Setup {
        /// Print what would be installed without installing it.
        #[arg(long)]
        dry_run: bool,
    },
    /// Build the test images and push them to the local registry.
    ///
    /// Starts the registry (Debian's docker-registry on 127.0.0.1:5000, data
    /// in target/rudder/registry) unless one answers there. Images:
    /// library/busybox:{latest,1.28,1.36} from Debian's static busybox;
    /// rudder/echo:latest, an HTTP/TCP/UDP echo server (8080/9000/9000);
    /// library/nginx:{latest,1.14.2,1.16.1,1.25}, the echo server on port 80.
    /// With the agent's mirror convention (configs/registries.md), `busybox:1.28`
    /// and `nginx` in a manifest resolve to these.
    Images {
        /// Registry address (host:port) to push to.
        #[arg(long, default_value = registry::DEFAULT_ADDR)]
        registry: String,
    },
    /// Run the whole suite: lints, BPF build, images, unit, privileged
    /// integration and end-to-end tests; ends with a summary line.
    ///
    /// Privileged tests need root. To run without root, set
    /// RUDDER_SKIP_PRIVILEGED=1: they are then reported as ignored.
    Test {
        /// Skip `cargo fmt --check` and clippy.
        #[arg(long)]
        no_lint: bool,
        /// Only run tests whose name contains this (passed to the test binaries).
        filter: Option<String>,
    },
    /// Set up this machine, build everything and start a one-node cluster:
    /// containerd, the local registry, `rudder server` (embedded store) and
    /// `rudder agent run` (network, eBPF service proxy, kubelet). Returns
    /// when the node is Ready and prints how to use it.
    Up {
        /// Number of nodes: 1 runs on this machine itself; more run each in
        /// a network namespace of its own, joined over VXLAN.
        #[arg(long, default_value_t = 1)]
        nodes: u32,
        /// The cluster's persistent state (store, PKI, images, logs).
        #[arg(long, default_value = "/var/lib/rudder/local")]
        data_dir: PathBuf,
        /// The apiserver's port.
        #[arg(long, default_value_t = 6443)]
        api_port: u16,
        /// Use the release binaries already built.
        #[arg(long)]
        no_build: bool,
        /// Nodes that run only the kubelet (as an existing cluster's
        /// would); the agent is then installed with `kubectl apply -f
        /// configs/deploy/` and its image from the local registry. Needs
        /// --nodes 2 or more.
        #[arg(long)]
        agent_daemonset: bool,
        /// The agents' `--proxy-mode` (`auto`, `ebpf`, `nftables` or `iptables`).
        #[arg(long)]
        proxy_mode: Option<String>,
    },
    /// Stop what `up` started, by pid, and remove what it made (containers,
    /// mounts, cgroups, the pod network, BPF pins); keeps the data directory
    /// unless --purge.
    Down {
        #[arg(long, default_value = "/var/lib/rudder/local")]
        data_dir: PathBuf,
        /// Remove the data directory too.
        #[arg(long)]
        purge: bool,
    },
    /// Build the agent's OCI image (`rudder/agent`: static `rudder` and
    /// `rudder-cni` on busybox) for configs/deploy/daemonset.yaml, and push
    /// it to a registry (plain HTTP).
    AgentImage {
        #[arg(long, default_value = registry::DEFAULT_ADDR)]
        registry: String,
    },
    /// Check the cluster `up` started: a Deployment behind a ClusterIP
    /// reached from a pod and from this node, `kubectl logs`, namespace
    /// deletion. Leaves nothing behind.
    Smoke {
        #[arg(long, default_value = "/var/lib/rudder/local")]
        data_dir: PathBuf,
        /// On a cluster made with --agent-daemonset, end by deleting the
        /// DaemonSet, running the documented clean-up on every node and
        /// checking that each node is as it was before the agent.
        #[arg(long)]
        remove_agent: bool,
    },
    /// Regenerate control/src/api/pb/schema.rs, the table of Kubernetes
    /// protobuf messages (field numbers, types, JSON names) that lets
    /// `rudder server` read protobuf request bodies.
    ///
    /// Reads the `k8s-pb` 0.9 and `k8s-openapi` 0.29 sources from the cargo
    /// registry unless given.
    GenProtoSchema {
        /// Directory of the k8s-pb crate's sources.
        #[arg(long)]
        k8s_pb: Option<PathBuf>,
        /// Directory of the k8s-openapi crate's sources.
        #[arg(long)]
        k8s_openapi: Option<PathBuf>,
    },
    /// Run a benchmark and print its table (as root).
    ///
    /// `control`: store and API writes, Raft store vs etcd 3.4 (1 and 3
    /// members). `dataplane`: the eBPF Service dataplane against kube-proxy's iptables
    /// and nftables rule shapes on one topology of network namespaces, for
    /// 10, 1,000, 10,000 and 100,000 services: programming time, one endpoint
    /// change, per-packet cost, new connections per second and latency.
    /// Options after the name go to the benchmark (`--scales 10,1000`,
    /// `--seconds 2`, `--modes ebpf,iptables,nftables`).
    Bench {
        /// Which benchmark: `dataplane`.
        name: String,
        /// Options for the benchmark.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let root = util::repo_root()?;
    std::env::set_current_dir(&root)?;
    match Cli::parse().command {
        Command::Openapi => openapi::run(&root),
        Command::BuildEbpf { out } => {
            for o in ebpf::build(&root, &root.join(out))? {
                println!("{}", o.display());
            }
            Ok(())
        }
        Command::Setup { dry_run } => setup::run(dry_run),
        Command::Images { registry } => images::run(&root, &registry).map(drop),
        Command::Test { no_lint, filter } => test::run(&root, !no_lint, filter.as_deref()),
        Command::Up {
            nodes,
            data_dir,
            api_port,
            no_build,
            agent_daemonset,
            proxy_mode,
        } => up::up(
            &root,
            &up::UpOptions {
                nodes,
                data_dir,
                api_port,
                no_build,
                agent_daemonset,
                proxy_mode,
            },
        ),
        Command::Down { data_dir, purge } => up::down(&root, data_dir, purge),
        Command::Smoke {
            data_dir,
            remove_agent,
        } => up::smoke(&root, data_dir, remove_agent),
        Command::AgentImage { registry } => agent_image::agent_image(&root, &registry),
        Command::GenProtoSchema {
            k8s_pb,
            k8s_openapi,
        } => protoschema::run(&root, k8s_pb, k8s_openapi),
        Command::Bench { name, args } => bench::run(&name, &args),
    }
}
