use super::Any;

raw! {
    /// `Sidecar.spec`; only `outboundTrafficPolicy` means something to a gateway.
    pub struct SidecarSpec {
        pub workload_selector: Any,
        pub ingress: Any,
        pub egress: Any,
        pub inbound_connection_pool: Any,
        pub outbound_traffic_policy: Option<OutboundTrafficPolicy>,
    }
}

raw! {
    /// `OutboundTrafficPolicy`.
    pub struct OutboundTrafficPolicy {
        pub mode: Option<String>,
        pub egress_proxy: Any,
    }
}
