use std::sync::Arc;

use tenants::model::{Credential, ServerTlsMode, TlsVersion};
use tenants::snapshot::{
    ChainAction, CredentialRef, FilterChain, Listener, ListenerKind, RouteTable, TcpProxy,
    TlsContext,
};

use super::endpoint::owner;
use super::serves_https;

fn listener(kind: ListenerKind) -> Listener {
    Listener {
        name: "127.0.0.1_8443".into(),
        address: "127.0.0.1:8443".parse().expect("addr"),
        gateway_port: 443,
        kind,
    }
}

fn chain(action: ChainAction) -> Arc<FilterChain> {
    Arc::new(FilterChain {
        name: "c".into(),
        server_names: Vec::new(),
        tenant: "t".into(),
        action,
    })
}

fn tls() -> Arc<TlsContext> {
    Arc::new(TlsContext {
        mode: ServerTlsMode::Simple,
        credential: CredentialRef {
            namespace: "t".into(),
            source: Credential::Name("cert".into()),
        },
        second_credential: None,
        ca_credential: None,
        subject_alt_names: Vec::new(),
        pins: Default::default(),
        min_version: TlsVersion::TlsAuto,
        max_version: TlsVersion::TlsAuto,
        cipher_suites: Vec::new(),
    })
}

fn tcp() -> Arc<TcpProxy> {
    Arc::new(TcpProxy {
        name: "p".into(),
        tenant: "t".into(),
        clusters: Vec::new(),
        by_address: Vec::new(),
    })
}

#[test]
fn only_listeners_terminating_tls_for_http_serve_http3() {
    let https = ChainAction::TerminateHttp {
        tls: tls(),
        routes: Arc::new(RouteTable::default()),
    };
    let passthrough = ChainAction::Passthrough(tcp());
    let tls_tcp = ChainAction::TerminateTcp {
        tls: tls(),
        tcp: tcp(),
    };
    assert!(serves_https(&listener(ListenerKind::Tls(vec![
        chain(passthrough.clone()),
        chain(https),
    ]))));
    assert!(!serves_https(&listener(ListenerKind::Tls(vec![
        chain(passthrough),
        chain(tls_tcp),
    ]))));
    assert!(!serves_https(&listener(ListenerKind::Http(Arc::new(
        RouteTable::default()
    )))));
    assert!(!serves_https(&listener(ListenerKind::Tcp(tcp()))));
}

#[test]
fn each_address_has_exactly_one_owning_worker() {
    for workers in 1..=4 {
        for port in [443u16, 8443, 18443, 65535] {
            let addr = format!("127.0.0.1:{port}").parse().expect("addr");
            let owners = (0..workers)
                .filter(|&id| owner(addr, workers) == id)
                .count();
            assert_eq!(owners, 1, "port {port}, {workers} workers");
        }
    }
    // No workers counted yet: worker 0 owns everything rather than no one.
    assert_eq!(owner("127.0.0.1:8443".parse().expect("addr"), 0), 0);
}
