//! HTTP proxying (HTTP/1.1, HTTP/2, and HTTP/3 through `quic`): the request path and its helpers.

pub mod body;
mod chunk;
pub mod connect;
pub mod cors;
pub mod deadline;
pub(crate) mod decode;
pub mod early;
pub mod errors;
pub mod fault;
pub mod forward;
pub mod guard;
pub(crate) mod h1;
pub mod headers;
pub(crate) mod layout;
pub mod mirror;
pub mod normalize;
pub mod observe;
pub mod record;
pub mod rewrite;
pub mod server;
pub mod service;
pub mod tee;
pub mod vars;
pub mod websocket;
pub mod xfcc;
