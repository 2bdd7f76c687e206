//! `networking.k8s.io` and `discovery.k8s.io`.

use k8s_openapi::api::{discovery::v1 as discovery, networking::v1 as networking};

use super::Rules;
use crate::api::{object as o, table as t};

const NET: &str = "networking.k8s.io";

pub(super) const KINDS: &[Rules] = &[
    Rules::typed::<networking::Ingress>(NET, "Ingress")
        .table(&t::networking::INGRESS)
        .on_create(crate::api::admission::hooks::ingress_create),
    Rules::typed::<networking::IngressClass>(NET, "IngressClass")
        .table(&t::networking::INGRESS_CLASS),
    Rules::typed::<networking::NetworkPolicy>(NET, "NetworkPolicy")
        .table(&t::networking::NETWORK_POLICY),
    Rules::typed::<discovery::EndpointSlice>("discovery.k8s.io", "EndpointSlice")
        .validate(o::validate_endpoint_slice)
        .table(&t::core_v1::ENDPOINT_SLICE),
];
