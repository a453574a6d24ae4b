//! A small CEL (Common Expression Language) subset for Telemetry access-log filters such as
//! `response.code >= 400 && request.method != "GET"`.
//!
//! Istio requires `filter.expression` to parse as CEL. This covers what access-log filters use
//! in practice: literals, attribute paths (`response.code`, `request.headers['x-id']`),
//! comparison, boolean and arithmetic operators, `in`, the conditional operator, and the
//! string functions `startsWith`, `endsWith`, `contains`, `matches`, plus `size` and `has`.
//! An expression that fails to evaluate counts as false (the entry is not logged).

use std::fmt;

use serde::{Serialize, Serializer};

/// A CEL value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// null
    Null,
    /// bool
    Bool(bool),
    /// int (uint folds in)
    Int(i64),
    /// double
    Double(f64),
    /// string
    Str(String),
    /// list
    List(Vec<Self>),
    /// map with string keys
    Map(Vec<(String, Self)>),
}

/// Where attribute values come from.
pub trait Attributes {
    /// The value at `path`, e.g. `["response", "code"]`.
    fn get(&self, path: &[&str]) -> Option<Value>;
    /// `request.headers['name']` and similar map lookups.
    fn index(&self, path: &[&str], key: &str) -> Option<Value>;
}

/// The attributes gatehouse's access-log entries have (Envoy has more), and
/// `request.headers['x-id']` (or `request.headers.x`, one header: the map itself is not).
pub const ATTRIBUTES: &[&str] = &[
    "response.code",
    "response.flags",
    "response.size",
    "response.total_size",
    "request.method",
    "request.path",
    "request.url_path",
    "request.host",
    "request.protocol",
    "request.id",
    "request.useragent",
    "request.size",
    "request.total_size",
    "request.duration",
    "connection.requested_server_name",
    "upstream.address",
    "source.address",
    "xds.route_name",
    "xds.cluster_name",
];

/// The functions the evaluator has.
const FUNCTIONS: &[&str] = &[
    "startsWith",
    "endsWith",
    "contains",
    "matches",
    "size",
    "has",
    "int",
    "string",
];

/// A parsed expression.
#[derive(Clone)]
pub struct Expr {
    source: String,
    root: Node,
}

#[derive(Debug, Clone)]
enum Node {
    Lit(Value),
    Path(Vec<String>),
    Index(Box<Self>, Box<Self>),
    Unary(char, Box<Self>),
    Binary(Op, Box<Self>, Box<Self>),
    Cond(Box<Self>, Box<Self>, Box<Self>),
    Call(String, Option<Box<Self>>, Vec<Self>),
    List(Vec<Self>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Op {
    Or,
    And,
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    In,
    Add,
    Sub,
    Mul,
    Div,
    Rem,
}

/// Why an expression does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CEL expression at offset {offset}: {message}")]
pub struct CelError {
    /// Byte offset of the problem.
    pub offset: usize,
    /// What is wrong.
    pub message: String,
}

// === impl Expr ===

impl Expr {
    /// Parses `source`.
    pub fn parse(source: &str) -> Result<Self, CelError> {
        if source.len() > 4096 {
            return Err(CelError {
                offset: 0,
                message: "expression is longer than 4096 bytes".into(),
            });
        }
        let toks = lex(source)?;
        let mut p = Parser {
            toks,
            i: 0,
            depth: 0,
        };
        let root = p.expr()?;
        if p.i < p.toks.len() {
            return Err(p.err("unexpected input after the expression"));
        }
        Ok(Self {
            source: source.to_string(),
            root,
        })
    }

    /// Evaluates to a boolean; errors and non-booleans are false.
    pub fn matches(&self, attrs: &dyn Attributes) -> bool {
        matches!(eval(&self.root, attrs), Some(Value::Bool(true)))
    }

    /// The source text.
    pub fn as_str(&self) -> &str {
        &self.source
    }
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.source)
    }
}

impl PartialEq for Expr {
    fn eq(&self, o: &Self) -> bool {
        self.source == o.source
    }
}

impl Serialize for Expr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.source)
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Int(i64),
    Double(f64),
    Str(String),
    Sym(&'static str),
}

fn lex(s: &str) -> Result<Vec<(usize, Tok)>, CelError> {
    const SYMS: &[&str] = &[
        "||", "&&", "==", "!=", "<=", ">=", "<", ">", "!", "+", "-", "*", "/", "%", "(", ")", "[",
        "]", ".", ",", "?", ":",
    ];
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if c.is_ascii_whitespace() {
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' {
            let st = i;
            while i < b.len() && (b[i].is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            out.push((st, Tok::Ident(s[st..i].to_string())));
        } else if c.is_ascii_digit() {
            let st = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.' || b[i] == b'e') {
                i += 1;
            }
            let text = &s[st..i];
            if i < b.len() && b[i] == b'u' {
                i += 1;
            }
            let tok = if let Ok(n) = text.parse::<i64>() {
                Tok::Int(n)
            } else {
                Tok::Double(text.parse().map_err(|_| CelError {
                    offset: st,
                    message: format!("bad number {text:?}"),
                })?)
            };
            out.push((st, tok));
        } else if c == b'"' || c == b'\'' {
            let st = i;
            i += 1;
            let mut v = String::new();
            loop {
                let Some(&ch) = b.get(i) else {
                    return Err(CelError {
                        offset: st,
                        message: "unterminated string".into(),
                    });
                };
                if ch == c {
                    i += 1;
                    break;
                }
                if ch == b'\\' {
                    i += 1;
                    match b.get(i) {
                        Some(b'n') => v.push('\n'),
                        Some(b't') => v.push('\t'),
                        Some(&e) => v.push(e as char),
                        None => {
                            return Err(CelError {
                                offset: i,
                                message: "unterminated escape".into(),
                            });
                        }
                    }
                    i += 1;
                } else {
                    let len = s[i..].chars().next().map_or(1, char::len_utf8);
                    v.push_str(&s[i..i + len]);
                    i += len;
                }
            }
            out.push((st, Tok::Str(v)));
        } else if let Some(sym) = SYMS.iter().find(|sym| s[i..].starts_with(**sym)) {
            out.push((i, Tok::Sym(sym)));
            i += sym.len();
        } else {
            return Err(CelError {
                offset: i,
                message: format!(
                    "unexpected character {:?}",
                    s[i..].chars().next().unwrap_or(' ')
                ),
            });
        }
    }
    Ok(out)
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    i: usize,
    depth: usize,
}

impl Parser {
    fn err(&self, m: &str) -> CelError {
        CelError {
            offset: self.toks.get(self.i).map_or(usize::MAX, |t| t.0),
            message: m.to_string(),
        }
    }

    fn peek_sym(&self, s: &str) -> bool {
        matches!(self.toks.get(self.i), Some((_, Tok::Sym(x))) if *x == s)
    }

    fn eat(&mut self, s: &str) -> bool {
        if self.peek_sym(s) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn expect(&mut self, s: &str) -> Result<(), CelError> {
        if self.eat(s) {
            Ok(())
        } else {
            Err(self.err(&format!("expected {s:?}")))
        }
    }

    fn expr(&mut self) -> Result<Node, CelError> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(self.err("expression nested too deeply"));
        }
        let c = self.binary(0)?;
        let out = if self.eat("?") {
            let a = self.expr()?;
            self.expect(":")?;
            let b = self.expr()?;
            Node::Cond(Box::new(c), Box::new(a), Box::new(b))
        } else {
            c
        };
        self.depth -= 1;
        Ok(out)
    }

    fn binop(&self, level: usize) -> Option<Op> {
        let (_, t) = self.toks.get(self.i)?;
        let op = match t {
            Tok::Sym("||") => Op::Or,
            Tok::Sym("&&") => Op::And,
            Tok::Sym("==") => Op::Eq,
            Tok::Sym("!=") => Op::Ne,
            Tok::Sym("<") => Op::Lt,
            Tok::Sym("<=") => Op::Le,
            Tok::Sym(">") => Op::Gt,
            Tok::Sym(">=") => Op::Ge,
            Tok::Ident(s) if s == "in" => Op::In,
            Tok::Sym("+") => Op::Add,
            Tok::Sym("-") => Op::Sub,
            Tok::Sym("*") => Op::Mul,
            Tok::Sym("/") => Op::Div,
            Tok::Sym("%") => Op::Rem,
            _ => return None,
        };
        let l = match op {
            Op::Or => 0,
            Op::And => 1,
            Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge | Op::In => 2,
            Op::Add | Op::Sub => 3,
            Op::Mul | Op::Div | Op::Rem => 4,
        };
        (l == level).then_some(op)
    }

    fn binary(&mut self, level: usize) -> Result<Node, CelError> {
        if level > 4 {
            return self.unary();
        }
        let mut lhs = self.binary(level + 1)?;
        while let Some(op) = self.binop(level) {
            self.i += 1;
            let rhs = self.binary(level + 1)?;
            lhs = Node::Binary(op, Box::new(lhs), Box::new(rhs));
        }
        Ok(lhs)
    }

    fn unary(&mut self) -> Result<Node, CelError> {
        if self.eat("!") {
            return Ok(Node::Unary('!', Box::new(self.unary()?)));
        }
        if self.eat("-") {
            return Ok(Node::Unary('-', Box::new(self.unary()?)));
        }
        self.member()
    }

    fn args(&mut self) -> Result<Vec<Node>, CelError> {
        let mut args = Vec::new();
        if !self.eat(")") {
            loop {
                args.push(self.expr()?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(args)
    }

    fn member(&mut self) -> Result<Node, CelError> {
        let mut n = self.primary()?;
        loop {
            if self.eat(".") {
                let Some((_, Tok::Ident(name))) = self.toks.get(self.i).cloned() else {
                    return Err(self.err("expected a field name after '.'"));
                };
                self.i += 1;
                if self.eat("(") {
                    let args = self.args()?;
                    n = Node::Call(name, Some(Box::new(n)), args);
                } else if let Node::Path(mut p) = n {
                    p.push(name);
                    n = Node::Path(p);
                } else {
                    return Err(self.err("field access on a non-attribute"));
                }
            } else if self.eat("[") {
                let idx = self.expr()?;
                self.expect("]")?;
                n = Node::Index(Box::new(n), Box::new(idx));
            } else {
                return Ok(n);
            }
        }
    }

    fn primary(&mut self) -> Result<Node, CelError> {
        let Some((_, t)) = self.toks.get(self.i).cloned() else {
            return Err(self.err("unexpected end of expression"));
        };
        self.i += 1;
        Ok(match t {
            Tok::Int(n) => Node::Lit(Value::Int(n)),
            Tok::Double(d) => Node::Lit(Value::Double(d)),
            Tok::Str(s) => Node::Lit(Value::Str(s)),
            Tok::Ident(id) => match id.as_str() {
                "true" => Node::Lit(Value::Bool(true)),
                "false" => Node::Lit(Value::Bool(false)),
                "null" => Node::Lit(Value::Null),
                _ if self.eat("(") => Node::Call(id, None, self.args()?),
                _ => Node::Path(vec![id]),
            },
            Tok::Sym("(") => {
                let e = self.expr()?;
                self.expect(")")?;
                e
            }
            Tok::Sym("[") => {
                let mut items = Vec::new();
                if !self.eat("]") {
                    loop {
                        items.push(self.expr()?);
                        if self.eat("]") {
                            break;
                        }
                        self.expect(",")?;
                    }
                }
                Node::List(items)
            }
            _ => {
                self.i -= 1;
                return Err(self.err("expected a value"));
            }
        })
    }
}

impl Expr {
    /// The attributes and functions the expression names that gatehouse does not have:
    /// evaluating such an expression fails, which counts as false.
    pub fn unknown_names(&self) -> Vec<String> {
        let mut out = Vec::new();
        unknown(&self.root, &mut out);
        out.dedup();
        out
    }
}

fn unknown(n: &Node, out: &mut Vec<String>) {
    match n {
        Node::Lit(_) => {}
        Node::Path(p) => {
            let name = p.join(".");
            let known = ATTRIBUTES.contains(&name.as_str())
                || (p.len() == 3 && p[0] == "request" && p[1] == "headers");
            if !known {
                out.push(name);
            }
        }
        Node::Index(b, i) => {
            if !matches!(&**b, Node::Path(p) if p.len() == 2 && p[0] == "request" && p[1] == "headers")
            {
                unknown(b, out);
            }
            unknown(i, out);
        }
        Node::Unary(_, e) => unknown(e, out),
        Node::Binary(_, l, r) => {
            unknown(l, out);
            unknown(r, out);
        }
        Node::Cond(c, x, y) => {
            for e in [c, x, y] {
                unknown(e, out);
            }
        }
        Node::Call(name, target, args) => {
            if !FUNCTIONS.contains(&name.as_str()) {
                out.push(format!("{name}()"));
            }
            if let Some(t) = target {
                unknown(t, out);
            }
            for a in args {
                unknown(a, out);
            }
        }
        Node::List(items) => {
            for i in items {
                unknown(i, out);
            }
        }
    }
}

fn path_strs(p: &[String]) -> Vec<&str> {
    p.iter().map(String::as_str).collect()
}

fn eval(n: &Node, a: &dyn Attributes) -> Option<Value> {
    Some(match n {
        Node::Lit(v) => v.clone(),
        Node::Path(p) => a.get(&path_strs(p))?,
        Node::Index(base, idx) => {
            let key = eval(idx, a)?;
            if let Node::Path(p) = &**base
                && let Value::Str(k) = &key
            {
                return a.index(&path_strs(p), k);
            }
            match (eval(base, a)?, key) {
                (Value::List(l), Value::Int(i)) => l.get(usize::try_from(i).ok()?)?.clone(),
                (Value::Map(m), Value::Str(k)) => m.into_iter().find(|(mk, _)| *mk == k)?.1,
                _ => return None,
            }
        }
        Node::Unary('!', e) => match eval(e, a)? {
            Value::Bool(b) => Value::Bool(!b),
            _ => return None,
        },
        Node::Unary(_, e) => match eval(e, a)? {
            Value::Int(i) => Value::Int(i.checked_neg()?),
            Value::Double(d) => Value::Double(-d),
            _ => return None,
        },
        Node::Cond(c, x, y) => match eval(c, a)? {
            Value::Bool(true) => eval(x, a)?,
            Value::Bool(false) => eval(y, a)?,
            _ => return None,
        },
        Node::List(items) => Value::List(items.iter().map(|i| eval(i, a)).collect::<Option<_>>()?),
        Node::Binary(Op::Or, l, r) => {
            // CEL's logical operators are commutative over errors: true wins.
            match (eval(l, a), eval(r, a)) {
                (Some(Value::Bool(true)), _) | (_, Some(Value::Bool(true))) => Value::Bool(true),
                (Some(Value::Bool(false)), Some(Value::Bool(false))) => Value::Bool(false),
                _ => return None,
            }
        }
        Node::Binary(Op::And, l, r) => match (eval(l, a), eval(r, a)) {
            (Some(Value::Bool(false)), _) | (_, Some(Value::Bool(false))) => Value::Bool(false),
            (Some(Value::Bool(true)), Some(Value::Bool(true))) => Value::Bool(true),
            _ => return None,
        },
        Node::Binary(op, l, r) => binary(*op, eval(l, a)?, eval(r, a)?)?,
        Node::Call(name, target, args) => {
            if name == "has" && target.is_none() {
                return Some(Value::Bool(args.first().and_then(|x| eval(x, a)).is_some()));
            }
            let t = match target {
                Some(t) => Some(eval(t, a)?),
                None => None,
            };
            let args: Vec<Value> = args.iter().map(|x| eval(x, a)).collect::<Option<_>>()?;
            call(name, t, &args)?
        }
    })
}

fn binary(op: Op, l: Value, r: Value) -> Option<Value> {
    use Value::{Bool, Double, Int, Str};
    let ord = |l: &Value, r: &Value| -> Option<std::cmp::Ordering> {
        match (l, r) {
            (Int(a), Int(b)) => Some(a.cmp(b)),
            (Double(a), Double(b)) => a.partial_cmp(b),
            (Int(a), Double(b)) => (*a as f64).partial_cmp(b),
            (Double(a), Int(b)) => a.partial_cmp(&(*b as f64)),
            (Str(a), Str(b)) => Some(a.cmp(b)),
            (Bool(a), Bool(b)) => Some(a.cmp(b)),
            _ => None,
        }
    };
    Some(match op {
        Op::Eq => Bool(ord(&l, &r).map_or(l == r, |o| o.is_eq())),
        Op::Ne => Bool(!ord(&l, &r).map_or(l == r, |o| o.is_eq())),
        Op::Lt => Bool(ord(&l, &r)?.is_lt()),
        Op::Le => Bool(ord(&l, &r)?.is_le()),
        Op::Gt => Bool(ord(&l, &r)?.is_gt()),
        Op::Ge => Bool(ord(&l, &r)?.is_ge()),
        Op::In => match r {
            Value::List(items) => Bool(items.iter().any(|i| ord(&l, i).is_some_and(|o| o.is_eq()))),
            Value::Map(m) => Bool(matches!(&l, Str(k) if m.iter().any(|(mk, _)| mk == k))),
            _ => return None,
        },
        Op::Add => match (l, r) {
            (Int(a), Int(b)) => Int(a.checked_add(b)?),
            (Double(a), Double(b)) => Double(a + b),
            (Str(a), Str(b)) => Str(a + &b),
            _ => return None,
        },
        Op::Sub => match (l, r) {
            (Int(a), Int(b)) => Int(a.checked_sub(b)?),
            (Double(a), Double(b)) => Double(a - b),
            _ => return None,
        },
        Op::Mul => match (l, r) {
            (Int(a), Int(b)) => Int(a.checked_mul(b)?),
            (Double(a), Double(b)) => Double(a * b),
            _ => return None,
        },
        Op::Div => match (l, r) {
            (Int(a), Int(b)) => Int(a.checked_div(b)?),
            (Double(a), Double(b)) => Double(a / b),
            _ => return None,
        },
        Op::Rem => match (l, r) {
            (Int(a), Int(b)) => Int(a.checked_rem(b)?),
            _ => return None,
        },
        Op::Or | Op::And => return None,
    })
}

fn call(name: &str, target: Option<Value>, args: &[Value]) -> Option<Value> {
    use Value::{Bool, Int, Str};
    Some(match (name, target, args) {
        ("startsWith", Some(Str(s)), [Str(p)]) => Bool(s.starts_with(p.as_str())),
        ("endsWith", Some(Str(s)), [Str(p)]) => Bool(s.ends_with(p.as_str())),
        ("contains", Some(Str(s)), [Str(p)]) => Bool(s.contains(p.as_str())),
        ("matches", Some(Str(s)), [Str(p)]) => Bool(regex::Regex::new(p).ok()?.is_match(&s)),
        ("size", Some(Str(s)), []) => Int(s.chars().count() as i64),
        ("size", None, [Str(s)]) => Int(s.chars().count() as i64),
        ("size", Some(Value::List(l)), []) => Int(l.len() as i64),
        ("size", None, [Value::List(l)]) => Int(l.len() as i64),
        ("int", None, [Str(s)]) => Int(s.parse().ok()?),
        ("int", None, [Int(i)]) => Int(*i),
        ("string", None, [v]) => Str(match v {
            Str(s) => s.clone(),
            Int(i) => i.to_string(),
            Value::Double(d) => d.to_string(),
            Bool(b) => b.to_string(),
            _ => return None,
        }),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    struct A;
    impl Attributes for A {
        fn get(&self, p: &[&str]) -> Option<Value> {
            match p {
                ["response", "code"] => Some(Value::Int(503)),
                ["request", "method"] => Some(Value::Str("GET".into())),
                ["request", "path"] => Some(Value::Str("/api/v1".into())),
                _ => None,
            }
        }
        fn index(&self, p: &[&str], k: &str) -> Option<Value> {
            (p == ["request", "headers"] && k == "x-debug").then(|| Value::Str("1".into()))
        }
    }

    #[test]
    fn names_what_it_does_not_know() {
        let e = Expr::parse(
            "response.code >= 400 && connection.mtls && request.headers['x'] == '1' && request.headers.y == '2' && duration('1s') > 0 && size(request.headers) > 1",
        )
        .expect("parses");
        assert_eq!(
            e.unknown_names(),
            ["connection.mtls", "duration()", "request.headers"]
        );
        let known = Expr::parse("request.path.startsWith('/a') || size(xds.route_name) > 3")
            .expect("parses");
        assert!(known.unknown_names().is_empty());
    }

    #[test]
    fn evaluates_common_filters() {
        let cases = [
            ("true", true),
            ("response.code >= 400", true),
            ("response.code >= 400 && request.method != 'GET'", false),
            ("response.code == 503 || nope.x == 1", true),
            ("request.path.startsWith('/api')", true),
            ("request.headers['x-debug'] == '1'", true),
            ("request.method in ['POST', 'PUT']", false),
            ("!(response.code < 500)", true),
            ("has(request.headers['x-missing'])", false),
            ("response.code / 100 == 5 ? true : false", true),
            ("size(request.path) == 7", true),
        ];
        for (src, want) in cases {
            let e = Expr::parse(src).unwrap_or_else(|e| panic!("{src}: {e}"));
            assert_eq!(e.matches(&A), want, "{src}");
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "response.code >=", "(1", "a.", "'x", "1 +* 2", "a ? b"] {
            assert!(Expr::parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
