use super::{Any, LabelSelector, Map};

raw! {
    /// `Telemetry.spec`.
    pub struct TelemetrySpec {
        pub selector: Option<LabelSelector>,
        pub target_ref: Any,
        pub target_refs: Any,
        pub tracing: Any,
        pub metrics: Vec<Metrics>,
        pub access_logging: Vec<AccessLogging>,
    }
}

raw! {
    /// `ProviderRef`.
    pub struct ProviderRef {
        pub name: Option<String>,
    }
}

raw! {
    /// `Metrics`.
    pub struct Metrics {
        pub providers: Vec<ProviderRef>,
        pub overrides: Vec<MetricsOverrides>,
        pub reporting_interval: Option<String>,
    }
}

raw! {
    /// `MetricsOverrides`.
    pub struct MetricsOverrides {
        #[serde(rename = "match")]
        pub selector: Option<MetricSelector>,
        pub disabled: Option<bool>,
        pub tag_overrides: Map<TagOverride>,
    }
}

raw! {
    /// `MetricSelector`.
    pub struct MetricSelector {
        pub metric: Option<String>,
        pub custom_metric: Option<String>,
        pub mode: Option<String>,
    }
}

raw! {
    /// `MetricsOverrides.TagOverride`.
    pub struct TagOverride {
        pub operation: Option<String>,
        pub value: Option<String>,
    }
}

raw! {
    /// `AccessLogging`.
    pub struct AccessLogging {
        #[serde(rename = "match")]
        pub selector: Option<LogSelector>,
        pub providers: Vec<ProviderRef>,
        pub disabled: Option<bool>,
        pub filter: Option<AccessLogFilter>,
    }
}

raw! {
    /// `AccessLogging.LogSelector`.
    pub struct LogSelector {
        pub mode: Option<String>,
    }
}

raw! {
    /// `AccessLogging.Filter`.
    pub struct AccessLogFilter {
        pub expression: Option<String>,
    }
}
