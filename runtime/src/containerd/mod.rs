//! The one seam to containerd: its native gRPC API (containerd 1.6, no
//! Transfer or Sandbox services), through the `containerd-client` bindings.
//!
//! Every call carries the agent's containerd namespace (`containerd-namespace`
//! metadata) and, where content or snapshots are being made, a lease
//! (`containerd-lease`) so containerd's garbage collector cannot take
//! half-made work away.
//!
//! The calls are grouped by service: `content.rs` (content and images),
//! `snapshots.rs` (snapshots and the diff service), `tasks.rs` (containers,
//! tasks, exec processes, task events); here, the connection, errors and
//! leases.

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
mod content;
mod snapshots;
mod tasks;

/// containerd's type URL for an OCI runtime spec carried as JSON.
const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// The runc shim's options (`containerd.runc.v1.Options`).
const RUNC_OPTIONS_TYPE_URL: &str = "containerd.runc.v1.Options";

/// The one field of the runc shim's options Rudder sets: runc's systemd
/// cgroup driver (`SystemdCgroup` in containerd's CRI configuration).
#[derive(Clone, PartialEq, prost::Message)]
struct RuncOptions {
    #[prost(bool, tag = "9")]
    systemd_cgroup: bool,
}

/// The container's runtime options: none for runc's cgroupfs driver (the
/// shim's default), else the systemd driver.
fn runtime_options(systemd_cgroup: bool) -> Option<Any> {
    systemd_cgroup.then(|| Any {
        type_url: RUNC_OPTIONS_TYPE_URL.into(),
        value: prost::Message::encode_to_vec(&RuncOptions { systemd_cgroup }),
    })
}

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
    /// Containers run with runc's systemd cgroup driver.
    systemd_cgroup: bool,
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
            systemd_cgroup: false,
        })
    }

    /// The containers this client creates use runc's systemd cgroup driver
    /// (their `cgroupsPath` then names a slice and a scope).
    pub fn with_systemd_cgroup(mut self, on: bool) -> Self {
        self.systemd_cgroup = on;
        self
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
}

#[cfg(test)]
mod options_tests {
    use super::*;

    #[test]
    fn systemd_cgroup_is_field_nine_of_runc_options() {
        assert_eq!(runtime_options(false), None);
        let any = runtime_options(true).unwrap();
        assert_eq!(any.type_url, "containerd.runc.v1.Options");
        // Field 9, varint: key (9 << 3) | 0 = 0x48, then true.
        assert_eq!(any.value, vec![0x48, 0x01]);
    }
}
