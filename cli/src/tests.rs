//! The command line as operators coming from kube-proxy and the kubelet
//! spell it.

use clap::Parser as _;

use super::*;
use crate::agent::nodeport_addresses;

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

#[test]
fn nodeport_addresses_are_read_as_kube_proxy_reads_them() {
    use rudder_agent::proxy::daemon::NodePortAddresses;
    let read =
        |v: &[&str]| nodeport_addresses(&v.iter().map(|s| (*s).to_string()).collect::<Vec<_>>());
    assert_eq!(read(&[]).unwrap(), NodePortAddresses::All);
    assert_eq!(read(&["primary"]).unwrap(), NodePortAddresses::Primary);
    let NodePortAddresses::Cidrs(c) = read(&["10.0.0.0/8", "fd00::/8", "192.168.1.0/24"]).unwrap()
    else {
        panic!("not CIDRs");
    };
    assert_eq!(c.len(), 2, "the IPv6 CIDR is skipped: {c:?}");
    assert!(read(&["10.0.0.0/33"]).is_err());
    assert!(read(&["eth0"]).is_err());
    // Which addresses each choice keeps.
    let all: std::collections::BTreeSet<std::net::Ipv4Addr> =
        ["10.1.2.3", "192.168.1.5", "127.0.0.1"]
            .iter()
            .map(|a| a.parse().unwrap())
            .collect();
    let primary = Some("192.168.1.5".parse().unwrap());
    let kept = |n: &NodePortAddresses| {
        n.select(&all, primary)
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(kept(&NodePortAddresses::All).len(), 3);
    assert_eq!(kept(&NodePortAddresses::Primary), ["192.168.1.5"]);
    assert_eq!(
        kept(&NodePortAddresses::Cidrs(c)),
        ["10.1.2.3", "192.168.1.5"]
    );
}
