//! `sfuctl up SPEC`: deploy or converge. On a cloud it first makes what the spec wants (key, firewall, servers)
//! and waits for it; then, for every host, it uploads what changed, installs the host firewall, starts or
//! restarts the service once and waits until it is healthy.

use std::sync::Arc;

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::artifact::Artifact;
use crate::owner::Owner;
use crate::plan::Plan;
use crate::output::Output;
use crate::audit_all;
use crate::engine::{self, Timings};
use crate::provider::catalog::{self, ProviderData};
use crate::audit::AuditOptions;
use crate::commands::{base_dir, confirm_cloud_changes, load_valid_spec, report_failures, timeouts};
use crate::audit::HostAudit;
use crate::invocation::Invocation;
use crate::deploy::{Deployment, HostOutcome, for_each_host, up_host};
use crate::engine::CloudReport;
use crate::render::HostTarget;
use crate::error::{Exit, UserError};
use crate::interrupt;
use crate::render::Renderer;
use crate::secret::Secret;
use crate::spec::{FileCheck, resolve_path};

/// Arguments of `up`.
#[derive(Debug, Args)]
pub struct UpArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// Use templates from this directory where it has them; the embedded ones otherwise.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Seconds to wait for SSH (connect, handshake and login) [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
    /// Seconds to wait for the service to become healthy [default: 60].
    #[arg(long, value_name = "SECONDS")]
    pub health_timeout: Option<u64>,
    /// Do not ask before creating or deleting cloud resources (servers, firewall, SSH key). Without a terminal,
    /// needed whenever `up` would do so; a run that changes no cloud resource never asks.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Skip the audit that ends `up` (it fails `up` with exit 3 when a check fails).
    #[arg(long)]
    pub no_audit: bool,
    /// Probe only N ports of the media range in the final audit (default: every free port).
    #[arg(long, value_name = "N", conflicts_with = "no_audit")]
    pub sample: Option<usize>,
    /// Deploy a shared secret other than the one last deployed (every client's credentials change with it);
    /// without this flag `up` refuses a different secret.
    #[arg(long)]
    pub rotate_secret: bool,
}

/// Runs `up`.
pub async fn execute(args: &UpArgs, output: Output) -> Result<Exit> {
    let started = std::time::Instant::now();
    let loaded = load_valid_spec(&args.spec, FileCheck::Required)?;
    let spec = loaded.spec;
    let base = base_dir(&args.spec);
    let provider = catalog::require(&spec)?;
    let renderer = Arc::new(Renderer::new(args.templates.as_deref())?);
    let secret = Arc::new(shared_secret(&spec)?);
    let artifact = match &spec.sfu.artifact {
        Some(raw) => Some(Arc::new(Artifact::prepare(&resolve_path(raw, base))?)),
        None => None,
    };
    // One run of a deployment at a time on this machine; taken before the state is read.
    let _lock = crate::state::DeploymentLock::acquire(&spec.name, crate::state::lock_timeout()).await?;
    let dep = Deployment::new(spec, Invocation::new(&args.spec), base, timeouts(args.connect_timeout, args.health_timeout))?;
    check_secret_unchanged(&dep, &secret, args.rotate_secret)?;
    // From here on Ctrl-C stops at the next safe point, saying what exists and how to go on.
    interrupt::listen();
    let yes = args.yes;
    let (hosts, cloud) = engine::apply(&dep, Arc::clone(&provider), &renderer, &secret, &Timings::default(), |diff| {
        confirm_cloud_changes(yes, &dep.invocation, &cloud_plan(&dep.spec, base, diff).to_text())
    })
    .await
    .map_err(|e| stopped(&dep, &args.spec, e))?;
    interrupt::check("after the cloud part, before deploying to any host").map_err(|e| stopped(&dep, &args.spec, e))?;
    let cloud_seconds = started.elapsed().as_secs_f64();
    let results = for_each_host(&dep, &hosts, |dep, host| {
        let (artifact, secret, renderer) = (artifact.clone(), Arc::clone(&secret), Arc::clone(&renderer));
        async move { up_host(&dep, &host, artifact.as_deref(), &secret, &renderer).await }
    })
    .await;
    remember_secret(&dep, &secret)?;
    interrupt::check("after deploying to the hosts, before the audit").map_err(|e| stopped(&dep, &args.spec, e))?;
    let hosts_seconds = started.elapsed().as_secs_f64() - cloud_seconds;

    // Every host deployed: prove it from outside, unless asked not to.
    let audit = if results.iter().all(|(_, r)| r.is_ok()) && !args.no_audit {
        let (_, current) = engine::existing_hosts(&dep.spec, provider.as_ref()).await?;
        let view = audit_all::cloud_view(&dep.spec, provider.as_ref(), current);
        let opts = AuditOptions { sample: args.sample, ..AuditOptions::default() };
        let sessions = results.iter().filter_map(|(_, r)| r.as_ref().ok().and_then(|o| o.session.clone())).collect();
        Some(audit_all::audit_all(&dep, &hosts, view, opts, sessions).await)
    } else {
        None
    };

    // Existing hosts have no cloud side to report; a cloud's counts include the audit's refresh.
    let cloud = ProviderData::get(dep.spec.provider.kind).creates_servers().then(|| {
        let stats = provider.requests();
        CloudReport { requests: stats.total, mutating_requests: stats.mutating, ..cloud }
    });
    let total = started.elapsed().as_secs_f64();
    let seconds = json!({ "cloud": cloud_seconds, "hosts": hosts_seconds, "audit": total - cloud_seconds - hosts_seconds, "total": total });
    let report = UpReport { cloud, results, audit, seconds, invocation: dep.invocation.clone() };
    output.emit(&report.to_json(), || report.to_text())?;
    report.exit()
}

/// What `up` is about to do in the cloud, as `plan` would show it (the same diff and the same text).
fn cloud_plan(spec: &crate::spec::Spec, base: &std::path::Path, diff: &engine::Diff) -> Plan {
    let data = ProviderData::get(spec.provider.kind);
    let owner = Owner::new(&spec.name);
    let note = format!("sfuctl will create or delete cloud resources on {} for deployment `{}`.", data.title, spec.name);
    Plan::new(spec, vec![note], diff.changes_with_new_hosts(spec, data, &owner, base), true)
}

/// The shared secret from `$SFUCTL_SECRET` (or `sfu.secret_env`): required by kinds that use one, else empty.
fn shared_secret(spec: &crate::spec::Spec) -> Result<Secret> {
    let secret_env = spec.sfu.secret_env();
    let kind = spec.sfu.kind.descriptor();
    match std::env::var(secret_env) {
        Ok(v) if kind.min_secret_len.is_some_and(|min| !v.is_empty() && v.chars().count() < min) => Err(UserError::input(format!(
            "${secret_env} has {} characters: {} needs a shared secret of at least {} (a shorter one can be guessed)",
            v.chars().count(),
            kind.title,
            kind.min_secret_len.unwrap_or_default()
        ))
        .hint(format!("export {secret_env}=$(openssl rand -hex 32), and keep it: clients derive their credentials from it"))
        .into()),
        Ok(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ if kind.needs_secret => Err(UserError::input(format!("${secret_env} is not set: {} needs a shared secret", spec.sfu.kind.as_str()))
            .hint(format!("export {secret_env}=$(openssl rand -hex 32), and keep it: clients derive their credentials from it"))
            .into()),
        // Other kinds do not use it; a value is still needed for the templates.
        _ => Ok(Secret::new(String::new())),
    }
}

/// Refuses a shared secret other than the one last deployed (its salted fingerprint in the local state), unless
/// the user asked to rotate it: a changed secret silently breaks every client's credentials.
fn check_secret_unchanged(dep: &Deployment, secret: &Secret, rotate: bool) -> Result<()> {
    if secret.expose().is_empty() || rotate {
        return Ok(());
    }
    let Some((old, new)) = dep.with_state(|s| s.state.secret.as_ref().filter(|f| !f.matches(secret)).map(|f| f.short_forms(secret))) else {
        return Ok(());
    };
    let secret_env = dep.spec.sfu.secret_env();
    Err(UserError::input(format!(
        "${secret_env} is not the secret last deployed to `{}` (fingerprint {new}, deployed {old}): every client's credentials would change",
        dep.spec.name
    ))
    .hint(format!("export the secret deployed before; or, to change it on purpose, run `{}` and give clients the new ${secret_env}", dep.invocation.command("up", "--rotate-secret")))
    .into())
}

/// Remembers the secret just deployed as a salted fingerprint (a new salt only when it changed).
fn remember_secret(dep: &Deployment, secret: &Secret) -> Result<()> {
    if secret.expose().is_empty() {
        return Ok(());
    }
    let unchanged = dep.with_state(|s| s.state.secret.as_ref().is_some_and(|f| f.matches(secret)));
    if unchanged {
        return Ok(());
    }
    let fingerprint = crate::secret::SecretFingerprint::new(secret)?;
    dep.with_state(|s| {
        s.state.secret = Some(fingerprint);
        s.save()
    })
}

/// An error of a run stopped by Ctrl-C gets what exists now (the IDs in the local state) printed before it, and
/// the ways to go on as its hint; any other error passes unchanged.
fn stopped(dep: &Deployment, spec: &std::path::Path, err: anyhow::Error) -> anyhow::Error {
    if !interrupt::is_interrupted(&err) {
        return err;
    }
    let (path, resources) = dep.with_state(|s| (s.path().display().to_string(), s.state.resources.clone()));
    if resources.is_empty() {
        eprintln!("interrupted: nothing of `{}` is recorded as created yet", dep.spec.name);
    } else {
        eprintln!("interrupted: what exists of `{}` now (IDs saved in {path}):", dep.spec.name);
        for (what, id) in &resources {
            let what = what.strip_prefix("server:").map_or_else(|| what.replace('_', " "), |name| format!("server {name}"));
            eprintln!("  {what}: {id}");
        }
    }
    let spec = spec.display();
    UserError::interrupted(format!("`sfuctl up` was interrupted; everything it created is tagged {} and saved", crate::owner::Owner::new(&dep.spec.name).tag()))
        .caused_by(err)
        .hint(format!("run `sfuctl up {spec}` again to continue where it stopped, or `sfuctl down {spec}` to remove what exists"))
        .into()
}

/// What `up` did: the cloud, every host, the audit that ended it and how long each part took.
struct UpReport {
    cloud: Option<CloudReport>,
    results: Vec<(HostTarget, Result<HostOutcome>)>,
    audit: Option<Vec<(HostTarget, Result<HostAudit>)>>,
    seconds: serde_json::Value,
    /// How the user named the spec, for the commands the failure message names.
    invocation: Invocation,
}

impl UpReport {
    fn deployed(&self) -> Vec<&HostOutcome> {
        self.results.iter().filter_map(|(_, r)| r.as_ref().ok()).collect()
    }

    fn changed(&self) -> bool {
        self.cloud.as_ref().is_some_and(CloudReport::changed) || self.deployed().iter().any(|o| o.changed_anything())
    }

    /// `{"changed", "cloud", "hosts": [{"ok", "host"}], "audit", "seconds"}` (README, "Commands").
    fn to_json(&self) -> serde_json::Value {
        let hosts: Vec<_> = self
            .results
            .iter()
            .map(|(h, r)| match r {
                Ok(o) => json!({ "ok": true, "host": o }),
                Err(e) => json!({ "ok": false, "host": { "name": h.name, "address": h.address }, "error": format!("{e:#}") }),
            })
            .collect();
        let audit = self.audit.as_ref().map(|a| audit_all::to_json(a));
        json!({ "changed": self.changed(), "cloud": self.cloud, "hosts": hosts, "audit": audit, "seconds": self.seconds })
    }

    fn to_text(&self) -> String {
        let mut out = String::new();
        if let Some(r) = self.cloud.as_ref().filter(|r| r.changed()) {
            out.push_str(&format!(
                "cloud: ssh key {}; firewall {}; {} server(s) created, {} deleted\n",
                if r.key_created { "created" } else { "unchanged" },
                r.firewall,
                r.servers_created.len(),
                r.servers_deleted.len()
            ));
        }
        let deployed = self.deployed();
        for o in &deployed {
            let mut parts = Vec::new();
            if o.artifact_bytes > 0 {
                parts.push(format!("artifact sent ({})", human_bytes(o.artifact_bytes)));
            }
            if !o.changed.is_empty() {
                parts.push(format!("{} path(s) changed", o.changed.len()));
            }
            if !o.installed.is_empty() {
                parts.push(o.installed.summary());
            }
            parts.push(format!("host firewall {}", o.host_firewall));
            parts.push(format!("service {} ({})", o.service, o.manager.as_str()));
            out.push_str(&format!("{} ({}): {}\n  healthy: {}\n", o.name, o.address, parts.join("; "), o.health.join("; ")));
        }
        if deployed.len() == self.results.len() && !self.changed() {
            // When the audit fails, the one message saying so (on stderr, from `exit`) also says nothing changed.
            if !self.audit_failed() {
                out.push_str(&format!("No changes. {} host(s) already match the spec.\n", deployed.len()));
            }
        } else {
            out.push_str(&format!("Up: {} host(s) deployed, {} failed.\n", deployed.len(), self.results.len() - deployed.len()));
        }
        if let Some(audit) = &self.audit {
            out.push_str(&format!("\n{}", audit_all::to_text(audit)));
        }
        out
    }

    /// Whether the audit that ended `up` found a failing check.
    fn audit_failed(&self) -> bool {
        self.audit.as_ref().is_some_and(|a| audit_all::exit_of(a) == Exit::CheckFailed)
    }

    /// The one message (for stderr) saying what `up` did when the audit that ended it failed.
    fn audit_failure(&self) -> Option<String> {
        if !self.audit_failed() {
            return None;
        }
        let what = if self.changed() {
            format!("deployed to {} host(s)", self.results.len())
        } else {
            format!("no changes: {} host(s) already match the spec", self.results.len())
        };
        Some(format!(
            "error: {what}, but the audit found a failing check: media will not flow (see the audit above)\nhint: fix the layer the audit names (its hint says how), then run `{}` again, or `{}` to re-check",
            self.invocation.command("up", ""),
            self.invocation.command("audit", "")
        ))
    }

    /// 1 when a host failed (each error printed), else the audit's exit code.
    fn exit(&self) -> Result<Exit> {
        let deployed = report_failures(&self.results)?;
        match (&self.audit, deployed) {
            (Some(audit), Exit::Success) => {
                if let Some(message) = self.audit_failure() {
                    eprintln!("{message}");
                }
                Ok(audit_all::exit_of(audit))
            }
            (_, exit) => Ok(exit),
        }
    }
}

/// Bytes for people: `512 B`, `1.2 kB`, `3.4 MB`.
fn human_bytes(n: u64) -> String {
    match n {
        0..1_000 => format!("{n} B"),
        1_000..1_000_000 => format!("{:.1} kB", n as f64 / 1e3),
        _ => format!("{:.1} MB", n as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Check, Status};

    fn report(audit_status: Status) -> UpReport {
        let host = HostTarget::new("sfuctl-t-1", "203.0.113.9");
        let outcome = HostOutcome {
            name: host.name.clone(),
            address: host.address.clone(),
            manager: crate::service::Manager::Systemd,
            artifact_bytes: 0,
            file_bytes: 0,
            changed: Vec::new(),
            host_firewall: "unchanged",
            service: "unchanged",
            health: vec!["service active (systemd)".into()],
            installed: Default::default(),
            seconds: Default::default(),
            session: None,
        };
        let check = Check { id: "service", status: audit_status, detail: "sfuctl-t inactive".into(), hint: None, range: None };
        let audit = HostAudit { name: host.name.clone(), address: host.address.clone(), checks: vec![check], cause: (audit_status == Status::Fail).then_some("service") };
        UpReport { cloud: None, results: vec![(host.clone(), Ok(outcome))], audit: Some(vec![(host, Ok(audit))]), seconds: json!({}), invocation: Invocation::new(std::path::Path::new("specs/t.yaml")) }
    }

    #[test]
    fn an_unchanged_deployment_that_fails_its_audit_says_so_once() {
        let failed = report(Status::Fail);
        assert!(!failed.to_text().contains("No changes"), "{}", failed.to_text());
        let message = failed.audit_failure().expect("a failing audit has a message");
        assert!(message.starts_with("error: no changes: 1 host(s) already match the spec, but the audit found a failing check"), "{message}");
        assert!(!message.contains("deployed"), "{message}");
        assert!(message.contains("run `sfuctl up specs/t.yaml` again, or `sfuctl audit specs/t.yaml` to re-check"), "{message}");
    }

    #[test]
    fn an_unchanged_deployment_that_passes_says_no_changes() {
        let passed = report(Status::Pass);
        assert!(passed.to_text().contains("No changes. 1 host(s) already match the spec."), "{}", passed.to_text());
        assert!(passed.audit_failure().is_none());
    }
}
