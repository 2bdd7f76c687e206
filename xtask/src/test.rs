//! `cargo xtask test`: the whole suite, with one summary line at the end.

use std::{
    io::{BufRead as _, BufReader},
    path::Path,
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use crate::{agent_image, ebpf, images, registry, util};

/// Totals over every test binary.
#[derive(Debug, Default, PartialEq, Eq)]
struct Totals {
    passed: u64,
    failed: u64,
    ignored: u64,
}

impl Totals {
    /// Adds a libtest summary line such as
    /// `test result: ok. 5 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; …`.
    fn add_line(&mut self, line: &str) -> bool {
        let Some(rest) = line.trim().strip_prefix("test result: ") else {
            return false;
        };
        for part in rest.split(';') {
            let mut words = part.split_whitespace().rev();
            let (Some(what), Some(n)) = (words.next(), words.next()) else {
                continue;
            };
            let Ok(n) = n.parse::<u64>() else { continue };
            match what {
                "passed" => self.passed += n,
                "failed" => self.failed += n,
                "ignored" => self.ignored += n,
                _ => {}
            }
        }
        true
    }
}

pub(crate) fn run(root: &Path, lint: bool, filter: Option<&str>) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let skip_privileged = std::env::var_os("RUDDER_SKIP_PRIVILEGED").is_some_and(|v| v == "1");
    if !util::is_root() && !skip_privileged {
        println!(
            "warning: not running as root: privileged tests will fail. Run as root, or set RUDDER_SKIP_PRIVILEGED=1 to report them as ignored."
        );
    }
    if lint {
        util::step("cargo fmt --check");
        util::run(Command::new(&cargo).args(["fmt", "--all", "--check"]))?;
        util::run(Command::new(&cargo).args([
            "fmt",
            "--manifest-path",
            "dataplane-ebpf/programs/Cargo.toml",
            "--check",
        ]))?;
        util::step("cargo clippy --workspace --all-targets -D warnings");
        util::run(Command::new(&cargo).args([
            "clippy",
            "--quiet",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        ebpf::clippy(root)?;
    }
    ebpf::build(root, &root.join("target/bpf"))?;
    let started_registry = images::run(root, registry::DEFAULT_ADDR)?;
    // The DaemonSet's image, which `tests/tests/agent_image.rs` runs.
    agent_image::agent_image(root, registry::DEFAULT_ADDR)?;

    // The tests run the workspace's binaries (the CNI plugin, `rudder`).
    util::step("cargo build --workspace --bins");
    util::run(Command::new(&cargo).args(["build", "--workspace", "--bins"]))?;

    util::step("cargo test --workspace (unit, privileged integration, end-to-end)");
    let mut cmd = Command::new(&cargo);
    cmd.args(["test", "--workspace", "--no-fail-fast"]);
    if let Some(f) = filter {
        cmd.args(["--", f]);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run cargo test")?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut totals = Totals::default();
    let mut binaries = 0;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        println!("{line}");
        if totals.add_line(&line) {
            binaries += 1;
        }
    }
    let status = child.wait()?;
    if started_registry {
        registry::stop(root)?;
    }
    println!(
        "\nrudder: {} passed, {} failed, {} skipped ({binaries} test binaries)",
        totals.passed, totals.failed, totals.ignored
    );
    if !status.success() || totals.failed > 0 {
        bail!("the test suite failed ({status})");
    }
    if binaries == 0 {
        bail!("no test binary ran");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_libtest_summaries() {
        let mut t = Totals::default();
        assert!(t.add_line(
            "test result: ok. 5 passed; 0 failed; 2 ignored; 0 measured; 0 filtered out; finished in 0.01s"
        ));
        assert!(t.add_line(
            "test result: FAILED. 1 passed; 3 failed; 0 ignored; 0 measured; 0 filtered out"
        ));
        assert!(!t.add_line("running 3 tests"));
        assert_eq!(
            t,
            Totals {
                passed: 6,
                failed: 3,
                ignored: 2
            }
        );
    }
}
