//! `networking.k8s.io` and `discovery.k8s.io`.

use k8s_openapi::api::{discovery::v1 as discovery, networking::v1 as networking};

use super::Rules;
use crate::api::object as o;

const NET: &str = "networking.k8s.io";

pub(super) const KINDS: &[Rules] = &[
    Rules::typed::<networking::Ingress>(NET, "Ingress"),
    Rules::typed::<networking::IngressClass>(NET, "IngressClass"),
    Rules::typed::<networking::NetworkPolicy>(NET, "NetworkPolicy"),
    Rules::typed::<discovery::EndpointSlice>("discovery.k8s.io", "EndpointSlice")
        .validate(o::validate_endpoint_slice),
];
