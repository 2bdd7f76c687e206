//! Resource usage from cgroups, served as the kubelet's resource metrics
//! (`/metrics/resource`, the Prometheus text metrics-server reads): the
//! node's CPU time and working set, and each running container's and pod's.
//! cgroup v1 (`cpuacct.usage`, `memory.usage_in_bytes`) and v2 (`cpu.stat`,
//! `memory.current`); the working set is usage minus inactive file pages,
//! as cAdvisor computes it.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use super::{L_CONTAINER, L_POD_NAME, L_POD_NS, L_POD_UID, Shared};
use rudder_runtime::containerd::TaskState;

/// CPU time (seconds) and working set (bytes) at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub working_set: u64,
}

/// One running container's usage.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerUsage {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub usage: Usage,
}

/// A value of a `key value` line (memory.stat, cpu.stat).
pub fn stat_value(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// The node's CPU time from `/proc/stat` (all but idle and iowait), in
/// seconds (USER_HZ is 100 on Linux).
pub fn node_cpu_seconds(proc_stat: &str) -> Option<f64> {
    let line = proc_stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|n| n.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let busy: u64 = v
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4 && *i < 8)
        .map(|(_, n)| n)
        .sum();
    Some(busy as f64 / 100.0)
}

/// The node's working set from `/proc/meminfo`: total minus available.
pub fn node_working_set(meminfo: &str) -> Option<u64> {
    let kb = |key: &str| {
        meminfo.lines().find_map(|l| {
            l.strip_prefix(key)?
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
    };
    Some(kb("MemTotal:")?.saturating_sub(kb("MemAvailable:")?) * 1024)
}

/// A cgroup's usage (`rel`: its path below the hierarchy root), from
/// whichever of v2 and v1 has it.
pub fn cgroup_usage(root: &Path, rel: &str) -> Option<Usage> {
    let rel = rel.trim_start_matches('/');
    let read = |p: PathBuf| std::fs::read_to_string(p).ok();
    // v2 (unified at the root, or at /unified on hybrid hosts, where it
    // carries no controllers but may still be where runc put things).
    if root.join("cgroup.controllers").exists() {
        let dir = root.join(rel);
        let cpu = stat_value(&read(dir.join("cpu.stat"))?, "usage_usec")?;
        let current: u64 = read(dir.join("memory.current"))?.trim().parse().ok()?;
        let inactive = read(dir.join("memory.stat"))
            .and_then(|s| stat_value(&s, "inactive_file"))
            .unwrap_or(0);
        return Some(Usage {
            cpu_seconds: cpu as f64 / 1e6,
            working_set: current.saturating_sub(inactive),
        });
    }
    let cpu_dir = ["cpuacct", "cpu,cpuacct", "cpu"]
        .iter()
        .map(|h| root.join(h).join(rel))
        .find(|d| d.join("cpuacct.usage").exists())?;
    let cpu_ns: u64 = read(cpu_dir.join("cpuacct.usage"))?.trim().parse().ok()?;
    let mem = root.join("memory").join(rel);
    let usage: u64 = read(mem.join("memory.usage_in_bytes"))?
        .trim()
        .parse()
        .ok()?;
    let inactive = read(mem.join("memory.stat"))
        .and_then(|s| stat_value(&s, "total_inactive_file"))
        .unwrap_or(0);
    Some(Usage {
        cpu_seconds: cpu_ns as f64 / 1e9,
        working_set: usage.saturating_sub(inactive),
    })
}

/// The running containers' usage.
pub(crate) async fn containers(shared: &Shared) -> Vec<ContainerUsage> {
    let cd = &shared.runtime;
    let Ok(all) = cd.container_list("").await else {
        return vec![];
    };
    let root = Path::new("/sys/fs/cgroup");
    let mut out = vec![];
    for (id, labels) in all {
        let (Some(ns), Some(pod), Some(name), Some(uid)) = (
            labels.get(L_POD_NS),
            labels.get(L_POD_NAME),
            labels.get(L_CONTAINER),
            labels.get(L_POD_UID),
        ) else {
            continue;
        };
        if !matches!(cd.task_get(&id).await, Ok(Some(t)) if t.state == TaskState::Running) {
            continue;
        }
        let Some(rel) = shared.cgroups.find_container_dir(uid, &id) else {
            continue;
        };
        if let Some(usage) = cgroup_usage(root, &rel) {
            out.push(ContainerUsage {
                namespace: ns.clone(),
                pod: pod.clone(),
                container: name.clone(),
                usage,
            });
        }
    }
    out
}

/// `/metrics/resource` text: node, pod and container series with the
/// scrape's timestamp (milliseconds), as the kubelet's.
pub fn render(node: Option<Usage>, containers: &[ContainerUsage], now_ms: u64) -> String {
    let mut out = String::new();
    family(
        &mut out,
        "node_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the node in core-seconds",
        "counter",
    );
    if let Some(n) = node {
        let _ = writeln!(
            out,
            "node_cpu_usage_seconds_total {} {now_ms}",
            n.cpu_seconds
        );
    }
    family(
        &mut out,
        "node_memory_working_set_bytes",
        "Current working set of the node in bytes",
        "gauge",
    );
    if let Some(n) = node {
        let _ = writeln!(
            out,
            "node_memory_working_set_bytes {} {now_ms}",
            n.working_set
        );
    }
    let label = |c: &ContainerUsage| {
        format!(
            "container=\"{}\",namespace=\"{}\",pod=\"{}\"",
            c.container, c.namespace, c.pod
        )
    };
    family(
        &mut out,
        "container_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the container in core-seconds",
        "counter",
    );
    for c in containers {
        let _ = writeln!(
            out,
            "container_cpu_usage_seconds_total{{{}}} {} {now_ms}",
            label(c),
            c.usage.cpu_seconds
        );
    }
    family(
        &mut out,
        "container_memory_working_set_bytes",
        "Current working set of the container in bytes",
        "gauge",
    );
    for c in containers {
        let _ = writeln!(
            out,
            "container_memory_working_set_bytes{{{}}} {} {now_ms}",
            label(c),
            c.usage.working_set
        );
    }
    // Pods: the sums of their containers.
    let mut pods: std::collections::BTreeMap<(String, String), Usage> = Default::default();
    for c in containers {
        let e = pods
            .entry((c.namespace.clone(), c.pod.clone()))
            .or_insert(Usage {
                cpu_seconds: 0.0,
                working_set: 0,
            });
        e.cpu_seconds += c.usage.cpu_seconds;
        e.working_set += c.usage.working_set;
    }
    family(
        &mut out,
        "pod_cpu_usage_seconds_total",
        "Cumulative cpu time consumed by the pod in core-seconds",
        "counter",
    );
    for ((ns, pod), u) in &pods {
        let _ = writeln!(
            out,
            "pod_cpu_usage_seconds_total{{namespace=\"{ns}\",pod=\"{pod}\"}} {} {now_ms}",
            u.cpu_seconds
        );
    }
    family(
        &mut out,
        "pod_memory_working_set_bytes",
        "Current working set of the pod in bytes",
        "gauge",
    );
    for ((ns, pod), u) in &pods {
        let _ = writeln!(
            out,
            "pod_memory_working_set_bytes{{namespace=\"{ns}\",pod=\"{pod}\"}} {} {now_ms}",
            u.working_set
        );
    }
    family(
        &mut out,
        "scrape_error",
        "1 if there was an error while getting container metrics, 0 otherwise",
        "gauge",
    );
    let _ = writeln!(out, "scrape_error {}", u8::from(node.is_none()));
    out
}

fn family(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// The node's usage now.
pub fn node_usage() -> Option<Usage> {
    Some(Usage {
        cpu_seconds: node_cpu_seconds(&std::fs::read_to_string("/proc/stat").ok()?)?,
        working_set: node_working_set(&std::fs::read_to_string("/proc/meminfo").ok()?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_and_cgroup_files_are_read() {
        let stat = "cpu  100 20 30 1000 50 5 5 10 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n";
        assert_eq!(node_cpu_seconds(stat), Some(1.7));
        let meminfo =
            "MemTotal:       16000 kB\nMemFree:         1000 kB\nMemAvailable:   12000 kB\n";
        assert_eq!(node_working_set(meminfo), Some(4000 * 1024));
        assert_eq!(
            stat_value("usage_usec 1234\nuser_usec 10\n", "usage_usec"),
            Some(1234)
        );
        assert_eq!(stat_value("total_inactive_file 5\n", "inactive_file"), None);
    }

    #[test]
    fn cgroup_v1_and_v2_layouts() {
        let root = std::env::temp_dir().join(format!("rudder-stats-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        // v1
        let cpu = root.join("v1/cpu,cpuacct/k/pod1/c");
        let mem = root.join("v1/memory/k/pod1/c");
        std::fs::create_dir_all(&cpu).unwrap();
        std::fs::create_dir_all(&mem).unwrap();
        std::fs::write(cpu.join("cpuacct.usage"), "2500000000\n").unwrap();
        std::fs::write(mem.join("memory.usage_in_bytes"), "1000000\n").unwrap();
        std::fs::write(
            mem.join("memory.stat"),
            "cache 5\ntotal_inactive_file 200000\n",
        )
        .unwrap();
        let u = cgroup_usage(&root.join("v1"), "/k/pod1/c").unwrap();
        assert_eq!(
            u,
            Usage {
                cpu_seconds: 2.5,
                working_set: 800_000
            }
        );
        // v2
        let d = root.join("v2/k/pod1/c");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(root.join("v2/cgroup.controllers"), "cpu memory\n").unwrap();
        std::fs::write(d.join("cpu.stat"), "usage_usec 1500000\nuser_usec 1\n").unwrap();
        std::fs::write(d.join("memory.current"), "4096\n").unwrap();
        std::fs::write(d.join("memory.stat"), "anon 1\ninactive_file 1024\n").unwrap();
        let u = cgroup_usage(&root.join("v2"), "k/pod1/c").unwrap();
        assert_eq!(
            u,
            Usage {
                cpu_seconds: 1.5,
                working_set: 3072
            }
        );
        assert!(cgroup_usage(&root.join("v2"), "k/nope").is_none());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn renders_the_kubelets_series() {
        let c = ContainerUsage {
            namespace: "default".into(),
            pod: "web".into(),
            container: "c".into(),
            usage: Usage {
                cpu_seconds: 1.25,
                working_set: 4096,
            },
        };
        let text = render(
            Some(Usage {
                cpu_seconds: 10.0,
                working_set: 1 << 20,
            }),
            &[
                c.clone(),
                ContainerUsage {
                    container: "d".into(),
                    ..c
                },
            ],
            1000,
        );
        assert!(
            text.contains("node_cpu_usage_seconds_total 10 1000"),
            "{text}"
        );
        assert!(text.contains(
            "container_cpu_usage_seconds_total{container=\"c\",namespace=\"default\",pod=\"web\"} 1.25 1000"
        ));
        assert!(
            text.contains(
                "pod_memory_working_set_bytes{namespace=\"default\",pod=\"web\"} 8192 1000"
            )
        );
        assert!(text.contains("scrape_error 0"));
    }
}
