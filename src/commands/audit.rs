//! `sfuctl audit SPEC`: every layer of every host, checked from outside; exit 3 when a check fails.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;

use crate::audit::{self, AuditOptions, CloudView, HostAudit};
use crate::cli::{AuditArgs, Output};
use crate::cloud;
use crate::commands::{base_dir, load_valid_spec, timeouts};
use crate::deploy::{Deployment, Session, for_each_host};
use crate::error::{Exit, report};
use crate::provider::Provider;
use crate::render::HostTarget;
use crate::spec::{FileCheck, ProviderKind};

/// Runs `audit`.
pub async fn execute(args: &AuditArgs, output: Output) -> Result<Exit> {
    let loaded = load_valid_spec(&args.spec, FileCheck::Warn)?;
    let spec = loaded.spec;
    let provider = if spec.provider.kind.is_cloud() { Some(cloud::require_provider(&spec)?) } else { None };
    let (hosts, cloud_view) = hosts_and_cloud(&spec, provider.as_deref()).await?;
    let dep = Deployment::new(spec, base_dir(&args.spec), timeouts(args.connect_timeout, None))?;
    let opts = AuditOptions { sample: args.sample, probe_timeout: args.probe_timeout_ms.map_or(AuditOptions::default().probe_timeout, Duration::from_millis) };
    run(&dep, &hosts, cloud_view, opts, output).await
}

/// The hosts to audit and, on a cloud, what the provider says about them.
pub async fn hosts_and_cloud(spec: &crate::spec::Spec, provider: Option<&dyn Provider>) -> Result<(Vec<HostTarget>, Option<CloudView>)> {
    let (hosts, current) = cloud::existing_hosts(spec, provider).await?;
    let view = provider.zip(current).map(|(provider, current)| CloudView {
        provider: provider.name(),
        firewall: current.firewall,
        servers: current.servers,
        needs_outbound_rules: spec.provider.kind == ProviderKind::Digitalocean,
    });
    Ok((hosts, view))
}

/// Audits every host concurrently, reusing open sessions (by host name) where there are some; results in the
/// order given.
pub async fn audit_all(dep: &Arc<Deployment>, hosts: &[HostTarget], cloud_view: Option<CloudView>, opts: AuditOptions, sessions: Vec<Session>) -> Vec<(HostTarget, Result<HostAudit>)> {
    let view = Arc::new(cloud_view);
    let sessions = Arc::new(sessions);
    for_each_host(dep, hosts, |dep, host| {
        let view = Arc::clone(&view);
        let session = sessions.iter().find(|s| s.host.name == host.name).cloned();
        async move { audit::audit_host(&dep, &host, view.as_ref().as_ref(), opts, session).await }
    })
    .await
}

/// The audit as JSON: `{"ok", "hosts": [{"name", "address", "checks": [{"id", "status", "detail"}], "cause"}]}`.
pub fn to_json(results: &[(HostTarget, Result<HostAudit>)]) -> serde_json::Value {
    let ok = results.iter().all(|(_, r)| r.as_ref().is_ok_and(|a| !a.failed()));
    let hosts: Vec<serde_json::Value> = results
        .iter()
        .map(|(h, r)| match r {
            Ok(a) => serde_json::to_value(a).unwrap_or_default(),
            Err(e) => json!({ "name": h.name, "address": h.address, "checks": [], "error": format!("{e:#}") }),
        })
        .collect();
    json!({ "ok": ok, "hosts": hosts })
}

/// The exit code of an audit: 1 when a host could not be audited (its error is printed), 3 when a check
/// failed, 0 otherwise.
pub fn exit_of(results: &[(HostTarget, Result<HostAudit>)]) -> Exit {
    let mut could_not_run = false;
    for (_, r) in results {
        if let Err(e) = r {
            report(e);
            could_not_run = true;
        }
    }
    if could_not_run {
        Exit::Failed
    } else if results.iter().any(|(_, r)| r.as_ref().is_ok_and(HostAudit::failed)) {
        Exit::CheckFailed
    } else {
        Exit::Success
    }
}

/// Audits `hosts` and prints the result; exit 3 when a check fails, 1 when a host could not be audited.
pub async fn run(dep: &Arc<Deployment>, hosts: &[HostTarget], cloud_view: Option<CloudView>, opts: AuditOptions, output: Output) -> Result<Exit> {
    let results = audit_all(dep, hosts, cloud_view, opts, Vec::new()).await;
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&to_json(&results))?),
        Output::Text => {
            let audits: Vec<HostAudit> = results.iter().filter_map(|(_, r)| r.as_ref().ok().cloned()).collect();
            print!("{}", audit::to_text(&audits));
        }
    }
    Ok(exit_of(&results))
}
