//! Request mirroring: a copy goes to the mirror cluster in the background and its response is
//! thrown away; the main request never waits for it (Envoy's shadowing, `-shadow` host).

use std::sync::Arc;

use http_body_util::BodyExt;
use rand::Rng;

use super::forward::{self, Head, Report, Source};
use crate::upstream::ClusterRt;

/// Sends a copy of the request to `cluster` for `pct` percent of requests. A body of unknown
/// length goes once the main request has read it all (`tee::Tee::whole`), if it fit the
/// 64 KiB copy; a longer one, or one of a known length over 64 KiB, cannot be copied without
/// slowing the main request, and such requests are not mirrored.
pub fn spawn(cluster: Arc<ClusterRt>, head: &Head, src: &Source, pct: f64) {
    if pct < 100.0 && rand::rng().random_range(0.0..100.0) >= pct {
        return;
    }
    let (body, later) = match src {
        Source::Empty => (Some(Source::Empty), None),
        Source::Buffered(b) => (Some(Source::Buffered(b.clone())), None),
        // Sent once the main request has read it all (if it fits the copy).
        Source::Tee(t) => (None, Some(t.whole())),
        // Longer than the copy could hold: sent once, to the route's destination only.
        Source::Stream(_) => return,
    };
    let (host, port) = super::rewrite::split_authority(head.authority());
    let authority = match port {
        Some(p) => format!("{host}-shadow:{p}"),
        None => format!("{host}-shadow"),
    };
    let Ok(authority) = http::HeaderValue::from_str(&authority) else {
        return;
    };
    let copy = Head {
        method: head.method.clone(),
        path: head.path.clone(),
        authority,
        headers: head.headers.clone(),
        downstream: head.downstream,
        grpc: head.grpc,
        via: head.via,
    };
    tokio::spawn(async move {
        let body = match (body, later) {
            (Some(b), _) => b,
            (None, Some(whole)) => match whole.await {
                Some(b) => Source::Buffered(b),
                None => return,
            },
            (None, None) => return,
        };
        let mut flags = super::errors::Flags::default();
        let mut report = Report::default();
        let no_retries = tenants::model::RetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            retry_on: Default::default(),
            backoff: None,
            ignore_previous_hosts: None,
        };
        let r = forward::send(
            &cluster,
            &copy,
            body,
            &no_retries,
            &super::deadline::Timeouts {
                route: Some(std::time::Duration::from_secs(30)),
                per_try: None,
                end: Some(super::deadline::RequestEnd::now()),
                cut: None,
            },
            None,
            &mut flags,
            &mut report,
        )
        .await;
        if let Ok(resp) = r {
            let _ = resp.into_body().collect().await;
        }
    });
}
