//! Reads a TLS ClientHello from raw bytes without a TLS library: the SNI decides whether a
//! connection is terminated here or passed through untouched, so it must be known before
//! any TLS state exists. Bounded in size; every length is checked.

/// What a ClientHello says that routing needs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Hello {
    /// `server_name` (host_name), lowercased.
    pub sni: Option<String>,
    /// ALPN protocols offered.
    pub alpn: Vec<Vec<u8>>,
}

/// Outcome of parsing the bytes read so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A complete ClientHello.
    Done(Hello),
    /// More bytes are needed; at least this many in total.
    NeedMore(usize),
    /// Not a TLS ClientHello (or malformed).
    Invalid(&'static str),
}

/// Largest handshake message accepted (ClientHellos with post-quantum key shares are ~2 KiB).
pub const MAX_HELLO: usize = 64 * 1024;

/// Parses the TLS records at the start of `buf`, reassembling a ClientHello that spans
/// several records.
pub fn parse(buf: &[u8]) -> Parse {
    let mut handshake: Vec<u8> = Vec::new();
    let mut off = 0;
    loop {
        if buf.len() < off + 5 {
            return Parse::NeedMore(off + 5);
        }
        let rec = &buf[off..];
        if rec[0] != 22 {
            return Parse::Invalid("not a TLS handshake record");
        }
        if rec[1] != 3 {
            return Parse::Invalid("unsupported record version");
        }
        let len = usize::from(u16::from_be_bytes([rec[3], rec[4]]));
        if len == 0 || len > 16384 + 2048 {
            return Parse::Invalid("bad record length");
        }
        if buf.len() < off + 5 + len {
            return Parse::NeedMore(off + 5 + len);
        }
        handshake.extend_from_slice(&rec[5..5 + len]);
        off += 5 + len;
        if handshake.len() >= 4 {
            if handshake[0] != 1 {
                return Parse::Invalid("first handshake message is not a ClientHello");
            }
            let msg_len = (usize::from(handshake[1]) << 16)
                | (usize::from(handshake[2]) << 8)
                | usize::from(handshake[3]);
            if msg_len > MAX_HELLO {
                return Parse::Invalid("ClientHello too large");
            }
            if handshake.len() >= 4 + msg_len {
                return match hello(&handshake[4..4 + msg_len]) {
                    Some(h) => Parse::Done(h),
                    None => Parse::Invalid("malformed ClientHello"),
                };
            }
        }
        if off > MAX_HELLO + 5 * 8 {
            return Parse::Invalid("ClientHello too large");
        }
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<usize> {
        self.take(1).map(|b| usize::from(b[0]))
    }
    fn u16(&mut self) -> Option<usize> {
        self.take(2)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
    }
    fn vec8(&mut self) -> Option<&'a [u8]> {
        let n = self.u8()?;
        self.take(n)
    }
    fn vec16(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.take(n)
    }
}

fn hello(body: &[u8]) -> Option<Hello> {
    let mut r = Reader(body);
    r.take(2)?; // legacy_version
    r.take(32)?; // random
    r.vec8()?; // session id
    r.vec16()?; // cipher suites
    r.vec8()?; // compression methods
    let mut out = Hello::default();
    if r.0.is_empty() {
        return Some(out);
    }
    let mut exts = Reader(r.vec16()?);
    while !exts.0.is_empty() {
        let typ = exts.u16()?;
        let data = exts.vec16()?;
        match typ {
            0 => {
                let mut list = Reader(Reader(data).vec16()?);
                while !list.0.is_empty() {
                    let kind = list.u8()?;
                    let name = list.vec16()?;
                    if kind == 0 {
                        let s = std::str::from_utf8(name).ok()?;
                        if s.is_empty() || s.len() > 255 || !s.bytes().all(|b| b.is_ascii_graphic())
                        {
                            return None;
                        }
                        out.sni = Some(s.to_ascii_lowercase());
                    }
                }
            }
            16 => {
                let mut list = Reader(Reader(data).vec16()?);
                while !list.0.is_empty() {
                    out.alpn.push(list.vec8()?.to_vec());
                }
            }
            _ => {}
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello captured from `openssl s_client -servername db.example.com`, trimmed to
    /// the fields the parser reads.
    fn hello_bytes(sni: Option<&str>, alpn: &[&str]) -> Vec<u8> {
        let mut exts = Vec::new();
        if let Some(s) = sni {
            let mut list = vec![0u8];
            list.extend_from_slice(&(s.len() as u16).to_be_bytes());
            list.extend_from_slice(s.as_bytes());
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend(list);
            exts.extend_from_slice(&0u16.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend(data);
        }
        if !alpn.is_empty() {
            let mut list = Vec::new();
            for p in alpn {
                list.push(p.len() as u8);
                list.extend_from_slice(p.as_bytes());
            }
            let mut data = (list.len() as u16).to_be_bytes().to_vec();
            data.extend(list);
            exts.extend_from_slice(&16u16.to_be_bytes());
            exts.extend_from_slice(&(data.len() as u16).to_be_bytes());
            exts.extend(data);
        }
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0);
        body.extend_from_slice(&[0, 2, 0x13, 0x01]);
        body.extend_from_slice(&[1, 0]);
        body.extend_from_slice(&(exts.len() as u16).to_be_bytes());
        body.extend(exts);
        let mut hs = vec![1, 0];
        hs.extend_from_slice(&(body.len() as u16).to_be_bytes());
        hs.extend(body);
        let mut rec = vec![22, 3, 1];
        rec.extend_from_slice(&(hs.len() as u16).to_be_bytes());
        rec.extend(hs);
        rec
    }

    #[test]
    fn reads_sni_and_alpn() {
        let b = hello_bytes(Some("DB.example.com"), &["h2", "http/1.1"]);
        assert_eq!(
            parse(&b),
            Parse::Done(Hello {
                sni: Some("db.example.com".into()),
                alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            })
        );
    }

    #[test]
    fn asks_for_more_and_rejects_garbage() {
        let b = hello_bytes(Some("a.example.com"), &[]);
        for cut in [0, 3, 5, 20, b.len() - 1] {
            assert!(
                matches!(parse(&b[..cut]), Parse::NeedMore(n) if n > cut),
                "cut {cut}"
            );
        }
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\n"),
            Parse::Invalid("not a TLS handshake record")
        );
        assert_eq!(
            parse(&hello_bytes(None, &[])),
            Parse::Done(Hello::default())
        );
        let mut bad = b;
        bad[43] = 0xff; // session id length runs past the message
        assert!(!matches!(parse(&bad), Parse::Done(_)));
    }

    #[test]
    fn reassembles_across_records() {
        let b = hello_bytes(Some("split.example.com"), &[]);
        let payload = &b[5..];
        let (a, c) = payload.split_at(10);
        let mut two = vec![22, 3, 1];
        two.extend_from_slice(&(a.len() as u16).to_be_bytes());
        two.extend_from_slice(a);
        two.extend_from_slice(&[22, 3, 1]);
        two.extend_from_slice(&(c.len() as u16).to_be_bytes());
        two.extend_from_slice(c);
        assert!(
            matches!(parse(&two), Parse::Done(h) if h.sni.as_deref() == Some("split.example.com"))
        );
    }

    #[test]
    fn never_panics_on_prefixes_of_random_bytes() {
        let mut x: u32 = 12345;
        for _ in 0..2000 {
            let mut v = hello_bytes(Some("fuzz.example.com"), &["h2"]);
            for _ in 0..4 {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                let i = (x as usize) % v.len();
                v[i] = (x >> 16) as u8;
            }
            let _ = parse(&v);
        }
    }
}
