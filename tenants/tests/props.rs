//! Property tests: host wildcard algebra (`tenants::types::Host`, Istio's
//! `pkg/config/host/name.go`) and HTTP route order through the public load → build → find
//! path (istio-api.md §3.3: rules in order, one route per match block, generation stops at
//! the first catch-all, catch-alls moved to the end, first matching route wins).

use std::collections::HashMap;

use http::HeaderMap;
use proptest::prelude::*;
use tenants::snapshot::{ListenerKind, RouteTable};
use tenants::types::Host;
use tenants::{Decision, LoadOptions, RequestView, SourceFile, find};

// === hosts ===

/// Labels from a tiny alphabet, so that equal and nested names are common.
fn label() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c"])
}

/// A concrete name of one to three labels.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..=3).prop_map(|v| v.join("."))
}

/// `name`, `*.name` or `*`, as written in a manifest.
fn host_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => name(),
        3 => name().prop_map(|n| format!("*.{n}")),
        1 => Just("*".to_string()),
    ]
}

fn host() -> impl Strategy<Value = Host> {
    host_text().prop_map(|s| {
        Host::parse_wildcard_domain(&s).unwrap_or_else(|e| panic!("{s:?} must parse: {e}"))
    })
}

fn concrete(n: &str) -> Host {
    Host::parse_wildcard_domain(n).expect("concrete name parses")
}

/// A concrete name the host covers: itself, or the wildcard's suffix under a new label.
fn witness(h: &Host) -> String {
    match h.as_str().strip_prefix('*') {
        Some("") => "z".to_string(),
        Some(suffix) => format!("z{suffix}"),
        None => h.as_str().to_string(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(512)
    })]

    #[test]
    fn matches_is_symmetric(a in host(), b in host()) {
        prop_assert_eq!(a.matches(&b), b.matches(&a));
    }

    #[test]
    fn subset_implies_matches(a in host(), b in host()) {
        if a.subset_of(&b) {
            prop_assert!(a.matches(&b), "{a} ⊆ {b} but they do not match");
        }
    }

    #[test]
    fn subset_is_reflexive_antisymmetric_and_transitive(a in host(), b in host(), c in host()) {
        prop_assert!(a.subset_of(&a));
        prop_assert!(a.matches(&a));
        if a.subset_of(&b) && b.subset_of(&a) {
            prop_assert_eq!(&a, &b);
        }
        if a.subset_of(&b) && b.subset_of(&c) {
            prop_assert!(a.subset_of(&c), "{a} ⊆ {b} ⊆ {c} but not {a} ⊆ {c}");
        }
    }

    #[test]
    fn covers_agrees_with_subset_for_concrete_names(h in host(), n in name()) {
        prop_assert_eq!(h.covers(&n), concrete(&n).subset_of(&h), "{} covers {}?", h, n);
    }

    #[test]
    fn subset_means_covers_fewer_names(a in host(), b in host(), n in name()) {
        if a.subset_of(&b) && a.covers(&n) {
            prop_assert!(b.covers(&n), "{a} ⊆ {b}, {a} covers {n}, {b} does not");
        }
    }

    #[test]
    fn matches_means_a_shared_name_exists(a in host(), b in host(), n in name()) {
        if a.covers(&n) && b.covers(&n) {
            prop_assert!(a.matches(&b), "{a} and {b} both cover {n} but do not match");
        }
        if a.matches(&b) {
            let i = a.intersect(&b).expect("matching hosts intersect");
            let w = witness(&i);
            prop_assert!(a.covers(&w) && b.covers(&w), "{w} (from {i}) not covered by {a} and {b}");
        }
    }

    #[test]
    fn wildcard_never_covers_its_own_suffix(n in name()) {
        let w = Host::parse_wildcard_domain(&format!("*.{n}")).expect("wildcard parses");
        let bare = concrete(&n);
        prop_assert!(!w.covers(&n));
        prop_assert!(!bare.subset_of(&w));
        prop_assert!(!bare.matches(&w));
        let (one, two) = (format!("x.{n}"), format!("x.y.{n}"));
        prop_assert!(w.covers(&one) && w.covers(&two));
        prop_assert_eq!(w.intersect(&bare), None);
    }

    #[test]
    fn intersect_is_the_more_specific_side(a in host(), b in host()) {
        match a.intersect(&b) {
            None => prop_assert!(!a.matches(&b)),
            Some(i) => {
                prop_assert!(a.matches(&b));
                prop_assert!(i == a || i == b, "{i} is neither {a} nor {b}");
                prop_assert!(i.subset_of(&a) && i.subset_of(&b), "{i} not within {a} and {b}");
            }
        }
        prop_assert_eq!(a.intersect(&b), b.intersect(&a));
    }

    #[test]
    fn any_matches_everything(h in host(), n in name()) {
        let any = Host::any();
        prop_assert!(any.matches(&h) && h.matches(&any));
        prop_assert!(h.subset_of(&any));
        prop_assert!(any.covers(&n));
        prop_assert_eq!(any.intersect(&h), Some(h.clone()));
        if h != any {
            prop_assert!(!any.subset_of(&h));
        }
    }

    #[test]
    fn hosts_are_case_insensitive(s in host_text()) {
        let upper = Host::parse_wildcard_domain(&s.to_ascii_uppercase()).expect("parses");
        prop_assert_eq!(upper, Host::parse_wildcard_domain(&s).expect("parses"));
    }
}

// === route order ===

/// Files VirtualServices may go to: some sort before the Gateway's file, some after it.
const FILES: &[&str] = &[
    "tenants/team-a/a.yaml",
    "tenants/team-a/b.yaml",
    "tenants/team-a/m.yaml",
    "tenants/team-a/routes/x.yaml",
    "tenants/team-a/z/y.yaml",
];

const PLATFORM: &str = r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: appliance}
spec:
  profile: empty
  components:
    ingressGateways:
    - name: public-gw
      label: {istio: public-gw}
      enabled: true
      k8s:
        service:
          loadBalancerIP: 127.0.0.1
          ports:
          - {name: http2, port: 80, targetPort: 18080}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-a}
spec:
  hosts: ["web.example.com"]
  gateways: [public-gw]
"#;

const GATEWAY: &str = r#"apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: public}
spec:
  selector: {istio: public-gw}
  servers:
  - port: {number: 80, name: http, protocol: HTTP}
    hosts: ["web.example.com"]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {name: backend}
spec:
  hosts: ["backend.team-a.internal"]
  location: MESH_INTERNAL
  ports:
  - {number: 8080, name: http, protocol: HTTP}
  resolution: STATIC
  endpoints:
  - {address: 127.0.0.1}
"#;

/// A path condition of a generated (non-catch-all) match block.
#[derive(Debug, Clone)]
enum PathMatch {
    /// `uri: {prefix: P}`; `P` may be empty, which matches every path but is not a
    /// catch-all for Istio (`IsCatchAllRoute` wants exactly `/`).
    Prefix(String),
    /// `uri: {regex: "P.*"}`: a full match on the path without the query, i.e. "starts with
    /// P"; `/.*` matches every path but is not a catch-all (Istio wants exactly `.*`).
    Regex(String),
}

impl PathMatch {
    fn yaml(&self) -> String {
        match self {
            Self::Prefix(p) => format!("{{prefix: \"{p}\"}}"),
            Self::Regex(p) => format!("{{regex: \"{p}.*\"}}"),
        }
    }

    fn accepts(&self, path: &str) -> bool {
        match self {
            Self::Prefix(p) => path.starts_with(p.as_str()),
            Self::Regex(p) => path
                .split('?')
                .next()
                .unwrap_or(path)
                .starts_with(p.as_str()),
        }
    }
}

/// How the one catch-all rule is written (`IsCatchAllRoute`).
#[derive(Debug, Clone, Copy)]
enum CatchAll {
    /// A rule without `match`.
    NoMatch,
    /// `match: [{uri: {prefix: /}}]`.
    SlashPrefix,
    /// `match: [{uri: {regex: ".*"}}]`.
    DotStar,
}

/// A generated VirtualService: rules (each with one or two match blocks), and for the chosen
/// one a catch-all rule followed by rules that Istio never generates.
#[derive(Debug, Clone)]
struct GenVs {
    file: usize,
    rules: Vec<Vec<PathMatch>>,
    catch_all: Option<(CatchAll, Vec<Vec<PathMatch>>)>,
}

fn path_match() -> impl Strategy<Value = PathMatch> {
    let chars = |n: std::ops::RangeInclusive<usize>| {
        prop::collection::vec(prop::sample::select(vec!['a', 'b']), n)
            .prop_map(|v| v.into_iter().collect::<String>())
    };
    prop_oneof![
        8 => chars(1..=3).prop_map(|s| PathMatch::Prefix(format!("/{s}"))),
        1 => Just(PathMatch::Prefix(String::new())),
        2 => chars(0..=2).prop_map(|s| PathMatch::Regex(format!("/{s}"))),
    ]
}

fn rules(n: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = Vec<Vec<PathMatch>>> {
    prop::collection::vec(prop::collection::vec(path_match(), 1..=2), n)
}

fn repo() -> impl Strategy<Value = Vec<GenVs>> {
    let plain = (0..FILES.len(), rules(1..=3)).prop_map(|(file, rules)| GenVs {
        file,
        rules,
        catch_all: None,
    });
    let catch_all = (
        0..FILES.len(),
        rules(0..=2),
        prop_oneof![
            Just(CatchAll::NoMatch),
            Just(CatchAll::SlashPrefix),
            Just(CatchAll::DotStar)
        ],
        rules(0..=2),
    )
        .prop_map(|(file, rules, how, after)| GenVs {
            file,
            rules,
            catch_all: Some((how, after)),
        });
    (
        prop::collection::vec(plain, 1..=7),
        catch_all,
        any::<prop::sample::Index>(),
    )
        .prop_map(|(mut vss, ca, at)| {
            let i = at.index(vss.len() + 1);
            vss.insert(i, ca);
            vss
        })
}

/// A generated route as the test expects it.
#[derive(Debug, Clone)]
struct Expected {
    name: String,
    /// `None` for the catch-all.
    path: Option<PathMatch>,
    /// (file path, document index, rule index, match index): repository order.
    order: (String, usize, usize, usize),
}

const ROUTE: &str = "    route:\n    - destination: {host: backend.team-a.internal}\n";

/// The repository files, and the routes in the order Istio generates them (before the
/// catch-all sort), i.e. by file path, document, rule and match block.
fn render(vss: &[GenVs]) -> (Vec<SourceFile>, Vec<Expected>) {
    let mut docs: Vec<Vec<String>> = vec![Vec::new(); FILES.len()];
    let mut generated: Vec<Expected> = Vec::new();
    let mut rule_id = 0;
    for (v, vs) in vss.iter().enumerate() {
        let doc = docs[vs.file].len();
        let path = FILES[vs.file].to_string();
        let mut y = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs{v}}}\nspec:\n  hosts: [\"web.example.com\"]\n  gateways: [public]\n  http:\n"
        );
        // (rule, generated?) in document order; `None` is the catch-all rule.
        let mut items: Vec<(Option<&Vec<PathMatch>>, bool)> =
            vs.rules.iter().map(|r| (Some(r), true)).collect();
        if let Some((_, after)) = &vs.catch_all {
            items.push((None, true));
            // Rules after a catch-all are never generated (BuildHTTPRoutesForVirtualService).
            items.extend(after.iter().map(|r| (Some(r), false)));
        }
        for (index, (rule, live)) in items.into_iter().enumerate() {
            let name = format!("r{rule_id}");
            rule_id += 1;
            y.push_str(&format!("  - name: {name}\n"));
            let mut push = |route: String, path_match: Option<PathMatch>, j: usize| {
                if live {
                    generated.push(Expected {
                        name: route,
                        path: path_match,
                        order: (path.clone(), doc, index, j),
                    });
                }
            };
            let catch_all = match (rule, vs.catch_all.as_ref().map(|c| c.0)) {
                (Some(matches), _) => {
                    y.push_str("    match:\n");
                    for (j, m) in matches.iter().enumerate() {
                        y.push_str(&format!("    - {{name: m{j}, uri: {}}}\n", m.yaml()));
                        push(format!("{name}.m{j}"), Some(m.clone()), j);
                    }
                    None
                }
                (None, Some(CatchAll::SlashPrefix)) => Some("{prefix: /}"),
                (None, Some(CatchAll::DotStar)) => Some("{regex: \".*\"}"),
                (None, _) => {
                    push(name.clone(), None, 0);
                    None
                }
            };
            if let Some(uri) = catch_all {
                y.push_str(&format!("    match:\n    - {{name: m0, uri: {uri}}}\n"));
                push(format!("{name}.m0"), None, 0);
            }
            y.push_str(ROUTE);
        }
        docs[vs.file].push(y);
    }
    generated.sort_by(|a, b| a.order.cmp(&b.order));
    let mut files = vec![
        SourceFile {
            path: "gatehouse.yaml".into(),
            bytes: PLATFORM.as_bytes().to_vec(),
        },
        SourceFile {
            path: "tenants/team-a/gateway.yaml".into(),
            bytes: GATEWAY.as_bytes().to_vec(),
        },
    ];
    for (i, d) in docs.iter().enumerate().filter(|(_, d)| !d.is_empty()) {
        files.push(SourceFile {
            path: FILES[i].into(),
            bytes: d.join("---\n").into_bytes(),
        });
    }
    (files, generated)
}

/// Loads and builds the repository; returns the route table of the HTTP listener on 80.
fn compile(files: &[SourceFile]) -> RouteTable {
    let loaded = tenants::load(files, &LoadOptions::default());
    let out = match tenants::build(&loaded, "rev", None) {
        Ok(o) => o,
        Err(e) => panic!("build failed: {e:?}"),
    };
    let errors: Vec<String> = out
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect();
    assert!(errors.is_empty(), "errors: {errors:#?}");
    let group = out.snapshot.group("public-gw").expect("group public-gw");
    let tables: Vec<&RouteTable> = group
        .listeners
        .iter()
        .filter_map(|l| match &l.kind {
            ListenerKind::Http(t) if l.gateway_port == 80 => Some(&**t),
            _ => None,
        })
        .collect();
    assert!(!tables.is_empty(), "no HTTP listener on port 80");
    tables[0].clone()
}

fn request<'a>(path: &'a str, headers: &'a HeaderMap) -> RequestView<'a> {
    RequestView {
        method: "GET",
        scheme: "http",
        authority: "web.example.com:80",
        path,
        headers,
    }
}

fn request_path() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop::sample::select(vec!['a', 'b', 'c']), 0..=4),
        any::<bool>(),
    )
        .prop_map(|(v, query)| {
            let p = format!("/{}", v.into_iter().collect::<String>());
            if query { format!("{p}?x=1") } else { p }
        })
}

proptest! {
    // No regression file: a failure prints its minimal input, which belongs in a unit test.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::with_cases(64)
    })]

    #[test]
    fn routes_follow_repository_order_with_the_catch_all_last(
        vss in repo(),
        paths in prop::collection::vec(request_path(), 1..=8),
        shuffle in any::<prop::sample::Index>(),
    ) {
        let (mut files, generated) = render(&vss);
        // Load sorts by path: the order files are handed over in must not matter.
        let k = shuffle.index(files.len());
        files.rotate_left(k);
        files.reverse();
        let table = compile(&files);

        prop_assert_eq!(table.vhosts.len(), 1);
        let vh = &table.vhosts[0];
        prop_assert_eq!(vh.domain.as_str(), "web.example.com");
        let by_name: HashMap<&str, &Expected> =
            generated.iter().map(|e| (e.name.as_str(), e)).collect();
        let names: Vec<&str> = vh.routes.iter().map(|r| &*r.name).collect();
        let mut routes = Vec::new();
        for r in &vh.routes {
            let e = by_name.get(&*r.name).copied();
            prop_assert!(e.is_some(), "unexpected route {} in {:?}", r.name, names);
            let e = e.expect("checked");
            // The model's notion of a catch-all is Istio's (IsCatchAllRoute).
            let model_catch_all = r.matcher.as_ref().is_none_or(|m| m.is_catch_all());
            prop_assert_eq!(model_catch_all, e.path.is_none(), "route {}: {:?}", r.name, r.matcher);
            routes.push(e);
        }

        // (a) the catch-all is after every other route.
        let catch_alls: Vec<usize> = (0..routes.len()).filter(|i| routes[*i].path.is_none()).collect();
        prop_assert_eq!(catch_alls, vec![routes.len() - 1], "{:?}", names);

        // (b) the others follow repository order: file path, document, rule, match.
        for w in routes[..routes.len() - 1].windows(2) {
            prop_assert!(w[0].order < w[1].order, "{:?} before {:?} in {:?}", w[0].order, w[1].order, names);
        }
        // And exactly the generated routes are there (nothing after a catch-all rule).
        let mut expected: Vec<&Expected> = generated.iter().filter(|e| e.path.is_some()).collect();
        expected.extend(generated.iter().filter(|e| e.path.is_none()));
        let expected_names: Vec<&str> = expected.iter().map(|e| e.name.as_str()).collect();
        prop_assert_eq!(&names, &expected_names);

        // (c) a request takes the first route whose path condition holds, else the catch-all.
        let headers = HeaderMap::new();
        for p in &paths {
            let want = expected
                .iter()
                .find(|e| e.path.as_ref().is_none_or(|m| m.accepts(p)))
                .expect("the catch-all matches everything");
            match find(&table, &request(p, &headers)) {
                Decision::Route(v, r) => {
                    prop_assert_eq!(v.domain.as_str(), "web.example.com");
                    prop_assert_eq!(&*r.name, want.name.as_str(), "path {}", p);
                }
                other => prop_assert!(false, "path {}: {:?}", p, other),
            }
        }
        // Another host has no virtual host: 404.
        let other = RequestView { authority: "other.example.com", ..request("/a", &headers) };
        prop_assert!(matches!(find(&table, &other), Decision::NotFound(None)));
    }
}
