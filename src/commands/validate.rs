//! `sfuctl validate SPEC`: every problem of a spec, with its field, line and fix. Changes nothing.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::output::Output;
use crate::commands::{base_dir, invalid_spec, print_warnings};
use crate::error::Exit;
use crate::spec::{Diagnostic, FileCheck, Spec};
use crate::validate::check_source;

/// Arguments of commands that take only a spec.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
}

/// Runs `validate`.
pub fn execute(args: &SpecArgs, output: Output) -> Result<Exit> {
    let source = match Spec::read_source(&args.spec) {
        Ok(s) => s,
        Err(e) if output == Output::Json => {
            let error = json!({ "field": null, "line": null, "column": null, "message": format!("{e:#}"), "hint": crate::error::hint_of(&e) });
            println!("{}", json!({ "ok": false, "errors": [error], "warnings": [], "notes": [] }));
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let checked = check_source(&source, base_dir(&args.spec), FileCheck::Warn);
    let findings = &checked.findings;
    if output == Output::Json {
        let list = |ds: &[Diagnostic]| -> Vec<serde_json::Value> {
            ds.iter()
                .map(|d| {
                    json!({
                        "field": d.field,
                        "line": d.location.map(|l| l.line),
                        "column": d.location.map(|l| l.column),
                        "message": d.message,
                        "hint": d.hint,
                    })
                })
                .collect()
        };
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({
                "ok": findings.errors.is_empty(),
                "errors": list(&findings.errors),
                "warnings": list(&findings.warnings),
                "notes": list(&findings.notes),
            }))?
        );
    } else {
        print_warnings(&args.spec, findings);
    }
    let spec = match &checked.spec {
        Some(spec) if findings.errors.is_empty() => spec,
        _ => return Err(invalid_spec(&args.spec, &findings.errors).into()),
    };
    if output == Output::Text {
        let manifest = spec.manifest();
        println!(
            "{} is valid: {} on {}, {} public port rule(s), media range udp {}.",
            args.spec.display(),
            spec.sfu.kind.as_str(),
            spec.provider.kind.as_str(),
            manifest.rules.len(),
            manifest.media()
        );
    }
    Ok(Exit::Success)
}
