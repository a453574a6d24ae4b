//! VirtualService delegation: a root rule's `delegate` is replaced by the rules of a
//! VirtualService without hosts, each merged with the root rule (istio-api.md §3.7).
//!
//! Validation follows Istio's `validateRootHTTPRoute`, `validateDelegateHTTPRoute` and
//! `validateChainingHTTPRoute`; the merge follows `mergeHTTPRoute`,
//! `mergeHTTPMatchRequests` and `hasConflict` (`pilot/pkg/config/kube/crdclient`
//! `virtualservice_controller.go`).

use std::sync::Arc;

use super::{Checker, DelegateRef, HttpMatch, HttpRoute, MirrorParts};
use crate::diag::FieldPath;
use crate::raw;
use crate::types::{StringMatch, is_dns1123_label};

/// Parses `delegate` of a rule. A rule inside a delegate cannot delegate again.
pub(super) fn parse_ref(
    c: &mut Checker,
    p: &FieldPath,
    d: &raw::Delegate,
    in_delegate: bool,
) -> Option<DelegateRef> {
    if in_delegate {
        c.error(p, "delegate HTTP route cannot contain delegate");
        return None;
    }
    let name = d.name.clone().unwrap_or_default();
    if name.is_empty() {
        c.error(&p.key("name"), "delegate name must not be empty");
        return None;
    }
    if name.len() > 253 || !name.split('.').all(is_dns1123_label) {
        c.error(
            &p.key("name"),
            format!("delegate name {name:?} must be a DNS-1123 subdomain"),
        );
        return None;
    }
    let namespace = match &d.namespace {
        Some(ns) if !is_dns1123_label(ns) => {
            c.error(&p.key("namespace"), format!("invalid namespace {ns:?}"));
            return None;
        }
        Some(ns) if !ns.is_empty() => ns.clone(),
        _ => c.namespace.clone(),
    };
    Some(DelegateRef { name, namespace })
}

/// A rule that delegates says only where its requests go next: the delegate's rules say
/// what happens to them.
pub(super) fn check_root_rule(c: &mut Checker, p: &FieldPath, r: &raw::HttpRoute) {
    let name = r.name.as_deref().map_or(String::new(), |n| format!("{n} "));
    if !r.route.is_empty() {
        c.error(
            &p.key("route"),
            format!("root HTTP route {name}must not specify route"),
        );
    }
    if r.redirect.is_some() {
        c.error(
            &p.key("redirect"),
            format!("root HTTP route {name}must not specify redirect"),
        );
    }
    // Istio accepts it and every delegated rule then answers with it; nobody means that.
    if r.direct_response.is_some() {
        c.error(
            &p.key("directResponse"),
            format!(
                "root HTTP route {name}must not specify directResponse: it would answer every delegated request"
            ),
        );
    }
}

/// Match conditions allowed on both sides of a delegation: no regexes (a subset of a regex
/// cannot be decided) and nothing about the source or the gateway.
pub(super) fn check_chained_matches(c: &mut Checker, p: &FieldPath, r: &raw::HttpRoute) {
    let regex = |s: &Option<raw::StringMatch>| s.as_ref().is_some_and(|m| m.regex.is_some());
    for (j, m) in r.matches.iter().enumerate() {
        let mp = p.key("match").idx(j);
        for (field, v) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if regex(v) {
                c.error(
                    &mp.key(field),
                    format!("{field} match does not support regex match for delegating"),
                );
            }
        }
        for (field, map) in [
            ("headers", &m.headers),
            ("queryParams", &m.query_params),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (k, v) in map {
                if v.regex.is_some() {
                    c.error(
                        &mp.key(field).key(k),
                        format!("{field} match {k:?} does not support regex match for delegating"),
                    );
                }
            }
        }
        if !m.source_labels.is_empty() {
            c.error(
                &mp.key("sourceLabels"),
                "sourceLabels match can not specify on delegate",
            );
        }
        if m.source_namespace.is_some() {
            c.error(
                &mp.key("sourceNamespace"),
                "sourceNamespace match can not specify on delegate",
            );
        }
        if !m.gateways.is_empty() {
            c.error(
                &mp.key("gateways"),
                "gateways match can not specify on delegate",
            );
        }
    }
}

/// A delegate's rule merged with its root rule.
pub struct Merged {
    /// The rule to compile.
    pub rule: HttpRoute,
    /// For each of `rule.mirrors`, whether it came from the root (and so resolves in the
    /// root's namespace).
    pub root_mirrors: Vec<bool>,
}

/// Merges `leaf`, a rule of the delegate, into `root`; `None` when one of its match blocks
/// is not within any of the root's (Istio drops such a rule).
pub fn merge(root: &HttpRoute, leaf: &HttpRoute) -> Option<Merged> {
    let matches = merge_matches(&root.matches, &leaf.matches)?;
    // Each part on its own, as `mergeHTTPRoute` fills `Mirror`, the percentages and
    // `Mirrors`: a delegate's `mirror` can take its root's percentage.
    let (r, l) = (&root.mirror_parts, &leaf.mirror_parts);
    let mirror_parts = MirrorParts {
        mirror: l.mirror.clone().or_else(|| r.mirror.clone()),
        percentage: l.percentage.or(r.percentage),
        list: if l.list.is_empty() {
            r.list.clone()
        } else {
            l.list.clone()
        },
    };
    let mirrors = mirror_parts.effective();
    let mut root_mirrors = Vec::with_capacity(mirrors.len());
    if mirror_parts.mirror.is_some() {
        root_mirrors.push(l.mirror.is_none());
    }
    root_mirrors.extend(mirror_parts.list.iter().map(|_| l.list.is_empty()));
    let rule = HttpRoute {
        index: leaf.index,
        name: join(root.name.as_deref(), leaf.name.as_deref()),
        matches,
        action: leaf.action.clone(),
        headers: if leaf.headers.is_empty() {
            root.headers.clone()
        } else {
            leaf.headers.clone()
        },
        rewrite: leaf.rewrite.clone().or_else(|| root.rewrite.clone()),
        timeout: if leaf.timeout_set {
            leaf.timeout
        } else {
            root.timeout
        },
        timeout_set: leaf.timeout_set || root.timeout_set,
        retries: leaf.retries.clone().or_else(|| root.retries.clone()),
        fault: leaf.fault.clone().or_else(|| root.fault.clone()),
        mirrors,
        mirror_parts,
        cors: leaf.cors.clone().or_else(|| root.cors.clone()),
    };
    Some(Merged { rule, root_mirrors })
}

fn join(root: Option<&str>, leaf: Option<&str>) -> Option<String> {
    match (root, leaf) {
        (Some(r), Some(l)) => Some(format!("{r}-{l}")),
        (r, l) => l.or(r).map(str::to_string),
    }
}

/// Every leaf block must fit in at least one root block; it becomes one block per root
/// block it fits in.
fn merge_matches(root: &[Arc<HttpMatch>], leaf: &[Arc<HttpMatch>]) -> Option<Vec<Arc<HttpMatch>>> {
    if root.is_empty() {
        return Some(leaf.to_vec());
    }
    if leaf.is_empty() {
        return Some(root.to_vec());
    }
    let mut out = Vec::new();
    for l in leaf {
        let before = out.len();
        for r in root {
            if !conflicts(r, l) {
                out.push(Arc::new(merge_match(r, l)));
            }
        }
        if out.len() == before {
            return None;
        }
    }
    Some(out)
}

fn merge_match(root: &HttpMatch, leaf: &HttpMatch) -> HttpMatch {
    HttpMatch {
        name: join(root.name.as_deref(), leaf.name.as_deref()),
        uri: leaf.uri.clone().or_else(|| root.uri.clone()),
        ignore_uri_case: leaf.ignore_uri_case,
        scheme: leaf.scheme.clone().or_else(|| root.scheme.clone()),
        method: leaf.method.clone().or_else(|| root.method.clone()),
        authority: leaf.authority.clone().or_else(|| root.authority.clone()),
        headers: merge_map(&root.headers, &leaf.headers),
        without_headers: merge_map(&root.without_headers, &leaf.without_headers),
        query_params: merge_map(&root.query_params, &leaf.query_params),
        port: leaf.port.or(root.port),
        gateways: if leaf.gateways.is_empty() {
            root.gateways.clone()
        } else {
            leaf.gateways.clone()
        },
        source_labels: {
            let mut m = root.source_labels.clone();
            m.extend(leaf.source_labels.clone());
            m
        },
        source_namespace: leaf
            .source_namespace
            .clone()
            .or_else(|| root.source_namespace.clone()),
    }
}

/// Root entries, each replaced by the leaf's of the same key, then the leaf's new keys.
fn merge_map(
    root: &[(String, StringMatch)],
    leaf: &[(String, StringMatch)],
) -> Vec<(String, StringMatch)> {
    let mut out: Vec<(String, StringMatch)> = root
        .iter()
        .map(|(k, v)| {
            let v = leaf.iter().find(|(lk, _)| lk == k).map_or(v, |(_, lv)| lv);
            (k.clone(), v.clone())
        })
        .collect();
    out.extend(
        leaf.iter()
            .filter(|(k, _)| !root.iter().any(|(rk, _)| rk == k))
            .cloned(),
    );
    out
}

fn get<'m>(map: &'m [(String, StringMatch)], key: &str) -> Option<&'m StringMatch> {
    map.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

/// Whether `leaf` asks for something `root` excludes (Istio's `hasConflict`).
fn conflicts(root: &HttpMatch, leaf: &HttpMatch) -> bool {
    let pairs = [
        (&root.uri, &leaf.uri),
        (&root.scheme, &leaf.scheme),
        (&root.method, &leaf.method),
        (&root.authority, &leaf.authority),
    ];
    if pairs
        .iter()
        .any(|(r, l)| string_conflict(r.as_ref(), l.as_ref()))
    {
        return true;
    }
    for (root_map, leaf_map) in [
        (&root.headers, &leaf.headers),
        (&root.without_headers, &leaf.without_headers),
        (&root.query_params, &leaf.query_params),
    ] {
        if leaf_map
            .iter()
            .any(|(k, l)| string_conflict(get(root_map, k), Some(l)))
        {
            return true;
        }
    }
    if root.ignore_uri_case != leaf.ignore_uri_case {
        return true;
    }
    if let (Some(r), Some(l)) = (root.port, leaf.port)
        && r != l
    {
        return true;
    }
    if root
        .source_namespace
        .as_ref()
        .is_some_and(|r| leaf.source_namespace.as_ref() != Some(r))
    {
        return true;
    }
    if leaf
        .source_labels
        .iter()
        .any(|(k, v)| root.source_labels.get(k).is_some_and(|rv| rv != v))
    {
        return true;
    }
    !root.gateways.is_empty()
        && !leaf.gateways.is_empty()
        && leaf.gateways.iter().any(|g| !root.gateways.contains(g))
}

/// Istio's `stringMatchConflict`: an unset side never conflicts; otherwise the leaf must be
/// an exact value or prefix within the root's non-empty exact value or prefix (an empty one
/// is Go's unset string there: `prefix: ""` on the root takes no leaf).
fn string_conflict(root: Option<&StringMatch>, leaf: Option<&StringMatch>) -> bool {
    let (Some(root), Some(leaf)) = (root, leaf) else {
        return false;
    };
    let (r_regex, r_prefix, r_exact) = parts(root);
    let (l_regex, l_prefix, l_exact) = parts(leaf);
    if r_regex || l_regex {
        return true;
    }
    if !r_exact.is_empty() {
        return !l_prefix.is_empty() || l_exact != r_exact;
    }
    if !r_prefix.is_empty() {
        if !l_prefix.is_empty() {
            return !l_prefix.starts_with(r_prefix);
        }
        if !l_exact.is_empty() {
            return !l_exact.starts_with(r_prefix);
        }
    }
    true
}

/// Whether it is a regex, its prefix and its exact value (empty when of another kind), as
/// Go's getters see a `StringMatch`.
fn parts(m: &StringMatch) -> (bool, &str, &str) {
    match m {
        StringMatch::Regex(_) => (true, "", ""),
        StringMatch::Prefix(p) => (false, p, ""),
        StringMatch::Exact(e) => (false, "", e),
        StringMatch::Present => (false, "", ""),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(uri: Option<StringMatch>) -> HttpMatch {
        HttpMatch {
            uri,
            ..HttpMatch::default()
        }
    }

    fn prefix(s: &str) -> Option<StringMatch> {
        Some(StringMatch::Prefix(s.into()))
    }

    fn exact(s: &str) -> Option<StringMatch> {
        Some(StringMatch::Exact(s.into()))
    }

    #[test]
    fn a_leaf_must_lie_within_the_root() {
        assert!(!conflicts(&m(prefix("/a")), &m(prefix("/a/b"))));
        assert!(!conflicts(&m(prefix("/a")), &m(exact("/a/x"))));
        assert!(conflicts(&m(prefix("/a/b")), &m(prefix("/a"))));
        assert!(conflicts(&m(prefix("/a")), &m(exact("/b"))));
        assert!(conflicts(&m(exact("/a")), &m(prefix("/a"))));
        assert!(!conflicts(&m(exact("/a")), &m(exact("/a"))));
        assert!(conflicts(&m(exact("/a")), &m(exact("/b"))));
        // Unset on either side never conflicts: the merged block takes the set one.
        assert!(!conflicts(&m(None), &m(prefix("/x"))));
        assert!(!conflicts(&m(prefix("/x")), &m(None)));
        // `{}` (present) on both sides cannot be ordered, as in Istio.
        let present = HttpMatch {
            headers: vec![("x".into(), StringMatch::Present)],
            ..HttpMatch::default()
        };
        assert!(conflicts(&present, &present));
        // An empty prefix or exact value on the root is Go's unset string: it takes nothing.
        assert!(conflicts(&m(prefix("")), &m(prefix("/a"))));
        assert!(conflicts(&m(exact("")), &m(exact(""))));
        let case = HttpMatch {
            ignore_uri_case: true,
            ..m(prefix("/a"))
        };
        assert!(conflicts(&case, &m(prefix("/a"))));
        let p1 = HttpMatch {
            port: Some(80),
            ..HttpMatch::default()
        };
        let p2 = HttpMatch {
            port: Some(81),
            ..HttpMatch::default()
        };
        assert!(conflicts(&p1, &p2));
        assert!(!conflicts(&p1, &HttpMatch::default()));
    }

    #[test]
    fn blocks_merge_field_by_field_and_maps_key_by_key() {
        let root = HttpMatch {
            name: Some("r".into()),
            uri: prefix("/api"),
            headers: vec![
                ("a".into(), StringMatch::Exact("1".into())),
                ("b".into(), StringMatch::Exact("2".into())),
            ],
            port: Some(80),
            ..HttpMatch::default()
        };
        let leaf = HttpMatch {
            name: Some("l".into()),
            method: exact("GET"),
            headers: vec![
                ("b".into(), StringMatch::Exact("2".into())),
                ("c".into(), StringMatch::Exact("3".into())),
            ],
            ..HttpMatch::default()
        };
        let out = merge_match(&root, &leaf);
        assert_eq!(out.name.as_deref(), Some("r-l"));
        assert_eq!(out.uri, prefix("/api"));
        assert_eq!(out.method, exact("GET"));
        assert_eq!(out.port, Some(80));
        let keys: Vec<&str> = out.headers.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["a", "b", "c"]);
    }

    #[test]
    fn every_leaf_block_needs_a_root_block() {
        let root = vec![Arc::new(m(prefix("/a"))), Arc::new(m(prefix("/b")))];
        // Within both roots' union: one merged block per root block it fits.
        let leaf = vec![Arc::new(m(None))];
        let out = merge_matches(&root, &leaf).expect("fits");
        assert_eq!(out.len(), 2);
        let leaf = vec![Arc::new(m(prefix("/a/1"))), Arc::new(m(prefix("/b/2")))];
        let out = merge_matches(&root, &leaf).expect("fits");
        let uris: Vec<_> = out.iter().map(|x| x.uri.clone()).collect();
        assert_eq!(uris, [prefix("/a/1"), prefix("/b/2")]);
        // One block outside every root block drops the whole rule.
        let leaf = vec![Arc::new(m(prefix("/a/1"))), Arc::new(m(prefix("/c")))];
        assert!(merge_matches(&root, &leaf).is_none());
        // An empty side takes the other's blocks.
        assert_eq!(merge_matches(&[], &root).map(|v| v.len()), Some(2));
        assert_eq!(merge_matches(&root, &[]).map(|v| v.len()), Some(2));
    }
}
