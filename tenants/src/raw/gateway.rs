use super::{Any, Map};

raw! {
    /// `Gateway.spec`.
    pub struct GatewaySpec {
        pub servers: Vec<Server>,
        pub selector: Option<Map<String>>,
    }
}

raw! {
    /// `Gateway.spec.servers[]`.
    pub struct Server {
        pub port: Option<ServerPort>,
        pub bind: Option<String>,
        pub hosts: Vec<String>,
        pub tls: Option<ServerTls>,
        pub default_endpoint: Any,
        pub name: Option<String>,
    }
}

raw! {
    /// `Gateway.spec.servers[].port`.
    pub struct ServerPort {
        pub number: Option<i64>,
        pub protocol: Option<String>,
        pub name: Option<String>,
        pub target_port: Option<i64>,
    }
}

raw! {
    /// `Gateway.spec.servers[].tls` (`ServerTLSSettings`).
    pub struct ServerTls {
        pub https_redirect: Option<bool>,
        pub mode: Option<String>,
        pub server_certificate: Option<String>,
        pub private_key: Option<String>,
        pub ca_certificates: Option<String>,
        pub credential_name: Option<String>,
        pub credential_names: Option<Vec<String>>,
        pub tls_certificates: Option<Vec<TlsCertificate>>,
        pub ca_cert_credential_name: Option<String>,
        pub ca_crl: Option<String>,
        pub subject_alt_names: Vec<String>,
        pub verify_certificate_spki: Vec<String>,
        pub verify_certificate_hash: Vec<String>,
        pub min_protocol_version: Option<String>,
        pub max_protocol_version: Option<String>,
        pub cipher_suites: Vec<String>,
        pub insecure_skip_verify: Option<bool>,
    }
}

raw! {
    /// `ServerTLSSettings.tlsCertificates[]`.
    pub struct TlsCertificate {
        pub server_certificate: Option<String>,
        pub private_key: Option<String>,
        pub ca_certificates: Option<String>,
    }
}
