//! Certificates per tenant: `<credentials>/<tenant>/<credentialName>/{tls.crt,tls.key,ca.crt}`,
//! loaded once, checked, swapped atomically, watched for rotation.

mod load;
mod store;
mod verify;

pub use load::{CertInfo, CredentialError, covers};
pub use store::{Credential, CredentialStatus, RefError, Store};
pub use verify::{ClientCert, ClientCerts, ServerCert, UpstreamCerts};
