//! Diagnostics: every finding names the file, line, column, object and field it is about.

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Serialize)]
pub struct Pos {
    /// 1-based line.
    pub line: u32,
    /// 1-based column (in characters).
    pub col: u32,
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    /// A mapping key (camelCase, as Istio's JSON names it).
    Key(String),
    /// A sequence index.
    Index(usize),
}

/// A field path such as `spec.http[2].route[0].destination.host`.
///
/// A persistent list: appending a segment shares the parent instead of copying it, because
/// validation builds a path for every field it looks at and almost none end in a finding.
#[derive(Clone, Default)]
pub struct FieldPath(Option<Arc<Link>>);

struct Link {
    parent: FieldPath,
    seg: Seg,
}

// === impl FieldPath ===

impl FieldPath {
    /// The empty path (the document itself).
    pub fn root() -> Self {
        Self(None)
    }

    /// Parses a dotted path like `spec.http[2].route`; used by tests and tools.
    pub fn parse(s: &str) -> Self {
        let mut out = Self::root();
        for part in s.split('.').filter(|p| !p.is_empty()) {
            let mut rest = part;
            if let Some(i) = rest.find('[') {
                out = out.key(&rest[..i]);
                rest = &rest[i..];
                while let Some(stripped) = rest.strip_prefix('[') {
                    let Some(end) = stripped.find(']') else { break };
                    if let Ok(n) = stripped[..end].parse() {
                        out = out.idx(n);
                    }
                    rest = &stripped[end + 1..];
                }
            } else {
                out = out.key(rest);
            }
        }
        out
    }

    /// This path with a key appended.
    #[must_use]
    pub fn key(&self, k: &str) -> Self {
        Self(Some(Arc::new(Link {
            parent: self.clone(),
            seg: Seg::Key(k.to_string()),
        })))
    }

    /// This path with an index appended.
    #[must_use]
    pub fn idx(&self, i: usize) -> Self {
        Self(Some(Arc::new(Link {
            parent: self.clone(),
            seg: Seg::Index(i),
        })))
    }

    /// The segments, root first.
    pub fn segs(&self) -> Vec<Seg> {
        let mut out = Vec::new();
        let mut cur = &self.0;
        while let Some(l) = cur {
            out.push(l.seg.clone());
            cur = &l.parent.0;
        }
        out.reverse();
        out
    }

    /// Whether this is the document root.
    pub fn is_root(&self) -> bool {
        self.0.is_none()
    }
}

impl PartialEq for FieldPath {
    fn eq(&self, o: &Self) -> bool {
        self.segs() == o.segs()
    }
}

impl Eq for FieldPath {}

impl std::hash::Hash for FieldPath {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        self.segs().hash(h);
    }
}

impl fmt::Debug for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FieldPath({self})")
    }
}

impl fmt::Display for FieldPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.segs() {
            match s {
                Seg::Key(k) => {
                    if !first {
                        f.write_str(".")?;
                    }
                    f.write_str(k)?;
                }
                Seg::Index(i) => write!(f, "[{i}]")?,
            }
            first = false;
        }
        Ok(())
    }
}

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Accepted, but the user should know.
    Warning,
    /// Refused: the tenant keeps its last good configuration.
    Error,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Warning => "warning",
            Self::Error => "error",
        })
    }
}

/// `Kind/name` of the object a finding is about.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct ObjectRef {
    /// The manifest kind, e.g. `VirtualService`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
}

/// One finding about the configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// Repository-relative file path.
    pub file: String,
    /// Position of the field (or of the nearest enclosing node that exists).
    pub pos: Pos,
    /// Namespace (tenant name, or `istio-system` for the platform).
    pub namespace: String,
    /// The object, when the finding is about one.
    pub object: Option<ObjectRef>,
    /// The field path, e.g. `spec.http[0].route[0].destination.host`.
    pub field: String,
    /// What is wrong, in words.
    pub message: String,
}

// === impl Diagnostic ===

impl Diagnostic {
    /// Whether this finding refuses the configuration.
    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file, self.pos.line, self.pos.col, self.severity, self.namespace
        )?;
        if let Some(o) = &self.object {
            write!(f, "/{}/{}", o.kind, o.name)?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.message)
    }
}

/// Whether any of `diags` is an error.
pub fn has_errors(diags: &[Diagnostic]) -> bool {
    diags.iter().any(Diagnostic::is_error)
}
