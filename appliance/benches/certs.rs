//! Memory per loaded ECDSA certificate: loads 10,000 credential folders through the
//! credential store and prints heap and RSS per certificate.
//! Run: `cargo bench -p appliance --bench certs`.

#![allow(clippy::print_stdout)]

use std::sync::Arc;

use appliance::credentials::Store;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tenants::model::Credential;
use tenants::snapshot::CredentialRef;

#[global_allocator]
static GLOBAL: &stats_alloc::StatsAlloc<std::alloc::System> = &stats_alloc::INSTRUMENTED_SYSTEM;

const N: usize = 10_000;

fn live() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

fn rss_kb() -> i64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn main() {
    let dir = std::env::temp_dir().join(format!("gatehouse-certs-bench-{}", std::process::id()));
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(p, KeyPair::generate().expect("key")).expect("ca");
    for i in 0..N {
        let host = format!("h{i}.example.com");
        let key = KeyPair::generate().expect("key");
        let cert = CertificateParams::new(vec![host])
            .expect("params")
            .signed_by(&key, &ca)
            .expect("sign");
        let d = dir.join("team-a").join(format!("c{i}"));
        std::fs::create_dir_all(&d).expect("mkdir");
        std::fs::write(d.join("tls.crt"), format!("{}{}", cert.pem(), ca.pem())).expect("crt");
        std::fs::write(d.join("tls.key"), key.serialize_pem()).expect("key");
    }
    let store = Store::new(
        dir.clone(),
        Arc::new(rustls::crypto::aws_lc_rs::default_provider()),
    );
    let (heap0, rss0) = (live(), rss_kb());
    let t = std::time::Instant::now();
    let mut held = Vec::with_capacity(N);
    for i in 0..N {
        let r = CredentialRef {
            namespace: "team-a".into(),
            source: Credential::Name(format!("c{i}")),
        };
        held.push(store.get(&r, None, true).expect("credential"));
    }
    let took = t.elapsed();
    let (heap1, rss1) = (live(), rss_kb());
    let serving = held.iter().filter(|c| c.key.load().is_some()).count();
    println!(
        "| certificates (ECDSA P-256 leaf + CA chain) | load time | heap per certificate | RSS per certificate |"
    );
    println!("|---|---|---|---|");
    println!(
        "| {serving} of {N} serving | {:.2} s | {:.1} KB | {:.1} KB |",
        took.as_secs_f64(),
        (heap1 - heap0) as f64 / N as f64 / 1024.0,
        (rss1 - rss0) as f64 / N as f64
    );
    let _ = std::fs::remove_dir_all(&dir);
}
