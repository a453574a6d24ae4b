//! Istio corpus conformance (DESIGN.md, "Istio semantics to keep").
//!
//! Real Istio manifests from `shared/corpus/istio`:
//! - every document of `samples/`, `validation-dataset/` and `crds/*-valid.yaml` loads with no
//!   error, or fails only with "not supported yet" on a P2 field (istio-api.md §1); the list
//!   of such documents is printed and compared with [`EXPECTED_UNSUPPORTED`];
//! - every `_err` document of `crds/*-invalid.yaml` is rejected with an error about the field
//!   Istio names, listed in [`INVALID_CASES`].
//!
//! Each document is loaded on its own (outside tenant policy, as Istio's own tests do) with
//! the lines before it kept as blank lines, so diagnostic positions are positions in the file.
#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use tenants::{Diagnostic, Namespace, load_standalone};

/// Documents that fail only with "not supported yet" errors: (file, document index,
/// `Kind/name`, field). A change here (a field implemented, a new corpus file) must be noticed.
const EXPECTED_UNSUPPORTED: &[(&str, usize, &str, &str)] = &[];

/// Warnings that say "not supported yet" (accepted, but the feature is ignored): same shape.
const EXPECTED_UNSUPPORTED_WARNINGS: &[(&str, usize, &str, &str)] = &[
    (
        "crds/telemetry-valid.yaml",
        0,
        "Telemetry/full",
        "spec.metrics",
    ),
    (
        "crds/telemetry-valid.yaml",
        0,
        "Telemetry/full",
        "spec.tracing",
    ),
    (
        "crds/telemetry-valid.yaml",
        1,
        "Telemetry/tag-upsert",
        "spec.metrics",
    ),
    (
        "crds/telemetry-valid.yaml",
        2,
        "Telemetry/tag-remove",
        "spec.metrics",
    ),
    (
        "validation-dataset/telemetry-v1-Telemetry.yaml",
        0,
        "Telemetry/valid",
        "spec.tracing",
    ),
    (
        "validation-dataset/telemetry-v1alpha1-Telemetry.yaml",
        0,
        "Telemetry/valid",
        "spec.tracing",
    ),
];

/// P2 fields of istio-api.md §1 by kind, as `spec`-relative paths without indices. A field
/// matches an entry when its path ends with the entry at a segment boundary (so
/// `loadBalancer.warmup` covers the top-level, subset and port-level policies).
const P2_FIELDS: &[(&str, &[&str])] = &[
    (
        "Gateway",
        &[
            "servers.port.targetPort",
            "servers.bind",
            "servers.name",
            "servers.defaultEndpoint",
            "tls.maxProtocolVersion",
            "tls.credentialNames",
            "tls.tlsCertificates",
            "tls.caCertCredentialName",
            "tls.caCrl",
            "tls.verifyCertificateSpki",
            "tls.verifyCertificateHash",
            "tls.insecureSkipVerify",
        ],
    ),
    (
        "VirtualService",
        &[
            "exportTo",
            "http.name",
            "match.ignoreUriCase",
            "match.authority",
            "match.scheme",
            "match.withoutHeaders",
            "match.sourceLabels",
            "match.sourceNamespace",
            "match.name",
            "match.statPrefix",
            "match.destinationSubnets",
            "match.sourceSubnet",
            "rewrite.uriRegexRewrite",
            "http.directResponse",
            "http.delegate",
            "retries.retryRemoteLocalities",
            "retries.retryIgnorePreviousHosts",
            "retries.backoff",
            "corsPolicy.unmatchedPreflights",
            "corsPolicy.allowOrigin",
        ],
    ),
    (
        "DestinationRule",
        &[
            "tls.insecureSkipVerify",
            "tls.caCrl",
            "consistentHash.ringHash",
            "consistentHash.maglev",
            "consistentHash.minimumRingSize",
            "loadBalancer.localityLbSetting",
            "loadBalancer.zoneAwareLbSetting",
            "loadBalancer.warmup",
            "loadBalancer.warmupDurationSecs",
            "outlierDetection.splitExternalLocalOriginErrors",
            "outlierDetection.consecutiveLocalOriginFailures",
            "outlierDetection.outlierDetectionHttpErrorCodes",
            "outlierDetection.consecutiveErrors",
            "trafficPolicy.tunnel",
            "trafficPolicy.proxyProtocol",
            "trafficPolicy.retryBudget",
            "exportTo",
            "workloadSelector",
        ],
    ),
    ("ServiceEntry", &["exportTo"]),
    (
        "WorkloadEntry",
        &["weight", "locality", "network", "serviceAccount"],
    ),
    (
        "Telemetry",
        &["selector", "targetRef", "targetRefs", "tracing", "metrics"],
    ),
    (
        "Sidecar",
        &[
            "outboundTrafficPolicy",
            "egress",
            "ingress",
            "workloadSelector",
        ],
    ),
];

/// One `_err` case of `crds/*-invalid.yaml`, in file order.
struct Invalid {
    /// File under the corpus root.
    file: &'static str,
    /// `metadata.name` (not unique: the three DestinationRule cases share one).
    name: &'static str,
    /// The field path an error must name exactly.
    field: &'static str,
    /// 1-based line:column in the file where that error must point.
    at: (u32, u32),
    /// A fragment of our message that states Istio's reason.
    reason: &'static str,
}

const fn case(
    file: &'static str,
    name: &'static str,
    field: &'static str,
    at: (u32, u32),
    reason: &'static str,
) -> Invalid {
    Invalid {
        file,
        name,
        field,
        at,
        reason,
    }
}

const DR: &str = "crds/destinationrule-invalid.yaml";
const SE: &str = "crds/serviceentry-invalid.yaml";
const TE: &str = "crds/telemetry-invalid.yaml";
const WE: &str = "crds/workloadentry-invalid.yaml";

/// Every `_err` document, in file order, with the field Istio's message is about.
const INVALID_CASES: &[Invalid] = &[
    // 'spec.trafficPolicy.loadBalancer.warmup.minimumPercent: Invalid value'
    case(
        DR,
        "bookinfo-ratings",
        "spec.trafficPolicy.loadBalancer.warmup.minimumPercent",
        (12, 9),
        "between 0 and 100",
    ),
    // 'spec.trafficPolicy.loadBalancer.warmup.duration: Required value'
    case(
        DR,
        "bookinfo-ratings",
        "spec.trafficPolicy.loadBalancer.warmup.duration",
        (23, 7),
        "required",
    ),
    // 'spec.trafficPolicy.loadBalancer.warmup.aggression: Invalid value'
    case(
        DR,
        "bookinfo-ratings",
        "spec.trafficPolicy.loadBalancer.warmup.aggression",
        (37, 9),
        "greater than 0",
    ),
    // "spec: Required value"
    case(SE, "no-spec", "spec", (2, 1), "required"),
    // "spec.hosts: Required value"
    case(
        SE,
        "missing-host",
        "spec.hosts",
        (12, 1),
        "at least one host",
    ),
    // "wildcard is not supported in selector"
    case(
        SE,
        "bad-selector-value",
        "spec.workloadSelector.labels.val",
        (35, 7),
        "wildcard is not supported in selector",
    ),
    // "only one of WorkloadSelector or Endpoints can be set"
    case(
        SE,
        "selector-and-endpoints",
        "spec.workloadSelector",
        (44, 3),
        "only one of WorkloadSelector or Endpoints can be set",
    ),
    // "hostname cannot be wildcard"
    case(
        SE,
        "bad-host-wildcard",
        "spec.hosts[0]",
        (54, 11),
        "hostname cannot be wildcard",
    ),
    // "CIDR addresses are allowed only for NONE/STATIC resolution types"
    case(
        SE,
        "bad-cidr-resolution",
        "spec.addresses[0]",
        (80, 15),
        "CIDR addresses are allowed only for NONE/STATIC resolution types",
    ),
    // "Duplicate value"
    case(
        SE,
        "duplicate-ports-name",
        "spec.ports[1].name",
        (93, 7),
        "Duplicate value",
    ),
    // "port number cannot be duplicated"
    case(
        SE,
        "duplicate-ports-number",
        "spec.ports[1].number",
        (107, 7),
        "port number cannot be duplicated",
    ),
    // "port must be between 1-65535"
    case(
        SE,
        "bad-port",
        "spec.ports[0].number",
        (118, 7),
        "must be between 1-65535",
    ),
    // "port must be between 1-65535"
    case(
        SE,
        "bad-port-target",
        "spec.ports[0].targetPort",
        (130, 7),
        "must be between 1-65535",
    ),
    // "NONE mode cannot set endpoints"
    case(
        SE,
        "none-with-endpoints",
        "spec.endpoints",
        (139, 3),
        "NONE mode cannot set endpoints",
    ),
    // "DNS_ROUND_ROBIN mode cannot have multiple endpoints"
    case(
        SE,
        "dns-rr-with-multiple-endpoints",
        "spec.endpoints",
        (151, 3),
        "DNS_ROUND_ROBIN mode cannot have multiple endpoints",
    ),
    // "name in body should be at least 1 chars long"
    case(
        TE,
        "bad-provider",
        "spec.metrics[0].providers[0].name",
        (9, 7),
        "at least 1 chars long",
    ),
    // "customMetric in body should be at least 1 chars lon[g]"
    case(
        TE,
        "bad-custom-metric",
        "spec.metrics[0].overrides[0].match.customMetric",
        (20, 9),
        "at least 1 chars long",
    ),
    // "value must be set when operation is UPSERT"
    case(
        TE,
        "bad-tag-upsert",
        "spec.metrics[0].overrides[0].tagOverrides.foo.value",
        (31, 9),
        "value must be set when operation is UPSERT",
    ),
    // "value must not be set when operation is REMOVE"
    case(
        TE,
        "bad-tag-remove",
        "spec.metrics[0].overrides[0].tagOverrides.foo.value",
        (45, 11),
        "value must not be set when operation is REMOVE",
    ),
    // 'spec: Required value'
    case(WE, "no-spec", "spec", (2, 1), "required"),
    // Address is required
    case(
        WE,
        "missing-address",
        "spec.address",
        (12, 1),
        "Address is required",
    ),
    // UDS may not be a dir
    case(
        WE,
        "bad-uds-dir",
        "spec.address",
        (20, 3),
        "UDS may not be a dir",
    ),
    // UDS must be an absolute path or abstract socket
    case(
        WE,
        "bad-uds-relative",
        "spec.address",
        (28, 3),
        "UDS must be an absolute path or abstract socket",
    ),
    // UDS may not include ports
    case(
        WE,
        "uds-with-ports",
        "spec.ports",
        (37, 3),
        "UDS may not include ports",
    ),
    // port must be between 1-65535
    case(
        WE,
        "high-port",
        "spec.ports.http",
        (48, 5),
        "must be between 1-65535",
    ),
    // 'spec.ports: Invalid value'
    case(
        WE,
        "bad-port-name",
        "spec.ports.@",
        (58, 5),
        "Invalid value",
    ),
];

// === corpus files ===

fn corpus_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus/istio")
}

/// `dir/*.yaml` (relative to the corpus root), sorted, filtered by `keep`.
fn yaml_files(dir: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    let path = corpus_root().join(dir);
    let mut out: Vec<String> = std::fs::read_dir(&path)
        .unwrap_or_else(|e| panic!("cannot read corpus folder {}: {e}", path.display()))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|n| n.ends_with(".yaml") && keep(n))
        .map(|n| format!("{dir}/{n}"))
        .collect();
    out.sort();
    out
}

fn read(file: &str) -> String {
    let path = corpus_root().join(file);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// One YAML document of a corpus file.
struct Doc {
    /// 0-based index among the file's real documents.
    index: usize,
    /// 1-based first and last line in the file.
    lines: (u32, u32),
    /// The document's text, preceded by one blank line per earlier line of the file and with
    /// its `_err:` line blanked, so positions are file positions.
    text: String,
    /// Istio's expected message (`_err:`), if any.
    err: Option<String>,
}

/// Splits a file at `---` lines. Documents made only of comments and blank lines (the
/// commented-out cases of the invalid files) are not documents.
fn documents(text: &str) -> Vec<Doc> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut start = 0;
    for end in 0..=lines.len() {
        let boundary = end == lines.len() || lines[end].trim_end() == "---";
        if !boundary {
            continue;
        }
        let body = &lines[start..end];
        let real = body.iter().any(|l| {
            let t = l.trim();
            !t.is_empty() && !t.starts_with('#')
        });
        if real {
            let mut doc = "\n".repeat(start);
            let mut err = None;
            for l in body {
                if let Some(m) = l.strip_prefix("_err:") {
                    let m = m.trim().trim_matches(|c| c == '"' || c == '\'');
                    err = Some(m.to_string());
                } else {
                    doc.push_str(l);
                }
                doc.push('\n');
            }
            let first = body
                .iter()
                .position(|l| {
                    let t = l.trim();
                    !t.is_empty() && !t.starts_with('#') && !l.starts_with("_err:")
                })
                .unwrap_or(0);
            out.push(Doc {
                index: out.len(),
                lines: (
                    u32::try_from(start + first + 1).expect("line"),
                    u32::try_from(end).expect("line"),
                ),
                text: doc,
                err,
            });
        }
        start = end + 1;
    }
    out
}

fn object_count(ns: &Namespace) -> usize {
    let o = &ns.objects;
    o.gateways.len()
        + o.virtual_services.len()
        + o.destination_rules.len()
        + o.service_entries.len()
        + o.workload_entries.len()
        + o.sidecars.len()
        + o.telemetries.len()
        + o.operators.len()
        + o.tenants.len()
}

fn object_of(d: &Diagnostic) -> String {
    d.object
        .as_ref()
        .map_or_else(|| "?".into(), |o| format!("{}/{}", o.kind, o.name))
}

/// The field without `spec.` and without sequence indices: `trafficPolicy.loadBalancer.warmup`.
fn normalize(field: &str) -> String {
    let mut s = String::with_capacity(field.len());
    let mut depth = 0;
    for c in field.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            _ if depth == 0 => s.push(c),
            _ => {}
        }
    }
    s.strip_prefix("spec.").unwrap_or(&s).to_string()
}

fn is_p2(kind: &str, field: &str) -> bool {
    let f = normalize(field);
    P2_FIELDS
        .iter()
        .filter(|(k, _)| *k == kind)
        .flat_map(|(_, fields)| fields.iter())
        .any(|p| f == *p || f.ends_with(&format!(".{p}")))
}

/// Every diagnostic points inside the document it is about.
fn check_positions(file: &str, doc: &Doc, ns: &Namespace, problems: &mut String) {
    for d in &ns.diagnostics {
        let inside = d.pos.line >= doc.lines.0 && d.pos.line <= doc.lines.1 && d.pos.col >= 1;
        if !inside || d.file != file {
            writeln!(
                problems,
                "{file}#{}: diagnostic outside its document (lines {}-{}): {d}",
                doc.index, doc.lines.0, doc.lines.1
            )
            .expect("write");
        }
    }
}

type Entry = (String, usize, String, String);

/// The expected list, sorted.
fn as_entries(list: &[(&str, usize, &str, &str)]) -> Vec<Entry> {
    let mut v: Vec<Entry> = list
        .iter()
        .map(|(f, i, o, p)| ((*f).into(), *i, (*o).into(), (*p).into()))
        .collect();
    v.sort();
    v
}

// === valid documents ===

#[test]
fn valid_documents_load_or_are_p2_not_supported_yet() {
    let mut files = yaml_files("samples", |_| true);
    files.extend(yaml_files("validation-dataset", |_| true));
    files.extend(yaml_files("crds", |n| n.ends_with("-valid.yaml")));
    assert!(
        files.len() >= 40,
        "corpus not found or incomplete under {}: {files:?}",
        corpus_root().display()
    );

    let mut problems = String::new();
    let mut unsupported: Vec<Entry> = Vec::new();
    let mut unsupported_warnings: Vec<Entry> = Vec::new();
    let mut documents_seen = 0;
    let mut objects_loaded = 0;
    for file in &files {
        let text = read(file);
        let docs = documents(&text);
        // Our splitter and the YAML parser must agree on what a document is.
        let parsed = tenants::yaml::parse_documents(&text, &tenants::yaml::Limits::default())
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(docs.len(), parsed.len(), "{file}: document count");
        assert!(!docs.is_empty(), "{file}: no documents");
        for doc in &docs {
            assert!(
                doc.err.is_none(),
                "{file}#{}: _err in a valid file",
                doc.index
            );
            documents_seen += 1;
            let ns = load_standalone(&doc.text, file);
            check_positions(file, doc, &ns, &mut problems);
            for d in ns.diagnostics.iter().filter(|d| !d.is_error()) {
                if d.message.contains("not supported yet") {
                    unsupported_warnings.push((
                        file.clone(),
                        doc.index,
                        object_of(d),
                        d.field.clone(),
                    ));
                }
            }
            let errors: Vec<&Diagnostic> = ns.diagnostics.iter().filter(|d| d.is_error()).collect();
            if errors.is_empty() {
                // Loaded: exactly one object, nothing silently dropped.
                if object_count(&ns) != 1 {
                    writeln!(
                        problems,
                        "{file}#{}: loaded without errors but produced {} objects",
                        doc.index,
                        object_count(&ns)
                    )
                    .expect("write");
                }
                objects_loaded += object_count(&ns);
                continue;
            }
            if object_count(&ns) != 0 {
                writeln!(
                    problems,
                    "{file}#{}: refused but an object was kept",
                    doc.index
                )
                .expect("write");
            }
            for d in errors {
                let kind = d.object.as_ref().map_or("", |o| o.kind.as_str());
                let ok = d.message.contains("not supported yet")
                    && d.message.contains(&d.field)
                    && !d.field.is_empty()
                    && is_p2(kind, &d.field);
                if ok {
                    unsupported.push((file.clone(), doc.index, object_of(d), d.field.clone()));
                } else {
                    writeln!(problems, "{file}#{}: {d}", doc.index).expect("write");
                }
            }
        }
    }

    println!(
        "corpus: {} files, {documents_seen} documents, {objects_loaded} loaded",
        files.len()
    );
    println!("documents refused with \"not supported yet\" (P2 fields):");
    for (f, i, o, p) in &unsupported {
        println!("  {f}#{i} {o}: {p}");
    }
    println!("documents accepted with a \"not supported yet\" warning:");
    for (f, i, o, p) in &unsupported_warnings {
        println!("  {f}#{i} {o}: {p}");
    }

    assert!(
        problems.is_empty(),
        "corpus documents refused for reasons other than a P2 field not supported yet:\n{problems}"
    );
    unsupported.sort();
    unsupported_warnings.sort();
    assert_eq!(unsupported, as_entries(EXPECTED_UNSUPPORTED));
    assert_eq!(
        unsupported_warnings,
        as_entries(EXPECTED_UNSUPPORTED_WARNINGS)
    );
    let refused_docs = {
        let mut d: Vec<(&str, usize)> = unsupported.iter().map(|e| (e.0.as_str(), e.1)).collect();
        d.dedup();
        d.len()
    };
    assert_eq!(objects_loaded + refused_docs, documents_seen);
}

// === invalid documents ===

#[test]
fn invalid_documents_are_rejected_for_istios_reason() {
    let files = yaml_files("crds", |n| n.ends_with("-invalid.yaml"));
    assert_eq!(
        files,
        [DR, SE, TE, WE].map(String::from).to_vec(),
        "the invalid corpus files changed; extend INVALID_CASES"
    );

    let mut problems = String::new();
    let mut cases = INVALID_CASES.iter();
    let mut err_lines = 0;
    let mut checked = 0;
    for file in &files {
        let text = read(file);
        // Independent of the splitter: every uncommented `_err:` line is one case.
        err_lines += text.lines().filter(|l| l.starts_with("_err:")).count();
        for doc in documents(&text) {
            let Some(istio) = &doc.err else {
                writeln!(problems, "{file}#{}: document without _err", doc.index).expect("write");
                continue;
            };
            let Some(case) = cases.next() else {
                writeln!(problems, "{file}#{}: no entry in INVALID_CASES", doc.index)
                    .expect("write");
                continue;
            };
            let ns = load_standalone(&doc.text, file);
            let name = tenants::yaml::parse_documents(&doc.text, &Default::default())
                .ok()
                .and_then(|d| {
                    let m = d
                        .first()?
                        .root
                        .get("metadata")?
                        .get_str("name")?
                        .to_string();
                    Some(m)
                })
                .unwrap_or_default();
            if case.file != file || case.name != name {
                writeln!(
                    problems,
                    "{file}#{} ({name}): INVALID_CASES is out of order, next entry is {}/{}",
                    doc.index, case.file, case.name
                )
                .expect("write");
                continue;
            }
            checked += 1;
            check_positions(file, &doc, &ns, &mut problems);
            let errors: Vec<&Diagnostic> = ns.diagnostics.iter().filter(|d| d.is_error()).collect();
            let hit = errors.iter().find(|d| d.field == case.field);
            match hit {
                None => writeln!(
                    problems,
                    "{file}#{} {name} (Istio: {istio:?}): no error on {}; got {:?}",
                    doc.index,
                    case.field,
                    errors.iter().map(ToString::to_string).collect::<Vec<_>>()
                )
                .expect("write"),
                Some(d) => {
                    if (d.pos.line, d.pos.col) != case.at {
                        writeln!(
                            problems,
                            "{file}#{} {name}: error at {}:{}, expected {}:{}: {d}",
                            doc.index, d.pos.line, d.pos.col, case.at.0, case.at.1
                        )
                        .expect("write");
                    }
                    if !d.message.contains(case.reason) {
                        writeln!(
                            problems,
                            "{file}#{} {name}: message does not say {:?}: {d}",
                            doc.index, case.reason
                        )
                        .expect("write");
                    }
                }
            }
            if object_count(&ns) != 0 {
                writeln!(
                    problems,
                    "{file}#{} {name}: refused object was kept",
                    doc.index
                )
                .expect("write");
            }
        }
    }
    if let Some(extra) = cases.next() {
        writeln!(
            problems,
            "INVALID_CASES has entries with no document, first: {}/{}",
            extra.file, extra.name
        )
        .expect("write");
    }
    println!(
        "invalid corpus: {checked} of {err_lines} _err documents rejected on the expected field"
    );
    assert!(problems.is_empty(), "{problems}");
    assert_eq!(checked, INVALID_CASES.len());
    assert_eq!(
        err_lines,
        INVALID_CASES.len(),
        "one table entry per _err document"
    );
    // istio-api.md §4 row 12: 12/3/7/4 invalid documents (ServiceEntry/DR/WE/Telemetry).
    assert_eq!(INVALID_CASES.len(), 12 + 3 + 7 + 4);
}

// === the splitter itself ===

#[test]
fn splitter_keeps_file_positions_and_skips_commented_documents() {
    let text = "_err: 'a: Required value'\nkind: A\n---\n#_err: \"TODO\"\n#kind: B\n#---\n_err: x\nkind: C\n---\n";
    let docs = documents(text);
    assert_eq!(docs.len(), 2);
    assert_eq!(docs[0].err.as_deref(), Some("a: Required value"));
    assert_eq!(docs[0].lines, (2, 2));
    assert_eq!(docs[1].err.as_deref(), Some("x"));
    assert_eq!(docs[1].lines, (8, 8));
    // kind: C stays on line 8.
    assert_eq!(docs[1].text.lines().nth(7), Some("kind: C"));
    assert_eq!(
        normalize("spec.subsets[1].trafficPolicy.loadBalancer.warmup"),
        "subsets.trafficPolicy.loadBalancer.warmup"
    );
    assert!(is_p2(
        "DestinationRule",
        "spec.subsets[1].trafficPolicy.loadBalancer.warmup"
    ));
    assert!(!is_p2(
        "DestinationRule",
        "spec.trafficPolicy.loadBalancer.simple"
    ));
    assert!(!is_p2("Gateway", "spec.trafficPolicy.loadBalancer.warmup"));
}
