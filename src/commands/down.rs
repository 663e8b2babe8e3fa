//! `sfuctl down SPEC`: remove what sfuctl put on the hosts (the service, its nftables table, /opt/sfuctl/<name>)
//! and nothing else. Asks first unless `--yes`.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::output::Output;
use crate::engine::{self, Timings};
use crate::provider::catalog::{self, ProviderData};
use crate::commands::{base_dir, confirm, load_valid_spec_quietly, report_failures, timeouts};
use crate::invocation::Invocation;
use crate::deploy::{Deployment, down_host, for_each_host};
use crate::error::{Exit, report};
use crate::owner::Owner;
use crate::render::{Layout, nft_table, service_name};
use crate::spec::{FileCheck, Spec};
use crate::state::StateFile;

/// Arguments of `down`.
#[derive(Debug, Args)]
pub struct DownArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// Do not ask for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Seconds to wait for SSH [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
}

/// Runs `down`.
pub async fn execute(args: &DownArgs, output: Output) -> Result<Exit> {
    let loaded = load_valid_spec_quietly(&args.spec, FileCheck::Warn)?;
    let provider = catalog::require(&loaded.spec)?;
    // One run of a deployment at a time on this machine (`up` takes the same lock).
    let _lock = crate::state::DeploymentLock::acquire(&loaded.spec.name, crate::state::lock_timeout()).await?;
    // Servers sfuctl made go through the API (deleting one removes what was on it); on servers it was given, it
    // removes over SSH what it put there.
    if ProviderData::get(loaded.spec.provider.kind).creates_servers() {
        return cloud_down(args, output, &loaded.spec, provider).await;
    }
    let spec = loaded.spec;
    let (hosts, _) = engine::existing_hosts(&spec, provider.as_ref()).await?;
    let names: Vec<String> = hosts.iter().map(|h| format!("{} ({})", h.name, h.address)).collect();
    confirm(
        args.yes,
        &format!(
            "sfuctl will remove deployment `{}` from {}:\n  - service {}\n  - nftables table inet {}\n  - {}\nNothing else on the hosts is touched.",
            spec.name,
            names.join(", "),
            service_name(&spec),
            nft_table(&spec),
            Layout::of(&spec).root
        ),
    )?;
    let dep = Deployment::new(spec, Invocation::new(&args.spec), base_dir(&args.spec), timeouts(args.connect_timeout, None))?;
    let results = for_each_host(&dep, &hosts, |dep, host| async move { down_host(&dep, &host).await }).await;
    if results.iter().all(|(_, r)| r.is_ok()) {
        // Nothing runs with the old secret any more: a later `up` is a first deployment, whatever its secret.
        dep.with_state(|s| {
            s.state.secret = None;
            s.save()
        })?;
    }
    match output {
        Output::Json => {
            let hosts: Vec<_> = results
                .iter()
                .map(|(h, r)| match r {
                    Ok(d) => json!({ "name": d.name, "ok": true, "removed": d.removed }),
                    Err(e) => json!({ "name": h.name, "ok": false, "error": format!("{e:#}") }),
                })
                .collect();
            println!("{}", serde_json::to_string_pretty(&json!({ "hosts": hosts }))?);
        }
        Output::Text => {
            for (_, r) in &results {
                if let Ok(d) = r {
                    if d.removed.is_empty() {
                        println!("{}: already clean", d.name);
                    } else {
                        println!("{}: removed {}", d.name, d.removed.join(", "));
                    }
                }
            }
        }
    }
    report_failures(&results)
}

/// `down` on a cloud: deletes the servers, the firewall and the SSH key sfuctl made (found by the owner tag and
/// names, not the local state), after confirmation. No SSH: deleting a server removes what was on it.
async fn cloud_down(args: &DownArgs, output: Output, spec: &Spec, provider: std::sync::Arc<dyn crate::provider::Provider>) -> Result<Exit> {
    let owner = Owner::new(&spec.name);
    // The key is found by fingerprint; without the public key file it cannot be found, and is left alone.
    let public_key = engine::public_key(spec, base_dir(&args.spec)).ok();
    // A tagged server whose ID sfuctl saved is the deployment's whatever its name; anything else the API returns
    // must carry the tag and sfuctl's name (refresh warns about, and leaves alone, what does not).
    let saved_ids: Vec<String> = StateFile::load(&spec.name)?.state.resources.iter().filter(|(k, _)| k.starts_with("server:")).map(|(_, v)| v.clone()).collect();
    let current = engine::refresh::refresh_with(provider.as_ref(), ProviderData::get(spec.provider.kind), &owner, public_key.as_deref(), &saved_ids).await?;
    let mut lines: Vec<String> = current.servers.iter().map(|s| format!("  - server {} ({})", s.name, s.id)).collect();
    for fw in current.firewall.iter().chain(&current.extra_firewalls) {
        lines.push(format!("  - firewall {} ({})", fw.name, fw.id));
    }
    if let Some(key) = current.key.as_ref().filter(|k| k.name == owner.ssh_key_name()) {
        lines.push(format!("  - ssh key {} ({})", key.name, key.fingerprint));
    }
    let teardown = if lines.is_empty() {
        eprintln!("Nothing to delete: no resource carries the tag {} or the name {}.", owner.tag(), owner.prefix());
        engine::Teardown::default()
    } else {
        confirm(args.yes, &format!("sfuctl will delete from {}:\n{}", provider.name(), lines.join("\n")))?;
        engine::destroy(provider, &owner, &current, &Timings::default()).await
    };
    if teardown.failed.is_empty() {
        let mut state = StateFile::load(&spec.name)?;
        state.state.resources.clear();
        state.state.hosts.clear();
        // Every pin of a cloud deployment is one of its servers': gone with them (a new server may get the address).
        state.state.host_keys.clear();
        // And nothing runs with the old secret: a later `up` is a first deployment, whatever its secret.
        state.state.secret = None;
        state.save()?;
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&json!({ "deleted": teardown.deleted, "failed": teardown.failed }))?),
        Output::Text => {
            for d in &teardown.deleted {
                println!("deleted {d}");
            }
        }
    }
    if teardown.failed.is_empty() {
        return Ok(Exit::Success);
    }
    for f in &teardown.failed {
        report(&anyhow::anyhow!("could not delete {f}"));
    }
    eprintln!("Run `{}` again to retry; everything left still carries the tag {} or the name {}.", Invocation::new(&args.spec).command("down", ""), owner.tag(), owner.prefix());
    Ok(Exit::Failed)
}
