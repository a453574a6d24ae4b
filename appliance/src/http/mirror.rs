//! Request mirroring: a copy goes to the mirror cluster in the background and its response is
//! thrown away; the main request never waits for it (Envoy's shadowing, `-shadow` host).

use std::sync::Arc;

use http_body_util::BodyExt;
use rand::Rng;

use super::forward::{self, Head, Report, Source};
use crate::upstream::ClusterRt;

/// Sends a copy of the request to `cluster` for `pct` percent of requests. Streamed bodies
/// larger than the replay limit cannot be copied without slowing the main request; such
/// requests are not mirrored.
pub fn spawn(cluster: Arc<ClusterRt>, head: &Head, src: &Source, pct: f64) {
    if pct < 100.0 && rand::rng().random_range(0.0..100.0) >= pct {
        return;
    }
    let body = match src {
        Source::Empty => Source::Empty,
        Source::Buffered(b) => Source::Buffered(b.clone()),
        // A streamed body is sent once, to the route's destination only.
        Source::Stream(_) | Source::Tee(_) => return,
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
    };
    tokio::spawn(async move {
        let mut flags = super::errors::Flags::default();
        let mut report = Report::default();
        let no_retries = tenants::model::RetryPolicy {
            attempts: 0,
            per_try_timeout: None,
            retry_on: Default::default(),
        };
        let r = forward::send(
            &cluster,
            &copy,
            body,
            &no_retries,
            Some(std::time::Duration::from_secs(30)),
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
