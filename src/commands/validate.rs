//! `sfuctl validate SPEC`: every problem of a spec, with its field, line and fix. Changes nothing.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::output::Output;
use crate::commands::{base_dir, invalid_spec, print_warnings};
use crate::error::Exit;
use crate::spec::{Diagnostic, FileCheck, Spec};

/// Arguments of commands that take only a spec.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
}

/// Runs `validate`.
pub fn execute(args: &SpecArgs, output: Output) -> Result<Exit> {
    let loaded = match Spec::load(&args.spec) {
        Ok(l) => l,
        Err(e) if output == Output::Json => {
            println!("{}", json!({ "ok": false, "errors": [{ "message": format!("{e:#}") }], "warnings": [] }));
            return Err(e);
        }
        Err(e) => return Err(e),
    };
    let findings = loaded.spec.validate(&loaded.source, base_dir(&args.spec), FileCheck::Warn);
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
            }))?
        );
    } else {
        print_warnings(&args.spec, &findings);
    }
    if !findings.errors.is_empty() {
        return Err(invalid_spec(&args.spec, &findings.errors).into());
    }
    if output == Output::Text {
        let manifest = loaded.spec.manifest();
        println!(
            "{} is valid: {} on {}, {} public port rule(s), media range udp {}.",
            args.spec.display(),
            loaded.spec.sfu.kind.as_str(),
            loaded.spec.provider.kind.as_str(),
            manifest.rules.len(),
            manifest.media()
        );
    }
    Ok(Exit::Success)
}
