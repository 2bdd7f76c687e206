//! Snapshots (prepared, committed, listed, removed) and the diff service
//! that unpacks layers into them.

use super::*;

impl Containerd {
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
}
