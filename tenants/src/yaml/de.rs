//! A serde `Deserializer` over [`Node`] that knows where it is.
//!
//! It does what Istio's decoder does (YAML → JSON → jsonpb): proto names (`sni_hosts`) and
//! JSON names (`sniHosts`) are both accepted, and integers may be quoted. Unlike jsonpb it
//! does not stop at the first unknown field: every unknown field is recorded with its path,
//! position and the closest known name, and decoding goes on, so a user sees all their typos
//! at once.

use std::cell::RefCell;
use std::fmt;

use std::borrow::Cow;

use serde::de::value::{BorrowedStrDeserializer, StrDeserializer};
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};

use super::node::{Node, NodeKind, Scalar, camel};
use crate::diag::{FieldPath, Pos};

/// A field the schema does not know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownField {
    /// Path of the unknown field.
    pub path: FieldPath,
    /// Where its key is written.
    pub pos: Pos,
    /// The closest known field name, when one is close enough to be a typo.
    pub suggestion: Option<&'static str>,
}

/// Collects what decoding noticed but did not fail on.
#[derive(Debug, Default)]
pub struct Ctx {
    unknown: RefCell<Vec<UnknownField>>,
}

impl Ctx {
    /// Unknown fields seen so far.
    pub fn take_unknown(&self) -> Vec<UnknownField> {
        std::mem::take(&mut self.unknown.borrow_mut())
    }
}

/// A decoding failure with the path and position it happened at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeError {
    /// Path of the failing field, once known.
    pub path: Option<FieldPath>,
    /// Position of the failing node, once known.
    pub pos: Option<Pos>,
    /// What went wrong.
    pub message: String,
    missing: Option<&'static str>,
}

impl fmt::Display for DeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for DeError {}

impl de::Error for DeError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Self {
            path: None,
            pos: None,
            message: msg.to_string(),
            missing: None,
        }
    }

    fn missing_field(field: &'static str) -> Self {
        Self {
            path: None,
            pos: None,
            message: "required field is missing".into(),
            missing: Some(field),
        }
    }
}

impl DeError {
    fn at(mut self, link: &Link<'_>, pos: Pos) -> Self {
        if self.path.is_none() {
            let path = link.path();
            self.path = Some(match self.missing {
                Some(f) => path.key(f),
                None => path,
            });
            self.pos = Some(pos);
        }
        self
    }
}

/// Where the deserializer is, as a chain of borrowed segments: a [`FieldPath`] is built only
/// when an error or an unknown field needs one.
#[derive(Clone, Copy)]
enum Link<'p> {
    Root(&'p FieldPath),
    Key(&'p Self, &'p str),
    Idx(&'p Self, usize),
}

impl Link<'_> {
    fn path(&self) -> FieldPath {
        match self {
            Link::Root(p) => (*p).clone(),
            Link::Key(parent, k) => parent.path().key(k),
            Link::Idx(parent, i) => parent.path().idx(*i),
        }
    }
}

/// Decodes `T` from `node`; unknown fields go to `ctx`.
pub fn from_node<'a, T: de::Deserialize<'a>>(
    node: &'a Node,
    path: FieldPath,
    ctx: &'a Ctx,
) -> Result<T, DeError> {
    T::deserialize(De {
        node,
        link: Link::Root(&path),
        ctx,
    })
}

/// The deserializer for one node.
pub(crate) struct De<'a, 'p> {
    node: &'a Node,
    link: Link<'p>,
    ctx: &'a Ctx,
}

impl<'a> De<'a, '_> {
    fn err(&self, expected: &str) -> DeError {
        de::Error::custom(format!(
            "expected {expected}, found {}",
            self.node.type_name()
        ))
    }

    fn fix<T>(&self, r: Result<T, DeError>) -> Result<T, DeError> {
        r.map_err(|e| e.at(&self.link, self.node.pos))
    }

    fn int(&self) -> Result<i128, DeError> {
        match self.node.scalar() {
            Some(Scalar::Int(i)) => Ok(i),
            // Istio (jsonpb) accepts quoted integers.
            Some(Scalar::Str(s)) => s.trim().parse().map_err(|_| self.err("an integer")),
            Some(Scalar::Float(f)) if f.fract() == 0.0 && f.abs() < 1e18 => Ok(f as i128),
            _ => Err(self.err("an integer")),
        }
    }

    fn float(&self) -> Result<f64, DeError> {
        match self.node.scalar() {
            Some(Scalar::Int(i)) => Ok(i as f64),
            Some(Scalar::Float(f)) => Ok(f),
            Some(Scalar::Str(s)) => s.trim().parse().map_err(|_| self.err("a number")),
            _ => Err(self.err("a number")),
        }
    }
}

macro_rules! de_int {
    ($name:ident, $visit:ident, $t:ty) => {
        fn $name<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
            let r = self.int().and_then(|i| {
                <$t>::try_from(i).map_err(|_| {
                    de::Error::custom(format!(
                        "{i} is out of range ({}..={})",
                        <$t>::MIN,
                        <$t>::MAX
                    ))
                })
            });
            let r = r.and_then(|v| visitor.$visit(v));
            self.fix(r)
        }
    };
}

impl<'a> de::Deserializer<'a> for De<'a, '_> {
    type Error = DeError;

    fn deserialize_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Null => visitor.visit_unit(),
            NodeKind::Scalar { text, .. } => match self.node.scalar() {
                Some(Scalar::Bool(b)) => visitor.visit_bool(b),
                Some(Scalar::Int(i)) => {
                    if let Ok(v) = i64::try_from(i) {
                        visitor.visit_i64(v)
                    } else if let Ok(v) = u64::try_from(i) {
                        visitor.visit_u64(v)
                    } else {
                        visitor.visit_str(text)
                    }
                }
                Some(Scalar::Float(f)) => visitor.visit_f64(f),
                _ => visitor.visit_str(text),
            },
            NodeKind::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter().enumerate(),
                link: self.link,
                ctx: self.ctx,
            }),
            NodeKind::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                fields: None,
                link: self.link,
                ctx: self.ctx,
                value: None,
            }),
        };
        self.fix(r)
    }

    fn deserialize_bool<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match self.node.scalar() {
            Some(Scalar::Bool(b)) => visitor.visit_bool(b),
            Some(Scalar::Str("true")) => visitor.visit_bool(true),
            Some(Scalar::Str("false")) => visitor.visit_bool(false),
            _ => Err(self.err("true or false")),
        };
        self.fix(r)
    }

    de_int!(deserialize_i8, visit_i8, i8);
    de_int!(deserialize_i16, visit_i16, i16);
    de_int!(deserialize_i32, visit_i32, i32);
    de_int!(deserialize_i64, visit_i64, i64);
    de_int!(deserialize_u8, visit_u8, u8);
    de_int!(deserialize_u16, visit_u16, u16);
    de_int!(deserialize_u32, visit_u32, u32);
    de_int!(deserialize_u64, visit_u64, u64);

    fn deserialize_f32<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = self.float().and_then(|f| visitor.visit_f32(f as f32));
        self.fix(r)
    }

    fn deserialize_f64<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = self.float().and_then(|f| visitor.visit_f64(f));
        self.fix(r)
    }

    fn deserialize_char<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_str<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Scalar { text, .. } => visitor.visit_str(text),
            _ => Err(self.err("a string")),
        };
        self.fix(r)
    }

    fn deserialize_string<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_byte_buf<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_option<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        if matches!(self.node.kind, NodeKind::Null) {
            let r = visitor.visit_none();
            return self.fix(r);
        }
        let (link, pos) = (self.link, self.node.pos);
        visitor.visit_some(self).map_err(|e| e.at(&link, pos))
    }

    fn deserialize_unit<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match self.node.kind {
            NodeKind::Null => visitor.visit_unit(),
            _ => Err(self.err("null")),
        };
        self.fix(r)
    }

    fn deserialize_unit_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let (link, pos) = (self.link, self.node.pos);
        visitor
            .visit_newtype_struct(self)
            .map_err(|e| e.at(&link, pos))
    }

    fn deserialize_seq<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Seq(items) => visitor.visit_seq(Seq {
                items: items.iter().enumerate(),
                link: self.link,
                ctx: self.ctx,
            }),
            NodeKind::Null => visitor.visit_seq(Seq {
                items: [].iter().enumerate(),
                link: self.link,
                ctx: self.ctx,
            }),
            _ => Err(self.err("a list")),
        };
        self.fix(r)
    }

    fn deserialize_tuple<V: Visitor<'a>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, DeError> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                fields: None,
                link: self.link,
                ctx: self.ctx,
                value: None,
            }),
            NodeKind::Null => visitor.visit_map(Map {
                entries: [].iter(),
                fields: None,
                link: self.link,
                ctx: self.ctx,
                value: None,
            }),
            _ => Err(self.err("a map")),
        };
        self.fix(r)
    }

    fn deserialize_struct<V: Visitor<'a>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Map(entries) => visitor.visit_map(Map {
                entries: entries.iter(),
                fields: Some(fields),
                link: self.link,
                ctx: self.ctx,
                value: None,
            }),
            NodeKind::Null => visitor.visit_map(Map {
                entries: [].iter(),
                fields: Some(fields),
                link: self.link,
                ctx: self.ctx,
                value: None,
            }),
            _ => Err(self.err("a map")),
        };
        self.fix(r)
    }

    fn deserialize_enum<V: Visitor<'a>>(
        self,
        _name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, DeError> {
        let r = match &self.node.kind {
            NodeKind::Scalar { text, .. } => visitor.visit_enum(text.as_str().into_deserializer()),
            _ => Err(self.err("a string")),
        };
        self.fix(r)
    }

    fn deserialize_identifier<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        self.deserialize_str(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'a>>(self, visitor: V) -> Result<V::Value, DeError> {
        visitor.visit_unit()
    }
}

struct Seq<'a, 'p, I> {
    items: I,
    link: Link<'p>,
    ctx: &'a Ctx,
}

impl<'a, I: Iterator<Item = (usize, &'a Node)>> SeqAccess<'a> for Seq<'a, '_, I> {
    type Error = DeError;

    fn next_element_seed<T: DeserializeSeed<'a>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, DeError> {
        let Some((i, node)) = self.items.next() else {
            return Ok(None);
        };
        let link = Link::Idx(&self.link, i);
        seed.deserialize(De {
            node,
            link,
            ctx: self.ctx,
        })
        .map(Some)
        .map_err(|e| e.at(&link, node.pos))
    }
}

struct Map<'a, 'p, I> {
    entries: I,
    fields: Option<&'static [&'static str]>,
    link: Link<'p>,
    ctx: &'a Ctx,
    value: Option<(&'a Node, Cow<'a, str>)>,
}

impl<'a, I: Iterator<Item = &'a (super::node::Key, Node)>> MapAccess<'a> for Map<'a, '_, I> {
    type Error = DeError;

    fn next_key_seed<K: DeserializeSeed<'a>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, DeError> {
        loop {
            let Some((key, node)) = self.entries.next() else {
                return Ok(None);
            };
            let name: Cow<'a, str> = match self.fields {
                None => Cow::Borrowed(key.text.as_str()),
                Some(fields) => {
                    let c = camel(&key.text);
                    if fields.contains(&c.as_ref()) {
                        c
                    } else {
                        self.ctx.unknown.borrow_mut().push(UnknownField {
                            path: self.link.path().key(&key.text),
                            pos: key.pos,
                            suggestion: suggest(&key.text, fields),
                        });
                        continue;
                    }
                }
            };
            let r = match &name {
                Cow::Borrowed(b) => seed.deserialize(BorrowedStrDeserializer::<DeError>::new(b)),
                Cow::Owned(o) => seed.deserialize(StrDeserializer::<DeError>::new(o)),
            };
            self.value = Some((node, name));
            return r.map(Some).map_err(|e: DeError| e.at(&self.link, key.pos));
        }
    }

    fn next_value_seed<V: DeserializeSeed<'a>>(&mut self, seed: V) -> Result<V::Value, DeError> {
        let Some((node, name)) = self.value.take() else {
            return Err(de::Error::custom("value without a key"));
        };
        let link = Link::Key(&self.link, &name);
        seed.deserialize(De {
            node,
            link,
            ctx: self.ctx,
        })
        .map_err(|e| e.at(&link, node.pos))
    }
}

/// The closest name in `known` to `typo`, when it is plausibly a misspelling.
pub fn suggest(typo: &str, known: &'static [&'static str]) -> Option<&'static str> {
    let t = camel(typo).to_ascii_lowercase();
    known
        .iter()
        .map(|k| (k, strsim::damerau_levenshtein(&t, &k.to_ascii_lowercase())))
        .filter(|(k, d)| *d <= 2.max(k.len() / 4) && *d < k.len())
        .min_by_key(|(_, d)| *d)
        .map(|(k, _)| *k)
}
