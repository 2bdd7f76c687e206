//! Pod volumes on the node, set up under the pod's directory and
//! bind-mounted into containers: emptyDir (on disk, or `medium: Memory` as
//! a tmpfs of `sizeLimit`), hostPath (every type), configMap, secret (on a
//! tmpfs), downwardAPI, projected (configMap, secret, downwardAPI and bound
//! service-account tokens, on a tmpfs) and persistentVolumeClaim (bound to
//! a hostPath or local PersistentVolume). Files are written atomically and
//! kept up to date.

use std::{
    collections::{BTreeMap, HashMap},
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, HostPathVolumeSource, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, Secret, ServiceAccountTokenProjection, Volume,
};
use kube::Api;

use super::{env::NodeFacts, spec::MountSpec};

/// A volume that could not be set up: shown as a `FailedMount` event and
/// keeps the container in `ContainerCreating`.
#[derive(Debug, thiserror::Error)]
#[error("MountVolume.SetUp failed for volume \"{volume}\" : {message}")]
pub(crate) struct VolumeError {
    pub volume: String,
    pub message: String,
}

fn verr(volume: &str, message: impl Into<String>) -> VolumeError {
    VolumeError {
        volume: volume.to_string(),
        message: message.into(),
    }
}

/// Writes a configMap or secret volume the way the kubelet's atomic
/// writer does: the files go into a fresh `..<timestamp>` directory, the
/// `..data` symlink is switched to it in one rename, and each top-level
/// entry is a symlink through `..data`. A container reading the volume sees
/// the old set or the new one, never a mix; unchanged content is left alone.
fn items_of(
    volume: &str,
    data: BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    default_mode: i32,
    kind: &str,
) -> Result<Vec<Entry>, VolumeError> {
    Ok(match items {
        Some(items) => items
            .iter()
            .map(|i| match data.get(&i.key) {
                Some(v) => Ok((i.path.clone(), v.clone(), i.mode.unwrap_or(default_mode))),
                None => Err(verr(
                    volume,
                    format!("{kind} references non-existent config key: {}", i.key),
                )),
            })
            .collect::<Result<_, _>>()?,
        None => data
            .into_iter()
            .map(|(k, v)| (k, v, default_mode))
            .collect(),
    })
}

/// A file of a volume written by [`write_entries`]: (relative path,
/// content, mode).
type Entry = (String, Vec<u8>, i32);

/// Writes a volume's files atomically (see above); `what` names the
/// source in errors.
fn write_entries(
    dir: &Path,
    volume: &str,
    entries: &[Entry],
    what: &str,
) -> Result<(), VolumeError> {
    let io = |e: std::io::Error| verr(volume, e.to_string());
    std::fs::create_dir_all(dir).map_err(io)?;
    for (rel, _, _) in entries {
        if rel.is_empty()
            || rel.starts_with('/')
            || rel.starts_with("..")
            || rel.split('/').any(|c| c == "..")
        {
            return Err(verr(volume, format!("invalid path {rel:?} in {what}")));
        }
    }
    let data_link = dir.join("..data");
    if let Ok(current) = std::fs::read_link(&data_link) {
        let cur = dir.join(current);
        let same = entries.iter().all(|(rel, value, mode)| {
            let p = cur.join(rel);
            std::fs::read(&p).is_ok_and(|v| v == *value)
                && std::fs::metadata(&p)
                    .is_ok_and(|m| m.permissions().mode() & 0o7777 == (*mode as u32 & 0o7777))
        }) && count_files(&cur) == entries.len();
        if same {
            return Ok(());
        }
    }
    let stamp = jiff::Timestamp::now()
        .strftime("..%Y_%m_%d_%H_%M_%S.%f")
        .to_string();
    let fresh = dir.join(&stamp);
    std::fs::create_dir_all(&fresh).map_err(io)?;
    for (rel, value, mode) in entries {
        let p = fresh.join(rel);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).map_err(io)?;
        }
        std::fs::write(&p, value).map_err(io)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(*mode as u32 & 0o7777))
            .map_err(io)?;
    }
    let old = std::fs::read_link(&data_link).ok();
    let tmp_link = dir.join("..data_tmp");
    let _ = std::fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&stamp, &tmp_link).map_err(io)?;
    std::fs::rename(&tmp_link, &data_link).map_err(io)?;
    // Top-level names through ..data; names no longer there go.
    let top: std::collections::BTreeSet<String> = entries
        .iter()
        .filter_map(|(rel, _, _)| rel.split('/').next().map(str::to_string))
        .collect();
    for t in &top {
        let link = dir.join(t);
        if std::fs::read_link(&link).is_err() {
            let _ = std::fs::remove_file(&link);
            std::os::unix::fs::symlink(PathBuf::from("..data").join(t), &link).map_err(io)?;
        }
    }
    for e in std::fs::read_dir(dir).map_err(io)?.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if !n.starts_with("..") && !top.contains(&n) {
            let _ = std::fs::remove_file(e.path());
        }
    }
    if let Some(old) = old.filter(|o| o.as_os_str() != stamp.as_str()) {
        let _ = std::fs::remove_dir_all(dir.join(old));
    }
    Ok(())
}

fn count_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| {
            let p = e.path();
            if p.is_dir() { count_files(&p) } else { 1 }
        })
        .sum()
}

/// Sets up every volume of the pod; returns each volume's host path.
pub(crate) async fn setup(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
    facts: &NodeFacts,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let mut out = BTreeMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let dir = pod_dir.join("volumes").join(&v.name);
        let path = setup_one(client, pod, v, &dir, facts).await?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

async fn setup_one(
    client: &kube::Client,
    pod: &Pod,
    v: &Volume,
    dir: &Path,
    facts: &NodeFacts,
) -> Result<PathBuf, VolumeError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let io = |e: std::io::Error| verr(&v.name, e.to_string());
    if let Some(h) = &v.host_path {
        host_path(&v.name, h)?;
        return Ok(PathBuf::from(&h.path));
    }
    if let Some(c) = &v.config_map {
        let name = c.name.clone();
        let entries = match config_map_data(client, &ns, &name)
            .await
            .map_err(|e| verr(&v.name, e))?
        {
            Some(data) => items_of(
                &v.name,
                data,
                c.items.as_ref(),
                c.default_mode.unwrap_or(0o644),
                "configmap",
            )?,
            None if c.optional == Some(true) => Vec::new(),
            None => return Err(verr(&v.name, format!("configmap \"{name}\" not found"))),
        };
        write_entries(dir, &v.name, &entries, &format!("configmap {name}"))?;
        return Ok(dir.to_path_buf());
    }
    if let Some(sec) = &v.secret {
        let name = sec.secret_name.clone().unwrap_or_default();
        // Secrets never touch the disk: the volume is a tmpfs.
        ensure_tmpfs(dir, None).map_err(io)?;
        let entries = match secret_data(client, &ns, &name)
            .await
            .map_err(|e| verr(&v.name, e))?
        {
            Some(data) => items_of(
                &v.name,
                data,
                sec.items.as_ref(),
                sec.default_mode.unwrap_or(0o644),
                "secret",
            )?,
            None if sec.optional == Some(true) => Vec::new(),
            None => return Err(verr(&v.name, format!("secret \"{name}\" not found"))),
        };
        write_entries(dir, &v.name, &entries, &format!("secret {name}"))?;
        return Ok(dir.to_path_buf());
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644);
        let entries = downward_entries(pod, &v.name, d.items.iter().flatten(), mode, facts)?;
        write_entries(dir, &v.name, &entries, "downwardAPI")?;
        return Ok(dir.to_path_buf());
    }
    if let Some(p) = &v.projected {
        // Projected volumes may hold tokens and secrets: a tmpfs too.
        ensure_tmpfs(dir, None).map_err(io)?;
        let mode = p.default_mode.unwrap_or(0o644);
        let mut entries = Vec::new();
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                let name = c.name.clone();
                match config_map_data(client, &ns, &name)
                    .await
                    .map_err(|e| verr(&v.name, e))?
                {
                    Some(data) => entries.extend(items_of(
                        &v.name,
                        data,
                        c.items.as_ref(),
                        mode,
                        "configmap",
                    )?),
                    None if c.optional == Some(true) => {}
                    None => {
                        return Err(verr(&v.name, format!("configmap \"{name}\" not found")));
                    }
                }
            }
            if let Some(sec) = &src.secret {
                let name = sec.name.clone();
                match secret_data(client, &ns, &name)
                    .await
                    .map_err(|e| verr(&v.name, e))?
                {
                    Some(data) => {
                        entries.extend(items_of(
                            &v.name,
                            data,
                            sec.items.as_ref(),
                            mode,
                            "secret",
                        )?);
                    }
                    None if sec.optional == Some(true) => {}
                    None => return Err(verr(&v.name, format!("secret \"{name}\" not found"))),
                }
            }
            if let Some(d) = &src.downward_api {
                entries.extend(downward_entries(
                    pod,
                    &v.name,
                    d.items.iter().flatten(),
                    mode,
                    facts,
                )?);
            }
            if let Some(t) = &src.service_account_token {
                let token = service_account_token(client, pod, t)
                    .await
                    .map_err(|e| verr(&v.name, e))?;
                // Kubernetes writes tokens 0600 unless a mode is asked for.
                let m = p.default_mode.unwrap_or(0o600);
                entries.push((t.path.clone(), token.into_bytes(), m));
            }
        }
        write_entries(dir, &v.name, &entries, "projected volume")?;
        return Ok(dir.to_path_buf());
    }
    if let Some(c) = &v.persistent_volume_claim {
        return claim_path(client, &ns, &c.claim_name)
            .await
            .map_err(|e| verr(&v.name, e));
    }
    // emptyDir, and volumes with no source (which default to it).
    let e = v.empty_dir.as_ref();
    if e.and_then(|e| e.medium.as_deref()) == Some("Memory") {
        let size = e
            .and_then(|e| e.size_limit.as_ref())
            .and_then(|q| crate::kubelet::quantity::parse_bytes(&q.0));
        ensure_tmpfs(dir, size).map_err(io)?;
    } else {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777));
    Ok(dir.to_path_buf())
}

fn host_path(volume: &str, h: &HostPathVolumeSource) -> Result<(), VolumeError> {
    let p = PathBuf::from(&h.path);
    let t = h.type_.clone().unwrap_or_default();
    let exists = p.exists();
    match t.as_str() {
        "DirectoryOrCreate" if !exists => {
            std::fs::create_dir_all(&p).map_err(|e| verr(volume, e.to_string()))?;
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755));
        }
        "FileOrCreate" if !exists => {
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent).map_err(|e| verr(volume, e.to_string()))?;
            }
            std::fs::write(&p, b"").map_err(|e| verr(volume, e.to_string()))?;
            let _ = std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644));
        }
        "Directory" if !p.is_dir() => {
            return Err(verr(
                volume,
                format!("hostPath type check failed: {} is not a directory", h.path),
            ));
        }
        "File" if !p.is_file() => {
            return Err(verr(
                volume,
                format!("hostPath type check failed: {} is not a file", h.path),
            ));
        }
        "Socket" | "CharDevice" | "BlockDevice" => {
            use std::os::unix::fs::FileTypeExt as _;
            let ft = std::fs::metadata(&p).map(|m| m.file_type());
            let ok = ft.is_ok_and(|ft| match t.as_str() {
                "Socket" => ft.is_socket(),
                "CharDevice" => ft.is_char_device(),
                _ => ft.is_block_device(),
            });
            if !ok {
                return Err(verr(
                    volume,
                    format!("hostPath type check failed: {} is not a {t}", h.path),
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

async fn config_map_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let cm = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(cm.map(|cm| {
        let mut data: BTreeMap<String, Vec<u8>> = cm
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.into_bytes()))
            .collect();
        data.extend(
            cm.binary_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, b)| (k, b.0)),
        );
        data
    }))
}

async fn secret_data(
    client: &kube::Client,
    ns: &str,
    name: &str,
) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
    let sec = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await
        .map_err(|e| e.to_string())?;
    Ok(sec.map(|sec| {
        let mut data: BTreeMap<String, Vec<u8>> = sec
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        data.extend(
            sec.string_data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes())),
        );
        data
    }))
}

/// A labels or annotations map as a downward-API file: `key="value"` lines
/// in key order, values quoted as Go's `%q` does.
fn format_map(m: Option<&BTreeMap<String, String>>) -> String {
    m.into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}={}", serde_json::Value::String(v.clone())))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The files of downwardAPI items.
fn downward_entries<'a>(
    pod: &Pod,
    volume: &str,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    default_mode: i32,
    facts: &NodeFacts,
) -> Result<Vec<Entry>, VolumeError> {
    let mut out = Vec::new();
    for item in items {
        let mode = item.mode.unwrap_or(default_mode);
        let value = if let Some(f) = &item.field_ref {
            match f.field_path.as_str() {
                "metadata.labels" => format_map(pod.metadata.labels.as_ref()),
                "metadata.annotations" => format_map(pod.metadata.annotations.as_ref()),
                path => super::env::field_value(pod, path, facts)
                    .map_err(|e| verr(volume, e.to_string()))?,
            }
        } else if let Some(r) = &item.resource_field_ref {
            let containers = pod.spec.iter().flat_map(|s| s.containers.iter());
            let c = match r.container_name.as_deref().filter(|c| !c.is_empty()) {
                Some(name) => containers.clone().find(|c| c.name == name),
                None => containers.clone().next(),
            }
            .ok_or_else(|| {
                verr(
                    volume,
                    format!(
                        "cannot find container {:?} for resourceFieldRef {}",
                        r.container_name.as_deref().unwrap_or(""),
                        r.resource
                    ),
                )
            })?;
            super::env::resource_value(
                c,
                &r.resource,
                r.divisor.as_ref().map(|d| d.0.as_str()),
                facts,
            )
            .map_err(|e| verr(volume, e.to_string()))?
        } else {
            return Err(verr(
                volume,
                format!(
                    "downwardAPI item {:?} has neither fieldRef nor resourceFieldRef",
                    item.path
                ),
            ));
        };
        out.push((item.path.clone(), value.into_bytes(), mode));
    }
    Ok(out)
}

/// Tokens handed out, reused until 80 % of their lifetime (as the kubelet's
/// token manager does): (namespace, service account, audiences, seconds,
/// pod uid) → (token, expiry).
type TokenCache = HashMap<(String, String, String, i64, String), (String, jiff::Timestamp)>;

static TOKENS: Mutex<Option<TokenCache>> = Mutex::new(None);

/// A bound service-account token for the pod (TokenRequest on
/// `serviceaccounts/<name>/token`, bound to the pod).
async fn service_account_token(
    client: &kube::Client,
    pod: &Pod,
    t: &ServiceAccountTokenProjection,
) -> Result<String, String> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let sa = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into());
    let seconds = t.expiration_seconds.unwrap_or(3600).max(600);
    let audiences: Vec<String> = t.audience.iter().cloned().collect();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let key = (
        ns.clone(),
        sa.clone(),
        audiences.join(","),
        seconds,
        uid.clone(),
    );
    let now = jiff::Timestamp::now();
    if let Some((tok, renew_at)) = TOKENS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .get(&key)
        && *renew_at > now
    {
        return Ok(tok.clone());
    }
    let body = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
        "spec": {"audiences": audiences, "expirationSeconds": seconds,
                 "boundObjectRef": {"apiVersion": "v1", "kind": "Pod",
                                    "name": pod.metadata.name, "uid": uid}},
    });
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), &ns);
    let resp: serde_json::Value = api
        .create_subresource::<serde_json::Value, serde_json::Value>(
            "token",
            &sa,
            &kube::api::PostParams::default(),
            &body,
        )
        .await
        .map_err(|e| format!("requesting a token for service account {ns}/{sa}: {e}"))?;
    let token = resp
        .pointer("/status/token")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| format!("the TokenRequest for service account {ns}/{sa} returned no token"))?
        .to_owned();
    let renew_at = now + jiff::SignedDuration::from_secs(seconds * 8 / 10);
    TOKENS
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get_or_insert_with(HashMap::new)
        .insert(key, (token.clone(), renew_at));
    Ok(token)
}

/// The host directory of a claim's bound PersistentVolume (hostPath or
/// local volumes: what this node can mount).
async fn claim_path(client: &kube::Client, ns: &str, claim: &str) -> Result<PathBuf, String> {
    let pvc = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .get_opt(claim)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" not found"))?;
    let bound = pvc.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Bound");
    let pv_name = pvc
        .spec
        .as_ref()
        .and_then(|s| s.volume_name.clone())
        .filter(|n| bound && !n.is_empty())
        .ok_or_else(|| format!("persistentvolumeclaim \"{claim}\" is not bound"))?;
    let pv = Api::<PersistentVolume>::all(client.clone())
        .get_opt(&pv_name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("persistentvolume \"{pv_name}\" not found"))?;
    let spec = pv.spec.unwrap_or_default();
    let path = spec
        .host_path
        .map(|h| h.path)
        .or(spec.local.map(|l| l.path))
        .ok_or_else(|| {
            format!("persistentvolume \"{pv_name}\" is neither hostPath nor local: this node cannot mount it")
        })?;
    let p = PathBuf::from(path);
    if !p.exists() {
        std::fs::create_dir_all(&p).map_err(|e| format!("creating {}: {e}", p.display()))?;
    }
    Ok(p)
}

/// Whether `dir` is a mount point (it is listed in our mountinfo).
fn is_mount_point(dir: &Path) -> bool {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let want = dir.to_string_lossy();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|m| m == want)
}

/// Mounts a tmpfs on `dir` (size in bytes, else the kernel's default),
/// unless one is there already.
fn ensure_tmpfs(dir: &Path, size: Option<i64>) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if is_mount_point(dir) {
        return Ok(());
    }
    let target = CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let data = match size.filter(|s| *s > 0) {
        Some(s) => format!("mode=0777,size={s}"),
        None => "mode=0777".to_owned(),
    };
    let data = CString::new(data).map_err(std::io::Error::other)?;
    // SAFETY: NUL-terminated strings that outlive the call; tmpfs takes
    // its options as a string.
    let rc = unsafe {
        libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts the tmpfs volumes under a pod's directory (before it is
/// removed).
pub(crate) fn unmount_all(pod_dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = format!("{}/", pod_dir.join("volumes").to_string_lossy());
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| m.starts_with(&prefix))
        .collect();
    // Deepest first.
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        if let Ok(c) = CString::new(p) {
            // SAFETY: a NUL-terminated path; a failure (already gone) is fine.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

/// The container's volume mounts as bind mounts (with `subPath`); a claim
/// the pod asks for `readOnly` is mounted read-only in every container.
pub(crate) fn mounts(
    pod: &Pod,
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
) -> Result<Vec<MountSpec>, VolumeError> {
    let read_only_claims: std::collections::BTreeSet<&str> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .filter(|v| {
            v.persistent_volume_claim
                .as_ref()
                .is_some_and(|c| c.read_only == Some(true))
        })
        .map(|v| v.name.as_str())
        .collect();
    let mut out = vec![];
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes
            .get(&m.name)
            .ok_or_else(|| verr(&m.name, "no such volume in the pod"))?;
        let source = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if sub.starts_with('/') || sub.split('/').any(|c| c == "..") {
                    return Err(verr(&m.name, format!("invalid subPath {sub:?}")));
                }
                let p = base.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| verr(&m.name, e.to_string()))?;
                }
                p
            }
            None => base.clone(),
        };
        out.push(MountSpec {
            destination: m.mount_path.clone(),
            source,
            read_only: m.read_only == Some(true) || read_only_claims.contains(m.name.as_str()),
        });
    }
    Ok(out)
}

/// Decodes docker config JSON from a pod's `imagePullSecrets`.
pub(crate) async fn pull_credentials(
    client: &kube::Client,
    pod: &Pod,
) -> Vec<crate::image::Credential> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut out = vec![];
    for r in pod
        .spec
        .as_ref()
        .and_then(|s| s.image_pull_secrets.clone())
        .unwrap_or_default()
    {
        if let Ok(Some(s)) = api.get_opt(&r.name).await {
            let data = s.data.unwrap_or_default();
            for key in [".dockerconfigjson", ".dockercfg"] {
                if let Some(b) = data.get(key) {
                    out.extend(crate::image::pull::parse_docker_config(&b.0));
                }
            }
        }
    }
    out
}
