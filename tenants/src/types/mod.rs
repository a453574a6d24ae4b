//! Typed values that only parsing can build: hosts, durations, string matches, protocols.

pub mod cidr;
pub mod duration;
pub mod host;
pub mod labels;
pub mod protocol;
pub mod string_match;

pub use cidr::Cidr;
pub use duration::{DurationError, parse_go_duration, parse_istio_duration};
pub use host::{Host, HostError, is_dns1123_label, validate_fqdn, validate_wildcard_domain};
pub use protocol::Protocol;
pub use string_match::{FullRegex, RegexError, StringMatch};
