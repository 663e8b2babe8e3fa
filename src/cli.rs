//! The command line: clap types, and the one `match` that hands each command to its module.

use std::process::ExitCode;

use clap::{ArgAction, CommandFactory, Parser, Subcommand};

use crate::commands::{self, AuditArgs, CompletionsArgs, DownArgs, InitArgs, LogsArgs, ManArgs, PlanArgs, RenderArgs, SpecArgs, SshArgs, StatusArgs, UpArgs};
use crate::error::{self, Exit};
use crate::output::Output;

/// Turn one YAML spec into a running, reachable WebRTC media host (SFU or TURN relay).
///
/// sfuctl derives every layer from the spec (cloud firewall, host firewall, the server's own config, the
/// service) through one port manifest, so the layers cannot disagree about which UDP ports carry media.
#[derive(Debug, Parser)]
#[command(name = "sfuctl", version, propagate_version = true, max_term_width = 110)]
#[command(after_help = "\
Examples:
  sfuctl init --provider digitalocean --kind janus
  sfuctl validate examples/janus-linode.yaml
  sfuctl plan examples/mediasoup-digitalocean.yaml
  sfuctl render examples/janus-linode.yaml --out /tmp/janus --address 203.0.113.5
  sfuctl up examples/existing-host.yaml
  sfuctl up examples/mediasoup-digitalocean.yaml --yes
  sfuctl status examples/existing-host.yaml --output json
  sfuctl audit examples/existing-host.yaml
  sfuctl down examples/existing-host.yaml --yes

Exit codes: 0 success; 1 an operation failed; 2 bad input (nothing was changed); 3 a check failed
(plan --detailed-exitcode: changes pending).")]
pub struct Cli {
    /// How to print results: human-readable text, or JSON for scripts. Progress and warnings always go to stderr.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// Show what sfuctl does, on stderr: -v every API request (method, path, status, time) and every SSH command
    /// run on a host; -vv also request bodies, whole commands and uploads (path, size). Tokens, signatures,
    /// passwords, shared secrets and private keys are always redacted. `SFUCTL_LOG` sets the same per area, in
    /// the style of RUST_LOG: `info`, `debug`, or `http=debug,ssh=info`.
    #[arg(long, short = 'v', global = true, action = ArgAction::Count)]
    pub verbose: u8,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// sfuctl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Write a commented starter spec for a provider and server kind (asks on a terminal; flags otherwise).
    ///
    /// It names your SSH key (~/.ssh/id_ed25519, id_ecdsa or id_rsa) and, for ssh.allow_from, the address your SSH
    /// session to this machine comes from ($SSH_CONNECTION) when that is a public one; sfuctl asks no one else.
    /// What it cannot know is a `<REPLACE-ME: ...>` placeholder, which `validate` refuses until it is filled in.
    Init(InitArgs),
    /// Check a spec: syntax, types, ports, CIDRs, names, provider limits. Changes nothing, needs no network.
    Validate(SpecArgs),
    /// Show what `up` would create, change or destroy: servers, firewall rules, files, services.
    ///
    /// With the provider's credentials set, the plan is made against what exists (found by the owner tag
    /// `sfuctl:<name>`); without them, against an empty account, and it says so.
    Plan(PlanArgs),
    /// Write every file a host would get (configs, service unit, host firewall, cloud-init) into a directory.
    ///
    /// Files land in DIR/<host>/<path on the host>, e.g.
    /// DIR/sfuctl-janus-demo-1/opt/sfuctl/janus-demo/config/janus.jcfg; cloud-init user-data in
    /// DIR/<host>/cloud-init/user-data.
    Render(RenderArgs),
    /// Deploy or converge: upload what changed, install the host firewall, start or restart the service once,
    /// and wait until it is healthy. Re-running on an unchanged spec changes nothing and says "No changes".
    ///
    /// On a cloud it first makes the SSH key, the firewall and the servers (found again by the owner tag
    /// sfuctl:<name>), and waits for them; before creating or deleting any of them it shows the plan and asks
    /// (--yes skips the question, and is required without a terminal). The SSH host key is pinned at first
    /// contact (or by ssh.host_key) and a changed key is refused.
    Up(UpArgs),
    /// Show what runs where: per host the service's state and since when, the artifact, the ports bound.
    ///
    /// The state is the same phrase the audit's service check uses: `active`, `crash-looping: restarted 4 times,
    /// last exit status 127`, `inactive`, `not deployed` (after `down`). Below each host, the host firewall: sfuctl's
    /// nftables table, what it lets in and how many packets it dropped.
    ///
    /// Exit codes: 0 every service runs; 3 a service is not running (crash-looping, stopped, failed) or nothing is
    /// deployed; 1 a host could not be asked (SSH, API); 2 bad input.
    Status(StatusArgs),
    /// Prove every layer from outside and name the one that breaks media, per host.
    ///
    /// Checks (ids are stable): cloud-firewall (live rules vs the manifest, attached, egress), ssh-exposure,
    /// host-firewall (the host's nftables ruleset evaluated for every public port), service (running, ports
    /// bound), config-consistency (the config on the host announces the public address and the manifest's
    /// range), udp-reachability (a short-lived responder on the host answers authenticated probes sent from here to
    /// every free port of the media range: silence is never success), tcp-reachability. Exit 0 when nothing fails
    /// (warnings allowed), 3 when a check fails, 1 when the audit itself could not run.
    Audit(AuditArgs),
    /// Remove what sfuctl made, nothing else: on a cloud the servers, firewall and SSH key carrying the owner tag;
    /// on existing hosts the service, its nftables table and /opt/sfuctl/<name>.
    ///
    /// Asks for confirmation unless --yes; without a terminal, --yes is required.
    Down(DownArgs),
    /// Print the service's log on a host: journald's on systemd hosts, the supervisor's log file elsewhere.
    ///
    /// The last N lines (-n, default 100) of every host, or of the one named; -f keeps following one host's log
    /// until Ctrl-C. Connects as every command does, with the pinned host key.
    Logs(LogsArgs),
    /// Open a shell, or run one command (after `--`), on a host through OpenSSH, with sfuctl's pinned host key
    /// enforced.
    ///
    /// sfuctl checks the host key against its pin first, then hands OpenSSH a known_hosts file holding only that
    /// key (StrictHostKeyChecking=yes): a host offering another key is refused. The command's exit code becomes
    /// sfuctl's (255 when ssh itself failed).
    Ssh(SshArgs),
    /// Print a shell completion script (bash, zsh, fish, powershell, elvish) to stdout.
    Completions(CompletionsArgs),
    /// Print sfuctl's manual page (roff) to stdout, or write one page per command into a directory.
    Man(ManArgs),
}

/// Parses the command line, runs the command, prints any error and returns the exit code.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // Help and version are successes; every other clap error is a usage error: exit 2.
            let _ = e.print();
            return if e.use_stderr() { Exit::BadInput.into() } else { Exit::Success.into() };
        }
    };
    for unknown in crate::log::init(cli.verbose) {
        error::warn(format!("SFUCTL_LOG: `{unknown}` is not understood (use off, info or debug, optionally per area: http=debug,ssh=info)"));
    }
    let result = match &cli.command {
        Command::Init(args) => commands::init::execute(args),
        Command::Validate(args) => commands::validate::execute(args, cli.output),
        Command::Plan(args) => block_on(commands::plan::execute(args, cli.output)),
        Command::Render(args) => commands::render::execute(args, cli.output),
        Command::Up(args) => block_on(commands::up::execute(args, cli.output)),
        Command::Status(args) => block_on(commands::status::execute(args, cli.output)),
        Command::Audit(args) => block_on(commands::audit::execute(args, cli.output)),
        Command::Down(args) => block_on(commands::down::execute(args, cli.output)),
        Command::Logs(args) => block_on(commands::logs::execute(args, cli.output)),
        // `ssh` passes the remote command's exit code through, whatever it is.
        Command::Ssh(args) => {
            return match block_on(commands::ssh::execute(args)) {
                Ok(code) => ExitCode::from(code),
                Err(err) => error::report(&err).into(),
            };
        }
        Command::Completions(args) => commands::completions::completions(args, Cli::command()),
        Command::Man(args) => commands::completions::man(args, Cli::command()),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(err) => error::report(&err).into(),
    }
}

/// Runs an async command on a multi-threaded runtime (hosts are handled concurrently).
fn block_on<T, F: std::future::Future<Output = anyhow::Result<T>>>(f: F) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(f)
}
