//! The deployment spec: the user's YAML, parsed strictly and validated.
//!
//! Every field's `///` comment is the user's contract and is mirrored in README.md ("Spec reference"). Parsing
//! ([`Spec::load`]) turns YAML errors into messages with line, column and a "did you mean"; validation
//! ([`Spec::validate`]) checks what types cannot (names, ranges, overlaps, CIDRs, provider rules) and reports
//! every problem at once, each naming its field and line.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::UserError;
use crate::kind::PortField;
use crate::locate;
use crate::ports::{Manifest, PortRange};
use crate::provider::catalog::ProviderData;

/// A deployment spec: one YAML file describing the hosts, who may reach them and the media server they run.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Spec {
    /// The deployment's name: `[a-z0-9-]`, 1-32 characters, starting with a letter or digit. Every resource
    /// sfuctl makes carries the owner tag `sfuctl:<name>` and a name starting `sfuctl-<name>`.
    pub name: String,
    /// Where the hosts come from: a cloud (`digitalocean`, `linode`, `aws`, `vultr`) or servers you already have (`ssh`).
    pub provider: ProviderSpec,
    /// How sfuctl reaches the hosts over SSH, and who else may.
    #[serde(default)]
    pub ssh: SshSpec,
    /// The media server (SFU or TURN relay) and its public ports.
    pub sfu: SfuSpec,
    /// Install the host firewall (an nftables table of sfuctl's own, derived from the port manifest) on every host.
    /// Default `true`. With `false`, sfuctl leaves the host's firewall alone.
    #[serde(default = "yes")]
    pub host_firewall: bool,
}

fn yes() -> bool {
    true
}

/// Which provider makes (or already has) the hosts.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// DigitalOcean droplets and a Cloud Firewall.
    Digitalocean,
    /// Linode (Akamai) instances and a Cloud Firewall.
    Linode,
    /// AWS EC2 instances and a security group.
    Aws,
    /// Vultr instances and a firewall group.
    Vultr,
    /// Servers you already have, reached over SSH; sfuctl creates no cloud resources.
    Ssh,
}

impl ProviderKind {
    /// The name used in the spec and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Digitalocean => "digitalocean",
            Self::Linode => "linode",
            Self::Aws => "aws",
            Self::Vultr => "vultr",
            Self::Ssh => "ssh",
        }
    }
}

/// The `provider` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderSpec {
    /// `digitalocean`, `linode`, `aws`, `vultr` or `ssh`.
    pub kind: ProviderKind,
    /// Cloud kinds: the region (`fra1`, `us-east`, `eu-central-1`, `fra`). Required for digitalocean, linode and
    /// vultr; for aws it may come from `AWS_REGION` or `~/.aws/config` instead.
    pub region: Option<String>,
    /// Cloud kinds: the machine size (`s-2vcpu-4gb`, `g6-standard-2`, `c6i.large`, `vc2-2c-4gb`). Default from
    /// `providers/<kind>.yaml`.
    pub size: Option<String>,
    /// Cloud kinds: the OS image. Default: Ubuntu 24.04 (`providers/<kind>.yaml`; on aws the newest Canonical AMI;
    /// on vultr an `os_id` or an OS name from `GET /os`).
    pub image: Option<String>,
    /// Cloud kinds: how many identical hosts to run. Default 1.
    pub count: Option<u32>,
    /// Kind `ssh` only: the servers you already have.
    #[serde(default)]
    pub hosts: Vec<HostSpec>,
    /// Cloud kinds: also give every host a public IPv6 address and announce it. Default `false`.
    #[serde(default)]
    pub ipv6: bool,
}

/// One existing server (kind `ssh`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostSpec {
    /// A short name for the host (`[a-z0-9-]`, 1-32 characters), used in output and in the local state.
    pub name: String,
    /// The host's public IP address: sfuctl connects to it and the SFU announces it.
    pub address: String,
    /// The host's SSH host key fingerprint (`SHA256:…`, as `ssh-keygen -lf` prints it). Overrides `ssh.host_key`.
    pub host_key: Option<String>,
}

/// The `ssh` section.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SshSpec {
    /// The login user. Default from `providers/<kind>.yaml` (`root`; `ubuntu` on aws).
    pub user: Option<String>,
    /// The private key file. Default `~/.ssh/id_ed25519`. ssh-agent is used when the file is absent.
    pub private_key: Option<String>,
    /// The public key file given to cloud hosts. Default: `private_key` + `.pub`.
    pub public_key: Option<String>,
    /// The SSH port. Default 22.
    pub port: Option<u16>,
    /// Who may reach SSH, as CIDRs (`203.0.113.7/32`, `2001:db8::/48`). Default `0.0.0.0/0` and `::/0`, with a
    /// warning: limit it to your own address when you can.
    pub allow_from: Option<Vec<String>>,
    /// A pinned SSH host key fingerprint (`SHA256:…`) for every host. Without it, the first contact pins the key
    /// in the local state and a changed key is refused.
    pub host_key: Option<String>,
}

impl SshSpec {
    /// The SSH port (default 22).
    pub fn port(&self) -> u16 {
        self.port.unwrap_or(22)
    }
}

/// Which media server runs on the hosts.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SfuKind {
    /// A mediasoup application (mediasoup is a library: sfuctl renders the app's config contract).
    Mediasoup,
    /// The Janus WebRTC server.
    Janus,
    /// LiveKit server.
    Livekit,
    /// The coturn TURN/STUN relay.
    Coturn,
    /// Anything else: sfuctl renders an env file with the addresses and ports and runs `command`.
    Custom,
}

impl SfuKind {
    /// Every kind, in the order above. Each has a descriptor, `templates/<kind>/kind.yaml` (see `kind.rs`).
    pub const ALL: [SfuKind; 5] = [Self::Mediasoup, Self::Janus, Self::Livekit, Self::Coturn, Self::Custom];

    /// The name used in the spec and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mediasoup => "mediasoup",
            Self::Janus => "janus",
            Self::Livekit => "livekit",
            Self::Coturn => "coturn",
            Self::Custom => "custom",
        }
    }
}

/// The `sfu` section.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SfuSpec {
    /// `mediasoup`, `janus`, `livekit`, `coturn` or `custom`.
    pub kind: SfuKind,
    /// A local file or directory uploaded to every host (`/opt/sfuctl/<name>/app/`). A single file keeps its name
    /// and is made executable.
    pub artifact: Option<String>,
    /// How to start the server, run by `/bin/sh` in the app directory. Defaults: mediasoup `npm start`; janus
    /// `janus -F <config dir>`, coturn `turnserver -c <config>`, livekit `livekit-server --config <config>` (using
    /// the uploaded binary when `artifact` is a single file). Required for `custom`.
    pub command: Option<String>,
    /// The UDP media range (RTP/RTCP; for coturn the relay range), `"40000-41000"`, within 1024-65535. It feeds
    /// the cloud firewall, the host firewall and the server's config alike.
    pub rtc_ports: PortRange,
    /// Other public TCP ports (signaling, ICE-TCP, TURN-TLS), e.g. `[443]`.
    #[serde(default)]
    pub tcp_ports: Vec<u16>,
    /// Other public single UDP ports, e.g. `[3478]`.
    #[serde(default)]
    pub udp_ports: Vec<u16>,
    /// The server's own main port: the Janus HTTP API (default 8088), LiveKit signaling (7880), coturn's STUN/TURN
    /// listening port (3478, UDP and TCP). Not used by mediasoup and custom, whose ports go in `tcp_ports`.
    pub listen_port: Option<u16>,
    /// LiveKit only: the ICE-over-TCP port (`rtc.tcp_port`, default 7881).
    pub ice_tcp_port: Option<u16>,
    /// A domain name for the server, used as coturn's realm and LiveKit's TURN domain. Optional.
    pub domain: Option<String>,
    /// The environment variable holding the shared secret (coturn `static-auth-secret`, LiveKit API secret).
    /// Default `SFUCTL_SECRET`. The secret itself never goes in the spec.
    pub secret_env: Option<String>,
    /// How many participants one host should carry; with it, sfuctl warns when `rtc_ports` is too small.
    pub participants: Option<u32>,
    /// The system user the service runs as. Default: `sfuctl` on cloud hosts (made by cloud-init), the SSH user
    /// on existing hosts.
    pub run_as: Option<String>,
    /// Environment variables for the service.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra variables for the templates (`vars.x` in a template), for templates you override with `--templates`.
    #[serde(default)]
    pub vars: BTreeMap<String, serde_yaml::Value>,
}

impl SfuSpec {
    /// The server's own main port, where the kind has one.
    pub fn listen_port(&self) -> Option<u16> {
        self.listen_port.or(self.kind.descriptor().own_port(PortField::ListenPort).map(|p| p.default))
    }

    /// The ICE-over-TCP port, where the kind has one (LiveKit).
    pub fn ice_tcp_port(&self) -> Option<u16> {
        self.kind.descriptor().port(PortField::IceTcpPort, self)
    }

    /// The name of the environment variable that holds the shared secret.
    pub fn secret_env(&self) -> &str {
        self.secret_env.as_deref().unwrap_or("SFUCTL_SECRET")
    }
}

/// A problem found in a spec: the field it concerns, where it is, what is wrong and how to fix it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// The dotted field path, e.g. `sfu.rtc_ports`.
    pub field: String,
    /// Where that field sits in the file, when it could be found.
    pub location: Option<locate::Location>,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.summary())?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

/// What validation found: errors stop everything (exit 2), warnings are printed and the command goes on.
#[derive(Debug, Default)]
pub struct Findings {
    /// Problems that make the spec unusable.
    pub errors: Vec<Diagnostic>,
    /// Things that work but are probably not what you want.
    pub warnings: Vec<Diagnostic>,
}

/// How strict to be about files the spec points at (`artifact`, SSH keys).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileCheck {
    /// `up`: a missing file is an error.
    Required,
    /// `plan`, `render`, `validate`: a missing file is a warning.
    Warn,
}

/// A spec loaded from a file, with its source text kept for locating fields in messages.
#[derive(Clone, Debug)]
pub struct LoadedSpec {
    /// The parsed spec.
    pub spec: Spec,
    /// The file it came from.
    pub path: PathBuf,
    /// The file's text.
    pub source: String,
}

impl Spec {
    /// Reads and parses a spec file. Syntax, type and unknown-field errors come back as exit-2 errors naming the
    /// file, line and column.
    pub fn load(path: &Path) -> Result<LoadedSpec> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            UserError::input(format!("cannot read spec `{}`", path.display()))
                .caused_by(e)
                .hint("pass the path of a YAML deployment spec, e.g. `examples/mediasoup-digitalocean.yaml`")
        })?;
        let spec = Self::parse(&source).map_err(|d| {
            let mut err = UserError::input(format!("invalid spec `{}`: {}", path.display(), d.summary()));
            if let Some(h) = d.hint {
                err = err.hint(h);
            }
            err
        })?;
        Ok(LoadedSpec { spec, path: path.to_path_buf(), source })
    }

    /// Parses spec text; an error is a [`Diagnostic`] with the best location we can find.
    pub fn parse(source: &str) -> std::result::Result<Spec, Diagnostic> {
        serde_yaml::from_str::<Spec>(source).map_err(|e| diagnose_parse_error(source, &e))
    }

    /// The port manifest of this spec (see [`Manifest`]).
    pub fn manifest(&self) -> Manifest {
        Manifest::derive(self)
    }

    /// Checks everything types cannot. Returns every error and warning, each naming its field and line.
    pub fn validate(&self, source: &str, base_dir: &Path, files: FileCheck) -> Findings {
        let mut v = Validator { source, findings: Findings::default() };
        v.check(self, base_dir, files);
        v.findings
    }
}

impl Diagnostic {
    /// One line: `field (line L, column C): message`, leaving out what is unknown.
    pub fn summary(&self) -> String {
        let place = self.location.map(|l| format!("line {}, column {}", l.line, l.column));
        match (self.field.is_empty(), place) {
            (true, Some(p)) => format!("{p}: {}", self.message),
            (true, None) => self.message.clone(),
            (false, Some(p)) => format!("{} ({p}): {}", self.field, self.message),
            (false, None) => format!("{}: {}", self.field, self.message),
        }
    }
}

/// Turns a serde_yaml error into a diagnostic with a real location and, for typos, a suggestion.
fn diagnose_parse_error(source: &str, err: &serde_yaml::Error) -> Diagnostic {
    let text = err.to_string();
    // serde_yaml appends " at line L column C"; we print the location ourselves.
    let text = text.split(" at line ").next().unwrap_or(&text).to_string();
    let (field, message) = match text.split_once(": ") {
        // "sfu.rtc_ports: invalid type…" (a path prefix) versus a message that merely contains ": ".
        Some((path, rest)) if !path.contains(' ') => (path.to_string(), rest.to_string()),
        _ => (String::new(), text.clone()),
    };
    let mut location = err.location().map(|l| locate::Location { line: l.line(), column: l.column() });
    let mut hint = None;
    let mut message = message;

    if let Some((bad, expected)) = unknown_name(&message, "unknown field") {
        let full = if field.is_empty() { bad.clone() } else { format!("{field}.{bad}") };
        message = format!("unknown field `{bad}`");
        hint = Some(match closest(&bad, &expected) {
            Some(best) => format!("did you mean `{best}`? (fields here: {})", expected.join(", ")),
            None => format!("the fields allowed here are: {}", expected.join(", ")),
        });
        return Diagnostic { location: location.or_else(|| locate::find(source, &full)), field, message, hint };
    }
    if let Some((bad, expected)) = unknown_name(&message, "unknown variant") {
        message = format!("unknown value `{bad}`");
        hint = Some(match closest(&bad, &expected) {
            Some(best) => format!("did you mean `{best}`? (one of: {})", expected.join(", ")),
            None => format!("use one of: {}", expected.join(", ")),
        });
    } else if let Some(missing) = message.strip_prefix("missing field `").and_then(|r| r.split('`').next()) {
        let missing = missing.to_string();
        // Reported at 1:1: point at the section that lacks it instead.
        location = if field.is_empty() { None } else { locate::find(source, &field) };
        message = format!("missing field `{missing}`");
        hint = Some(format!("add `{missing}:` to {}", if field.is_empty() { "the top level".into() } else { format!("`{field}`") }));
    } else if let Some(key) = message
        .strip_prefix("duplicate entry with key \"")
        .or_else(|| message.strip_prefix("duplicate field `"))
        .and_then(|r| r.split(['"', '`']).next())
    {
        location = locate::find_duplicate(source, key);
        message = format!("the key `{key}` appears twice");
        hint = Some("keep one of them".into());
    } else if location.is_some_and(|l| l.line == 1 && l.column == 1) && !field.is_empty() {
        location = locate::find(source, &field);
    }
    Diagnostic { field, location, message, hint }
}

/// Splits "unknown field `x`, expected one of `a`, `b`" (or "expected `a`") into `x` and `[a, b]`.
fn unknown_name(message: &str, prefix: &str) -> Option<(String, Vec<String>)> {
    let rest = message.strip_prefix(prefix)?.trim_start();
    let bad = rest.strip_prefix('`')?.split('`').next()?.to_string();
    let expected = rest
        .split_once("expected")
        .map(|(_, e)| e.split('`').skip(1).step_by(2).map(str::to_string).collect())
        .unwrap_or_default();
    Some((bad, expected))
}

/// The allowed name closest to a typo, when it is close enough to be a likely fix.
pub fn closest<'a>(bad: &str, candidates: &'a [impl AsRef<str>]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (c.as_ref(), strsim::damerau_levenshtein(bad, c.as_ref())))
        .filter(|(c, d)| *d <= 3.max(c.len() / 3) && *d < c.len().max(bad.len()))
        .min_by_key(|(_, d)| *d)
        .map(|(c, _)| c)
}

/// Expands a leading `~/` to the home directory and resolves a relative path against the spec's directory.
pub fn resolve_path(raw: &str, base_dir: &Path) -> PathBuf {
    let expanded = match raw.strip_prefix("~/") {
        Some(rest) => std::env::var_os("HOME").map_or_else(|| PathBuf::from(raw), |h| PathBuf::from(h).join(rest)),
        None => PathBuf::from(raw.strip_prefix("./").unwrap_or(raw)),
    };
    if expanded.is_absolute() { expanded } else { base_dir.join(expanded) }
}

/// Whether a name is `[a-z0-9-]`, 1-32 characters, starting and ending with a letter or digit, with no `--`.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > 32 {
        Some("must be 1 to 32 characters long")
    } else if !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') {
        Some("may only contain lowercase letters, digits and `-`")
    } else if name.starts_with('-') || name.ends_with('-') {
        Some("must start and end with a letter or digit")
    } else if name.contains("--") {
        Some("must not contain `--` (Linode labels forbid it)")
    } else {
        None
    }
}

/// Parses a CIDR, accepting a bare address as a single-host network. Host bits must be zero.
pub fn parse_cidr(raw: &str) -> std::result::Result<IpNet, String> {
    let raw = raw.trim();
    let net = match raw.parse::<IpNet>() {
        Ok(n) => n,
        Err(_) => match raw.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return Err(format!("`{raw}` is not a CIDR (like `203.0.113.7/32` or `2001:db8::/48`)")),
        },
    };
    if net.trunc() != net {
        return Err(format!("`{raw}` has host bits set; the network is `{}`", net.trunc()));
    }
    Ok(net)
}

struct Validator<'a> {
    source: &'a str,
    findings: Findings,
}

impl Validator<'_> {
    fn diag(&self, field: &str, message: String, hint: Option<String>) -> Diagnostic {
        Diagnostic { field: field.to_string(), location: locate::find(self.source, field), message, hint }
    }

    fn error(&mut self, field: &str, message: impl Into<String>, hint: impl Into<Option<String>>) {
        let d = self.diag(field, message.into(), hint.into());
        self.findings.errors.push(d);
    }

    fn warning(&mut self, field: &str, message: impl Into<String>, hint: impl Into<Option<String>>) {
        let d = self.diag(field, message.into(), hint.into());
        self.findings.warnings.push(d);
    }

    fn check(&mut self, spec: &Spec, base_dir: &Path, files: FileCheck) {
        let data = ProviderData::get(spec.provider.kind);
        if let Some(problem) = name_problem(&spec.name) {
            self.error("name", format!("`{}` {problem}", spec.name), Some("e.g. `name: clearcomms`".to_string()));
        } else if let Some(limit) = data.names.max_name_len {
            let resource = crate::owner::Owner::new(&spec.name).prefix();
            if resource.len() > limit {
                self.error(
                    "name",
                    format!("`{resource}` is longer than {limit} characters, the most {} allows for {}", data.title, data.names.longest_resource),
                    Some(format!("use a name of at most {} characters", limit - "sfuctl-".len())),
                );
            }
        }
        self.check_provider(spec, &data);
        self.check_ssh(spec, base_dir, files);
        self.check_sfu(spec, base_dir, files);
        if self.findings.errors.is_empty() {
            self.check_manifest(spec, &data);
        }
    }

    fn check_provider(&mut self, spec: &Spec, data: &ProviderData) {
        let p = &spec.provider;
        let kind = p.kind.as_str();
        if data.creates_servers() {
            if !p.hosts.is_empty() {
                self.error(
                    "provider.hosts",
                    format!("`hosts` lists existing servers, but provider.kind is `{kind}`, which creates its own"),
                    Some("remove `hosts`, or use `kind: ssh` to deploy to servers you already have".to_string()),
                );
            }
            if p.region.is_none() && data.region_required {
                self.error("provider", format!("provider.kind `{kind}` needs a `region`"), Some(format!("add e.g. `region: {}`", data.example_region)));
            }
            if let Some(region) = &p.region {
                if !data.regions.is_empty() && !data.regions.iter().any(|r| r == region) {
                    let hint = closest(region, &data.regions).map_or_else(
                        || format!("known regions: {}", data.regions.join(", ")),
                        |best| format!("did you mean `{best}`?"),
                    );
                    self.warning("provider.region", format!("`{region}` is not a {} region sfuctl knows", data.title), Some(hint));
                }
            }
            if p.count == Some(0) {
                self.error("provider.count", "must be at least 1", Some("remove `count` for one host".to_string()));
            }
        } else {
            for field in ["region", "size", "image", "count"] {
                let set = match field {
                    "region" => p.region.is_some(),
                    "size" => p.size.is_some(),
                    "image" => p.image.is_some(),
                    _ => p.count.is_some(),
                };
                if set {
                    self.error(
                        &format!("provider.{field}"),
                        format!("`{field}` only applies to cloud providers; kind `ssh` uses the servers in `hosts`"),
                        Some(format!("remove `{field}`")),
                    );
                }
            }
            if p.ipv6 {
                self.error("provider.ipv6", "`ipv6` only applies to cloud providers", Some("remove it; give a host's IPv6 address as its `address` instead".to_string()));
            }
            if p.hosts.is_empty() {
                self.error(
                    "provider",
                    "provider.kind `ssh` needs `hosts`: the servers to deploy to",
                    Some("add e.g. `hosts: [{ name: media-1, address: 203.0.113.10 }]`".to_string()),
                );
            }
            let mut seen = std::collections::HashSet::new();
            for (i, host) in p.hosts.iter().enumerate() {
                if let Some(problem) = name_problem(&host.name) {
                    self.error(&format!("provider.hosts[{i}].name"), format!("`{}` {problem}", host.name), None);
                }
                if !seen.insert(host.name.as_str()) {
                    self.error(&format!("provider.hosts[{i}].name"), format!("two hosts are named `{}`", host.name), Some("give every host its own name".to_string()));
                }
                if host.address.parse::<IpAddr>().is_err() {
                    self.error(
                        &format!("provider.hosts[{i}].address"),
                        format!("`{}` is not an IP address", host.address),
                        Some("give the host's public IP address: the SFU announces it to clients, so a hostname will not do".to_string()),
                    );
                }
                if let Some(fp) = &host.host_key {
                    self.check_fingerprint(&format!("provider.hosts[{i}].host_key"), fp);
                }
            }
        }
    }

    fn check_fingerprint(&mut self, field: &str, fp: &str) {
        let ok = fp.strip_prefix("SHA256:").is_some_and(|b| b.len() == 43 && b.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'+' || c == b'/'));
        if !ok {
            self.error(field, format!("`{fp}` is not a SHA256 host key fingerprint"), Some("use what `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub` prints on the host, e.g. `SHA256:uNiVztksCsDhcc0u9e8BujQXVUpKZIDTMczCvj3tD2s`".to_string()));
        }
    }

    fn check_ssh(&mut self, spec: &Spec, base_dir: &Path, files: FileCheck) {
        let ssh = &spec.ssh;
        if ssh.port == Some(0) {
            self.error("ssh.port", "0 is not a port", Some("remove it for 22".to_string()));
        }
        match &ssh.allow_from {
            None => self.warning(
                "ssh",
                "SSH is open to the whole internet (ssh.allow_from defaults to 0.0.0.0/0 and ::/0)",
                Some("set `ssh.allow_from: [<your address>/32]`".to_string()),
            ),
            Some(list) if list.is_empty() => self.error("ssh.allow_from", "is empty: nobody, sfuctl included, could reach SSH", Some("list at least your own address, e.g. `[203.0.113.7/32]`".to_string())),
            Some(list) => {
                for (i, raw) in list.iter().enumerate() {
                    match parse_cidr(raw) {
                        Err(why) => self.error(&format!("ssh.allow_from[{i}]"), why, Some("write a CIDR such as `203.0.113.7/32`".to_string())),
                        Ok(net) if net.prefix_len() == 0 => self.warning(
                            &format!("ssh.allow_from[{i}]"),
                            format!("`{raw}` opens SSH to the whole internet"),
                            Some("limit it to your own address, e.g. `203.0.113.7/32`".to_string()),
                        ),
                        Ok(_) => {}
                    }
                }
            }
        }
        if let Some(fp) = &ssh.host_key {
            self.check_fingerprint("ssh.host_key", fp);
        }
        if let Some(user) = &ssh.user {
            if user.is_empty() || !user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.') {
                self.error("ssh.user", format!("`{user}` is not a valid user name"), None);
            }
        }
        // Key files: only the ones the user named (the defaults may legitimately be absent: ssh-agent).
        let private = ssh.private_key.as_deref();
        for (field, raw) in [("ssh.private_key", private), ("ssh.public_key", ssh.public_key.as_deref())] {
            if let Some(raw) = raw {
                let path = resolve_path(raw, base_dir);
                if !path.is_file() {
                    self.file_missing(field, &path, files, "point it at an existing key file");
                }
            }
        }
    }

    fn file_missing(&mut self, field: &str, path: &Path, files: FileCheck, fix: &str) {
        let message = format!("`{}` does not exist", path.display());
        match files {
            FileCheck::Required => self.error(field, message, Some(fix.to_string())),
            FileCheck::Warn => self.warning(field, format!("{message} (needed by `up`)"), Some(fix.to_string())),
        }
    }

    fn check_sfu(&mut self, spec: &Spec, base_dir: &Path, files: FileCheck) {
        let sfu = &spec.sfu;
        let kind = sfu.kind.as_str();
        let r = sfu.rtc_ports;
        if r.start > r.end {
            self.error("sfu.rtc_ports", format!("range {}-{} is inverted", r.start, r.end), Some(format!("write the lower port first: `{}-{}`", r.end, r.start)));
        }
        if r.start.min(r.end) < 1024 {
            self.error("sfu.rtc_ports", format!("range {r} reaches below 1024"), Some("media ports must be within 1024-65535, e.g. `40000-41000`".to_string()));
        }
        for (field, ports) in [("sfu.tcp_ports", &sfu.tcp_ports), ("sfu.udp_ports", &sfu.udp_ports)] {
            let mut seen = std::collections::HashSet::new();
            for (i, &p) in ports.iter().enumerate() {
                if p == 0 {
                    self.error(&format!("{field}[{i}]"), "0 is not a port", None);
                } else if !seen.insert(p) {
                    self.error(&format!("{field}[{i}]"), format!("port {p} is listed twice"), Some("list each port once".to_string()));
                }
            }
        }
        let descriptor = sfu.kind.descriptor();
        if sfu.listen_port.is_some() && descriptor.own_port(PortField::ListenPort).is_none() {
            self.error("sfu.listen_port", format!("kind `{kind}` has no listen port of its own"), Some("put the app's ports in `tcp_ports` / `udp_ports`".to_string()));
        }
        if sfu.listen_port == Some(0) || sfu.ice_tcp_port == Some(0) {
            self.error(if sfu.listen_port == Some(0) { "sfu.listen_port" } else { "sfu.ice_tcp_port" }, "0 is not a port", None);
        }
        if sfu.ice_tcp_port.is_some() && descriptor.own_port(PortField::IceTcpPort).is_none() {
            self.error("sfu.ice_tcp_port", format!("only applies to kind {}", crate::kind::kinds_with(PortField::IceTcpPort)), Some("remove it".to_string()));
        }
        if descriptor.command.is_none() && sfu.command.is_none() {
            self.error("sfu", format!("kind `{kind}` needs a `command`: how to start your server"), Some("add e.g. `command: ./my-sfu --config /opt/sfuctl/<name>/sfuctl.env`".to_string()));
        }
        if sfu.command.as_deref().is_some_and(|c| c.trim().is_empty() || c.contains('\n')) {
            self.error("sfu.command", "must be one non-empty line", None);
        }
        if let Some(raw) = &sfu.artifact {
            let path = resolve_path(raw, base_dir);
            if !path.exists() {
                self.file_missing("sfu.artifact", &path, files, "build the artifact first, or point `artifact` at an existing file or directory");
            }
        }
        for key in sfu.env.keys() {
            let ok = key.bytes().next().is_some_and(|b| b.is_ascii_alphabetic() || b == b'_') && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !ok {
                self.error(&format!("sfu.env.{key}"), format!("`{key}` is not a valid environment variable name"), Some("use letters, digits and `_`, not starting with a digit".to_string()));
            } else if key.starts_with("SFU_") {
                self.error(&format!("sfu.env.{key}"), format!("`{key}` is set by sfuctl from the spec (SFU_* variables are derived)"), Some("remove it; sfuctl writes SFU_ANNOUNCED_IP, SFU_LISTEN_IP, SFU_RTC_MIN_PORT and SFU_RTC_MAX_PORT itself".to_string()));
            }
        }
        let secret_env = sfu.secret_env();
        if secret_env.is_empty() || !secret_env.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
            self.error("sfu.secret_env", format!("`{secret_env}` is not an environment variable name"), None);
        }
        if let Some(domain) = &sfu.domain {
            let ok = domain.split('.').count() >= 2
                && domain.split('.').all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !l.starts_with('-'));
            if !ok {
                self.error("sfu.domain", format!("`{domain}` is not a domain name"), Some("e.g. `turn.example.com`".to_string()));
            }
        }
        if let Some(user) = &sfu.run_as {
            if user.is_empty() || !user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') {
                self.error("sfu.run_as", format!("`{user}` is not a valid user name"), None);
            }
        }
        if r.start <= r.end {
            if let Some(per) = descriptor.ports_per_participant {
                let capacity = r.len() / per;
                let wanted = sfu.participants.unwrap_or(10);
                if capacity < wanted {
                    let need = wanted * per;
                    self.warning(
                        "sfu.rtc_ports",
                        format!("{} ports carry about {capacity} participants on {kind} (about {per} port(s) each), fewer than {wanted}", r.len()),
                        Some(format!("widen the range to at least {need} ports, e.g. `{}-{}`", r.start, r.start as u32 + need - 1)),
                    );
                }
            }
        }
    }

    fn check_manifest(&mut self, spec: &Spec, data: &ProviderData) {
        let manifest = spec.manifest();
        // Overlaps within one protocol: two purposes claiming the same port.
        let rules = &manifest.rules;
        for (i, a) in rules.iter().enumerate() {
            for b in &rules[i + 1..] {
                if a.protocol == b.protocol && a.ports.overlaps(&b.ports) {
                    self.error(
                        b.field,
                        format!("{} {} ({}) overlaps {} {} ({}, from {})", b.protocol, b.ports, b.purpose, a.protocol, a.ports, a.purpose, a.field),
                        Some("give every purpose its own ports".to_string()),
                    );
                }
            }
        }
        let ssh_port = spec.ssh.port();
        if spec.sfu.rtc_ports.contains(ssh_port) {
            self.error(
                "sfu.rtc_ports",
                format!("range {} contains the SSH port {ssh_port}", spec.sfu.rtc_ports),
                Some("move the media range or the SSH port so they do not meet".to_string()),
            );
        }
        if let Some(limit) = data.firewall.rule_limit {
            let count = manifest.cloud_rule_count(&data.firewall);
            if count > limit {
                self.error(
                    "sfu",
                    format!(
                        "the port manifest needs {count} {} firewall rules{}, more than its limit of {limit}",
                        data.title,
                        if data.firewall.count_per_cidr { " (IPv4 and IPv6 sources count separately)" } else { "" }
                    ),
                    Some("use fewer separate ports or sources: adjacent ports merge into one range, e.g. `tcp_ports` 7000 and 7001".to_string()),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A valid spec, shared with the integration tests (whose cases mutate it line by line).
    const GOOD: &str = include_str!("../tests/fixtures/janus-digitalocean.yaml");

    fn errors_of(source: &str) -> Vec<String> {
        let spec = Spec::parse(source).expect("parses");
        spec.validate(source, Path::new("."), FileCheck::Warn).errors.iter().map(|d| d.to_string()).collect()
    }

    #[test]
    fn a_good_spec_has_no_errors_or_warnings() {
        let spec = Spec::parse(GOOD).unwrap();
        let f = spec.validate(GOOD, Path::new("."), FileCheck::Warn);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        assert!(f.warnings.is_empty(), "{:?}", f.warnings);
    }

    #[test]
    fn unknown_field_suggests_the_closest() {
        let d = Spec::parse(&GOOD.replace("tcp_ports", "tcp_port")).unwrap_err();
        assert_eq!(d.field, "sfu");
        assert_eq!(d.message, "unknown field `tcp_port`");
        assert_eq!(d.location, Some(locate::Location { line: 10, column: 3 }));
        assert!(d.hint.unwrap().starts_with("did you mean `tcp_ports`?"));
    }

    #[test]
    fn unknown_kind_suggests_the_closest() {
        let d = Spec::parse(&GOOD.replace("digitalocean", "digitalocan")).unwrap_err();
        assert_eq!(d.field, "provider.kind");
        assert!(d.hint.unwrap().starts_with("did you mean `digitalocean`?"));
    }

    #[test]
    fn missing_field_points_at_its_section() {
        let d = Spec::parse(&GOOD.replace("  rtc_ports: 40000-41000\n", "")).unwrap_err();
        assert_eq!(d.message, "missing field `rtc_ports`");
        assert_eq!(d.location, Some(locate::Location { line: 7, column: 1 }));
    }

    #[test]
    fn wrong_type_names_field_and_line() {
        let d = Spec::parse(&GOOD.replace("[443]", "[https]")).unwrap_err();
        assert_eq!(d.field, "sfu.tcp_ports[0]");
        assert_eq!(d.location.unwrap().line, 10);
    }

    #[test]
    fn duplicate_key_is_located() {
        let d = Spec::parse(&GOOD.replace("  tcp_ports: [443]\n", "  tcp_ports: [443]\n  kind: coturn\n")).unwrap_err();
        assert_eq!(d.location, Some(locate::Location { line: 11, column: 3 }));
    }

    #[test]
    fn inverted_and_low_ranges_are_errors() {
        assert!(errors_of(&GOOD.replace("40000-41000", "41000-40000"))[0].contains("inverted"));
        assert!(errors_of(&GOOD.replace("40000-41000", "500-2000"))[0].contains("below 1024"));
    }

    #[test]
    fn overlapping_ports_are_errors() {
        let e = errors_of(&GOOD.replace("[443]", "[443, 8088]"));
        assert!(e[0].contains("overlaps tcp 8088 (Janus HTTP API"), "{e:?}");
        let e = errors_of(&GOOD.replace("  tcp_ports: [443]", "  udp_ports: [40500]"));
        assert!(e[0].starts_with("sfu.udp_ports (line 10"), "{e:?}");
        let e = errors_of(&GOOD.replace("ssh:\n", "ssh:\n  port: 40022\n"));
        assert!(e.iter().any(|m| m.contains("contains the SSH port 40022")), "{e:?}");
    }

    #[test]
    fn bad_cidrs_and_names_are_errors() {
        let e = errors_of(&GOOD.replace("203.0.113.7/32", "203.0.113.7/24"));
        assert!(e[0].contains("host bits set; the network is `203.0.113.0/24`"), "{e:?}");
        let e = errors_of(&GOOD.replace("203.0.113.7/32", "nowhere"));
        assert!(e[0].starts_with("ssh.allow_from[0] (line 6"), "{e:?}");
        assert!(errors_of(&GOOD.replace("name: demo", "name: Demo_1"))[0].contains("lowercase"));
        assert!(errors_of(&GOOD.replace("name: demo", "name: de--mo"))[0].contains("--"));
    }

    #[test]
    fn provider_naming_limits_apply() {
        let linode = GOOD.replace("digitalocean", "linode").replace("fra1", "eu-central").replace("name: demo", "name: a-very-long-deployment-name");
        let e = errors_of(&linode);
        assert!(e[0].contains("longer than 32 characters"), "{e:?}");
    }

    #[test]
    fn hosts_rules_depend_on_the_kind() {
        let cloud = GOOD.replace("  region: fra1\n", "  region: fra1\n  hosts: [{ name: a, address: 203.0.113.1 }]\n");
        assert!(errors_of(&cloud)[0].contains("`hosts` lists existing servers"));
        let ssh = GOOD.replace("digitalocean\n  region: fra1", "ssh");
        assert!(errors_of(&ssh)[0].contains("needs `hosts`"));
    }

    #[test]
    fn too_many_rules_for_the_provider() {
        let ports: Vec<String> = (0..30).map(|i| (10000 + i * 2).to_string()).collect();
        let spec = GOOD.replace("digitalocean", "linode").replace("fra1", "eu-central").replace("[443]", &format!("[{}]", ports.join(", ")));
        let e = errors_of(&spec);
        assert!(e.iter().any(|m| m.contains("more than its limit of 25")), "{e:?}");
        // Adjacent ports merge, so 30 neighbours fit.
        let adjacent: Vec<String> = (0..30).map(|i| (10000 + i).to_string()).collect();
        let spec = GOOD.replace("digitalocean", "linode").replace("fra1", "eu-central").replace("[443]", &format!("[{}]", adjacent.join(", ")));
        assert!(errors_of(&spec).is_empty());
    }

    #[test]
    fn warnings_for_open_ssh_and_small_range() {
        let source = GOOD.replace("ssh:\n  allow_from: [203.0.113.7/32]\n", "").replace("40000-41000", "40000-40004");
        let spec = Spec::parse(&source).unwrap();
        let f = spec.validate(&source, Path::new("."), FileCheck::Warn);
        assert!(f.errors.is_empty(), "{:?}", f.errors);
        let w: Vec<String> = f.warnings.iter().map(|d| d.to_string()).collect();
        assert!(w.iter().any(|m| m.contains("SSH is open to the whole internet")), "{w:?}");
        assert!(w.iter().any(|m| m.contains("5 ports carry about 5 participants")), "{w:?}");
    }

    #[test]
    fn missing_artifact_is_a_warning_for_plan_and_an_error_for_up() {
        let source = GOOD.replace("  tcp_ports: [443]\n", "  tcp_ports: [443]\n  artifact: ./no-such-dir\n");
        let spec = Spec::parse(&source).unwrap();
        assert!(spec.validate(&source, Path::new("."), FileCheck::Warn).errors.is_empty());
        let e = spec.validate(&source, Path::new("."), FileCheck::Required).errors;
        assert_eq!(e[0].field, "sfu.artifact");
    }
}
