//! Fuzzes what every command does first with a user's file: read the spec's text, collect every structural and
//! semantic problem, and format them for the user. Any panic is a bug (bad input must be an exit-2 message), and
//! so is a problem that names neither a field nor a place.

#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use sfuctl::commands::invalid_spec;
use sfuctl::spec::{FileCheck, Spec};
use sfuctl::validate::check_source;

fuzz_target!(|data: &[u8]| {
    // Spec files are read as UTF-8 text: anything else is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let checked = check_source(text, Path::new("/nonexistent-fuzz-dir"), FileCheck::Warn);
    for d in checked.findings.errors.iter().chain(&checked.findings.warnings).chain(&checked.findings.notes) {
        assert!(!d.field.is_empty() || d.location.is_some(), "a problem names neither a field nor a place: {d:?}");
        assert!(!d.message.is_empty(), "a problem without a message: {d:?}");
    }
    if checked.findings.errors.is_empty() {
        // A valid spec must give everything later layers derive from it.
        let spec = checked.spec.expect("no errors means a spec");
        let manifest = spec.manifest();
        let _ = manifest.cloud_rules();
        let _ = manifest.media();
    } else {
        let _ = invalid_spec(Path::new("spec.yaml"), &checked.findings.errors).to_string();
    }
    // The strict first-error parser must not panic either.
    let _ = Spec::parse(text);
});
