//! The cluster's DNS zone, as the Kubernetes DNS specification describes
//! it, computed from Services and EndpointSlices. Pure: [`Zone::build`]
//! takes the objects, [`Zone::resolve`] answers one question.
//!
//! - `<svc>.<ns>.svc.<zone>`: A → the ClusterIP; for a headless service, the
//!   ready endpoints' addresses; ExternalName → CNAME.
//! - `<hostname>.<svc>.<ns>.svc.<zone>`: A → that endpoint of a headless
//!   service (its `hostname`, e.g. a StatefulSet pod's).
//! - `_<port>._<proto>.<svc>.<ns>.svc.<zone>` (and `<svc>…` for every
//!   port): SRV → the service name (ClusterIP) or each endpoint (headless).
//! - `<a-b-c-d>.<ns>.pod.<zone>`: A → a.b.c.d.
//! - PTR for ClusterIPs and headless endpoints.
//! - Names in the zone that do not exist: NXDOMAIN with the zone's SOA;
//!   names that exist without records of the type: NODATA.
//! - Anything else is forwarded upstream.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    net::Ipv4Addr,
};

use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};

use super::message::{
    RCODE_NOERROR, RCODE_NXDOMAIN, RData, Record, TYPE_A, TYPE_ANY, TYPE_CNAME, TYPE_PTR, TYPE_SOA,
    TYPE_SRV,
};

/// TTL of every answer (CoreDNS's kubernetes plugin default).
pub const TTL: u32 = 5;

#[derive(Debug, Clone, Default)]
struct Svc {
    cluster_ips: Vec<Ipv4Addr>,
    external_name: Option<String>,
    /// (name, protocol lower-cased, port).
    ports: Vec<(String, String, u16)>,
    /// Ready endpoints: (address, hostname).
    endpoints: BTreeSet<(Ipv4Addr, Option<String>)>,
    headless: bool,
}

/// What to do with a question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolution {
    Answer {
        rcode: u8,
        answers: Vec<Record>,
        authority: Vec<Record>,
    },
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// The zone at one moment.
#[derive(Debug, Clone, Default)]
pub struct Zone {
    domain: String,
    services: BTreeMap<(String, String), Svc>,
    namespaces: BTreeSet<String>,
    ptr: HashMap<Ipv4Addr, String>,
    /// The service network, for PTR names inside it that no service has.
    service_cidr: Option<(Ipv4Addr, u8)>,
}

impl Zone {
    pub fn build<'a>(
        domain: &str,
        service_cidr: Option<(Ipv4Addr, u8)>,
        services: impl IntoIterator<Item = &'a Service>,
        slices: impl IntoIterator<Item = &'a EndpointSlice>,
    ) -> Self {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        let mut z = Zone {
            domain: domain.clone(),
            service_cidr,
            ..Default::default()
        };
        for s in services {
            let (Some(ns), Some(name)) = (&s.metadata.namespace, &s.metadata.name) else {
                continue;
            };
            let Some(spec) = &s.spec else {
                continue;
            };
            let mut svc = Svc::default();
            if spec.type_.as_deref() == Some("ExternalName") {
                svc.external_name = spec
                    .external_name
                    .as_ref()
                    .map(|n| n.trim_end_matches('.').to_ascii_lowercase());
            } else {
                svc.headless = spec.cluster_ip.as_deref() == Some("None");
                svc.cluster_ips = spec
                    .cluster_ips
                    .iter()
                    .flatten()
                    .chain(spec.cluster_ip.iter())
                    .filter_map(|ip| ip.parse().ok())
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
            }
            for p in spec.ports.iter().flatten() {
                if let (Some(pn), Ok(port)) = (&p.name, u16::try_from(p.port)) {
                    let proto = p.protocol.as_deref().unwrap_or("TCP").to_ascii_lowercase();
                    svc.ports.push((pn.to_ascii_lowercase(), proto, port));
                }
            }
            let fqdn = format!("{name}.{ns}.svc.{domain}");
            for ip in &svc.cluster_ips {
                z.ptr.insert(*ip, fqdn.clone());
            }
            z.namespaces.insert(ns.clone());
            z.services.insert((ns.clone(), name.clone()), svc);
        }
        for sl in slices {
            let Some(ns) = &sl.metadata.namespace else {
                continue;
            };
            let Some(svc_name) = sl
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("kubernetes.io/service-name"))
            else {
                continue;
            };
            if sl.address_type != "IPv4" {
                continue;
            }
            let Some(svc) = z.services.get_mut(&(ns.clone(), svc_name.clone())) else {
                continue;
            };
            // Headless services publish their endpoints; a service's
            // named endpoint ports only matter for headless SRV records,
            // which use the service's ports here.
            for ep in &sl.endpoints {
                let ready = ep.conditions.as_ref().and_then(|c| c.ready).unwrap_or(true);
                if !ready && !svc.headless {
                    continue;
                }
                if !ready {
                    continue;
                }
                for a in &ep.addresses {
                    if let Ok(ip) = a.parse::<Ipv4Addr>() {
                        let host = ep.hostname.as_ref().map(|h| h.to_ascii_lowercase());
                        if svc.headless {
                            let label = host.clone().unwrap_or_else(|| dashed(ip));
                            z.ptr
                                .entry(ip)
                                .or_insert_with(|| format!("{label}.{svc_name}.{ns}.svc.{domain}"));
                        }
                        svc.endpoints.insert((ip, host));
                    }
                }
            }
        }
        z
    }

    fn soa(&self) -> Record {
        Record {
            name: self.domain.clone(),
            ttl: TTL,
            data: RData::Soa {
                mname: format!("ns.dns.{}", self.domain),
                rname: format!("hostmaster.{}", self.domain),
                serial: 1,
                refresh: 7200,
                retry: 1800,
                expire: 86400,
                minimum: TTL,
            },
        }
    }

    fn negative(&self, rcode: u8) -> Resolution {
        Resolution::Answer {
            rcode,
            answers: vec![],
            authority: vec![self.soa()],
        }
    }

    fn records(&self, answers: Vec<Record>) -> Resolution {
        if answers.is_empty() {
            return self.negative(RCODE_NOERROR);
        }
        Resolution::Answer {
            rcode: RCODE_NOERROR,
            answers,
            authority: vec![],
        }
    }

    /// Answers `name` (lower-cased, no trailing dot) for `qtype`.
    pub fn resolve(&self, name: &str, qtype: u16) -> Resolution {
        let name = name.trim_end_matches('.');
        if let Some(ip) = reverse_name(name) {
            return self.resolve_ptr(name, ip, qtype);
        }
        let Some(rel) = name.strip_suffix(&self.domain).and_then(|r| {
            if r.is_empty() {
                Some("")
            } else {
                r.strip_suffix('.')
            }
        }) else {
            return Resolution::Forward;
        };
        let labels: Vec<&str> = if rel.is_empty() {
            vec![]
        } else {
            rel.split('.').collect()
        };
        let rec = |data: RData| Record {
            name: name.to_string(),
            ttl: TTL,
            data,
        };
        match labels.as_slice() {
            [] => {
                if qtype == TYPE_SOA || qtype == TYPE_ANY {
                    return self.records(vec![self.soa()]);
                }
                self.negative(RCODE_NOERROR)
            }
            ["svc"] | ["pod"] => self.negative(RCODE_NOERROR),
            [ns, "svc"] | [ns, "pod"] => {
                if self.namespaces.contains(*ns) {
                    self.negative(RCODE_NOERROR)
                } else {
                    self.negative(RCODE_NXDOMAIN)
                }
            }
            [svc, ns, "svc"] => {
                let Some(s) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return self.negative(RCODE_NXDOMAIN);
                };
                if let Some(target) = &s.external_name {
                    return self.records(vec![rec(RData::Cname(target.clone()))]);
                }
                let mut out = vec![];
                if qtype == TYPE_A || qtype == TYPE_ANY {
                    if s.headless {
                        out.extend(s.endpoints.iter().map(|(ip, _)| rec(RData::A(*ip))));
                    } else {
                        out.extend(s.cluster_ips.iter().map(|ip| rec(RData::A(*ip))));
                    }
                }
                if qtype == TYPE_SRV {
                    for (_, _, port) in &s.ports {
                        out.extend(self.srv_targets(s, svc, ns, *port, &rec));
                    }
                }
                self.records(out)
            }
            [host, svc, ns, "svc"] => {
                let Some(s) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return self.negative(RCODE_NXDOMAIN);
                };
                let ips: Vec<Ipv4Addr> = s
                    .endpoints
                    .iter()
                    .filter(|(ip, h)| h.as_deref() == Some(*host) || dashed(*ip) == *host)
                    .map(|(ip, _)| *ip)
                    .collect();
                if !s.headless || ips.is_empty() {
                    return self.negative(RCODE_NXDOMAIN);
                }
                if qtype == TYPE_A || qtype == TYPE_ANY {
                    return self.records(ips.into_iter().map(|ip| rec(RData::A(ip))).collect());
                }
                self.negative(RCODE_NOERROR)
            }
            [port, proto, svc, ns, "svc"] if port.starts_with('_') && proto.starts_with('_') => {
                let Some(s) = self.services.get(&(ns.to_string(), svc.to_string())) else {
                    return self.negative(RCODE_NXDOMAIN);
                };
                let (pn, pp) = (&port[1..], &proto[1..]);
                let Some((_, _, p)) = s.ports.iter().find(|(n, pr, _)| n == pn && pr == pp) else {
                    return self.negative(RCODE_NXDOMAIN);
                };
                if qtype != TYPE_SRV && qtype != TYPE_ANY {
                    return self.negative(RCODE_NOERROR);
                }
                let out = self.srv_targets(s, svc, ns, *p, &rec);
                self.records(out)
            }
            [dashed_ip, ns, "pod"] => {
                let Some(ip) = undashed(dashed_ip) else {
                    return self.negative(RCODE_NXDOMAIN);
                };
                if !self.namespaces.contains(*ns) {
                    return self.negative(RCODE_NXDOMAIN);
                }
                if qtype == TYPE_A || qtype == TYPE_ANY {
                    return self.records(vec![rec(RData::A(ip))]);
                }
                self.negative(RCODE_NOERROR)
            }
            _ => self.negative(RCODE_NXDOMAIN),
        }
    }

    fn srv_targets(
        &self,
        s: &Svc,
        svc: &str,
        ns: &str,
        port: u16,
        rec: &dyn Fn(RData) -> Record,
    ) -> Vec<Record> {
        let base = format!("{svc}.{ns}.svc.{}", self.domain);
        if !s.headless {
            return vec![rec(RData::Srv {
                priority: 0,
                weight: 100,
                port,
                target: base,
            })];
        }
        let n = s.endpoints.len().max(1) as u16;
        s.endpoints
            .iter()
            .map(|(ip, h)| {
                rec(RData::Srv {
                    priority: 0,
                    weight: 100 / n,
                    port,
                    target: format!("{}.{base}", h.clone().unwrap_or_else(|| dashed(*ip))),
                })
            })
            .collect()
    }

    fn resolve_ptr(&self, name: &str, ip: Ipv4Addr, qtype: u16) -> Resolution {
        match self.ptr.get(&ip) {
            Some(target) if qtype == TYPE_PTR || qtype == TYPE_ANY => self.records(vec![Record {
                name: name.to_string(),
                ttl: TTL,
                data: RData::Ptr(target.clone()),
            }]),
            Some(_) => self.negative(RCODE_NOERROR),
            None if self
                .service_cidr
                .is_some_and(|(net, len)| in_net(ip, net, len)) =>
            {
                self.negative(RCODE_NXDOMAIN)
            }
            None => Resolution::Forward,
        }
    }

    /// Whether the record type is one the zone ever serves (others get
    /// NODATA for existing names).
    pub fn serves(qtype: u16) -> bool {
        matches!(
            qtype,
            TYPE_A | TYPE_SRV | TYPE_PTR | TYPE_CNAME | TYPE_SOA | TYPE_ANY
        )
    }
}

fn dashed(ip: Ipv4Addr) -> String {
    ip.to_string().replace('.', "-")
}

fn undashed(s: &str) -> Option<Ipv4Addr> {
    s.replace('-', ".").parse().ok()
}

fn in_net(ip: Ipv4Addr, net: Ipv4Addr, len: u8) -> bool {
    let mask = if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    };
    u32::from(ip) & mask == u32::from(net) & mask
}

/// `d.c.b.a.in-addr.arpa` → a.b.c.d.
fn reverse_name(name: &str) -> Option<Ipv4Addr> {
    let rest = name.strip_suffix(".in-addr.arpa")?;
    let parts: Vec<u8> = rest
        .split('.')
        .map(|p| p.parse().ok())
        .collect::<Option<Vec<u8>>>()?;
    if parts.len() != 4 {
        return None;
    }
    Some(Ipv4Addr::new(parts[3], parts[2], parts[1], parts[0]))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::message::TYPE_AAAA;

    fn zone() -> Zone {
        let services: Vec<Service> = [
            json!({"metadata": {"name": "web", "namespace": "default"},
                   "spec": {"clusterIP": "10.96.0.20", "clusterIPs": ["10.96.0.20"],
                            "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]}}),
            json!({"metadata": {"name": "db", "namespace": "prod"},
                   "spec": {"clusterIP": "None",
                            "ports": [{"name": "pg", "port": 5432}]}}),
            json!({"metadata": {"name": "ext", "namespace": "default"},
                   "spec": {"type": "ExternalName", "externalName": "example.com."}}),
        ]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        let slices: Vec<EndpointSlice> = [json!({
            "metadata": {"name": "db-x", "namespace": "prod",
                         "labels": {"kubernetes.io/service-name": "db"}},
            "addressType": "IPv4",
            "ports": [{"name": "pg", "port": 5432}],
            "endpoints": [
                {"addresses": ["10.244.1.5"], "hostname": "db-0"},
                {"addresses": ["10.244.2.6"], "hostname": "db-1"},
                {"addresses": ["10.244.2.7"], "hostname": "db-2", "conditions": {"ready": false}}]
        })]
        .into_iter()
        .map(|v| serde_json::from_value(v).unwrap())
        .collect();
        Zone::build(
            "cluster.local",
            Some(("10.96.0.0".parse().unwrap(), 12)),
            &services,
            &slices,
        )
    }

    fn data(r: Resolution) -> (u8, Vec<RData>) {
        match r {
            Resolution::Answer { rcode, answers, .. } => {
                (rcode, answers.into_iter().map(|a| a.data).collect())
            }
            Resolution::Forward => (255, vec![]),
        }
    }

    #[test]
    fn cluster_ip_services_resolve_to_their_address() {
        let z = zone();
        assert_eq!(
            data(z.resolve("web.default.svc.cluster.local", TYPE_A)),
            (0, vec![RData::A("10.96.0.20".parse().unwrap())])
        );
        // Exists, no AAAA: NODATA with the SOA.
        let r = z.resolve("web.default.svc.cluster.local", TYPE_AAAA);
        let Resolution::Answer {
            rcode,
            answers,
            authority,
        } = r
        else {
            panic!()
        };
        assert_eq!((rcode, answers.len(), authority.len()), (0, 0, 1));
        assert_eq!(
            data(z.resolve("_http._tcp.web.default.svc.cluster.local", TYPE_SRV)),
            (
                0,
                vec![RData::Srv {
                    priority: 0,
                    weight: 100,
                    port: 80,
                    target: "web.default.svc.cluster.local".into()
                }]
            )
        );
        assert_eq!(
            data(z.resolve("_dns._udp.web.default.svc.cluster.local", TYPE_SRV)).0,
            3
        );
    }

    #[test]
    fn headless_services_resolve_to_ready_endpoints_and_their_hostnames() {
        let z = zone();
        let (rcode, a) = data(z.resolve("db.prod.svc.cluster.local", TYPE_A));
        assert_eq!(rcode, 0);
        assert_eq!(
            a,
            vec![
                RData::A("10.244.1.5".parse().unwrap()),
                RData::A("10.244.2.6".parse().unwrap())
            ],
            "not-ready endpoints are left out"
        );
        assert_eq!(
            data(z.resolve("db-1.db.prod.svc.cluster.local", TYPE_A)),
            (0, vec![RData::A("10.244.2.6".parse().unwrap())])
        );
        assert_eq!(
            data(z.resolve("db-2.db.prod.svc.cluster.local", TYPE_A)).0,
            3
        );
        let (_, srv) = data(z.resolve("_pg._tcp.db.prod.svc.cluster.local", TYPE_SRV));
        assert_eq!(srv.len(), 2);
        assert!(
            matches!(&srv[0], RData::Srv { target, port: 5432, .. } if target == "db-0.db.prod.svc.cluster.local")
        );
        assert_eq!(
            data(z.resolve("5.1.244.10.in-addr.arpa", TYPE_PTR)),
            (0, vec![RData::Ptr("db-0.db.prod.svc.cluster.local".into())])
        );
    }

    #[test]
    fn external_names_pods_ptr_and_unknown_names() {
        let z = zone();
        assert_eq!(
            data(z.resolve("ext.default.svc.cluster.local", TYPE_A)),
            (0, vec![RData::Cname("example.com".into())])
        );
        assert_eq!(
            data(z.resolve("10-244-1-9.default.pod.cluster.local", TYPE_A)),
            (0, vec![RData::A("10.244.1.9".parse().unwrap())])
        );
        assert_eq!(
            data(z.resolve("20.0.96.10.in-addr.arpa", TYPE_PTR)),
            (0, vec![RData::Ptr("web.default.svc.cluster.local".into())])
        );
        assert_eq!(
            data(z.resolve("99.0.96.10.in-addr.arpa", TYPE_PTR)).0,
            3,
            "in the service network"
        );
        assert_eq!(
            z.resolve("1.1.168.192.in-addr.arpa", TYPE_PTR),
            Resolution::Forward
        );
        assert_eq!(
            data(z.resolve("nope.default.svc.cluster.local", TYPE_A)).0,
            3
        );
        assert_eq!(data(z.resolve("web.nope.svc.cluster.local", TYPE_A)).0, 3);
        assert_eq!(
            data(z.resolve("default.svc.cluster.local", TYPE_A)).0,
            0,
            "a namespace exists"
        );
        assert_eq!(data(z.resolve("a.b.c.d.e.f.cluster.local", TYPE_A)).0, 3);
        assert_eq!(z.resolve("example.com", TYPE_A), Resolution::Forward);
        assert_eq!(z.resolve("notcluster.local", TYPE_A), Resolution::Forward);
        // Search-path expansions of an outside name stay in the zone: NXDOMAIN.
        assert_eq!(
            data(z.resolve("example.com.default.svc.cluster.local", TYPE_A)).0,
            3
        );
    }
}
