raw! {
    /// `Tenant.spec` (gatehouse.dev/v1): what a team may claim.
    pub struct TenantSpec {
        pub hosts: Vec<String>,
        pub gateways: Vec<String>,
        pub tcp_ports: Vec<i64>,
        pub quotas: Option<Quotas>,
        pub signers: Vec<String>,
    }
}

raw! {
    /// `Tenant.spec.quotas`.
    pub struct Quotas {
        pub max_connections: Option<i64>,
        pub requests_per_second: Option<i64>,
        pub max_routes: Option<i64>,
    }
}
