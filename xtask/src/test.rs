//! `cargo xtask test`: the whole suite, with one summary line at the end.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Instant,
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

    util::step("cargo test --workspace --no-run (unit, privileged integration, end-to-end)");
    let mut binaries = test_binaries(&cargo)?;
    // The documentation's examples, as `cargo test` runs them last.
    binaries.push(TestBinary {
        name: "doctests".into(),
        executable: PathBuf::from(&cargo),
        args: vec!["test".into(), "--workspace".into(), "--doc".into()],
        dir: root.to_path_buf(),
        package: String::new(),
    });
    binaries.sort_by_key(|b| std::cmp::Reverse(expected_secs(&b.name)));
    let jobs = std::env::var("RUDDER_TEST_JOBS")
        .ok()
        .and_then(|j| j.parse::<usize>().ok())
        .filter(|&j| j > 0)
        .unwrap_or(DEFAULT_JOBS);
    let (alone, shared): (Vec<_>, Vec<_>) = binaries.into_iter().partition(|b| runs_alone(&b.name));
    util::step(&format!(
        "running {} test binaries, {jobs} at a time (RUDDER_TEST_JOBS), longest first; then {} alone",
        shared.len(),
        alone.len()
    ));
    let mut outcomes = run_all(shared, jobs, filter);
    outcomes.extend(run_all(alone, 1, filter));
    if started_registry {
        registry::stop(root)?;
    }
    let mut totals = Totals::default();
    let mut failed = Vec::new();
    for o in &outcomes {
        for line in o.stdout.lines() {
            totals.add_line(line);
        }
        if !o.ok {
            failed.push(o.name.clone());
        }
    }
    println!(
        "\nrudder: {} passed, {} failed, {} skipped ({} test binaries)",
        totals.passed,
        totals.failed,
        totals.ignored,
        outcomes.len()
    );
    if !failed.is_empty() || totals.failed > 0 {
        bail!("the test suite failed: {}", failed.join(", "));
    }
    if outcomes.is_empty() {
        bail!("no test binary ran");
    }
    Ok(())
}

/// Test binaries run at once. Most of the integration tests wait on
/// processes, containers and the network rather than compute; each binary
/// still runs its own tests on as many threads as libtest gives it.
const DEFAULT_JOBS: usize = 2;

/// Binaries whose tests hold the machine to deadlines (fault injection with
/// client timeouts, packet paths timed out in milliseconds): run after the
/// others, one at a time, as they always ran. Three at a time, the store's
/// fault test saw a client time out and a VXLAN check found its UDP port
/// still held.
fn runs_alone(name: &str) -> bool {
    ["/control_store", "/network"]
        .iter()
        .any(|n| name.ends_with(n))
}

/// One test binary cargo built.
#[derive(Debug)]
struct TestBinary {
    /// `package/target`, e.g. `rudder-integration/kubelet`.
    name: String,
    executable: PathBuf,
    /// Before the filter, if any.
    args: Vec<String>,
    /// The package's directory: cargo runs tests there, and sets
    /// `CARGO_MANIFEST_DIR` and `CARGO_PKG_NAME` for them.
    dir: PathBuf,
    package: String,
}

/// Builds every test binary of the workspace and lists them.
fn test_binaries(cargo: &str) -> anyhow::Result<Vec<TestBinary>> {
    let out = Command::new(cargo)
        .args([
            "test",
            "--workspace",
            // Its checks need a running cluster: `cargo xtask smoke`.
            "--exclude",
            "rudder-smoke",
            "--no-run",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo test --no-run")?;
    if !out.status.success() {
        bail!("building the tests failed ({})", out.status);
    }
    let mut binaries = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some(b) = parse_artifact(line) {
            binaries.push(b);
        }
    }
    Ok(binaries)
}

/// A test binary from one line of cargo's JSON messages.
fn parse_artifact(line: &str) -> Option<TestBinary> {
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    if v["reason"] != "compiler-artifact" || v["profile"]["test"] != true {
        return None;
    }
    let executable = PathBuf::from(v["executable"].as_str()?);
    let dir = Path::new(v["manifest_path"].as_str()?)
        .parent()?
        .to_path_buf();
    let package = dir.file_name()?.to_string_lossy().into_owned();
    let package = v["package_id"]
        .as_str()
        .and_then(package_name)
        .unwrap_or(package);
    let target = v["target"]["name"].as_str()?;
    Some(TestBinary {
        name: format!("{package}/{target}"),
        executable,
        args: Vec::new(),
        dir,
        package,
    })
}

/// The name in a package id: `path+file:///w/agent#rudder-agent@0.1.0` or
/// the older `rudder-agent 0.1.0 (path+file:///w/agent)`.
fn package_name(id: &str) -> Option<String> {
    if let Some((_, rest)) = id.split_once('#') {
        let name = rest.split('@').next()?;
        // `#0.1.0` alone: the name is the directory's.
        if name.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            return id.split('#').next()?.rsplit('/').next().map(str::to_owned);
        }
        return Some(name.to_owned());
    }
    id.split_whitespace().next().map(str::to_owned)
}

/// How long a binary took in a local `.ci/run` (seconds, rounded; one
/// binary at a time), for the longest to start first; those not listed
/// take under 15 s.
fn expected_secs(name: &str) -> u64 {
    const KNOWN: &[(&str, u64)] = &[
        ("/compat_node", 252),
        ("/kernels", 167),
        ("/kubelet", 105),
        ("/kubelet_security", 47),
        ("/control_controllers", 46),
        ("/hostile_api", 34),
        ("/control_kubectl", 23),
        ("/control_auth", 22),
        ("/control_crd", 18),
        // rustdoc reads every crate (there are no examples to run yet).
        ("doctests", 180),
    ];
    KNOWN
        .iter()
        .find(|(n, _)| name.ends_with(n))
        .map_or(0, |(_, s)| *s)
}

/// What one binary did.
struct Outcome {
    name: String,
    ok: bool,
    stdout: String,
}

/// Runs the binaries, `jobs` at a time; each one's output is printed in
/// one piece when it ends, with its name and time.
fn run_all(binaries: Vec<TestBinary>, jobs: usize, filter: Option<&str>) -> Vec<Outcome> {
    let queue = std::sync::Mutex::new(std::collections::VecDeque::from(binaries));
    let outcomes = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            scope.spawn(|| {
                loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .pop_front();
                    let Some(b) = next else { break };
                    let outcome = run_one(&b, filter);
                    outcomes
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .push(outcome);
                }
            });
        }
    });
    outcomes
        .into_inner()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn run_one(b: &TestBinary, filter: Option<&str>) -> Outcome {
    let started = Instant::now();
    let mut cmd = Command::new(&b.executable);
    cmd.args(&b.args).current_dir(&b.dir).stdin(Stdio::null());
    if !b.package.is_empty() {
        cmd.env("CARGO_MANIFEST_DIR", &b.dir)
            .env("CARGO_PKG_NAME", &b.package);
    }
    if let Some(f) = filter {
        if !b.args.is_empty() {
            cmd.arg("--");
        }
        cmd.arg(f);
    }
    let (ok, stdout, stderr) = match cmd.output() {
        Ok(out) => (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(e) => (false, String::new(), format!("cannot run it: {e}\n")),
    };
    let mut block = format!(
        "\n== {} ({}, {:.1} s)\n",
        b.name,
        if ok { "ok" } else { "FAILED" },
        started.elapsed().as_secs_f64()
    );
    block.push_str(&stdout);
    block.push_str(&stderr);
    // One write, so blocks of binaries ending together do not interleave.
    let _ = std::io::stdout().lock().write_all(block.as_bytes());
    Outcome {
        name: b.name.clone(),
        ok,
        stdout,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_binaries_come_from_cargos_artifact_messages() {
        let line = r#"{"reason":"compiler-artifact","package_id":"path+file:///w/tests#rudder-integration@0.1.0","manifest_path":"/w/tests/Cargo.toml","target":{"kind":["test"],"name":"kubelet"},"profile":{"test":true},"executable":"/w/target/debug/deps/kubelet-abc"}"#;
        let b = parse_artifact(line).unwrap();
        assert_eq!(b.name, "rudder-integration/kubelet");
        assert_eq!(b.dir, Path::new("/w/tests"));
        assert_eq!(b.executable, Path::new("/w/target/debug/deps/kubelet-abc"));
        // A library built for a test's sake, or a build script, is no test.
        assert!(parse_artifact(&line.replace(r#""test":true"#, r#""test":false"#)).is_none());
        assert!(parse_artifact(r#"{"reason":"build-finished","success":true}"#).is_none());
        assert_eq!(
            package_name("rudder-agent 0.1.0 (path+file:///w/agent)").as_deref(),
            Some("rudder-agent")
        );
        assert_eq!(
            package_name("path+file:///w/xtask#0.1.0").as_deref(),
            Some("xtask")
        );
    }

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
