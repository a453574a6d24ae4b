//! Composition on hand-made commits (the git side is covered by the source and e2e tests).

use super::*;

fn platform(tenants: &[&str]) -> String {
    let mut s = String::from(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: appliance}\nspec:\n  profile: empty\n  components:\n    ingressGateways:\n    - name: public-gw\n      label: {istio: public-gw}\n      k8s:\n        service:\n          loadBalancerIP: 127.0.0.1\n          ports:\n          - {name: http, port: 80, targetPort: 18080}\n",
    );
    for t in tenants {
        s.push_str(&format!(
            "---\napiVersion: gatehouse.dev/v1\nkind: Tenant\nmetadata: {{name: {t}}}\nspec:\n  hosts: [\"{t}.example.com\", \"shared.example.com\"]\n  gateways: [public-gw]\n"
        ));
    }
    s
}

fn tenant_doc(t: &str, host: &str, prefix: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: web}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"{host}\"]\n---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {t}}}\nspec:\n  hosts: [\"{host}\"]\n  gateways: [web]\n  http:\n  - match: [{{uri: {{prefix: {prefix}}}}}]\n    directResponse: {{status: 200}}\n"
    )
}

fn file(path: &str, text: &str) -> SourceFile {
    SourceFile {
        path: path.into(),
        bytes: text.as_bytes().to_vec(),
    }
}

fn parts(commit: &str, plat: &str, tenants: &[(&str, &str)]) -> Parts {
    let mut p = Parts {
        commit: commit.into(),
        platform_id: format!("p-{}", plat.len()),
        platform: vec![file("gatehouse.yaml", plat)],
        ..Parts::default()
    };
    for (t, text) in tenants {
        p.tenant_trees
            .insert((*t).into(), format!("tree-{t}-{}", text.len()));
        p.tenants.insert(
            (*t).into(),
            vec![file(&format!("tenants/{t}/all.yaml"), text)],
        );
    }
    p
}

fn served(c: &Composition) -> Served {
    Served {
        manifest: Manifest {
            version: 1,
            id: "000001-x".into(),
            seq: 1,
            revision: c.revision.clone(),
            created: String::new(),
            reference: "branch main".into(),
            platform: c.platform_id.clone(),
            tenants: c.entries(),
        },
        files: c.files.clone(),
    }
}

fn routes_of(c: &Composition, tenant: &str) -> Vec<String> {
    c.snapshot
        .groups
        .values()
        .flat_map(|g| g.listeners.iter())
        .filter_map(|l| match &l.kind {
            tenants::snapshot::ListenerKind::Http(t) => Some(t.clone()),
            _ => None,
        })
        .flat_map(|t| t.vhosts.clone())
        .filter(|v| &*v.tenant == tenant)
        .flat_map(|v| v.routes.into_iter().map(|r| r.name.to_string()))
        .collect()
}

#[test]
fn a_broken_tenant_keeps_its_last_good_files_while_the_other_moves_on() {
    let plat = platform(&["team-a", "team-b"]);
    let c1 = parts(
        "c1",
        &plat,
        &[
            ("team-a", &tenant_doc("team-a", "team-a.example.com", "/a")),
            ("team-b", &tenant_doc("team-b", "team-b.example.com", "/b")),
        ],
    );
    let first = compose(&c1, None, &BTreeSet::new()).expect("first");
    assert!(
        first
            .tenants
            .values()
            .all(|o| o.state == TenantState::Applied)
    );
    let s1 = served(&first);

    let broken_b = "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: b}\nspec:\n  hosts: [\"team-b.example.com\"]\n  gateways: [web]\n  http:\n  - route:\n    - destnation: {host: x}\n";
    let mut a2 = tenant_doc("team-a", "team-a.example.com", "/a");
    a2.push_str("  - match: [{uri: {prefix: /new}}]\n    directResponse: {status: 201}\n");
    let c2 = parts("c2", &plat, &[("team-a", &a2), ("team-b", broken_b)]);
    let second = compose(&c2, Some(&s1), &BTreeSet::new()).expect("second");
    let a = &second.tenants["team-a"];
    assert_eq!(a.state, TenantState::Applied);
    assert_eq!(a.entry.as_ref().map(|e| e.revision.as_str()), Some("c2"));
    let b = &second.tenants["team-b"];
    assert_eq!(b.state, TenantState::LastGood);
    assert_eq!(b.entry.as_ref().map(|e| e.revision.as_str()), Some("c1"));
    let err = b
        .diagnostics
        .iter()
        .find(|d| d.is_error())
        .expect("b's error");
    assert_eq!(err.file, "tenants/team-b/all.yaml");
    assert!(err.pos.line >= 9, "{err}");
    assert_eq!(routes_of(&second, "team-a").len(), 2, "a's new route is in");
    assert_eq!(routes_of(&second, "team-b").len(), 1, "b keeps its route");
    let b_files: Vec<&SourceFile> = second
        .files
        .iter()
        .filter(|f| f.path.starts_with("tenants/team-b/"))
        .collect();
    assert_eq!(b_files.len(), 1);
    assert_eq!(
        b_files[0].bytes, s1.files[2].bytes,
        "b's served bytes, not the broken ones"
    );
}

#[test]
fn a_broken_platform_refuses_the_whole_commit() {
    let c = parts(
        "c1",
        "apiVersion: gatehouse.dev/v1\nkind: Tenant\nmetadata: {name: team-a}\nspec:\n  hostz: []\n",
        &[],
    );
    match compose(&c, None, &BTreeSet::new()) {
        Err(ComposeError::Platform(d)) => {
            assert!(d.iter().any(|d| d.file == "gatehouse.yaml" && d.is_error()));
        }
        other => panic!("expected a platform refusal, got {other:?}"),
    }
}

#[test]
fn an_emptied_folder_is_not_pruned_until_the_tenant_is_deregistered() {
    let plat = platform(&["team-a", "team-b"]);
    let c1 = parts(
        "c1",
        &plat,
        &[
            ("team-a", &tenant_doc("team-a", "team-a.example.com", "/a")),
            ("team-b", &tenant_doc("team-b", "team-b.example.com", "/b")),
        ],
    );
    let s1 = served(&compose(&c1, None, &BTreeSet::new()).expect("c1"));
    let c2 = parts(
        "c2",
        &plat,
        &[("team-a", &tenant_doc("team-a", "team-a.example.com", "/a"))],
    );
    let out = compose(&c2, Some(&s1), &BTreeSet::new()).expect("c2");
    let b = &out.tenants["team-b"];
    assert_eq!(b.state, TenantState::LastGood);
    assert!(b.diagnostics[0].message.contains("still registered"));
    assert_eq!(routes_of(&out, "team-b").len(), 1);

    let c3 = parts(
        "c3",
        &platform(&["team-a"]),
        &[("team-a", &tenant_doc("team-a", "team-a.example.com", "/a"))],
    );
    let out = compose(&c3, Some(&s1), &BTreeSet::new()).expect("c3");
    assert!(!out.tenants.contains_key("team-b") || out.tenants["team-b"].entry.is_none());
    assert!(
        out.files
            .iter()
            .all(|f| !f.path.starts_with("tenants/team-b/"))
    );
}

#[test]
fn a_newcomer_claiming_an_incumbents_host_is_refused() {
    let plat = platform(&["team-a", "team-b"]);
    let c1 = parts(
        "c1",
        &plat,
        &[("team-a", &tenant_doc("team-a", "shared.example.com", "/a"))],
    );
    let s1 = served(&compose(&c1, None, &BTreeSet::new()).expect("c1"));
    let c2 = parts(
        "c2",
        &plat,
        &[
            ("team-a", &tenant_doc("team-a", "shared.example.com", "/a")),
            ("team-b", &tenant_doc("team-b", "shared.example.com", "/b")),
        ],
    );
    let out = compose(&c2, Some(&s1), &BTreeSet::new()).expect("c2");
    assert_eq!(out.tenants["team-a"].state, TenantState::Applied);
    assert_ne!(out.tenants["team-b"].state, TenantState::Applied);
    assert!(
        out.tenants["team-b"]
            .diagnostics
            .iter()
            .any(Diagnostic::is_error)
    );
}

#[test]
fn suspended_tenants_stay_at_their_served_files() {
    let plat = platform(&["team-a"]);
    let c1 = parts(
        "c1",
        &plat,
        &[("team-a", &tenant_doc("team-a", "team-a.example.com", "/a"))],
    );
    let s1 = served(&compose(&c1, None, &BTreeSet::new()).expect("c1"));
    let c2 = parts(
        "c2",
        &plat,
        &[(
            "team-a",
            &tenant_doc("team-a", "team-a.example.com", "/changed"),
        )],
    );
    let out = compose(&c2, Some(&s1), &BTreeSet::from(["team-a".to_string()])).expect("c2");
    assert_eq!(out.tenants["team-a"].state, TenantState::Suspended);
    assert!(out.same_as(&s1.manifest) || out.platform_id != s1.manifest.platform);
    assert_eq!(out.entries()["team-a"].revision, "c1");
}
