//! The parts of a repository URL the agent itself needs: the transport, and for ssh the host,
//! port and user (libgit2 tells the host-key callback only the host name, so a non-22 port
//! comes from here).

/// The transport of a repository URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// `https://`.
    Https,
    /// `http://` (plain; for loopback and tests).
    Http,
    /// `ssh://`.
    Ssh,
    /// `git://`.
    Git,
    /// `file://`.
    File,
}

/// A parsed repository URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// Transport.
    pub scheme: Scheme,
    /// User from the URL (`ssh://git@host/...`).
    pub user: Option<String>,
    /// Host name or address (brackets removed from IPv6 literals).
    pub host: String,
    /// Port (the scheme's default when absent).
    pub port: u16,
}

/// Why a URL is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UrlError {
    /// Not one of the supported schemes.
    #[error(
        "unsupported repository URL {0:?}: use https://, http://, ssh://host[:port]/path, git:// or file:// (scp-style user@host:path is not accepted)"
    )]
    Scheme(String),
    /// The authority part does not parse.
    #[error("repository URL {0:?}: bad host or port")]
    Authority(String),
    /// Credentials inside the URL would end up in logs and status.
    #[error("repository URL {0:?} carries a password; use token_file instead")]
    Password(String),
}

/// Parses `url`.
pub fn parse(url: &str) -> Result<RepoUrl, UrlError> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| UrlError::Scheme(url.to_string()))?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "https" => Scheme::Https,
        "http" => Scheme::Http,
        "ssh" => Scheme::Ssh,
        "git" => Scheme::Git,
        "file" => Scheme::File,
        _ => return Err(UrlError::Scheme(url.to_string())),
    };
    let default_port = match scheme {
        Scheme::Https => 443,
        Scheme::Http => 80,
        Scheme::Ssh => 22,
        Scheme::Git => 9418,
        Scheme::File => 0,
    };
    let authority = rest.split('/').next().unwrap_or("");
    if scheme == Scheme::File {
        return Ok(RepoUrl {
            scheme,
            user: None,
            host: authority.to_string(),
            port: 0,
        });
    }
    let (user, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => {
            if u.contains(':') {
                return Err(UrlError::Password(redact(url)));
            }
            (Some(u.to_string()), h)
        }
        None => (None, authority),
    };
    let bad = || UrlError::Authority(url.to_string());
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, tail) = v6.split_once(']').ok_or_else(bad)?;
        let port = match tail.strip_prefix(':') {
            Some(p) => p.parse().map_err(|_| bad())?,
            None if tail.is_empty() => default_port,
            None => return Err(bad()),
        };
        (h.to_string(), port)
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse().map_err(|_| bad())?),
            None => (hostport.to_string(), default_port),
        }
    };
    if host.is_empty() {
        return Err(bad());
    }
    Ok(RepoUrl {
        scheme,
        user,
        host,
        port,
    })
}

/// `url` with any user-info removed, for messages.
pub fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((s, rest)) => {
            let (auth, path) = rest.split_once('/').unwrap_or((rest, ""));
            let host = auth.rsplit_once('@').map_or(auth, |(_, h)| h);
            format!("{s}://{host}/{path}")
        }
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_urls_keep_user_and_port() {
        let u = parse("ssh://git@example.com:2222/cfg.git").expect("ok");
        assert_eq!(u.scheme, Scheme::Ssh);
        assert_eq!(u.user.as_deref(), Some("git"));
        assert_eq!((u.host.as_str(), u.port), ("example.com", 2222));
        let u = parse("ssh://[::1]/cfg.git").expect("ok");
        assert_eq!((u.host.as_str(), u.port), ("::1", 22));
    }

    #[test]
    fn scp_style_and_passwords_are_refused() {
        assert!(matches!(
            parse("git@example.com:cfg.git"),
            Err(UrlError::Scheme(_))
        ));
        let e = parse("https://me:secret@example.com/x.git").expect_err("password");
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn defaults_per_scheme() {
        assert_eq!(parse("https://h/x").expect("ok").port, 443);
        assert_eq!(parse("git://h/x").expect("ok").port, 9418);
        assert_eq!(parse("file:///srv/x.git").expect("ok").scheme, Scheme::File);
    }
}
