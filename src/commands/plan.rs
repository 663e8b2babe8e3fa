//! `sfuctl plan SPEC`: what `up` would do, without doing it.

use anyhow::Result;

use crate::cli::{Output, PlanArgs};
use crate::cloud;
use crate::provider::Owner;
use crate::commands::{base_dir, load_valid_spec};
use crate::error::Exit;
use crate::plan::Plan;
use crate::providers::ProviderData;
use crate::secret::Secret;
use crate::render::{PLACEHOLDER_ADDRESS, Renderer, host_targets};
use crate::spec::FileCheck;

/// Runs `plan`.
pub async fn execute(args: &PlanArgs, output: Output) -> Result<Exit> {
    let loaded = load_valid_spec(&args.spec, FileCheck::Warn)?;
    let spec = &loaded.spec;
    let base = base_dir(&args.spec);

    // Render every host once, so a template that fails is found now rather than in the middle of `up`.
    let renderer = Renderer::new(args.templates.as_deref())?;
    let secret = Secret::random()?;
    for host in host_targets(spec, PLACEHOLDER_ADDRESS) {
        renderer.render_host(spec, base, &host, &secret)?;
    }

    let data = ProviderData::get(spec.provider.kind);
    let mut notes = vec![format!(
        "Planning deployment `{}` on {}{}.",
        spec.name,
        data.title,
        spec.provider.region.as_deref().map(|r| format!(" ({r})")).unwrap_or_default()
    )];
    let plan = if spec.provider.kind.is_cloud() {
        let sources: Vec<String> = data.credentials.env.iter().map(|v| format!("${v}")).collect();
        match cloud::provider_for(spec)? {
            None => {
                notes.push(format!("No credentials found ({} unset): planned against an empty account.", sources.join(", ")));
                Plan::against_nothing(spec, base, notes)
            }
            Some(provider) => {
                let owner = Owner::new(&spec.name);
                let public_key = cloud::public_key(spec, base).ok();
                if public_key.is_none() {
                    notes.push("The SSH public key file is missing: whether the key is registered is not known.".into());
                }
                let current = cloud::refresh(provider.as_ref(), &owner, public_key.as_deref()).await?;
                notes.push(format!(
                    "Refreshed from {}: {} server(s) with tag {}, firewall {}.",
                    data.title,
                    current.servers.len(),
                    owner.tag(),
                    if current.firewall.is_some() { "found" } else { "not found" }
                ));
                let mut diff = cloud::Diff::new(spec, &owner, &current);
                if public_key.is_none() {
                    diff.create_key = false;
                }
                if !diff.keep.is_empty() {
                    notes.push(format!("{} existing server(s) are converged over SSH by `up` (uploads only what changed).", diff.keep.len()));
                }
                Plan::refreshed(spec, notes, diff.changes(spec, &owner))
            }
        }
    } else {
        notes.push("Hosts are not contacted by plan: it shows everything `up` installs; `up` skips what is already in place.".into());
        Plan::against_nothing(spec, base, notes)
    };
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Output::Text => print!("{}", plan.to_text()),
    }
    Ok(if args.detailed_exitcode && plan.has_changes() { Exit::CheckFailed } else { Exit::Success })
}
