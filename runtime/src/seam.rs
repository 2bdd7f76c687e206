//! The kubelet's one seam to the container runtime: the containers, tasks,
//! execs, leases and snapshots it drives, as a trait ([`ContainerRuntime`])
//! that [`Containerd`] implements over containerd's native API, and that
//! the kubelet's unit tests implement with a recording fake (in their test
//! code only). Image pulls are not here: they go through
//! [`crate::image::Puller`], which writes containerd's content store.
//!
//! The trait is object-safe (`async-trait`), so the kubelet holds one
//! `Arc<dyn ContainerRuntime>` rather than being generic over it.

use std::{collections::HashMap, path::Path, time::Duration};

use containerd_client::types::{Descriptor, Mount};
use futures_util::{StreamExt as _, stream::BoxStream};

use crate::containerd::{Containerd, ContainerdError, TaskEvent, TaskInfo};

type Result<T> = std::result::Result<T, ContainerdError>;

/// What the kubelet asks of the container runtime. Each method is the
/// [`Containerd`] call of the same name; see there for the details.
#[async_trait::async_trait]
pub trait ContainerRuntime: Send + Sync + std::fmt::Debug {
    /// The runtime's version string.
    async fn version(&self) -> Result<String>;
    async fn lease_create(&self, id: &str, expire: Duration) -> Result<()>;
    async fn lease_delete(&self, id: &str) -> Result<()>;
    async fn snapshot_prepare(
        &self,
        lease: Option<&str>,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>>;
    async fn snapshot_remove(&self, key: &str) -> Result<()>;
    async fn image_list(&self) -> Result<Vec<(String, Descriptor)>>;
    async fn container_create(
        &self,
        id: &str,
        image: &str,
        spec_json: Vec<u8>,
        snapshot_key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()>;
    /// Containers matching a containerd filter, with their labels.
    async fn container_list(&self, filter: &str) -> Result<Vec<(String, HashMap<String, String>)>>;
    async fn container_set_labels(&self, id: &str, labels: HashMap<String, String>) -> Result<()>;
    async fn container_delete(&self, id: &str) -> Result<()>;
    async fn container_spec(&self, id: &str) -> Result<serde_json::Value>;
    async fn task_create(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        stdio: [&str; 3],
        terminal: bool,
    ) -> Result<u32>;
    async fn task_start(&self, id: &str) -> Result<u32>;
    /// Signals a task (`all`: every process in it); a task that is gone
    /// counts as signalled.
    async fn task_kill(&self, id: &str, signal: u32, all: bool) -> Result<()>;
    async fn task_delete(&self, id: &str) -> Result<()>;
    /// The task, or `None` when it does not exist.
    async fn task_get(&self, id: &str) -> Result<Option<TaskInfo>>;
    /// Task exits and OOM kills in the runtime's namespace.
    async fn subscribe_task_events(&self) -> Result<BoxStream<'static, Option<TaskEvent>>>;
    #[expect(
        clippy::too_many_arguments,
        reason = "containerd's ExecProcessRequest fields, one by one"
    )]
    async fn exec_start(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        stdin: &str,
        stdout: &str,
        stderr: &str,
        terminal: bool,
    ) -> Result<()>;
    async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<u32>;
    async fn exec_resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()>;
    async fn exec_close_stdin(&self, id: &str, exec_id: &str) -> Result<()>;
    async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()>;
    async fn exec_delete(&self, id: &str, exec_id: &str);
    /// Runs a process in a task to completion (output to a file), or
    /// `None` if it outlived `timeout`.
    async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        output: &Path,
        timeout: Duration,
    ) -> Result<Option<u32>>;
}

#[async_trait::async_trait]
impl ContainerRuntime for Containerd {
    async fn version(&self) -> Result<String> {
        Containerd::version(self).await
    }
    async fn lease_create(&self, id: &str, expire: Duration) -> Result<()> {
        Containerd::lease_create(self, id, expire).await
    }
    async fn lease_delete(&self, id: &str) -> Result<()> {
        Containerd::lease_delete(self, id).await
    }
    async fn snapshot_prepare(
        &self,
        lease: Option<&str>,
        key: &str,
        parent: &str,
        labels: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        Containerd::snapshot_prepare(self, lease, key, parent, labels).await
    }
    async fn snapshot_remove(&self, key: &str) -> Result<()> {
        Containerd::snapshot_remove(self, key).await
    }
    async fn image_list(&self) -> Result<Vec<(String, Descriptor)>> {
        Containerd::image_list(self).await
    }
    async fn container_create(
        &self,
        id: &str,
        image: &str,
        spec_json: Vec<u8>,
        snapshot_key: &str,
        labels: HashMap<String, String>,
    ) -> Result<()> {
        Containerd::container_create(self, id, image, spec_json, snapshot_key, labels).await
    }
    async fn container_list(&self, filter: &str) -> Result<Vec<(String, HashMap<String, String>)>> {
        Containerd::container_list(self, filter).await
    }
    async fn container_set_labels(&self, id: &str, labels: HashMap<String, String>) -> Result<()> {
        Containerd::container_set_labels(self, id, labels).await
    }
    async fn container_delete(&self, id: &str) -> Result<()> {
        Containerd::container_delete(self, id).await
    }
    async fn container_spec(&self, id: &str) -> Result<serde_json::Value> {
        Containerd::container_spec(self, id).await
    }
    async fn task_create(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        stdio: [&str; 3],
        terminal: bool,
    ) -> Result<u32> {
        Containerd::task_create(self, id, rootfs, stdio, terminal).await
    }
    async fn task_start(&self, id: &str) -> Result<u32> {
        Containerd::task_start(self, id).await
    }
    async fn task_kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        Containerd::task_kill(self, id, signal, all).await
    }
    async fn task_delete(&self, id: &str) -> Result<()> {
        Containerd::task_delete(self, id).await
    }
    async fn task_get(&self, id: &str) -> Result<Option<TaskInfo>> {
        Containerd::task_get(self, id).await
    }
    async fn subscribe_task_events(&self) -> Result<BoxStream<'static, Option<TaskEvent>>> {
        Ok(Containerd::subscribe_task_events(self).await?.boxed())
    }
    async fn exec_start(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        stdin: &str,
        stdout: &str,
        stderr: &str,
        terminal: bool,
    ) -> Result<()> {
        Containerd::exec_start(self, id, exec_id, process, stdin, stdout, stderr, terminal).await
    }
    async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<u32> {
        Containerd::exec_wait(self, id, exec_id).await
    }
    async fn exec_resize(&self, id: &str, exec_id: &str, width: u32, height: u32) -> Result<()> {
        Containerd::exec_resize(self, id, exec_id, width, height).await
    }
    async fn exec_close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        Containerd::exec_close_stdin(self, id, exec_id).await
    }
    async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        Containerd::exec_kill(self, id, exec_id, signal).await
    }
    async fn exec_delete(&self, id: &str, exec_id: &str) {
        Containerd::exec_delete(self, id, exec_id).await;
    }
    async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        process: Vec<u8>,
        output: &Path,
        timeout: Duration,
    ) -> Result<Option<u32>> {
        Containerd::exec(self, id, exec_id, process, output, timeout).await
    }
}
