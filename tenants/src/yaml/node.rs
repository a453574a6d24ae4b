//! A YAML value tree that remembers where each node came from.

use crate::diag::{FieldPath, Pos, Seg};

/// A YAML node with its position.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// The value.
    pub kind: NodeKind,
}

/// The value of a node.
#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `~`, `null` or nothing.
    Null,
    /// A scalar; `quoted` scalars are always strings.
    Scalar {
        /// The scalar text.
        text: String,
        /// Written with quotes or as a block scalar.
        quoted: bool,
    },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping with string keys, in source order.
    Map(Vec<(Key, Node)>),
}

/// A mapping key.
#[derive(Debug, Clone, PartialEq)]
pub struct Key {
    /// The key text.
    pub text: String,
    /// Where the key is written (diagnostics about a field point here).
    pub pos: Pos,
}

/// What a plain scalar resolves to under the YAML core schema.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// null
    Null,
    /// true/false
    Bool(bool),
    /// An integer.
    Int(i128),
    /// A float.
    Float(f64),
    /// Anything else.
    Str(&'a str),
}

// === impl Node ===

impl Node {
    /// Resolves a scalar as the YAML 1.2 core schema does (quoted scalars are strings).
    pub fn scalar(&self) -> Option<Scalar<'_>> {
        match &self.kind {
            NodeKind::Null => Some(Scalar::Null),
            NodeKind::Scalar { text, quoted: true } => Some(Scalar::Str(text)),
            NodeKind::Scalar {
                text,
                quoted: false,
            } => Some(resolve_plain(text)),
            _ => None,
        }
    }

    /// A short name for the node's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.kind {
            NodeKind::Null => "null",
            NodeKind::Scalar { .. } => match self.scalar() {
                Some(Scalar::Bool(_)) => "a boolean",
                Some(Scalar::Int(_)) => "an integer",
                Some(Scalar::Float(_)) => "a number",
                _ => "a string",
            },
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a map",
        }
    }

    /// The value under `key` in a mapping (exact key, or its snake_case form).
    pub fn get(&self, key: &str) -> Option<&Self> {
        self.entry(key).map(|(_, n)| n)
    }

    fn entry(&self, key: &str) -> Option<(&Key, &Self)> {
        let NodeKind::Map(entries) = &self.kind else {
            return None;
        };
        entries
            .iter()
            .find(|(k, _)| k.text == key)
            .or_else(|| entries.iter().find(|(k, _)| camel(&k.text) == key))
            .map(|(k, v)| (k, v))
    }

    /// The scalar text under `key`, if it is a scalar.
    pub fn get_str(&self, key: &str) -> Option<&str> {
        match &self.get(key)?.kind {
            NodeKind::Scalar { text, .. } => Some(text),
            _ => None,
        }
    }

    /// The position of the field at `path`, or of its nearest existing ancestor.
    ///
    /// A path that ends in a key points at the key (where an editor cursor should go);
    /// a path that ends in an index points at the item.
    pub fn pos_of(&self, path: &FieldPath) -> Pos {
        let mut node = self;
        let mut pos = self.pos;
        for seg in &path.segs() {
            match seg {
                Seg::Key(k) => match node.entry(k) {
                    Some((key, child)) => {
                        pos = key.pos;
                        node = child;
                    }
                    None => break,
                },
                Seg::Index(i) => match &node.kind {
                    NodeKind::Seq(items) if *i < items.len() => {
                        node = &items[*i];
                        pos = node.pos;
                    }
                    _ => break,
                },
            }
        }
        pos
    }
}

/// Istio accepts proto names (`sni_hosts`) and JSON names (`sniHosts`); this maps the first
/// to the second (borrowing when there is nothing to change, the common case).
pub fn camel(key: &str) -> std::borrow::Cow<'_, str> {
    if !key.contains('_') {
        return std::borrow::Cow::Borrowed(key);
    }
    let mut out = String::with_capacity(key.len());
    let mut upper = false;
    for (i, c) in key.chars().enumerate() {
        if c == '_' && i > 0 {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

fn resolve_plain(text: &str) -> Scalar<'_> {
    match text {
        "" | "~" | "null" | "Null" | "NULL" => return Scalar::Null,
        "true" | "True" | "TRUE" => return Scalar::Bool(true),
        "false" | "False" | "FALSE" => return Scalar::Bool(false),
        ".inf" | ".Inf" | ".INF" | "+.inf" | "+.Inf" | "+.INF" => {
            return Scalar::Float(f64::INFINITY);
        }
        "-.inf" | "-.Inf" | "-.INF" => return Scalar::Float(f64::NEG_INFINITY),
        ".nan" | ".NaN" | ".NAN" => return Scalar::Float(f64::NAN),
        _ => {}
    }
    if let Some(i) = parse_int(text) {
        return Scalar::Int(i);
    }
    if looks_like_float(text)
        && let Ok(f) = text.parse::<f64>()
    {
        return Scalar::Float(f);
    }
    Scalar::Str(text)
}

fn parse_int(text: &str) -> Option<i128> {
    let (neg, body) = match text.as_bytes().first()? {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    if body.is_empty() || body.len() > 38 {
        return None;
    }
    let v = if let Some(h) = body.strip_prefix("0x") {
        i128::from_str_radix(h, 16).ok()?
    } else if let Some(o) = body.strip_prefix("0o") {
        i128::from_str_radix(o, 8).ok()?
    } else if body.bytes().all(|b| b.is_ascii_digit()) {
        body.parse().ok()?
    } else {
        return None;
    };
    Some(if neg { -v } else { v })
}

fn looks_like_float(text: &str) -> bool {
    let body = text.trim_start_matches(['-', '+']);
    !body.is_empty()
        && body.bytes().any(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'-' | b'+'))
        && body.as_bytes()[0] != b'e'
        && body.as_bytes()[0] != b'E'
}
