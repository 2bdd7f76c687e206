//! The one seam to containerd: its native gRPC API (containerd 1.6, no
//! Transfer or Sandbox services), through the `containerd-client` bindings.
//!
//! Every call carries the agent's containerd namespace (`containerd-namespace`
//! metadata) and, where content or snapshots are being made, a lease
//! (`containerd-lease`) so containerd's garbage collector cannot take
//! half-made work away.

use std::{collections::HashMap, path::Path, time::Duration};

use containerd_client::{
    services::v1::{
        self as api, Container, container::Runtime, containers_client::ContainersClient,
        content_client::ContentClient, diff_client::DiffClient, events_client::EventsClient,
        images_client::ImagesClient, leases_client::LeasesClient,
        snapshots::snapshots_client::SnapshotsClient, tasks_client::TasksClient,
        version_client::VersionClient,
    },
    tonic::{self, Code, Request, transport::Channel},
    types::{Descriptor, Mount, v1::Process},
};
use futures_util::StreamExt as _;
use prost_types::{Any, FieldMask};

/// The snapshotter the agent unpacks into and runs from.
pub const SNAPSHOTTER: &str = "overlayfs";
/// The runtime every container runs with.
pub const RUNTIME: &str = "io.containerd.runc.v2";
/// containerd's type URL for an OCI runtime spec carried as JSON.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";

/// A failed containerd call, naming the call and the object.
#[derive(Debug, thiserror::Error)]
pub enum ContainerdError {
    #[error("cannot connect to containerd at {socket}: {source}")]
    Connect {
        socket: String,
        #[source]
        source: tonic::transport::Error,
    },
    #[error("containerd {call} {object}: {}: {}", .status.code(), .status.message())]
    Call {
        call: &'static str,
        object: String,
        status: tonic::Status,
    },
    #[error("containerd {call} {object}: {message}")]
    Protocol {
        call: &'static str,
        object: String,
        message: String,
    },
}

impl ContainerdError {
    /// The gRPC code of a failed call.
    pub fn code(&self) -> Option<Code> {
        match self {
            Self::Call { status, .. } => Some(status.code()),
            _ => None,
        }
    }

    /// Whether the call failed because the object does not exist.
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(Code::NotFound)
    }

    /// Whether the call failed because the object exists already.
    pub fn is_already_exists(&self) -> bool {
        self.code() == Some(Code::AlreadyExists)
    }
}

type Result<T> = std::result::Result<T, ContainerdError>;

/// The result of a removal (or signal) for which an object that is already
/// gone counts as done.
fn absent_ok<T>(
    r: std::result::Result<T, tonic::Status>,
    call: &'static str,
    object: &str,
) -> Result<()> {
    match r {
        Ok(_) => Ok(()),
        Err(s) if s.code() == Code::NotFound => Ok(()),
        Err(s) => Err(call_err(call, object)(s)),
    }
}

fn call_err(
    call: &'static str,
    object: impl Into<String>,
) -> impl FnOnce(tonic::Status) -> ContainerdError {
    let object = object.into();
    move |status| ContainerdError::Call {
        call,
        object,
        status,
    }
}

/// A task as containerd reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskInfo {
    pub container_id: String,
    pub pid: u32,
    pub state: TaskState,
    pub exit_status: u32,
    /// When it exited (Unix seconds and nanoseconds), if it did.
    pub exited_at: Option<(i64, u32)>,
}

/// containerd's task states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskState {
    Created,
    Running,
    Stopped,
    Paused,
    Unknown,
}

/// An event of interest to the kubelet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaskEvent {
    Exit { container_id: String },
    Oom { container_id: String },
}

/// A containerd client bound to one containerd namespace.
#[derive(Debug, Clone)]
pub struct Containerd {
    channel: Channel,
    namespace: String,
}

impl Containerd {
    /// Connects to containerd's gRPC socket.
    pub async fn connect(socket: &Path, namespace: &str) -> Result<Self> {
        let channel = containerd_client::connect(socket).await.map_err(|source| {
            ContainerdError::Connect {
                socket: socket.display().to_string(),
                source,
            }
        })?;
        Ok(Self {
            channel,
            namespace: namespace.to_string(),
        })
    }

    /// The containerd namespace every call is made in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    fn req<T>(&self, msg: T, lease: Option<&str>) -> Request<T> {
        let mut req = Request::new(msg);
        req.set_timeout(Duration::from_secs(120));
        let md = req.metadata_mut();
        if let Ok(v) = self.namespace.parse() {
            md.insert("containerd-namespace", v);
        }
        if let Some(v) = lease.and_then(|l| l.parse().ok()) {
            md.insert("containerd-lease", v);
        }
        req
    }

    /// containerd's version string.
    pub async fn version(&self) -> Result<String> {
        let v = VersionClient::new(self.channel.clone())
            .version(Request::new(()))
            .await
            .map_err(call_err("version", ""))?
            .into_inner();
        Ok(v.version)
    }

    // ---- leases ----

    /// Creates a lease that expires by itself after `expire` (containerd's
    /// `containerd.io/gc.expire` label), so a crash leaves nothing pinned.
    pub async fn lease_create(&self, id: &str, expire: Duration) -> Result<()> {
        let until = jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::try_from(expire).unwrap_or_default())
            .unwrap_or_else(|_| jiff::Timestamp::now());
        let labels = HashMap::from([(
            "containerd.io/gc.expire".to_string(),
            until.strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
        )]);
        LeasesClient::new(self.channel.clone())
            .create(self.req(
                api::CreateRequest {
                    id: id.to_string(),
                    labels,
                },
                None,
            ))
            .await
            .map_err(call_err("lease create", id))?;
        Ok(())
    }

    /// Deletes a lease; a missing one is not an error.
    pub async fn lease_delete(&self, id: &str) -> Result<()> {
        absent_ok(
            LeasesClient::new(self.channel.clone())
                .delete(self.req(
                    api::DeleteRequest {
                        id: id.to_string(),
                        sync: false,
                    },
                    None,
                ))
                .await,
            "lease delete",
            id,
        )
    }

    // ---- content ----

    /// A blob's labels, or `None` when the content store does not have it.
    pub async fn content_labels(&self, digest: &str) -> Result<Option<HashMap<String, String>>> {
        match ContentClient::new(self.channel.clone())
            .info(self.req(
                api::InfoRequest {
                    digest: digest.to_string(),
                },
                None,
            ))
            .await
        {
            Ok(r) => Ok(Some(
                r.into_inner().info.map(|i| i.labels).unwrap_or_default(),
            )),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(call_err("content info", digest)(s)),
        }
    }

    /// Reads a whole blob (manifests and configs: small).
    pub async fn content_read(&self, digest: &str) -> Result<Vec<u8>> {
        let mut stream = ContentClient::new(self.channel.clone())
            .read(self.req(
                api::ReadContentRequest {
                    digest: digest.to_string(),
                    offset: 0,
                    size: 0,
                },
                None,
            ))
            .await
            .map_err(call_err("content read", digest))?
            .into_inner();
        let mut out = Vec::new();
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk.map_err(call_err("content read", digest))?.data);
        }
        Ok(out)
    }

    /// Writes a blob from `file` (whose digest the caller verified) and
    /// commits it under `digest` with `labels`. Content that exists already
    /// is not an error.
    pub async fn content_write(
        &self,
        lease: &str,
        digest: &str,
        mut file: std::fs::File,
        size: u64,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        use std::io::Read as _;
        const CHUNK: usize = 1 << 20;
        let reference = format!("rudder-{digest}");
        let (tx, rx) = tokio::sync::mpsc::channel::<api::WriteContentRequest>(4);
        let total = i64::try_from(size).unwrap_or(i64::MAX);
        let digest_owned = digest.to_string();
        // Reading the file is blocking; it feeds the gRPC stream.
        let reader = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            let mut offset = 0i64;
            let mut buf = vec![0u8; CHUNK];
            loop {
                let n = file.read(&mut buf)?;
                if n == 0 {
                    break;
                }
                let req = api::WriteContentRequest {
                    action: api::WriteAction::Write as i32,
                    r#ref: reference.clone(),
                    total,
                    expected: digest_owned.clone(),
                    offset,
                    data: buf[..n].to_vec(),
                    labels: HashMap::new(),
                };
                offset += n as i64;
                if tx.blocking_send(req).is_err() {
                    return Ok(());
                }
            }
            let _ = tx.blocking_send(api::WriteContentRequest {
                action: api::WriteAction::Commit as i32,
                r#ref: reference,
                total,
                expected: digest_owned,
                offset,
                data: vec![],
                labels,
            });
            Ok(())
        });
        let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
        let result = ContentClient::new(self.channel.clone())
            .write(self.req(stream, Some(lease)))
            .await;
        let mut responses = match result {
            Ok(r) => r.into_inner(),
            Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
            Err(s) => return Err(call_err("content write", digest)(s)),
        };
        let mut committed = false;
        while let Some(resp) = responses.next().await {
            match resp {
                Ok(r) if r.action == api::WriteAction::Commit as i32 => committed = true,
                Ok(_) => {}
                Err(s) if s.code() == Code::AlreadyExists => return Ok(()),
                Err(s) => return Err(call_err("content write", digest)(s)),
            }
        }
        reader
            .await
            .map_err(|e| ContainerdError::Protocol {
                call: "content write",
                object: digest.to_string(),
                message: e.to_string(),
            })?
            .map_err(|e| ContainerdError::Protocol {
                call: "content write",
                object: digest.to_string(),
                message: format!("reading the downloaded blob: {e}"),
            })?;
        if committed {
            Ok(())
        } else {
            Err(ContainerdError::Protocol {
                call: "content write",
                object: digest.to_string(),
                message: "the stream ended without a commit".into(),
            })
        }
    }

    /// Adds labels to a blob (GC references, `containerd.io/uncompressed`).
    pub async fn content_add_labels(
        &self,
        digest: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContentClient::new(self.channel.clone())
            .update(self.req(
                api::UpdateRequest {
                    info: Some(api::Info {
                        digest: digest.to_string(),
                        labels,
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths }),
                },
                None,
            ))
            .await
            .map_err(call_err("content update", digest))?;
        Ok(())
    }

    // ---- images ----

    /// An image's target descriptor, or `None` if containerd has no image of
    /// that name.
    pub async fn image_get(&self, name: &str) -> Result<Option<Descriptor>> {
        match ImagesClient::new(self.channel.clone())
            .get(self.req(
                api::GetImageRequest {
                    name: name.to_string(),
                },
                None,
            ))
            .await
        {
            Ok(r) => Ok(r.into_inner().image.and_then(|i| i.target)),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(call_err("image get", name)(s)),
        }
    }

    /// Every image name with its target digest.
    pub async fn image_list(&self) -> Result<Vec<(String, Descriptor)>> {
        let r = ImagesClient::new(self.channel.clone())
            .list(self.req(api::ListImagesRequest { filters: vec![] }, None))
            .await
            .map_err(call_err("image list", ""))?
            .into_inner();
        Ok(r.images
            .into_iter()
            .filter_map(|i| Some((i.name, i.target?)))
            .collect())
    }

    /// Creates the image record, or points an existing one at `target`.
    pub async fn image_put(&self, name: &str, target: Descriptor) -> Result<()> {
        let image = api::Image {
            name: name.to_string(),
            target: Some(target),
            ..Default::default()
        };
        let mut client = ImagesClient::new(self.channel.clone());
        match client
            .create(self.req(
                api::CreateImageRequest {
                    image: Some(image.clone()),
                    source_date_epoch: None,
                },
                None,
            ))
            .await
        {
            Ok(_) => Ok(()),
            Err(s) if s.code() == Code::AlreadyExists => {
                client
                    .update(self.req(
                        api::UpdateImageRequest {
                            image: Some(image),
                            update_mask: Some(FieldMask {
                                paths: vec!["target".into()],
                            }),
                            source_date_epoch: None,
                        },
                        None,
                    ))
                    .await
                    .map_err(call_err("image update", name))?;
                Ok(())
            }
            Err(s) => Err(call_err("image create", name)(s)),
        }
    }

    // ---- snapshots and diff ----

    /// Prepares an active snapshot and returns its mounts.
    pub async fn snapshot_prepare(
        &self,
        lease: Option<&str>,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        let r = SnapshotsClient::new(self.channel.clone())
            .prepare(self.req(
                api::snapshots::PrepareSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                    parent: parent.to_string(),
                    labels,
                },
                lease,
            ))
            .await
            .map_err(call_err("snapshot prepare", key))?;
        Ok(r.into_inner().mounts)
    }

    /// The mounts of an existing active snapshot.
    pub async fn snapshot_mounts(&self, key: &str) -> Result<Vec<Mount>> {
        let r = SnapshotsClient::new(self.channel.clone())
            .mounts(self.req(
                api::snapshots::MountsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                },
                None,
            ))
            .await
            .map_err(call_err("snapshot mounts", key))?;
        Ok(r.into_inner().mounts)
    }

    /// Whether a snapshot (active or committed) exists.
    pub async fn snapshot_exists(&self, key: &str) -> Result<bool> {
        match SnapshotsClient::new(self.channel.clone())
            .stat(self.req(
                api::snapshots::StatSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    key: key.to_string(),
                },
                None,
            ))
            .await
        {
            Ok(_) => Ok(true),
            Err(s) if s.code() == Code::NotFound => Ok(false),
            Err(s) => Err(call_err("snapshot stat", key)(s)),
        }
    }

    /// Commits an active snapshot under `name`.
    pub async fn snapshot_commit(
        &self,
        lease: Option<&str>,
        name: &str,
        key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        SnapshotsClient::new(self.channel.clone())
            .commit(self.req(
                api::snapshots::CommitSnapshotRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    name: name.to_string(),
                    key: key.to_string(),
                    labels,
                },
                lease,
            ))
            .await
            .map_err(call_err("snapshot commit", name))?;
        Ok(())
    }

    /// Removes a snapshot; a missing one is not an error.
    pub async fn snapshot_remove(&self, key: &str) -> Result<()> {
        absent_ok(
            SnapshotsClient::new(self.channel.clone())
                .remove(self.req(
                    api::snapshots::RemoveSnapshotRequest {
                        snapshotter: SNAPSHOTTER.into(),
                        key: key.to_string(),
                    },
                    None,
                ))
                .await,
            "snapshot remove",
            key,
        )
    }

    /// Active snapshot keys whose labels match `filter` (containerd filter
    /// syntax, e.g. `labels."rudder.io/pod-uid"`).
    pub async fn snapshot_list(&self, filter: &str) -> Result<Vec<String>> {
        let mut stream = SnapshotsClient::new(self.channel.clone())
            .list(self.req(
                api::snapshots::ListSnapshotsRequest {
                    snapshotter: SNAPSHOTTER.into(),
                    filters: vec![filter.to_string()],
                },
                None,
            ))
            .await
            .map_err(call_err("snapshot list", filter))?
            .into_inner();
        let mut out = vec![];
        while let Some(r) = stream.next().await {
            out.extend(
                r.map_err(call_err("snapshot list", filter))?
                    .info
                    .into_iter()
                    .map(|i| i.name),
            );
        }
        Ok(out)
    }

    /// Applies a layer blob onto `mounts`; returns the digest of what was
    /// applied (the layer's uncompressed digest, its diffID).
    pub async fn diff_apply(
        &self,
        lease: &str,
        layer: Descriptor,
        mounts: Vec<Mount>,
    ) -> Result<String> {
        let digest = layer.digest.clone();
        let r = DiffClient::new(self.channel.clone())
            .apply(self.req(
                api::ApplyRequest {
                    diff: Some(layer),
                    mounts,
                    payloads: HashMap::new(),
                    sync_fs: false,
                },
                Some(lease),
            ))
            .await
            .map_err(call_err("diff apply", &digest))?;
        Ok(r.into_inner().applied.map(|d| d.digest).unwrap_or_default())
    }

    // ---- containers ----

    /// Creates a container record running `spec_json` from the snapshot
    /// `snapshot_key`.
    pub async fn container_create(
        &self,
        id: &str,
        image: &str,
        spec_json: Vec<u8>,
        snapshot_key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let container = Container {
            id: id.to_string(),
            labels,
            image: image.to_string(),
            runtime: Some(Runtime {
                name: RUNTIME.into(),
                options: None,
            }),
            spec: Some(Any {
                type_url: SPEC_TYPE_URL.into(),
                value: spec_json,
            }),
            snapshotter: SNAPSHOTTER.into(),
            snapshot_key: snapshot_key.to_string(),
            ..Default::default()
        };
        ContainersClient::new(self.channel.clone())
            .create(self.req(
                api::CreateContainerRequest {
                    container: Some(container),
                },
                None,
            ))
            .await
            .map_err(call_err("container create", id))?;
        Ok(())
    }

    /// Containers whose labels match `filter` (empty: all), with their labels.
    pub async fn container_list(
        &self,
        filter: &str,
    ) -> Result<Vec<(String, HashMap<String, String>)>> {
        let filters = if filter.is_empty() {
            vec![]
        } else {
            vec![filter.to_string()]
        };
        let r = ContainersClient::new(self.channel.clone())
            .list(self.req(api::ListContainersRequest { filters }, None))
            .await
            .map_err(call_err("container list", filter))?
            .into_inner();
        Ok(r.containers.into_iter().map(|c| (c.id, c.labels)).collect())
    }

    /// Sets labels on a container (merged with the others).
    pub async fn container_set_labels(
        &self,
        id: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        let paths = labels.keys().map(|k| format!("labels.{k}")).collect();
        ContainersClient::new(self.channel.clone())
            .update(self.req(
                api::UpdateContainerRequest {
                    container: Some(Container {
                        id: id.to_string(),
                        labels,
                        ..Default::default()
                    }),
                    update_mask: Some(FieldMask { paths }),
                },
                None,
            ))
            .await
            .map_err(call_err("container update", id))?;
        Ok(())
    }

    /// Deletes a container record; a missing one is not an error.
    pub async fn container_delete(&self, id: &str) -> Result<()> {
        absent_ok(
            ContainersClient::new(self.channel.clone())
                .delete(self.req(api::DeleteContainerRequest { id: id.to_string() }, None))
                .await,
            "container delete",
            id,
        )
    }

    // ---- tasks ----

    /// Creates the container's task (its init process, not yet started)
    /// with stdio `stdout`/`stderr` (URIs such as `binary:///path?args`).
    pub async fn task_create(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        stdout: &str,
        stderr: &str,
    ) -> Result<u32> {
        let r = TasksClient::new(self.channel.clone())
            .create(self.req(
                api::CreateTaskRequest {
                    container_id: id.to_string(),
                    rootfs,
                    stdout: stdout.to_string(),
                    stderr: stderr.to_string(),
                    ..Default::default()
                },
                None,
            ))
            .await
            .map_err(call_err("task create", id))?;
        Ok(r.into_inner().pid)
    }

    /// Starts a created task.
    pub async fn task_start(&self, id: &str) -> Result<u32> {
        let r = TasksClient::new(self.channel.clone())
            .start(self.req(
                api::StartRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                },
                None,
            ))
            .await
            .map_err(call_err("task start", id))?;
        Ok(r.into_inner().pid)
    }

    /// Sends `signal` to the task's init process (`all`: to every process
    /// of the container). A task that is gone is not an error.
    pub async fn task_kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        absent_ok(
            TasksClient::new(self.channel.clone())
                .kill(self.req(
                    api::KillRequest {
                        container_id: id.to_string(),
                        exec_id: String::new(),
                        signal,
                        all,
                    },
                    None,
                ))
                .await,
            "task kill",
            id,
        )
    }

    /// Deletes a stopped task; a missing one is not an error.
    pub async fn task_delete(&self, id: &str) -> Result<()> {
        absent_ok(
            TasksClient::new(self.channel.clone())
                .delete(self.req(
                    api::DeleteTaskRequest {
                        container_id: id.to_string(),
                    },
                    None,
                ))
                .await,
            "task delete",
            id,
        )
    }

    /// The container's OCI spec as containerd stores it (JSON).
    pub async fn container_spec(&self, id: &str) -> Result<serde_json::Value> {
        let r = ContainersClient::new(self.channel.clone())
            .get(self.req(api::GetContainerRequest { id: id.to_string() }, None))
            .await
            .map_err(call_err("container get", id))?
            .into_inner();
        let spec = r
            .container
            .and_then(|c| c.spec)
            .map(|a| a.value)
            .unwrap_or_default();
        serde_json::from_slice(&spec).map_err(|e| ContainerdError::Protocol {
            call: "container get",
            object: id.to_string(),
            message: format!("the stored spec is not JSON: {e}"),
        })
    }

    /// Starts a process in a running container with the given stdio (FIFO
    /// paths, or empty for none); `terminal`: a pty (stderr then empty).
    #[expect(
        clippy::too_many_arguments,
        reason = "containerd's ExecProcessRequest fields, one by one"
    )]
    pub async fn exec_start(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        stdin: &str,
        stdout: &str,
        stderr: &str,
        terminal: bool,
    ) -> Result<()> {
        let mut tasks = TasksClient::new(self.channel.clone());
        tasks
            .exec(self.req(
                api::ExecProcessRequest {
                    container_id: id.to_string(),
                    stdin: stdin.to_string(),
                    stdout: stdout.to_string(),
                    stderr: stderr.to_string(),
                    terminal,
                    spec: Some(Any {
                        type_url:
                            "types.containerd.io/opencontainers/runtime-spec/1/Process".into(),
                        value: process,
                    }),
                    exec_id: exec_id.to_string(),
                },
                None,
            ))
            .await
            .map_err(call_err("exec", id))?;
        let started = tasks
            .start(self.req(
                api::StartRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                },
                None,
            ))
            .await
            .map_err(call_err("exec start", id));
        if started.is_err() {
            self.exec_delete(id, exec_id).await;
        }
        started.map(drop)
    }

    /// Waits for an exec'd process to exit; its exit status.
    pub async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<u32> {
        let w = TasksClient::new(self.channel.clone())
            .wait(self.req(
                api::WaitRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                },
                None,
            ))
            .await
            .map_err(call_err("exec wait", id))?
            .into_inner();
        Ok(w.exit_status)
    }

    /// Resizes an exec'd process's terminal.
    pub async fn exec_resize(
        &self,
        id: &str,
        exec_id: &str,
        width: u32,
        height: u32,
    ) -> Result<()> {
        TasksClient::new(self.channel.clone())
            .resize_pty(self.req(
                api::ResizePtyRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    width,
                    height,
                },
                None,
            ))
            .await
            .map_err(call_err("resize pty", id))?;
        Ok(())
    }

    /// Closes an exec'd process's stdin (the shim holds the FIFO open, so
    /// closing our end is not enough).
    pub async fn exec_close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        TasksClient::new(self.channel.clone())
            .close_io(self.req(
                api::CloseIoRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    stdin: true,
                },
                None,
            ))
            .await
            .map_err(call_err("close stdin", id))?;
        Ok(())
    }

    /// Signals an exec'd process.
    pub async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        TasksClient::new(self.channel.clone())
            .kill(self.req(
                api::KillRequest {
                    container_id: id.to_string(),
                    exec_id: exec_id.to_string(),
                    signal,
                    all: false,
                },
                None,
            ))
            .await
            .map_err(call_err("exec kill", id))?;
        Ok(())
    }

    /// Removes an exec'd process's record (retrying while it is reaped).
    pub async fn exec_delete(&self, id: &str, exec_id: &str) {
        for _ in 0..20 {
            let r = TasksClient::new(self.channel.clone())
                .delete_process(self.req(
                    api::DeleteProcessRequest {
                        container_id: id.to_string(),
                        exec_id: exec_id.to_string(),
                    },
                    None,
                ))
                .await;
            match r {
                Ok(_) => return,
                Err(s) if s.code() == Code::NotFound => return,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Runs an extra process (`process`: an OCI Process as JSON) in the
    /// container's task and waits for it at most `timeout`; its output goes
    /// to `output` (a file the shim writes). Returns the exit status, or
    /// `None` when it timed out (it is killed then).
    pub async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        output: &Path,
        timeout: Duration,
    ) -> Result<Option<u32>> {
        let uri = format!("file://{}", output.display());
        self.exec_start(id, exec_id, process, "", &uri, &uri, false)
            .await?;
        let result = match tokio::time::timeout(timeout, self.exec_wait(id, exec_id)).await {
            Ok(r) => r.map(Some),
            Err(_) => {
                let _ = self.exec_kill(id, exec_id, 9).await;
                Ok(None)
            }
        };
        // The process record goes whatever happened (after a kill it may
        // take a moment to be reaped).
        self.exec_delete(id, exec_id).await;
        result
    }

    /// One container's task: `None` when it has none. (Listings skip tasks
    /// whose shim does not answer in time; this asks for the one.)
    pub async fn task_get(&self, id: &str) -> Result<Option<TaskInfo>> {
        match TasksClient::new(self.channel.clone())
            .get(self.req(
                api::GetRequest {
                    container_id: id.to_string(),
                    exec_id: String::new(),
                },
                None,
            ))
            .await
        {
            Ok(r) => Ok(r.into_inner().process.map(|p| {
                let mut t = task_info(p);
                t.container_id = id.to_string();
                t
            })),
            Err(s) if s.code() == Code::NotFound => Ok(None),
            Err(s) => Err(call_err("task get", id)(s)),
        }
    }

    /// Every task of the namespace.
    pub async fn task_list(&self) -> Result<Vec<TaskInfo>> {
        let r = TasksClient::new(self.channel.clone())
            .list(self.req(
                api::ListTasksRequest {
                    filter: String::new(),
                },
                None,
            ))
            .await
            .map_err(call_err("task list", ""))?
            .into_inner();
        Ok(r.tasks.into_iter().map(task_info).collect())
    }

    /// Subscribes to task exits and OOM kills in this namespace.
    pub async fn subscribe_task_events(
        &self,
    ) -> Result<impl futures_util::Stream<Item = Option<TaskEvent>> + use<>> {
        let ns = self.namespace.clone();
        let mut req = Request::new(api::SubscribeRequest {
            filters: vec![
                format!("namespace=={ns},topic==\"/tasks/exit\""),
                format!("namespace=={ns},topic==\"/tasks/oom\""),
            ],
        });
        if let Ok(v) = ns.parse() {
            req.metadata_mut().insert("containerd-namespace", v);
        }
        let stream = EventsClient::new(self.channel.clone())
            .subscribe(req)
            .await
            .map_err(call_err("events subscribe", ""))?
            .into_inner();
        Ok(stream.map(|e| {
            let envelope = e.ok()?;
            let event = envelope.event?;
            use prost::Message as _;
            match envelope.topic.as_str() {
                "/tasks/exit" => {
                    containerd_client::events::TaskExit::decode(event.value.as_slice())
                        .ok()
                        .map(|t| TaskEvent::Exit {
                            container_id: t.container_id,
                        })
                }
                "/tasks/oom" => containerd_client::events::TaskOom::decode(event.value.as_slice())
                    .ok()
                    .map(|t| TaskEvent::Oom {
                        container_id: t.container_id,
                    }),
                _ => None,
            }
        }))
    }
}

fn task_info(p: Process) -> TaskInfo {
    use containerd_client::types::v1::Status;
    let state = match Status::try_from(p.status).unwrap_or(Status::Unknown) {
        Status::Created => TaskState::Created,
        Status::Running => TaskState::Running,
        Status::Stopped => TaskState::Stopped,
        Status::Paused | Status::Pausing => TaskState::Paused,
        Status::Unknown => TaskState::Unknown,
    };
    TaskInfo {
        // containerd 1.6 fills only `id` (the task's id, which is the
        // container's) in task listings.
        container_id: if p.container_id.is_empty() {
            p.id
        } else {
            p.container_id
        },
        pid: p.pid,
        state,
        exit_status: p.exit_status,
        exited_at: p
            .exited_at
            .filter(|t| t.seconds > 0)
            .map(|t| (t.seconds, u32::try_from(t.nanos).unwrap_or(0))),
    }
}
