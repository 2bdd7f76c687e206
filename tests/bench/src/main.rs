//! `rudder-bench`: the project's benchmarks, one subcommand each
//! (`dataplane`, `network`, `control`, `scheduler`, `kubelet`), and what
//! they share: the hardware line and the `figure <name> <value>` lines
//! every benchmark ends with.

mod control;
mod dataplane;
mod kubelet;
mod network;
mod nodeport;
mod scheduler;

use anyhow::bail;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let rest = args.get(1..).unwrap_or_default();
    match args.first().map(String::as_str) {
        Some("dataplane") => dataplane::run(rest),
        Some("network") => network::run(rest),
        Some("control") => control::run(rest),
        Some("scheduler") => scheduler::run(rest),
        Some("kubelet") => kubelet::run(rest),
        Some("nodeport") => nodeport::run(rest),
        _ => bail!(
            "usage: rudder-bench dataplane [--scales 10,1000,10000,100000] [--seconds 2] [--modes ebpf,iptables,nftables] [--timeout 600] [--nft-budget 300] [--program-only]\n       rudder-bench network [--cni-rounds 200] [--seconds 3]\n       rudder-bench control [--seconds 5] [--clients 16] [--value-bytes 1024]\n       rudder-bench scheduler [--nodes 1000,5000] [--pods 10000] [--clients 32]\n       rudder-bench kubelet\n       rudder-bench nodeport [--seconds 3] [--clients 4] [--rounds 3]"
        ),
    }
}

/// One headline figure, as every benchmark ends: `figure <name> <value>`.
pub(crate) fn figure(name: &str, value: impl std::fmt::Display) {
    println!("figure {name} {value}");
}

/// The collection's current resourceVersion, to watch from.
pub(crate) async fn resource_version<K>(api: &kube::Api<K>) -> anyhow::Result<String>
where
    K: kube::Resource + Clone + k8s_openapi::serde::de::DeserializeOwned + std::fmt::Debug,
{
    Ok(api
        .list_metadata(&kube::api::ListParams::default().limit(1))
        .await?
        .metadata
        .resource_version
        .unwrap_or_default())
}

/// A process's resident set, from `/proc/<pid>/status`.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    use anyhow::Context as _;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS in /proc/<pid>/status")
}

/// CPU time (user + system) process `pid` has used so far, in seconds.
pub(crate) fn cpu_seconds(pid: u32) -> anyhow::Result<f64> {
    use anyhow::Context as _;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // After the command name, which may hold spaces, in parentheses.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("/proc/<pid>/stat without a command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime: fields 14 and 15 of stat(5), 12 and 13 here.
    let ticks: u64 = fields
        .get(11..13)
        .context("/proc/<pid>/stat too short")?
        .iter()
        .map(|f| f.parse::<u64>())
        .sum::<Result<_, _>>()?;
    // SAFETY: sysconf reads a configuration value; no memory is touched.
    let per_s = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    #[expect(clippy::cast_precision_loss, reason = "clock ticks")]
    Ok(ticks as f64 / per_s.max(1) as f64)
}

pub(crate) fn hardware() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().next().map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<u64>()
                    .unwrap_or(0)
                    / 1024
                    / 1024
            })
        })
        .unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    format!(
        "hardware: {cpu}, {cores} cores, {mem} GiB, kernel {}",
        kernel.trim()
    )
}
