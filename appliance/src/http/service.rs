//! The request path, phase by phase (ARCHITECTURE.md, `http/`):
//! route → tenant limits → local answers (CORS preflight, faults, redirect, direct) →
//! upstream request (rewrites, headers) → forward with retries → response headers → log.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::uri::PathAndQuery;
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use rand::Rng;
use tenants::find::{Decision, RequestView, find};
use tenants::model::{Abort, HashKey, LoadBalancer, PLATFORM_NAMESPACE};
use tenants::snapshot::{ChainAction, ListenerKind, Route, RouteAction, RouteTable, VirtualHost};

use super::body::{self, Body};
use super::errors::{self, Flag, ProxyError, local, local_grpc};
use super::forward::{self, Head, Report, Source};
use super::guard::Framing;
use super::headers::ReqHeaders;
use super::headers::Upgrade;
use super::layout::Aligned;
use super::observe::{Counted, Finish, Meter, Observed};
use super::record::{LogFields, Record, Unanswered};
use super::tee::Tee;
use super::vars::Vars;
use super::{cors, deadline, early, fault, headers, mirror, rewrite, websocket};
use crate::quota::ConnTenant;
use crate::runtime::{GroupRt, Runtime};
use crate::shared::Shared;
use crate::upstream::lb::hash_bytes;
use crate::upstream::proxy_protocol::Via;

/// Bodies up to this size are buffered so that a retry or a mirror can resend them.
const REPLAY_LIMIT: u64 = 64 * 1024;

/// What a connection knows about itself.
pub struct ConnInfo {
    /// The group the listener belongs to.
    pub group: Arc<str>,
    /// The listener's bind address.
    pub listener: SocketAddr,
    /// The connection's own local address (the bind address unless that is a wildcard).
    pub local: SocketAddr,
    /// The client.
    pub peer: SocketAddr,
    /// The client's address as `x-forwarded-for` gives it, rendered once per connection.
    pub peer_ip: HeaderValue,
    /// Whether TLS was terminated.
    pub tls: bool,
    /// SNI of the TLS connection.
    pub sni: Option<Box<str>>,
    /// The terminating chain's name.
    pub chain: Option<Box<str>>,
    /// The `x-forwarded-client-cert` value of the client certificate the connection
    /// presented (see [`xfcc`](super::xfcc)).
    pub client_cert: Option<HeaderValue>,
    /// Process state.
    pub shared: Arc<Shared>,
    /// HTTP/1 framing findings of the connection's [`guard`](super::guard).
    pub framing: Arc<Framing>,
    /// The tenant a plain-HTTP connection counts against (TLS connections are counted by
    /// their filter chain's tenant when accepted).
    pub tenant: ConnTenant,
    /// Told when a route timeout cut a response off: an HTTP/1.1 connection is closed then
    /// (Envoy's reset), even if its client stopped reading and its writer waits.
    pub cut: tokio::sync::Notify,
}

fn protocol(v: Version) -> &'static str {
    match v {
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_11 => "HTTP/1.1",
        Version::HTTP_2 => "HTTP/2",
        Version::HTTP_3 => "HTTP/3",
        _ => "HTTP/0.9",
    }
}

/// The one request path for every protocol (hyper's HTTP/1.1 and HTTP/2, h3's HTTP/3):
/// never fails; every error becomes a response, and every request is recorded (metrics
/// always, the access log when the tenant's Telemetry asks) when its response ends.
///
/// The request stays where its connection put it (in the connection's future, for HTTP/1.1) and
/// is worked on through `req`: moved down the path by value, its 240 bytes were copied into
/// each future on the way (about 27 of the 206 L1d write misses per request in
/// `CACHE_SIM=1 bench/instructions.sh`). Its headers and body are taken from it when the
/// upstream request is made; what is left serves only the log.
pub async fn handle(
    req: &mut Request<Body>,
    conn: Arc<ConnInfo>,
) -> Result<Response<Body>, Infallible> {
    let started = Instant::now();
    let rt = conn.shared.runtime.load_full();
    let group = rt.groups.get(&*conn.group);
    let grpc = req
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| headers::is_grpc(v.as_bytes()));
    // What only a log line shows is kept only where a tenant of the group logs: three header
    // lookups and a box per request otherwise.
    let log = group.filter(|g| g.logging).map(|g| {
        Box::new(LogFields {
            method: Some(req.method().clone()),
            path: req.uri().path_and_query().cloned(),
            user_agent: req.headers().get(header::USER_AGENT).cloned(),
            xff: req.headers().get(&headers::X_FORWARDED_FOR).cloned(),
            request_id: req.headers().get(&headers::X_REQUEST_ID).cloned(),
            // Custom log formats may name any request header.
            captured: g.log_headers.then(|| req.headers().clone()),
            authority: None,
        })
    });
    let head = req.method() == Method::HEAD;
    let version = req.version();
    // A request without a body (most) needs neither the byte counter nor its wrapper.
    let meter = (!req.body().is_end_stream()).then(|| Arc::new(Meter::default()));
    let mut unanswered = Unanswered::new(
        Record {
            protocol: protocol(version),
            grpc,
            log,
            ..Record::default()
        },
        &conn,
        started,
        meter.clone(),
    );
    let rec = unanswered.rec();
    let mut resp =
        if matches!(version, Version::HTTP_10 | Version::HTTP_11) && conn.framing.refuse_next() {
            ambiguous_framing(req, &conn)
        } else if early::refused(req) {
            early::too_early()
        } else {
            if let Some(m) = &meter {
                let b = std::mem::replace(req.body_mut(), body::empty());
                *req.body_mut() = body::boxed(Counted::new(b, m.clone()));
            }
            let answer = proxy(req, &conn, &rt, group, rec, Aligned(grpc), started).await;
            match answer {
                Ok(r) => r,
                Err(e) => {
                    let (status, flag, text) = e.parts();
                    if let Some(f) = flag {
                        rec.flags.add(f);
                    }
                    let mut r = if grpc {
                        local_grpc(errors::grpc_code(status), &text)
                    } else {
                        local(status, text)
                    };
                    match e {
                        ProxyError::TenantConnections => {
                            r.headers_mut()
                                .insert(header::CONNECTION, HeaderValue::from_static("close"));
                        }
                        // As Envoy's circuit breakers mark theirs.
                        ProxyError::Overflow => {
                            r.headers_mut().insert(
                                headers::X_ENVOY_OVERLOADED,
                                HeaderValue::from_static("true"),
                            );
                        }
                        _ => {}
                    }
                    r
                }
            }
        };
    // Tells TCP clients of an HTTPS listener that HTTP/3 answers on the same port.
    if conn.tls
        && version != Version::HTTP_3
        && let Some(v) = group.and_then(|g| g.alt_svc.get(&conn.listener))
    {
        resp.headers_mut().insert(header::ALT_SVC, v.clone());
    }
    let mut rec = unanswered.answered();
    rec.status = resp.status().as_u16();
    let tenant = rec.tenant.as_deref().unwrap_or(PLATFORM_NAMESPACE);
    let policy = group.and_then(|g| g.log_policy(tenant)).cloned();
    let bodiless = head
        || matches!(
            resp.status(),
            StatusCode::NO_CONTENT | StatusCode::NOT_MODIFIED | StatusCode::SWITCHING_PROTOCOLS
        );
    let finish = Finish {
        rec,
        conn,
        started,
        meter,
        policy,
        bodiless,
    };
    Ok(resp.map(|b| body::boxed(Observed::new(b, finish))))
}

/// The route table serving this connection: the listener's, or the terminating chain's.
fn table<'r>(group: Option<&'r GroupRt>, conn: &ConnInfo) -> Option<(&'r GroupRt, &'r RouteTable)> {
    let group = group?;
    let l = group.listeners.get(&conn.listener)?;
    let t = match &l.kind {
        ListenerKind::Http(t) => t,
        ListenerKind::Tls(chains) => {
            let chain = match &conn.chain {
                Some(name) => chains
                    .iter()
                    .find(|c| c.name == **name)
                    .or_else(|| l.chain(conn.sni.as_deref()))?,
                None => l.chain(conn.sni.as_deref())?,
            };
            match &chain.action {
                ChainAction::TerminateHttp { routes, .. } => routes,
                _ => return None,
            }
        }
        ListenerKind::Tcp(_) => return None,
    };
    Some((group, t))
}

/// `group`: the connection's group in `rt`; `grpc`: the request's `Content-Type` says gRPC.
async fn proxy(
    req: &mut Request<Body>,
    conn: &Arc<ConnInfo>,
    rt: &Runtime,
    group: Option<&GroupRt>,
    rec: &mut Record,
    Aligned(grpc): Aligned<bool>,
    started: Instant,
) -> Result<Response<Body>, ProxyError> {
    if req.method() == Method::CONNECT {
        // Boxed, as the websocket path below: rare, and large futures inline would make every
        // request's future as large.
        return Box::pin(super::connect::handle(req, conn, rt, rec)).await;
    }
    let scheme = if conn.tls { "https" } else { "http" };
    // A handle on the Host header's bytes (HTTP/1.1), or a copy of the URI's authority
    // (HTTP/2, HTTP/3): the record keeps one for the log without another copy.
    let host = match req.uri().authority() {
        Some(a) => HeaderValue::from_str(a.as_str()).ok(),
        None => req.headers().get(header::HOST).cloned(),
    };
    let Some(host) = host else {
        return Err(ProxyError::BadRequest("missing Host header"));
    };
    let Ok(authority) = host.to_str() else {
        return Err(ProxyError::BadRequest("missing Host header"));
    };
    if let Some(l) = rec.log() {
        l.authority = Some(host.clone());
    }
    let Some((group, table)) = table(group, conn) else {
        return Err(ProxyError::NoRoute);
    };
    // A shared handle on the request's bytes, not a copy: forwarded as is unless rewritten.
    let mut pq = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // Routed and forwarded normalized, as Envoy under Istio's `pathNormalization`.
    match super::normalize::path(&pq, rt.snapshot.mesh.path_normalization) {
        Ok(None) => {}
        Ok(Some(n)) => pq = n,
        Err(_) => return Err(ProxyError::BadRequest("path normalization failed")),
    }
    let path = pq.as_str();
    let view = RequestView {
        method: req.method().as_str(),
        scheme,
        authority,
        path,
        headers: req.headers(),
    };
    let (vh, route): (&VirtualHost, &Route) = match find(table, &view) {
        Decision::Route(vh, r) => (vh, r),
        Decision::HttpsRedirect(vh) => {
            rec.tenant = Some(vh.tenant.clone());
            let host = rewrite::split_authority(authority).0;
            return Ok(redirect(301, &format!("https://{host}{path}")));
        }
        Decision::NotFound(vh) => {
            rec.tenant = vh.map(|v| v.tenant.clone());
            return Err(ProxyError::NoRoute);
        }
    };
    let rb = &route.body;
    rec.tenant = Some(rb.tenant.clone());
    rec.route = Some(route.name.clone());
    let tenant = rt.tenant(&rb.tenant);
    if !conn.tls && !conn.tenant.admit(tenant) {
        return Err(ProxyError::TenantConnections);
    }
    if let Some(t) = tenant
        && !t.admit_request()
    {
        return Err(ProxyError::RateLimited);
    }
    let _ = vh;
    // Envoy's filter order: CORS, fault, then the router, which makes redirects and direct
    // responses. So a preflight to a redirect rule gets the preflight answer, and a fault a
    // delegated rule took from its root applies to a direct response too. CORS preflights
    // are answered when the origin is allowed, and also when it is not under
    // `unmatchedPreflights: IGNORE` (without the allow-origin header, as Envoy's filter with
    // `forward_not_matching_preflights: false`).
    let cors_origin = rb
        .rule
        .cors
        .as_ref()
        .and_then(|p| cors::allowed_origin(p, req.headers()).cloned());
    if let Some(p) = &rb.rule.cors
        && (cors_origin.is_some() || !p.forward_unmatched_preflights)
        && cors::is_preflight(req.method(), req.headers())
    {
        return Ok(cors::preflight(p, cors_origin.as_ref()));
    }
    if let Some(f) = &rb.rule.fault {
        let d = fault::decide(f);
        if let Some(delay) = d.delay {
            rec.flags.add(Flag::FaultDelay);
            tokio::time::sleep(delay).await;
        }
        if let Some(a) = d.abort {
            rec.flags.add(Flag::FaultAbort);
            return Ok(abort_response(a));
        }
    }
    let clusters = match &rb.action {
        RouteAction::Redirect(rd) => {
            let loc = rewrite::location(
                rd,
                route.matcher.as_deref(),
                scheme,
                authority,
                path,
                conn.listener.port(),
            );
            let mut r = redirect(rd.code, &loc);
            decorate_local(&mut r, rb, req, conn, started);
            return Ok(r);
        }
        RouteAction::Direct { status, body: b } => {
            let mut r = local(
                StatusCode::from_u16(*status).unwrap_or(StatusCode::OK),
                String::new(),
            );
            *r.body_mut() = body::full(b.clone());
            decorate_local(&mut r, rb, req, conn, started);
            return Ok(r);
        }
        RouteAction::Forward(cs) => cs,
    };
    let pick = rand::rng().random_range(0..u64::MAX);
    let Some(wc) = tenants::find::pick(clusters, pick) else {
        return Err(ProxyError::NoHealthyUpstream);
    };
    rec.cluster = Some(wc.cluster.clone());
    let Some(cluster) = group.clusters.get(&*wc.cluster) else {
        return Err(ProxyError::NoHealthyUpstream);
    };

    // The upstream request.
    let upgrade = if req.version() == Version::HTTP_11 {
        Upgrade::of_request(req.headers())
    } else {
        Upgrade::None
    };
    let h2c = upgrade == Upgrade::H2c;
    if upgrade == Upgrade::Other {
        // Istio configures websocket upgrades only; Envoy refuses any other with an empty 403.
        return Err(ProxyError::UpgradeRejected);
    }
    let upgrade = upgrade == Upgrade::Websocket;
    let down_upgrade = upgrade.then(|| hyper::upgrade::on(&mut *req));
    let incoming = std::mem::replace(req.body_mut(), body::empty());
    let mut h = std::mem::take(req.headers_mut());
    headers::strip_hop_by_hop(&mut h, upgrade);
    if h2c {
        // Its settings, when `Connection` did not list them.
        h.remove(headers::HTTP2_SETTINGS);
    }
    if !headers::is_internal(conn.peer.ip()) {
        headers::strip_envoy(&mut h);
    }
    let rid = headers::forwarded(&mut h, &conn.peer_ip, scheme, conn.client_cert.as_ref());
    if let Some(l) = rec.log() {
        l.request_id = Some(rid.clone());
    }
    // The client's Host as the request holds it, unless a rewrite or header operation sets
    // another (one that is no header value leaves the client's, as Envoy's does).
    let mut up_authority = host;
    let mut up_path = pq.clone();
    if let Some(rw) = &rb.rule.rewrite {
        let p = rewrite::path(path, route.matcher.as_deref(), rw);
        up_path = PathAndQuery::try_from(p).map_err(|_| ProxyError::BadRequest("bad path"))?;
        if let Some(a) = rw
            .authority
            .as_deref()
            .and_then(|a| HeaderValue::from_str(a).ok())
        {
            up_authority = a;
        }
    }
    let vars = request_vars(conn, req.version(), started);
    for op in [&rb.rule.headers.request, &wc.headers.request] {
        if !changes_headers(op) {
            continue;
        }
        if let Some(a) = headers::apply(&mut h, op, &vars, ReqHeaders::Changed)
            .and_then(|a| HeaderValue::try_from(a).ok())
        {
            up_authority = a;
        }
    }
    // Looked up again only if a header operation may have changed it.
    let grpc = if changes_headers(&rb.rule.headers.request) || changes_headers(&wc.headers.request)
    {
        h.get(header::CONTENT_TYPE)
            .is_some_and(|v| headers::is_grpc(v.as_bytes()))
    } else {
        grpc
    };
    let lb = cluster.config.policy.load_balancer.as_ref();
    let sticky = generated_cookie(lb, &h);
    let hash = match &sticky {
        Some((k, _)) => Some(*k),
        None => hash_key(lb, &h, path, conn.peer),
    };
    let mut head = Head {
        method: req.method().clone(),
        path: up_path,
        authority: up_authority,
        headers: h,
        downstream: req.version(),
        grpc,
        via: Via {
            peer: conn.peer,
            local: conn.local,
        },
    };
    let decor = Decor {
        sticky,
        rb,
        wc,
        cors_origin: cors_origin.as_ref(),
        vars: &vars,
    };

    if let Some(on) = down_upgrade {
        let mut report = Report::default();
        // The route's timeouts bound the wait for the upgrade's answer, from now.
        let (route, per_try) = (rb.rule.timeout, rb.retries.per_try_timeout);
        let timeouts = deadline::Timeouts {
            route,
            per_try,
            end: (route.is_some() || per_try.is_some()).then(deadline::RequestEnd::now),
            cut: None,
        };
        let r = Box::pin(websocket::forward(
            cluster,
            head,
            on,
            hash,
            &rb.retries,
            &timeouts,
            &mut report,
        ))
        .await;
        rec.upstream = report.upstream;
        let mut resp = r?;
        decorate(&mut resp, decor, ReqHeaders::Unknown);
        return Ok(resp);
    }

    // A gRPC request's deadline: Istio sets Envoy's (deprecated) `max_grpc_timeout` to the
    // route's timeout on every route, so the client's `grpc-timeout` replaces the route
    // timeout, capped by it (0 on either side: none). Sent upstream as what applies.
    let route_timeout = if grpc {
        let asked = head
            .headers
            .get(&headers::GRPC_TIMEOUT)
            .and_then(|v| headers::grpc_timeout(v.as_bytes()))
            .filter(|d| !d.is_zero());
        let t = match (asked, rb.rule.timeout) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        };
        if let Some(t) = t {
            let ms = u64::try_from(t.as_millis()).unwrap_or(u64::MAX);
            head.headers
                .insert(headers::GRPC_TIMEOUT, headers::grpc_timeout_value(ms));
        }
        t
    } else {
        rb.rule.timeout
    };
    // Envoy's route and per-try timeouts run from the end of the request: the body's end is
    // marked when either is set.
    let timed = route_timeout.is_some() || rb.retries.per_try_timeout.is_some();
    let (incoming, mut end) = if timed && !incoming.is_end_stream() {
        let (b, e) = deadline::Ending::wrap(incoming);
        (b, Some(e))
    } else {
        (incoming, None)
    };
    let src = if incoming.is_end_stream() {
        Source::Empty
    } else if incoming
        .size_hint()
        .upper()
        .is_some_and(|n| n <= REPLAY_LIMIT)
    {
        match incoming.collect().await {
            Ok(c) => Source::Buffered(c.to_bytes()),
            Err(_) => {
                rec.flags.add(Flag::DownstreamTermination);
                return Err(ProxyError::BadRequest("request body read failed"));
            }
        }
    } else if incoming.size_hint().upper().is_none()
        && (forward::response_retries(&rb.retries, grpc) || !rb.mirrors.is_empty())
    {
        // Length unknown (chunked, gRPC): streamed at once, with a copy for retries and
        // mirrors.
        Source::Tee(Tee::new(incoming, REPLAY_LIMIT as usize))
    } else {
        Source::Stream(Some(incoming))
    };

    for (m, pct) in &rb.mirrors {
        if let Some(mc) = group.clusters.get(m) {
            mirror::spawn(mc.clone(), &head, &src, *pct);
        }
    }

    if timed && end.is_none() {
        // No body: received whole already.
        end = Some(deadline::RequestEnd::now());
    }
    let timeouts = deadline::Timeouts {
        route: route_timeout,
        per_try: rb.retries.per_try_timeout,
        end,
        cut: timed.then(|| deadline::Cut::new(conn, rec)),
    };
    let mut report = Report::default();
    let result = forward::send(
        cluster,
        &head,
        src,
        &rb.retries,
        &timeouts,
        hash,
        &mut rec.flags,
        &mut report,
    )
    .await;
    rec.upstream = report.upstream;
    rec.service_time = report.service_time;
    let mut resp = result?;
    decorate(&mut resp, decor, ReqHeaders::Of(&head.headers));
    Ok(resp)
}

/// What the gateway adds to an upstream's response, a websocket's 101 included: hop-by-hop
/// headers dropped (a 101 keeps its `Upgrade` and `Connection`), the generated sticky
/// cookie, the route's and the destination's response header operations, CORS.
struct Decor<'a> {
    sticky: Option<(u64, HeaderValue)>,
    rb: &'a tenants::snapshot::RouteBody,
    wc: &'a tenants::snapshot::WeightedCluster,
    cors_origin: Option<&'a HeaderValue>,
    vars: &'a Vars<'a>,
}

fn decorate(resp: &mut Response<Body>, d: Decor<'_>, req: ReqHeaders<'_>) {
    let Decor {
        sticky,
        rb,
        wc,
        cors_origin,
        vars,
    } = d;
    let status = resp.status();
    let rh = resp.headers_mut();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        headers::strip_hop_by_hop(rh, false);
    }
    // Envoy's default (`server_header_transformation: OVERWRITE`): the backend's software and
    // version are not shown to clients; the gateway's own answers say the same.
    rh.insert(header::SERVER, HeaderValue::from_static("gatehouse"));
    if let Some((_, c)) = sticky {
        rh.append(header::SET_COOKIE, c);
    }
    for op in [&rb.rule.headers.response, &wc.headers.response] {
        if changes_headers(op) {
            headers::apply(rh, op, vars, req);
        }
    }
    if let (Some(p), Some(o)) = (&rb.rule.cors, cors_origin) {
        cors::decorate(p, o, rh);
    }
}

/// What `%VAR%`s in header values are filled from.
fn request_vars(conn: &ConnInfo, version: Version, started: Instant) -> Vars<'_> {
    Vars {
        peer: conn.peer,
        local: conn.local,
        sni: conn.sni.as_deref(),
        protocol: protocol(version),
        started,
    }
}

/// A redirect's or direct response's answer gets the rule's response header operations and
/// CORS headers, as Envoy finalizes a direct-response route's headers (a rule that answers
/// locally has no destination, so no destination's operations).
fn decorate_local(
    resp: &mut Response<Body>,
    rb: &tenants::snapshot::RouteBody,
    req: &Request<Body>,
    conn: &ConnInfo,
    started: Instant,
) {
    let op = &rb.rule.headers.response;
    if changes_headers(op) {
        let vars = request_vars(conn, req.version(), started);
        headers::apply(resp.headers_mut(), op, &vars, ReqHeaders::Of(req.headers()));
    }
    if let Some(p) = &rb.rule.cors
        && let Some(o) = cors::allowed_origin(p, req.headers())
    {
        cors::decorate(p, o, resp.headers_mut());
    }
}

fn changes_headers(op: &tenants::model::HeaderOp) -> bool {
    !(op.set.is_empty() && op.add.is_empty() && op.remove.is_empty())
}

/// Envoy's answer to a request carrying both `Content-Length` and `Transfer-Encoding`: 400,
/// never forwarded (a request-smuggling vector), and the connection closes, since where the
/// next request would start is exactly what the two headers disagree about.
fn ambiguous_framing<B>(req: &Request<B>, conn: &ConnInfo) -> Response<Body> {
    tracing::info!(
        peer = %conn.peer,
        listener = %conn.listener,
        method = %req.method(),
        path = %req.uri().path(),
        "request refused: both Content-Length and Transfer-Encoding"
    );
    let mut r = local(
        StatusCode::BAD_REQUEST,
        "bad request: both Content-Length and Transfer-Encoding".into(),
    );
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

fn redirect(code: u16, location: &str) -> Response<Body> {
    let mut r = local(
        StatusCode::from_u16(code).unwrap_or(StatusCode::MOVED_PERMANENTLY),
        String::new(),
    );
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    r
}

fn abort_response(a: Abort) -> Response<Body> {
    match a {
        Abort::Http(s) => local(
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            "fault filter abort".into(),
        ),
        Abort::Grpc(code) => {
            let mut r = local(StatusCode::OK, String::new());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/grpc"),
            );
            if let Ok(v) = HeaderValue::from_str(&code.to_string()) {
                r.headers_mut().insert("grpc-status", v);
            }
            r.headers_mut().insert(
                "grpc-message",
                HeaderValue::from_static("fault filter abort"),
            );
            r
        }
    }
}

/// The consistent-hash key of a request, per the cluster's `consistentHash` setting.
fn hash_key(
    lb: Option<&LoadBalancer>,
    h: &http::HeaderMap,
    path: &str,
    peer: SocketAddr,
) -> Option<u64> {
    let Some(LoadBalancer::ConsistentHash(k)) = lb else {
        return None;
    };
    match k {
        HashKey::Header(name) => h.get(name.as_str()).map(|v| hash_bytes(v.as_bytes())),
        HashKey::SourceIp => Some(hash_bytes(peer.ip().to_string().as_bytes())),
        HashKey::QueryParameter(q) => path.split_once('?').and_then(|(_, qs)| {
            qs.split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == q)
                .map(|(_, v)| hash_bytes(v.as_bytes()))
        }),
        HashKey::Cookie { name, .. } => cookie(h, name).map(|v| hash_bytes(v.as_bytes())),
    }
}

fn cookie<'h>(h: &'h http::HeaderMap, name: &str) -> Option<&'h str> {
    h.get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Envoy's generated sticky cookie: when the hash cookie is missing and a `ttl` is set, a
/// random value is chosen, used as this request's hash, and handed to the client.
fn generated_cookie(lb: Option<&LoadBalancer>, h: &http::HeaderMap) -> Option<(u64, HeaderValue)> {
    let Some(LoadBalancer::ConsistentHash(HashKey::Cookie {
        name,
        path,
        ttl: Some(ttl),
        attributes,
    })) = lb
    else {
        return None;
    };
    if cookie(h, name).is_some() {
        return None;
    }
    let value = format!("{:016x}", rand::rng().random::<u64>());
    let mut s = format!("{name}=\"{value}\"");
    // A ttl under a second is a session cookie, as Envoy makes it: `Max-Age=0` would have
    // the browser drop the cookie at once (Istio's own example sets `ttl: 0s`).
    // Envoy's order (`makeSetCookieValue`): Max-Age, Path, the attributes, HttpOnly.
    if ttl.as_secs() != 0 {
        s.push_str(&format!("; Max-Age={}", ttl.as_secs()));
    }
    if let Some(p) = path {
        s.push_str("; Path=");
        s.push_str(p);
    }
    for (n, v) in attributes {
        s.push_str("; ");
        s.push_str(n);
        if !v.is_empty() {
            s.push('=');
            s.push_str(v);
        }
    }
    s.push_str("; HttpOnly");
    let hv = HeaderValue::from_str(&s).ok()?;
    Some((hash_bytes(format!("\"{value}\"").as_bytes()), hv))
}
