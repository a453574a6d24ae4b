//! Webhook authentication and rate limiting. A delivery only triggers a fetch: nothing in
//! the payload (commit id, ref) is trusted or even read.
//!
//! Accepted signatures, all over the raw body with the shared secret:
//! GitHub `X-Hub-Signature-256: sha256=<hex HMAC-SHA256>`, Gitea `X-Gitea-Signature: <hex>`
//! (Gogs `X-Gogs-Signature`), GitLab `X-Gitlab-Token: <secret>` (GitLab sends the token
//! itself, compared in constant time), and the generic `X-Signature: sha256=<hex>`.

use std::time::Instant;

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// Who sent a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// GitHub.
    GitHub,
    /// Gitea or Gogs.
    Gitea,
    /// GitLab.
    GitLab,
    /// Generic HMAC.
    Generic,
}

/// Why a delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HookError {
    /// No secret configured: webhooks are off.
    #[error("webhooks are disabled: no webhook secret is configured")]
    NoSecret,
    /// No signature header.
    #[error(
        "no signature: expected X-Hub-Signature-256, X-Gitea-Signature, X-Gitlab-Token or X-Signature"
    )]
    Unsigned,
    /// A signature that does not match.
    #[error("the {0:?} signature does not match")]
    BadSignature(Provider),
}

fn header<'h>(h: &'h HeaderMap, name: &str) -> Option<&'h str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

fn hmac_ok(secret: &[u8], body: &[u8], hex_sig: &str) -> bool {
    let Ok(sig) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// Checks a delivery's signature.
pub fn authenticate(
    headers: &HeaderMap,
    body: &[u8],
    secret: Option<&[u8]>,
) -> Result<Provider, HookError> {
    let secret = secret.ok_or(HookError::NoSecret)?;
    if let Some(s) = header(headers, "x-hub-signature-256") {
        let ok = s
            .strip_prefix("sha256=")
            .is_some_and(|h| hmac_ok(secret, body, h));
        return ok
            .then_some(Provider::GitHub)
            .ok_or(HookError::BadSignature(Provider::GitHub));
    }
    if let Some(s) =
        header(headers, "x-gitea-signature").or_else(|| header(headers, "x-gogs-signature"))
    {
        return hmac_ok(secret, body, s)
            .then_some(Provider::Gitea)
            .ok_or(HookError::BadSignature(Provider::Gitea));
    }
    if let Some(t) = header(headers, "x-gitlab-token") {
        let ok: bool = t.as_bytes().ct_eq(secret).into();
        return ok
            .then_some(Provider::GitLab)
            .ok_or(HookError::BadSignature(Provider::GitLab));
    }
    if let Some(s) = header(headers, "x-signature") {
        let ok = s
            .strip_prefix("sha256=")
            .is_some_and(|h| hmac_ok(secret, body, h));
        return ok
            .then_some(Provider::Generic)
            .ok_or(HookError::BadSignature(Provider::Generic));
    }
    Err(HookError::Unsigned)
}

/// A token bucket: `per_minute` deliveries a minute, bursts up to a tenth of that (at least
/// one). Excess deliveries are answered 429 and trigger nothing.
#[derive(Debug)]
pub struct RateLimit {
    capacity: f64,
    per_sec: f64,
    tokens: f64,
    last: Instant,
}

// === impl RateLimit ===

impl RateLimit {
    /// A full bucket.
    pub fn new(per_minute: u32) -> Self {
        let capacity = (f64::from(per_minute) / 10.0).max(1.0);
        Self {
            capacity,
            per_sec: f64::from(per_minute) / 60.0,
            tokens: capacity,
            last: Instant::now(),
        }
    }

    /// Takes a token at `now`, if there is one.
    pub fn allow(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.per_sec).min(self.capacity);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The signature header a sender computes: `sha256=<hex>` (for tests and tools).
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        // HMAC takes keys of any length.
        Err(_) => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("value"));
        }
        h
    }

    #[test]
    fn each_provider_is_checked_with_its_own_scheme() {
        let body = br#"{"ref":"refs/heads/main","after":"0000"}"#;
        let sig = sign(b"s3cret", body);
        let hex = sig.trim_start_matches("sha256=");
        let ok = |h: HeaderMap| authenticate(&h, body, Some(b"s3cret"));
        assert_eq!(
            ok(headers(&[("x-hub-signature-256", &sig)])),
            Ok(Provider::GitHub)
        );
        assert_eq!(
            ok(headers(&[("x-gitea-signature", hex)])),
            Ok(Provider::Gitea)
        );
        assert_eq!(
            ok(headers(&[("x-gitlab-token", "s3cret")])),
            Ok(Provider::GitLab)
        );
        assert_eq!(ok(headers(&[("x-signature", &sig)])), Ok(Provider::Generic));
        assert_eq!(
            ok(headers(&[("x-hub-signature-256", &sign(b"other", body))])),
            Err(HookError::BadSignature(Provider::GitHub))
        );
        assert_eq!(
            ok(headers(&[("x-gitlab-token", "s3cre")])),
            Err(HookError::BadSignature(Provider::GitLab))
        );
        assert!(ok(headers(&[("x-hub-signature-256", "sha256=zz")])).is_err());
        assert_eq!(ok(HeaderMap::new()), Err(HookError::Unsigned));
        assert_eq!(
            authenticate(&headers(&[("x-gitlab-token", "s3cret")]), body, None),
            Err(HookError::NoSecret)
        );
    }

    #[test]
    fn the_bucket_refills_over_time() {
        let mut r = RateLimit::new(60);
        let t0 = Instant::now();
        let burst = (0..20).filter(|_| r.allow(t0)).count();
        assert_eq!(burst, 6, "a tenth of a minute's worth");
        assert!(!r.allow(t0));
        assert!(r.allow(t0 + Duration::from_secs(1)), "one a second");
    }
}
