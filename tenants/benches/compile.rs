//! Compiles 10,000 VirtualServices across 100 tenants and prints time and peak memory.
//! Run: `cargo bench -p tenants --bench compile` (release profile).

#![allow(clippy::print_stdout)]

use std::fmt::Write as _;
use std::time::Instant;

use tenants::{LoadOptions, SourceFile};

/// Counts heap bytes, so the table can say what the data costs apart from RSS.
#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

fn live_mb() -> f64 {
    let s = GLOBAL.stats();
    (s.bytes_allocated as f64 - s.bytes_deallocated as f64) / 1e6
}

const TENANTS: usize = 100;
const VS_PER_TENANT: usize = 100;

fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn repo() -> Vec<SourceFile> {
    let mut files = Vec::new();
    let mut platform = String::from(
        "apiVersion: install.istio.io/v1alpha1\nkind: IstioOperator\nmetadata: {name: appliance}\nspec:\n  components:\n    ingressGateways:\n    - name: public-gw\n      label: {istio: public-gw}\n      k8s: {service: {loadBalancerIP: 127.0.0.1, ports: [{name: http, port: 80, targetPort: 18080}]}}\n",
    );
    for t in 0..TENANTS {
        let _ = write!(
            platform,
            "---\napiVersion: gatehouse.dev/v1\nkind: Tenant\nmetadata: {{name: t{t}}}\nspec:\n  hosts: [\"*.t{t}.example.com\"]\n  gateways: [public-gw]\n"
        );
    }
    files.push(SourceFile {
        path: "gatehouse.yaml".into(),
        bytes: platform.into_bytes(),
    });
    for t in 0..TENANTS {
        let mut base = format!(
            "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: gw}}\nspec:\n  selector: {{istio: public-gw}}\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [\"*.t{t}.example.com\"]\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\nmetadata: {{name: svc}}\nspec:\n  hosts: [svc.t{t}.internal]\n  ports: [{{number: 80, name: http, protocol: HTTP}}]\n  resolution: STATIC\n  endpoints:\n  - {{address: 10.0.0.1, labels: {{version: v1}}}}\n  - {{address: 10.0.0.2, labels: {{version: v2}}}}\n---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: svc}}\nspec:\n  host: svc.t{t}.internal\n  subsets: [{{name: v1, labels: {{version: v1}}}}, {{name: v2, labels: {{version: v2}}}}]\n"
        );
        for v in 0..VS_PER_TENANT {
            let _ = write!(
                base,
                "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs{v}}}\nspec:\n  hosts: [\"h{v}.t{t}.example.com\"]\n  gateways: [gw]\n  http:\n  - match: [{{uri: {{prefix: /api}}}}, {{headers: {{x-canary: {{exact: \"1\"}}}}}}]\n    route:\n    - {{destination: {{host: svc.t{t}.internal, subset: v2}}, weight: 70}}\n    - {{destination: {{host: svc.t{t}.internal, subset: v1}}, weight: 30}}\n    retries: {{attempts: 2, retryOn: 5xx}}\n  - match: [{{uri: {{regex: \"/items/[0-9]+\"}}}}]\n    rewrite: {{uri: /item}}\n    route: [{{destination: {{host: svc.t{t}.internal}}}}]\n  - route: [{{destination: {{host: svc.t{t}.internal}}}}]\n"
            );
        }
        files.push(SourceFile {
            path: format!("tenants/t{t}/all.yaml"),
            bytes: base.into_bytes(),
        });
    }
    files
}

fn main() {
    let files = repo();
    let bytes: usize = files.iter().map(|f| f.bytes.len()).sum();
    let rss_before = peak_rss_kb();
    let t0 = Instant::now();
    let loaded = tenants::load(&files, &LoadOptions::default());
    let t_load = t0.elapsed();
    let t1 = Instant::now();
    let out =
        tenants::build(&loaded, "bench", None).unwrap_or_else(|e| panic!("build failed: {e}"));
    let t_build = t1.elapsed();
    let live = live_mb();
    let errors = out.diagnostics.iter().filter(|d| d.is_error()).count();
    assert_eq!(
        errors,
        0,
        "benchmark repository has errors: {:?}",
        out.diagnostics.first()
    );
    let routes: usize = out
        .snapshot
        .groups
        .values()
        .flat_map(|g| g.listeners.iter())
        .map(|l| match &l.kind {
            tenants::snapshot::ListenerKind::Http(t) => {
                t.vhosts.iter().map(|v| v.routes.len()).sum::<usize>()
            }
            _ => 0,
        })
        .sum();
    let peak = peak_rss_kb();
    println!(
        "| input | virtual services | routes | load (parse+validate) | build (policy+compile) | total | peak RSS | live heap after |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    println!(
        "| {:.1} MB YAML, {} tenants | {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} MB | {:.0} MB |",
        bytes as f64 / 1e6,
        TENANTS,
        TENANTS * VS_PER_TENANT,
        routes,
        t_load.as_secs_f64() * 1e3,
        t_build.as_secs_f64() * 1e3,
        (t_load + t_build).as_secs_f64() * 1e3,
        peak as f64 / 1024.0,
        live
    );
    let _ = rss_before;
}
