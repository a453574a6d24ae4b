use super::node::{NodeKind, Scalar};
use super::parse::{Limits, parse_documents};
use crate::diag::{FieldPath, Pos};

fn one(text: &str) -> super::Node {
    parse_documents(text, &Limits::default())
        .unwrap()
        .remove(0)
        .root
}

#[test]
fn ipv6_in_flow_sequence_reads_as_go_does() {
    let n = one("a: [1.2.3.4, 001:db8::]\n");
    let NodeKind::Seq(items) = &n.get("a").unwrap().kind else {
        panic!("not a list")
    };
    assert_eq!(items[1].scalar(), Some(Scalar::Str("001:db8::")));
    // A real single-pair mapping keeps its meaning.
    let n = one("a: [x: 1]\n");
    let NodeKind::Seq(items) = &n.get("a").unwrap().kind else {
        panic!("not a list")
    };
    assert!(matches!(items[0].kind, NodeKind::Map(_)));
}

#[test]
fn positions_point_at_keys() {
    let n = one("spec:\n  http:\n  - route:\n    - destination:\n        host: x\n");
    let p = FieldPath::parse("spec.http[0].route[0].destination.host");
    assert_eq!(n.pos_of(&p), Pos { line: 5, col: 9 });
    // A missing leaf points at its nearest existing parent.
    let p = FieldPath::parse("spec.http[0].route[0].destination.subset");
    assert_eq!(n.pos_of(&p), Pos { line: 4, col: 7 });
}

#[test]
fn multi_document_and_empty_documents() {
    let d = parse_documents(
        "# c\n---\na: 1\n---\n# only a comment\n---\nb: 2\n",
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(d.len(), 2);
    assert_eq!(d[1].root.pos.line, 7);
}

#[test]
fn billion_laughs_is_refused() {
    let mut y = String::from("a: &a [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 {
            "a".to_string()
        } else {
            format!("b{}", i - 1)
        };
        y.push_str(&format!("b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"));
    }
    let e = parse_documents(&y, &Limits::default()).unwrap_err();
    assert!(e.message.contains("expands to more than"), "{}", e.message);
}

#[test]
fn deep_nesting_and_size_are_refused() {
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let e = parse_documents(&deep, &Limits::default()).unwrap_err();
    assert!(
        e.message.contains("nesting deeper than 64"),
        "{}",
        e.message
    );
    let big = "a: b\n".repeat(10);
    let tiny = Limits {
        max_bytes: 20,
        ..Limits::default()
    };
    let e = parse_documents(&big, &tiny).unwrap_err();
    assert!(e.message.contains("the limit is 20 bytes"), "{}", e.message);
}

#[test]
fn syntax_errors_have_positions() {
    let e = parse_documents("a: b\n  c: d\n", &Limits::default()).unwrap_err();
    assert_eq!(e.pos.line, 2, "{e:?}");
    assert!(e.message.starts_with("invalid YAML"), "{}", e.message);
    let e = parse_documents("a: 1\na: 2\n", &Limits::default()).unwrap_err();
    assert_eq!((e.pos.line, e.message.as_str()), (2, "duplicate key `a`"));
}

#[test]
fn core_schema_scalars() {
    let n = one("i: 42\nq: \"42\"\nf: 1.5\nb: true\nn: ~\ns: hello\nh: 0x10\n");
    assert_eq!(n.get("i").unwrap().scalar(), Some(Scalar::Int(42)));
    assert_eq!(n.get("q").unwrap().scalar(), Some(Scalar::Str("42")));
    assert_eq!(n.get("f").unwrap().scalar(), Some(Scalar::Float(1.5)));
    assert_eq!(n.get("b").unwrap().scalar(), Some(Scalar::Bool(true)));
    assert_eq!(n.get("n").unwrap().scalar(), Some(Scalar::Null));
    assert_eq!(n.get("s").unwrap().scalar(), Some(Scalar::Str("hello")));
    assert_eq!(n.get("h").unwrap().scalar(), Some(Scalar::Int(16)));
}
