//! The core group's kinds (`v1`).

use k8s_openapi::api::core::v1 as core;

use super::Rules;
use crate::api::{admission::hooks, defaults as d, limits, object as o, quota, table as t};

pub(super) const KINDS: &[Rules] = &[
    Rules::typed::<core::Namespace>("", "Namespace")
        .defaults(d::default_namespace)
        .fields(&["status.phase"])
        .table(&t::core_v1::NAMESPACE),
    Rules::typed::<core::Pod>("", "Pod")
        .defaults(d::default_pod)
        .fields(POD_FIELDS)
        .table(&t::workloads::POD)
        .validate(o::validate_pod)
        .pod_spec("/spec")
        .quota(&quota::PODS)
        .on_create(hooks::pod_create)
        .on_update(hooks::pod_update),
    Rules::typed::<core::Service>("", "Service")
        .defaults(d::default_service)
        .validate(o::validate_service)
        .table(&t::core_v1::SERVICE)
        .quota(&quota::SERVICES)
        .on_create(hooks::service_create)
        .on_update(hooks::service_update),
    Rules::typed::<core::Endpoints>("", "Endpoints").table(&t::core_v1::ENDPOINTS),
    Rules::typed::<core::Node>("", "Node")
        .fields(&["spec.unschedulable"])
        .table(&t::core_v1::NODE),
    Rules::typed::<core::ConfigMap>("", "ConfigMap")
        .validate(o::validate_config_map)
        .table(&t::core_v1::CONFIG_MAP),
    Rules::typed::<core::Secret>("", "Secret")
        .defaults(d::default_secret)
        .validate(o::validate_secret)
        .fields(&["type"])
        .table(&t::core_v1::SECRET),
    Rules::typed::<core::ServiceAccount>("", "ServiceAccount").table(&t::core_v1::SERVICE_ACCOUNT),
    Rules::typed::<core::Event>("", "Event")
        .fields(EVENT_FIELDS)
        .table(&t::core_v1::EVENT),
    Rules::typed::<core::PersistentVolume>("", "PersistentVolume")
        .defaults(d::default_persistent_volume)
        .table(&t::core_v1::PERSISTENT_VOLUME),
    Rules::typed::<core::PersistentVolumeClaim>("", "PersistentVolumeClaim")
        .defaults(d::default_persistent_volume_claim)
        .table(&t::core_v1::PERSISTENT_VOLUME_CLAIM)
        .quota(&quota::CLAIMS)
        .on_create(hooks::claim_create),
    Rules::typed::<core::ReplicationController>("", "ReplicationController")
        .defaults(|obj| d::default_workload("ReplicationController", obj))
        .fields(&["status.replicas"])
        .pod_spec(TEMPLATE)
        // The same columns and cells as a ReplicaSet, as kubectl prints them.
        .table(&t::workloads::REPLICA_SET),
    Rules::typed::<core::ResourceQuota>("", "ResourceQuota")
        .validate(quota::validate)
        .table(&t::cluster::RESOURCE_QUOTA)
        .on_create(hooks::resource_quota_create),
    Rules::typed::<core::LimitRange>("", "LimitRange")
        .defaults(limits::default_limit_range)
        .validate(limits::validate_limit_range),
];

/// Where a workload keeps its pods' spec.
pub(super) const TEMPLATE: &str = "/spec/template/spec";

const POD_FIELDS: &[&str] = &[
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "spec.hostNetwork",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
];

/// Also those of `events.k8s.io`'s Events (the same objects).
pub(super) const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];
