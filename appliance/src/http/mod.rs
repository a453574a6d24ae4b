//! HTTP/1.1 and HTTP/2 proxying: the request path and its helpers.

pub mod body;
pub mod cors;
pub mod errors;
pub mod fault;
pub mod forward;
pub mod guard;
pub mod headers;
pub mod mirror;
pub mod observe;
pub mod rewrite;
pub mod server;
pub mod service;
pub mod websocket;
