//! Which outbound policy an egress group enforces for unregistered destinations: the group's
//! own setting, else a platform Sidecar (Istio's root-namespace default), else
//! `meshConfig.outboundTrafficPolicy`, else REGISTRY_ONLY; a tenant's Sidecar never opens it.

use tenants::model::OutboundPolicy::{self, AllowAny, RegistryOnly};
use tenants::{LoadOptions, SourceFile};

fn operator(mesh: &str, appliance: &str) -> String {
    format!(
        r#"apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {{name: appliance}}
spec:
  profile: empty
{mesh}  components:
    egressGateways:
    - name: egress-fixed
      label: {{istio: egress-fixed}}
      k8s: {{service: {{ports: [{{name: tls, port: 443, targetPort: 18443}}]}}}}
{appliance}---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {{name: team-pay}}
spec: {{hosts: ["api.pay.example"], gateways: [egress-fixed]}}
"#
    )
}

fn sidecar(mode: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: Sidecar\nmetadata: {{name: default}}\nspec:\n  outboundTrafficPolicy: {{mode: {mode}}}\n"
    )
}

/// The policy in force for `egress-fixed`, and the warnings.
fn policy(mesh: &str, appliance: &str, files: &[(&str, String)]) -> (OutboundPolicy, Vec<String>) {
    let mut all = vec![SourceFile {
        path: "gatehouse.yaml".into(),
        bytes: operator(mesh, appliance).into_bytes(),
    }];
    all.extend(files.iter().map(|(p, y)| SourceFile {
        path: (*p).into(),
        bytes: y.clone().into_bytes(),
    }));
    let out = tenants::build(&tenants::load(&all, &LoadOptions::default()), "test", None)
        .expect("builds");
    let errors: Vec<String> = out
        .diagnostics
        .iter()
        .filter(|d| d.severity == tenants::Severity::Error)
        .map(|d| d.to_string())
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    let warnings = out
        .diagnostics
        .iter()
        .filter(|d| d.severity == tenants::Severity::Warning)
        .map(|d| d.to_string())
        .collect();
    (out.snapshot.groups["egress-fixed"].outbound, warnings)
}

const MESH_ALLOW: &str = "  meshConfig:\n    outboundTrafficPolicy: {mode: ALLOW_ANY}\n";
const GROUP_REGISTRY: &str = "      appliance: {outboundTrafficPolicy: REGISTRY_ONLY}\n";
const GROUP_ALLOW: &str = "      appliance: {outboundTrafficPolicy: ALLOW_ANY}\n";

#[test]
fn registry_only_unless_the_platform_says_otherwise() {
    assert_eq!(policy("", "", &[]).0, RegistryOnly);
    assert_eq!(policy(MESH_ALLOW, "", &[]).0, AllowAny);
    assert_eq!(policy("", GROUP_ALLOW, &[]).0, AllowAny);
    let platform = [("platform/sidecar.yaml", sidecar("ALLOW_ANY"))];
    assert_eq!(policy("", "", &platform).0, AllowAny);
}

#[test]
fn the_most_specific_setting_wins() {
    // The group's own setting over a platform Sidecar and meshConfig.
    let platform = [("platform/sidecar.yaml", sidecar("ALLOW_ANY"))];
    assert_eq!(
        policy(MESH_ALLOW, GROUP_REGISTRY, &platform).0,
        RegistryOnly
    );
    // A platform Sidecar over meshConfig.
    let platform = [("platform/sidecar.yaml", sidecar("REGISTRY_ONLY"))];
    assert_eq!(policy(MESH_ALLOW, "", &platform).0, RegistryOnly);
}

#[test]
fn a_tenant_sidecar_does_not_open_the_egress_and_says_so() {
    let tenant = [("tenants/team-pay/sidecar.yaml", sidecar("ALLOW_ANY"))];
    let (p, warnings) = policy("", "", &tenant);
    assert_eq!(p, RegistryOnly);
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("tenants/team-pay/sidecar.yaml")
                && w.contains("does not open the egress gateway")),
        "{warnings:#?}"
    );
    // The platform's own Sidecar gets no such warning.
    let platform = [("platform/sidecar.yaml", sidecar("ALLOW_ANY"))];
    let (_, warnings) = policy("", "", &platform);
    assert!(
        !warnings.iter().any(|w| w.contains("does not open")),
        "{warnings:#?}"
    );
}
