//! The command line: clap types, and the one `match` that hands each command to its module.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;
use crate::error::{self, Exit};

/// Turn one YAML spec into a running, reachable WebRTC media host (SFU or TURN relay).
///
/// sfuctl derives every layer from the spec (cloud firewall, host firewall, the server's own config, the
/// service) through one port manifest, so the layers cannot disagree about which UDP ports carry media.
#[derive(Debug, Parser)]
#[command(name = "sfuctl", version, propagate_version = true, max_term_width = 110)]
#[command(after_help = "\
Examples:
  sfuctl validate examples/janus-linode.yaml
  sfuctl plan examples/mediasoup-digitalocean.yaml
  sfuctl render examples/janus-linode.yaml --out /tmp/janus --address 203.0.113.5
  sfuctl up examples/existing-host.yaml
  sfuctl status examples/existing-host.yaml --output json
  sfuctl audit examples/existing-host.yaml
  sfuctl down examples/existing-host.yaml --yes

Exit codes: 0 success; 1 an operation failed; 2 bad input (nothing was changed); 3 a check failed
(plan --detailed-exitcode: changes pending).")]
pub struct Cli {
    /// How to print results: human-readable text, or JSON for scripts. Progress and warnings always go to stderr.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,

    /// The command to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The result format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Text for people.
    Text,
    /// JSON on stdout, for scripts.
    Json,
}

/// sfuctl's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check a spec: syntax, types, ports, CIDRs, names, provider limits. Changes nothing, needs no network.
    Validate(SpecArgs),
    /// Show what `up` would create, change or destroy: servers, firewall rules, files, services.
    ///
    /// With the provider's credentials set, the plan is made against what exists (found by the owner tag
    /// `sfuctl:<name>`); without them, against an empty account, and it says so.
    Plan(PlanArgs),
    /// Write every file a host would get (configs, service unit, host firewall, cloud-init) into a directory.
    ///
    /// Files land in DIR/<host>/<path on the host>, e.g. DIR/sfuctl-janus-demo-1/opt/sfuctl/janus-demo/config/
    /// janus.jcfg; cloud-init user-data in DIR/<host>/cloud-init/user-data.
    Render(RenderArgs),
    /// Deploy or converge: upload what changed, install the host firewall, start or restart the service once,
    /// and wait until it is healthy. Re-running on an unchanged spec changes nothing and says "No changes".
    ///
    /// On DigitalOcean it first makes the SSH key, the firewall and the servers (found again by the owner tag
    /// sfuctl:<name>), and waits for them. The SSH host key is pinned at first contact (or by ssh.host_key) and a
    /// changed key is refused.
    Up(UpArgs),
    /// Show what runs where: per host the service's state and since when, the artifact, the ports bound.
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
}

/// Arguments of commands that take only a spec.
#[derive(Debug, Args)]
pub struct SpecArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
}

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

/// Arguments of `render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// The directory to write into (created if missing; files in it are overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The public address to announce, for cloud hosts whose address is not known before they exist
    /// [default: 198.51.100.1, a documentation address].
    #[arg(long, value_name = "IP")]
    pub address: Option<String>,
    /// Use templates from this directory where it has them; the embedded ones otherwise.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

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
    /// Do not ask before deleting servers the spec no longer wants (a lower `count`).
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// Skip the audit that ends `up` (it fails `up` with exit 3 when a check fails).
    #[arg(long)]
    pub no_audit: bool,
    /// Probe only N ports of the media range in the final audit (default: every free port).
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
}

/// Arguments of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// Seconds to wait for SSH [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
}

/// Arguments of `audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// Probe only N ports of the media range, spread evenly (default: every free port).
    #[arg(long, value_name = "N")]
    pub sample: Option<usize>,
    /// Milliseconds to wait for UDP answers [default: 2000]. A fully dropped range takes this long, by design.
    #[arg(long, value_name = "MS")]
    pub probe_timeout_ms: Option<u64>,
    /// Seconds to wait for SSH [default: 10].
    #[arg(long, value_name = "SECONDS")]
    pub connect_timeout: Option<u64>,
}

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
    let result = match &cli.command {
        Command::Validate(args) => commands::validate::execute(args, cli.output),
        Command::Plan(args) => block_on(commands::plan::execute(args, cli.output)),
        Command::Render(args) => commands::render::execute(args, cli.output),
        Command::Up(args) => block_on(commands::up::execute(args, cli.output)),
        Command::Status(args) => block_on(commands::status::execute(args, cli.output)),
        Command::Audit(args) => block_on(commands::audit::execute(args, cli.output)),
        Command::Down(args) => block_on(commands::down::execute(args, cli.output)),
    };
    match result {
        Ok(exit) => exit.into(),
        Err(err) => error::report(&err).into(),
    }
}

/// Runs an async command on a multi-threaded runtime (hosts are handled concurrently).
fn block_on<F: std::future::Future<Output = anyhow::Result<Exit>>>(f: F) -> anyhow::Result<Exit> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build()?.block_on(f)
}
