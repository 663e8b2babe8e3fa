//! Rendering: the templates (`templates/*.j2`, embedded, overridable with `--templates DIR`) plus one host's
//! context (its address, the port manifest, the SFU settings) give every file that host gets.
//!
//! Undefined variables are errors (a typo fails here, not on the host), trailing newlines are kept and nothing is
//! auto-escaped: these are config files, not HTML.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::error::UserError;
use crate::remote::shell_quote;
use crate::secret::Secret;
use crate::ports::{Manifest, PortRole, Protocol};
use crate::kind::KindDescriptor;
use crate::owner::Owner;
use crate::provider::catalog::ProviderData;
use crate::spec::{Spec, resolve_path};

/// The address written into configs when the real one is not known yet (`render` without `--address`).
pub const PLACEHOLDER_ADDRESS: &str = "198.51.100.1";

/// Every template sfuctl ships (every `templates/**/*.j2`, embedded by `build.rs`), by the name a
/// `--templates DIR` override uses.
const TEMPLATES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// A peer range coturn must never relay to, and why (rendered as a comment above its `denied-peer-ip` line).
#[derive(Serialize)]
struct DeniedPeerRange {
    /// coturn's form: one address or `first-last`.
    range: &'static str,
    /// One line: what the range is and why a relay must not reach it.
    why: &'static str,
}

const fn deny(range: &'static str, why: &'static str) -> DeniedPeerRange {
    DeniedPeerRange { range, why }
}

/// Peer ranges coturn must never relay to: private, loopback, link-local, shared, multicast, documentation and
/// other special-purpose networks of both families (IANA's special-purpose registries; the lock-down bbb-install
/// and STUNner's security notes recommend).
const DENIED_PEER_RANGES: &[DeniedPeerRange] = &[
    deny("0.0.0.0-0.255.255.255", "0.0.0.0/8 \"this network\": 0.0.0.0 reaches the host itself on Linux"),
    deny("10.0.0.0-10.255.255.255", "10.0.0.0/8 private (RFC 1918): VPCs and internal services"),
    deny("100.64.0.0-100.127.255.255", "100.64.0.0/10 shared address space (RFC 6598): carrier-grade NAT, some VPCs"),
    deny("127.0.0.0-127.255.255.255", "127.0.0.0/8 loopback: every local service of the host"),
    deny("169.254.0.0-169.254.255.255", "169.254.0.0/16 link-local: the cloud metadata service 169.254.169.254 and its credentials"),
    deny("172.16.0.0-172.31.255.255", "172.16.0.0/12 private (RFC 1918): VPCs, docker bridges"),
    deny("192.0.0.0-192.0.0.255", "192.0.0.0/24 IETF protocol assignments"),
    deny("192.0.2.0-192.0.2.255", "192.0.2.0/24 documentation (TEST-NET-1): never a real peer"),
    deny("192.88.99.0-192.88.99.255", "192.88.99.0/24 deprecated 6to4 relay anycast"),
    deny("192.168.0.0-192.168.255.255", "192.168.0.0/16 private (RFC 1918): internal networks"),
    deny("198.18.0.0-198.19.255.255", "198.18.0.0/15 benchmarking: never a real peer"),
    deny("198.51.100.0-198.51.100.255", "198.51.100.0/24 documentation (TEST-NET-2): never a real peer"),
    deny("203.0.113.0-203.0.113.255", "203.0.113.0/24 documentation (TEST-NET-3): never a real peer"),
    deny("224.0.0.0-255.255.255.255", "224.0.0.0/4 multicast, 240.0.0.0/4 reserved and the broadcast address"),
    // No range starting at `::` (::/128 unspecified, ::/96 IPv4-compatible): coturn 4.6.1 then denies every IPv6
    // peer (`::`) or every IPv4 peer (`::-::ffff:ffff`), as the loopback coturn test in audit.rs shows.
    deny("::1", "::1 loopback: every local service of the host"),
    deny("::ffff:0.0.0.0-::ffff:255.255.255.255", "::ffff:0:0/96 IPv4-mapped: any IPv4 address, the denied ones above included, in IPv6 form"),
    deny("64:ff9b::-64:ff9b::ffff:ffff", "64:ff9b::/96 NAT64: reaches IPv4 networks, private ones included, through a translator"),
    deny("64:ff9b:1::-64:ff9b:1:ffff:ffff:ffff:ffff:ffff", "64:ff9b:1::/48 local-use NAT64 (RFC 8215): internal IPv4 networks"),
    deny("100::-100::ffff:ffff:ffff:ffff", "100::/64 discard-only (RFC 6666)"),
    deny("2001::-2001:1ff:ffff:ffff:ffff:ffff:ffff:ffff", "2001::/23 IETF protocol assignments: Teredo (IPv4 tunnels), ORCHID, benchmarking"),
    deny("2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", "2001:db8::/32 documentation: never a real peer"),
    deny("2002::-2002:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "2002::/16 6to4: IPv4 addresses, private ones included, tunnelled"),
    deny("3fff::-3fff:fff:ffff:ffff:ffff:ffff:ffff:ffff", "3fff::/20 documentation (RFC 9637): never a real peer"),
    deny("5f00::-5f00:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "5f00::/16 SRv6 segment identifiers (RFC 9602): routing internals"),
    deny("fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fc00::/7 unique local (IPv6's private ranges): VPCs, internal services, AWS's metadata fd00:ec2::254"),
    deny("fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fe80::/10 link-local: neighbours on the host's own links"),
    deny("fec0::-feff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "fec0::/10 deprecated site-local: internal networks"),
    deny("ff00::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "ff00::/8 multicast"),
];

/// Where a deployment's files live on a host. Everything sfuctl puts there is under `root`, except the link
/// systemd needs, so `down` removes one directory.
#[derive(Clone, Debug, Serialize)]
pub struct Layout {
    /// `/opt/sfuctl/<name>`.
    pub root: String,
    /// The uploaded artifact.
    pub app: String,
    /// The SFU's rendered config files.
    pub config: String,
    /// The service's environment file.
    pub env_file: String,
    /// The start script run by systemd or the fallback supervisor.
    pub start_script: String,
    /// The systemd unit (linked into systemd by `up`).
    pub unit: String,
    /// The host firewall ruleset.
    pub nftables: String,
    /// The log of the fallback supervisor.
    pub log: String,
    /// The pid file of the fallback supervisor.
    pub pid: String,
    /// The fallback supervisor (for hosts without systemd).
    pub supervisor: String,
    /// The pid file of the server the fallback supervisor runs (its mtime: when it started).
    pub child_pid: String,
    /// What the fallback supervisor knows of its server's exits: `restarts=N` and `last_exit=<shell status>`.
    pub supervisor_state: String,
    /// The one directory the service user may write: pid files, the server's own state (coturn's user database).
    pub run: String,
    /// Where sfuctl installs a runtime the app needs (Node.js).
    pub node: String,
    /// The sha256 of the artifact last deployed.
    pub artifact_marker: String,
}

impl Layout {
    /// The layout of a deployment.
    pub fn of(spec: &Spec) -> Self {
        let root = Owner::new(&spec.name).host_root();
        Self {
            app: format!("{root}/app"),
            config: format!("{root}/config"),
            env_file: format!("{root}/sfuctl.env"),
            start_script: format!("{root}/start.sh"),
            unit: format!("{root}/{}.service", service_name(spec)),
            nftables: format!("{root}/nftables.nft"),
            log: format!("{root}/service.log"),
            pid: format!("{root}/service.pid"),
            supervisor: format!("{root}/supervise.sh"),
            child_pid: format!("{root}/run/service.child.pid"),
            supervisor_state: format!("{root}/run/supervisor.state"),
            run: format!("{root}/run"),
            node: format!("{root}/node"),
            artifact_marker: format!("{root}/.artifact.sha256"),
            root,
        }
    }
}

/// The service's name: `sfuctl-<name>` (a systemd unit of that name, or the fallback supervisor's process).
pub fn service_name(spec: &Spec) -> String {
    Owner::new(&spec.name).service_name()
}

/// The nftables table sfuctl owns on each host: `sfuctl_<name>` (nft names take no `-`).
pub fn nft_table(spec: &Spec) -> String {
    Owner::new(&spec.name).nft_table()
}

/// The SSH login user: the spec's, or the provider's default.
pub fn ssh_user(spec: &Spec) -> String {
    spec.ssh.user.clone().unwrap_or_else(|| ProviderData::get(spec.provider.kind).defaults.ssh_user.clone())
}

/// The user the service runs as: `sfu.run_as`, else `sfuctl` on cloud hosts (cloud-init makes it), else the SSH
/// user on existing hosts.
pub fn run_as(spec: &Spec) -> String {
    spec.sfu.run_as.clone().unwrap_or_else(|| if ProviderData::get(spec.provider.kind).creates_servers() { "sfuctl".into() } else { ssh_user(spec) })
}

/// The service's environment files on the host: `sfuctl.env`, then the kind's config files marked `env_file`.
pub fn env_files(spec: &Spec) -> Vec<String> {
    let layout = Layout::of(spec);
    let mut files = vec![layout.env_file.clone()];
    files.extend(spec.sfu.kind.descriptor().config_files.iter().filter(|f| f.env_file).map(|f| format!("{}/{}", layout.config, f.file)));
    files
}

/// The name the artifact gets inside `app/` when it is a single file (a directory becomes `app/` itself).
fn artifact_name(spec: &Spec, base_dir: &Path) -> Option<String> {
    spec.sfu.artifact.as_deref().and_then(|raw| {
        let path: PathBuf = resolve_path(raw, base_dir);
        (!path.is_dir()).then(|| path.file_name().map(|n| n.to_string_lossy().into_owned())).flatten()
    })
}

/// The command `start.sh` runs in `app/`: `sfu.command`, else the kind's default.
pub fn start_command(spec: &Spec, base_dir: &Path) -> String {
    let layout = Layout::of(spec);
    spec.sfu.command.clone().unwrap_or_else(|| default_command(spec.sfu.kind.descriptor(), &layout, artifact_name(spec, base_dir).as_deref()))
}

/// A host to render for.
#[derive(Clone, Debug, Serialize)]
pub struct HostTarget {
    /// Its name: the spec's for existing hosts, `sfuctl-<name>-<n>` for cloud hosts.
    pub name: String,
    /// Its public address, announced by the SFU.
    pub address: String,
    /// Its public IPv6 address, when it has one.
    pub address_v6: Option<String>,
    /// The address the SFU binds.
    pub listen_ip: String,
}

impl HostTarget {
    /// A host announcing `address` (IPv4 or IPv6, or a placeholder) and binding the wildcard address of its family.
    pub fn new(name: impl Into<String>, address: impl Into<String>) -> Self {
        let address = address.into();
        let listen_ip = if address.contains(':') { "::" } else { "0.0.0.0" }.to_string();
        Self { name: name.into(), address, address_v6: None, listen_ip }
    }
}

/// The hosts of a spec, with `address` for cloud hosts whose real addresses are not known yet.
pub fn host_targets(spec: &Spec, address: &str) -> Vec<HostTarget> {
    if !ProviderData::get(spec.provider.kind).creates_servers() {
        spec.provider.hosts.iter().map(|h| HostTarget::new(&h.name, &h.address)).collect()
    } else {
        (1..=spec.provider.count.unwrap_or(1)).map(|n| HostTarget::new(Owner::new(&spec.name).server_name(n), address)).collect()
    }
}

/// A file for one host: where it goes, with which mode, and its contents.
#[derive(Clone, Debug)]
pub struct RenderedFile {
    /// The absolute path on the host.
    pub path: String,
    /// The file mode (`0o600` for anything holding a secret or the environment).
    pub mode: u32,
    /// The template it came from.
    pub template: &'static str,
    /// The contents.
    pub contents: String,
}

/// Everything one host gets.
#[derive(Clone, Debug)]
pub struct HostFiles {
    /// The host.
    pub host: HostTarget,
    /// The files, in a stable order.
    pub files: Vec<RenderedFile>,
    /// The cloud-init user-data, for cloud hosts.
    pub cloud_init: Option<String>,
}

/// Which templates a spec uses, where each lands on the host and with which mode, in a stable order.
pub fn file_plan(spec: &Spec) -> Vec<(&'static str, String, u32)> {
    file_plan_for(spec, spec.sfu.kind.descriptor())
}

/// [`file_plan`] for the server kind `kind`: the service's and the host's files, then the kind's config files.
pub fn file_plan_for<'k>(spec: &Spec, kind: &'k KindDescriptor) -> Vec<(&'k str, String, u32)> {
    let l = Layout::of(spec);
    let mut files = vec![
        ("service/sfuctl.env.j2", l.env_file.clone(), 0o600),
        ("service/start.sh.j2", l.start_script.clone(), 0o755),
        ("service/systemd.service.j2", l.unit.clone(), 0o644),
        ("service/supervise.sh.j2", l.supervisor.clone(), 0o755),
    ];
    if spec.host_firewall {
        files.push(("host/nftables.nft.j2", l.nftables.clone(), 0o644));
    }
    for f in &kind.config_files {
        files.push((f.template_name.as_str(), format!("{}/{}", l.config, f.file), f.mode));
    }
    files
}

/// The templates and the filters they use.
pub struct Renderer {
    env: Environment<'static>,
}

impl Renderer {
    /// Loads the embedded templates, each replaced by `DIR/<name>` when `overrides` is given and that file exists.
    pub fn new(overrides: Option<&Path>) -> Result<Self> {
        if let Some(dir) = overrides
            && !dir.is_dir()
        {
            return Err(UserError::input(format!("--templates `{}` is not a directory", dir.display()))
                .hint("point it at a directory laid out like sfuctl's templates/, e.g. `janus/janus.jcfg.j2`")
                .into());
        }
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_syntax(minijinja::syntax::SyntaxConfig::builder().keep_trailing_newline(true).build().expect("default delimiters are valid"));
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        env.add_filter("shell_quote", |s: String| shell_quote(&s));
        for (name, embedded) in TEMPLATES {
            let source = match overrides.map(|d| d.join(name)).filter(|p| p.is_file()) {
                Some(path) => std::fs::read_to_string(&path)
                    .map_err(|e| UserError::input(format!("cannot read template `{}`", path.display())).caused_by(e))?,
                None => (*embedded).to_string(),
            };
            env.add_template_owned(*name, source).map_err(|e| {
                UserError::input(format!("template `{name}` does not parse")).caused_by(anyhow::anyhow!("{e:#}"))
            })?;
        }
        Ok(Self { env })
    }

    /// Renders every file of one host.
    pub fn render_host(&self, spec: &Spec, base_dir: &Path, host: &HostTarget, secret: &Secret) -> Result<HostFiles> {
        let manifest = spec.manifest();
        let mut ctx = Context::new(spec, base_dir, host, &manifest, secret);
        let nftables = self.render_one("host/nftables.nft.j2", &ctx)?;
        ctx.nftables = nftables.clone();
        let mut files = Vec::new();
        for (template, path, mode) in file_plan(spec) {
            let contents = if template == "host/nftables.nft.j2" { nftables.clone() } else { self.render_one(template, &ctx)? };
            files.push(RenderedFile { path, mode, template, contents });
        }
        let cloud_init = ProviderData::get(spec.provider.kind).creates_servers().then(|| self.render_one("host/cloud-init.yaml.j2", &ctx)).transpose()?;
        Ok(HostFiles { host: host.clone(), files, cloud_init })
    }

    fn render_one(&self, name: &str, ctx: &Context) -> Result<String> {
        let template = self.env.get_template(name).expect("every template is registered");
        template
            .render(Serde(ctx))
            .map_err(|e| UserError::failed(format!("cannot render template `{name}`")).caused_by(anyhow::anyhow!("{e:#}")))
            .with_context(|| format!("rendering for host `{}`", ctx.host.name))
    }
}

/// The variables a template sees. Field names are the template contract (README "Templates").
#[derive(Serialize)]
struct Context {
    name: String,
    kind: &'static str,
    provider: &'static str,
    service: String,
    host: HostTarget,
    rtc: RtcRange,
    ports: Vec<TemplatePort>,
    ssh_port: u16,
    sfu: SfuContext,
    vars: BTreeMap<String, serde_yaml::Value>,
    secret: String,
    command: String,
    run_as: String,
    env_files: Vec<String>,
    privileged_ports: Vec<u16>,
    paths: Layout,
    nft_table: String,
    host_firewall: bool,
    denied_peer_ranges: &'static [DeniedPeerRange],
    nftables: String,
    install: InstallContext,
}

/// What a fresh host installs (cloud-init installs it early on cloud hosts; `up` checks it over SSH everywhere).
#[derive(Serialize)]
struct InstallContext {
    packages: Vec<String>,
    mask_units: Vec<String>,
    /// Put in front of the service's PATH (a runtime sfuctl installed, e.g. Node.js).
    path_prefix: Option<String>,
}

#[derive(Serialize)]
struct RtcRange {
    min: u16,
    max: u16,
    /// How many ports the range has (coturn's quotas are sized from it).
    ports: u32,
}

#[derive(Serialize)]
struct TemplatePort {
    protocol: Protocol,
    ports: String,
    purpose: String,
    role: PortRole,
    anywhere: bool,
    sources_v4: Vec<String>,
    sources_v6: Vec<String>,
}

#[derive(Serialize)]
struct SfuContext {
    listen_port: Option<u16>,
    /// `sfu.rtc_tcp`: the media range is open over TCP too.
    rtc_tcp: bool,
    ice_tcp_port: Option<u16>,
    domain: Option<String>,
    env: BTreeMap<String, String>,
    vars: BTreeMap<String, serde_yaml::Value>,
    artifact_name: Option<String>,
}

impl Context {
    fn new(spec: &Spec, base_dir: &Path, host: &HostTarget, manifest: &Manifest, secret: &Secret) -> Self {
        let layout = Layout::of(spec);
        let media = manifest.media();
        let ports = manifest
            .rules
            .iter()
            .map(|r| {
                let (v4, v6): (Vec<&ipnet::IpNet>, Vec<&ipnet::IpNet>) = r.sources.iter().partition(|n| matches!(n, ipnet::IpNet::V4(_)));
                let anywhere = v4.iter().any(|n| n.prefix_len() == 0) && v6.iter().any(|n| n.prefix_len() == 0);
                TemplatePort {
                    protocol: r.protocol,
                    ports: r.ports.to_string(),
                    purpose: r.purpose.clone(),
                    role: r.role,
                    anywhere,
                    sources_v4: v4.iter().map(|n| n.to_string()).collect(),
                    sources_v6: v6.iter().map(|n| n.to_string()).collect(),
                }
            })
            .collect();
        let artifact_name = artifact_name(spec, base_dir);
        let command = start_command(spec, base_dir);
        let run_as = run_as(spec);
        let env_files = env_files(spec);
        let privileged_ports = if run_as == "root" {
            Vec::new()
        } else {
            manifest.rules.iter().filter(|r| r.role != PortRole::Ssh && r.ports.start < 1024).map(|r| r.ports.start).collect()
        };
        Self {
            name: spec.name.clone(),
            kind: spec.sfu.kind.as_str(),
            provider: spec.provider.kind.as_str(),
            service: service_name(spec),
            host: host.clone(),
            rtc: RtcRange { min: media.start, max: media.end, ports: u32::from(media.end) - u32::from(media.start) + 1 },
            ports,
            ssh_port: spec.ssh.port(),
            sfu: SfuContext {
                listen_port: spec.sfu.listen_port(),
                rtc_tcp: spec.sfu.rtc_tcp,
                ice_tcp_port: spec.sfu.ice_tcp_port(),
                domain: spec.sfu.domain.clone(),
                env: spec.sfu.env.clone(),
                vars: spec.sfu.vars.clone(),
                artifact_name,
            },
            vars: spec.sfu.vars.clone(),
            secret: secret.expose().to_string(),
            command,
            run_as,
            env_files,
            privileged_ports,
            nft_table: nft_table(spec),
            host_firewall: spec.host_firewall,
            denied_peer_ranges: DENIED_PEER_RANGES,
            nftables: String::new(),
            install: {
                let plan = crate::install::InstallPlan::for_spec(spec, &layout.node);
                InstallContext { path_prefix: plan.path_prefix(), packages: plan.packages.names, mask_units: plan.packages.mask_units }
            },
            paths: layout,
        }
    }
}

/// The start command when the spec gives none: the kind's (with the uploaded binary when the artifact is a single
/// file, else the one on the host's PATH).
fn default_command(kind: &KindDescriptor, layout: &Layout, artifact_file: Option<&str>) -> String {
    kind.default_command(&layout.config, artifact_file)
        // Validation requires a command for kinds without a default.
        .unwrap_or_else(|| artifact_file.map_or_else(|| "false".into(), |f| format!("./{}", shell_quote(f))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_typo_in_a_template_fails_at_render_time() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("service")).unwrap();
        std::fs::write(dir.path().join("service/start.sh.j2"), "exec {{ comand }}\n").unwrap();
        let spec = Spec::parse("name: t\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.9 }] }\nsfu: { kind: coturn, rtc_ports: 40000-41000 }\n").unwrap();
        let r = Renderer::new(Some(dir.path())).unwrap();
        let host = &host_targets(&spec, PLACEHOLDER_ADDRESS)[0];
        let err = r.render_host(&spec, Path::new("."), host, &Secret::new("x")).unwrap_err();
        assert!(format!("{err:#}").contains("comand"), "{err:#}");
    }

    /// The rendered turnserver.conf of a coturn host announcing `address` (and `address_v6`), with `extra` in `sfu`.
    fn turnserver_conf(address: &str, address_v6: Option<&str>, extra: &str) -> String {
        let spec = Spec::parse(&format!("name: t\nprovider: {{ kind: ssh, hosts: [{{ name: a, address: {address} }}] }}\nsfu:\n  kind: coturn\n  rtc_ports: 40000-41000\n{extra}")).unwrap();
        let mut host = HostTarget::new("a", address);
        host.address_v6 = address_v6.map(str::to_string);
        let files = Renderer::new(None).unwrap().render_host(&spec, Path::new("."), &host, &Secret::new("s")).unwrap();
        files.files.into_iter().find(|f| f.path.ends_with("turnserver.conf")).unwrap().contents
    }

    #[test]
    fn coturn_denies_its_own_addresses_and_every_special_range_of_both_families_each_with_a_why() {
        let conf = turnserver_conf("203.0.113.9", Some("2a01:4f8:1:2::9"), "");
        let denied: Vec<&str> = conf.lines().filter_map(|l| l.strip_prefix("denied-peer-ip=")).collect();
        // The host's own public addresses, IPv4 and IPv6.
        assert!(denied.contains(&"203.0.113.9") && denied.contains(&"2a01:4f8:1:2::9"), "{denied:?}");
        for wanted in [
            "::1",
            "::ffff:0.0.0.0-::ffff:255.255.255.255",
            "64:ff9b::-64:ff9b::ffff:ffff",
            "fc00::-fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "fe80::-febf:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "ff00::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
            "2001:db8::-2001:db8:ffff:ffff:ffff:ffff:ffff:ffff",
            "10.0.0.0-10.255.255.255",
            "169.254.0.0-169.254.255.255",
            "127.0.0.0-127.255.255.255",
        ] {
            assert!(denied.contains(&wanted), "denied-peer-ip={wanted} missing: {denied:?}");
        }
        // Every range is a valid range of one family, first <= last, and has a why-comment right above it.
        let lines: Vec<&str> = conf.lines().collect();
        for r in DENIED_PEER_RANGES {
            let (first, last) = r.range.split_once('-').unwrap_or((r.range, r.range));
            let (first, last): (std::net::IpAddr, std::net::IpAddr) = (first.parse().unwrap(), last.parse().unwrap());
            assert!(first.is_ipv4() == last.is_ipv4() && first <= last, "{}", r.range);
            let at = lines.iter().position(|l| *l == format!("denied-peer-ip={}", r.range)).unwrap();
            assert_eq!(lines[at - 1], format!("# {}", r.why), "the why-comment of {}", r.range);
        }
        // What must stay reachable: a public peer of either family is in no denied range.
        let inside = |ip: std::net::IpAddr| {
            DENIED_PEER_RANGES.iter().any(|r| {
                let (a, b) = r.range.split_once('-').unwrap_or((r.range, r.range));
                let (a, b): (std::net::IpAddr, std::net::IpAddr) = (a.parse().unwrap(), b.parse().unwrap());
                a.is_ipv4() == ip.is_ipv4() && a <= ip && ip <= b
            })
        };
        for public in ["8.8.8.8", "2a00:1450:4001::1", "2606:4700::1111"] {
            assert!(!inside(public.parse().unwrap()), "{public} must stay reachable");
        }
        for special in ["fd00:ec2::254", "::ffff:10.0.0.1", "64:ff9b::a00:1", "fe80::1", "ff02::1", "2001:db8::1", "169.254.169.254"] {
            assert!(inside(special.parse().unwrap()), "{special} must be denied");
        }
        // coturn reads a range from `::` as "any address" of one family: never such a line.
        assert!(!denied.iter().any(|d| *d == "::" || d.starts_with("::-")), "{denied:?}");
        // An IPv6-only host denies its one address too.
        assert!(turnserver_conf("2a01:4f8:1:2::9", None, "").contains("\ndenied-peer-ip=2a01:4f8:1:2::9\n"));
    }

    #[test]
    fn coturn_relays_only_to_the_paired_sfu_when_asked() {
        let open = turnserver_conf("203.0.113.9", None, "");
        assert!(!open.contains("allowed-peer-ip") && !open.contains("denied-peer-ip=0.0.0.0-255.255.255.255"));
        let paired = turnserver_conf("203.0.113.9", None, "  vars: { only_peers: [198.51.100.20, \"2a01:4f8::20\"] }\n");
        let lines: Vec<&str> = paired.lines().collect();
        for line in ["denied-peer-ip=0.0.0.0-255.255.255.255", "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "allowed-peer-ip=198.51.100.20", "allowed-peer-ip=2a01:4f8::20"] {
            assert!(lines.contains(&line), "{line} in:\n{paired}");
        }
    }
}
