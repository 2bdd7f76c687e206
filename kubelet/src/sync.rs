//! The pod worker's brain: a pure function from the pod's spec, what the
//! runtime shows of its containers and the worker's memory (back-offs,
//! image-pull failures, probe results) to the actions to take now and the
//! status to report. No I/O: every rule here is unit-tested.
//!
//! The rules follow the kubelet's `SyncPod`: sandbox first; init containers
//! one at a time in order (sidecars — init containers with `restartPolicy:
//! Always` — start in order and keep running); then every app container;
//! restarts per `restartPolicy` with CrashLoopBackOff (10 s doubling to
//! 300 s, reset after 10 minutes of running); deletion kills everything with
//! the grace period, then tears the sandbox down.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{Container, Pod};

/// Back-off after a failed start or a crash: 10 s, doubling, at most 300 s.
pub const BACKOFF_INITIAL_SECS: i64 = 10;
pub const BACKOFF_MAX_SECS: i64 = 300;
/// A container that ran this long without trouble resets its back-off
/// (twice the maximum back-off, as the kubelet does).
pub const BACKOFF_RESET_SECS: i64 = 600;

/// Seconds since the Unix epoch, with fractions where they matter.
pub type Time = f64;

/// What the runtime shows of one instance of a container.
#[derive(Debug, Clone, PartialEq)]
pub struct Instance {
    /// containerd's container id.
    pub id: String,
    /// 0 for the first run, then one more per restart (the restartCount).
    pub attempt: u32,
    pub state: InstanceState,
}

/// The state of one instance.
#[derive(Debug, Clone, PartialEq)]
pub enum InstanceState {
    /// Made but not (yet) started.
    Created,
    Running {
        started_at: Time,
    },
    Exited {
        exit_code: i32,
        reason: TerminatedReason,
        message: String,
        started_at: Option<Time>,
        finished_at: Time,
    },
}

/// What the worker observed of the pod in the runtime.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// The sandbox (namespaces + network) exists; with its pod IP.
    pub sandbox: Option<SandboxObs>,
    /// Per container name, the newest instance and the one before it.
    pub containers: HashMap<String, (Instance, Option<Instance>)>,
}

/// A ready sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxObs {
    pub pod_ip: Option<String>,
}

/// Per-container memory the worker keeps between syncs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Memory {
    /// Crash back-off: the delay that applies to the next restart and the
    /// time before which it may not happen.
    pub backoff: HashMap<String, Backoff>,
    /// Why a container could not be started (image pull, config errors):
    /// reason, message, and the earliest next try.
    pub waiting: HashMap<String, Waiting>,
    /// Readiness probe results (absent: no result yet).
    pub ready: HashMap<String, bool>,
    /// Startup probe succeeded (or there is none) for the current instance.
    pub started: HashMap<String, bool>,
    /// The first time the worker saw the pod (for activeDeadlineSeconds).
    pub first_seen: Option<Time>,
    /// Set once every container is stopped after deletion began.
    pub killed: bool,
}

/// A crash back-off entry.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    pub delay_secs: i64,
    pub not_before: Time,
}

/// Why a container instance ended: its `state.terminated.reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TerminatedReason {
    /// Exited with status 0.
    Completed,
    /// Exited with another status.
    Error,
    /// Killed by the kernel's OOM killer.
    OomKilled,
    /// Made but never got a task: a start that failed midway.
    ContainerCannotRun,
    /// The runtime could not start its process (no such binary, …): exit
    /// code 128, as containerd's CRI reports it.
    StartError,
}

impl TerminatedReason {
    /// The reason as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Completed => "Completed",
            Self::Error => "Error",
            Self::OomKilled => "OOMKilled",
            Self::ContainerCannotRun => "ContainerCannotRun",
            Self::StartError => "StartError",
        }
    }

    /// A reason recorded in a container label; one the kubelet does not
    /// know (a label is the runtime's to change) reads as `Error`.
    pub fn from_label(s: &str) -> Self {
        match s {
            "Completed" => Self::Completed,
            "OOMKilled" => Self::OomKilled,
            "ContainerCannotRun" => Self::ContainerCannotRun,
            "StartError" => Self::StartError,
            _ => Self::Error,
        }
    }

    /// The reason of an exit: the OOM killer's, else by status.
    pub fn of_exit(code: i32, oom_killed: bool) -> Self {
        if oom_killed {
            Self::OomKilled
        } else if code == 0 {
            Self::Completed
        } else {
            Self::Error
        }
    }
}

/// Why the plan stops a running instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KillReason {
    /// The pod is deleted, or the container is to restart or is no longer
    /// wanted: a `Killing` Event is recorded.
    Killing,
    /// The pod outlived `activeDeadlineSeconds`: killed at once.
    DeadlineExceeded,
}

/// Why a container is waiting, in the kubelet's words
/// (`status.containerStatuses[].state.waiting.reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitingReason {
    ContainerCreating,
    PodInitializing,
    CrashLoopBackOff,
    CreateContainerError,
    CreateContainerConfigError,
    InvalidImageName,
    ImageInspectError,
    ErrImagePull,
    ImagePullBackOff,
    ErrImageNeverPull,
    /// A container whose instance is in no state the kubelet knows.
    Unknown,
}

impl WaitingReason {
    /// The reason as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ContainerCreating => "ContainerCreating",
            Self::PodInitializing => "PodInitializing",
            Self::CrashLoopBackOff => "CrashLoopBackOff",
            Self::CreateContainerError => "CreateContainerError",
            Self::CreateContainerConfigError => "CreateContainerConfigError",
            Self::InvalidImageName => "InvalidImageName",
            Self::ImageInspectError => "ImageInspectError",
            Self::ErrImagePull => "ErrImagePull",
            Self::ImagePullBackOff => "ImagePullBackOff",
            Self::ErrImageNeverPull => "ErrImageNeverPull",
            Self::Unknown => "Unknown",
        }
    }
}

/// A reason a container is waiting, with when to try again.
#[derive(Debug, Clone, PartialEq)]
pub struct Waiting {
    pub reason: WaitingReason,
    pub message: String,
    pub retry_at: Time,
    /// The back-off delay that produced `retry_at` (doubles on each failure).
    pub delay_secs: i64,
}

/// One thing for the worker to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the namespaces and run CNI ADD.
    CreateSandbox,
    /// Start a new instance of the container (pull its image first as the
    /// pull policy says).
    Start { name: String, attempt: u32 },
    /// Stop a running instance (preStop, signal, then SIGKILL after grace).
    Kill {
        name: String,
        id: String,
        grace_secs: i64,
        reason: KillReason,
    },
    /// Tear down the sandbox (CNI DEL, namespaces) once nothing runs.
    TeardownSandbox,
    /// Everything of the pod is gone: delete the API object (grace 0).
    Finalize,
}

/// The result of one sync: actions and when to sync again at the latest.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub actions: Vec<Action>,
    pub status: StatusView,
    /// Wake-up time for back-offs and waits, if any.
    pub requeue_at: Option<Time>,
}

/// The pod status the plan computed, in the kubelet's terms.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusView {
    pub phase: &'static str,
    pub reason: Option<String>,
    pub message: Option<String>,
    pub pod_ip: Option<String>,
    pub initialized: bool,
    pub containers_ready: bool,
    pub ready: bool,
    pub ready_to_start: bool,
    pub init_statuses: Vec<ContainerView>,
    pub statuses: Vec<ContainerView>,
    /// `kubectl debug`'s containers: never ready, never restarted.
    pub ephemeral_statuses: Vec<ContainerView>,
}

/// One container's status.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerView {
    pub name: String,
    pub image: String,
    pub container_id: Option<String>,
    pub restart_count: u32,
    pub ready: bool,
    pub started: bool,
    pub state: ViewState,
    pub last_state: Option<ViewState>,
}

/// A container state as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub enum ViewState {
    Waiting {
        reason: WaitingReason,
        message: Option<String>,
    },
    Running {
        started_at: Time,
    },
    Terminated {
        exit_code: i32,
        reason: TerminatedReason,
        message: Option<String>,
        started_at: Option<Time>,
        finished_at: Time,
        container_id: String,
    },
}

/// The next crash back-off after an instance that ran from `started` to
/// `finished`.
pub fn next_backoff(prev: Option<Backoff>, started: Option<Time>, finished: Time) -> Backoff {
    let ran = started.map_or(0.0, |s| finished - s);
    let delay = match prev {
        Some(b) if ran < BACKOFF_RESET_SECS as f64 => (b.delay_secs * 2).min(BACKOFF_MAX_SECS),
        _ => BACKOFF_INITIAL_SECS,
    };
    Backoff {
        delay_secs: delay,
        not_before: finished + delay as f64,
    }
}

fn restart_policy(pod: &Pod) -> &str {
    pod.spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always")
}

fn is_sidecar(c: &Container) -> bool {
    c.restart_policy.as_deref() == Some("Always")
}

/// Whether an exited app container restarts under the pod's policy.
fn should_restart(policy: &str, exit_code: i32) -> bool {
    match policy {
        "Never" => false,
        "OnFailure" => exit_code != 0,
        _ => true,
    }
}

/// Computes what to do for `pod` now.
pub fn plan(pod: &Pod, obs: &Observed, mem: &Memory, now: Time) -> Plan {
    let spec = pod.spec.clone().unwrap_or_default();
    let x = PlanInput {
        pod,
        obs,
        mem,
        now,
        policy: restart_policy(pod),
        init: spec.init_containers.clone().unwrap_or_default(),
        apps: spec.containers.clone(),
        spec,
    };
    let deleting = pod.metadata.deletion_timestamp.is_some();
    let already_terminal = rudder_k8s::pod::is_terminal(pod);
    let initialized = x
        .init
        .iter()
        .all(|c| is_sidecar(c) && x.running(&c.name) && started(mem, &c.name))
        || x.init.is_empty();
    let deadline_passed = x
        .spec
        .active_deadline_seconds
        .zip(mem.first_seen)
        .is_some_and(|(d, first)| now >= first + d as f64);
    if deleting || deadline_passed || already_terminal {
        return x.stop(
            initialized,
            deleting,
            deadline_passed && !deleting,
            already_terminal,
        );
    }
    if obs.sandbox.is_none() {
        return Plan {
            actions: vec![Action::CreateSandbox],
            status: x.status(false),
            requeue_at: None,
        };
    }
    x.run(initialized)
}

/// What [`plan`] decides from, gathered once.
struct PlanInput<'a> {
    pod: &'a Pod,
    obs: &'a Observed,
    mem: &'a Memory,
    now: Time,
    spec: k8s_openapi::api::core::v1::PodSpec,
    policy: &'a str,
    init: Vec<Container>,
    apps: Vec<Container>,
}

/// The actions being gathered and the earliest time to look again.
#[derive(Default)]
struct Decision {
    actions: Vec<Action>,
    requeue: Option<Time>,
}

impl Decision {
    fn start_unless_waiting(&mut self, c: &Container, mem: &Memory, now: Time) {
        let Self { actions, requeue } = self;
        start_unless_waiting(c, 0, mem, now, actions, &mut |t: Time| {
            *requeue = Some(requeue.map_or(t, |r: Time| r.min(t)));
        });
    }

    fn restart_if_due(&mut self, c: &Container, inst: &Instance, x: &PlanInput<'_>, restart: bool) {
        let Self { actions, requeue } = self;
        restart_if_due(
            c,
            inst,
            x.mem,
            x.now,
            actions,
            &mut |t: Time| {
                *requeue = Some(requeue.map_or(t, |r: Time| r.min(t)));
            },
            restart,
        );
    }

    fn kill(&mut self, name: &str, inst: &Instance, grace_secs: i64, reason: KillReason) {
        self.actions.push(Action::Kill {
            name: name.to_string(),
            id: inst.id.clone(),
            grace_secs,
            reason,
        });
    }
}

impl PlanInput<'_> {
    fn running(&self, name: &str) -> bool {
        self.obs
            .containers
            .get(name)
            .is_some_and(|(i, _)| matches!(i.state, InstanceState::Running { .. }))
    }

    fn grace(&self) -> i64 {
        self.spec.termination_grace_period_seconds.unwrap_or(30)
    }

    /// A pod being deleted, past its deadline (`deadline`, when not being
    /// deleted) or already finished: stop
    /// everything that runs, then tear the sandbox down, then (deleting)
    /// let the API object go.
    fn stop(&self, initialized: bool, deleting: bool, deadline: bool, terminal: bool) -> Plan {
        let grace = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .unwrap_or_else(|| self.grace());
        let mut d = Decision::default();
        for (name, (inst, _)) in &self.obs.containers {
            if matches!(
                inst.state,
                InstanceState::Running { .. } | InstanceState::Created
            ) {
                if deadline {
                    d.kill(name, inst, 0, KillReason::DeadlineExceeded);
                } else {
                    d.kill(name, inst, grace, KillReason::Killing);
                }
            }
        }
        if d.actions.is_empty() {
            if self.obs.sandbox.is_some() {
                d.actions.push(Action::TeardownSandbox);
            } else if deleting {
                d.actions.push(Action::Finalize);
            }
        }
        d.actions.sort_by_key(action_order);
        let mut status = self.status(initialized);
        if deadline {
            status.phase = "Failed";
            status.reason = Some("DeadlineExceeded".into());
            status.message = Some(format!(
                "Pod was active on the node longer than the specified deadline ({} s)",
                self.spec.active_deadline_seconds.unwrap_or_default()
            ));
        } else if terminal {
            let phase = self.pod.status.as_ref().and_then(|s| s.phase.as_deref());
            status.phase = if phase == Some("Succeeded") {
                "Succeeded"
            } else {
                "Failed"
            };
        }
        Plan {
            actions: d.actions,
            status,
            requeue_at: None,
        }
    }

    /// The init containers in order: whether all are done, and whether
    /// one failed for good (restartPolicy Never).
    fn init_step(&self, d: &mut Decision) -> (bool, bool) {
        for c in &self.init {
            let sidecar = is_sidecar(c);
            let Some((inst, _)) = self.obs.containers.get(&c.name) else {
                d.start_unless_waiting(c, self.mem, self.now);
                return (false, false);
            };
            match &inst.state {
                InstanceState::Created => return (false, false),
                InstanceState::Running { .. } if sidecar && started(self.mem, &c.name) => {}
                InstanceState::Running { .. } => return (false, false),
                InstanceState::Exited { exit_code: 0, .. } if !sidecar => {}
                // A failed init container (or any exited sidecar).
                InstanceState::Exited { .. } if !sidecar && self.policy == "Never" => {
                    return (false, true);
                }
                InstanceState::Exited { .. } => {
                    d.restart_if_due(c, inst, self, true);
                    return (false, false);
                }
            }
        }
        (true, false)
    }

    /// A pod whose sandbox is up: init containers in order, then sidecars
    /// kept running, app containers together, ephemeral ones once.
    fn run(&self, mut initialized: bool) -> Plan {
        let mut d = Decision::default();
        let mut init_failed_for_good = false;
        if !initialized {
            (initialized, init_failed_for_good) = self.init_step(&mut d);
        }
        if initialized {
            // Sidecars that exited after initialization are restarted.
            for c in self.init.iter().filter(|c| is_sidecar(c)) {
                if let Some((inst, _)) = self.obs.containers.get(&c.name) {
                    d.restart_if_due(c, inst, self, true);
                }
            }
        }
        if initialized && !init_failed_for_good {
            // App containers, together.
            for c in &self.apps {
                match self.obs.containers.get(&c.name) {
                    None => d.start_unless_waiting(c, self.mem, self.now),
                    Some((inst, _)) => {
                        let restart = match &inst.state {
                            InstanceState::Exited { exit_code, .. } => {
                                should_restart(self.policy, *exit_code)
                            }
                            _ => false,
                        };
                        d.restart_if_due(c, inst, self, restart);
                    }
                }
            }
        }
        if !init_failed_for_good {
            // Ephemeral containers (`kubectl debug`): started once the
            // sandbox is there, never restarted.
            let ephemeral = self.spec.ephemeral_containers.iter().flatten();
            for c in ephemeral.map(rudder_k8s::pod::ephemeral_as_container) {
                if !self.obs.containers.contains_key(&c.name) {
                    d.start_unless_waiting(&c, self.mem, self.now);
                }
            }
        }
        let mut status = self.status(initialized);
        if init_failed_for_good {
            status.phase = "Failed";
            // Sidecars still running are stopped.
            for (name, (inst, _)) in &self.obs.containers {
                if matches!(inst.state, InstanceState::Running { .. }) {
                    d.kill(name, inst, self.grace(), KillReason::Killing);
                }
            }
        } else if matches!(status.phase, "Succeeded" | "Failed") {
            // A pod that has finished stops its sidecars.
            self.stop_sidecars(&mut d);
        }
        d.actions.sort_by_key(action_order);
        Plan {
            actions: d.actions,
            status,
            requeue_at: d.requeue,
        }
    }

    fn stop_sidecars(&self, d: &mut Decision) {
        for c in self.init.iter().filter(|c| is_sidecar(c)) {
            if let Some((inst, _)) = self.obs.containers.get(&c.name)
                && matches!(inst.state, InstanceState::Running { .. })
            {
                d.actions
                    .retain(|a| !matches!(a, Action::Start { name, .. } if name == &c.name));
                d.kill(&c.name, inst, self.grace(), KillReason::Killing);
            }
        }
    }
}

fn action_order(a: &Action) -> u8 {
    match a {
        Action::Kill { .. } => 0,
        Action::TeardownSandbox => 2,
        Action::Finalize => 3,
        Action::CreateSandbox => 4,
        Action::Start { .. } => 5,
    }
}

fn started(mem: &Memory, name: &str) -> bool {
    mem.started.get(name).copied().unwrap_or(true)
}

fn restart_if_due(
    c: &Container,
    inst: &Instance,
    mem: &Memory,
    now: Time,
    actions: &mut Vec<Action>,
    wake: &mut impl FnMut(Time),
    restart: bool,
) {
    let InstanceState::Exited {
        started_at,
        finished_at,
        ..
    } = &inst.state
    else {
        return;
    };
    if !restart {
        return;
    }
    let b = mem
        .backoff
        .get(&c.name)
        .copied()
        .unwrap_or_else(|| next_backoff(None, *started_at, *finished_at));
    if now < b.not_before {
        wake(b.not_before);
    } else {
        start_unless_waiting(c, inst.attempt + 1, mem, now, actions, wake);
    }
}

/// Starts the container's next instance unless a start failure (image
/// pull, configuration) asks to wait; then wakes at the retry time.
fn start_unless_waiting(
    c: &Container,
    attempt: u32,
    mem: &Memory,
    now: Time,
    actions: &mut Vec<Action>,
    wake: &mut impl FnMut(Time),
) {
    match mem.waiting.get(&c.name).filter(|w| w.retry_at > now) {
        Some(w) => wake(w.retry_at),
        None => actions.push(Action::Start {
            name: c.name.clone(),
            attempt,
        }),
    }
}

impl PlanInput<'_> {
    /// The pod's status as the kubelet reports it: each container's view,
    /// the phase, and the readiness conditions.
    fn status(&self, initialized: bool) -> StatusView {
        let (pod, obs) = (self.pod, self.obs);
        let init_statuses: Vec<ContainerView> = self
            .init
            .iter()
            .map(|c| self.container_view(c, true, initialized))
            .collect();
        let statuses: Vec<ContainerView> = self
            .apps
            .iter()
            .map(|c| self.container_view(c, false, initialized))
            .collect();
        let ephemeral_statuses: Vec<ContainerView> = self
            .spec
            .ephemeral_containers
            .iter()
            .flatten()
            .map(|e| {
                self.container_view(
                    &rudder_k8s::pod::ephemeral_as_container(e),
                    true,
                    initialized,
                )
            })
            .collect();
        let phase = if initialized {
            phase(&statuses, self.policy)
        } else {
            "Pending"
        };
        let sidecars_ready = init_statuses
            .iter()
            .zip(&self.init)
            .filter(|(_, c)| is_sidecar(c))
            .all(|(s, _)| s.ready);
        let containers_ready = initialized && statuses.iter().all(|s| s.ready) && sidecars_ready;
        StatusView {
            phase,
            reason: None,
            message: None,
            pod_ip: obs.sandbox.as_ref().and_then(|s| s.pod_ip.clone()),
            initialized,
            containers_ready,
            ready: containers_ready && readiness_gates_pass(pod) && phase == "Running",
            ready_to_start: obs.sandbox.is_some(),
            init_statuses,
            statuses,
            ephemeral_statuses,
        }
    }

    /// One container's view: its state, last state, id, restart count,
    /// started and ready.
    fn container_view(&self, c: &Container, is_init: bool, initialized: bool) -> ContainerView {
        let mem = self.mem;
        let ephemeral = is_ephemeral(self.pod, &c.name);
        let sidecar = is_init && is_sidecar(c);
        let (state, last, id, count, running) = match self.obs.containers.get(&c.name) {
            None => {
                let (reason, message) = match mem.waiting.get(&c.name) {
                    Some(w) => (w.reason, Some(w.message.clone())),
                    None if is_init || initialized => (WaitingReason::ContainerCreating, None),
                    None => (WaitingReason::PodInitializing, None),
                };
                (ViewState::Waiting { reason, message }, None, None, 0, false)
            }
            Some((inst, prev)) => {
                let id = Some(format!("containerd://{}", inst.id));
                let last = prev.as_ref().and_then(terminated);
                match &inst.state {
                    InstanceState::Created => {
                        let state = ViewState::Waiting {
                            reason: WaitingReason::ContainerCreating,
                            message: None,
                        };
                        (state, last, id, inst.attempt, false)
                    }
                    InstanceState::Running { started_at } => {
                        let state = ViewState::Running {
                            started_at: *started_at,
                        };
                        (state, last, id, inst.attempt, true)
                    }
                    InstanceState::Exited { exit_code, .. } => {
                        let restarting = if ephemeral {
                            false
                        } else if is_init {
                            sidecar || (*exit_code != 0 && self.policy != "Never")
                        } else {
                            should_restart(self.policy, *exit_code)
                        };
                        let (state, last) = self.exited_view(c, inst, last, restarting);
                        (state, last, id, inst.attempt, false)
                    }
                }
            }
        };
        let is_started = running && started(mem, &c.name);
        let ready = is_started
            && !ephemeral
            && (!is_init || sidecar)
            && mem
                .ready
                .get(&c.name)
                .copied()
                .unwrap_or(c.readiness_probe.is_none());
        ContainerView {
            name: c.name.clone(),
            image: c.image.clone().unwrap_or_default(),
            container_id: id,
            restart_count: count,
            ready,
            started: is_started,
            state,
            last_state: last,
        }
    }

    /// An exited container's state and last state: waiting in
    /// CrashLoopBackOff (or the reason its restart waits on) when it will
    /// restart, else terminated.
    fn exited_view(
        &self,
        c: &Container,
        inst: &Instance,
        prev: Option<ViewState>,
        restarting: bool,
    ) -> (ViewState, Option<ViewState>) {
        let pod = self.pod;
        let backoff = self
            .mem
            .backoff
            .get(&c.name)
            .filter(|b| b.not_before > self.now);
        if let Some(b) = backoff.filter(|_| restarting) {
            let message = format!(
                "back-off {}s restarting failed container={} pod={}_{}({})",
                b.delay_secs,
                c.name,
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                pod.metadata.uid.as_deref().unwrap_or_default()
            );
            let state = ViewState::Waiting {
                reason: WaitingReason::CrashLoopBackOff,
                message: Some(message),
            };
            return (state, terminated(inst));
        }
        if let Some(w) = self.mem.waiting.get(&c.name).filter(|_| restarting) {
            let state = ViewState::Waiting {
                reason: w.reason,
                message: Some(w.message.clone()),
            };
            return (state, terminated(inst));
        }
        let state = terminated(inst).unwrap_or(ViewState::Waiting {
            reason: WaitingReason::Unknown,
            message: None,
        });
        (state, prev)
    }
}

/// An exited instance as a terminated state.
fn terminated(i: &Instance) -> Option<ViewState> {
    match &i.state {
        InstanceState::Exited {
            exit_code,
            reason,
            message,
            started_at,
            finished_at,
        } => Some(ViewState::Terminated {
            exit_code: *exit_code,
            reason: *reason,
            message: (!message.is_empty()).then(|| message.clone()),
            started_at: *started_at,
            finished_at: *finished_at,
            container_id: format!("containerd://{}", i.id),
        }),
        _ => None,
    }
}

/// The phase of an initialized pod from its app containers, as the
/// kubelet's `getPhase`: a container waiting to restart (one with a last
/// state) counts as stopped; when every container has stopped, a pod
/// under `Always` is restarting them (Running), one whose containers all
/// succeeded is Succeeded, one under `Never` with a failure is Failed, and
/// one under `OnFailure` is restarting the failed ones (Running). A pod
/// that is finished for good (deleted, past its deadline) gets its phase
/// from [`PlanInput::stop`], not from here.
fn phase(statuses: &[ContainerView], policy: &str) -> &'static str {
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        match &s.state {
            ViewState::Running { .. } => running += 1,
            ViewState::Terminated { exit_code, .. } => {
                stopped += 1;
                if *exit_code == 0 {
                    succeeded += 1;
                }
            }
            ViewState::Waiting { .. } if s.last_state.is_some() || s.restart_count > 0 => {
                stopped += 1;
            }
            ViewState::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if policy == "Always" {
            "Running"
        } else if succeeded == stopped {
            "Succeeded"
        } else if policy == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

/// Whether every readiness gate's condition is `True` on the pod.
fn readiness_gates_pass(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.readiness_gates.as_ref())
        .is_none_or(|gates| {
            gates.iter().all(|g| {
                pod.status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .and_then(|cs| cs.iter().find(|c| c.type_ == g.condition_type))
                    .is_some_and(|c| c.status == "True")
            })
        })
}

/// Whether `name` is one of the pod's ephemeral containers.
fn is_ephemeral(pod: &Pod, name: &str) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.ephemeral_containers.iter().flatten())
        .any(|e| e.name == name)
}

/// Every container of the pod by name (init, app, ephemeral), for lookups.
pub fn containers_by_name(pod: &Pod) -> BTreeMap<String, (Container, bool)> {
    let mut out = BTreeMap::new();
    if let Some(spec) = &pod.spec {
        for c in spec.init_containers.iter().flatten() {
            out.insert(c.name.clone(), (c.clone(), true));
        }
        for c in &spec.containers {
            out.insert(c.name.clone(), (c.clone(), false));
        }
        for e in spec.ephemeral_containers.iter().flatten() {
            out.insert(
                e.name.clone(),
                (rudder_k8s::pod::ephemeral_as_container(e), false),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
