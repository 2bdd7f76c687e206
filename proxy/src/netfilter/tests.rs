//! The rules as text: kube-proxy's shape, exact where it matters.

use super::*;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

/// A TCP service port to `backends` on 8080, with affinity if given.
pub(crate) fn spec(
    addr: Ipv4Addr,
    port: u16,
    backends: &[[u8; 4]],
    affinity: Option<u32>,
) -> ServiceSpec {
    let mut s = ServiceSpec::tcp(
        addr,
        port,
        backends.iter().map(|b| (Ipv4Addr::from(*b), 8080)),
    );
    s.affinity_timeout = affinity;
    s
}

fn rules_of<'a>(text: &'a str, chain: &str) -> Vec<&'a str> {
    let head = format!("-A {chain} ");
    text.lines().filter(|l| l.starts_with(&head)).collect()
}

fn svc_chain(text: &str) -> String {
    let line = rules_of(text, "RUDDER-SERVICES")
        .into_iter()
        .find(|l| l.contains("-d 10.96.0.10/32"))
        .unwrap()
        .to_owned();
    line.rsplit(' ').next().unwrap().to_owned()
}

#[test]
fn a_cluster_ip_spreads_evenly_over_its_endpoints_and_masquerades_outsiders() {
    let cfg = RenderConfig {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
    };
    let t = render(
        &[spec(
            VIP,
            80,
            &[[10, 244, 1, 11], [10, 244, 1, 12], [10, 244, 2, 13]],
            None,
        )],
        &cfg,
    );
    let svc = svc_chain(&t.nat);
    assert!(svc.starts_with("RUDDER-SVC-") && svc.len() <= 28, "{svc}");
    let rules = rules_of(&t.nat, &svc);
    assert_eq!(rules.len(), 4, "{rules:#?}");
    assert!(rules[0].contains(
        "! -s 10.244.0.0/16 -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j RUDDER-MARK-MASQ"
    ));
    assert!(rules[1].contains("--probability 0.3333333333"));
    assert!(rules[2].contains("--probability 0.5000000000"));
    assert!(!rules[3].contains("statistic"));
    let seps: Vec<&str> = rules[1..]
        .iter()
        .map(|r| r.rsplit(' ').next().unwrap())
        .collect();
    let dnat: Vec<String> = seps
        .iter()
        .flat_map(|sep| rules_of(&t.nat, sep))
        .filter(|r| r.contains("DNAT"))
        .map(|r| r.rsplit(' ').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        dnat,
        ["10.244.1.11:8080", "10.244.1.12:8080", "10.244.2.13:8080"]
    );
    // Each endpoint reaching itself through the Service is masqueraded.
    assert!(rules_of(&t.nat, seps[0])[0].ends_with("-s 10.244.1.11/32 -j RUDDER-MARK-MASQ"));
    // Declared before use, and hooked where kube-proxy hooks.
    assert!(t.nat.contains(&format!(":{svc} - [0:0]")));
    assert!(t.nat.contains("-A PREROUTING -j RUDDER-SERVICES"));
    assert!(t.nat.contains("-A OUTPUT -j RUDDER-SERVICES"));
    assert!(t.nat.contains("-A POSTROUTING -j RUDDER-POSTROUTING"));
    assert!(t.filter.lines().all(|l| !l.contains("REJECT")));
}

#[test]
fn client_ip_affinity_checks_recent_clients_first_and_records_them() {
    let t = render(
        &[spec(VIP, 80, &[[10, 0, 0, 1], [10, 0, 0, 2]], Some(10_800))],
        &RenderConfig::default(),
    );
    let svc = svc_chain(&t.nat);
    let rules = rules_of(&t.nat, &svc);
    assert!(
        rules[0].contains("-m recent --name RUDDER-SEP-")
            && rules[0].contains("--rcheck --seconds 10800 --reap")
    );
    assert!(rules[1].contains("--rcheck"));
    assert!(rules[2].contains("statistic"));
    let sep = rules[0].rsplit(' ').next().unwrap();
    let dnat = rules_of(&t.nat, sep)
        .into_iter()
        .find(|r| r.contains("DNAT"))
        .unwrap();
    assert!(dnat.contains(&format!(
        "-m recent --name {sep} --mask 255.255.255.255 --rsource --set"
    )));
}

#[test]
fn a_port_with_no_endpoints_is_rejected_in_filter_and_has_no_nat() {
    let mut node_port = spec(Ipv4Addr::UNSPECIFIED, 30080, &[], None);
    node_port.keep_source = true;
    let t = render(
        &[spec(VIP, 80, &[], None), node_port],
        &RenderConfig::default(),
    );
    assert!(!t.nat.contains("RUDDER-SVC-"));
    let svc_rejects = rules_of(&t.filter, "RUDDER-SERVICES");
    assert_eq!(svc_rejects.len(), 1);
    assert!(svc_rejects[0].ends_with("-d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j REJECT"));
    let ext = rules_of(&t.filter, "RUDDER-EXTERNAL-SERVICES");
    assert!(ext[0].ends_with("-m addrtype --dst-type LOCAL -p tcp -m tcp --dport 30080 -j REJECT"));
    assert!(
        t.filter
            .contains("-A FORWARD -m conntrack --ctstate NEW -j RUDDER-SERVICES")
    );
}

#[test]
fn node_ports_masquerade_unless_the_source_is_kept() {
    let mut local = spec(Ipv4Addr::UNSPECIFIED, 30081, &[[10, 0, 0, 1]], None);
    local.keep_source = true;
    let cluster = spec(Ipv4Addr::UNSPECIFIED, 30080, &[[10, 0, 0, 1]], None);
    let t = render(&[local, cluster], &RenderConfig::default());
    let np = rules_of(&t.nat, "RUDDER-NODEPORTS");
    assert_eq!(np.len(), 2);
    let chain_of = |port: &str| -> String {
        np.iter()
            .find(|r| r.contains(&format!("--dport {port} ")))
            .unwrap()
            .rsplit(' ')
            .next()
            .unwrap()
            .to_owned()
    };
    assert_eq!(
        rules_of(&t.nat, &chain_of("30080"))[0],
        format!("-A {} -j RUDDER-MARK-MASQ", chain_of("30080"))
    );
    assert!(
        rules_of(&t.nat, &chain_of("30081"))
            .iter()
            .all(|r| !r.contains("MARK-MASQ"))
    );
    // Node ports are looked up last, for local destinations only.
    let services = rules_of(&t.nat, "RUDDER-SERVICES");
    assert_eq!(
        *services.last().unwrap(),
        "-A RUDDER-SERVICES -m addrtype --dst-type LOCAL -j RUDDER-NODEPORTS"
    );
}

#[test]
fn rendering_is_deterministic_whatever_the_order() {
    let a = spec(VIP, 80, &[[10, 0, 0, 2], [10, 0, 0, 1]], None);
    let b = spec(Ipv4Addr::new(10, 96, 0, 11), 53, &[[10, 0, 0, 3]], None);
    let cfg = RenderConfig::default();
    assert_eq!(render(&[a.clone(), b.clone()], &cfg), render(&[b, a], &cfg));
}

#[test]
fn a_merge_replaces_our_chains_and_keeps_everyone_elses() {
    let save = "# Generated by iptables-save\n*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n\
        :DOCKER - [0:0]\n:RUDDER-SERVICES - [0:0]\n:RUDDER-SVC-OLD - [0:0]\n\
        -A PREROUTING -j DOCKER\n-A PREROUTING -j RUDDER-SERVICES\n-A RUDDER-SERVICES -j RUDDER-SVC-OLD\n\
        -A DOCKER -i docker0 -j RETURN\nCOMMIT\n# Completed\n";
    let body = ":RUDDER-SERVICES - [0:0]\n-A PREROUTING -j RUDDER-SERVICES\n";
    let merged = merge(save, "nat", body);
    assert_eq!(
        merged,
        "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:DOCKER - [0:0]\n\
         -A PREROUTING -j DOCKER\n-A DOCKER -i docker0 -j RETURN\n\
         :RUDDER-SERVICES - [0:0]\n-A PREROUTING -j RUDDER-SERVICES\nCOMMIT\n"
    );
    // A table iptables has not loaded yet is made.
    assert_eq!(merge("", "filter", "-A X\n"), "*filter\n-A X\nCOMMIT\n");
}

#[test]
fn a_sync_since_the_last_rewrites_only_the_changed_chains() {
    let cfg = RenderConfig {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
    };
    let other = Ipv4Addr::new(10, 96, 0, 11);
    let before = render(
        &[
            spec(VIP, 80, &[[10, 244, 1, 11], [10, 244, 1, 12]], None),
            spec(other, 53, &[[10, 244, 1, 20]], None),
        ],
        &cfg,
    );
    let after = render(
        &[
            spec(VIP, 80, &[[10, 244, 1, 11]], None),
            spec(other, 53, &[[10, 244, 1, 20]], None),
        ],
        &cfg,
    );
    let s = partial("nat", &before.nat, &after.nat).unwrap();
    let svc = svc_chain(&after.nat);
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines[0], "*nat");
    assert_eq!(*lines.last().unwrap(), "COMMIT");
    // The changed service chain is declared (flushed) and filled again.
    assert!(lines.contains(&format!(":{svc} - [0:0]").as_str()), "{s}");
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("-A {svc} ")))
            .count(),
        rules_of(&after.nat, &svc).len()
    );
    // The removed endpoint's chain is flushed, then deleted last.
    let deleted: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("-X "))
        .copied()
        .collect();
    assert_eq!(deleted.len(), 1, "{s}");
    let gone = deleted[0].trim_start_matches("-X ");
    let declared = lines
        .iter()
        .position(|l| *l == format!(":{gone} - [0:0]"))
        .unwrap();
    let last_rule = lines.iter().rposition(|l| l.starts_with("-A ")).unwrap();
    assert!(
        declared < last_rule
            && last_rule < lines.iter().position(|l| l.starts_with("-X ")).unwrap()
    );
    // The other service, the shared chains and the built-in chains' jumps
    // are left alone.
    assert!(!s.contains("10.96.0.11"), "{s}");
    assert!(
        !s.contains("RUDDER-POSTROUTING") && !s.contains("-A PREROUTING"),
        "{s}"
    );
    // Nothing changed: nothing to restore.
    assert_eq!(partial("nat", &after.nat, &after.nat), None);
    assert_eq!(partial("filter", &after.filter, &after.filter), None);
}
