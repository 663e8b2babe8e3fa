//! Fuzzes what every command does with a user's file before it touches anything: read the spec's text, collect
//! every structural and semantic problem and format them; for a valid spec, derive the manifest and cloud rules,
//! plan against an empty cloud and render every host's files. Any panic is a bug (bad input must be an exit-2
//! message), and so is a problem that names neither a field nor a place.

#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sfuctl::commands::invalid_spec;
use sfuctl::engine::{Current, Diff};
use sfuctl::owner::Owner;
use sfuctl::provider::catalog::ProviderData;
use sfuctl::render::{Renderer, host_targets};
use sfuctl::secret::Secret;
use sfuctl::spec::{FileCheck, Spec};
use sfuctl::validate::check_source;

/// The embedded templates, loaded once.
fn renderer() -> &'static Renderer {
    static RENDERER: OnceLock<Renderer> = OnceLock::new();
    RENDERER.get_or_init(|| Renderer::new(None).expect("the embedded templates load"))
}

fuzz_target!(|data: &[u8]| {
    // Spec files are read as UTF-8 text: anything else is refused before parsing.
    let Ok(text) = std::str::from_utf8(data) else { return };
    let base_dir = Path::new("/nonexistent-fuzz-dir");
    let checked = check_source(text, base_dir, FileCheck::Warn);
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
        let data = ProviderData::get(spec.provider.kind);
        let _ = Diff::new(&spec, data, &Owner::new(&spec.name), &Current::default());
        let secret = Secret::new("fuzz-secret-0123456789abcdef0123456789abcdef");
        for host in host_targets(&spec, "203.0.113.5") {
            // A template may refuse a value (an error), but never panic.
            let _ = renderer().render_host(&spec, base_dir, &host, &secret);
        }
    } else {
        let _ = invalid_spec(Path::new("spec.yaml"), &checked.findings.errors).to_string();
    }
    // The strict first-error parser must not panic either.
    let _ = Spec::parse(text);
});
