//! Validation of a pod spec as kube-apiserver's `ValidatePodSpec` does it,
//! for the parts a node acts on: containers (names, images, ports, pull
//! policy, volume mounts), volumes (names, exactly one source, the paths
//! and modes of the files the kubelet writes), restart and DNS policies,
//! grace periods and deadlines, hostname and subdomain.
//!
//! The apiserver answers a failure with `422 Invalid` and these causes; the
//! kubelet refuses to run a pod that fails it (a static pod from a file, or
//! one that reached it some other way), as upstream's kubelet does.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::{
    Container, DownwardAPIVolumeFile, EphemeralContainer, KeyToPath, Pod, PodSpec, SeccompProfile,
    Volume, VolumeProjection,
};
use serde_json::json;

use crate::{
    field::{FieldError, Path},
    names::{DNS_LABEL_MSG, is_dns_label},
    paths::{validate_file_mode, validate_local_descending_path, validate_local_non_reserved_path},
};

/// The restart policies of a bare pod.
pub const POD_RESTART_POLICIES: &[&str] = &["Always", "OnFailure", "Never"];
const DNS_POLICIES: &[&str] = &["ClusterFirstWithHostNet", "ClusterFirst", "Default", "None"];
const PULL_POLICIES: &[&str] = &["Always", "IfNotPresent", "Never"];
const PROTOCOLS: &[&str] = &["SCTP", "TCP", "UDP"];
const SECCOMP_TYPES: &[&str] = &["Localhost", "RuntimeDefault", "Unconfined"];
const HOST_PATH_TYPES: &[&str] = &[
    "",
    "BlockDevice",
    "CharDevice",
    "Directory",
    "DirectoryOrCreate",
    "File",
    "FileOrCreate",
    "Socket",
];
/// A projected token lives at least 10 minutes and at most 2^32 seconds.
const TOKEN_MIN_SECONDS: i64 = 600;
const TOKEN_MAX_SECONDS: i64 = 1 << 32;

/// A pod as a kubelet receives it: the spec under `spec`, any restart
/// policy.
pub fn validate_pod(pod: &Pod) -> Vec<FieldError> {
    match &pod.spec {
        Some(spec) => validate_pod_spec(spec, &Path::new("spec"), POD_RESTART_POLICIES),
        None => vec![FieldError::required("spec.containers")],
    }
}

/// A pod spec at `path` whose restart policy must be one of `restart`
/// (`Always` only for workload templates, `OnFailure`/`Never` for jobs).
pub fn validate_pod_spec(spec: &PodSpec, path: &Path, restart: &[&str]) -> Vec<FieldError> {
    validate_pod_template(spec, path, restart, &[])
}

/// A workload's pod template: as [`validate_pod_spec`], with `claims`
/// (a StatefulSet's `volumeClaimTemplates`) counted as volumes the mounts
/// may name.
pub fn validate_pod_template(
    spec: &PodSpec,
    path: &Path,
    restart: &[&str],
    claims: &[&str],
) -> Vec<FieldError> {
    let mut out = Vec::new();
    let mut volumes = validate_volumes(spec.volumes.as_deref().unwrap_or_default(), path, &mut out);
    volumes.extend(claims.iter().copied());
    if spec.containers.is_empty() {
        out.push(FieldError::required(path.child("containers")));
    }
    let mut names = BTreeSet::new();
    for (key, list) in [
        ("containers", spec.containers.as_slice()),
        (
            "initContainers",
            spec.init_containers.as_deref().unwrap_or_default(),
        ),
    ] {
        for (i, c) in list.iter().enumerate() {
            validate_container(c, &path.child(key).index(i), &volumes, &mut names, &mut out);
        }
    }
    validate_seccomp(
        spec.security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref()),
        path,
        &mut out,
    );
    validate_ephemeral(spec, path, &volumes, &mut names, &mut out);
    if spec.share_process_namespace == Some(true) && spec.host_pid == Some(true) {
        out.push(FieldError::invalid(
            path.child("shareProcessNamespace"),
            &json!(true),
            "ShareProcessNamespace and HostPID cannot both be enabled",
        ));
    }
    if let Some(p) = spec.restart_policy.as_deref()
        && !restart.contains(&p)
    {
        out.push(FieldError::not_supported(
            path.child("restartPolicy"),
            &json!(p),
            restart,
        ));
    }
    if let Some(p) = spec.dns_policy.as_deref()
        && !DNS_POLICIES.contains(&p)
    {
        out.push(FieldError::not_supported(
            path.child("dnsPolicy"),
            &json!(p),
            DNS_POLICIES,
        ));
    }
    if let Some(g) = spec.termination_grace_period_seconds
        && g < 0
    {
        out.push(FieldError::invalid(
            path.child("terminationGracePeriodSeconds"),
            &json!(g),
            "must be greater than or equal to 0",
        ));
    }
    if let Some(d) = spec.active_deadline_seconds
        && !(1..=i64::from(i32::MAX)).contains(&d)
    {
        out.push(FieldError::invalid(
            path.child("activeDeadlineSeconds"),
            &json!(d),
            "must be between 1 and 2147483647, inclusive",
        ));
    }
    for (field, v) in [
        ("hostname", spec.hostname.as_deref()),
        ("subdomain", spec.subdomain.as_deref()),
    ] {
        if let Some(v) = v.filter(|v| !v.is_empty())
            && !is_dns_label(v)
        {
            out.push(FieldError::invalid(
                path.child(field),
                &json!(v),
                DNS_LABEL_MSG,
            ));
        }
    }
    out
}

fn validate_container(
    c: &Container,
    path: &Path,
    volumes: &BTreeSet<&str>,
    names: &mut BTreeSet<String>,
    out: &mut Vec<FieldError>,
) {
    if c.name.is_empty() {
        out.push(FieldError::required(path.child("name")));
    } else if !is_dns_label(&c.name) {
        out.push(FieldError::invalid(
            path.child("name"),
            &json!(c.name),
            DNS_LABEL_MSG,
        ));
    } else if !names.insert(c.name.clone()) {
        out.push(FieldError::duplicate(path.child("name"), &json!(c.name)));
    }
    if c.image.as_deref().is_none_or(str::is_empty) {
        out.push(FieldError::required(path.child("image")));
    }
    for (j, p) in c.ports.iter().flatten().enumerate() {
        let pp = path.child("ports").index(j);
        if !(1..=65535).contains(&p.container_port) {
            out.push(FieldError::invalid(
                pp.child("containerPort"),
                &json!(p.container_port),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(h) = p.host_port
            && h != 0
            && !(1..=65535).contains(&h)
        {
            out.push(FieldError::invalid(
                pp.child("hostPort"),
                &json!(h),
                "must be between 1 and 65535, inclusive",
            ));
        }
        if let Some(proto) = p.protocol.as_deref()
            && !PROTOCOLS.contains(&proto)
        {
            out.push(FieldError::not_supported(
                pp.child("protocol"),
                &json!(proto),
                PROTOCOLS,
            ));
        }
    }
    if let Some(p) = c.image_pull_policy.as_deref()
        && !PULL_POLICIES.contains(&p)
    {
        out.push(FieldError::not_supported(
            path.child("imagePullPolicy"),
            &json!(p),
            PULL_POLICIES,
        ));
    }
    validate_seccomp(
        c.security_context
            .as_ref()
            .and_then(|s| s.seccomp_profile.as_ref()),
        path,
        out,
    );
    validate_mounts(c, path, volumes, out);
}

/// Whether the pod has finished for good: its stored phase is `Succeeded`
/// or `Failed`, from which Kubernetes never moves a pod back.
pub fn is_terminal(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    )
}

/// An ephemeral container as the container it runs as.
pub fn ephemeral_as_container(e: &EphemeralContainer) -> Container {
    let mut v = serde_json::to_value(e).unwrap_or_default();
    if let Some(m) = v.as_object_mut() {
        m.remove("targetContainerName");
    }
    serde_json::from_value(v).unwrap_or_default()
}

/// The fields an ephemeral container may not set (upstream's allow-list
/// turned around: what `kubectl debug` never sends).
const EPHEMERAL_FORBIDDEN: &[&str] = &[
    "ports",
    "resources",
    "resizePolicy",
    "restartPolicy",
    "livenessProbe",
    "readinessProbe",
    "startupProbe",
    "lifecycle",
];
const EPHEMERAL_MSG: &str = "cannot be set for an Ephemeral Container";

/// `validateEphemeralContainers`: each a valid container, its name unique
/// among all the pod's containers, its target one of the pod's regular or
/// init containers, none of the fields a workload relies on, no `subPath`.
fn validate_ephemeral(
    spec: &PodSpec,
    path: &Path,
    volumes: &BTreeSet<&str>,
    names: &mut BTreeSet<String>,
    out: &mut Vec<FieldError>,
) {
    let others: BTreeSet<&str> = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| c.name.as_str())
        .collect();
    for (i, e) in spec.ephemeral_containers.iter().flatten().enumerate() {
        let p = path.child("ephemeralContainers").index(i);
        let c = ephemeral_as_container(e);
        validate_container(&c, &p, volumes, names, out);
        if let Some(t) = e.target_container_name.as_deref().filter(|t| !t.is_empty())
            && !others.contains(t)
        {
            out.push(FieldError::not_found(
                p.child("targetContainerName"),
                &json!(t),
            ));
        }
        let v = serde_json::to_value(e).unwrap_or_default();
        for f in EPHEMERAL_FORBIDDEN {
            // Set means not Go's zero value (kubectl sends `resources: {}`).
            let set = v.get(*f).is_some_and(|x| match x {
                serde_json::Value::Null => false,
                serde_json::Value::Object(m) => !m.is_empty(),
                serde_json::Value::Array(a) => !a.is_empty(),
                _ => true,
            });
            if set {
                out.push(FieldError::forbidden(p.child(f), EPHEMERAL_MSG));
            }
        }
        for (j, m) in e.volume_mounts.iter().flatten().enumerate() {
            let mp = p.child("volumeMounts").index(j);
            if m.sub_path.as_deref().is_some_and(|s| !s.is_empty()) {
                out.push(FieldError::forbidden(mp.child("subPath"), EPHEMERAL_MSG));
            }
            if m.sub_path_expr.as_deref().is_some_and(|s| !s.is_empty()) {
                out.push(FieldError::forbidden(
                    mp.child("subPathExpr"),
                    EPHEMERAL_MSG,
                ));
            }
        }
    }
}

/// `ValidatePodEphemeralContainersUpdate`: the ephemeral containers a pod
/// already has may be neither removed nor changed (the rest of the new
/// spec is validated as any pod's).
pub fn validate_ephemeral_update(old: &PodSpec, new: &PodSpec) -> Vec<FieldError> {
    let mut out = Vec::new();
    let field = "spec.ephemeralContainers";
    let by_name: std::collections::BTreeMap<&str, &EphemeralContainer> = new
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|e| (e.name.as_str(), e))
        .collect();
    for o in old.ephemeral_containers.iter().flatten() {
        match by_name.get(o.name.as_str()) {
            None => out.push(FieldError::forbidden(
                field,
                format!(
                    "existing ephemeral containers {:?} may not be removed\n",
                    o.name
                ),
            )),
            Some(n) if *n != o => out.push(FieldError::forbidden(
                format!("{field}[{}]", o.name),
                format!(
                    "existing ephemeral containers {:?} may not be changed\n",
                    o.name
                ),
            )),
            Some(_) => {}
        }
    }
    out
}

/// A seccomp profile (`validateSeccompProfileField`): a known type, and a
/// `localhostProfile` (relative, no `..`) exactly when it is `Localhost`.
fn validate_seccomp(sp: Option<&SeccompProfile>, owner: &Path, out: &mut Vec<FieldError>) {
    let Some(sp) = sp else {
        return;
    };
    let path = &owner.child("securityContext").child("seccompProfile");
    match sp.type_.as_str() {
        "" => out.push(FieldError::required_because(
            path.child("type"),
            "type is required when seccompProfile is set",
        )),
        t if !SECCOMP_TYPES.contains(&t) => out.push(FieldError::not_supported(
            path.child("type"),
            &json!(t),
            SECCOMP_TYPES,
        )),
        _ => {}
    }
    let field = path.child("localhostProfile");
    match (sp.type_.as_str(), sp.localhost_profile.as_deref()) {
        ("Localhost", None) => out.push(FieldError::required_because(
            field,
            "must be set when seccomp type is Localhost",
        )),
        ("Localhost", Some(p)) => out.extend(validate_local_descending_path(p, field.as_str())),
        (_, Some(_)) => out.push(FieldError::invalid(
            field,
            &json!(sp),
            "can only be set when seccomp type is Localhost",
        )),
        (_, None) => {}
    }
}

fn validate_mounts(
    c: &Container,
    path: &Path,
    volumes: &BTreeSet<&str>,
    out: &mut Vec<FieldError>,
) {
    let mut paths = BTreeSet::new();
    for (i, m) in c.volume_mounts.iter().flatten().enumerate() {
        let mp = path.child("volumeMounts").index(i);
        if m.name.is_empty() {
            out.push(FieldError::required(mp.child("name")));
        } else if !volumes.contains(m.name.as_str()) {
            out.push(FieldError::not_found(mp.child("name"), &json!(m.name)));
        }
        if m.mount_path.is_empty() {
            out.push(FieldError::required(mp.child("mountPath")));
        } else if !paths.insert(m.mount_path.as_str()) {
            out.push(FieldError::invalid(
                mp.child("mountPath"),
                &json!(m.mount_path),
                "must be unique",
            ));
        }
        let sub = m.sub_path.as_deref().unwrap_or_default();
        if !sub.is_empty() {
            out.extend(validate_local_descending_path(
                sub,
                mp.child("subPath").as_str(),
            ));
        }
        if let Some(expr) = m.sub_path_expr.as_deref().filter(|e| !e.is_empty()) {
            if !sub.is_empty() {
                out.push(FieldError::invalid(
                    mp.child("subPathExpr"),
                    &json!(expr),
                    "subPathExpr and subPath are mutually exclusive",
                ));
            }
            out.extend(validate_local_descending_path(
                expr,
                mp.child("subPathExpr").as_str(),
            ));
        }
    }
}

/// Validates the volumes; returns the names of the valid ones.
fn validate_volumes<'a>(
    volumes: &'a [Volume],
    path: &Path,
    out: &mut Vec<FieldError>,
) -> BTreeSet<&'a str> {
    let mut names = BTreeSet::new();
    for (i, v) in volumes.iter().enumerate() {
        let vp = path.child("volumes").index(i);
        let np = vp.child("name");
        if v.name.is_empty() {
            out.push(FieldError::required(np));
        } else if v.name.len() > 63 {
            out.push(FieldError::invalid(
                np,
                &json!(v.name),
                "must be no more than 63 characters",
            ));
        } else if !is_dns_label(&v.name) {
            out.push(FieldError::invalid(np, &json!(v.name), DNS_LABEL_MSG));
        } else if !names.insert(v.name.as_str()) {
            out.push(FieldError::duplicate(np, &json!(v.name)));
        }
        validate_source(v, &vp, out);
    }
    names
}

/// Exactly one source, and each source's own rules.
fn validate_source(v: &Volume, vp: &Path, out: &mut Vec<FieldError>) {
    let sources = volume_sources(v);
    match sources.as_slice() {
        [] => out.push(FieldError::required_because(
            vp.as_str(),
            "must specify a volume type",
        )),
        [_] => {}
        [_, extra, ..] => out.push(FieldError::forbidden(
            vp.child(extra),
            "may not specify more than 1 volume type",
        )),
    }
    if let Some(h) = &v.host_path {
        let p = vp.child("hostPath");
        if h.path.is_empty() {
            out.push(FieldError::required(p.child("path")));
        } else if h.path.split('/').any(|c| c == "..") {
            out.push(FieldError::invalid(
                p.child("path"),
                &json!(h.path),
                "must not contain '..'",
            ));
        }
        if let Some(t) = h.type_.as_deref()
            && !HOST_PATH_TYPES.contains(&t)
        {
            out.push(FieldError::not_supported(
                p.child("type"),
                &json!(t),
                &HOST_PATH_TYPES[1..],
            ));
        }
    }
    if let Some(e) = &v.empty_dir
        && let Some(m) = e.medium.as_deref()
        && !(m.is_empty() || m == "Memory" || m == "HugePages" || m.starts_with("HugePages-"))
    {
        out.push(FieldError::not_supported(
            vp.child("emptyDir").child("medium"),
            &json!(m),
            &["", "Memory", "HugePages"],
        ));
    }
    if let Some(c) = &v.config_map {
        let p = vp.child("configMap");
        if c.name.is_empty() {
            out.push(FieldError::required(p.child("name")));
        }
        validate_items(c.items.as_deref(), c.default_mode, &p, out);
    }
    if let Some(s) = &v.secret {
        let p = vp.child("secret");
        if s.secret_name.as_deref().is_none_or(str::is_empty) {
            out.push(FieldError::required(p.child("secretName")));
        }
        validate_items(s.items.as_deref(), s.default_mode, &p, out);
    }
    if let Some(d) = &v.downward_api {
        let p = vp.child("downwardAPI");
        if let Some(m) = d.default_mode {
            out.extend(validate_file_mode(m, p.child("defaultMode").as_str()));
        }
        validate_downward_items(d.items.as_deref().unwrap_or_default(), &p, out);
    }
    if let Some(pr) = &v.projected {
        let p = vp.child("projected");
        if let Some(m) = pr.default_mode {
            out.extend(validate_file_mode(m, p.child("defaultMode").as_str()));
        }
        validate_projections(pr.sources.as_deref().unwrap_or_default(), &p, out);
    }
}

/// The names of the sources a volume sets (as its JSON fields).
fn volume_sources(v: &Volume) -> Vec<&'static str> {
    let set = [
        ("hostPath", v.host_path.is_some()),
        ("emptyDir", v.empty_dir.is_some()),
        ("configMap", v.config_map.is_some()),
        ("secret", v.secret.is_some()),
        ("downwardAPI", v.downward_api.is_some()),
        ("projected", v.projected.is_some()),
        ("persistentVolumeClaim", v.persistent_volume_claim.is_some()),
        ("nfs", v.nfs.is_some()),
        ("iscsi", v.iscsi.is_some()),
        ("csi", v.csi.is_some()),
        ("ephemeral", v.ephemeral.is_some()),
        ("image", v.image.is_some()),
        ("fc", v.fc.is_some()),
        ("rbd", v.rbd.is_some()),
        ("cephfs", v.cephfs.is_some()),
        ("cinder", v.cinder.is_some()),
        ("flexVolume", v.flex_volume.is_some()),
        ("glusterfs", v.glusterfs.is_some()),
        ("awsElasticBlockStore", v.aws_elastic_block_store.is_some()),
        ("gcePersistentDisk", v.gce_persistent_disk.is_some()),
        ("azureDisk", v.azure_disk.is_some()),
        ("azureFile", v.azure_file.is_some()),
        ("gitRepo", v.git_repo.is_some()),
        ("flocker", v.flocker.is_some()),
        ("quobyte", v.quobyte.is_some()),
        ("vsphereVolume", v.vsphere_volume.is_some()),
        ("photonPersistentDisk", v.photon_persistent_disk.is_some()),
        ("portworxVolume", v.portworx_volume.is_some()),
        ("scaleIO", v.scale_io.is_some()),
        ("storageos", v.storageos.is_some()),
    ];
    set.into_iter()
        .filter(|(_, on)| *on)
        .map(|(n, _)| n)
        .collect()
}

fn validate_items(
    items: Option<&[KeyToPath]>,
    default_mode: Option<i32>,
    p: &Path,
    out: &mut Vec<FieldError>,
) {
    if let Some(m) = default_mode {
        out.extend(validate_file_mode(m, p.child("defaultMode").as_str()));
    }
    for (i, kp) in items.unwrap_or_default().iter().enumerate() {
        let ip = p.child("items").index(i);
        if kp.key.is_empty() {
            out.push(FieldError::required(ip.child("key")));
        }
        if kp.path.is_empty() {
            out.push(FieldError::required(ip.child("path")));
        }
        out.extend(validate_local_non_reserved_path(
            &kp.path,
            ip.child("path").as_str(),
        ));
        if let Some(m) = kp.mode {
            out.extend(validate_file_mode(m, ip.child("mode").as_str()));
        }
    }
}

fn validate_downward_items(items: &[DownwardAPIVolumeFile], p: &Path, out: &mut Vec<FieldError>) {
    for (i, f) in items.iter().enumerate() {
        let ip = p.child("items").index(i);
        if f.path.is_empty() {
            out.push(FieldError::required(ip.child("path")));
        }
        out.extend(validate_local_non_reserved_path(
            &f.path,
            ip.child("path").as_str(),
        ));
        if let Some(m) = f.mode {
            out.extend(validate_file_mode(m, ip.child("mode").as_str()));
        }
        match (&f.field_ref, &f.resource_field_ref) {
            (Some(_), Some(_)) => out.push(FieldError::invalid(
                ip.as_str(),
                &json!("resource"),
                "fieldRef and resourceFieldRef can not be specified simultaneously",
            )),
            (None, None) => out.push(FieldError::required_because(
                ip.as_str(),
                "one of fieldRef and resourceFieldRef is required",
            )),
            _ => {}
        }
    }
}

fn validate_projections(sources: &[VolumeProjection], p: &Path, out: &mut Vec<FieldError>) {
    let mut all_paths = BTreeSet::new();
    let mut seen = |path: &str, field: &Path, out: &mut Vec<FieldError>| {
        if !path.is_empty() && !all_paths.insert(path.to_owned()) {
            out.push(FieldError::invalid(
                field.as_str(),
                &json!(path),
                "conflicting duplicate paths",
            ));
        }
    };
    for (i, src) in sources.iter().enumerate() {
        let sp = p.child("sources").index(i);
        let set = [
            src.secret.is_some(),
            src.config_map.is_some(),
            src.downward_api.is_some(),
            src.service_account_token.is_some(),
            src.cluster_trust_bundle.is_some(),
        ]
        .iter()
        .filter(|b| **b)
        .count();
        if set != 1 {
            out.push(FieldError::forbidden(
                sp.as_str(),
                "may not specify more than 1 volume type per source",
            ));
        }
        if let Some(s) = &src.secret {
            let q = sp.child("secret");
            validate_items(s.items.as_deref(), None, &q, out);
            for (j, kp) in s.items.iter().flatten().enumerate() {
                seen(&kp.path, &q.child("items").index(j).child("path"), out);
            }
        }
        if let Some(c) = &src.config_map {
            let q = sp.child("configMap");
            validate_items(c.items.as_deref(), None, &q, out);
            for (j, kp) in c.items.iter().flatten().enumerate() {
                seen(&kp.path, &q.child("items").index(j).child("path"), out);
            }
        }
        if let Some(d) = &src.downward_api {
            let q = sp.child("downwardAPI");
            let items = d.items.as_deref().unwrap_or_default();
            validate_downward_items(items, &q, out);
            for (j, f) in items.iter().enumerate() {
                seen(&f.path, &q.child("items").index(j).child("path"), out);
            }
        }
        if let Some(t) = &src.service_account_token {
            let q = sp.child("serviceAccountToken");
            if t.path.is_empty() {
                out.push(FieldError::required(q.child("path")));
            }
            out.extend(validate_local_non_reserved_path(
                &t.path,
                q.child("path").as_str(),
            ));
            seen(&t.path, &q.child("path"), out);
            if let Some(s) = t.expiration_seconds {
                let detail = if s < TOKEN_MIN_SECONDS {
                    Some("may not specify a duration less than 10 minutes")
                } else if s > TOKEN_MAX_SECONDS {
                    Some("may not specify a duration larger than 2^32 seconds")
                } else {
                    None
                };
                if let Some(d) = detail {
                    out.push(FieldError::invalid(
                        q.child("expirationSeconds"),
                        &json!(s),
                        d,
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(v: serde_json::Value) -> Pod {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn succeeded_and_failed_pods_are_terminal() {
        for (phase, terminal) in [
            ("Pending", false),
            ("Running", false),
            ("Succeeded", true),
            ("Failed", true),
        ] {
            let p = pod(json!({"status": {"phase": phase}}));
            assert_eq!(is_terminal(&p), terminal, "{phase}");
        }
    }

    fn errors(v: serde_json::Value) -> Vec<String> {
        validate_pod(&pod(v))
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    fn with_volume(volume: &serde_json::Value, mount: &serde_json::Value) -> serde_json::Value {
        json!({"spec": {
            "containers": [{"name": "c", "image": "busybox", "volumeMounts": [mount]}],
            "volumes": [volume],
        }})
    }

    #[test]
    fn a_plain_pod_is_valid() {
        let e = errors(with_volume(
            &json!({"name": "data", "configMap": {"name": "cm", "defaultMode": 0o644,
                   "items": [{"key": "k", "path": "dir/k", "mode": 0o400}]}}),
            &json!({"name": "data", "mountPath": "/data", "subPath": "dir"}),
        ));
        assert!(e.is_empty(), "{e:?}");
    }

    #[test]
    fn hostile_volume_names_paths_and_modes_are_refused() {
        let e = errors(with_volume(
            &json!({"name": "../../../../etc", "emptyDir": {}}),
            &json!({"name": "../../../../etc", "mountPath": "/x"}),
        ));
        assert!(
            e[0].starts_with("spec.volumes[0].name: Invalid value: \"../../../../etc\": a lowercase RFC 1123 label"),
            "{e:?}"
        );
        // The mount then names no volume.
        assert!(
            e[1].starts_with("spec.containers[0].volumeMounts[0].name: Not found"),
            "{e:?}"
        );

        let e = errors(with_volume(
            &json!({"name": "cm", "configMap": {"name": "x", "defaultMode": 0o4755,
                   "items": [{"key": "k", "path": "../../etc/passwd"}, {"key": "k", "path": "..data"},
                             {"key": "k", "path": "/abs"}]}}),
            &json!({"name": "cm", "mountPath": "/x", "subPath": "../../etc"}),
        ));
        assert_eq!(
            e,
            [
                "spec.volumes[0].configMap.defaultMode: Invalid value: 2541: must be a number between 0 and 0777 (octal), both inclusive",
                "spec.volumes[0].configMap.items[0].path: Invalid value: \"../../etc/passwd\": must not contain '..'",
                "spec.volumes[0].configMap.items[1].path: Invalid value: \"..data\": must not start with '..'",
                "spec.volumes[0].configMap.items[2].path: Invalid value: \"/abs\": must be a relative path",
                "spec.containers[0].volumeMounts[0].subPath: Invalid value: \"../../etc\": must not contain '..'",
            ]
        );
    }

    #[test]
    fn a_shared_pid_namespace_is_never_the_hosts() {
        let spec = |share: bool, host: bool| {
            json!({"spec": {"shareProcessNamespace": share, "hostPID": host,
                "containers": [{"name": "c", "image": "i"}]}})
        };
        assert!(errors(spec(true, false)).is_empty());
        assert!(errors(spec(false, true)).is_empty());
        assert_eq!(
            errors(spec(true, true)),
            [
                "spec.shareProcessNamespace: Invalid value: true: ShareProcessNamespace and HostPID cannot both be enabled"
            ]
        );
    }

    #[test]
    fn a_statefulset_template_may_mount_its_claims() {
        let p = pod(json!({"spec": {"containers": [{"name": "c", "image": "i",
            "volumeMounts": [{"name": "data", "mountPath": "/data"}]}]}}));
        let spec = p.spec.unwrap();
        let at = Path::new("spec.template.spec");
        assert_eq!(validate_pod_spec(&spec, &at, &["Always"]).len(), 1);
        assert!(validate_pod_template(&spec, &at, &["Always"], &["data"]).is_empty());
    }

    #[test]
    fn volume_sources_duplicates_and_projections() {
        let e = errors(json!({"spec": {
            "containers": [{"name": "c", "image": "i"}],
            "volumes": [
                {"name": "a"},
                {"name": "b", "emptyDir": {}, "hostPath": {"path": "/tmp/../etc"}},
                {"name": "b", "emptyDir": {}},
                {"name": "p", "projected": {"defaultMode": 0o1777, "sources": [
                    {"serviceAccountToken": {"path": "token", "expirationSeconds": 60}},
                    {"downwardAPI": {"items": [{"path": "token", "fieldRef": {"fieldPath": "metadata.name"}}]}},
                ]}},
            ],
        }}));
        assert_eq!(
            e,
            [
                "spec.volumes[0]: Required value: must specify a volume type",
                "spec.volumes[1].emptyDir: Forbidden: may not specify more than 1 volume type",
                "spec.volumes[1].hostPath.path: Invalid value: \"/tmp/../etc\": must not contain '..'",
                "spec.volumes[2].name: Duplicate value: \"b\"",
                "spec.volumes[3].projected.defaultMode: Invalid value: 1023: must be a number between 0 and 0777 (octal), both inclusive",
                "spec.volumes[3].projected.sources[0].serviceAccountToken.expirationSeconds: Invalid value: 60: may not specify a duration less than 10 minutes",
                "spec.volumes[3].projected.sources[1].downwardAPI.items[0].path: Invalid value: \"token\": conflicting duplicate paths",
            ]
        );
    }

    #[test]
    fn containers_and_pod_fields() {
        let e = errors(json!({"spec": {
            "containers": [
                {"name": "c", "image": "i", "ports": [{"containerPort": 0, "hostPort": 70000, "protocol": "ICMP"}],
                 "imagePullPolicy": "Sometimes",
                 "volumeMounts": [{"name": "", "mountPath": "/a"}, {"name": "", "mountPath": "/a", "subPath": "x", "subPathExpr": "$(X)"}]},
            ],
            "initContainers": [{"name": "c", "image": ""}],
            "restartPolicy": "Sometimes", "dnsPolicy": "Any",
            "terminationGracePeriodSeconds": -1, "activeDeadlineSeconds": 0,
            "hostname": "Bad_Name",
        }}));
        assert_eq!(
            e,
            [
                "spec.containers[0].ports[0].containerPort: Invalid value: 0: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[0].hostPort: Invalid value: 70000: must be between 1 and 65535, inclusive",
                "spec.containers[0].ports[0].protocol: Unsupported value: \"ICMP\": supported values: \"SCTP\", \"TCP\", \"UDP\"",
                "spec.containers[0].imagePullPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"IfNotPresent\", \"Never\"",
                "spec.containers[0].volumeMounts[0].name: Required value",
                "spec.containers[0].volumeMounts[1].name: Required value",
                "spec.containers[0].volumeMounts[1].mountPath: Invalid value: \"/a\": must be unique",
                "spec.containers[0].volumeMounts[1].subPathExpr: Invalid value: \"$(X)\": subPathExpr and subPath are mutually exclusive",
                "spec.initContainers[0].name: Duplicate value: \"c\"",
                "spec.initContainers[0].image: Required value",
                "spec.restartPolicy: Unsupported value: \"Sometimes\": supported values: \"Always\", \"OnFailure\", \"Never\"",
                "spec.dnsPolicy: Unsupported value: \"Any\": supported values: \"ClusterFirstWithHostNet\", \"ClusterFirst\", \"Default\", \"None\"",
                "spec.terminationGracePeriodSeconds: Invalid value: -1: must be greater than or equal to 0",
                "spec.activeDeadlineSeconds: Invalid value: 0: must be between 1 and 2147483647, inclusive",
                "spec.hostname: Invalid value: \"Bad_Name\": a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
            ]
        );
    }

    #[test]
    fn seccomp_profiles_name_a_known_type_and_a_local_file() {
        let e = errors(json!({"spec": {
            "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "../../etc/x.json"}},
            "containers": [
                {"name": "a", "image": "i", "securityContext": {"seccompProfile": {"type": "Custom"}}},
                {"name": "b", "image": "i", "securityContext": {"seccompProfile": {"type": "Localhost"}}},
                {"name": "c", "image": "i", "securityContext": {"seccompProfile": {"type": "RuntimeDefault", "localhostProfile": "x"}}},
                {"name": "d", "image": "i", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "/abs.json"}}},
                {"name": "e", "image": "i", "securityContext": {"seccompProfile": {"type": "Localhost", "localhostProfile": "profiles/ok.json"}}},
            ],
        }}));
        assert_eq!(
            e,
            [
                "spec.containers[0].securityContext.seccompProfile.type: Unsupported value: \"Custom\": supported values: \"Localhost\", \"RuntimeDefault\", \"Unconfined\"",
                "spec.containers[1].securityContext.seccompProfile.localhostProfile: Required value: must be set when seccomp type is Localhost",
                "spec.containers[2].securityContext.seccompProfile.localhostProfile: Invalid value: {\"localhostProfile\":\"x\",\"type\":\"RuntimeDefault\"}: can only be set when seccomp type is Localhost",
                "spec.containers[3].securityContext.seccompProfile.localhostProfile: Invalid value: \"/abs.json\": must be a relative path",
                "spec.securityContext.seccompProfile.localhostProfile: Invalid value: \"../../etc/x.json\": must not contain '..'",
            ]
        );
    }

    #[test]
    fn ephemeral_containers_are_debuggers_not_workloads() {
        let e = errors(json!({"spec": {
            "containers": [{"name": "app", "image": "i"}],
            "ephemeralContainers": [
                {"name": "debugger", "image": "busybox", "targetContainerName": "app", "stdin": true, "tty": true},
                {"name": "app", "image": "i"},
                {"name": "bad", "image": "i", "targetContainerName": "nope",
                 "ports": [{"containerPort": 80}], "livenessProbe": {"exec": {"command": ["true"]}},
                 "volumeMounts": [{"name": "v", "mountPath": "/v", "subPath": "x"}]},
            ],
            "volumes": [{"name": "v", "emptyDir": {}}],
        }}));
        assert_eq!(
            e,
            [
                "spec.ephemeralContainers[1].name: Duplicate value: \"app\"",
                "spec.ephemeralContainers[2].targetContainerName: Not found: \"nope\"",
                "spec.ephemeralContainers[2].ports: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[2].livenessProbe: Forbidden: cannot be set for an Ephemeral Container",
                "spec.ephemeralContainers[2].volumeMounts[0].subPath: Forbidden: cannot be set for an Ephemeral Container",
            ]
        );
        let spec = |v: serde_json::Value| -> PodSpec { serde_json::from_value(v).unwrap() };
        let old = spec(json!({"containers": [{"name": "app"}],
            "ephemeralContainers": [{"name": "d1", "image": "busybox"}, {"name": "d2", "image": "busybox"}]}));
        let new = spec(json!({"containers": [{"name": "app"}],
            "ephemeralContainers": [{"name": "d1", "image": "alpine"}, {"name": "d3", "image": "busybox"}]}));
        let msgs: Vec<String> = validate_ephemeral_update(&old, &new)
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            msgs,
            [
                "spec.ephemeralContainers[d1]: Forbidden: existing ephemeral containers \"d1\" may not be changed\n",
                "spec.ephemeralContainers: Forbidden: existing ephemeral containers \"d2\" may not be removed\n",
            ]
        );
        assert!(validate_ephemeral_update(&old, &old).is_empty());
    }
}
