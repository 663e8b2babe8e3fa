//! `sfuctl audit SPEC`: every layer of every host, checked from outside; exit 3 when a check fails.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use clap::Args;

use crate::audit::AuditOptions;
use crate::audit_all::{audit_all, cloud_view, exit_of, to_json, to_text};
use crate::commands::{base_dir, load_valid_spec, timeouts};
use crate::invocation::Invocation;
use crate::deploy::Deployment;
use crate::engine;
use crate::error::Exit;
use crate::output::Output;
use crate::provider::catalog;
use crate::spec::FileCheck;

/// Arguments of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// Probe only N ports of the media range, spread evenly (default: every free port).
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Milliseconds to wait for UDP answers [default: 2000, plus 100 per 1000 ports probed]. A fully dropped range
    /// takes this long, by design.
    #[arg(long, value_name = "MS")]
    pub probe_timeout_ms: Option<u64>,
    /// Seconds to wait for SSH [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
}

/// Runs `audit`.
pub async fn execute(args: &AuditArgs, output: Output) -> Result<Exit> {
    let loaded = load_valid_spec(&args.spec, FileCheck::Warn)?;
    let spec = loaded.spec;
    let provider = catalog::require(&spec)?;
    let (hosts, current) = engine::existing_hosts(&spec, provider.as_ref()).await?;
    let view = cloud_view(&spec, provider.as_ref(), current);
    let dep = Deployment::new(spec, Invocation::new(&args.spec), base_dir(&args.spec), timeouts(args.connect_timeout, None))?;
    let opts = AuditOptions { sample: args.sample, probe_timeout: args.probe_timeout_ms.map(Duration::from_millis) };
    let results = audit_all(&dep, &hosts, view, opts, Vec::new()).await;
    output.emit(&to_json(&results), || to_text(&results))?;
    Ok(exit_of(&results))
}
