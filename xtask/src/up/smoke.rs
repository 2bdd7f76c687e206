//! `cargo xtask smoke`: the smoke checks (`tests/smoke`, one named test per
//! check: `cargo test -p rudder-smoke --test smoke -- --list`) against the
//! cluster `up` started; then, where the agent is a DaemonSet, its own
//! rolling update under load and, with `--remove-agent`, its removal
//! (`up/daemonset.rs`), which need the nodes' layout that only `up` knows.

use super::*;

pub(crate) fn smoke(root: &Path, data_dir: PathBuf, remove_agent: bool) -> anyhow::Result<()> {
    let l = Layout::new(data_dir, 0);
    let kubeconfig = l.data.join("admin-local.kubeconfig");
    if !kubeconfig.exists() {
        bail!(
            "no cluster: run `cargo xtask up` first ({} is missing)",
            kubeconfig.display()
        );
    }
    if remove_agent && !l.daemonset {
        bail!("--remove-agent: this cluster's agent is not a DaemonSet (`up --agent-daemonset`)");
    }
    util::step("smoke checks: cargo test -p rudder-smoke --test smoke");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    util::run(
        Command::new(cargo)
            .current_dir(root)
            .args(["test", "-p", "rudder-smoke", "--test", "smoke"])
            .env("RUDDER_SMOKE_KUBECONFIG", &kubeconfig)
            .env("RUDDER_SMOKE_RUN_DIR", &l.run),
    )
    .context("the smoke checks failed (the failing check is named above)")?;
    if l.daemonset {
        let kc = Kubectl::new(kubeconfig);
        let nodes = nodes_of(&l);
        daemonset::rolling_update(&kc, &nodes)
            .context("smoke check `agent-rolling-update` failed")?;
        if remove_agent {
            let rudder = util::target_dir(root).join("release/rudder");
            daemonset::remove_agent(&rudder, &kc, &nodes)
                .context("smoke check `agent-removal` failed")?;
        }
    }
    Ok(())
}
