//! Repository files → per-namespace objects, with every finding placed in its file.
//!
//! `gatehouse.yaml` and `platform/**.yaml` are the platform's (namespace `istio-system`);
//! `tenants/<t>/**.yaml` belong to tenant `<t>`. Files are read in path order and documents in
//! file order; that order stands in for Istio's creation-time order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use crate::diag::{Diagnostic, FieldPath, ObjectRef, Pos, Severity};
use crate::model::{
    self, Checker, DestinationRule, Finding, Gateway, IstioOperator, Meta, PLATFORM_NAMESPACE,
    ServiceEntry, Sidecar, Source, Telemetry, TenantDef, VirtualService, WorkloadEntry,
};
use crate::raw;
use crate::types::is_dns1123_label;
use crate::yaml::{self, Ctx, DeError, Document, Limits, Node};

/// How to load.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// DNS suffix for short names (`cluster.local`).
    pub domain: String,
    /// Per-file YAML bounds.
    pub limits: Limits,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            domain: "cluster.local".into(),
            limits: Limits::default(),
        }
    }
}

/// One file of the repository.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Repository-relative path with `/` separators.
    pub path: String,
    /// Contents.
    pub bytes: Vec<u8>,
}

/// Everything one namespace declares.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Objects {
    /// Gateways.
    pub gateways: Vec<Gateway>,
    /// VirtualServices.
    pub virtual_services: Vec<VirtualService>,
    /// DestinationRules.
    pub destination_rules: Vec<DestinationRule>,
    /// ServiceEntries.
    pub service_entries: Vec<ServiceEntry>,
    /// WorkloadEntries.
    pub workload_entries: Vec<WorkloadEntry>,
    /// Sidecars.
    pub sidecars: Vec<Sidecar>,
    /// Telemetries.
    pub telemetries: Vec<Telemetry>,
    /// IstioOperators (platform only).
    pub operators: Vec<IstioOperator>,
    /// Tenants (platform only).
    pub tenants: Vec<TenantDef>,
}

/// A namespace as loaded: its objects, findings and the files they came from.
#[derive(Debug, Clone, Default)]
pub struct Namespace {
    /// Tenant name or `istio-system`.
    pub name: String,
    /// Valid objects (objects with errors are dropped; the errors say why). Shared, so
    /// that serving it as a tenant's "last good" configuration copies nothing.
    pub objects: Arc<Objects>,
    /// Findings from parsing and per-object validation.
    pub diagnostics: Vec<Diagnostic>,
    /// The files of this namespace, with a digest of their content.
    pub files: BTreeMap<String, u64>,
}

impl Namespace {
    /// Whether any finding is an error.
    pub fn has_errors(&self) -> bool {
        crate::diag::has_errors(&self.diagnostics)
    }
}

/// A loaded repository.
#[derive(Debug, Default)]
pub struct Loaded {
    /// `istio-system`: gatehouse.yaml and platform/.
    pub platform: Namespace,
    /// Tenants by folder name.
    pub tenants: BTreeMap<String, Namespace>,
    /// File texts, to place later findings (parsed again only when one is reported).
    pub(crate) texts: HashMap<String, Arc<str>>,
    /// Documents parsed again for placing findings.
    parsed: Mutex<HashMap<String, Arc<Vec<Document>>>>,
    limits: Limits,
}

// === impl Loaded ===

impl Loaded {
    /// The parsed documents of `file`, parsed again on first use: the trees are not kept
    /// after loading (they cost far more memory than the text).
    fn docs(&self, file: &str) -> Option<Arc<Vec<Document>>> {
        let mut cache = self
            .parsed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(d) = cache.get(file) {
            return Some(d.clone());
        }
        let text = self.texts.get(file)?;
        let docs = Arc::new(yaml::parse_documents(text, &self.limits).ok()?);
        cache.insert(file.to_string(), docs.clone());
        Some(docs)
    }

    /// Places a finding about `meta` in its file.
    pub fn diagnostic(&self, meta: &Meta, kind: &str, f: Finding) -> Diagnostic {
        let pos = self
            .docs(&meta.source.file)
            .and_then(|docs| {
                docs.iter()
                    .find(|d| d.index == meta.source.doc)
                    .map(|d| d.root.pos_of(&f.path))
            })
            .map_or(
                Pos {
                    line: meta.source.line,
                    col: 1,
                },
                |p| p,
            );
        Diagnostic {
            severity: f.severity,
            file: meta.source.file.to_string(),
            pos,
            namespace: meta.namespace.clone(),
            object: Some(ObjectRef {
                kind: kind.to_string(),
                name: meta.name.clone(),
            }),
            field: f.path.to_string(),
            message: f.message,
        }
    }
}

/// Which namespace a repository path belongs to, or `None` for files gatehouse ignores.
pub fn namespace_of(path: &str) -> Option<Result<String, String>> {
    let yaml = path.ends_with(".yaml") || path.ends_with(".yml");
    if !yaml {
        return None;
    }
    if path == "gatehouse.yaml" || path == "gatehouse.yml" || path.starts_with("platform/") {
        return Some(Ok(PLATFORM_NAMESPACE.to_string()));
    }
    let rest = path.strip_prefix("tenants/")?;
    let (t, _) = rest.split_once('/')?;
    if is_dns1123_label(t) && t != PLATFORM_NAMESPACE {
        Some(Ok(t.to_string()))
    } else {
        Some(Err(t.to_string()))
    }
}

/// Loads a repository.
pub fn load(files: &[SourceFile], opts: &LoadOptions) -> Loaded {
    let mut files: Vec<&SourceFile> = files.iter().collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    let mut out = Loaded {
        limits: opts.limits,
        platform: Namespace {
            name: PLATFORM_NAMESPACE.into(),
            ..Namespace::default()
        },
        ..Loaded::default()
    };
    let mut order = 0usize;
    let regexes = model::RegexCache::default();
    for f in files {
        let ns = match namespace_of(&f.path) {
            None => continue,
            Some(Ok(ns)) => ns,
            Some(Err(bad)) => {
                out.platform.diagnostics.push(file_error(
                    &f.path,
                    Pos { line: 1, col: 1 },
                    PLATFORM_NAMESPACE,
                    format!("tenant folder name {bad:?} must be a DNS-1123 label other than istio-system"),
                ));
                continue;
            }
        };
        let target = if ns == PLATFORM_NAMESPACE {
            &mut out.platform
        } else {
            out.tenants.entry(ns.clone()).or_insert_with(|| Namespace {
                name: ns.clone(),
                ..Namespace::default()
            })
        };
        target.files.insert(f.path.clone(), digest(&f.bytes));
        let text = match std::str::from_utf8(&f.bytes) {
            Ok(t) => t,
            Err(e) => {
                target.diagnostics.push(file_error(
                    &f.path,
                    Pos { line: 1, col: 1 },
                    &ns,
                    format!(
                        "file is not UTF-8 (invalid byte at offset {})",
                        e.valid_up_to()
                    ),
                ));
                continue;
            }
        };
        let docs = match yaml::parse_documents(text, &opts.limits) {
            Ok(d) => d,
            Err(e) => {
                target
                    .diagnostics
                    .push(file_error(&f.path, e.pos, &ns, e.message));
                continue;
            }
        };
        let file: Arc<str> = Arc::from(f.path.as_str());
        for doc in &docs {
            let source = Source {
                file: file.clone(),
                doc: doc.index,
                line: doc.root.pos.line,
                order,
            };
            order += 1;
            load_document(
                target,
                &doc.root,
                source,
                &opts.domain,
                ns != PLATFORM_NAMESPACE,
                &regexes,
            );
        }
        out.texts.insert(f.path.clone(), Arc::from(text));
    }
    out
}

fn digest(bytes: &[u8]) -> u64 {
    // FNV-1a: a change detector, not a security boundary.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100_0000_01b3)
    })
}

fn file_error(file: &str, pos: Pos, ns: &str, message: String) -> Diagnostic {
    Diagnostic {
        severity: Severity::Error,
        file: file.to_string(),
        pos,
        namespace: ns.to_string(),
        object: None,
        field: String::new(),
        message,
    }
}

/// The kinds gatehouse loads, by `apiVersion` group and `kind`.
fn known_kind(api_version: &str, kind: &str) -> Result<(), String> {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let versions: &[&str] = match (group, kind) {
        (
            "networking.istio.io",
            "Gateway" | "VirtualService" | "DestinationRule" | "ServiceEntry" | "WorkloadEntry"
            | "Sidecar",
        ) => &["v1alpha3", "v1beta1", "v1"],
        ("telemetry.istio.io", "Telemetry") => &["v1alpha1", "v1"],
        ("install.istio.io", "IstioOperator") => &["v1alpha1"],
        ("gatehouse.dev", "Tenant") => &["v1"],
        (
            "networking.istio.io"
            | "security.istio.io"
            | "extensions.istio.io"
            | "telemetry.istio.io",
            _,
        ) => {
            return Err(format!("not supported yet: kind {kind} ({api_version})"));
        }
        _ => {
            return Err(format!(
                "{api_version}/{kind} is not a gatehouse manifest kind; expected Gateway, VirtualService, DestinationRule, ServiceEntry, WorkloadEntry, Sidecar, Telemetry, IstioOperator or Tenant"
            ));
        }
    };
    if versions.contains(&version) {
        Ok(())
    } else {
        Err(format!(
            "apiVersion {api_version:?} is not served for {kind}; use {group}/{}",
            versions.join(" or ")
        ))
    }
}

fn load_document(
    target: &mut Namespace,
    root: &Node,
    source: Source,
    domain: &str,
    tenant: bool,
    regexes: &model::RegexCache,
) {
    let file = source.file.to_string();
    let mk = |severity: Severity,
              path: &FieldPath,
              message: String,
              object: Option<ObjectRef>,
              ns: &str| Diagnostic {
        severity,
        file: file.clone(),
        pos: root.pos_of(path),
        namespace: ns.to_string(),
        object,
        field: path.to_string(),
        message,
    };
    let ns = target.name.clone();
    let api = root.get_str("apiVersion").unwrap_or_default().to_string();
    let kind = root.get_str("kind").unwrap_or_default().to_string();
    let name = root
        .get("metadata")
        .and_then(|m| m.get_str("name"))
        .unwrap_or_default()
        .to_string();
    let oref = (!kind.is_empty()).then(|| ObjectRef {
        kind: kind.clone(),
        name: name.clone(),
    });
    let root_path = FieldPath::root();
    if api.is_empty() || kind.is_empty() {
        let field = if api.is_empty() { "apiVersion" } else { "kind" };
        target.diagnostics.push(mk(
            Severity::Error,
            &root_path.key(field),
            format!("{field} is required"),
            oref,
            &ns,
        ));
        return;
    }
    if let Err(m) = known_kind(&api, &kind) {
        target
            .diagnostics
            .push(mk(Severity::Error, &root_path.key("kind"), m, oref, &ns));
        return;
    }
    if tenant && matches!(kind.as_str(), "IstioOperator" | "Tenant") {
        target.diagnostics.push(mk(
            Severity::Error,
            &root_path.key("kind"),
            format!("only the platform (gatehouse.yaml or platform/) may declare a {kind}"),
            oref,
            &ns,
        ));
        return;
    }
    let mut c = Checker::with_cache(&ns, domain, tenant, regexes.clone());
    let ctx = Ctx::default();
    let before = target.diagnostics.len();
    let parsed = parse_kind(
        &kind,
        root,
        &ctx,
        &mut c,
        &source,
        &ns,
        Arc::make_mut(&mut target.objects),
    );
    for u in ctx.take_unknown() {
        let hint = u
            .suggestion
            .map(|s| format!(" (did you mean {s:?}?)"))
            .unwrap_or_default();
        target.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: file.clone(),
            pos: u.pos,
            namespace: ns.clone(),
            object: oref.clone(),
            field: u.path.to_string(),
            message: format!("unknown field{hint}"),
        });
    }
    if let Err(e) = parsed {
        let path = e.path.clone().unwrap_or_default();
        target.diagnostics.push(Diagnostic {
            severity: Severity::Error,
            file: file.clone(),
            pos: e.pos.unwrap_or(root.pos),
            namespace: ns.clone(),
            object: oref.clone(),
            field: path.to_string(),
            message: e.message,
        });
    }
    for f in c.findings {
        target
            .diagnostics
            .push(mk(f.severity, &f.path, f.message, oref.clone(), &ns));
    }
    // An object with errors must not be served; drop what parse_kind pushed for it.
    if crate::diag::has_errors(&target.diagnostics[before..]) {
        remove_last(Arc::make_mut(&mut target.objects), &kind, source.order);
    }
}

fn remove_last(o: &mut Objects, kind: &str, order: usize) {
    macro_rules! drop_order {
        ($v:expr) => {
            $v.retain(|x| x.meta.source.order != order)
        };
    }
    match kind {
        "Gateway" => drop_order!(o.gateways),
        "VirtualService" => drop_order!(o.virtual_services),
        "DestinationRule" => drop_order!(o.destination_rules),
        "ServiceEntry" => drop_order!(o.service_entries),
        "WorkloadEntry" => drop_order!(o.workload_entries),
        "Sidecar" => drop_order!(o.sidecars),
        "Telemetry" => drop_order!(o.telemetries),
        "IstioOperator" => drop_order!(o.operators),
        "Tenant" => drop_order!(o.tenants),
        _ => {}
    }
}

fn meta_of(c: &mut Checker, m: Option<raw::Metadata>, source: &Source, ns: &str) -> Meta {
    let p = FieldPath::root().key("metadata");
    let m = m.unwrap_or_default();
    let name = m.name.clone().unwrap_or_default();
    if name.is_empty() {
        c.error(&p.key("name"), "metadata.name is required");
    } else if name.len() > 253 || !name.split('.').all(is_dns1123_label) {
        c.error(
            &p.key("name"),
            format!("name {name:?} must be a DNS-1123 subdomain"),
        );
    }
    if let Some(declared) = &m.namespace
        && declared != ns
    {
        let msg = if ns == PLATFORM_NAMESPACE {
            format!(
                "namespace {declared:?} does not match: platform files are in namespace {PLATFORM_NAMESPACE}"
            )
        } else {
            format!(
                "namespace {declared:?} does not match the tenant folder: files under tenants/{ns}/ are in namespace {ns:?} (a tenant cannot write into another tenant's namespace)"
            )
        };
        c.error(&p.key("namespace"), msg);
    }
    model::parse_labels(c, &p.key("labels"), &m.labels);
    for (f, v) in [
        ("generateName", &m.generate_name),
        ("uid", &m.uid),
        ("resourceVersion", &m.resource_version),
        ("generation", &m.generation),
        ("creationTimestamp", &m.creation_timestamp),
        ("deletionTimestamp", &m.deletion_timestamp),
        (
            "deletionGracePeriodSeconds",
            &m.deletion_grace_period_seconds,
        ),
        ("ownerReferences", &m.owner_references),
        ("finalizers", &m.finalizers),
        ("managedFields", &m.managed_fields),
        ("selfLink", &m.self_link),
    ] {
        c.mesh_only(&p.key(f), v.is_some(), "Kubernetes object metadata");
    }
    if m.annotations.contains_key("istio.io/dry-run") {
        c.error(
            &p.key("annotations").key("istio.io/dry-run"),
            "istio.io/dry-run is only allowed on AuthorizationPolicy",
        );
    }
    Meta {
        name,
        namespace: ns.to_string(),
        labels: m.labels,
        source: source.clone(),
    }
}

fn object<'a, S: serde::Deserialize<'a>>(
    root: &'a Node,
    ctx: &'a Ctx,
) -> Result<raw::Object<S>, DeError> {
    yaml::from_node(root, FieldPath::root(), ctx)
}

fn parse_kind(
    kind: &str,
    root: &Node,
    ctx: &Ctx,
    c: &mut Checker,
    source: &Source,
    ns: &str,
    out: &mut Objects,
) -> Result<(), DeError> {
    macro_rules! load_kind {
        ($spec:ty, $list:expr, $parse:expr) => {{
            let o: raw::Object<$spec> = object(root, ctx)?;
            c.mesh_only(
                &FieldPath::root().key("status"),
                o.status.is_some(),
                "status is written by Kubernetes controllers",
            );
            let meta = meta_of(c, o.metadata, source, ns);
            #[allow(clippy::redundant_closure_call)]
            if let Some(v) = ($parse)(c, meta, &o.spec) {
                $list.push(v);
            }
        }};
    }
    match kind {
        "Gateway" => load_kind!(
            raw::GatewaySpec,
            out.gateways,
            |c: &mut Checker, m, s| Some(Gateway::parse(c, m, s))
        ),
        "VirtualService" => load_kind!(
            raw::VirtualServiceSpec,
            out.virtual_services,
            |c: &mut Checker, m, s| Some(VirtualService::parse(c, m, s))
        ),
        "DestinationRule" => load_kind!(
            raw::DestinationRuleSpec,
            out.destination_rules,
            |c: &mut Checker, m, s| Some(DestinationRule::parse(c, m, s))
        ),
        "ServiceEntry" => load_kind!(
            raw::ServiceEntrySpec,
            out.service_entries,
            |c: &mut Checker, m, s| Some(ServiceEntry::parse(c, m, s))
        ),
        "WorkloadEntry" => load_kind!(
            raw::WorkloadEntrySpec,
            out.workload_entries,
            |c: &mut Checker, m, s| WorkloadEntry::parse(c, m, s)
        ),
        "Sidecar" => load_kind!(
            raw::SidecarSpec,
            out.sidecars,
            |c: &mut Checker, m, s| Some(Sidecar::parse(c, m, s))
        ),
        "Telemetry" => load_kind!(
            raw::TelemetrySpec,
            out.telemetries,
            |c: &mut Checker, m, s| Some(Telemetry::parse(c, m, s))
        ),
        "IstioOperator" => load_kind!(
            raw::IstioOperatorSpec,
            out.operators,
            |c: &mut Checker, m, s| Some(IstioOperator::parse(c, m, s))
        ),
        "Tenant" => load_kind!(raw::TenantSpec, out.tenants, |c: &mut Checker, m, s| Some(
            TenantDef::parse(c, m, s)
        )),
        _ => {}
    }
    Ok(())
}

/// Loads one document on its own, outside tenant policy (for Istio's own test corpus):
/// the namespace is `metadata.namespace` or `default`.
pub fn load_standalone(text: &str, file: &str) -> Namespace {
    let mut ns = Namespace::default();
    let docs = match yaml::parse_documents(text, &Limits::default()) {
        Ok(d) => d,
        Err(e) => {
            ns.diagnostics
                .push(file_error(file, e.pos, "default", e.message));
            return ns;
        }
    };
    for (i, d) in docs.iter().enumerate() {
        let name = d
            .root
            .get("metadata")
            .and_then(|m| m.get_str("namespace"))
            .unwrap_or("default")
            .to_string();
        ns.name = name;
        let source = Source {
            file: Arc::from(file),
            doc: d.index,
            line: d.root.pos.line,
            order: i,
        };
        load_document(
            &mut ns,
            &d.root,
            source,
            "cluster.local",
            false,
            &model::RegexCache::default(),
        );
    }
    ns
}
