//! The command line as operators coming from kube-proxy and the kubelet
//! spell it.

use clap::Parser as _;

use super::*;

#[test]
fn upstream_spellings_are_accepted() {
    let cli = Cli::try_parse_from([
        "rudder",
        "--log-format",
        "json",
        "agent",
        "kubelet",
        "--hostname-override",
        "node-1",
        "--container-runtime-endpoint",
        "unix:///run/k3s/containerd/containerd.sock",
    ])
    .unwrap();
    assert!(matches!(cli.log_format, LogFormat::Json));
    let Command::Agent { command } = cli.command else {
        panic!("not the agent");
    };
    let AgentCommand::Kubelet(k) = command else {
        panic!("not the kubelet");
    };
    assert_eq!(k.node_name.as_deref(), Some("node-1"));
    assert_eq!(
        k.containerd_socket,
        std::path::Path::new("/run/k3s/containerd/containerd.sock")
    );
    assert!(socket_path("npipe://./pipe/containerd").is_err());
    assert!(Cli::try_parse_from(["rudder", "--log-format", "xml", "agent", "preflight"]).is_err());
}
