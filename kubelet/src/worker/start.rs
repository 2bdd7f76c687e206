//! Starting one container instance: its image per pull policy, its
//! environment, its mounts, the OCI spec, the containerd container and task,
//! and the postStart hook. A failure comes back as a [`StartFailure`] whose
//! reason the pod status shows while the container waits.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::{Api, api::ListParams};

use super::{
    super::{
        L_ATTEMPT, L_CONTAINER, L_EXIT, L_FINISHED, L_IMAGE_ID, L_POD_NAME, L_POD_NS, L_POD_UID,
        L_REASON, L_STARTED, env, logs, now, probe, sandbox, seccomp, spec,
        sync::{self, TerminatedReason, WaitingReason},
        volumes,
    },
    L_STOP_SIGNAL, Worker, container_id, pod_key,
};

/// How long a container start waits for the kubelet's first list of
/// Services before reading them from the API itself.
const SERVICES_WAIT: Duration = Duration::from_secs(5);

impl Worker {
    /// Starts one container instance. A process that cannot run (a missing
    /// binary, a bad user) is not a failure here: it becomes an exited
    /// instance with runc's message, as containerd's CRI reports it.
    pub(super) async fn start(
        &mut self,
        pod: &Pod,
        name: &str,
        attempt: u32,
    ) -> Result<(), StartFailure> {
        let c: Container = sync::containers_by_name(pod)
            .get(name)
            .map(|(c, _)| c.clone())
            .ok_or_else(|| {
                StartFailure::new(
                    WaitingReason::CreateContainerError,
                    format!("no container {name}"),
                )
            })?;
        let image = self.ensure_image(pod, &c).await?;
        let env = self.container_env(pod, &c).await?;
        let id = container_id(&self.uid, name, attempt);
        let mounts = self.container_mounts(pod, &c, &env, &id).await?;
        let host_network = Self::host_network(pod);
        let hostname = if host_network {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default()
        } else {
            pod.spec
                .as_ref()
                .and_then(|s| s.hostname.clone())
                .unwrap_or_else(|| pod.metadata.name.clone().unwrap_or_default())
        };
        let mut namespaces = sandbox::namespace_paths(&self.ns_dir, host_network);
        // An ephemeral container's target's, else the pod's shared one.
        namespaces.pid = match self.target_pid_namespace(pod, name).await? {
            Some(p) => Some(p),
            None => Self::shared_pid(pod).then(|| sandbox::shared_pid_path(&self.ns_dir)),
        };
        // `hostPID` and `hostIPC`: the node's own namespaces.
        let pod_spec = pod.spec.as_ref();
        namespaces.host_pid = pod_spec.and_then(|s| s.host_pid) == Some(true);
        if pod_spec.and_then(|s| s.host_ipc) == Some(true) {
            namespaces.ipc = None;
        }
        // The pod's cgroup, made or brought up to date before each start,
        // as the kubelet's SyncPod does.
        let pod_cgroup = self
            .shared
            .cgroups
            .ensure_pod(&self.uid, pod_spec.unwrap_or(&Default::default()))
            .await
            .map_err(|e| {
                StartFailure::new(
                    WaitingReason::CreateContainerError,
                    format!("pod cgroup: {e}"),
                )
            })?;
        let cgroups_path = self
            .shared
            .cgroups
            .layout()
            .container_cgroups_path(&pod_cgroup, &id);
        let seccomp = seccomp::resolve(
            pod,
            &c,
            self.shared.cfg.seccomp_default,
            &self.shared.cfg.root_dir.join("seccomp"),
        )
        .map_err(|e| {
            StartFailure::new(
                WaitingReason::CreateContainerError,
                format!("failed to generate seccomp spec opts: {e}"),
            )
        })?;
        let labels = self.selinux_labels(pod, &c, &mounts)?;
        let oci = spec::build(&spec::SpecInput {
            pod,
            container: &c,
            image: &image.config,
            env: &env,
            namespaces: &namespaces,
            mounts: &mounts,
            cgroups_path: &cgroups_path,
            hostname: &hostname,
            bounding_caps: spec::host_bounding_set(),
            seccomp: &seccomp,
            kernel: seccomp::KernelVersion::host(),
            selinux: labels.as_ref(),
        })
        .map_err(|e| {
            let reason = match e.reason() {
                "CreateContainerError" => WaitingReason::CreateContainerError,
                _ => WaitingReason::CreateContainerConfigError,
            };
            StartFailure::new(reason, e.to_string())
        })?;
        let spec_json = serde_json::to_vec(&oci)
            .map_err(|e| StartFailure::new(WaitingReason::CreateContainerError, e.to_string()))?;
        let rootfs = self
            .create_container(pod, name, attempt, &id, &image, spec_json)
            .await?;
        if !self.run_task(pod, &c, attempt, &id, rootfs).await {
            return Ok(());
        }
        self.event(
            pod,
            "Normal",
            "Created",
            &format!("Created container {name}"),
        );
        self.event(
            pod,
            "Normal",
            "Started",
            &format!("Started container {name}"),
        );
        self.post_start(pod, &c, &id).await;
        Ok(())
    }

    /// On a node that labels containers for SELinux: the container's
    /// labels, with the volumes the kubelet made relabelled to its mount
    /// label first (the CRI's `SelinuxRelabel`; never hostPath or claims).
    fn selinux_labels(
        &self,
        pod: &Pod,
        c: &Container,
        mounts: &[spec::MountSpec],
    ) -> Result<Option<crate::selinux::Labels>, StartFailure> {
        use crate::selinux;
        let Some(se) = &self.shared.selinux else {
            return Ok(None);
        };
        let level = se.pod_level(&self.pod_dir).map_err(|e| {
            StartFailure::new(
                WaitingReason::CreateContainerError,
                format!("keeping the pod's SELinux level: {e}"),
            )
        })?;
        let labels = selinux::labels(selinux::effective_options(pod, c), &se.base, &level)
            .map_err(|e| {
                StartFailure::new(WaitingReason::CreateContainerConfigError, e.to_string())
            })?;
        for m in mounts.iter().filter(|m| m.nosuid_nodev) {
            match selinux::relabel(&m.source, &labels.mount, selinux::RELABEL_LIMIT) {
                Ok(r) if !r.complete => tracing::warn!(
                    pod = %pod_key(pod),
                    path = %m.source.display(),
                    entries = r.entries,
                    "relabelled the first entries only; the rest keep the labels they were made with"
                ),
                Ok(_) => {}
                Err(e) => {
                    return Err(StartFailure::new(
                        WaitingReason::CreateContainerError,
                        format!("relabelling {} for SELinux: {e}", m.source.display()),
                    ));
                }
            }
        }
        Ok(Some(labels))
    }

    /// An ephemeral container's `targetContainerName`: the PID namespace
    /// of that container's running process, which `kubectl debug
    /// --target` joins.
    async fn target_pid_namespace(
        &self,
        pod: &Pod,
        name: &str,
    ) -> Result<Option<std::path::PathBuf>, StartFailure> {
        let Some(target) = pod
            .spec
            .iter()
            .flat_map(|s| s.ephemeral_containers.iter().flatten())
            .find(|e| e.name == name)
            .and_then(|e| e.target_container_name.clone())
            .filter(|t| !t.is_empty())
        else {
            return Ok(None);
        };
        let fail = |m: String| StartFailure::new(WaitingReason::CreateContainerError, m);
        let ns = pod.metadata.namespace.as_deref().unwrap_or_default();
        let pod_name = pod.metadata.name.as_deref().unwrap_or_default();
        let id = super::super::exec::running_instance(&self.shared, ns, pod_name, &target)
            .await
            .map_err(|e| fail(format!("target container {target}: {e}")))?;
        let task = self
            .shared
            .runtime
            .task_get(&id)
            .await
            .map_err(|e| fail(e.to_string()))?
            .ok_or_else(|| fail(format!("target container {target} has no task")))?;
        Ok(Some(format!("/proc/{}/ns/pid", task.pid).into()))
    }

    /// The container's environment, with the Services of its namespace
    /// (and the `kubernetes` Service) as docker-link variables.
    async fn container_env(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<Vec<(String, String)>, StartFailure> {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let lookup = self.lookup_for(pod, c).await;
        let services = self.services_for(&ns).await;
        let mut facts = self.shared.node_facts.read().await.clone();
        facts.pod_ip = self.pod_ip();
        env::container_env(pod, c, &services, &lookup, &facts).map_err(|e| {
            StartFailure::new(WaitingReason::CreateContainerConfigError, e.to_string())
        })
    }

    /// The Services whose variables a container of namespace `ns` gets:
    /// its namespace's and the `kubernetes` Service, from the kubelet's
    /// watch of Services (read from the API while that has not listed yet).
    async fn services_for(&self, ns: &str) -> Vec<Service> {
        let store = &self.shared.services;
        if tokio::time::timeout(SERVICES_WAIT, store.synced())
            .await
            .is_ok()
        {
            return store.read(|r| {
                let master = rudder_informer::ObjectKey::new("default", "kubernetes");
                let mut out: Vec<Service> = r
                    .by_index(crate::BY_NAMESPACE, ns)
                    .map(|(_, s)| Service::clone(s))
                    .collect();
                if ns != "default" {
                    out.extend(r.get(&master).map(|s| Service::clone(s)));
                }
                out
            });
        }
        let mut services: Vec<Service> = Api::<Service>::namespaced(self.shared.client.clone(), ns)
            .list(&ListParams::default())
            .await
            .map(|l| l.items)
            .unwrap_or_default();
        if ns != "default"
            && let Ok(master) = Api::<Service>::namespaced(self.shared.client.clone(), "default")
                .get("kubernetes")
                .await
        {
            services.push(master);
        }
        services
    }

    /// The container's mounts: its volumes (set up once per pod, until
    /// that succeeds), the pod's `/etc` files unless a volume covers them,
    /// and a fresh termination-log file for instance `id`.
    async fn container_mounts(
        &mut self,
        pod: &Pod,
        c: &Container,
        env: &[(String, String)],
        id: &str,
    ) -> Result<Vec<spec::MountSpec>, StartFailure> {
        let vols = match &self.volumes {
            Some(v) => v.clone(),
            None => {
                let mut facts = self.shared.node_facts.read().await.clone();
                facts.pod_ip = self.pod_ip();
                match volumes::setup(&self.shared.client, pod, &self.pod_dir, &facts).await {
                    Ok(v) => {
                        self.volumes = Some(v.clone());
                        self.volumes_synced = now();
                        v
                    }
                    Err(e) => {
                        self.event(pod, "Warning", "FailedMount", &e.to_string());
                        return Err(StartFailure::new(
                            WaitingReason::ContainerCreating,
                            e.to_string(),
                        ));
                    }
                }
            }
        };
        let mut mounts = volumes::mounts(pod, c, &vols, &self.pod_dir, env).map_err(|e| {
            StartFailure::new(WaitingReason::CreateContainerConfigError, e.to_string())
        })?;
        let etc = self.pod_dir.join("etc");
        for (f, dest) in [
            ("hosts", "/etc/hosts"),
            ("resolv.conf", "/etc/resolv.conf"),
            ("hostname", "/etc/hostname"),
        ] {
            if !mounts.iter().any(|m| m.destination == dest) {
                mounts.push(spec::MountSpec {
                    destination: dest.into(),
                    source: etc.join(f),
                    read_only: false,
                    nosuid_nodev: true,
                });
            }
        }
        let term_dir = self.pod_dir.join("termination");
        let _ = std::fs::create_dir_all(&term_dir);
        let term_file = term_dir.join(id);
        let _ = std::fs::write(&term_file, b"");
        mounts.push(spec::MountSpec {
            destination: c
                .termination_message_path
                .clone()
                .unwrap_or_else(|| "/dev/termination-log".into()),
            source: term_file,
            read_only: false,
            nosuid_nodev: true,
        });
        Ok(mounts)
    }

    /// The containerd container `id` and its snapshot; the snapshot's mounts.
    async fn create_container(
        &self,
        pod: &Pod,
        name: &str,
        attempt: u32,
        id: &str,
        image: &rudder_runtime::image::ImageInfo,
        spec_json: Vec<u8>,
    ) -> Result<Vec<containerd_client::types::Mount>, StartFailure> {
        let cd = &self.shared.runtime;
        let fail = |e: rudder_runtime::containerd::ContainerdError| {
            StartFailure::new(WaitingReason::CreateContainerError, e.to_string())
        };
        // A leftover of an interrupted start with the same id goes first.
        super::task::delete(cd.as_ref(), id).await;
        // The new snapshot is held by a lease until the container record
        // that references it exists: an unreferenced active snapshot is
        // fair game for containerd's garbage collector (which any other
        // pull's lease release sets off).
        let lease = format!("rudder-start-{id}");
        cd.lease_create(&lease, Duration::from_secs(600))
            .await
            .map_err(fail)?;
        let labels = HashMap::from([
            (L_POD_UID.to_string(), self.uid.clone()),
            (
                L_POD_NAME.to_string(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                L_POD_NS.to_string(),
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
            (L_CONTAINER.to_string(), name.to_string()),
            // The labels node tools (crictl, nerdctl, log shippers) read,
            // as the CRI plugin sets them.
            ("io.kubernetes.pod.uid".to_string(), self.uid.clone()),
            (
                "io.kubernetes.pod.name".to_string(),
                pod.metadata.name.clone().unwrap_or_default(),
            ),
            (
                "io.kubernetes.pod.namespace".to_string(),
                pod.metadata.namespace.clone().unwrap_or_default(),
            ),
            ("io.kubernetes.container.name".to_string(), name.to_string()),
            (L_ATTEMPT.to_string(), attempt.to_string()),
            (L_IMAGE_ID.to_string(), image.image_id.clone()),
            (L_STOP_SIGNAL.to_string(), image.config.stop_signal.clone()),
        ]);
        let made = async {
            let rootfs = cd
                .snapshot_prepare(
                    Some(&lease),
                    id,
                    &image.chain_id,
                    HashMap::from([(L_POD_UID.to_string(), self.uid.clone())]),
                )
                .await?;
            cd.container_create(id, &image.name, spec_json, id, labels)
                .await?;
            Ok::<_, rudder_runtime::containerd::ContainerdError>(rootfs)
        }
        .await;
        let _ = cd.lease_delete(&lease).await;
        made.map_err(fail)
    }

    /// Creates and starts the task of container `id`, its output going to
    /// the container's log; whether it runs. One that could not run is
    /// recorded as exited with `StartError` and its message.
    async fn run_task(
        &self,
        pod: &Pod,
        c: &Container,
        attempt: u32,
        id: &str,
        rootfs: Vec<containerd_client::types::Mount>,
    ) -> bool {
        let name = c.name.as_str();
        let cd = &self.shared.runtime;
        let log_dir = logs::pod_log_dir(
            &self.shared.cfg.pod_log_dir,
            pod.metadata.namespace.as_deref().unwrap_or_default(),
            pod.metadata.name.as_deref().unwrap_or_default(),
            &self.uid,
        );
        let log_path = logs::container_log_path(&log_dir, name, attempt);
        let started: Result<(), String> = match self.stdio(c, id, &log_path).await {
            Ok(mut stdio) => {
                let [i, o, e] = &stdio.uris;
                let made = cd.task_create(id, rootfs, [i, o, e], stdio.terminal).await;
                stdio.created();
                match made {
                    Ok(_) => cd
                        .task_start(id)
                        .await
                        .map(|_| ())
                        .map_err(|e| e.to_string()),
                    Err(e) => {
                        stdio.abandon();
                        Err(e.to_string())
                    }
                }
            }
            Err(e) => Err(e),
        };
        let t = now();
        let Err(e) = started else {
            let _ = cd
                .container_set_labels(
                    id,
                    HashMap::from([(L_STARTED.to_string(), format!("{t:.3}"))]),
                )
                .await;
            let link = logs::link_name(
                pod.metadata.name.as_deref().unwrap_or_default(),
                pod.metadata.namespace.as_deref().unwrap_or_default(),
                name,
                id,
            );
            if let Err(e) = logs::link_container_log(&self.shared.cfg.pod_log_dir, &link, &log_path)
            {
                tracing::warn!(container = %id, error = %e, "linking the container's log");
            }
            return true;
        };
        let msg = e;
        tracing::warn!(pod = %pod_key(pod), container = %name, error = %msg, "container start failed");
        let _ = cd.task_delete(id).await;
        let r = cd
            .container_set_labels(
                id,
                HashMap::from([
                    (L_EXIT.to_string(), "128".to_string()),
                    (L_FINISHED.to_string(), format!("{t:.3}")),
                    (L_STARTED.to_string(), format!("{t:.3}")),
                    (
                        L_REASON.to_string(),
                        TerminatedReason::StartError.as_str().to_string(),
                    ),
                ]),
            )
            .await;
        if let Err(e) = r {
            tracing::warn!(container = %id, error = %e, "recording the failed start");
        }
        let _ = std::fs::write(self.pod_dir.join("termination").join(id), &msg);
        self.event(pod, "Warning", "Failed", &format!("Error: {msg}"));
        false
    }

    /// Runs the container's postStart hook, if it has one; a failed hook
    /// kills the instance (the kubelet's `FailedPostStartHook`).
    async fn post_start(&self, pod: &Pod, c: &Container, id: &str) {
        let Some(post) = c.lifecycle.as_ref().and_then(|l| l.post_start.clone()) else {
            return;
        };
        let target = probe::Target {
            instance: id.to_string(),
            pod_ip: self.pod_ip(),
            container: c.clone(),
        };
        let grace = self.grace(pod, &c.name);
        let timeout = Duration::from_secs(grace.max(1) as u64);
        if let Err(e) = probe::hook(&self.shared, &target, &post, timeout).await {
            self.event(
                pod,
                "Warning",
                "FailedPostStartHook",
                &format!("PostStartHook failed: {e}"),
            );
            self.kill(pod, &c.name, id, grace).await;
        }
    }

    async fn ensure_image(
        &self,
        pod: &Pod,
        c: &Container,
    ) -> Result<rudder_runtime::image::ImageInfo, StartFailure> {
        let image = c.image.clone().unwrap_or_default();
        let reference = rudder_runtime::image::Reference::parse(&image)
            .map_err(|e| StartFailure::new(WaitingReason::InvalidImageName, e.to_string()))?;
        let policy = c.image_pull_policy.clone().unwrap_or_else(|| {
            if reference.digest.is_none() && reference.tag.as_deref() == Some("latest") {
                "Always".into()
            } else {
                "IfNotPresent".into()
            }
        });
        let puller = &self.shared.puller;
        // Always pulls without looking: the registry decides what is current.
        let local = if policy == "Always" {
            None
        } else {
            puller
                .local(&image)
                .await
                .map_err(|e| StartFailure::new(WaitingReason::ImageInspectError, e.to_string()))?
        };
        match (policy.as_str(), local) {
            ("Never", Some(i)) | ("IfNotPresent", Some(i)) => {
                self.event(
                    pod,
                    "Normal",
                    "Pulled",
                    &format!("Container image \"{image}\" already present on machine"),
                );
                return Ok(i);
            }
            ("Never", None) => {
                let msg =
                    format!("Container image \"{image}\" is not present with pull policy of Never");
                self.event(pod, "Warning", "ErrImageNeverPull", &msg);
                return Err(StartFailure::new(WaitingReason::ErrImageNeverPull, msg));
            }
            _ => {}
        }
        // One pull of an image at a time.
        let lock = {
            let mut locks = self.shared.pull_locks.lock().await;
            Arc::clone(locks.entry(reference.to_string()).or_default())
        };
        let _guard = lock.lock().await;
        self.event(
            pod,
            "Normal",
            "Pulling",
            &format!("Pulling image \"{image}\""),
        );
        let started = std::time::Instant::now();
        let creds = volumes::pull_credentials(&self.shared.client, pod).await;
        match puller.pull(&image, &creds).await {
            Ok(i) => {
                self.event(
                    pod,
                    "Normal",
                    "Pulled",
                    &format!(
                        "Successfully pulled image \"{image}\" in {:.3}s",
                        started.elapsed().as_secs_f64()
                    ),
                );
                Ok(i)
            }
            Err(e) => {
                let msg = format!("Failed to pull image \"{image}\": {e}");
                self.event(pod, "Warning", "Failed", &msg);
                self.event(pod, "Warning", "Failed", "Error: ErrImagePull");
                Err(StartFailure {
                    reason: WaitingReason::ErrImagePull,
                    message: msg,
                    pull_backoff: true,
                })
            }
        }
    }

    async fn lookup_for(&self, pod: &Pod, c: &Container) -> MapLookup {
        let ns = pod.metadata.namespace.clone().unwrap_or_default();
        let mut cms: HashSet<String> = HashSet::new();
        let mut secrets: HashSet<String> = HashSet::new();
        for f in c.env_from.iter().flatten() {
            cms.extend(f.config_map_ref.as_ref().map(|r| r.name.clone()));
            secrets.extend(f.secret_ref.as_ref().map(|r| r.name.clone()));
        }
        for e in c.env.iter().flatten() {
            if let Some(v) = &e.value_from {
                cms.extend(v.config_map_key_ref.as_ref().map(|r| r.name.clone()));
                secrets.extend(v.secret_key_ref.as_ref().map(|r| r.name.clone()));
            }
        }
        let mut out = MapLookup::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.shared.client.clone(), &ns);
        for n in cms {
            if let Ok(Some(cm)) = cm_api.get_opt(&n).await {
                out.config_maps.insert(n, cm.data.unwrap_or_default());
            }
        }
        let s_api: Api<Secret> = Api::namespaced(self.shared.client.clone(), &ns);
        for n in secrets {
            if let Ok(Some(s)) = s_api.get_opt(&n).await {
                let mut data: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                data.extend(s.string_data.unwrap_or_default());
                out.secrets.insert(n, data);
            }
        }
        out
    }
}

/// ConfigMaps and Secrets fetched for one container's environment.
#[derive(Debug, Default)]
struct MapLookup {
    config_maps: HashMap<String, BTreeMap<String, String>>,
    secrets: HashMap<String, BTreeMap<String, String>>,
}

impl env::Lookup for MapLookup {
    fn config_map(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.config_maps.get(name).cloned()
    }
    fn secret(&self, name: &str) -> Option<BTreeMap<String, String>> {
        self.secrets.get(name).cloned()
    }
}

/// Why a container instance could not be made: the reason and message the
/// pod status shows while it waits, and whether the retry backs off as an
/// image pull does (10 s doubling to 5 min) rather than after a flat 10 s.
#[derive(Debug)]
pub(super) struct StartFailure {
    pub(super) reason: WaitingReason,
    pub(super) message: String,
    pub(super) pull_backoff: bool,
}

impl StartFailure {
    fn new(reason: WaitingReason, message: String) -> Self {
        Self {
            reason,
            message,
            pull_backoff: false,
        }
    }
}
