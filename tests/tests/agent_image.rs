//! The agent's image as the DaemonSet runs it: pulled from the local
//! registry by tag (an OCI index) into a containerd of the test's own, then
//! run privileged in a network namespace of its own, where everything the
//! agent runs must work against the real kernel: `rudder`, the static
//! `rudder-cni`, `nft`, and `iptables` in both flavours with the wrapper
//! that picks the flavour the node uses; `rudder-cni` must run with no
//! C library beside it (the node's). `cargo xtask test` builds and
//! pushes the image first (`cargo xtask agent-image`).

use rudder_test_harness::Containerd;

const IMAGE: &str = "127.0.0.1:5000/rudder/agent:latest";

/// What the test runs inside the image; each step must succeed.
const SCRIPT: &str = r#"set -e
/rudder --version
echo '{"cniVersion": "1.0.0"}' | CNI_COMMAND=VERSION /rudder-cni
nft --version
echo "wrapper before: $(iptables -V)"
nft add table ip rudder_image_check
nft add chain ip rudder_image_check post '{ type nat hook postrouting priority 100 ; }'
nft add rule ip rudder_image_check post ip saddr 10.244.0.0/16 masquerade
nft list table ip rudder_image_check | grep -q masquerade
iptables-nft -t filter -A FORWARD -s 10.244.0.0/16 -j ACCEPT
iptables-nft-save -t filter | grep -q -- '-A FORWARD -s 10.244.0.0/16 -j ACCEPT'
ip6tables-nft -t filter -A FORWARD -s fd00::/8 -j ACCEPT
iptables-legacy -t nat -A POSTROUTING -s 10.244.0.0/16 -j MASQUERADE
iptables-legacy -t nat -A POSTROUTING -s 10.245.0.0/16 -j MASQUERADE
iptables-legacy -t nat -A POSTROUTING -s 10.246.0.0/16 -j MASQUERADE
iptables-legacy-save -t nat | grep -q -- '-A POSTROUTING -s 10.244.0.0/16 -j MASQUERADE'
ip6tables-legacy -L -n > /dev/null
echo "wrapper after: $(iptables -V)"
iptables-save -t nat | grep -c MASQUERADE
# The CNI plugin is copied onto the node: alone in an empty root it must
# still run (static), where the agent itself (dynamic) cannot.
mkdir -p /tmp/bare && cp /rudder-cni /rudder /tmp/bare/
echo '{"cniVersion": "1.0.0"}' | CNI_COMMAND=VERSION chroot /tmp/bare /rudder-cni > /dev/null && echo "cni alone: runs"
chroot /tmp/bare /rudder --version > /dev/null 2>&1 || echo "agent alone: needs its libraries"
echo image-ok
"#;

#[test]
fn the_agent_image_runs_everything_the_agent_needs() {
    let cd = Containerd::start();
    let pulled = cd.ctr(&["images", "pull", "--plain-http", IMAGE]);
    assert!(
        pulled.status.success(),
        "cannot pull {IMAGE} (`cargo xtask agent-image` pushes it): {}",
        String::from_utf8_lossy(&pulled.stderr)
    );
    let out = cd.ctr_ok(&[
        "run",
        "--rm",
        "--privileged",
        IMAGE,
        "agent-image-check",
        "/bin/sh",
        "-c",
        SCRIPT,
    ]);
    assert!(out.contains("image-ok"), "{out}");
    assert!(out.contains("rudder "), "the agent runs: {out}");
    assert!(
        out.contains("\"supportedVersions\""),
        "the CNI plugin answers VERSION: {out}"
    );
    // Nothing in either flavour: nft. Then three legacy rules against two
    // nft ones: the wrapper follows the node, as kube-proxy's does.
    assert!(
        out.lines()
            .any(|l| l.starts_with("wrapper before:") && l.contains("nf_tables")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("wrapper after:") && l.contains("legacy")),
        "{out}"
    );
    assert!(out.lines().any(|l| l.trim() == "3"), "{out}");
    assert!(
        out.contains("cni alone: runs"),
        "rudder-cni is static: {out}"
    );
    assert!(
        out.contains("agent alone: needs its libraries"),
        "the check can tell: {out}"
    );
}
