//! YAML with positions: the parser, the node tree and the serde bridge.

mod de;
mod node;
mod parse;

pub use de::{Ctx, DeError, UnknownField, from_node, suggest};
pub use node::{Key, Node, NodeKind, Scalar, camel};
pub use parse::{Document, Limits, YamlError, parse_documents};

#[cfg(test)]
mod tests;
