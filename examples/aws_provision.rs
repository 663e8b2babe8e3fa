//! The provisioning half of `sfuctl up` on a cloud, for `scripts/bench/aws-vs-ansible`: exactly `engine::apply`
//! (refresh, key pair, security group and its rules, instances, wait for running with a public IPv4, wait for
//! the SSH port), then stop before the SSH deploy. Prints one JSON line: wall seconds and the API requests made.
//!
//! Usage: `aws_provision SPEC` with the usual AWS environment (credentials, `AWS_ENDPOINT_URL`) and
//! `SFUCTL_STATE_DIR`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use sfuctl::engine::{self, Timings};
use sfuctl::provider::catalog;
use sfuctl::commands::{load_valid_spec, timeouts};
use sfuctl::deploy::Deployment;
use sfuctl::render::Renderer;
use sfuctl::secret::Secret;
use sfuctl::spec::FileCheck;

#[tokio::main]
async fn main() -> ExitCode {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: aws_provision SPEC");
        return ExitCode::from(2);
    };
    match run(Path::new(&path)).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => ExitCode::from(sfuctl::error::report(&e) as u8),
    }
}

async fn run(path: &Path) -> anyhow::Result<()> {
    let started = Instant::now();
    let spec = load_valid_spec(path, FileCheck::Warn)?.spec;
    let base = path.parent().unwrap_or(Path::new("."));
    let provider = catalog::require(&spec)?;
    let renderer = Renderer::new(None)?;
    let dep = Deployment::new(spec, sfuctl::invocation::Invocation::new(path), base, timeouts(None, None))?;
    let (hosts, report) = engine::apply(&dep, provider, &renderer, &Secret::new(String::from("bench")), &Timings::default(), |_| Ok(())).await?;
    let seconds = started.elapsed().as_secs_f64();
    let addresses: Vec<&str> = hosts.iter().map(|h| h.address.as_str()).collect();
    println!(
        "{}",
        serde_json::json!({ "seconds": seconds, "requests": report.requests, "mutating_requests": report.mutating_requests, "hosts": addresses })
    );
    Ok(())
}
