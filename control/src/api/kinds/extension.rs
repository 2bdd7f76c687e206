//! The kinds that extend the API: admission webhooks and policies
//! (`admissionregistration.k8s.io`), CustomResourceDefinitions
//! (`apiextensions.k8s.io`) and aggregated APIs (`apiregistration.k8s.io`).

use k8s_openapi::{
    api::admissionregistration::v1 as admission,
    apiextensions_apiserver::pkg::apis::apiextensions::v1 as apiextensions,
    kube_aggregator::pkg::apis::apiregistration::v1 as apiregistration,
};

use super::Rules;
use crate::api::{aggregator, crd, object as o, table as t, webhook};

const ADMISSION: &str = "admissionregistration.k8s.io";

pub(super) const KINDS: &[Rules] = &[
    Rules::typed::<admission::ValidatingAdmissionPolicy>(ADMISSION, "ValidatingAdmissionPolicy")
        .defaults(|obj| webhook::policy::apply_defaults(obj, false))
        .validate(|obj, causes| webhook::policy::validate(obj, false, causes)),
    Rules::typed::<admission::ValidatingAdmissionPolicyBinding>(
        ADMISSION,
        "ValidatingAdmissionPolicyBinding",
    )
    .defaults(|obj| webhook::policy::apply_defaults(obj, true))
    .validate(|obj, causes| webhook::policy::validate(obj, true, causes)),
    Rules::typed::<admission::MutatingWebhookConfiguration>(
        ADMISSION,
        "MutatingWebhookConfiguration",
    )
    .defaults(|obj| webhook::config::apply_defaults(obj, true))
    .validate(webhook::config::validate),
    Rules::typed::<admission::ValidatingWebhookConfiguration>(
        ADMISSION,
        "ValidatingWebhookConfiguration",
    )
    .defaults(|obj| webhook::config::apply_defaults(obj, false))
    .validate(webhook::config::validate),
    Rules::typed::<apiextensions::CustomResourceDefinition>(
        "apiextensions.k8s.io",
        "CustomResourceDefinition",
    )
    .defaults(crd::definition::apply_defaults)
    .validate(o::validate_crd)
    .on_create(crate::api::admission::hooks::crd_create)
    .on_update(crate::api::admission::hooks::crd_update),
    Rules::typed::<apiregistration::APIService>("apiregistration.k8s.io", "APIService")
        .defaults(aggregator::apply_defaults)
        .validate(aggregator::validate)
        .table(&t::cluster::API_SERVICE),
];
