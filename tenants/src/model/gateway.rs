//! `Gateway`: servers (port, protocol, hosts, TLS) on the gateway groups it selects.
//! Rules from Istio's `ValidateGateway`, `validateServer`, `validateTLSOptions`.

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::Serialize;

use super::{Checker, Meta};
use crate::diag::FieldPath;
use crate::raw;
use crate::types::{Host, Protocol, is_dns1123_label};

/// A validated Gateway.
#[derive(Debug, Clone, Serialize)]
pub struct Gateway {
    /// Identity.
    pub meta: Meta,
    /// Group labels this Gateway selects; `None` selects every group.
    pub selector: Option<BTreeMap<String, String>>,
    /// The servers.
    pub servers: Vec<Server>,
}

/// Which namespaces' VirtualServices may bind to a server host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum NsSel {
    /// `*/host` or no prefix.
    Any,
    /// `ns/host` (`./host` already resolved to the Gateway's namespace).
    Named(String),
}

/// One entry of `servers[].hosts`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerHost {
    /// The namespace part.
    pub ns: NsSel,
    /// The host part.
    pub host: Host,
}

/// A validated server.
#[derive(Debug, Clone, Serialize)]
pub struct Server {
    /// Index in `spec.servers`.
    pub index: usize,
    /// `port.number`: the Gateway port (mapped to a listening port by the group).
    pub port: u16,
    /// `port.protocol`.
    pub protocol: Protocol,
    /// `port.name`.
    pub port_name: String,
    /// `bind`.
    pub bind: Option<IpAddr>,
    /// `hosts`.
    pub hosts: Vec<ServerHost>,
    /// `tls`.
    pub tls: Option<ServerTls>,
}

/// `ServerTLSSettings.TLSmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ServerTlsMode {
    /// Forward the TLS stream by SNI without terminating it.
    Passthrough,
    /// Terminate with a server certificate.
    Simple,
    /// Terminate and require a client certificate.
    Mutual,
    /// Route by the `outbound_.port_.subset_.host` SNI.
    AutoPassthrough,
    /// Mesh mTLS (no meaning without a mesh).
    IstioMutual,
    /// Terminate; verify a client certificate if one is sent.
    OptionalMutual,
}

impl ServerTlsMode {
    /// Whether the gateway terminates TLS.
    pub fn terminates(self) -> bool {
        matches!(self, Self::Simple | Self::Mutual | Self::OptionalMutual)
    }
}

/// TLS protocol versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TlsVersion {
    /// Default.
    TlsAuto,
    /// TLS 1.0.
    Tlsv10,
    /// TLS 1.1.
    Tlsv11,
    /// TLS 1.2.
    Tlsv12,
    /// TLS 1.3.
    Tlsv13,
}

/// Where a server certificate comes from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum Credential {
    /// `<credentials>/<namespace>/<name>/`.
    Name(String),
    /// File paths on the appliance (platform only).
    Files {
        /// `serverCertificate`.
        cert: String,
        /// `privateKey`.
        key: String,
        /// `caCertificates`.
        ca: Option<String>,
        /// `caCrl`: revoked certificates among those `ca` signed.
        crl: Option<String>,
    },
}

/// Client-certificate pins, SHA-256 digests. Empty admits any certificate the CA signed; else
/// a certificate must match one pin of either list, as Envoy's `verify_certificate_spki` and
/// `verify_certificate_hash` (either list may match).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize)]
pub struct CertPins {
    /// `verifyCertificateSpki`: digests of the certificate's SubjectPublicKeyInfo (DER).
    #[serde(serialize_with = "hex_list")]
    pub spki: Vec<[u8; 32]>,
    /// `verifyCertificateHash`: digests of the whole certificate (DER).
    #[serde(serialize_with = "hex_list")]
    pub hash: Vec<[u8; 32]>,
}

impl CertPins {
    /// Whether no pin is set.
    pub fn is_empty(&self) -> bool {
        self.spki.is_empty() && self.hash.is_empty()
    }
}

fn hex_list<S: serde::Serializer>(v: &[[u8; 32]], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(v.iter().map(hex::encode))
}

/// Parses `verifyCertificateSpki` (base64 of a SHA-256 digest) and `verifyCertificateHash`
/// (hex, plain or colon-separated, as Envoy takes them).
fn parse_pins(c: &mut Checker, p: &FieldPath, t: &raw::ServerTls) -> CertPins {
    use base64::Engine as _;
    let mut pins = CertPins::default();
    for (i, s) in t.verify_certificate_spki.iter().enumerate() {
        match base64::engine::general_purpose::STANDARD.decode(s.trim()) {
            Ok(d) if d.len() == 32 => pins.spki.push(d.try_into().unwrap_or([0; 32])),
            _ => c.error(
                &p.key("verifyCertificateSpki").idx(i),
                format!("{s:?} is not a base64-encoded SHA-256 digest (44 characters, as `openssl pkey -pubin -outform der | openssl dgst -sha256 -binary | base64` prints)"),
            ),
        }
    }
    for (i, s) in t.verify_certificate_hash.iter().enumerate() {
        let plain: String = s.trim().chars().filter(|ch| *ch != ':').collect();
        let colons_ok = !s.contains(':') || s.trim().split(':').all(|b| b.len() == 2);
        match hex::decode(&plain) {
            Ok(d) if d.len() == 32 && colons_ok => pins.hash.push(d.try_into().unwrap_or([0; 32])),
            _ => c.error(
                &p.key("verifyCertificateHash").idx(i),
                format!("{s:?} is not a hex SHA-256 digest (64 hex digits, optionally in colon-separated pairs, as `openssl x509 -noout -fingerprint -sha256` prints)"),
            ),
        }
    }
    pins
}

/// Validated `ServerTLSSettings`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ServerTls {
    /// `httpsRedirect`.
    pub https_redirect: bool,
    /// `mode`.
    pub mode: ServerTlsMode,
    /// The certificate source, for terminating modes (the first of `credentialNames` or
    /// `tlsCertificates`; its CA verifies MUTUAL clients).
    pub credential: Option<Credential>,
    /// The second of `credentialNames` or `tlsCertificates`: a certificate of the other key
    /// type (RSA beside ECDSA), chosen by what the client can verify.
    pub second_credential: Option<Credential>,
    /// `caCertCredentialName`: a separate folder holding `ca.crt`.
    pub ca_credential: Option<String>,
    /// `subjectAltNames`: allowed client-certificate SANs (MUTUAL).
    pub subject_alt_names: Vec<String>,
    /// `verifyCertificateSpki` and `verifyCertificateHash`: the client certificates admitted
    /// (MUTUAL), on top of the CA's check.
    pub pins: CertPins,
    /// `minProtocolVersion`.
    pub min_version: TlsVersion,
    /// `maxProtocolVersion`.
    pub max_version: TlsVersion,
    /// `cipherSuites`, filtered to the valid ones.
    pub cipher_suites: Vec<String>,
}

/// Cipher suite names Istio accepts (`pkg/config/security/security.go`).
pub const VALID_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "AES256-GCM-SHA384",
    "AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
    "ECDHE-ECDSA-AES128-SHA",
    "ECDHE-RSA-AES128-SHA",
    "AES128-SHA",
    "ECDHE-ECDSA-AES256-SHA",
    "ECDHE-RSA-AES256-SHA",
    "AES256-SHA",
    "DES-CBC3-SHA",
];

/// The subset of [`VALID_CIPHER_SUITES`] that rustls implements (TLS 1.2, AEAD, ECDHE).
pub const RUSTLS_CIPHER_SUITES: &[&str] = &[
    "ECDHE-ECDSA-AES256-GCM-SHA384",
    "ECDHE-RSA-AES256-GCM-SHA384",
    "ECDHE-ECDSA-AES128-GCM-SHA256",
    "ECDHE-RSA-AES128-GCM-SHA256",
    "ECDHE-ECDSA-CHACHA20-POLY1305",
    "ECDHE-RSA-CHACHA20-POLY1305",
];

const TLS_MODES: &[(&str, ServerTlsMode)] = &[
    ("PASSTHROUGH", ServerTlsMode::Passthrough),
    ("SIMPLE", ServerTlsMode::Simple),
    ("MUTUAL", ServerTlsMode::Mutual),
    ("AUTO_PASSTHROUGH", ServerTlsMode::AutoPassthrough),
    ("ISTIO_MUTUAL", ServerTlsMode::IstioMutual),
    ("OPTIONAL_MUTUAL", ServerTlsMode::OptionalMutual),
];

const TLS_VERSIONS: &[(&str, TlsVersion)] = &[
    ("TLS_AUTO", TlsVersion::TlsAuto),
    ("TLSV1_0", TlsVersion::Tlsv10),
    ("TLSV1_1", TlsVersion::Tlsv11),
    ("TLSV1_2", TlsVersion::Tlsv12),
    ("TLSV1_3", TlsVersion::Tlsv13),
];

// === impl Gateway ===

impl Gateway {
    /// Parses and validates a Gateway.
    pub fn parse(c: &mut Checker, meta: Meta, spec: &raw::GatewaySpec) -> Self {
        let root = FieldPath::root();
        if !is_dns1123_label(&meta.name) {
            c.error(
                &root.key("metadata").key("name"),
                format!(
                    "Gateway name {:?} must be a DNS-1123 label (no dots)",
                    meta.name
                ),
            );
        }
        let spec_path = root.key("spec");
        if let Some(sel) = &spec.selector {
            super::parse_labels(c, &spec_path.key("selector"), sel);
        }
        if spec.servers.is_empty() {
            c.error(
                &spec_path.key("servers"),
                "gateway must have at least one server",
            );
        }
        let mut names: BTreeMap<String, usize> = BTreeMap::new();
        let mut servers = Vec::new();
        for (i, s) in spec.servers.iter().enumerate() {
            let p = spec_path.key("servers").idx(i);
            if let Some(name) = s.port.as_ref().and_then(|p| p.name.as_ref())
                && let Some(first) = names.insert(name.clone(), i)
            {
                c.error(
                        &p.key("port").key("name"),
                        format!(
                            "port names in servers must be unique: duplicate name {name:?} (also servers[{first}])"
                        ),
                    );
            }
            if let Some(srv) = parse_server(c, &p, i, s, &meta.namespace) {
                servers.push(srv);
            }
        }
        Self {
            meta,
            selector: spec.selector.clone(),
            servers,
        }
    }
}

fn parse_server(
    c: &mut Checker,
    p: &FieldPath,
    index: usize,
    s: &raw::Server,
    gw_ns: &str,
) -> Option<Server> {
    c.unsupported(&p.key("defaultEndpoint"), &s.default_endpoint);
    let hosts = parse_server_hosts(c, &p.key("hosts"), &s.hosts, gw_ns);
    let Some(port) = &s.port else {
        c.error(&p.key("port"), "port is required");
        return None;
    };
    let pp = p.key("port");
    let number = match port.number {
        Some(n) => c.port(&pp.key("number"), n),
        None => {
            c.error(&pp.key("number"), "port number is required");
            None
        }
    };
    let protocol = match port.protocol.as_deref() {
        None | Some("") => {
            c.error(&pp.key("protocol"), "port protocol is required");
            None
        }
        Some(s) => match Protocol::parse(s) {
            Some(Protocol::Udp) | Some(Protocol::HttpProxy) => {
                c.error(
                    &pp.key("protocol"),
                    format!("protocol {s:?} cannot be served by a gateway"),
                );
                None
            }
            Some(pr) => Some(pr),
            None => {
                c.error(
                    &pp.key("protocol"),
                    format!("unrecognized protocol {s:?}; expected HTTP, HTTPS, HTTP2, GRPC, GRPC-WEB, TLS, TCP, MONGO, REDIS or MYSQL"),
                );
                None
            }
        },
    };
    let port_name = match port.name.as_deref() {
        None | Some("") => {
            c.error(&pp.key("name"), "port name is required");
            String::new()
        }
        Some(n) => n.to_string(),
    };
    if port.target_port.is_some() {
        c.error(
            &pp.key("targetPort"),
            "targetPort has no meaning on a Gateway server; map ports in the group's k8s.service.ports",
        );
    }
    let bind = match s.bind.as_deref() {
        None | Some("") => None,
        Some(b) if b.starts_with("unix://") => {
            c.error(
                &p.key("bind"),
                format!("not supported yet: {}", p.key("bind")),
            );
            None
        }
        Some(b) => match b.parse::<IpAddr>() {
            Ok(ip) => Some(ip),
            Err(_) => {
                c.error(&p.key("bind"), format!("bind {b:?} must be an IP address"));
                None
            }
        },
    };
    let protocol = protocol?;
    let tls = parse_tls_block(c, p, protocol, &s.tls);
    Some(Server {
        index,
        port: number?,
        protocol,
        port_name,
        bind,
        hosts,
        tls,
    })
}

fn parse_server_hosts(
    c: &mut Checker,
    p: &FieldPath,
    hosts: &[String],
    gw_ns: &str,
) -> Vec<ServerHost> {
    if hosts.is_empty() {
        c.error(p, "server config must contain at least one host");
    }
    let mut out = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let hp = p.idx(i);
        let (ns, name) = match h.split_once('/') {
            Some((ns, name)) => (Some(ns), name),
            None => (None, h.as_str()),
        };
        let ns = match ns {
            None | Some("*") => NsSel::Any,
            Some(".") => NsSel::Named(gw_ns.to_string()),
            Some(ns) if is_dns1123_label(ns) => NsSel::Named(ns.to_string()),
            Some(ns) => {
                c.error(&hp, format!("invalid namespace {ns:?} in host {h:?}"));
                continue;
            }
        };
        match Host::parse_gateway_host(name) {
            Ok(host) => out.push(ServerHost { ns, host }),
            Err(e) => c.error(&hp, e.to_string()),
        }
    }
    out
}

fn parse_tls_block(
    c: &mut Checker,
    p: &FieldPath,
    protocol: Protocol,
    tls: &Option<raw::ServerTls>,
) -> Option<ServerTls> {
    let tp = p.key("tls");
    match (protocol, tls) {
        (Protocol::Https | Protocol::Tls, None) => {
            c.error(
                &tp,
                format!("server must have TLS settings for {protocol} protocol"),
            );
            None
        }
        (pr, Some(_)) if pr.is_tcp() => {
            c.error(
                &tp,
                format!("TLS settings are not allowed on a {pr} server"),
            );
            None
        }
        (_, None) => None,
        (pr, Some(t)) => {
            let parsed = parse_server_tls(c, &tp, t)?;
            if pr.is_http() {
                let certs = t.server_certificate.is_some()
                    || t.private_key.is_some()
                    || t.ca_certificates.is_some();
                let mode_ok = matches!(
                    parsed.mode,
                    ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough
                );
                if !mode_ok || certs {
                    c.error(
                        &tp,
                        format!("a {pr} server may only set tls.httpsRedirect; use protocol HTTPS to terminate TLS"),
                    );
                    return None;
                }
            } else if parsed.https_redirect {
                c.warn(
                    &tp.key("httpsRedirect"),
                    "httpsRedirect only applies to HTTP servers",
                );
            }
            Some(parsed)
        }
    }
}

fn parse_server_tls(c: &mut Checker, p: &FieldPath, t: &raw::ServerTls) -> Option<ServerTls> {
    let mode = c.enumeration(
        &p.key("mode"),
        &t.mode,
        TLS_MODES,
        ServerTlsMode::Passthrough,
    )?;
    for (key, v) in [
        ("serverCertificate", &t.server_certificate),
        ("privateKey", &t.private_key),
        ("caCertificates", &t.ca_certificates),
        ("caCrl", &t.ca_crl),
    ] {
        c.file_path(&p.key(key), v.as_deref());
    }
    let has_files = t.server_certificate.is_some() || t.private_key.is_some();
    let has_name = t.credential_name.as_deref().is_some_and(|s| !s.is_empty());
    let has_names = t.credential_names.as_ref().is_some_and(|v| !v.is_empty());
    let has_certs = t.tls_certificates.as_ref().is_some_and(|v| !v.is_empty());
    let sources = [has_files, has_name, has_names, has_certs]
        .iter()
        .filter(|b| **b)
        .count();
    if sources > 1 {
        c.error(
            p,
            "only one of serverCertificate/privateKey, credentialName, credentialNames or tlsCertificates may be set",
        );
    }
    if t.mode.is_none() && (has_name || has_files || has_names || has_certs) {
        c.warn(
            &p.key("mode"),
            "tls.mode is not set, so it defaults to PASSTHROUGH and the certificate is ignored (Istio's default); set mode: SIMPLE to terminate TLS",
        );
    }
    match mode {
        ServerTlsMode::IstioMutual => {
            if sources > 0 || t.ca_certificates.is_some() {
                c.error(p, "ISTIO_MUTUAL TLS cannot have associated certificates");
            }
            c.error(&p.key("mode"), "not supported yet: ISTIO_MUTUAL needs a mesh identity, which an appliance does not have");
        }
        ServerTlsMode::Passthrough | ServerTlsMode::AutoPassthrough => {
            if sources > 0 && t.mode.is_some() {
                c.warn(p, "certificates are ignored in PASSTHROUGH mode");
            }
        }
        ServerTlsMode::Simple | ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual => {
            if !has_name && !has_names && !has_certs {
                if t.server_certificate.is_none() {
                    c.error(
                        &p.key("serverCertificate"),
                        "SIMPLE and MUTUAL TLS need credentialName or serverCertificate",
                    );
                }
                if t.private_key.is_none() {
                    c.error(
                        &p.key("privateKey"),
                        "SIMPLE and MUTUAL TLS need credentialName or privateKey",
                    );
                }
                if matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
                    && t.ca_certificates.is_none()
                {
                    c.error(
                        &p.key("caCertificates"),
                        "MUTUAL and OPTIONAL_MUTUAL TLS need credentialName or caCertificates",
                    );
                }
                if c.tenant && has_files {
                    c.error(
                        &p.key("serverCertificate"),
                        "tenants reference certificates by credentialName, not by file path",
                    );
                }
            }
        }
    }
    if has_certs
        && matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
        && t.ca_certificates.is_none()
        && t.tls_certificates
            .as_ref()
            .and_then(|v| v.first())
            .is_none_or(|e| e.ca_certificates.is_none())
    {
        c.error(
            &p.key("tlsCertificates").idx(0).key("caCertificates"),
            "MUTUAL and OPTIONAL_MUTUAL TLS need a CA: set caCertificates on the first of tlsCertificates",
        );
    }
    if has_certs && c.tenant {
        c.error(
            &p.key("tlsCertificates"),
            "tenants reference certificates by credentialName or credentialNames, not by file path",
        );
    }
    if t.ca_crl.is_some() {
        if has_name || has_names {
            c.error(
                &p.key("caCrl"),
                "caCrl cannot be set with credentialName; put ca.crl in the credential folder",
            );
        } else if mode == ServerTlsMode::Simple {
            c.error(&p.key("caCrl"), "caCrl has no meaning in SIMPLE mode");
        } else if c.tenant {
            c.error(
                &p.key("caCrl"),
                "tenants reference certificates by credentialName; put ca.crl in the credential folder",
            );
        }
    }
    let pins = parse_pins(c, p, t);
    if !pins.is_empty() && mode == ServerTlsMode::Simple {
        let f = if t.verify_certificate_spki.is_empty() {
            "verifyCertificateHash"
        } else {
            "verifyCertificateSpki"
        };
        c.warn(
            &p.key(f),
            "client-certificate pins have no effect in SIMPLE mode (no client certificate is asked for); use MUTUAL",
        );
    }
    if t.insecure_skip_verify == Some(true) {
        c.error(
            &p.key("insecureSkipVerify"),
            format!("not supported yet: {}", p.key("insecureSkipVerify")),
        );
    }
    let min_version = c.enumeration(
        &p.key("minProtocolVersion"),
        &t.min_protocol_version,
        TLS_VERSIONS,
        TlsVersion::TlsAuto,
    )?;
    let max_version = c.enumeration(
        &p.key("maxProtocolVersion"),
        &t.max_protocol_version,
        TLS_VERSIONS,
        TlsVersion::TlsAuto,
    )?;
    if matches!(min_version, TlsVersion::Tlsv10 | TlsVersion::Tlsv11) {
        c.warn(
            &p.key("minProtocolVersion"),
            "TLS 1.0 and 1.1 are not offered (rustls implements TLS 1.2 and 1.3); the minimum is TLS 1.2",
        );
    }
    if matches!(max_version, TlsVersion::Tlsv10 | TlsVersion::Tlsv11) {
        c.error(
            &p.key("maxProtocolVersion"),
            "TLS 1.0 and 1.1 are not offered; the maximum must be TLSV1_2 or TLSV1_3",
        );
    }
    if min_version > max_version && max_version != TlsVersion::TlsAuto {
        c.error(
            &p.key("maxProtocolVersion"),
            "maxProtocolVersion is lower than minProtocolVersion",
        );
    }
    let mut suites = Vec::new();
    for (i, s) in t.cipher_suites.iter().enumerate() {
        let sp = p.key("cipherSuites").idx(i);
        if !VALID_CIPHER_SUITES.contains(&s.as_str()) {
            c.warn(&sp, format!("ignoring invalid cipher suite {s:?}"));
        } else if suites.contains(s) {
            c.warn(&sp, format!("ignoring duplicate cipher suite {s:?}"));
        } else if !RUSTLS_CIPHER_SUITES.contains(&s.as_str()) {
            c.warn(
                &sp,
                format!(
                    "cipher suite {s:?} is not offered: only ECDHE AEAD suites are implemented"
                ),
            );
        } else {
            suites.push(s.clone());
        }
    }
    if !t.cipher_suites.is_empty() && suites.is_empty() && min_version < TlsVersion::Tlsv13 {
        c.error(
            &p.key("cipherSuites"),
            "none of the listed cipher suites can be offered; TLS 1.2 clients could not connect",
        );
    }
    let (several, second) = several_credentials(c, p, t);
    let mut credential = if has_name {
        Some(Credential::Name(
            t.credential_name.clone().unwrap_or_default(),
        ))
    } else if several.is_some() {
        several
    } else if has_files {
        Some(Credential::Files {
            cert: t.server_certificate.clone().unwrap_or_default(),
            key: t.private_key.clone().unwrap_or_default(),
            ca: t.ca_certificates.clone(),
            crl: None,
        })
    } else {
        None
    };
    if let Some(Credential::Files { crl, .. }) = &mut credential
        && matches!(mode, ServerTlsMode::Mutual | ServerTlsMode::OptionalMutual)
    {
        crl.clone_from(&t.ca_crl);
    }
    if let Some(Credential::Name(n)) = &credential
        && !valid_credential_name(n)
    {
        c.error(
            &p.key("credentialName"),
            format!(
                "credentialName {n:?} must be a DNS-1123 subdomain (letters, digits, '-' and '.')"
            ),
        );
    }
    Some(ServerTls {
        https_redirect: t.https_redirect.unwrap_or(false),
        mode,
        credential,
        second_credential: second,
        ca_credential: t.ca_cert_credential_name.clone(),
        subject_alt_names: t.subject_alt_names.clone(),
        pins,
        min_version,
        max_version,
        cipher_suites: suites,
    })
}

/// `credentialNames` or `tlsCertificates`: one or two certificates for the same server,
/// mainly an RSA one beside an ECDSA one (the CRD caps both lists at two). Returns the first
/// and the second.
fn several_credentials(
    c: &mut Checker,
    p: &FieldPath,
    t: &raw::ServerTls,
) -> (Option<Credential>, Option<Credential>) {
    let (field, list): (&str, Vec<Credential>) = match (&t.credential_names, &t.tls_certificates) {
        (Some(names), _) if !names.is_empty() => {
            for (i, n) in names.iter().enumerate() {
                if !valid_credential_name(n) {
                    c.error(
                        &p.key("credentialNames").idx(i),
                        format!("credential name {n:?} must be a DNS-1123 subdomain (letters, digits, '-' and '.')"),
                    );
                }
            }
            (
                "credentialNames",
                names.iter().cloned().map(Credential::Name).collect(),
            )
        }
        (_, Some(certs)) if !certs.is_empty() => {
            let mut list = Vec::new();
            for (i, e) in certs.iter().enumerate() {
                let ep = p.key("tlsCertificates").idx(i);
                for (k, v) in [
                    ("serverCertificate", &e.server_certificate),
                    ("privateKey", &e.private_key),
                    ("caCertificates", &e.ca_certificates),
                ] {
                    c.file_path(&ep.key(k), v.as_deref());
                }
                let (Some(cert), Some(key)) = (&e.server_certificate, &e.private_key) else {
                    c.error(
                        &ep,
                        "each of tlsCertificates needs serverCertificate and privateKey",
                    );
                    continue;
                };
                list.push(Credential::Files {
                    cert: cert.clone(),
                    key: key.clone(),
                    // The top-level `caCertificates` stands in for the first entry's.
                    ca: e
                        .ca_certificates
                        .clone()
                        .or_else(|| t.ca_certificates.clone().filter(|_| i == 0)),
                    crl: None,
                });
            }
            ("tlsCertificates", list)
        }
        _ => return (None, None),
    };
    if list.len() > 2 {
        c.error(
            &p.key(field),
            format!(
                "{field} takes at most two certificates (one RSA, one ECDSA); it has {}",
                list.len()
            ),
        );
    }
    if list.len() == 2 && list[0] == list[1] {
        c.error(
            &p.key(field).idx(1),
            format!("{field} names the same certificate twice"),
        );
    }
    let mut it = list.into_iter();
    (it.next(), it.next())
}

/// A credential name is a Kubernetes Secret name: a DNS-1123 subdomain. This also keeps
/// `..`, `/` and other path tricks out of the credential folder lookup.
pub fn valid_credential_name(n: &str) -> bool {
    !n.is_empty() && n.len() <= 253 && n.split('.').all(is_dns1123_label)
}
