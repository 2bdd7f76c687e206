//! A recording fake of the runtime seam, for the kubelet's unit tests
//! only: every call is written down as one line (`"task_kill c1 15"`), and
//! tasks stop on the signals they were told to stop on, so a test asserts
//! the exact sequence of calls a kubelet step makes.

use std::{
    collections::HashMap,
    path::Path,
    sync::{Mutex, PoisonError},
    time::Duration,
};

use containerd_client::types::{Descriptor, Mount};
use futures_util::stream::BoxStream;
use rudder_runtime::{
    ContainerRuntime,
    containerd::{ContainerdError, TaskEvent, TaskInfo, TaskState},
};

type Result<T> = std::result::Result<T, ContainerdError>;

/// Which signal makes a fake task exit.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stops {
    /// This signal, or SIGKILL.
    On(u32),
    /// None: a task stuck in the kernel (uninterruptible sleep).
    Never,
}

#[derive(Debug, Default)]
struct State {
    calls: Vec<String>,
    tasks: HashMap<String, (TaskState, Option<Stops>)>,
    /// Exit status and time of tasks made as exited.
    exits: HashMap<String, (u32, (i64, u32))>,
}

/// The fake runtime.
#[derive(Debug, Default)]
pub(crate) struct Fake {
    state: Mutex<State>,
}

impl Fake {
    /// A runtime with one running task.
    pub(crate) fn with_task(id: &str, stops: Stops) -> Self {
        let fake = Self::default();
        fake.lock()
            .tasks
            .insert(id.to_owned(), (TaskState::Running, Some(stops)));
        fake
    }

    /// A runtime with one task that has exited (`exited_at` in Unix
    /// seconds and nanoseconds).
    pub(crate) fn with_exited(id: &str, code: u32, exited_at: (i64, u32)) -> Self {
        let fake = Self::default();
        let mut st = fake.lock();
        st.tasks.insert(id.to_owned(), (TaskState::Stopped, None));
        st.exits.insert(id.to_owned(), (code, exited_at));
        drop(st);
        fake
    }

    /// The calls made so far.
    pub(crate) fn calls(&self) -> Vec<String> {
        self.lock().calls.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn record(&self, call: String) {
        self.lock().calls.push(call);
    }
}

#[async_trait::async_trait]
impl ContainerRuntime for Fake {
    async fn version(&self) -> Result<String> {
        self.record("version".into());
        Ok("fake".into())
    }
    async fn lease_create(&self, id: &str, _: Duration) -> Result<()> {
        self.record(format!("lease_create {id}"));
        Ok(())
    }
    async fn lease_delete(&self, id: &str) -> Result<()> {
        self.record(format!("lease_delete {id}"));
        Ok(())
    }
    async fn snapshot_prepare(
        &self,
        _: Option<&str>,
        key: &str,
        parent: &str,
        _: HashMap<String, String>,
    ) -> Result<Vec<Mount>> {
        self.record(format!("snapshot_prepare {key} {parent}"));
        Ok(vec![])
    }
    async fn snapshot_remove(&self, key: &str) -> Result<()> {
        self.record(format!("snapshot_remove {key}"));
        Ok(())
    }
    async fn image_list(&self) -> Result<Vec<(String, Descriptor)>> {
        self.record("image_list".into());
        Ok(vec![])
    }
    async fn container_create(
        &self,
        id: &str,
        image: &str,
        _: Vec<u8>,
        _: &str,
        _: HashMap<String, String>,
    ) -> Result<()> {
        self.record(format!("container_create {id} {image}"));
        Ok(())
    }
    async fn container_list(&self, filter: &str) -> Result<Vec<(String, HashMap<String, String>)>> {
        self.record(format!("container_list {filter}"));
        Ok(vec![])
    }
    async fn container_set_labels(&self, id: &str, labels: HashMap<String, String>) -> Result<()> {
        let mut l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        l.sort();
        self.record(format!("container_set_labels {id} {}", l.join(",")));
        Ok(())
    }
    async fn container_delete(&self, id: &str) -> Result<()> {
        self.record(format!("container_delete {id}"));
        Ok(())
    }
    async fn container_spec(&self, id: &str) -> Result<serde_json::Value> {
        self.record(format!("container_spec {id}"));
        Ok(serde_json::Value::Null)
    }
    async fn task_create(&self, id: &str, _: Vec<Mount>, _: [&str; 3], _: bool) -> Result<u32> {
        self.record(format!("task_create {id}"));
        self.lock()
            .tasks
            .insert(id.to_owned(), (TaskState::Created, None));
        Ok(1)
    }
    async fn task_start(&self, id: &str) -> Result<u32> {
        self.record(format!("task_start {id}"));
        if let Some(t) = self.lock().tasks.get_mut(id) {
            t.0 = TaskState::Running;
        }
        Ok(1)
    }
    async fn task_kill(&self, id: &str, signal: u32, all: bool) -> Result<()> {
        let all = if all { " all" } else { "" };
        self.record(format!("task_kill {id} {signal}{all}"));
        if let Some((state, stops)) = self.lock().tasks.get_mut(id) {
            let exits = match stops {
                Some(Stops::On(s)) => signal == *s || signal == 9,
                Some(Stops::Never) => false,
                None => signal == 9,
            };
            if exits {
                *state = TaskState::Stopped;
            }
        }
        Ok(())
    }
    async fn task_delete(&self, id: &str) -> Result<()> {
        self.record(format!("task_delete {id}"));
        self.lock().tasks.remove(id);
        Ok(())
    }
    async fn task_get(&self, id: &str) -> Result<Option<TaskInfo>> {
        self.record(format!("task_get {id}"));
        let st = self.lock();
        let exit = st.exits.get(id);
        Ok(st.tasks.get(id).map(|(state, _)| TaskInfo {
            container_id: id.to_owned(),
            pid: 1,
            state: *state,
            exit_status: exit.map_or(0, |e| e.0),
            exited_at: exit.map(|e| e.1),
        }))
    }
    async fn subscribe_task_events(&self) -> Result<BoxStream<'static, Option<TaskEvent>>> {
        self.record("subscribe_task_events".into());
        Ok(Box::pin(futures_util::stream::empty()))
    }
    async fn exec_start(
        &self,
        id: &str,
        exec_id: &str,
        _: Vec<u8>,
        _: &str,
        _: &str,
        _: &str,
        _: bool,
    ) -> Result<()> {
        self.record(format!("exec_start {id} {exec_id}"));
        Ok(())
    }
    async fn exec_wait(&self, id: &str, exec_id: &str) -> Result<u32> {
        self.record(format!("exec_wait {id} {exec_id}"));
        Ok(0)
    }
    async fn exec_resize(&self, id: &str, exec_id: &str, w: u32, h: u32) -> Result<()> {
        self.record(format!("exec_resize {id} {exec_id} {w}x{h}"));
        Ok(())
    }
    async fn exec_close_stdin(&self, id: &str, exec_id: &str) -> Result<()> {
        self.record(format!("exec_close_stdin {id} {exec_id}"));
        Ok(())
    }
    async fn exec_kill(&self, id: &str, exec_id: &str, signal: u32) -> Result<()> {
        self.record(format!("exec_kill {id} {exec_id} {signal}"));
        Ok(())
    }
    async fn exec_delete(&self, id: &str, exec_id: &str) {
        self.record(format!("exec_delete {id} {exec_id}"));
    }
    async fn exec(
        &self,
        id: &str,
        exec_id: &str,
        _: Vec<u8>,
        _: &Path,
        _: Duration,
    ) -> Result<Option<u32>> {
        self.record(format!("exec {id} {exec_id}"));
        Ok(Some(0))
    }
}
