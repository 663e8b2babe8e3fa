//! `sfuctl plan SPEC`: what `up` would do, without doing it.

use anyhow::Result;

use crate::cli::{Output, PlanArgs};
use crate::commands::{base_dir, load_valid_spec};
use crate::error::Exit;
use crate::plan::Plan;
use crate::providers::ProviderData;
use crate::secret::Secret;
use crate::render::{PLACEHOLDER_ADDRESS, Renderer, host_targets};
use crate::spec::FileCheck;

/// Runs `plan`.
pub fn execute(args: &PlanArgs, output: Output) -> Result<Exit> {
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
    if spec.provider.kind.is_cloud() {
        let sources: Vec<String> = data.credentials.env.iter().map(|v| format!("${v}")).collect();
        notes.push(match data.credentials_found() {
            None => format!("No credentials found ({} unset): planned against an empty account.", sources.join(", ")),
            Some(found) => format!(
                "Credentials found ({found}), but this build cannot read existing {} resources yet: planned against an empty account.",
                data.title
            ),
        });
    } else {
        notes.push("Hosts are not contacted by plan: it shows everything `up` installs; `up` skips what is already in place.".into());
    }
    let plan = Plan::against_nothing(spec, base, notes);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&plan)?),
        Output::Text => print!("{}", plan.to_text()),
    }
    Ok(if args.detailed_exitcode && plan.has_changes() { Exit::CheckFailed } else { Exit::Success })
}
