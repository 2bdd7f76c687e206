//! The resource types the apiserver serves, with what discovery publishes
//! about each (kubectl resolves short names and `get all` from it): the
//! built-in ones as a table, then the custom ones the
//! CustomResourceDefinition controller installs at run time
//! ([`install_custom`]). The apiserver routes by it, and the controllers,
//! the garbage collector and the autoscaler find kinds in it, without
//! importing the apiserver.

use std::sync::{Arc, LazyLock, RwLock};

/// One resource type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resource {
    /// "" for the core group.
    pub group: &'static str,
    pub version: &'static str,
    pub kind: &'static str,
    pub plural: &'static str,
    pub singular: &'static str,
    pub namespaced: bool,
    pub short_names: &'static [&'static str],
    pub categories: &'static [&'static str],
    pub subresources: &'static [&'static str],
    /// Only `create` (review-style resources such as SelfSubjectAccessReview).
    pub create_only: bool,
    /// Only `get` and `list`, computed rather than stored (metrics.k8s.io).
    pub read_only: bool,
    /// Defined by a CustomResourceDefinition ([`install_custom`]): none of
    /// the per-kind rules of the built-in kinds apply, whatever its kind is
    /// called.
    pub custom: bool,
}

impl Resource {
    pub fn api_version(&self) -> String {
        if self.group.is_empty() {
            self.version.to_owned()
        } else {
            format!("{}/{}", self.group, self.version)
        }
    }

    /// The group as the storage keys name it (a group that shares another
    /// group's objects, [`SHARED_STORAGE`], names that one).
    pub fn storage_group(&self) -> &'static str {
        match self.stored_with() {
            "" => "core",
            g => g,
        }
    }

    /// The group whose stored objects these are.
    fn stored_with(&self) -> &'static str {
        SHARED_STORAGE
            .iter()
            .find(|(g, p, _)| *g == self.group && *p == self.plural)
            .map_or(self.group, |(_, _, with)| with)
    }

    /// `pods` or `deployments.apps`, as in Kubernetes messages.
    pub fn qualified(&self) -> String {
        if self.group.is_empty() {
            self.plural.to_owned()
        } else {
            format!("{}.{}", self.plural, self.group)
        }
    }

    pub fn has_status(&self) -> bool {
        self.subresources.contains(&"status")
    }

    pub fn has_scale(&self) -> bool {
        self.subresources.contains(&"scale")
    }

    /// Kinds whose spec changes bump `metadata.generation` (every custom
    /// kind does, as kube-apiserver's custom resource strategy does).
    pub fn tracks_generation(&self) -> bool {
        self.custom || (self.has_status() && self.kind != "Node" && self.kind != "Namespace")
    }

    /// The kind the built-in per-kind rules go by: "" for a custom kind, so
    /// that a custom `Pod` or `Service` in another group is never taken
    /// for the built-in one.
    pub fn builtin_kind(&self) -> &'static str {
        if self.custom { "" } else { self.kind }
    }

    pub fn verbs(&self) -> &'static [&'static str] {
        if self.create_only {
            &["create"]
        } else if self.read_only {
            &["get", "list"]
        } else {
            &[
                "create",
                "delete",
                "deletecollection",
                "get",
                "list",
                "patch",
                "update",
                "watch",
            ]
        }
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "a table row: one argument per column"
)]
const fn r(
    group: &'static str,
    version: &'static str,
    kind: &'static str,
    plural: &'static str,
    singular: &'static str,
    namespaced: bool,
    short_names: &'static [&'static str],
    categories: &'static [&'static str],
    subresources: &'static [&'static str],
) -> Resource {
    Resource {
        group,
        version,
        kind,
        plural,
        singular,
        namespaced,
        short_names,
        categories,
        subresources,
        create_only: false,
        read_only: false,
        custom: false,
    }
}

const ALL: &[&str] = &["all"];

/// Every resource type served.
pub static RESOURCES: &[Resource] = &[
    r(
        "",
        "v1",
        "Namespace",
        "namespaces",
        "namespace",
        false,
        &["ns"],
        &[],
        &["status", "finalize"],
    ),
    r(
        "",
        "v1",
        "Pod",
        "pods",
        "pod",
        true,
        &["po"],
        ALL,
        &[
            "status",
            "binding",
            "log",
            "eviction",
            "exec",
            "portforward",
            "attach",
            "proxy",
            "ephemeralcontainers",
        ],
    ),
    r(
        "",
        "v1",
        "Service",
        "services",
        "service",
        true,
        &["svc"],
        ALL,
        &["status", "proxy"],
    ),
    r(
        "",
        "v1",
        "Endpoints",
        "endpoints",
        "endpoints",
        true,
        &["ep"],
        &[],
        &[],
    ),
    r(
        "",
        "v1",
        "Node",
        "nodes",
        "node",
        false,
        &["no"],
        &[],
        &["status", "proxy"],
    ),
    r(
        "",
        "v1",
        "ConfigMap",
        "configmaps",
        "configmap",
        true,
        &["cm"],
        &[],
        &[],
    ),
    r("", "v1", "Secret", "secrets", "secret", true, &[], &[], &[]),
    r(
        "",
        "v1",
        "ServiceAccount",
        "serviceaccounts",
        "serviceaccount",
        true,
        &["sa"],
        &[],
        &["token"],
    ),
    r(
        "",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        &[],
        &[],
    ),
    r(
        "",
        "v1",
        "PersistentVolume",
        "persistentvolumes",
        "persistentvolume",
        false,
        &["pv"],
        &[],
        &["status"],
    ),
    r(
        "",
        "v1",
        "PersistentVolumeClaim",
        "persistentvolumeclaims",
        "persistentvolumeclaim",
        true,
        &["pvc"],
        &[],
        &["status"],
    ),
    r(
        "",
        "v1",
        "ReplicationController",
        "replicationcontrollers",
        "replicationcontroller",
        true,
        &["rc"],
        ALL,
        &["status", "scale"],
    ),
    r(
        "apps",
        "v1",
        "Deployment",
        "deployments",
        "deployment",
        true,
        &["deploy"],
        ALL,
        &["status", "scale"],
    ),
    r(
        "apps",
        "v1",
        "ReplicaSet",
        "replicasets",
        "replicaset",
        true,
        &["rs"],
        ALL,
        &["status", "scale"],
    ),
    r(
        "apps",
        "v1",
        "DaemonSet",
        "daemonsets",
        "daemonset",
        true,
        &["ds"],
        ALL,
        &["status"],
    ),
    r(
        "apps",
        "v1",
        "StatefulSet",
        "statefulsets",
        "statefulset",
        true,
        &["sts"],
        ALL,
        &["status", "scale"],
    ),
    r(
        "apps",
        "v1",
        "ControllerRevision",
        "controllerrevisions",
        "controllerrevision",
        true,
        &[],
        &[],
        &[],
    ),
    r(
        "batch",
        "v1",
        "Job",
        "jobs",
        "job",
        true,
        &[],
        ALL,
        &["status"],
    ),
    r(
        "batch",
        "v1",
        "CronJob",
        "cronjobs",
        "cronjob",
        true,
        &["cj"],
        ALL,
        &["status"],
    ),
    r(
        "networking.k8s.io",
        "v1",
        "Ingress",
        "ingresses",
        "ingress",
        true,
        &["ing"],
        &[],
        &["status"],
    ),
    r(
        "",
        "v1",
        "ResourceQuota",
        "resourcequotas",
        "resourcequota",
        true,
        &["quota"],
        &[],
        &["status"],
    ),
    r(
        "",
        "v1",
        "LimitRange",
        "limitranges",
        "limitrange",
        true,
        &["limits"],
        &[],
        &[],
    ),
    r(
        "scheduling.k8s.io",
        "v1",
        "PriorityClass",
        "priorityclasses",
        "priorityclass",
        false,
        &["pc"],
        &[],
        &[],
    ),
    r(
        "node.k8s.io",
        "v1",
        "RuntimeClass",
        "runtimeclasses",
        "runtimeclass",
        false,
        &[],
        &[],
        &[],
    ),
    r(
        "storage.k8s.io",
        "v1",
        "StorageClass",
        "storageclasses",
        "storageclass",
        false,
        &["sc"],
        &[],
        &[],
    ),
    // The same objects as core Events, seen through the newer API
    // ([`SHARED_STORAGE`], converted in `convert`).
    r(
        "events.k8s.io",
        "v1",
        "Event",
        "events",
        "event",
        true,
        &["ev"],
        &[],
        &[],
    ),
    r(
        "networking.k8s.io",
        "v1",
        "IngressClass",
        "ingressclasses",
        "ingressclass",
        false,
        &[],
        &[],
        &[],
    ),
    r(
        "networking.k8s.io",
        "v1",
        "NetworkPolicy",
        "networkpolicies",
        "networkpolicy",
        true,
        &["netpol"],
        &[],
        &[],
    ),
    r(
        "apiregistration.k8s.io",
        "v1",
        "APIService",
        "apiservices",
        "apiservice",
        false,
        &[],
        &["api-extensions"],
        &["status"],
    ),
    r(
        "certificates.k8s.io",
        "v1",
        "CertificateSigningRequest",
        "certificatesigningrequests",
        "certificatesigningrequest",
        false,
        &["csr"],
        &[],
        &["status", "approval"],
    ),
    r(
        "policy",
        "v1",
        "PodDisruptionBudget",
        "poddisruptionbudgets",
        "poddisruptionbudget",
        true,
        &["pdb"],
        &[],
        &["status"],
    ),
    // Stored as autoscaling/v2 (listed first: the preferred version), also
    // served as autoscaling/v1 through `convert` (what `kubectl autoscale`
    // creates).
    r(
        "autoscaling",
        "v2",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        &["hpa"],
        ALL,
        &["status"],
    ),
    r(
        "autoscaling",
        "v1",
        "HorizontalPodAutoscaler",
        "horizontalpodautoscalers",
        "horizontalpodautoscaler",
        true,
        &["hpa"],
        ALL,
        &["status"],
    ),
    r(
        "discovery.k8s.io",
        "v1",
        "EndpointSlice",
        "endpointslices",
        "endpointslice",
        true,
        &[],
        &[],
        &[],
    ),
    r(
        "coordination.k8s.io",
        "v1",
        "Lease",
        "leases",
        "lease",
        true,
        &[],
        &[],
        &[],
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "Role",
        "roles",
        "role",
        true,
        &[],
        &[],
        &[],
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "RoleBinding",
        "rolebindings",
        "rolebinding",
        true,
        &[],
        &[],
        &[],
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRole",
        "clusterroles",
        "clusterrole",
        false,
        &[],
        &[],
        &[],
    ),
    r(
        "rbac.authorization.k8s.io",
        "v1",
        "ClusterRoleBinding",
        "clusterrolebindings",
        "clusterrolebinding",
        false,
        &[],
        &[],
        &[],
    ),
    r(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicy",
        "validatingadmissionpolicies",
        "validatingadmissionpolicy",
        false,
        &[],
        &["api-extensions"],
        &["status"],
    ),
    r(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingAdmissionPolicyBinding",
        "validatingadmissionpolicybindings",
        "validatingadmissionpolicybinding",
        false,
        &[],
        &["api-extensions"],
        &[],
    ),
    r(
        "admissionregistration.k8s.io",
        "v1",
        "MutatingWebhookConfiguration",
        "mutatingwebhookconfigurations",
        "mutatingwebhookconfiguration",
        false,
        &[],
        &["api-extensions"],
        &[],
    ),
    r(
        "admissionregistration.k8s.io",
        "v1",
        "ValidatingWebhookConfiguration",
        "validatingwebhookconfigurations",
        "validatingwebhookconfiguration",
        false,
        &[],
        &["api-extensions"],
        &[],
    ),
    r(
        "apiextensions.k8s.io",
        "v1",
        "CustomResourceDefinition",
        "customresourcedefinitions",
        "customresourcedefinition",
        false,
        &["crd", "crds"],
        &["api-extensions"],
        &["status"],
    ),
    Resource {
        create_only: true,
        read_only: false,
        ..r(
            "authorization.k8s.io",
            "v1",
            "SelfSubjectAccessReview",
            "selfsubjectaccessreviews",
            "selfsubjectaccessreview",
            false,
            &[],
            &[],
            &[],
        )
    },
    Resource {
        create_only: true,
        read_only: false,
        ..r(
            "authorization.k8s.io",
            "v1",
            "SubjectAccessReview",
            "subjectaccessreviews",
            "subjectaccessreview",
            false,
            &[],
            &[],
            &[],
        )
    },
    Resource {
        create_only: true,
        read_only: false,
        ..r(
            "authentication.k8s.io",
            "v1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            "selfsubjectreview",
            false,
            &[],
            &[],
            &[],
        )
    },
    // Still served by kube-apiserver for kubectl before 1.28 (`auth
    // whoami` asks v1alpha1 or v1beta1).
    Resource {
        create_only: true,
        read_only: false,
        ..r(
            "authentication.k8s.io",
            "v1beta1",
            "SelfSubjectReview",
            "selfsubjectreviews",
            "selfsubjectreview",
            false,
            &[],
            &[],
            &[],
        )
    },
    Resource {
        group: "metrics.k8s.io",
        version: "v1beta1",
        kind: "NodeMetrics",
        plural: "nodes",
        singular: "",
        namespaced: false,
        short_names: &[],
        categories: &[],
        subresources: &[],
        create_only: false,
        read_only: true,
        custom: false,
    },
    Resource {
        group: "metrics.k8s.io",
        version: "v1beta1",
        kind: "PodMetrics",
        plural: "pods",
        singular: "",
        namespaced: true,
        short_names: &[],
        categories: &[],
        subresources: &[],
        create_only: false,
        read_only: true,
        custom: false,
    },
];

/// The resource at `group`/`version` named `plural`.
pub fn find(group: &str, version: &str, plural: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.version == version && r.plural == plural)
        .or_else(|| {
            custom()
                .iter()
                .find(|c| {
                    c.resource.group == group
                        && c.resource.version == version
                        && c.resource.plural == plural
                })
                .map(|c| c.resource)
        })
}

/// Every resource type served now: the built-in ones, then those of the
/// established CustomResourceDefinitions.
pub fn all() -> Vec<&'static Resource> {
    let mut out: Vec<&'static Resource> = RESOURCES.iter().collect();
    out.extend(custom().iter().map(|c| c.resource));
    out
}

/// Whether `r` is the version its objects are stored in (the first listed
/// of its group and plural); the other versions are converted.
pub fn is_storage_version(r: &Resource) -> bool {
    storage_version(r).is_some_and(|s| std::ptr::eq(s, r))
}

/// Groups that serve another group's objects, as kube-apiserver serves
/// core Events as `events.k8s.io` Events: (group, plural, stored with).
pub const SHARED_STORAGE: &[(&str, &str, &str)] = &[("events.k8s.io", "events", "")];

/// The version objects of `r`'s kind are stored in.
pub fn storage_version(r: &Resource) -> Option<&'static Resource> {
    if r.custom {
        return custom()
            .iter()
            .find(|c| c.storage && c.resource.group == r.group && c.resource.plural == r.plural)
            .map(|c| c.resource);
    }
    let group = r.stored_with();
    RESOURCES
        .iter()
        .find(|s| s.group == group && s.plural == r.plural)
}

/// The resource of a kind in its storage version.
pub fn by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    RESOURCES
        .iter()
        .find(|r| r.group == group && r.kind == kind)
        .or_else(|| custom_by_kind(group, kind))
}

/// The served group/versions, in discovery order (core first).
pub fn group_versions() -> Vec<(&'static str, &'static str)> {
    let mut out: Vec<(&str, &str)> = Vec::new();
    for r in all() {
        if !out.contains(&(r.group, r.version)) {
            out.push((r.group, r.version));
        }
    }
    out
}

/// One served version of a custom kind, as the CustomResourceDefinition
/// controller installs it.
#[derive(Clone, Copy, Debug)]
pub struct Custom {
    pub resource: &'static Resource,
    /// The version its objects are stored in.
    pub storage: bool,
}

static CUSTOM: LazyLock<RwLock<Arc<Vec<Custom>>>> = LazyLock::new(RwLock::default);

fn custom() -> Arc<Vec<Custom>> {
    CUSTOM.read().map(|c| Arc::clone(&c)).unwrap_or_default()
}

/// Replaces the served custom versions.
pub fn install_custom(versions: Vec<Custom>) {
    if let Ok(mut c) = CUSTOM.write() {
        *c = Arc::new(versions);
    }
}

/// Whether `r` is served now (a custom kind goes with its definition).
pub fn is_served(r: &Resource) -> bool {
    !r.custom
        || custom().iter().any(|c| {
            c.resource.group == r.group
                && c.resource.version == r.version
                && c.resource.plural == r.plural
        })
}

/// The storage version of the custom `kind` of `group` (the first served
/// version when none is marked).
fn custom_by_kind(group: &str, kind: &str) -> Option<&'static Resource> {
    let custom = custom();
    let mut of_kind = custom
        .iter()
        .filter(|c| c.resource.group == group && c.resource.kind == kind);
    let first = of_kind.clone().next()?;
    Some(of_kind.find(|c| c.storage).unwrap_or(first).resource)
}
