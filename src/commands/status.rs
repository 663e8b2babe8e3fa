//! `sfuctl status SPEC`: what runs where: per host its address, the service's state (with its restarts and last
//! exit) and since when, the artifact's sha256, the ports bound and the host firewall. Exits 0 when every service
//! runs, 3 when one does not (or nothing is deployed), 1 when a host could not be asked.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::output::Output;
use crate::engine;
use crate::provider::catalog::{self, ProviderData};
use crate::commands::{base_dir, load_valid_spec, report_failures, timeouts};
use crate::invocation::Invocation;
use crate::deploy::{Deployment, for_each_host, status_host};
use crate::error::Exit;
use crate::spec::FileCheck;

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// Seconds to wait for SSH [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
}

/// Runs `status`.
pub async fn execute(args: &StatusArgs, output: Output) -> Result<Exit> {
    let loaded = load_valid_spec(&args.spec, FileCheck::Warn)?;
    let spec = loaded.spec;
    let provider = catalog::require(&spec)?;
    let (hosts, current) = engine::existing_hosts(&spec, provider.as_ref()).await?;
    // Existing hosts are in the spec, not in a cloud: the JSON's `servers` lists cloud servers only.
    let servers = if ProviderData::get(spec.provider.kind).creates_servers() { current.servers } else { Vec::new() };
    let nothing_deployed = ProviderData::get(spec.provider.kind).creates_servers() && servers.is_empty();
    if nothing_deployed {
        eprintln!("No servers carry the tag {}: not deployed (run `{}`).", crate::owner::Owner::new(&spec.name).tag(), Invocation::new(&args.spec).command("up", ""));
    }
    let dep = Deployment::new(spec, Invocation::new(&args.spec), base_dir(&args.spec), timeouts(args.connect_timeout, None))?;
    let results = for_each_host(&dep, &hosts, |dep, host| async move { status_host(&dep, &host).await }).await;
    match output {
        Output::Json => {
            let hosts: Vec<_> = results
                .iter()
                .map(|(h, r)| match r {
                    Ok(s) => serde_json::to_value(s).unwrap_or_default(),
                    Err(e) => json!({ "name": h.name, "address": h.address, "error": format!("{e:#}") }),
                })
                .collect();
            let cloud: Vec<_> = servers
                .iter()
                .map(|s| json!({ "name": s.name, "id": s.id, "status": s.status.to_string(), "public_ipv4": s.public_ipv4 }))
                .collect();
            println!("{}", serde_json::to_string_pretty(&json!({ "servers": cloud, "hosts": hosts }))?);
        }
        Output::Text => {
            // Nothing deployed on a cloud: the message above says so; an empty table would only add noise.
            if !results.is_empty() {
                println!("{:<16} {:<16} {:<26} {:<22} {:<14} PORTS BOUND", "HOST", "ADDRESS", "SERVICE", "SINCE", "ARTIFACT");
            }
            for (host, r) in &results {
                match r {
                    Ok(s) => {
                        let service = if s.service.state == "not deployed" { s.service.summary.clone() } else { format!("{} ({})", s.service.summary, s.manager.as_str()) };
                        let since = s.service.since.map(utc).unwrap_or_else(|| "-".into());
                        let artifact = s.artifact_sha256.as_deref().map(|a| a[..a.len().min(12)].to_string()).unwrap_or_else(|| "-".into());
                        let mut ports = if s.ports_bound.is_empty() { "-".to_string() } else { s.ports_bound.join(", ") };
                        if !s.ports_missing.is_empty() {
                            ports.push_str(&format!(" (not bound: {})", s.ports_missing.join(", ")));
                        }
                        println!("{:<16} {:<16} {:<26} {:<22} {:<14} {ports}", s.name, s.address, service, since, artifact);
                        if s.service.state != "not deployed" {
                            println!("{:<16} host firewall: {}", "", s.firewall.line(&s.firewall_table));
                        }
                    }
                    Err(_) => println!("{:<16} {:<16} {:<26}", host.name, host.address, "error (see below)"),
                }
            }
        }
    }
    let failed = report_failures(&results)?;
    let not_running = nothing_deployed || results.iter().any(|(_, r)| r.as_ref().is_ok_and(|s| !s.service.running()));
    Ok(match failed {
        Exit::Success if not_running => Exit::CheckFailed,
        other => other,
    })
}

/// Unix seconds as `YYYY-MM-DD HH:MM:SSZ`.
fn utc(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}Z", rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::utc(1_795_999_999), "2026-11-30 00:53:19Z");
    }
}
