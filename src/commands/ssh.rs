//! `sfuctl ssh SPEC [HOST] [-- CMD]`: a shell, or one command, on a host through OpenSSH, with the host key sfuctl
//! pinned enforced (see `openssh.rs`).

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::commands::{base_dir, load_valid_spec_quietly, pick_host, timeouts};
use crate::invocation::Invocation;
use crate::deploy::Deployment;
use crate::engine;
use crate::openssh;
use crate::provider::catalog;
use crate::spec::FileCheck;

/// Arguments of `ssh`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sfuctl ssh spec.yaml
  sfuctl ssh spec.yaml media-1 -- systemctl status --no-pager
  sfuctl ssh spec.yaml -- 'nft list ruleset | head'     (one quoted word: the host's shell reads it)")]
pub struct SshArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// The host, by name (as `sfuctl status` shows it) or address; needed when there are several.
    pub host: Option<String>,
    /// Seconds to wait for SSH [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
    /// A command to run instead of a shell, after `--`; sfuctl exits with its exit code (255: ssh failed).
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Runs `ssh`; returns the exit code of the remote command (or shell).
pub async fn execute(args: &SshArgs) -> Result<u8> {
    let loaded = load_valid_spec_quietly(&args.spec, FileCheck::Warn)?;
    let spec = loaded.spec;
    let provider = catalog::require(&spec)?;
    let (hosts, _) = engine::existing_hosts(&spec, provider.as_ref()).await?;
    let host = pick_host(&spec, &hosts, args.host.as_deref(), &Invocation::new(&args.spec))?;
    let dep = Deployment::new(spec, Invocation::new(&args.spec), base_dir(&args.spec), timeouts(args.connect_timeout, None))?;
    let (session, ssh) = openssh::for_host(&dep, &host).await?;
    drop(session);
    let status = ssh.run(&args.command, false).await?;
    Ok(openssh::exit_code(status))
}
