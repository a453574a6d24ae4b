//! The validator: a tenant file with arbitrary content is loaded beside a fixed platform and
//! built; the result is a snapshot or diagnostics, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

const PLATFORM: &str = "apiVersion: install.istio.io/v1alpha1
kind: IstioOperator
metadata: {name: appliance}
spec:
  components:
    ingressGateways:
    - name: public-gw
      label: {istio: public-gw}
      k8s: {service: {ports: [{name: http, port: 80, targetPort: 18080}, {name: https, port: 443, targetPort: 18443}]}}
---
apiVersion: gatehouse.dev/v1
kind: Tenant
metadata: {name: team-a}
spec:
  hosts: [\"*.example.com\"]
  gateways: [public-gw]
  tcpPorts: [31400]
";

fuzz_target!(|data: &[u8]| {
    let files = vec![
        tenants::SourceFile { path: "gatehouse.yaml".into(), bytes: PLATFORM.as_bytes().to_vec() },
        tenants::SourceFile { path: "tenants/team-a/fuzz.yaml".into(), bytes: data.to_vec() },
    ];
    let loaded = tenants::load(&files, &tenants::LoadOptions::default());
    if let Ok(out) = tenants::build(&loaded, "fuzz", None) {
        for d in &out.diagnostics {
            let _ = d.to_string();
        }
        let _ = serde_json::to_string(&out.snapshot);
    }
});
