//! `sfuctl logs SPEC [HOST] [-f] [-n N]`: the service's log, from journald on systemd hosts or from the fallback
//! supervisor's log file elsewhere.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::commands::{base_dir, load_valid_spec_quietly, pick_host, print_stdout, timeouts};
use crate::invocation::Invocation;
use crate::deploy::{Deployment, Session};
use crate::engine;
use crate::error::{Exit, UserError};
use crate::openssh;
use crate::output::Output;
use crate::provider::catalog;
use crate::render::{HostTarget, service_name};
use crate::service::ServiceScripts;
use crate::spec::FileCheck;

/// Arguments of `logs`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sfuctl logs spec.yaml
  sfuctl logs spec.yaml media-1 -n 500
  sfuctl logs spec.yaml media-1 -f")]
pub struct LogsArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// The host, by name (as `sfuctl status` shows it) or address. Without it, every host's log in turn.
    pub host: Option<String>,
    /// Keep printing new lines as they come, until Ctrl-C (one host).
    #[arg(long, short = 'f')]
    pub follow: bool,
    /// How many of the last lines to print.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 100)]
    pub lines: usize,
    /// Seconds to wait for SSH [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
}

/// Runs `logs`.
pub async fn execute(args: &LogsArgs, output: Output) -> Result<Exit> {
    if args.follow && output == Output::Json {
        return Err(UserError::input("--follow prints lines as they come and has no JSON form").hint("leave out --output json, or --follow").into());
    }
    let loaded = load_valid_spec_quietly(&args.spec, FileCheck::Warn)?;
    let spec = loaded.spec;
    let provider = catalog::require(&spec)?;
    let (all, _) = engine::existing_hosts(&spec, provider.as_ref()).await?;
    let hosts = match (&args.host, args.follow) {
        (None, false) if !all.is_empty() => all,
        (wanted, _) => vec![pick_host(&spec, &all, wanted.as_deref(), &Invocation::new(&args.spec))?],
    };
    let dep = Deployment::new(spec, Invocation::new(&args.spec), base_dir(&args.spec), timeouts(args.connect_timeout, None))?;
    if args.follow {
        return follow(&dep, &hosts[0], args.lines).await;
    }
    let mut logs = Vec::new();
    for host in &hosts {
        let session = dep.connect(host).await?;
        logs.push((host, read_log(&dep, &session, args.lines).await?));
    }
    let text = match output {
        Output::Json => {
            let hosts: Vec<_> = logs.iter().map(|(h, log)| json!({ "name": h.name, "address": h.address, "log": log })).collect();
            format!("{}\n", serde_json::to_string_pretty(&json!({ "hosts": hosts }))?)
        }
        Output::Text => {
            let several = logs.len() > 1;
            let mut text = String::new();
            for (host, log) in &logs {
                if several {
                    text.push_str(&format!("==> {} ({}) <==\n", host.name, host.address));
                }
                text.push_str(log);
                if !log.is_empty() && !log.ends_with('\n') {
                    text.push('\n');
                }
            }
            text
        }
    };
    // `sfuctl logs SPEC | head` is common: a reader that stops early is fine.
    print_stdout(text.as_bytes(), "the log")
}

/// The service scripts for the host behind `session`.
fn scripts<'a>(dep: &'a Deployment, session: &Session, name: &'a str) -> ServiceScripts<'a> {
    ServiceScripts { manager: session.facts.manager, name, layout: &dep.layout, run_as: "" }
}

/// The last `lines` lines of the service's log on one host.
async fn read_log(dep: &Deployment, session: &Session, lines: usize) -> Result<String> {
    let name = service_name(&dep.spec);
    let scripts = scripts(dep, session, &name);
    let out = session.remote.exec(session.facts.as_root(&scripts.logs(lines))).await?;
    if !out.success() {
        return Err(UserError::failed(format!("cannot read the log of `{name}` on host `{}` ({})", session.host.name, scripts.log_location()))
            .caused_by(anyhow::anyhow!("{}", format!("{}{}", out.stdout, out.stderr).trim_end()))
            .hint(format!("is the deployment up there? `{}` shows what runs where", dep.invocation.command("status", "")))
            .into());
    }
    Ok(out.stdout)
}

/// Follows one host's log through OpenSSH (the pinned host key enforced) until Ctrl-C or the connection ends.
async fn follow(dep: &Deployment, host: &HostTarget, lines: usize) -> Result<Exit> {
    let (session, ssh) = openssh::for_host(dep, host).await?;
    let name = service_name(&dep.spec);
    let script = session.facts.as_root(&scripts(dep, &session, &name).follow_logs(lines));
    drop(session);
    let status = ssh.run(&[script], true).await?;
    // Ctrl-C (130) is how following ends.
    Ok(match openssh::exit_code(status) {
        0 | 130 => Exit::Success,
        _ => Exit::Failed,
    })
}
