//! `gatehouse validate DIR [--format json]`.

use std::io::{self, Write};
use std::path::Path;

use tenants::{Diagnostic, LoadOptions};

use crate::repo;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `path:line:col: severity: ns/Kind/name: field: message`, one per line.
    Text,
    /// A JSON document.
    Json,
}

/// Loads and validates `dir`; returns whether it is free of errors.
pub fn validate(dir: &Path, format: Format, out: &mut dyn Write) -> io::Result<bool> {
    // A releases folder of gatehouse-sync: validate the release it serves.
    let current = dir.join("current");
    let dir = if !dir.join("gatehouse.yaml").exists() && current.join("gatehouse.yaml").exists() {
        current.as_path()
    } else {
        dir
    };
    let files = repo::read_dir(dir).map_err(io::Error::other)?;
    let loaded = tenants::load(&files, &LoadOptions::default());
    let (diagnostics, ok): (Vec<Diagnostic>, bool) = match tenants::build(&loaded, "local", None) {
        Ok(o) => {
            let ok = !tenants::diag::has_errors(&o.diagnostics);
            (o.diagnostics, ok)
        }
        Err(tenants::BuildError::Platform { diagnostics }) => (diagnostics, false),
        Err(e) => return Err(io::Error::other(e)),
    };
    match format {
        Format::Text => {
            for d in &diagnostics {
                writeln!(out, "{d}")?;
            }
            let errors = diagnostics.iter().filter(|d| d.is_error()).count();
            let warnings = diagnostics.len() - errors;
            writeln!(
                out,
                "{}: {} files, {errors} errors, {warnings} warnings",
                if ok { "ok" } else { "invalid" },
                files.len()
            )?;
        }
        Format::Json => {
            let doc = serde_json::json!({
                "ok": ok,
                "files": files.len(),
                "diagnostics": diagnostics,
            });
            serde_json::to_writer_pretty(&mut *out, &doc)?;
            writeln!(out)?;
        }
    }
    Ok(ok)
}
