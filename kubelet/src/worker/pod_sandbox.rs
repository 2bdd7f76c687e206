//! A pod's sandbox: its namespaces, its network through the CNI plugins,
//! its `/etc/hosts`, `resolv.conf` and hostname; and taking all of it down
//! again, also for pods deleted while the agent was away.

use std::{
    collections::{BTreeMap, HashSet},
    path::Path,
    sync::Arc,
};

use k8s_openapi::api::core::v1::Pod;
use serde_json::{Value, json};

use super::{
    super::{L_POD_UID, Shared, logs, sandbox, volumes},
    Worker, id_prefix, pod_key, task,
};

impl Worker {
    pub(super) async fn create_sandbox(&mut self, pod: &Pod) -> Result<(), String> {
        let cfg = &self.shared.cfg;
        let host_network = Self::host_network(pod);
        let name = pod.metadata.name.clone().unwrap_or_default();
        let ns_name = pod.metadata.namespace.clone().unwrap_or_default();
        let spec = pod.spec.clone().unwrap_or_default();
        let hostname = spec.hostname.clone().unwrap_or_else(|| name.clone());
        volumes::ensure_pod_dir(&self.pod_dir).map_err(|e| e.to_string())?;
        let ns_dir = self.ns_dir.clone();
        let h = hostname.clone();
        // The pause process is this binary (the kubelet's log driver).
        let pause = Self::shared_pid(pod).then(|| cfg.log_driver.clone());
        let namespaces = tokio::task::spawn_blocking(move || {
            sandbox::create_namespaces(&ns_dir, &h, host_network, pause.as_deref())
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let ip;
        if let Some(net) = &namespaces.net {
            let nl = rudder_netlink::Netlink::in_netns(net).map_err(|e| e.to_string())?;
            if let Ok(Some(lo)) = nl.link("lo").await {
                nl.set_up(lo.index).await.map_err(|e| e.to_string())?;
            }
            let list =
                rudder_cni::runtime::load_conflist(&cfg.cni_conf_dir).map_err(|e| e.to_string())?;
            let rt = rudder_cni::runtime::Runtime {
                bin_dirs: cfg.cni_bin_dirs.clone(),
                cache_dir: cfg.cni_cache_dir.clone(),
            };
            let rc = self.runtime_conf(pod, net);
            let result = tokio::task::spawn_blocking(move || rt.add(&list, &rc))
                .await
                .map_err(|e| e.to_string())?
                .map_err(|e| format!("plugin type=\"{}\" failed (add): {e}", "cni"))?;
            ip = result["ips"]
                .as_array()
                .and_then(|ips| ips.first())
                .and_then(|i| i["address"].as_str())
                .and_then(|a| a.split('/').next())
                .map(str::to_string);
            if ip.is_none() {
                return Err(format!("the CNI result has no IP address: {result}"));
            }
            if let Some(proxy) = &cfg.proxy {
                proxy.now().await;
            }
        } else {
            ip = Some(cfg.node_ip.clone());
        }
        // /etc/hosts, /etc/resolv.conf, /etc/hostname.
        let aliases: Vec<(String, Vec<String>)> = spec
            .host_aliases
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|a| (a.ip, a.hostnames.unwrap_or_default()))
            .collect();
        let fqdn = spec
            .subdomain
            .as_ref()
            .map(|sd| format!("{hostname}.{sd}.{ns_name}.svc.{}", cfg.cluster_domain));
        let hosts = if host_network {
            std::fs::read_to_string("/etc/hosts").unwrap_or_default()
        } else {
            sandbox::hosts_file(ip.as_deref(), &hostname, fqdn.as_deref(), &aliases)
        };
        let dns = spec.dns_config.clone().unwrap_or_default();
        let resolv = sandbox::resolv_conf(&sandbox::DnsInputs {
            policy: spec.dns_policy.clone().unwrap_or_default(),
            host_network,
            cluster_dns: cfg.cluster_dns.clone(),
            cluster_domain: cfg.cluster_domain.clone(),
            namespace: ns_name,
            host_resolv: std::fs::read_to_string(&cfg.resolv_conf).unwrap_or_default(),
            config_nameservers: dns.nameservers.unwrap_or_default(),
            config_searches: dns.searches.unwrap_or_default(),
            config_options: dns
                .options
                .unwrap_or_default()
                .into_iter()
                .filter_map(|o| Some((o.name?, o.value)))
                .collect(),
        });
        let etc = self.pod_dir.join("etc");
        std::fs::create_dir_all(&etc).map_err(|e| e.to_string())?;
        std::fs::write(etc.join("hosts"), hosts).map_err(|e| e.to_string())?;
        std::fs::write(etc.join("resolv.conf"), resolv).map_err(|e| e.to_string())?;
        std::fs::write(etc.join("hostname"), format!("{hostname}\n")).map_err(|e| e.to_string())?;
        std::fs::write(
            self.pod_dir.join("sandbox.json"),
            json!({"ip": ip}).to_string(),
        )
        .map_err(|e| e.to_string())?;
        Ok(())
    }

    fn runtime_conf(&self, pod: &Pod, net: &Path) -> rudder_cni::runtime::RuntimeConf {
        let mut port_mappings = vec![];
        for c in pod
            .spec
            .as_ref()
            .map(|s| s.containers.clone())
            .unwrap_or_default()
        {
            for p in c.ports.unwrap_or_default() {
                if let Some(hp) = p.host_port.filter(|h| *h > 0) {
                    port_mappings.push(json!({
                        "hostPort": hp, "containerPort": p.container_port,
                        "protocol": p.protocol.unwrap_or_else(|| "TCP".into()).to_lowercase(),
                        "hostIP": p.host_ip.unwrap_or_default(),
                    }));
                }
            }
        }
        let mut caps = serde_json::Map::new();
        if !port_mappings.is_empty() {
            caps.insert("portMappings".into(), Value::Array(port_mappings));
        }
        rudder_cni::runtime::RuntimeConf {
            container_id: id_prefix(&self.uid),
            netns: net.display().to_string(),
            ifname: "eth0".into(),
            args: vec![
                (
                    "K8S_POD_NAMESPACE".into(),
                    pod.metadata.namespace.clone().unwrap_or_default(),
                ),
                (
                    "K8S_POD_NAME".into(),
                    pod.metadata.name.clone().unwrap_or_default(),
                ),
                ("K8S_POD_INFRA_CONTAINER_ID".into(), id_prefix(&self.uid)),
                ("K8S_POD_UID".into(), self.uid.clone()),
            ],
            capability_args: caps,
        }
    }

    pub(super) async fn teardown_sandbox(&mut self, pod: &Pod) {
        let cfg = self.shared.cfg.clone();
        let cd = self.shared.runtime.clone();
        let removing = pod.metadata.deletion_timestamp.is_some() || self.gone;
        // Containers and their snapshots (a finished pod keeps its exited
        // containers, for their status and logs, until it is deleted).
        let filter = format!("labels.\"{L_POD_UID}\"==\"{}\"", self.uid);
        let containers = if removing {
            cd.container_list(&filter).await.unwrap_or_default()
        } else {
            vec![]
        };
        for (id, _) in containers {
            task::remove(cd.as_ref(), &id).await;
        }
        let host_network = Self::host_network(pod);
        let net = sandbox::namespace_paths(&self.ns_dir, host_network).net;
        if let Some(net) = net
            && let Ok(list) = rudder_cni::runtime::load_conflist(&cfg.cni_conf_dir)
        {
            let rt = rudder_cni::runtime::Runtime {
                bin_dirs: cfg.cni_bin_dirs.clone(),
                cache_dir: cfg.cni_cache_dir.clone(),
            };
            let rc = self.runtime_conf(pod, &net);
            let r = tokio::task::spawn_blocking(move || rt.del(&list, &rc)).await;
            if let Ok(Err(e)) = r {
                tracing::warn!(pod = %pod_key(pod), error = %e, "CNI DEL");
            }
        }
        sandbox::remove_namespaces(&self.ns_dir);
        let _ = std::fs::remove_dir_all(&self.ns_dir);
        let _ = std::fs::remove_file(self.pod_dir.join("sandbox.json"));
        self.shared.cgroups.remove_pod(&self.uid).await;
        if removing {
            volumes::unmount_all(&self.pod_dir);
            if let Some(se) = &self.shared.selinux {
                se.release(&self.pod_dir);
            }
            let _ = std::fs::remove_dir_all(&self.pod_dir);
            self.volumes = None;
            let log_dir = logs::pod_log_dir(
                &cfg.pod_log_dir,
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.name.as_deref().unwrap_or_default(),
                &self.uid,
            );
            let _ = std::fs::remove_dir_all(log_dir);
            logs::remove_dangling_links(&cfg.pod_log_dir);
        }
    }
}

/// Cleans up what containerd and the node hold for pods that no longer
/// exist in the apiserver (deleted while the agent was down).
pub(crate) async fn reap_orphans(shared: &Arc<Shared>, live: &HashSet<String>) {
    let cd = &shared.runtime;
    let Ok(all) = cd.container_list("").await else {
        return;
    };
    let mut orphans: BTreeMap<String, ()> = BTreeMap::new();
    for (id, labels) in all {
        let Some(uid) = labels.get(L_POD_UID) else {
            continue;
        };
        if live.contains(uid) {
            continue;
        }
        task::remove(cd.as_ref(), &id).await;
        orphans.insert(uid.clone(), ());
    }
    // Sandboxes of vanished pods (by directory).
    let pods_dir = shared.cfg.root_dir.join("pods");
    for e in std::fs::read_dir(&pods_dir).into_iter().flatten().flatten() {
        let uid = e.file_name().to_string_lossy().into_owned();
        if !live.contains(&uid) {
            orphans.insert(uid, ());
        }
    }
    for uid in orphans.keys() {
        let ns_dir = shared.cfg.run_dir.join("pods").join(uid);
        let net = ns_dir.join("net");
        if net.exists()
            && let Ok(list) = rudder_cni::runtime::load_conflist(&shared.cfg.cni_conf_dir)
        {
            let rt = rudder_cni::runtime::Runtime {
                bin_dirs: shared.cfg.cni_bin_dirs.clone(),
                cache_dir: shared.cfg.cni_cache_dir.clone(),
            };
            let rc = rudder_cni::runtime::RuntimeConf {
                container_id: id_prefix(uid),
                netns: net.display().to_string(),
                ifname: "eth0".into(),
                args: vec![("K8S_POD_UID".into(), uid.clone())],
                capability_args: serde_json::Map::new(),
            };
            let _ = tokio::task::spawn_blocking(move || rt.del(&list, &rc)).await;
        }
        sandbox::remove_namespaces(&ns_dir);
        let _ = std::fs::remove_dir_all(&ns_dir);
        volumes::unmount_all(&pods_dir.join(uid));
        if let Some(se) = &shared.selinux {
            se.release(&pods_dir.join(uid));
        }
        let _ = std::fs::remove_dir_all(pods_dir.join(uid));
        shared.cgroups.remove_pod(uid).await;
        tracing::info!(pod_uid = %uid, "cleaned up a pod deleted while the agent was away");
    }
    logs::remove_dangling_links(&shared.cfg.pod_log_dir);
}
