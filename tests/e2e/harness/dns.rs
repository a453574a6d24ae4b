//! An authoritative DNS server on loopback UDP, port 53, for `resolution: DNS` tests: it
//! answers A queries for one name with the address the test sets (or NXDOMAIN), with the TTL
//! the test sets, and counts the queries.
//!
//! The gateway finds it through `/etc/resolv.conf`, which the test replaces for the gateway
//! alone with a private mount namespace ([`Dns::wrap`]): resolv.conf has no port field.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server answers for its name.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// One A record.
    A(Ipv4Addr),
    /// The name does not exist.
    NxDomain,
}

struct State {
    answer: Mutex<Answer>,
    queries: AtomicU64,
    stop: AtomicBool,
}

/// The running server.
pub struct Dns {
    /// The address it listens on (port 53).
    pub addr: SocketAddr,
    state: Arc<State>,
    resolv: tempfile::NamedTempFile,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Dns {
    /// Answers `name` with `answer` and `ttl` seconds, on a loopback address of its own.
    pub fn start(name: &str, answer: Answer, ttl: u32) -> Self {
        // Port 53 is fixed (resolv.conf has no port): a loopback address of its own, starting
        // from one this process and server pick, and the next one while it is taken.
        static N: AtomicU64 = AtomicU64::new(1);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let start = u64::from(std::process::id())
            .wrapping_mul(251)
            .wrapping_add(n * 977);
        let (sock, ip) = (0..64_000u64)
            .find_map(|i| {
                let k = (start + i) % 64_000;
                let ip = Ipv4Addr::new(
                    127,
                    53,
                    u8::try_from(k / 250).unwrap_or(0),
                    u8::try_from(k % 250).unwrap_or(0) + 1,
                );
                match UdpSocket::bind((ip, 53)) {
                    Ok(s) => Some((s, ip)),
                    Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => None,
                    Err(e) => panic!(
                        "bind {ip}:53: {e} (the DNS tests need root: port 53 and a private mount namespace for /etc/resolv.conf)"
                    ),
                }
            })
            .expect("a free loopback address for port 53");
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .expect("timeout");
        let state = Arc::new(State {
            answer: Mutex::new(answer),
            queries: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let qname = encode(name);
        let st = state.clone();
        let thread = std::thread::spawn(move || serve(&sock, &qname, ttl, &st));
        let mut resolv = tempfile::NamedTempFile::new().expect("resolv.conf");
        std::io::Write::write_all(
            &mut resolv,
            format!("nameserver {ip}\noptions timeout:1 attempts:1\n").as_bytes(),
        )
        .expect("write resolv.conf");
        Self {
            addr: SocketAddr::from((ip, 53)),
            state,
            resolv,
            thread: Some(thread),
        }
    }

    /// Changes the answer.
    pub fn set(&self, answer: Answer) {
        *self.state.answer.lock().expect("lock") = answer;
    }

    /// Queries for the name so far.
    pub fn queries(&self) -> u64 {
        self.state.queries.load(Ordering::SeqCst)
    }

    /// The command prefix that runs a program with this server as its only name server.
    pub fn wrap(&self) -> Vec<String> {
        let conf: PathBuf = self.resolv.path().to_path_buf();
        vec![
            "unshare".into(),
            "--mount".into(),
            "--propagation".into(),
            "private".into(),
            "sh".into(),
            "-c".into(),
            format!(
                "mount --bind {} /etc/resolv.conf && exec \"$0\" \"$@\"",
                conf.display()
            ),
        ]
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.state.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `a.b.c` as DNS labels, lower case.
fn encode(name: &str) -> Vec<u8> {
    let mut out = Vec::new();
    for label in name.trim_end_matches('.').split('.') {
        out.push(u8::try_from(label.len()).expect("label length"));
        out.extend(label.to_ascii_lowercase().bytes());
    }
    out.push(0);
    out
}

fn serve(sock: &UdpSocket, qname: &[u8], ttl: u32, st: &State) {
    let mut buf = [0u8; 1500];
    while !st.stop.load(Ordering::SeqCst) {
        let Ok((n, peer)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let q = &buf[..n];
        if let Some(reply) = answer(q, qname, ttl, st) {
            let _ = sock.send_to(&reply, peer);
        }
    }
}

/// The reply to query `q`: only its question is read (EDNS records are ignored).
fn answer(q: &[u8], qname: &[u8], ttl: u32, st: &State) -> Option<Vec<u8>> {
    if q.len() < 12 {
        return None;
    }
    // The question: labels up to the root, then type and class.
    let mut i = 12;
    while *q.get(i)? != 0 {
        i += 1 + usize::from(q[i]);
    }
    let end = i + 5;
    let name = q.get(12..=i)?.to_ascii_lowercase();
    let qtype = u16::from_be_bytes([*q.get(i + 1)?, *q.get(i + 2)?]);
    let ours = name == qname;
    if ours {
        st.queries.fetch_add(1, Ordering::SeqCst);
    }
    let answer = *st.answer.lock().expect("lock");
    let a = match answer {
        Answer::A(ip) if ours && qtype == 1 => Some(ip),
        _ => None,
    };
    let rcode = match answer {
        Answer::NxDomain if ours => 3,
        _ if ours => 0,
        _ => 3,
    };
    let mut r = Vec::with_capacity(end + 16);
    r.extend_from_slice(&q[..2]);
    // QR, AA, RD copied; RA; the rcode.
    r.push(0x84 | (q[2] & 0x01));
    r.push(0x80 | rcode);
    r.extend_from_slice(&[0, 1, 0, u8::from(a.is_some()), 0, 0, 0, 0]);
    r.extend_from_slice(q.get(12..end)?);
    if let Some(ip) = a {
        r.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        r.extend_from_slice(&ttl.to_be_bytes());
        r.extend_from_slice(&[0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}
