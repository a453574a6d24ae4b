//! YAML text → [`Node`] trees, one per document, with bounds on size, depth and aliases.
//!
//! Built on saphyr-parser's event stream rather than a value loader so that every node keeps
//! its position and so that alias expansion (the "billion laughs" YAML bomb) is counted as it
//! happens instead of after memory is gone.

use std::collections::HashMap;

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

use super::node::{Key, Node, NodeKind};
use crate::diag::Pos;

/// Bounds on what one file may cost to load.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest accepted file, in bytes.
    pub max_bytes: usize,
    /// Deepest accepted nesting of maps and lists.
    pub max_depth: usize,
    /// Most nodes per file, counting every copy an alias makes.
    pub max_nodes: usize,
    /// Most documents per file.
    pub max_documents: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_bytes: 8 << 20,
            max_depth: 64,
            max_nodes: 1_000_000,
            max_documents: 10_000,
        }
    }
}

/// Why a file could not be read as YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct YamlError {
    /// Where the problem was found.
    pub pos: Pos,
    /// What the problem is.
    pub message: String,
}

/// One YAML document of a file.
#[derive(Debug, Clone)]
pub struct Document {
    /// Index of the document in its file (0-based).
    pub index: usize,
    /// The root node.
    pub root: Node,
}

fn pos(span: &Span) -> Pos {
    Pos {
        line: u32::try_from(span.start.line()).unwrap_or(u32::MAX),
        col: u32::try_from(span.start.col() + 1).unwrap_or(u32::MAX),
    }
}

enum Frame {
    Seq {
        pos: Pos,
        anchor: usize,
        items: Vec<Node>,
    },
    Map {
        pos: Pos,
        anchor: usize,
        entries: Vec<(Key, Node)>,
        seen: std::collections::HashSet<String>,
        key: Option<Key>,
    },
}

/// Parses every document of `text`. Empty documents (only comments) are skipped.
pub fn parse_documents(text: &str, limits: &Limits) -> Result<Vec<Document>, YamlError> {
    if text.len() > limits.max_bytes {
        return Err(YamlError {
            pos: Pos { line: 1, col: 1 },
            message: format!(
                "file is {} bytes; the limit is {} bytes",
                text.len(),
                limits.max_bytes
            ),
        });
    }
    let mut parser = Parser::new_from_str(text);
    let mut docs = Vec::new();
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, Node> = HashMap::new();
    let mut nodes = 0usize;
    let mut doc_index = 0usize;
    let mut root: Option<Node> = None;

    while let Some(ev) = parser.next_event() {
        let (event, span) = ev.map_err(|e| YamlError {
            pos: Pos {
                line: u32::try_from(e.marker().line()).unwrap_or(u32::MAX),
                col: u32::try_from(e.marker().col() + 1).unwrap_or(u32::MAX),
            },
            message: format!("invalid YAML: {}", e.info()),
        })?;
        let at = pos(&span);
        let complete: Option<(Node, usize)> = match event {
            Event::StreamStart | Event::Nothing => None,
            Event::StreamEnd => break,
            Event::DocumentStart(_) => {
                root = None;
                anchors.clear();
                None
            }
            Event::DocumentEnd => {
                if let Some(r) = root.take()
                    && r.kind != NodeKind::Null
                {
                    if docs.len() >= limits.max_documents {
                        return Err(YamlError {
                            pos: at,
                            message: format!(
                                "more than {} documents in one file",
                                limits.max_documents
                            ),
                        });
                    }
                    docs.push(Document {
                        index: doc_index,
                        root: r,
                    });
                }
                doc_index += 1;
                None
            }
            Event::Scalar(text, style, anchor, tag) => {
                nodes += 1;
                let quoted = !matches!(style, ScalarStyle::Plain)
                    || tag.as_ref().is_some_and(|t| t.suffix == "str");
                let kind = if !quoted && is_null(&text) {
                    NodeKind::Null
                } else {
                    NodeKind::Scalar {
                        text: text.into_owned(),
                        quoted,
                    }
                };
                Some((Node { pos: at, kind }, anchor))
            }
            Event::Alias(id) => {
                let Some(target) = anchors.get(&id) else {
                    return Err(YamlError {
                        pos: at,
                        message: "alias refers to an unknown anchor".into(),
                    });
                };
                nodes += count(target);
                if nodes > limits.max_nodes {
                    return Err(bomb(at, limits));
                }
                let mut copy = target.clone();
                copy.pos = at;
                Some((copy, 0))
            }
            Event::SequenceStart(anchor, _) => {
                nodes += 1;
                if stack.len() >= limits.max_depth {
                    return Err(deep(at, limits));
                }
                stack.push(Frame::Seq {
                    pos: at,
                    anchor,
                    items: Vec::new(),
                });
                None
            }
            Event::MappingStart(anchor, _) => {
                nodes += 1;
                if stack.len() >= limits.max_depth {
                    return Err(deep(at, limits));
                }
                stack.push(Frame::Map {
                    pos: at,
                    anchor,
                    entries: Vec::new(),
                    seen: std::collections::HashSet::new(),
                    key: None,
                });
                None
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq { pos, anchor, items }) => Some((
                    Node {
                        pos,
                        kind: NodeKind::Seq(items),
                    },
                    anchor,
                )),
                _ => None,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    pos,
                    anchor,
                    entries,
                    ..
                }) => Some((go_flow_scalar(pos, entries), anchor)),
                _ => None,
            },
        };
        if nodes > limits.max_nodes {
            return Err(bomb(at, limits));
        }
        let Some((node, anchor)) = complete else {
            continue;
        };
        if anchor != 0 {
            anchors.insert(anchor, node.clone());
        }
        match stack.last_mut() {
            None => root = Some(node),
            Some(Frame::Seq { items, .. }) => items.push(node),
            Some(Frame::Map {
                entries, key, seen, ..
            }) => match key.take() {
                None => {
                    let text = match node.kind {
                        NodeKind::Scalar { text, .. } => text,
                        NodeKind::Null => String::new(),
                        _ => {
                            return Err(YamlError {
                                pos: node.pos,
                                message: "mapping keys must be plain strings".into(),
                            });
                        }
                    };
                    if text == "<<" {
                        return Err(YamlError {
                            pos: node.pos,
                            message: "merge keys (`<<`) are not supported".into(),
                        });
                    }
                    if !seen.insert(text.clone()) {
                        return Err(YamlError {
                            pos: node.pos,
                            message: format!("duplicate key `{text}`"),
                        });
                    }
                    *key = Some(Key {
                        text,
                        pos: node.pos,
                    });
                }
                Some(k) => entries.push((k, node)),
            },
        }
    }
    Ok(docs)
}

fn is_null(text: &str) -> bool {
    matches!(text, "" | "~" | "null" | "Null" | "NULL")
}

fn count(n: &Node) -> usize {
    match &n.kind {
        NodeKind::Seq(items) => 1 + items.iter().map(count).sum::<usize>(),
        NodeKind::Map(entries) => 1 + entries.iter().map(|(_, v)| 1 + count(v)).sum::<usize>(),
        _ => 1,
    }
}

fn bomb(at: Pos, limits: &Limits) -> YamlError {
    YamlError {
        pos: at,
        message: format!(
            "document expands to more than {} nodes (alias expansion or a huge file); refused",
            limits.max_nodes
        ),
    }
}

fn deep(at: Pos, limits: &Limits) -> YamlError {
    YamlError {
        pos: at,
        message: format!("nesting deeper than {} levels; refused", limits.max_depth),
    }
}

/// Go's YAML library reads `[1.2.3.4, 2001:db8::]` as two strings, where a YAML 1.2 parser
/// sees an implicit single-pair mapping `{"2001:db8:": null}` in the second item (the last
/// colon is followed by a flow indicator). Istio's own test data relies on Go's reading, so
/// an implicit pair whose colon is glued to the end of its key becomes the scalar again.
fn go_flow_scalar(pos: Pos, mut entries: Vec<(Key, Node)>) -> Node {
    let glued = entries.len() == 1 && {
        let (k, v) = &entries[0];
        k.pos == pos
            && v.kind == NodeKind::Null
            && v.pos.line == k.pos.line
            && v.pos.col as usize == k.pos.col as usize + k.text.chars().count()
            && k.text.ends_with(':')
    };
    if glued && let Some((k, _)) = entries.pop() {
        return Node {
            pos,
            kind: NodeKind::Scalar {
                text: format!("{}:", k.text),
                quoted: false,
            },
        };
    }
    Node {
        pos,
        kind: NodeKind::Map(entries),
    }
}
