//! The workload kinds: `apps`, `batch`, `autoscaling` and `policy`.

use k8s_openapi::api::{apps::v1 as apps, autoscaling, batch::v1 as batch, policy::v1 as policy};

use super::{Rules, core::TEMPLATE};
use crate::api::{defaults as d, object as o, table as t};

pub(super) const KINDS: &[Rules] = &[
    Rules::typed::<apps::Deployment>("apps", "Deployment")
        .defaults(|obj| d::default_workload("Deployment", obj))
        .validate(o::validate_apps_workload)
        .table(&t::workloads::DEPLOYMENT)
        .pod_spec(TEMPLATE),
    Rules::typed::<apps::ReplicaSet>("apps", "ReplicaSet")
        .defaults(|obj| d::default_workload("ReplicaSet", obj))
        .validate(o::validate_apps_workload)
        .fields(&["status.replicas"])
        .table(&t::workloads::REPLICA_SET)
        .pod_spec(TEMPLATE),
    Rules::typed::<apps::DaemonSet>("apps", "DaemonSet")
        .defaults(|obj| d::default_workload("DaemonSet", obj))
        .validate(o::validate_apps_workload)
        .table(&t::workloads::DAEMON_SET)
        .pod_spec(TEMPLATE),
    Rules::typed::<apps::StatefulSet>("apps", "StatefulSet")
        .defaults(|obj| d::default_workload("StatefulSet", obj))
        .validate(o::validate_apps_workload)
        .table(&t::workloads::STATEFUL_SET)
        .pod_spec(TEMPLATE),
    Rules::typed::<apps::ControllerRevision>("apps", "ControllerRevision"),
    Rules::typed::<batch::Job>("batch", "Job")
        .defaults(d::default_job)
        .validate(o::validate_job)
        .fields(&["status.successful"])
        .table(&t::workloads::JOB)
        .pod_spec(TEMPLATE)
        .on_create(crate::api::admission::hooks::job_create),
    Rules::typed::<batch::CronJob>("batch", "CronJob")
        .defaults(d::default_cron_job)
        .validate(o::validate_cron_job)
        .table(&t::workloads::CRON_JOB)
        .pod_spec("/spec/jobTemplate/spec/template/spec"),
    Rules::typed::<autoscaling::v1::HorizontalPodAutoscaler>(
        "autoscaling",
        "HorizontalPodAutoscaler",
    )
    .at("v1")
    .defaults(d::default_hpa_v1)
    .validate(o::validate_hpa)
    .table(&t::workloads::HORIZONTAL_POD_AUTOSCALER),
    Rules::typed::<autoscaling::v2::HorizontalPodAutoscaler>(
        "autoscaling",
        "HorizontalPodAutoscaler",
    )
    .at("v2")
    .defaults(d::default_hpa_v2)
    .validate(o::validate_hpa)
    .table(&t::workloads::HORIZONTAL_POD_AUTOSCALER),
    Rules::typed::<policy::PodDisruptionBudget>("policy", "PodDisruptionBudget")
        .table(&t::networking::POD_DISRUPTION_BUDGET),
];
