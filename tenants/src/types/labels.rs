//! Kubernetes label keys and values (`labels.Instance.Validate`).

use super::host::is_dns1123_label;

/// Checks a label key: optional DNS prefix and `/`, then a name of at most 63 characters.
pub fn validate_label_key(k: &str) -> Result<(), String> {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    if let Some(p) = prefix
        && (p.is_empty() || p.len() > 253 || !p.split('.').all(is_dns1123_label))
    {
        return Err(format!("invalid label key {k:?}: bad prefix {p:?}"));
    }
    if !is_qualified_name(name) {
        return Err(format!(
            "invalid label key {k:?}: must be at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric"
        ));
    }
    Ok(())
}

/// Checks a label value: empty, or a name of at most 63 characters.
pub fn validate_label_value(v: &str) -> Result<(), String> {
    if v.is_empty() || is_qualified_name(v) {
        Ok(())
    } else if v.contains('*') {
        Err("wildcard is not supported in selector".to_string())
    } else {
        Err(format!(
            "invalid label value {v:?}: must be at most 63 characters of [A-Za-z0-9._-], starting and ending alphanumeric"
        ))
    }
}

fn is_qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}
