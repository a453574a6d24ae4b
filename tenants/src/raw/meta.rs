use super::{Any, Map};

raw! {
    /// `metadata` of any manifest.
    pub struct Metadata {
        pub name: Option<String>,
        pub namespace: Option<String>,
        pub labels: Map<String>,
        pub annotations: Map<String>,
        pub generate_name: Any,
        pub uid: Any,
        pub resource_version: Any,
        pub generation: Any,
        pub creation_timestamp: Any,
        pub deletion_timestamp: Any,
        pub deletion_grace_period_seconds: Any,
        pub owner_references: Any,
        pub finalizers: Any,
        pub managed_fields: Any,
        pub self_link: Any,
    }
}

/// A whole manifest: `apiVersion`, `kind`, `metadata`, `spec`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[allow(missing_docs)]
pub struct Object<S> {
    #[serde(default)]
    pub api_version: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    pub spec: S,
    #[serde(default)]
    pub status: Any,
}

raw! {
    /// Istio `StringMatch`: one of exact, prefix, regex; `{}` means "present".
    pub struct StringMatch {
        pub exact: Option<String>,
        pub prefix: Option<String>,
        pub regex: Option<String>,
    }
}

raw! {
    /// `PortSelector`.
    pub struct PortSelector {
        pub number: Option<i64>,
    }
}

raw! {
    /// `Percent`.
    pub struct Percent {
        pub value: Option<f64>,
    }
}

raw! {
    /// `networking.v1alpha3.WorkloadSelector` (ServiceEntry, Sidecar): `labels`.
    pub struct WorkloadSelector {
        pub labels: Map<String>,
    }
}

raw! {
    /// `type.v1beta1.WorkloadSelector` (Telemetry and the security kinds): `matchLabels`.
    pub struct LabelSelector {
        pub match_labels: Map<String>,
    }
}
