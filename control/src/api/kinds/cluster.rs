//! Cluster-wide machinery: RBAC, access reviews, leases, priority,
//! runtime and storage classes, `events.k8s.io`.

use k8s_openapi::api::{
    authentication::v1 as authn, authorization::v1 as authz, coordination::v1 as coordination,
    events::v1 as events, node::v1 as node, rbac::v1 as rbac, scheduling::v1 as scheduling,
    storage::v1 as storage,
};

use super::Rules;
use crate::api::{defaults as d, priority, table as t};

const RBAC: &str = "rbac.authorization.k8s.io";
const AUTHZ: &str = "authorization.k8s.io";

pub(super) const KINDS: &[Rules] = &[
    Rules::typed::<rbac::Role>(RBAC, "Role"),
    Rules::typed::<rbac::RoleBinding>(RBAC, "RoleBinding"),
    Rules::typed::<rbac::ClusterRole>(RBAC, "ClusterRole"),
    Rules::typed::<rbac::ClusterRoleBinding>(RBAC, "ClusterRoleBinding"),
    Rules::typed::<authz::SelfSubjectAccessReview>(AUTHZ, "SelfSubjectAccessReview"),
    Rules::typed::<authz::SubjectAccessReview>(AUTHZ, "SubjectAccessReview"),
    // v1beta1's review has no type of its own in k8s-openapi: not checked.
    Rules::typed::<authn::SelfSubjectReview>("authentication.k8s.io", "SelfSubjectReview").at("v1"),
    Rules::typed::<coordination::Lease>("coordination.k8s.io", "Lease").table(&t::core_v1::LEASE),
    Rules::typed::<scheduling::PriorityClass>("scheduling.k8s.io", "PriorityClass")
        .defaults(priority::default_class)
        .validate(|obj, causes| priority::validate(obj, None, causes))
        .table(&t::cluster::PRIORITY_CLASS)
        .on_create(crate::api::admission::hooks::priority_class_create)
        .on_update(crate::api::admission::hooks::priority_class_update),
    Rules::typed::<node::RuntimeClass>("node.k8s.io", "RuntimeClass")
        .table(&t::cluster::RUNTIME_CLASS),
    Rules::typed::<storage::StorageClass>("storage.k8s.io", "StorageClass")
        .defaults(d::default_storage_class)
        .table(&t::cluster::STORAGE_CLASS),
    Rules::typed::<events::Event>("events.k8s.io", "Event")
        .fields(super::core::EVENT_FIELDS)
        .table(&t::core_v1::EVENT),
    // Checked by `crate::api::csr` rather than against its type.
    Rules::untyped("certificates.k8s.io", "CertificateSigningRequest")
        .fields(&["spec.signerName"])
        .table(&t::cluster::CERTIFICATE_SIGNING_REQUEST),
];
