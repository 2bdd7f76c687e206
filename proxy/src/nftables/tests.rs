//! The table as data and as the `nft` transaction: kube-proxy's nftables
//! shape, exact where it matters.

use super::*;
use crate::netfilter::tests::spec;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);

fn cfg() -> RenderConfig {
    RenderConfig {
        cluster_cidr: Some((Ipv4Addr::new(10, 244, 0, 0), 16)),
    }
}

/// The chain an element of `map` sends `key` to.
fn target(r: &Ruleset, map: &str, key: &str) -> String {
    let prefix = format!("{key} : goto ");
    r.maps[map]
        .elements
        .iter()
        .find_map(|e| e.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("{key} not in {map}: {:?}", r.maps[map]))
        .to_owned()
}

#[test]
fn a_cluster_ip_dispatches_by_map_and_spreads_evenly_over_its_endpoints() {
    let r = render(
        &[spec(
            VIP,
            80,
            &[[10, 244, 1, 11], [10, 244, 1, 12], [10, 244, 2, 13]],
            None,
        )],
        &cfg(),
    );
    let svc = target(&r, "service-ips", "10.96.0.10 . tcp . 80");
    assert!(svc.starts_with("svc-"), "{svc}");
    let rules = &r.chains[&svc].rules;
    assert_eq!(
        rules[0],
        "ip saddr != 10.244.0.0/16 jump mark-for-masquerade"
    );
    assert!(
        rules[1].starts_with("numgen random mod 3 vmap { 0 : goto sep-"),
        "{rules:?}"
    );
    let seps: Vec<&str> = rules[1]
        .split("goto ")
        .skip(1)
        .map(|s| s.split([',', ' ']).next().unwrap())
        .collect();
    assert_eq!(seps.len(), 3);
    // Each endpoint: the hairpin mark, then the DNAT, in address order.
    assert_eq!(
        r.chains[seps[0]].rules,
        [
            "ip saddr 10.244.1.11 jump mark-for-masquerade",
            "meta l4proto tcp dnat to 10.244.1.11:8080",
        ]
    );
    assert!(r.chains[seps[2]].rules[1].ends_with("10.244.2.13:8080"));
    // Nothing refused, no affinity sets.
    assert!(r.maps["no-endpoint-services"].elements.is_empty());
    assert!(r.sets.is_empty());
}

#[test]
fn the_fixed_chains_hook_where_kube_proxys_do() {
    let r = render(&[], &cfg());
    let hook = |c: &str| r.chains[c].hook.unwrap();
    assert_eq!(
        hook("nat-prerouting"),
        "type nat hook prerouting priority -100"
    );
    assert_eq!(hook("nat-output"), "type nat hook output priority -100");
    assert_eq!(
        hook("nat-postrouting"),
        "type nat hook postrouting priority 100"
    );
    for c in ["filter-input", "filter-forward", "filter-output"] {
        assert!(hook(c).ends_with("priority -110"), "{c}");
        assert_eq!(r.chains[c].rules, ["ct state new jump endpoints-check"]);
    }
    assert_eq!(
        r.chains["services"].rules,
        [
            "ip daddr . meta l4proto . th dport vmap @service-ips",
            "fib daddr type local ip daddr != 127.0.0.0/8 meta l4proto . th dport vmap @service-nodeports",
        ]
    );
    assert_eq!(
        r.chains["masquerading"].rules,
        [
            "meta mark & 0x4000 == 0 return",
            "meta mark set meta mark ^ 0x4000",
            "masquerade fully-random",
        ]
    );
}

#[test]
fn no_endpoints_rejects_and_a_node_port_masquerades_unless_it_keeps_the_source() {
    let mut local = spec(Ipv4Addr::UNSPECIFIED, 30081, &[[10, 244, 1, 11]], None);
    local.keep_source = true;
    let r = render(
        &[
            spec(VIP, 80, &[], None),
            spec(Ipv4Addr::UNSPECIFIED, 30080, &[[10, 244, 1, 11]], None),
            spec(Ipv4Addr::UNSPECIFIED, 30082, &[], None),
            local,
        ],
        &cfg(),
    );
    assert_eq!(
        target(&r, "no-endpoint-services", "10.96.0.10 . tcp . 80"),
        "reject-chain"
    );
    assert_eq!(
        target(&r, "no-endpoint-nodeports", "tcp . 30082"),
        "reject-chain"
    );
    assert!(r.maps["service-ips"].elements.is_empty());
    let np = target(&r, "service-nodeports", "tcp . 30080");
    assert_eq!(r.chains[&np].rules[0], "jump mark-for-masquerade");
    let kept = target(&r, "service-nodeports", "tcp . 30081");
    assert!(r.chains[&kept].rules[0].starts_with("numgen"));
    assert_eq!(r.chains["reject-chain"].rules, ["reject"]);
}

#[test]
fn affinity_checks_a_set_per_endpoint_first_and_records_the_client() {
    let r = render(
        &[spec(
            VIP,
            80,
            &[[10, 244, 1, 11], [10, 244, 1, 12]],
            Some(300),
        )],
        &cfg(),
    );
    let svc = target(&r, "service-ips", "10.96.0.10 . tcp . 80");
    let rules = &r.chains[&svc].rules;
    assert_eq!(rules.len(), 4, "{rules:?}");
    assert_eq!(r.sets.len(), 2);
    for (set, decl) in &r.sets {
        assert_eq!(decl, "type ipv4_addr; flags dynamic,timeout; timeout 300s;");
        let check = rules
            .iter()
            .find(|l| l.starts_with(&format!("ip saddr @{set} goto ")))
            .unwrap();
        let sep = check.rsplit(' ').next().unwrap();
        assert_eq!(
            r.chains[sep].rules[1],
            format!("update @{set} {{ ip saddr }}")
        );
    }
    assert!(rules[3].starts_with("numgen random mod 2"));
    // A new timeout is a new set (a set's timeout cannot change).
    let other = render(
        &[spec(
            VIP,
            80,
            &[[10, 244, 1, 11], [10, 244, 1, 12]],
            Some(600),
        )],
        &cfg(),
    );
    assert!(other.sets.keys().all(|k| !r.sets.contains_key(k)));
}

#[test]
fn the_transaction_declares_flushes_fills_then_deletes_what_is_gone() {
    let r = render(&[spec(VIP, 80, &[[10, 244, 1, 11]], Some(60))], &cfg());
    let existing = TableObjects {
        chains: vec!["services".into(), "svc-old".into(), "sep-old".into()],
        sets: vec!["aff-old".into()],
        maps: vec!["service-ips".into(), "gone-map".into()],
    };
    let s = script(&r, &existing);
    let lines: Vec<&str> = s.lines().collect();
    let at = |l: &str| {
        lines
            .iter()
            .position(|x| *x == l)
            .unwrap_or_else(|| panic!("{l:?} not in\n{s}"))
    };
    assert_eq!(lines[0], "add table ip rudder-proxy");
    let declared = at(
        "add chain ip rudder-proxy nat-prerouting { type nat hook prerouting priority -100; policy accept; }",
    );
    let flushed = at("flush chain ip rudder-proxy services");
    let stale_flushed = at("flush chain ip rudder-proxy svc-old");
    let filled = at(
        "add rule ip rudder-proxy services ip daddr . meta l4proto . th dport vmap @service-ips",
    );
    let deleted = at("delete chain ip rudder-proxy svc-old");
    assert!(declared < flushed && flushed < filled && stale_flushed < filled && filled < deleted);
    at("delete chain ip rudder-proxy sep-old");
    at("delete set ip rudder-proxy aff-old");
    at("delete map ip rudder-proxy gone-map");
    at("flush map ip rudder-proxy service-ips");
    // The affinity set is declared, never flushed: clients keep their
    // endpoints across syncs.
    let (set, _) = r.sets.iter().next().unwrap();
    at(&format!(
        "add set ip rudder-proxy {set} {{ type ipv4_addr; flags dynamic,timeout; timeout 60s; }}"
    ));
    assert!(!s.contains(&format!("flush set ip rudder-proxy {set}")));
    assert!(!s.contains("delete chain ip rudder-proxy services"));
    // Chains and maps made by this transaction are not flushed.
    assert!(!s.contains("flush chain ip rudder-proxy nat-prerouting"));
    assert!(!s.contains("flush map ip rudder-proxy no-endpoint-services"));
}

#[test]
fn many_elements_go_in_bounded_lines() {
    let specs: Vec<ServiceSpec> = (0..2500u32)
        .map(|i| {
            let [_, _, a, b] = i.to_be_bytes();
            spec(Ipv4Addr::new(10, 96, a, b), 80, &[], None)
        })
        .collect();
    let s = script(&render(&specs, &cfg()), &TableObjects::default());
    let lines: Vec<&str> = s
        .lines()
        .filter(|l| l.starts_with("add element ip rudder-proxy no-endpoint-services"))
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(lines[0].matches("goto reject-chain").count(), 1000);
    assert_eq!(lines[2].matches("goto reject-chain").count(), 500);
}

#[test]
fn kernel_versions_are_read_from_releases() {
    assert_eq!(kernel_version("5.14.0-427.el9.x86_64"), Some((5, 14)));
    assert_eq!(kernel_version("3.10.0-1160.el7.x86_64"), Some((3, 10)));
    assert_eq!(kernel_version("6.18.0"), Some((6, 18)));
    assert_eq!(kernel_version("unknown"), None);
    assert!(kernel_version("4.18.0-553.el8").unwrap() < MIN_KERNEL);
}

#[test]
fn a_sync_since_the_last_touches_only_what_changed() {
    let before = render(
        &[
            spec(VIP, 80, &[[10, 244, 1, 11], [10, 244, 1, 12]], Some(60)),
            spec(Ipv4Addr::new(10, 96, 0, 11), 53, &[[10, 244, 1, 20]], None),
        ],
        &cfg(),
    );
    // One endpoint of the first goes, the second loses its endpoints, a
    // third appears.
    let after = render(
        &[
            spec(VIP, 80, &[[10, 244, 1, 11]], Some(60)),
            spec(Ipv4Addr::new(10, 96, 0, 11), 53, &[], None),
            spec(Ipv4Addr::new(10, 96, 0, 12), 443, &[[10, 244, 1, 30]], None),
        ],
        &cfg(),
    );
    let s = script_since(&before, &after);
    let lines: Vec<&str> = s.lines().collect();
    let svc = target(&after, "service-ips", "10.96.0.10 . tcp . 80");
    let gone_svc = target(&before, "service-ips", "10.96.0.11 . tcp . 53");
    let new_svc = target(&after, "service-ips", "10.96.0.12 . tcp . 443");
    let has = |l: &str| lines.contains(&l);
    // The fixed chains are left alone.
    assert!(!s.contains("chain ip rudder-proxy services"), "{s}");
    assert!(
        !s.contains("nat-prerouting") && !s.contains("masquerading"),
        "{s}"
    );
    // The changed service chain is flushed and filled again; the new one
    // declared; the gone one flushed and deleted, after its map element.
    assert!(has(&format!("flush chain ip rudder-proxy {svc}")), "{s}");
    assert!(has(&format!("add chain ip rudder-proxy {new_svc}")), "{s}");
    assert!(
        !has(&format!("flush chain ip rudder-proxy {new_svc}")),
        "{s}"
    );
    let del_element = lines
        .iter()
        .position(|l| *l == "delete element ip rudder-proxy service-ips { 10.96.0.11 . tcp . 53 }")
        .unwrap_or_else(|| panic!("{s}"));
    let del_chain = lines
        .iter()
        .position(|l| *l == format!("delete chain ip rudder-proxy {gone_svc}"))
        .unwrap_or_else(|| panic!("{s}"));
    assert!(del_element < del_chain);
    assert!(has(
        "add element ip rudder-proxy no-endpoint-services { 10.96.0.11 . tcp . 53 : goto reject-chain }"
    ));
    // The removed endpoint's chain and affinity set go; the kept
    // endpoint's set stays, unflushed.
    let gone_sets: Vec<&String> = before
        .sets
        .keys()
        .filter(|k| !after.sets.contains_key(*k))
        .collect();
    assert_eq!(gone_sets.len(), 1);
    assert!(has(&format!("delete set ip rudder-proxy {}", gone_sets[0])));
    assert!(!s.contains("flush set"));
    // Nothing at all when nothing changed.
    assert_eq!(script_since(&after, &after), "add table ip rudder-proxy\n");
}

#[test]
fn a_first_write_is_built_up_in_whole_steps_ending_at_the_table() {
    let specs: Vec<ServiceSpec> = (0..25u8)
        .map(|i| {
            let affinity = (i % 5 == 0).then_some(60);
            let eps: &[[u8; 4]] = if i % 7 == 0 {
                &[]
            } else {
                &[[10, 244, 1, 11], [10, 244, 1, 12]]
            };
            spec(Ipv4Addr::new(10, 96, 1, i), 80, eps, affinity)
        })
        .collect();
    let r = render(&specs, &cfg());
    let built = steps(&r, 10);
    assert_eq!(built.len(), 3);
    assert_eq!(built.last(), Some(&r));
    // Each step is whole: every chain and set a rule or element names is
    // there, and each step holds the last one.
    for (i, step) in built.iter().enumerate() {
        for c in step.chains.values() {
            for rule in &c.rules {
                for n in named(rule) {
                    assert!(
                        step.chains.contains_key(n)
                            || step.sets.contains_key(n)
                            || step.maps.contains_key(n),
                        "step {i}: {n} named by {rule:?} is missing"
                    );
                }
            }
        }
        for m in step.maps.values() {
            for e in &m.elements {
                let target = e.rsplit(" : goto ").next().unwrap();
                assert!(step.chains.contains_key(target), "step {i}: {e}");
            }
        }
        if i > 0 {
            let before = &built[i - 1];
            assert!(before.chains.keys().all(|k| step.chains.contains_key(k)));
            let n = |s: &Ruleset| s.maps.values().map(|m| m.elements.len()).sum::<usize>();
            assert_eq!(n(step) - n(before), 10.min(25 - n(before)));
        }
    }
    // The first step has the fixed chains whatever the elements.
    assert!(
        built[0].chains.contains_key("nat-prerouting")
            && built[0].chains.contains_key("reject-chain")
    );
    // An empty table is one step.
    assert_eq!(steps(&render(&[], &cfg()), 10), vec![render(&[], &cfg())]);
}
