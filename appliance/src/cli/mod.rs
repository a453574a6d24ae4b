//! The offline commands: `validate` and `routes`.

mod routes;
mod validate;

pub use routes::routes;
pub use validate::{Format, validate};
