//! `x-forwarded-client-cert` as an Istio gateway sets it (`forwardClientCertDetails:
//! SANITIZE_SET`, the gateway default): a client's own copy is always dropped, and a
//! connection that presented a client certificate (MUTUAL, OPTIONAL_MUTUAL) gets
//! `Hash=<sha256 of the DER, hex>;Subject="<RFC 2253 subject>";URI=<each URI SAN>;DNS=<each
//! DNS SAN>`, Envoy's `set_current_client_cert_details` with Istio's subject, URI and DNS.
//! Computed once per connection, when its handshake ends. Envoy's leading `By=` (the
//! gateway certificate's own URI SANs) is left out: gateway certificates name hosts.

use std::fmt::Write as _;

use http::{HeaderName, HeaderValue};
use sha2::{Digest, Sha256};
use x509_parser::extensions::GeneralName;
use x509_parser::objects::{oid_registry, oid2abbrev};
use x509_parser::x509::X509Name;

/// The header's name.
pub const XFCC: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// The header value for a client certificate (DER). `None` only if no valid header value
/// can be made of it; a certificate x509-parser cannot read still gets its hash.
pub fn value(der: &[u8]) -> Option<HeaderValue> {
    let mut s = String::with_capacity(160);
    s.push_str("Hash=");
    for b in Sha256::digest(der) {
        let _ = write!(s, "{b:02x}");
    }
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) {
        let _ = write!(s, ";Subject=\"{}\"", rfc2253(cert.subject()));
        let (mut uris, mut dns) = (Vec::new(), Vec::new());
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for n in &san.value.general_names {
                match n {
                    GeneralName::URI(u) => uris.push(*u),
                    GeneralName::DNSName(d) => dns.push(*d),
                    _ => {}
                }
            }
        }
        // Envoy writes `URI=` even when there is none, and `DNS=` only for each one there is.
        if uris.is_empty() {
            s.push_str(";URI=");
        }
        for u in uris {
            let _ = write!(s, ";URI={u}");
        }
        for d in dns {
            let _ = write!(s, ";DNS={d}");
        }
    }
    HeaderValue::try_from(s).ok()
}

/// A name as OpenSSL prints it with `XN_FLAG_RFC2253` (what Envoy's `Subject=` holds): the
/// last RDN first, `,` between RDNs, `+` within one, RFC 2253 escapes.
fn rfc2253(name: &X509Name<'_>) -> String {
    let mut out = String::new();
    for (i, rdn) in name
        .iter_rdn()
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        for (j, atv) in rdn.iter().enumerate() {
            if j > 0 {
                out.push('+');
            }
            let oid = atv.attr_type();
            match oid2abbrev(oid, oid_registry()) {
                Ok("Email") => out.push_str("emailAddress"),
                Ok(a) => out.push_str(a),
                Err(_) => out.push_str(&oid.to_id_string()),
            }
            out.push('=');
            escape(&mut out, atv.as_str().unwrap_or(""));
        }
    }
    out
}

fn escape(out: &mut String, v: &str) {
    let last = v.chars().count().saturating_sub(1);
    for (i, c) in v.chars().enumerate() {
        let special = matches!(c, ',' | '+' | '"' | '\\' | '<' | '>' | ';')
            || (i == 0 && matches!(c, '#' | ' '))
            || (i == last && c == ' ');
        if special {
            out.push('\\');
        }
        if c.is_control() {
            let _ = write!(out, "\\{:02X}", u32::from(c) & 0xff);
        } else {
            out.push(c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(subject: &[(rcgen::DnType, &str)], sans: &[rcgen::SanType]) -> Vec<u8> {
        let mut p = rcgen::CertificateParams::default();
        let mut dn = rcgen::DistinguishedName::new();
        for (t, v) in subject {
            dn.push(t.clone(), *v);
        }
        p.distinguished_name = dn;
        p.subject_alt_names = sans.to_vec();
        let key = rcgen::KeyPair::generate().expect("key");
        p.self_signed(&key).expect("cert").der().to_vec()
    }

    #[test]
    fn hash_subject_uri_and_dns_as_envoy_writes_them() {
        let der = cert(
            &[
                (rcgen::DnType::OrganizationName, "Example, Inc."),
                (rcgen::DnType::CommonName, "client.example"),
            ],
            &[
                rcgen::SanType::DnsName("a.example".try_into().expect("dns")),
                rcgen::SanType::URI("spiffe://cluster.local/ns/a/sa/b".try_into().expect("uri")),
                rcgen::SanType::DnsName("b.example".try_into().expect("dns")),
            ],
        );
        let v = value(&der).expect("value");
        let v = v.to_str().expect("ascii");
        let hash: String = Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            v,
            format!(
                "Hash={hash};Subject=\"CN=client.example,O=Example\\, Inc.\";URI=spiffe://cluster.local/ns/a/sa/b;DNS=a.example;DNS=b.example"
            )
        );
    }

    #[test]
    fn without_a_uri_san_the_uri_key_is_still_there() {
        let der = cert(&[(rcgen::DnType::CommonName, "c")], &[]);
        let v = value(&der).expect("value");
        assert!(
            v.to_str()
                .expect("ascii")
                .ends_with(";Subject=\"CN=c\";URI="),
            "{v:?}"
        );
    }

    #[test]
    fn unreadable_certificates_still_get_their_hash() {
        let v = value(b"not a certificate").expect("value");
        let v = v.to_str().expect("ascii");
        assert!(v.starts_with("Hash=") && !v.contains("Subject"), "{v}");
        assert_eq!(v.len(), 5 + 64);
    }
}
