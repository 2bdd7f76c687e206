//! The smoke checks as named tests, against the cluster the environment
//! names (`RUDDER_SMOKE_KUBECONFIG`; `cargo xtask smoke` sets it). They
//! run one at a time, in order: later checks use what earlier ones made.
//! Once one fails the rest are reported failed too, "not run", rather than
//! run against a cluster in an unknown state or counted as passed. The
//! namespace they worked in is deleted at the end, whatever happened.

use std::{
    process::ExitCode,
    sync::{Arc, Mutex},
};

use libtest_mimic::{Arguments, Failed, Trial};
use rudder_smoke::{CHECKS, Ctx};

/// The cluster once reached, or why it could not be; the first failed
/// check.
#[derive(Default)]
struct Run {
    cx: Option<Result<Ctx, String>>,
    failed: Option<&'static str>,
}

fn run_check(run: &Mutex<Run>, name: &'static str) -> Result<(), Failed> {
    let mut run = run.lock().map_err(|_| Failed::from("a check panicked"))?;
    if let Some(first) = run.failed {
        return Err(format!("not run: check `{first}` failed before it").into());
    }
    let cx = run
        .cx
        .get_or_insert_with(|| Ctx::from_env().map_err(|e| format!("{e:#}")));
    let result = match cx {
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
    let run = Arc::new(Mutex::new(Run::default()));
    let trials = CHECKS
        .iter()
        .map(|(name, _)| {
            let run = Arc::clone(&run);
            let name: &'static str = name;
            Trial::test(name, move || run_check(&run, name))
        })
        .collect();
    let conclusion = libtest_mimic::run(&args, trials);
    let cleaned = match run.lock().map(|mut r| r.cx.take()) {
        Ok(Some(Ok(cx))) => cx.clean_up().map_err(|e| eprintln!("cleaning up: {e:#}")),
        _ => Ok(()),
    };
    if conclusion.has_failed() || cleaned.is_err() {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
