//! The node's iptables, in whichever flavours it has (legacy and nft: a
//! node may have rules in both): whole tables saved, filtered by a pure
//! function, and restored (each table replaced atomically, as the
//! iptables wrappers do). Used to take a node over from kube-proxy and
//! flannel (`takeover.rs`) and for the network daemon's FORWARD accept
//! rules (`network/forward.rs`).
//!
//! Written here rather than through an iptables crate: the existing crates
//! drive one flavour's binary rule by rule, where a whole-table restore is
//! what keeps a change atomic.

use std::{
    io::Write as _,
    process::{Command, Stdio},
};

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{command} failed: {stderr}")]
    Command { command: String, stderr: String },
}

/// `iptables-save` output with the chains whose names start with one of
/// `prefixes` removed: their declarations, their rules, and every rule that
/// jumps or goes to one of them. `None` when nothing matched (nothing to
/// restore).
pub fn strip_chains(save: &str, prefixes: &[&str]) -> Option<String> {
    let owned = |chain: &str| prefixes.iter().any(|p| chain.starts_with(p));
    let mut out = String::with_capacity(save.len());
    let mut changed = false;
    for line in save.lines() {
        let drop = if let Some(decl) = line.strip_prefix(':') {
            owned(decl.split_whitespace().next().unwrap_or(""))
        } else if line.starts_with("-A ") || line.starts_with("-I ") {
            let words: Vec<&str> = line.split_whitespace().collect();
            owned(words.get(1).copied().unwrap_or(""))
                || words
                    .windows(2)
                    .any(|w| matches!(w[0], "-j" | "--jump" | "-g" | "--goto") && owned(w[1]))
        } else {
            false
        };
        if drop {
            changed = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    changed.then_some(out)
}

/// The iptables flavours this node has: `iptables-legacy` and
/// `iptables-nft` where both are installed, else plain `iptables`.
pub fn flavours() -> Vec<&'static str> {
    // Found on PATH (old releases, CentOS 7's 1.4, know no `--version`).
    let have = |b: &str| {
        let name = format!("{b}-save");
        std::env::var_os("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|d| {
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::metadata(d.join(&name))
                    .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            })
        })
    };
    let both: Vec<&str> = ["iptables-legacy", "iptables-nft"]
        .into_iter()
        .filter(|b| have(b))
        .collect();
    if both.is_empty() && have("iptables") {
        vec!["iptables"]
    } else {
        both
    }
}

/// Runs `cmd` (with `input` on its stdin); its stdout, or its stderr as
/// the error.
pub fn run(cmd: &mut Command, input: Option<&str>) -> Result<String, IptablesError> {
    let name = format!("{cmd:?}");
    let mut child = cmd
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| IptablesError::Io {
            what: format!("running {name}"),
            source,
        })?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin
            .write_all(text.as_bytes())
            .map_err(|source| IptablesError::Io {
                what: format!("writing to {name}"),
                source,
            })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| IptablesError::Io {
            what: format!("waiting for {name}"),
            source,
        })?;
    if !out.status.success() {
        return Err(IptablesError::Command {
            command: name,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `<bin>-save` of every table.
pub fn save(bin: &str) -> Result<String, IptablesError> {
    run(&mut Command::new(format!("{bin}-save")), None)
}

/// `<bin>-restore` of `text` (its tables replaced, or only the chains it
/// names with `noflush`).
pub fn restore(bin: &str, text: &str, noflush: bool) -> Result<(), IptablesError> {
    let mut cmd = Command::new(format!("{bin}-restore"));
    if noflush {
        cmd.arg("--noflush");
    }
    run(&mut cmd, Some(text)).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBE_PROXY_CHAINS: &str = "KUBE-";
    const FLANNEL_CHAINS: &str = "FLANNEL-";

    /// A node's `iptables-save` as kube-proxy (iptables mode), flannel and
    /// docker leave it (abridged from real output).
    const SAVE: &str = include_str!("testdata/kube-proxy-flannel-docker.iptables-save");

    #[test]
    fn kube_proxy_and_flannel_chains_go_and_the_rest_stays() {
        let out = strip_chains(SAVE, &[KUBE_PROXY_CHAINS, FLANNEL_CHAINS]).unwrap();
        assert!(!out.contains("KUBE-") && !out.contains("FLANNEL-"), "{out}");
        for kept in [
            "*nat",
            ":DOCKER - [0:0]",
            "-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER",
            "-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE",
            ":FORWARD DROP [0:0]",
            "-A FORWARD -o docker0 -j ACCEPT",
        ] {
            assert!(out.lines().any(|l| l == kept), "lost {kept:?}:\n{out}");
        }
        assert_eq!(out.matches("COMMIT").count(), 2);
    }

    #[test]
    fn only_the_named_owner_is_removed_and_nothing_is_none() {
        let out = strip_chains(SAVE, &[KUBE_PROXY_CHAINS]).unwrap();
        assert!(!out.contains("KUBE-"));
        assert!(out.contains(":FLANNEL-FWD - [0:0]") && out.contains("-j FLANNEL-POSTRTG"));
        assert_eq!(strip_chains(&out, &[KUBE_PROXY_CHAINS]), None);
        // A chain merely named alike in a comment or a match is not a jump.
        let other = "*filter\n:INPUT ACCEPT [0:0]\n-A INPUT -m comment --comment \"-j KUBE-X\" -j ACCEPT\nCOMMIT\n";
        assert_eq!(strip_chains(other, &[KUBE_PROXY_CHAINS]), None);
    }
}
