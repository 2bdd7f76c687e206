//! The smoke checks as named tests, against the cluster the environment
//! names (`RUDDER_SMOKE_KUBECONFIG`; `cargo xtask smoke` sets it). They
//! run one at a time, in order: later checks use what earlier ones made.
//! A check that does not apply to this cluster (a lost node on a one-node
//! cluster) is reported ignored. Once one fails the rest are reported
//! failed too, "not run", rather than run against a cluster in an unknown
//! state or counted as passed. The namespace they worked in is deleted at
//! the end, whatever happened.

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
};

use libtest_mimic::{Arguments, Failed, Trial};
use rudder_smoke::{CHECKS, Ctx};

/// The cluster, or why it could not be reached; the first failed check.
struct Run {
    cx: Result<Ctx, String>,
    failed: Option<&'static str>,
}

fn run_check(run: &Mutex<Run>, name: &'static str) -> Result<(), Failed> {
    let mut run = run.lock().map_err(|_| Failed::from("a check panicked"))?;
    if let Some(first) = run.failed {
        return Err(format!("not run: check `{first}` failed before it").into());
    }
    let result = match &mut run.cx {
        Ok(cx) => cx.check(name).map_err(|e| format!("{e:#}")),
        Err(e) => Err(format!("no cluster to check: {e}")),
    };
    if result.is_err() {
        run.failed = Some(name);
    }
    result.map_err(Failed::from)
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    // In order, one at a time.
    args.test_threads = Some(1);
    if args.list {
        let trials = CHECKS
            .iter()
            .map(|c| Trial::test(c.name, || Ok(())))
            .collect();
        return libtest_mimic::run(&args, trials).exit_code();
    }
    let cx = Ctx::from_env().map_err(|e| format!("{e:#}"));
    let applies = |c: &rudder_smoke::Check| cx.as_ref().map_or(true, |cx| cx.applies(c.applies));
    let ignored: Vec<bool> = CHECKS.iter().map(|c| !applies(c)).collect();
    let run = Arc::new(Mutex::new(Run { cx, failed: None }));
    let trials = CHECKS
        .iter()
        .zip(ignored)
        .map(|(c, ignored)| {
            let run = Arc::clone(&run);
            let name = c.name;
            Trial::test(name, move || run_check(&run, name)).with_ignored_flag(ignored)
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let cleaned = match run.lock() {
        Ok(r) => match &r.cx {
            Ok(cx) => cx.clean_up().map_err(|e| eprintln!("cleaning up: {e:#}")),
            Err(_) => Ok(()),
        },
        Err(_) => Err(()),
    };
    if conclusion.has_failed() || cleaned.is_err() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
