use super::{Map, WorkloadSelector};

raw! {
    /// `ServiceEntry.spec`.
    pub struct ServiceEntrySpec {
        pub hosts: Vec<String>,
        pub addresses: Vec<String>,
        pub ports: Vec<ServicePort>,
        pub location: Option<String>,
        pub resolution: Option<String>,
        pub endpoints: Vec<WorkloadEntrySpec>,
        pub workload_selector: Option<WorkloadSelector>,
        pub export_to: Vec<String>,
        pub subject_alt_names: Vec<String>,
    }
}

raw! {
    /// `ServicePort`.
    pub struct ServicePort {
        pub number: Option<i64>,
        pub protocol: Option<String>,
        pub name: Option<String>,
        pub target_port: Option<i64>,
    }
}

raw! {
    /// `WorkloadEntry.spec`, also `ServiceEntry.spec.endpoints[]`.
    pub struct WorkloadEntrySpec {
        pub address: Option<String>,
        pub ports: Map<i64>,
        pub labels: Map<String>,
        pub network: Option<String>,
        pub locality: Option<String>,
        pub weight: Option<i64>,
        pub service_account: Option<String>,
    }
}
