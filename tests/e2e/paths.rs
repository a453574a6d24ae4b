//! `meshConfig.pathNormalization`: each setting changes what is routed and what the backend
//! sees, as Istio's integration test expects, applied by a reload.

use crate::harness::tools::Curl;
use crate::harness::{Backends, Gateway, Repo, free_port, platform, service, tenant, web_routes};

const RULES: &str = r#"  - match: [{uri: {prefix: /admin}}]
    directResponse: {status: 403, body: {string: admin only}}
  - route: [{destination: {host: app.team-a.internal}}]
"#;

fn gatehouse(port: u16, mode: Option<&str>) -> String {
    let mesh = mode.map_or(String::new(), |m| {
        format!("  meshConfig: {{pathNormalization: {{normalization: {m}}}}}\n")
    });
    platform(&[(80, port)], &tenant("team-a", &["web.example.com"], "")).replacen(
        "  profile: empty\n",
        &format!("  profile: empty\n{mesh}"),
        1,
    )
}

#[test]
fn path_normalization_follows_the_mesh_config() {
    let (port, app) = (free_port(), free_port());
    let be = Backends::new();
    be.http("app", app);
    let repo = Repo::new();
    repo.write("gatehouse.yaml", &gatehouse(port, None));
    repo.write(
        "tenants/team-a/web.yaml",
        &(web_routes(RULES) + &service("app", "app.team-a.internal", &[(app, "")])),
    );
    let creds = tempfile::tempdir().expect("tmp");
    let gw = Gateway::start(&repo, creds.path());
    // What answers a raw path, over HTTP/1.1 and HTTP/2, and the path the backend saw.
    let send = |raw: &str| -> (u16, String) {
        let mut seen = Vec::new();
        for h2 in [false, true] {
            let mut c =
                Curl::new(&format!("http://web.example.com:{port}{raw}")).arg("--path-as-is");
            if h2 {
                c = c.arg("--http2-prior-knowledge");
            }
            let r = c.run();
            let got = if r.status == 200 {
                (
                    200,
                    r.json()["path"].as_str().unwrap_or_default().to_string(),
                )
            } else {
                (r.status, r.body.clone())
            };
            seen.push(got);
        }
        assert_eq!(seen[0], seen[1], "{raw}: HTTP/1.1 and HTTP/2 differ");
        seen.swap_remove(0)
    };
    let admin = (403, "admin only".to_string());
    let app_saw = |p: &str| (200, p.to_string());

    // BASE, the default: dot segments go, slashes are neither merged nor decoded.
    assert_eq!(send("/x/../admin"), admin);
    assert_eq!(send("//admin"), app_saw("//admin"));
    assert_eq!(send("/%2Fadmin"), app_saw("/%2Fadmin"));
    // Escapes spelled out of escapes are undone to the end, not one level as Envoy does; a
    // path nested deeper than four levels is refused.
    assert_eq!(send("/x/%%32e%%32e/admin"), admin);
    let mut deep = "/x/%2e%2e/admin".to_string();
    for _ in 0..4 {
        deep = deep
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    format!("%{b:02X}")
                } else {
                    char::from(b).to_string()
                }
            })
            .collect();
    }
    assert_eq!(send(&deep).0, 400, "{deep}");

    let apply = |mode: &str| {
        repo.write("gatehouse.yaml", &gatehouse(port, Some(mode)));
        let (code, body) = gw.reload();
        assert_eq!(code, 200, "{mode}: {body}");
    };
    apply("MERGE_SLASHES");
    assert_eq!(send("//admin"), admin);
    assert_eq!(send("/a//b///c"), app_saw("/a/b/c"));
    assert_eq!(send("/%2Fadmin"), app_saw("/%2Fadmin"));

    apply("DECODE_AND_MERGE_SLASHES");
    assert_eq!(send("/%2Fadmin"), admin);
    assert_eq!(send("/%5cadmin"), admin);
    assert_eq!(send("/a%2Fb?q=%2F"), app_saw("/a/b?q=%2F"));

    apply("NONE");
    assert_eq!(send("/x/../admin"), app_saw("/x/../admin"));
    let warnings = gw.status()["platformWarnings"].to_string();
    assert!(
        warnings.contains("NONE routes on the path as sent"),
        "{warnings}"
    );

    // A value Istio does not have refuses the revision: the last setting keeps serving.
    repo.write("gatehouse.yaml", &gatehouse(port, Some("MERGE")));
    let (code, body) = gw.reload();
    assert_eq!(code, 409, "{body}");
    assert!(
        body.contains("unknown value \\\"MERGE\\\"; expected NONE, BASE, MERGE_SLASHES or DECODE_AND_MERGE_SLASHES"),
        "{body}"
    );
    assert_eq!(send("/x/../admin"), app_saw("/x/../admin"));
}
