//! Containers, their tasks and exec processes, and the task event stream.

use super::*;

impl Containerd {
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
                options: runtime_options(self.systemd_cgroup),
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

    /// Creates the container's task (its init process, not yet started)
    /// with stdio `stdout`/`stderr` (URIs such as `binary:///path?args`),
    /// `stdin` (a FIFO path, or empty for none) and a terminal if asked.
    pub async fn task_create(
        &self,
        id: &str,
        rootfs: Vec<Mount>,
        stdio: [&str; 3],
        terminal: bool,
    ) -> Result<u32> {
        let [stdin, stdout, stderr] = stdio;
        let r = TasksClient::new(self.channel.clone())
            .create(self.req(
                api::CreateTaskRequest {
                    container_id: id.to_string(),
                    rootfs,
                    stdin: stdin.to_string(),
                    stdout: stdout.to_string(),
                    stderr: stderr.to_string(),
                    terminal,
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
