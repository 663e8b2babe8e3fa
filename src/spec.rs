//! The deployment spec: the user's YAML, parsed strictly and validated.
//!
//! Every field's `///` comment is the user's contract and is mirrored in README.md ("Spec reference"). Parsing
//! ([`Spec::parse`]) turns a YAML error into a message with line, column and a "did you mean"; every command reads
//! a spec through `validate::check_source`, which reports every problem at once (`spec_parse.rs`) and then checks
//! what types cannot. This module is the leaf the others build on: it knows no server
//! kind, manifest or provider.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::UserError;
use crate::locate;
use crate::port_range::PortRange;

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
    /// Also open `rtc_ports` over TCP, for ICE over TCP where UDP is blocked (kinds whose `kind.yaml` says
    /// `media_over_tcp`: mediasoup, which then gets a TCP listenInfo on the same range). Default false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rtc_tcp: bool,
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
    /// Extra distribution packages every host gets (Debian/Ubuntu names), e.g. what a `custom` server needs.
    #[serde(default)]
    pub packages: Vec<String>,
    /// The Node.js major version for kinds that run on Node.js (mediasoup; default 22), installed from the
    /// official release tarballs (`NODEJS_ORG_MIRROR` overrides the mirror, as for nvm).
    #[serde(default)]
    pub node_version: Option<u32>,
}

impl SfuSpec {
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

/// What validation found: errors stop everything (exit 2), warnings and notes are printed and the command goes on.
#[derive(Debug, Default)]
pub struct Findings {
    /// Problems that make the spec unusable.
    pub errors: Vec<Diagnostic>,
    /// Things that work but are probably not what you want.
    pub warnings: Vec<Diagnostic>,
    /// Things that are fine but worth knowing, e.g. a port listed that the server kind opens anyway.
    pub notes: Vec<Diagnostic>,
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
    /// Reads a spec file's text; a file that cannot be read is bad input (exit 2).
    pub fn read_source(path: &Path) -> Result<String> {
        let source = std::fs::read_to_string(path).map_err(|e| {
            UserError::input(format!("cannot read spec `{}`", path.display()))
                .caused_by(e)
                .hint("pass the path of a YAML deployment spec, e.g. `examples/mediasoup-digitalocean.yaml`")
        })?;
        Ok(source)
    }

    /// Parses spec text; an error is a [`Diagnostic`] with the best location we can find.
    pub fn parse(source: &str) -> std::result::Result<Spec, Diagnostic> {
        serde_yaml::from_str::<Spec>(source).map_err(|e| diagnose_parse_error(source, &e))
    }

}

impl Diagnostic {
    /// One line as compilers print it: `file:line:column: field: message`, leaving out what is unknown.
    pub fn at(&self, file: &Path) -> String {
        let mut out = file.display().to_string();
        if let Some(l) = self.location {
            out.push_str(&format!(":{}:{}", l.line, l.column));
        }
        if !self.field.is_empty() {
            out.push_str(&format!(": {}", self.field));
        }
        out.push_str(&format!(": {}", self.message));
        out
    }

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
pub(crate) fn diagnose_parse_error(source: &str, err: &serde_yaml::Error) -> Diagnostic {
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
        let e = errors_of(&GOOD.replace("[443]", "[443, 22]"));
        assert!(e[0].contains("overlaps tcp 22 (SSH"), "{e:?}");
        let livekit = GOOD.replace("kind: janus", "kind: livekit").replace("  tcp_ports: [443]\n", "  listen_port: 7000\n  ice_tcp_port: 7000\n");
        let e = errors_of(&livekit);
        assert!(e.iter().any(|m| m.contains("overlaps tcp 7000")), "{e:?}");
        let e = errors_of(&GOOD.replace("  tcp_ports: [443]", "  udp_ports: [40500]"));
        assert!(e[0].starts_with("sfu.udp_ports[0] (line 10, column 15)"), "{e:?}");
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

    /// Issue 15: the ports people copy from their server's docs are the ones the kind opens anyway.
    #[test]
    fn naming_a_port_the_kind_opens_is_a_note_not_a_conflict() {
        let cases = [
            ("janus", "  tcp_ports: [8088]\n", "tcp 8088 is already opened by `sfu.listen_port` (Janus HTTP API)"),
            ("livekit", "  tcp_ports: [7881, 443]\n", "tcp 7881 is already opened by `sfu.ice_tcp_port`"),
            ("coturn", "  udp_ports: [3478]\n", "udp 3478 is already opened by `sfu.listen_port`"),
        ];
        for (kind, ports, note) in cases {
            let source = GOOD.replace("kind: janus", &format!("kind: {kind}")).replace("  tcp_ports: [443]\n", ports);
            let spec = Spec::parse(&source).unwrap();
            let f = spec.validate(&source, Path::new("."), FileCheck::Warn);
            assert!(f.errors.is_empty(), "{kind}: {:?}", f.errors);
            let notes: Vec<String> = f.notes.iter().map(|d| d.to_string()).collect();
            assert_eq!(notes.len(), 1, "{kind}: {notes:?}");
            assert!(notes[0].contains(note), "{kind}: {notes:?}");
            assert!(notes[0].starts_with("sfu."), "{kind}: names the field: {notes:?}");
            // One rule per port in the manifest, so every firewall gets it once.
            let m = spec.manifest();
            let count = |p: u16| m.rules.iter().filter(|r| r.ports == crate::port_range::PortRange::single(p) && r.role != crate::ports::PortRole::Ssh).count();
            assert_eq!(count(if kind == "livekit" { 7881 } else if kind == "janus" { 8088 } else { 3478 }), if kind == "coturn" { 2 } else { 1 }, "{kind}: {:?}", m.rules);
        }
    }

    /// Issue 14: structural and semantic problems of one spec come together, and a placeholder for a missing field
    /// adds no finding of its own.
    #[test]
    fn structural_and_semantic_problems_are_reported_together() {
        let source = GOOD.replace("  kind: janus\n", "").replace("203.0.113.7/32", "203.0.113.7/24").replace("name: demo", "name: Demo");
        let checked = crate::validate::check_source(&source, Path::new("."), FileCheck::Warn);
        let fields: Vec<&str> = checked.findings.errors.iter().map(|d| d.field.as_str()).collect();
        assert_eq!(fields, ["name", "ssh.allow_from[0]", "sfu.kind"], "{:?}", checked.findings.errors);
        assert!(checked.spec.is_none());
        // A missing provider kind: nothing about the placeholder's rules (kind ssh needs hosts, region is cloud-only).
        let source = GOOD.replace("  kind: digitalocean\n", "");
        let checked = crate::validate::check_source(&source, Path::new("."), FileCheck::Warn);
        let errors: Vec<String> = checked.findings.errors.iter().map(|d| d.to_string()).collect();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].starts_with("provider.kind (line 2, column 1): missing field `kind`"), "{errors:?}");
    }

    #[test]
    fn a_huge_participant_count_warns_without_overflow() {
        let source = GOOD.replace("  tcp_ports: [443]\n", "  participants: 4294967295\n");
        let spec = Spec::parse(&source).unwrap();
        let w = spec.validate(&source, Path::new("."), FileCheck::Warn).warnings;
        assert!(w.iter().any(|d| d.message.contains("fewer than 4294967295")), "{w:?}");
    }

    #[test]
    fn mediasoup_without_an_artifact_is_an_error() {
        let e = errors_of(&GOOD.replace("kind: janus", "kind: mediasoup"));
        assert!(e.iter().any(|m| m.starts_with("sfu (line 7") && m.contains("needs an `artifact`")), "{e:?}");
        let with = GOOD.replace("kind: janus", "kind: mediasoup\n  artifact: ./app");
        assert!(errors_of(&with).is_empty());
    }

    #[test]
    fn a_one_port_range_says_how_short_it_falls() {
        let source = GOOD.replace("kind: janus", "kind: mediasoup\n  artifact: ./app").replace("40000-41000", "44444");
        let spec = Spec::parse(&source).unwrap();
        let w: Vec<String> = spec.validate(&source, Path::new("."), FileCheck::Warn).warnings.iter().map(|d| d.to_string()).collect();
        assert!(w.iter().any(|m| m.contains("1 port carries not even one participant on mediasoup, which needs about 2 ports per participant; 10 wanted")), "{w:?}");
        assert!(w.iter().any(|m| m.contains("at least 20 ports, e.g. `44444-44463`")), "{w:?}");
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
