//! Pod volumes on the node, set up under the pod's directory and
//! bind-mounted into containers: emptyDir (on disk, or `medium: Memory` as
//! a tmpfs of `sizeLimit`), hostPath (every type), configMap, secret (on a
//! tmpfs), downwardAPI, projected (configMap, secret, downwardAPI and bound
//! service-account tokens, on a tmpfs) and persistentVolumeClaim (bound to
//! a hostPath or local PersistentVolume). Files are written atomically and
//! kept up to date ([`atomic`]).
//!
//! Everything here runs as root on the node with names and paths a pod
//! chose, so: a volume name must be one plain path component; the
//! kubelet's own volumes are mounted `nosuid,nodev`, and configMap,
//! secret, downwardAPI and projected volumes read-only (CVE-2017-1002102);
//! `subPath` is resolved without leaving its volume ([`subpath`]); the pod
//! directory is readable by root alone and secret tmpfs roots are not
//! world-writable.

mod atomic;
mod confined;
mod subpath;

pub(crate) use confined::read_tail;

use std::{
    collections::{BTreeMap, HashMap},
    ffi::CString,
    os::unix::{ffi::OsStrExt as _, fs::PermissionsExt as _},
    path::{Path, PathBuf},
    sync::Mutex,
};

use k8s_openapi::api::core::v1::{
    ConfigMap, Container, DownwardAPIVolumeFile, HostPathVolumeSource, KeyToPath, PersistentVolume,
    PersistentVolumeClaim, Pod, ProjectedVolumeSource, Secret, ServiceAccountTokenProjection,
    Volume,
};
use kube::Api;

use self::atomic::Entry;
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

/// The files of a configMap or secret: every key, or the `items` asked
/// for (a missing key is an error).
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

/// Makes the pod's directory (and its parent), readable by root alone:
/// volumes, secrets among them, live below it.
pub(crate) fn ensure_pod_dir(pod_dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(pod_dir)?;
    for d in [Some(pod_dir), pod_dir.parent()].into_iter().flatten() {
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o750))?;
    }
    Ok(())
}

/// The pod's `fsGroup`, if it sets one.
fn fs_group(pod: &Pod) -> Option<u32> {
    pod.spec
        .as_ref()
        .and_then(|s| s.security_context.as_ref())
        .and_then(|c| c.fs_group)
        .and_then(|g| u32::try_from(g).ok())
}

/// Sets up every volume of the pod; returns each volume's host path.
pub(crate) async fn setup(
    client: &kube::Client,
    pod: &Pod,
    pod_dir: &Path,
    facts: &NodeFacts,
) -> Result<BTreeMap<String, PathBuf>, VolumeError> {
    let mut out = BTreeMap::new();
    ensure_pod_dir(pod_dir).map_err(|e| verr("", format!("creating the pod directory: {e}")))?;
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        // Checked at the API too; a name that is not one path component
        // would put the volume anywhere on the node.
        if !rudder_k8s::names::is_dns_label(&v.name) {
            return Err(verr(&v.name, "invalid volume name: must be a DNS label"));
        }
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
        let src = ObjectSource {
            kind: ObjectKind::ConfigMap,
            name: &c.name,
            items: c.items.as_ref(),
            mode: c.default_mode.unwrap_or(0o644),
            optional: c.optional == Some(true),
        };
        let entries = src.entries(client, &ns, &v.name).await?;
        let what = format!("configmap {}", c.name);
        atomic::write(dir, &v.name, &entries, &what, fs_group(pod))?;
        return Ok(dir.to_path_buf());
    }
    if let Some(sec) = &v.secret {
        let name = sec.secret_name.clone().unwrap_or_default();
        // Secrets never touch the disk: the volume is a tmpfs.
        ensure_tmpfs(dir, None, 0o755).map_err(io)?;
        let src = ObjectSource {
            kind: ObjectKind::Secret,
            name: &name,
            items: sec.items.as_ref(),
            mode: sec.default_mode.unwrap_or(0o644),
            optional: sec.optional == Some(true),
        };
        let entries = src.entries(client, &ns, &v.name).await?;
        atomic::write(
            dir,
            &v.name,
            &entries,
            &format!("secret {name}"),
            fs_group(pod),
        )?;
        return Ok(dir.to_path_buf());
    }
    if let Some(d) = &v.downward_api {
        let mode = d.default_mode.unwrap_or(0o644);
        let entries = downward_entries(pod, &v.name, d.items.iter().flatten(), mode, facts)?;
        atomic::write(dir, &v.name, &entries, "downwardAPI", fs_group(pod))?;
        return Ok(dir.to_path_buf());
    }
    if let Some(p) = &v.projected {
        // Projected volumes may hold tokens and secrets: a tmpfs too.
        ensure_tmpfs(dir, None, 0o755).map_err(io)?;
        let entries = projected_entries(client, pod, &v.name, p, facts).await?;
        atomic::write(dir, &v.name, &entries, "projected volume", fs_group(pod))?;
        return Ok(dir.to_path_buf());
    }
    if let Some(c) = &v.persistent_volume_claim {
        return claim_path(client, &ns, &c.claim_name)
            .await
            .map_err(|e| verr(&v.name, e));
    }
    // emptyDir, and volumes with no source (which default to it).
    empty_dir(pod, v, dir).map_err(io)?;
    Ok(dir.to_path_buf())
}

/// A ConfigMap or Secret a volume (or a projected volume's source) reads.
#[derive(Clone, Copy)]
enum ObjectKind {
    ConfigMap,
    Secret,
}

/// One ConfigMap or Secret source: which object, which keys, their mode.
struct ObjectSource<'a> {
    kind: ObjectKind,
    name: &'a str,
    items: Option<&'a Vec<KeyToPath>>,
    mode: i32,
    optional: bool,
}

impl ObjectSource<'_> {
    /// The files the object gives: none when it is missing and optional,
    /// an error when it is missing and required.
    async fn entries(
        &self,
        client: &kube::Client,
        ns: &str,
        volume: &str,
    ) -> Result<Vec<Entry>, VolumeError> {
        let (data, kind) = match self.kind {
            ObjectKind::ConfigMap => (config_map_data(client, ns, self.name).await, "configmap"),
            ObjectKind::Secret => (secret_data(client, ns, self.name).await, "secret"),
        };
        match data.map_err(|e| verr(volume, e))? {
            Some(data) => items_of(volume, data, self.items, self.mode, kind),
            None if self.optional => Ok(Vec::new()),
            None => Err(verr(volume, format!("{kind} \"{}\" not found", self.name))),
        }
    }
}

/// The files of a projected volume, its sources in order.
async fn projected_entries(
    client: &kube::Client,
    pod: &Pod,
    volume: &str,
    p: &ProjectedVolumeSource,
    facts: &NodeFacts,
) -> Result<Vec<Entry>, VolumeError> {
    let ns = pod.metadata.namespace.clone().unwrap_or_default();
    let mode = p.default_mode.unwrap_or(0o644);
    let mut entries = Vec::new();
    for src in p.sources.iter().flatten() {
        if let Some(c) = &src.config_map {
            let src = ObjectSource {
                kind: ObjectKind::ConfigMap,
                name: &c.name,
                items: c.items.as_ref(),
                mode,
                optional: c.optional == Some(true),
            };
            entries.extend(src.entries(client, &ns, volume).await?);
        }
        if let Some(sec) = &src.secret {
            let src = ObjectSource {
                kind: ObjectKind::Secret,
                name: &sec.name,
                items: sec.items.as_ref(),
                mode,
                optional: sec.optional == Some(true),
            };
            entries.extend(src.entries(client, &ns, volume).await?);
        }
        if let Some(d) = &src.downward_api {
            let items = d.items.iter().flatten();
            entries.extend(downward_entries(pod, volume, items, mode, facts)?);
        }
        if let Some(t) = &src.service_account_token {
            let token = service_account_token(client, pod, t)
                .await
                .map_err(|e| verr(volume, e))?;
            // Kubernetes writes tokens 0600 unless a mode is asked for.
            let m = p.default_mode.unwrap_or(0o600);
            entries.push((t.path.clone(), token.into_bytes(), m));
        }
    }
    Ok(entries)
}

/// An emptyDir: a directory, or a tmpfs of its size limit for `medium:
/// Memory`; a scratch space every user of the pod may write (conformance
/// wants 0777), handed to the fsGroup with setgid as the kubelet does.
fn empty_dir(pod: &Pod, v: &Volume, dir: &Path) -> std::io::Result<()> {
    let e = v.empty_dir.as_ref();
    if e.and_then(|e| e.medium.as_deref()) == Some("Memory") {
        let size = e
            .and_then(|e| e.size_limit.as_ref())
            .and_then(|q| crate::quantity::parse_bytes(&q.0));
        ensure_tmpfs(dir, size, 0o777)?;
    } else {
        std::fs::create_dir_all(dir)?;
    }
    let mode = match fs_group(pod) {
        Some(g) => {
            std::os::unix::fs::lchown(dir, None, Some(g))?;
            0o2777
        }
        None => 0o777,
    };
    let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode));
    Ok(())
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

/// Mounts a tmpfs on `dir` (size in bytes, else the kernel's default) with
/// root directory mode `mode`, unless one is there already.
fn ensure_tmpfs(dir: &Path, size: Option<i64>, mode: u32) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    if is_mount_point(dir) {
        return Ok(());
    }
    let target = CString::new(dir.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    let data = match size.filter(|s| *s > 0) {
        Some(s) => format!("mode={mode:o},size={s}"),
        None => format!("mode={mode:o}"),
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

/// Unmounts the tmpfs volumes and subPath mounts under a pod's directory
/// (before it is removed).
pub(crate) fn unmount_all(pod_dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefixes = [
        format!("{}/", pod_dir.join("volumes").to_string_lossy()),
        format!("{}/", pod_dir.join(subpath::DIR).to_string_lossy()),
    ];
    let mut points: Vec<&str> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|m| prefixes.iter().any(|p| m.starts_with(p.as_str())))
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

/// How a volume is mounted into every container: read-only whatever the
/// mount says (the kubelet writes configMap, secret, downwardAPI and
/// projected volumes; a claim the pod asks for `readOnly`), and whether the
/// kubelet made it (then `nosuid,nodev`).
fn mount_policy(v: &Volume) -> (bool, bool) {
    if v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
    {
        (true, true)
    } else if let Some(c) = &v.persistent_volume_claim {
        (c.read_only == Some(true), false)
    } else if v.host_path.is_some() {
        (false, false)
    } else {
        (false, true)
    }
}

/// The container's volume mounts as bind mounts. A `subPath` (or an
/// expanded `subPathExpr`) is resolved inside its volume and bind-mounted
/// under the pod directory first (see [`subpath`]); `env` is the
/// container's environment, for `subPathExpr`.
pub(crate) fn mounts(
    pod: &Pod,
    c: &Container,
    volumes: &BTreeMap<String, PathBuf>,
    pod_dir: &Path,
    env: &[(String, String)],
) -> Result<Vec<MountSpec>, VolumeError> {
    let policy: BTreeMap<&str, (bool, bool)> = pod
        .spec
        .iter()
        .flat_map(|s| s.volumes.iter().flatten())
        .map(|v| (v.name.as_str(), mount_policy(v)))
        .collect();
    let env: HashMap<&str, &str> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut out = vec![];
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let (base, (always_ro, made)) = volumes
            .get(&m.name)
            .zip(policy.get(m.name.as_str()).copied())
            .ok_or_else(|| verr(&m.name, "no such volume in the pod"))?;
        let sub = match (m.sub_path.as_deref(), m.sub_path_expr.as_deref()) {
            (Some(s), _) if !s.is_empty() => Some(s.to_owned()),
            (_, Some(e)) if !e.is_empty() => Some(super::env::expand(e, &|k: &str| {
                env.get(k).map(|v| (*v).to_owned())
            })),
            _ => None,
        };
        let source = match sub {
            Some(sub) => {
                let target = subpath::target(pod_dir, &m.name, &c.name, i);
                subpath::prepare(&m.name, base, &sub, &target)?;
                target
            }
            None => base.clone(),
        };
        out.push(MountSpec {
            destination: m.mount_path.clone(),
            source,
            read_only: m.read_only == Some(true) || always_ro,
            nosuid_nodev: made,
        });
    }
    Ok(out)
}

/// Decodes docker config JSON from a pod's `imagePullSecrets`.
pub(crate) async fn pull_credentials(
    client: &kube::Client,
    pod: &Pod,
) -> Vec<rudder_runtime::image::Credential> {
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
                    out.extend(rudder_runtime::image::pull::parse_docker_config(&b.0));
                }
            }
        }
    }
    out
}
