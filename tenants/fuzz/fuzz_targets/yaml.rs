//! The YAML loader: any bytes either parse into documents or give an error with a position;
//! nothing panics, nothing runs away with memory (alias expansion, nesting, size).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let limits = tenants::yaml::Limits {
            max_nodes: 100_000,
            ..tenants::yaml::Limits::default()
        };
        if let Ok(docs) = tenants::yaml::parse_documents(text, &limits) {
            for d in &docs {
                // Every position lookup on a parsed tree must be safe.
                let _ = d.root.pos_of(&tenants::FieldPath::parse("spec.http[0].route[0].destination.host"));
            }
        }
    }
});
