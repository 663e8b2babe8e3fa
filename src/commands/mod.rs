//! One module per command: its logic, kept apart from the clap types in `cli.rs`.

pub mod plan;
pub mod render;
pub mod validate;

use std::path::Path;

use anyhow::Result;

use crate::error::{UserError, warn};
use crate::spec::{Diagnostic, FileCheck, Findings, LoadedSpec, Spec};

/// Loads a spec and validates it: warnings are printed to stderr, errors become one exit-2 error listing them all.
pub fn load_valid_spec(path: &Path, files: FileCheck) -> Result<LoadedSpec> {
    let loaded = Spec::load(path)?;
    let findings = loaded.spec.validate(&loaded.source, base_dir(path), files);
    print_warnings(path, &findings);
    if !findings.errors.is_empty() {
        return Err(invalid_spec(path, &findings.errors).into());
    }
    Ok(loaded)
}

/// The directory relative paths in a spec are resolved against: the spec's own.
pub fn base_dir(spec_path: &Path) -> &Path {
    spec_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Prints each warning as `warning: <file>: <field> (line L, column C): <message>` with its hint.
pub fn print_warnings(path: &Path, findings: &Findings) {
    for w in &findings.warnings {
        warn(format!("{}: {w}", path.display()));
    }
}

/// One error for all of a spec's problems: a single problem keeps its hint as the `hint:` line.
pub fn invalid_spec(path: &Path, errors: &[Diagnostic]) -> UserError {
    if let [only] = errors {
        let err = UserError::input(format!("invalid spec `{}`: {}", path.display(), only.summary()));
        return match &only.hint {
            Some(h) => err.hint(h.clone()),
            None => err,
        };
    }
    let mut message = format!("invalid spec `{}`: {} problems", path.display(), errors.len());
    for e in errors {
        message.push_str(&format!("\n  {}", e.to_string().replace("\n  hint:", "\n    hint:")));
    }
    UserError::input(message)
}
