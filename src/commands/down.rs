//! `sfuctl down SPEC`: remove what sfuctl put on the hosts (the service, its nftables table, /opt/sfuctl/<name>)
//! and nothing else. Asks first unless `--yes`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::Result;
use serde_json::json;

use crate::cli::{DownArgs, Output};
use crate::commands::{base_dir, cloud_not_ready, load_valid_spec, report_failures, timeouts};
use crate::deploy::{Deployment, down_host, for_each_host};
use crate::error::{Exit, UserError};
use crate::render::{Layout, PLACEHOLDER_ADDRESS, host_targets, nft_table, service_name};
use crate::spec::FileCheck;

/// Runs `down`.
pub async fn execute(args: &DownArgs, output: Output) -> Result<Exit> {
    let loaded = load_valid_spec(&args.spec, FileCheck::Warn)?;
    let spec = loaded.spec;
    cloud_not_ready(&spec, "down")?;
    let hosts = host_targets(&spec, PLACEHOLDER_ADDRESS);
    if !args.yes {
        let names: Vec<String> = hosts.iter().map(|h| format!("{} ({})", h.name, h.address)).collect();
        eprintln!(
            "sfuctl will remove deployment `{}` from {}:\n  - service {}\n  - nftables table inet {}\n  - {}\nNothing else on the hosts is touched.",
            spec.name,
            names.join(", "),
            service_name(&spec),
            nft_table(&spec),
            Layout::of(&spec).root
        );
        confirm()?;
    }
    let dep = Deployment::new(spec, base_dir(&args.spec), timeouts(args.connect_timeout, None))?;
    let results = for_each_host(&dep, &hosts, |dep, host| async move { down_host(&dep, &host).await }).await;
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

/// Asks for `yes` on the terminal, like `terraform destroy`. Without a terminal, refuses: `--yes` says it.
fn confirm() -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Err(UserError::input("refusing to remove anything without confirmation: there is no terminal to ask")
            .hint("pass --yes to confirm in scripts")
            .into());
    }
    eprint!("Only 'yes' will be accepted to confirm.\n  Enter a value: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    std::io::stdin().lock().read_line(&mut answer)?;
    if answer.trim() != "yes" {
        return Err(UserError::input("cancelled: nothing was removed").into());
    }
    Ok(())
}
