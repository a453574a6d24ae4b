//! `h3load -c CONNS -m STREAMS -D SECONDS [--log-file FILE] https://HOST:PORT/PATH`
//!
//! HTTP/3 load in the shape of `h2load -t1`: one thread, CONNS QUIC connections, STREAMS
//! requests in flight on each, new requests for SECONDS, then the in-flight ones finish. The
//! server certificate is not verified (as with h2load). Output: h2load's `finished in`,
//! `requests:` and `status codes:` lines; the log file has h2load's
//! `start-µs<TAB>status<TAB>duration-µs` lines.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::{Buf, Bytes};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

type Error = Box<dyn std::error::Error + Send + Sync>;

struct Args {
    conns: usize,
    streams: usize,
    duration: Duration,
    log: Option<String>,
    url: http::Uri,
}

fn args() -> Result<Args, Error> {
    let mut a = Args {
        conns: 1,
        streams: 1,
        duration: Duration::from_secs(10),
        log: None,
        url: http::Uri::default(),
    };
    let mut it = std::env::args().skip(1);
    let mut url = None;
    while let Some(s) = it.next() {
        // h2load's spellings: `-c 16` and `-c16`, `--log-file F` and `--log-file=F`.
        let (flag, inline) = match s.as_str() {
            f @ ("-c" | "-m" | "-D" | "--log-file") => (f.to_string(), None),
            f if f.starts_with("--log-file=") => ("--log-file".into(), Some(f[11..].to_string())),
            f if f.len() > 2 && ["-c", "-m", "-D"].contains(&&f[..2]) => {
                (f[..2].to_string(), Some(f[2..].to_string()))
            }
            f if f.starts_with('-') => return Err(format!("unknown option {f}").into()),
            f => {
                url = Some(f.parse()?);
                continue;
            }
        };
        let v = match inline {
            Some(v) => v,
            None => it.next().ok_or_else(|| format!("{flag} needs a value"))?,
        };
        match flag.as_str() {
            "-c" => a.conns = v.parse()?,
            "-m" => a.streams = v.parse()?,
            "-D" => a.duration = Duration::from_secs_f64(v.parse()?),
            _ => a.log = Some(v),
        }
    }
    a.url = url.ok_or("no URL")?;
    Ok(a)
}

/// Accepts any certificate: a load client measures the server, not its PKI.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &CertificateDer<'_>,
        d: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// One finished request: start (µs since the epoch), status (0: failed), duration (µs).
type Sample = (u128, u16, u128);

async fn run(a: Args) -> Result<(Vec<Sample>, Duration), Error> {
    let host = a.url.host().ok_or("URL without host")?.to_string();
    let port = a.url.port_u16().unwrap_or(443);
    let addr: SocketAddr = (host.as_str(), port)
        .to_socket_addrs()?
        .find(SocketAddr::is_ipv4)
        .ok_or("host does not resolve to IPv4")?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCert(provider)))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"h3".to_vec()];
    let crypto = quinn::crypto::rustls::QuicClientConfig::try_from(tls)?;
    let mut endpoint = quinn::Endpoint::client("0.0.0.0:0".parse()?)?;
    endpoint.set_default_client_config(quinn::ClientConfig::new(Arc::new(crypto)));

    let start = Instant::now();
    let deadline = start + a.duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..a.conns {
        let conn = endpoint.connect(addr, &host)?.await?;
        let (mut driver, send) = h3::client::new(h3_quinn::Connection::new(conn)).await?;
        tokio::spawn(async move {
            let _ = std::future::poll_fn(|cx| driver.poll_close(cx)).await;
        });
        for _ in 0..a.streams {
            let mut send = send.clone();
            let uri = a.url.clone();
            tasks.spawn(async move {
                let mut out = Vec::new();
                while Instant::now() < deadline {
                    let t0 = Instant::now();
                    let at = SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .unwrap_or_default();
                    let status = one(&mut send, &uri).await.unwrap_or(0);
                    out.push((at.as_micros(), status, t0.elapsed().as_micros()));
                    if status == 0 {
                        break;
                    }
                }
                out
            });
        }
    }
    let mut samples = Vec::new();
    while let Some(r) = tasks.join_next().await {
        samples.extend(r?);
    }
    let elapsed = start.elapsed();
    endpoint.close(0u32.into(), b"done");
    Ok((samples, elapsed))
}

async fn one(
    send: &mut h3::client::SendRequest<h3_quinn::OpenStreams, Bytes>,
    uri: &http::Uri,
) -> Result<u16, Error> {
    let req = http::Request::get(uri.clone()).body(())?;
    let mut s = send.send_request(req).await?;
    s.finish().await?;
    let resp = s.recv_response().await?;
    while let Some(mut d) = s.recv_data().await? {
        d.advance(d.remaining());
    }
    Ok(resp.status().as_u16())
}

fn main() -> Result<(), Error> {
    let a = args()?;
    let log = a.log.clone();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (samples, elapsed) = rt.block_on(run(a))?;
    let done = samples.len();
    let ok = samples.iter().filter(|s| s.1 != 0).count();
    let class = |lo: u16| {
        samples
            .iter()
            .filter(|s| s.1 >= lo && s.1 < lo + 100)
            .count()
    };
    let secs = elapsed.as_secs_f64();
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "finished in {secs:.2}s, {:.2} req/s, 0B/s",
        done as f64 / secs
    )?;
    writeln!(
        out,
        "requests: {done} total, {done} started, {done} done, {ok} succeeded, {} failed, {} errored, 0 timeout",
        done - ok,
        done - ok
    )?;
    writeln!(
        out,
        "status codes: {} 2xx, {} 3xx, {} 4xx, {} 5xx",
        class(200),
        class(300),
        class(400),
        class(500)
    )?;
    writeln!(out, "Application protocol: h3")?;
    if let Some(path) = log {
        let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
        for (at, status, us) in &samples {
            writeln!(f, "{at}\t{status}\t{us}")?;
        }
    }
    Ok(())
}
