//! The smoke checks of the workload flows users learn first, on `web`: a
//! rolling update and rollback under load, session affinity, an init
//! container waiting on DNS, Jobs and CronJobs, `kubectl top`.

use super::*;

/// A rolling update and a rollback of web while a client in a pod
/// requests the Service every 50 ms (3 s timeout each): no request may fail.
pub(super) fn rollout_under_load(cx: &mut Ctx) -> anyhow::Result<()> {
    let (kc, ns) = (&cx.kc, cx.ns.as_str());
    let run = |a: &[&str]| cx.run(a);
    // Rolling update and rollback, while a client in a pod requests the
    // Service every 50 ms (3 s timeout each): no request may fail.
    let loader = "while [ ! -e /tmp/stop ]; do \
         if timeout 3 wget -qO- http://$WEB_SERVICE_HOST/hostname >/tmp/o 2>/dev/null; \
         then echo \"ok $(cat /tmp/o)\"; else echo \"fail $?\"; fi; sleep 0.05; done; echo done";
    run(&[
        "-n",
        ns,
        "run",
        "loader",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        loader,
    ])?;
    let answered = || {
        kc.output(&["-n", ns, "logs", "loader"])
            .is_some_and(|l| l.lines().any(|l| l.starts_with("ok ")))
    };
    until("the load client's first answer", 90, &answered)?;
    let revision = || {
        cx.web("deployment", "{.spec.template.spec.containers[0].image}")
            .unwrap_or_default()
    };
    let rolled_out = || {
        run(&[
            "-n",
            ns,
            "rollout",
            "status",
            "deployment/web",
            "--timeout=180s",
        ])
    };
    run(&[
        "-n",
        ns,
        "set",
        "image",
        "deployment/web",
        "nginx=nginx:1.25",
    ])?;
    rolled_out()?;
    let updated = revision();
    run(&["-n", ns, "rollout", "undo", "deployment/web"])?;
    rolled_out()?;
    let back = revision();
    if updated != "nginx:1.25" || back != "nginx" {
        bail!("smoke: rolled to {updated:?} and back to {back:?}");
    }
    // The last old pod has just gone: a few seconds more, for what breaks
    // only after a pod's network is torn down.
    std::thread::sleep(Duration::from_secs(5));
    run(&["-n", ns, "exec", "loader", "--", "touch", "/tmp/stop"])?;
    until("the load client to finish", 30, &|| cx.finished("loader"))?;
    let log = run(&["-n", ns, "logs", "loader"])?;
    let ok = log.lines().filter(|l| l.starts_with("ok ")).count();
    let failed: Vec<&str> = log.lines().filter(|l| l.starts_with("fail")).collect();
    if !failed.is_empty() || !log.lines().any(|l| l == "done") {
        bail!(
            "smoke: during the rollout and rollback, {} of {} requests failed:\n{log}",
            failed.len(),
            ok + failed.len()
        );
    }
    let servers: std::collections::BTreeSet<&str> =
        log.lines().filter_map(|l| l.strip_prefix("ok ")).collect();
    println!(
        "rolling update to nginx:1.25 and rollback to nginx: {ok}/{ok} requests answered \
         throughout, by {} pods",
        servers.len()
    );
    Ok(())
}

/// A Service with ClientIP session affinity: one client, one backend.
pub(super) fn session_affinity(cx: &mut Ctx) -> anyhow::Result<()> {
    let ns = cx.ns.as_str();
    let run = |a: &[&str]| cx.run(a);
    // Session affinity: one client, one backend.
    run(&[
        "-n",
        ns,
        "expose",
        "deployment",
        "web",
        "--name=sticky",
        "--port=80",
        "--session-affinity=ClientIP",
    ])?;
    run(&[
        "-n",
        ns,
        "run",
        "sticky-client",
        "--image=busybox:1.28",
        "--restart=Never",
        "--",
        "sh",
        "-c",
        "for i in 1 2 3 4 5 6 7 8 9 10; do wget -qO- http://$STICKY_SERVICE_HOST/hostname; echo; done",
    ])?;
    until("the sticky client to finish", 90, &|| {
        cx.finished("sticky-client")
    })?;
    let log = run(&["-n", ns, "logs", "sticky-client"])?;
    let mut answers: Vec<&str> = log.lines().filter(|l| !l.is_empty()).collect();
    let n = answers.len();
    answers.dedup();
    if n != 10 || answers.len() != 1 {
        bail!("smoke: the ClientIP-affine Service answered {n} requests from {answers:?}");
    }
    println!("sessionAffinity ClientIP: 10/10 answered by {}", answers[0]);
    Ok(())
}

/// An init container waiting on `nslookup` of a Service made later.
pub(super) fn init_container_waits_for_dns(cx: &mut Ctx) -> anyhow::Result<()> {
    let ns = cx.ns.as_str();
    let run = |a: &[&str]| cx.run(a);
    // An init container waiting on nslookup of a Service not made yet.
    let path = write_temp(
        &format!("waiter-{ns}.yaml"),
        // As the Kubernetes documentation's init-container example writes
        // it: the full name, the namespace read from the service-account
        // volume. (A short name fails with the test image's busybox, 1.35,
        // whose nslookup exits 1 if any search domain answers NXDOMAIN,
        // and whose shell runs that applet whatever else is on PATH.)
        &format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: waiter}}\nspec:\n  restartPolicy: Never\n  initContainers:\n  - {{name: wait, image: busybox:1.28, command: ['sh', '-c', 'until nslookup late.$(cat /var/run/secrets/kubernetes.io/serviceaccount/namespace).svc.cluster.local; do sleep 2; done']}}\n  containers:\n  - {{name: main, image: busybox:1.28, command: ['sh', '-c', 'nslookup late.{ns}.svc.cluster.local']}}\n"
        ),
    )?;
    run(&["-n", ns, "create", "-f", &path])?;
    let _ = std::fs::remove_file(&path);
    std::thread::sleep(Duration::from_secs(5));
    let waiting = run(&["-n", ns, "get", "pod", "waiter", "--no-headers"])?;
    if !waiting.contains("Init:0/1") {
        bail!("smoke: the waiter pod is not waiting in its init container: {waiting}");
    }
    run(&[
        "-n",
        ns,
        "expose",
        "deployment",
        "web",
        "--name=late",
        "--port=80",
    ])?;
    until("the waiter pod to finish", 90, &|| cx.finished("waiter"))?;
    if cx.phase("waiter") != "Succeeded" {
        bail!(
            "smoke: the waiter pod failed: {}",
            run(&["-n", ns, "logs", "waiter", "--all-containers"])?
        );
    }
    println!(
        "init container waiting on `nslookup late.<namespace>.svc.cluster.local`: went on once the Service existed"
    );
    Ok(())
}

/// A Job, and a CronJob firing on schedule.
pub(super) fn job_and_cronjob(cx: &mut Ctx) -> anyhow::Result<()> {
    let (kc, ns) = (&cx.kc, cx.ns.as_str());
    let run = |a: &[&str]| cx.run(a);
    // A Job and a CronJob.
    run(&[
        "-n",
        ns,
        "create",
        "job",
        "hello",
        "--image=busybox:1.28",
        "--",
        "sh",
        "-c",
        "echo hello from a job",
    ])?;
    until("the Job to complete", 90, &|| {
        kc.output(&[
            "-n",
            ns,
            "get",
            "job",
            "hello",
            "-o",
            "jsonpath={.status.succeeded}",
        ])
        .is_some_and(|s| s.trim() == "1")
    })?;
    let log = run(&["-n", ns, "logs", "job/hello"])?;
    if !log.contains("hello from a job") {
        bail!("smoke: the Job's log: {log:?}");
    }
    println!("Job: completed, logged {:?}", log.trim());
    run(&[
        "-n",
        ns,
        "create",
        "cronjob",
        "tick",
        "--image=busybox:1.28",
        "--schedule=* * * * *",
        "--",
        "sh",
        "-c",
        "echo tick",
    ])?;
    until("a Job of the CronJob to complete", 150, &|| {
        kc.output(&[
            "-n",
            ns,
            "get",
            "jobs",
            "-o",
            "jsonpath={range .items[?(@.metadata.ownerReferences[0].name==\"tick\")]}{.status.succeeded}{end}",
        ])
        .is_some_and(|s| s.contains('1'))
    })?;
    println!("CronJob: fired on schedule, its Job completed");
    Ok(())
}

/// `kubectl top`, from the kubelets' resource metrics.
pub(super) fn kubectl_top(cx: &mut Ctx) -> anyhow::Result<()> {
    let (kc, ns) = (&cx.kc, cx.ns.as_str());
    let run = |a: &[&str]| cx.run(a);
    // kubectl top, from the kubelets' resource metrics.
    until("kubectl top pods to show web", 120, &|| {
        kc.output(&["-n", ns, "top", "pods", "--no-headers"])
            .is_some_and(|t| t.lines().any(|l| l.starts_with("web-")))
    })?;
    let top = run(&["top", "nodes", "--no-headers"])?;
    println!(
        "kubectl top: {} node(s) and the pods shown",
        top.lines().count()
    );
    Ok(())
}
