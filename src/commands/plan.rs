//! `sfuctl plan SPEC`: what `up` would do, without doing it.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Result;
use clap::Args;

use crate::artifact::Artifact;
use crate::commands::{base_dir, load_valid_spec, timeouts};
use crate::invocation::Invocation;
use crate::deploy::{Deployment, for_each_host, preview_host};
use crate::engine::{self, Current, Diff};
use crate::error::Exit;
use crate::output::Output;
use crate::owner::Owner;
use crate::plan::{Change, Plan, host_changes};
use crate::provider::catalog::{self, ProviderData};
use crate::render::{HostTarget, PLACEHOLDER_ADDRESS, Renderer, host_targets};
use crate::secret::Secret;
use crate::spec::{FileCheck, Spec, resolve_path};
use crate::state::StateFile;

/// Arguments of `plan`.
#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// Use templates from this directory where it has them (same layout as sfuctl's templates/, e.g.
    /// janus/janus.jcfg.j2); the embedded ones otherwise.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
    /// Exit 3 when the plan has changes, 0 when there are none (like terraform plan -detailed-exitcode).
    #[arg(long)]
    pub detailed_exitcode: bool,
}

/// Runs `plan`.
pub async fn execute(args: &PlanArgs, output: Output) -> Result<Exit> {
    let loaded = load_valid_spec(&args.spec, FileCheck::Warn)?;
    let spec = &loaded.spec;
    let base = base_dir(&args.spec);

    // Render every host once, so a template that fails is found now rather than in the middle of `up`.
    let renderer = Renderer::new(args.templates.as_deref())?;
    let (secret, secret_from_env) = Secret::from_env_or_random(spec.sfu.secret_env())?;
    for host in host_targets(spec, PLACEHOLDER_ADDRESS) {
        renderer.render_host(spec, base, &host, &secret)?;
    }

    let data = ProviderData::get(spec.provider.kind);
    let owner = Owner::new(&spec.name);
    let mut notes = vec![format!(
        "Planning deployment `{}` on {}{}.",
        spec.name,
        data.title,
        spec.provider.region.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    )];
    let public_key = engine::public_key(spec, base).ok();
    let (current, refreshed) = match catalog::connect(spec)? {
        None => {
            let sources: Vec<String> = data.credentials.env.iter().map(|v| format!("${v}")).collect();
            notes.push(format!("No credentials found ({} unset): planned against an empty account.", sources.join(", ")));
            (Current::default(), false)
        }
        Some(provider) => {
            let current = engine::refresh(provider.as_ref(), data, &owner, public_key.as_deref()).await?;
            if data.creates_servers() {
                if public_key.is_none() {
                    notes.push("The SSH public key file is missing: whether the key is registered is not known.".into());
                }
                let firewall = if !data.has_firewall() { "" } else if current.firewall.is_some() { ", firewall found" } else { ", firewall not found" };
                notes.push(format!("Refreshed from {}: {} server(s) with tag {}{firewall}.", data.title, current.servers.len(), owner.tag()));
            }
            (current, data.creates_servers())
        }
    };
    let mut diff = Diff::new(spec, data, &owner, &current);
    if refreshed && public_key.is_none() {
        diff.create_key = false;
    }
    let mut resources = diff.changes_with_new_hosts(spec, data, &owner, base);

    // Hosts sfuctl deployed to are inspected (one read-only round trip each), so a converged deployment says "No
    // changes" and --detailed-exitcode finds drift. A server found by the owner tag is sfuctl's; an existing host
    // is inspected once the local state says sfuctl deployed there (plan never contacts a host it has not been
    // to), and otherwise gets everything.
    let hosts = engine::targets(spec, &diff.keep);
    let state = StateFile::load(&spec.name)?;
    let (known, fresh): (Vec<HostTarget>, Vec<HostTarget>) =
        hosts.into_iter().partition(|h| data.creates_servers() || state.state.hosts.contains_key(&h.name));
    for host in &fresh {
        resources.extend(host_changes(spec, &spec.manifest(), host));
    }
    if !known.is_empty() {
        if !secret_from_env && spec.sfu.kind.descriptor().needs_secret {
            notes.push(format!("${} is unset: files holding the shared secret show as changed.", spec.sfu.secret_env()));
        }
        resources.extend(inspect_hosts(&loaded.spec, Invocation::new(&args.spec), base, &known, secret, renderer, &mut notes).await?);
    }
    let plan = Plan::new(spec, notes, resources, refreshed);
    output.emit(&plan, || plan.to_text())?;
    Ok(if args.detailed_exitcode && plan.has_changes() { Exit::CheckFailed } else { Exit::Success })
}

/// What `up` would change on hosts sfuctl deployed to, found over SSH (read-only); a host that cannot be
/// inspected gets everything, with a note saying why.
async fn inspect_hosts(spec: &Spec, invocation: Invocation, base: &Path, hosts: &[HostTarget], secret: Secret, renderer: Renderer, notes: &mut Vec<String>) -> Result<Vec<Change>> {
    let artifact = match spec.sfu.artifact.as_deref().map(|raw| resolve_path(raw, base)).filter(|p| p.exists()) {
        Some(path) => Some(Arc::new(Artifact::prepare(&path)?)),
        None => None,
    };
    let dep = Deployment::new(spec.clone(), invocation, base, timeouts(None, None))?;
    let (secret, renderer) = (Arc::new(secret), Arc::new(renderer));
    let previews = for_each_host(&dep, hosts, |dep, host| {
        let (artifact, secret, renderer) = (artifact.clone(), Arc::clone(&secret), Arc::clone(&renderer));
        async move { preview_host(&dep, &host, artifact.as_deref(), &secret, &renderer).await }
    })
    .await;
    let mut out = Vec::new();
    for (host, preview) in previews {
        match preview {
            Ok(changes) => out.extend(changes),
            Err(e) => {
                notes.push(format!("Could not inspect {} ({}): {e:#}. Showing everything `up` installs there.", host.name, host.address));
                out.extend(host_changes(spec, &spec.manifest(), &host));
            }
        }
    }
    notes.push(format!("Inspected {} host(s) over SSH for what `up` would change there.", hosts.len()));
    Ok(out)
}
