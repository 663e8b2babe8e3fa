//! `sfuctl audit`: does media really flow to every host, and when it does not, which layer breaks it?
//!
//! Each check looks at one layer, from the outside in: the cloud firewall's live rules, SSH exposure, the host
//! firewall (the live nftables ruleset, evaluated for every public port), the service and its bound ports, the
//! SFU config on the host (read back, not the local render), then the network itself: an authenticated UDP probe
//! of the media range from this machine to a short-lived responder on the host, and TCP connects. A host's
//! `cause` is its first failing check in that order, which names the layer to fix. The check ids are part of the
//! user contract.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::error::UserError;
use crate::deploy::{Deployment, ServiceState, Session, run_as_root};
use crate::invocation::Invocation;
use crate::kind::{AbuseCheck, ConfigFormat, ReadBack, ReadField};
use crate::service::ServiceScripts;
use crate::nft_eval::{Packet, Ruleset};
use crate::ports::{PortRole, Protocol};
use crate::probe;
use crate::range_map::RangeMap;
use crate::provider::{Firewall, Server};
use crate::remote::shell_quote as q;
use crate::render::{HostTarget, Layout, service_name};
use crate::spec::Spec;

/// The order checks run and are reported in; the first failing one is a host's cause.
pub const CHECK_IDS: [&str; 11] = [
    "cloud-firewall",
    "ssh-exposure",
    "host-firewall",
    "service",
    "config-consistency",
    "udp-reachability",
    "tcp-reachability",
    // Only for the kinds whose descriptor names them (`abuse_checks`).
    "turn-auth",
    "turn-peers",
    "janus-api",
    "janus-ice",
];

/// A check's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The layer is as the spec wants.
    Pass,
    /// Works, but is probably not what you want (or could not be fully evaluated).
    Warn,
    /// Media will not flow (or the layer disagrees with the spec).
    Fail,
    /// Does not apply here.
    Skip,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Self::Pass => "pass",
            Self::Warn => "warn",
            Self::Fail => "fail",
            Self::Skip => "skip",
        }
    }
}

/// One check on one host.
#[derive(Clone, Debug, Serialize)]
pub struct Check {
    /// The check's id (see [`CHECK_IDS`]).
    pub id: &'static str,
    /// Its outcome.
    pub status: Status,
    /// One line: what was seen.
    pub detail: String,
    /// How to fix it, for anything but a pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// For a probed port range: which sub-ranges answered, stayed silent or are held by the server.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<RangeMap>,
}

fn check(id: &'static str, status: Status, detail: impl Into<String>, hint: Option<String>) -> Check {
    Check { id, status, detail: detail.into(), hint, range: None }
}

/// Every check of one host.
#[derive(Clone, Debug, Serialize)]
pub struct HostAudit {
    /// The host's name.
    pub name: String,
    /// Its public address.
    pub address: String,
    /// The checks, in [`CHECK_IDS`] order.
    pub checks: Vec<Check>,
    /// The first failing check: the layer to fix first.
    pub cause: Option<&'static str>,
}

impl HostAudit {
    /// Whether any check failed.
    pub fn failed(&self) -> bool {
        self.checks.iter().any(|c| c.status == Status::Fail)
    }
}

/// What the cloud says, for the cloud checks (none for existing hosts).
#[derive(Clone, Debug)]
pub struct CloudView {
    /// The provider's name.
    pub provider: &'static str,
    /// The deployment's firewall, when it exists.
    pub firewall: Option<Firewall>,
    /// The deployment's servers.
    pub servers: Vec<Server>,
    /// Whether the provider blocks egress without explicit outbound rules (DigitalOcean).
    pub needs_outbound_rules: bool,
}

/// How to probe.
#[derive(Clone, Copy, Debug, Default)]
pub struct AuditOptions {
    /// Probe this many ports of the media range, spread evenly; all of them when `None`.
    pub sample: Option<usize>,
    /// How long to wait for UDP answers; `None`: 2 s plus 1 s per 10,000 ports probed (a large range answered by
    /// a busy host needs the time, and only silent ports ever wait it out).
    pub probe_timeout: Option<Duration>,
}

impl AuditOptions {
    /// The UDP wait for probing `ports` ports.
    pub fn probe_timeout_for(&self, ports: usize) -> Duration {
        self.probe_timeout.unwrap_or_else(|| Duration::from_millis(2000 + ports as u64 / 10))
    }
}

/// Audits one host, over `session` when the caller has one open (`up` does), else over a new one.
pub async fn audit_host(dep: &Arc<Deployment>, host: &HostTarget, cloud: Option<&CloudView>, opts: AuditOptions, session: Option<Session>) -> Result<HostAudit> {
    let spec = &dep.spec;
    let run = &dep.invocation;
    let mut checks = vec![cloud_firewall(spec, host, cloud, run)];
    let session = match session {
        Some(s) => s,
        None => dep.connect(host).await?,
    };
    let scripts = ServiceScripts { manager: session.facts.manager, name: &service_name(spec), layout: &dep.layout, run_as: "" };
    let gathered = run_as_root(&session, &format!("{}{}{}\n", gather_script(&dep.layout, spec), scripts.status(), crate::health::SOCKETS_SCRIPT)).await?;
    let facts = Gathered::parse(&gathered);
    let host_fw = host_firewall(spec, &facts, run);
    checks.push(ssh_exposure(spec, cloud, host_fw.table_missing, run));
    checks.push(host_fw.check.clone());
    checks.push(service(dep, &session, &gathered));
    checks.push(config_consistency(spec, host, &facts, run));
    checks.push(udp_reachability(dep, &session, host, opts, &host_fw.dropped_media, cloud, &crate::health::bound_ports(&gathered)).await);
    checks.push(tcp_reachability(host, manifest_tcp_ports(spec), spec.manifest().tcp_media()).await);
    for abuse in &spec.sfu.kind.descriptor().abuse_checks {
        let (spec, host, run) = (spec.clone(), host.clone(), run.clone());
        let abuse = *abuse;
        let c = tokio::task::spawn_blocking(move || abuse_check(&spec, &host, abuse, &run)).await.unwrap_or_else(|e| check(abuse.id(), Status::Fail, format!("the probe panicked: {e}"), None));
        checks.push(c);
    }
    let cause = checks.iter().find(|c| c.status == Status::Fail).map(|c| c.id);
    Ok(HostAudit { name: host.name.clone(), address: host.address.clone(), checks, cause })
}

fn cloud_firewall(spec: &Spec, host: &HostTarget, cloud: Option<&CloudView>, run: &Invocation) -> Check {
    let id = "cloud-firewall";
    let Some(cloud) = cloud else {
        return check(id, Status::Skip, "existing host: no cloud firewall sfuctl manages", None);
    };
    let Some(fw) = &cloud.firewall else {
        return check(id, Status::Fail, format!("the firewall {} does not exist on {}", crate::owner::Owner::new(&spec.name).firewall_name(), cloud.provider), Some(format!("run `{}` to create it", run.command("up", ""))));
    };
    let wanted = spec.manifest().cloud_rules();
    let diff = fw.diff(&wanted);
    let mut problems = Vec::new();
    for r in &diff.missing {
        problems.push(format!("missing {r}"));
    }
    for r in &diff.extra {
        let wider = wanted.iter().any(|w| w.protocol == r.protocol && w.ports.overlaps(&r.ports));
        problems.push(format!("{} {r}", if wider { "wider than the spec:" } else { "extra" }));
    }
    for r in &diff.unknown {
        problems.push(format!("extra {r}"));
    }
    if let Some(server) = cloud.servers.iter().find(|s| s.name == host.name)
        && !fw.covers(server)
    {
        problems.push(format!("not attached to {}", host.name));
    }
    if cloud.needs_outbound_rules && !fw.outbound_ok {
        problems.push("outbound traffic is blocked (no allow-all outbound rules)".into());
    }
    if problems.is_empty() {
        check(id, Status::Pass, format!("{} ({}): {} rule(s) match the manifest, attached, outbound allowed", fw.name, fw.status, fw.rules.len()), None)
    } else {
        check(id, Status::Fail, format!("{}: {}", fw.name, problems.join("; ")), Some(format!("someone changed the firewall outside sfuctl: `{}` puts the manifest's rules back", run.command("up", ""))))
    }
}

fn ssh_exposure(spec: &Spec, cloud: Option<&CloudView>, host_table_missing: bool, run: &Invocation) -> Check {
    let id = "ssh-exposure";
    let port = spec.ssh.port();
    // Without a cloud firewall, the spec's allow_from holds only while sfuctl's table is loaded on the host.
    if host_table_missing && cloud.and_then(|c| c.firewall.as_ref()).is_none() {
        return check(
            id,
            Status::Warn,
            format!("SSH (tcp {port}) is limited by nothing sfuctl can see: its host firewall table is not loaded"),
            Some(format!("run `{}` to load it again (see host-firewall)", run.command("up", ""))),
        );
    }
    // The live cloud rule counts when there is one; otherwise the spec's allow_from (which the host firewall gets).
    let sources: Vec<ipnet::IpNet> = match cloud.and_then(|c| c.firewall.as_ref()) {
        Some(fw) => fw.rules.iter().filter(|r| r.protocol == Protocol::Tcp && r.ports.contains(port)).flat_map(|r| r.sources.clone()).collect(),
        None => spec.manifest().ssh().sources.clone(),
    };
    let open: Vec<String> = sources.iter().filter(|s| s.prefix_len() == 0).map(|s| s.to_string()).collect();
    if open.is_empty() {
        let from: Vec<String> = sources.iter().map(|s| s.to_string()).collect();
        check(id, Status::Pass, format!("SSH (tcp {port}) only from {}", from.join(", ")), None)
    } else {
        check(id, Status::Warn, format!("SSH (tcp {port}) is reachable from {}", open.join(" and ")), Some(format!("set `ssh.allow_from: [<your address>/32]` and run `{}`", run.command("up", ""))))
    }
}

/// One round trip: the nftables ruleset, where this machine connects from, the interface that traffic arrives on,
/// the host's addresses, and the SFU config files.
fn gather_script(l: &Layout, spec: &Spec) -> String {
    let configs: Vec<String> = config_files(l, spec).into_iter().map(|f| q(&f)).collect();
    format!(
        "client=${{SSH_CLIENT%% *}}; echo \"client=$client\"\n\
         echo \"dev=$(ip -o route get \"$client\" 2>/dev/null | sed -n 's/.* dev \\([^ ]*\\).*/\\1/p')\"\n\
         echo \"addrs=$(ip -o addr show 2>/dev/null | awk '{{print $4}}' | cut -d/ -f1 | tr '\\n' ' ')\"\n\
         if command -v nft >/dev/null 2>&1; then echo \"nft=$(nft -j list ruleset 2>&1 | tr -d '\\n')\"; else echo nft-missing; fi\n\
         if command -v iptables-legacy-save >/dev/null 2>&1; then echo \"legacy=$(iptables-legacy-save 2>/dev/null | grep -c '^-A')\"; fi\n\
         for f in {}; do echo \"== $f\"; cat \"$f\" 2>/dev/null || echo '!! missing'; done\n",
        configs.join(" "),
    )
}

/// The config files whose values are read back: the one the kind's descriptor names.
fn config_files(l: &Layout, spec: &Spec) -> Vec<String> {
    vec![format!("{}/{}", l.root, spec.sfu.kind.descriptor().read_back.file)]
}

struct Gathered {
    client: Option<IpAddr>,
    dev: String,
    addrs: Vec<String>,
    nft: Option<String>,
    legacy_rules: usize,
    files: Vec<(String, Option<String>)>,
}

impl Gathered {
    fn parse(out: &str) -> Self {
        let get = |k: &str| out.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap_or("").trim().to_string();
        let mut files = Vec::new();
        let mut current: Option<(String, String)> = None;
        for line in out.lines() {
            if let Some(name) = line.strip_prefix("== ") {
                if let Some((n, t)) = current.take() {
                    files.push((n, Some(t)));
                }
                current = Some((name.to_string(), String::new()));
            } else if let Some((_, text)) = current.as_mut() {
                text.push_str(line);
                text.push('\n');
            }
        }
        if let Some((n, t)) = current {
            files.push((n, Some(t)));
        }
        let files = files.into_iter().map(|(n, t)| if t.as_deref() == Some("!! missing\n") { (n, None) } else { (n, t) }).collect();
        Self {
            client: get("client").parse().ok(),
            dev: get("dev"),
            addrs: get("addrs").split_whitespace().map(str::to_string).collect(),
            nft: out.lines().find_map(|l| l.strip_prefix("nft=")).map(str::to_string),
            legacy_rules: get("legacy").parse().unwrap_or(0),
            files,
        }
    }
}

struct HostFirewallResult {
    check: Check,
    /// Media ports the host firewall drops (for the UDP check's hint).
    dropped_media: Vec<u16>,
    /// The spec wants sfuctl's table and the host does not have it (lost at a reboot, or removed by hand).
    table_missing: bool,
}

fn host_firewall(spec: &Spec, g: &Gathered, run: &Invocation) -> HostFirewallResult {
    let id = "host-firewall";
    let manifest = spec.manifest();
    let Some(json) = &g.nft else {
        let c = if g.legacy_rules > 0 {
            check(id, Status::Warn, format!("nft is missing and {} iptables-legacy rule(s) are loaded: not evaluated", g.legacy_rules), Some("install nftables so sfuctl can evaluate and manage the host firewall".into()))
        } else {
            check(id, Status::Pass, "no host firewall (nft is not installed and no iptables rules are loaded)", None)
        };
        return HostFirewallResult { check: c, dropped_media: Vec::new(), table_missing: spec.host_firewall };
    };
    let ruleset = match Ruleset::parse(json) {
        Ok(r) => r,
        Err(e) => {
            return HostFirewallResult {
                check: check(id, Status::Warn, format!("cannot read the host's nftables ruleset: {e}"), None),
                dropped_media: Vec::new(),
                table_missing: false,
            };
        }
    };
    let saddr = g.client.unwrap_or_else(|| "198.51.100.1".parse().expect("an address"));
    let iif = if g.dev.is_empty() { "eth0".to_string() } else { g.dev.clone() };
    let mut dropped: Vec<(Protocol, u16, String)> = Vec::new();
    let mut unknown = Vec::new();
    for rule in &manifest.rules {
        // SSH is judged by ssh-exposure; this machine's source is what the host firewall sees for the rest.
        if rule.role == PortRole::Ssh {
            continue;
        }
        for port in rule.ports.start..=rule.ports.end {
            let v = ruleset.evaluate(&Packet { protocol: rule.protocol, dport: port, saddr, iif: iif.clone() });
            unknown.extend(v.unknown);
            if !v.accepted {
                dropped.push((rule.protocol, port, v.dropped_by.unwrap_or_default()));
            }
        }
    }
    unknown.sort();
    unknown.dedup();
    let table = crate::owner::Owner::new(&spec.name).nft_table();
    let table_missing = spec.host_firewall && !ruleset.has_table("inet", &table);
    let dropped_media: Vec<u16> = dropped.iter().filter(|(p, port, _)| *p == Protocol::Udp && manifest.media().contains(*port)).map(|(_, p, _)| *p).collect();
    let c = if table_missing {
        check(
            id,
            Status::Fail,
            format!("sfuctl's table inet {table} is not loaded: the host firewall the spec asks for is not there (lost at a reboot, or removed by hand)"),
            Some(format!("run `{}`: it loads the table, and the service unit loads it again at every start", run.command("up", ""))),
        )
    } else if !dropped.is_empty() {
        let mut groups: Vec<String> = Vec::new();
        for proto in [Protocol::Udp, Protocol::Tcp] {
            let mut chains: Vec<&str> = dropped.iter().filter(|d| d.0 == proto).map(|d| d.2.as_str()).collect();
            chains.dedup();
            let ports: Vec<u16> = dropped.iter().filter(|d| d.0 == proto).map(|d| d.1).collect();
            if !ports.is_empty() {
                groups.push(format!("{proto} {} (chain {})", probe::ranges(&ports).join(", "), chains.join(", ")));
            }
        }
        check(id, Status::Fail, format!("the host's nftables ruleset drops {} from {saddr}", groups.join("; ")), Some("another table on the host drops what sfuctl's table allows: every base chain must accept a packet for it to get through; remove or amend that rule".into()))
    } else if !unknown.is_empty() {
        check(id, Status::Warn, format!("allows every public port, but {} expression(s) could not be evaluated: {}", unknown.len(), unknown.join("; ")), Some("the UDP and TCP probes below tell what really gets through".into()))
    } else {
        check(id, Status::Pass, format!("allows every public port from {saddr} (nftables, arriving on {iif})"), None)
    };
    HostFirewallResult { check: c, dropped_media, table_missing }
}

fn service(dep: &Arc<Deployment>, session: &Session, gathered: &str) -> Check {
    let id = "service";
    let (state, bound) = (ServiceState::parse(gathered), crate::health::bound_ports(gathered));
    let name = service_name(&dep.spec);
    if !state.running() {
        let scripts = ServiceScripts { manager: session.facts.manager, name: &name, layout: &dep.layout, run_as: "" };
        let hint = match state.state.as_str() {
            "not deployed" => format!("`{}` deploys it", dep.invocation.command("up", "")),
            _ => format!(
                "read why in its log: `{}` (on the host: {}); `{}` starts it",
                dep.invocation.command("logs", &session.host.name),
                scripts.log_location(),
                dep.invocation.command("up", "")
            ),
        };
        return check(id, Status::Fail, format!("{name} is {} ({})", state.summary, session.facts.manager.as_str()), Some(hint));
    }
    let missing = crate::health::missing_ports(&dep.manifest, &bound);
    if !missing.is_empty() {
        return check(
            id,
            Status::Fail,
            format!("{name} runs but has not bound {}", missing.join(", ")),
            Some(format!("check the server's config and its log (`{}`): it should listen on the manifest's ports", dep.invocation.command("logs", &session.host.name))),
        );
    }
    let expected: Vec<String> = crate::health::expected_ports(&dep.manifest).iter().map(|(p, n)| format!("{p} {n}")).collect();
    let bound_text = if expected.is_empty() { String::new() } else { format!("; bound {}", expected.join(", ")) };
    check(id, Status::Pass, format!("{name} {} ({}){bound_text}", state.summary, session.facts.manager.as_str()), None)
}

/// What a config file says: the announced address, the listen address and the media range.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ConfigValues {
    /// The announced (public) address.
    pub(crate) announced: Option<String>,
    /// The listen address.
    pub(crate) listen: Option<String>,
    /// The media range's first port.
    pub(crate) min: Option<u16>,
    /// The media range's last port.
    pub(crate) max: Option<u16>,
}

fn value_after<'a>(text: &'a str, key: &str, separators: &[char]) -> Option<&'a str> {
    text.lines().map(str::trim).find_map(|l| {
        let rest = l.strip_prefix(key)?;
        let rest = rest.trim_start();
        let rest = rest.strip_prefix(|c| separators.contains(&c))?;
        Some(rest.trim().trim_end_matches([';', ',']).trim_matches(|c| c == '"' || c == '\''))
    })
}

/// The first item of the YAML list under `key:` (`bind_addresses:` then `  - "0.0.0.0"`).
fn first_list_item<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.strip_prefix(key).is_some_and(|rest| rest.trim() == ":"))?;
    lines.find_map(|l| l.strip_prefix("- ")).map(|v| v.trim_matches('"'))
}

/// The raw value of field `key` in a config file of `format`.
fn lookup<'a>(format: ConfigFormat, text: &'a str, key: &str) -> Option<&'a str> {
    match format {
        ConfigFormat::KeyValue | ConfigFormat::Jcfg | ConfigFormat::Env => value_after(text, key, &['=']),
        ConfigFormat::JsConst => value_after(text, &format!("const {key}"), &['=']),
        ConfigFormat::Yaml => match key.strip_suffix("[0]") {
            Some(list) => first_list_item(text, list),
            None => value_after(text, key, &[':']),
        },
    }
}

/// Reads the announced address, the listen address and the media range from a config file, as the kind's
/// descriptor says where they are.
pub(crate) fn read_config(rb: &ReadBack, text: &str) -> ConfigValues {
    let get = |key: &str| lookup(rb.format, text, key);
    let port = |key: &Option<String>| key.as_deref().and_then(get).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok());
    let (min, max) = match &rb.rtc_range {
        Some(key) => {
            let (a, b) = get(key).unwrap_or("").split_once('-').unwrap_or(("", ""));
            (a.parse().ok(), b.parse().ok())
        }
        None => (port(&rb.rtc_min), port(&rb.rtc_max)),
    };
    let listen = match &rb.listen {
        Some(ReadField::Key(key)) => get(key).map(str::to_string),
        Some(ReadField::Fixed(f)) => Some(f.fixed.clone()),
        None => None,
    };
    ConfigValues { announced: get(&rb.announced).map(str::to_string), listen, min, max }
}

fn config_consistency(spec: &Spec, host: &HostTarget, g: &Gathered, run: &Invocation) -> Check {
    let id = "config-consistency";
    let Some((file, Some(text))) = g.files.first() else {
        let file = g.files.first().map(|(f, _)| f.clone()).unwrap_or_default();
        return check(id, Status::Fail, format!("the config {file} is not on the host"), Some(format!("run `{}` to deploy it", run.command("up", ""))));
    };
    let v = read_config(&spec.sfu.kind.descriptor().read_back, text);
    let media = spec.manifest().media();
    let mut problems = Vec::new();
    match v.announced.as_deref() {
        Some(a) if a == host.address => {}
        Some(a) => problems.push(format!("announces {a}, but the host's public address is {}", host.address)),
        None => problems.push("announces no address".into()),
    }
    match (v.min, v.max) {
        (Some(a), Some(b)) if a == media.start && b == media.end => {}
        (Some(a), Some(b)) => problems.push(format!("media range {a}-{b}, but the manifest and firewalls have {media}")),
        _ => problems.push("has no media range".into()),
    }
    if let Some(listen) = &v.listen
        && !matches!(listen.as_str(), "0.0.0.0" | "::")
        && !g.addrs.iter().any(|a| a == listen)
    {
        problems.push(format!("listens on {listen}, which is not an address of the host ({})", g.addrs.join(", ")));
    }
    if problems.is_empty() {
        check(id, Status::Pass, format!("{file} announces {}, media {media}, listens on {}", host.address, v.listen.as_deref().unwrap_or("all addresses")), None)
    } else {
        check(id, Status::Fail, format!("{file}: {}", problems.join("; ")), Some(format!("the config on the host was changed outside sfuctl: `{}` renders it again from the spec", run.command("up", ""))))
    }
}

async fn udp_reachability(
    dep: &Arc<Deployment>,
    session: &Session,
    host: &HostTarget,
    opts: AuditOptions,
    host_drops: &[u16],
    cloud: Option<&CloudView>,
    bound: &std::collections::BTreeSet<(Protocol, u16)>,
) -> Check {
    let id = "udp-reachability";
    let media = dep.manifest.media();
    match probe_media(dep, session, host, opts).await {
        Err(e) => check(id, Status::Fail, format!("the probe could not run: {e:#}"), crate::error::hint_of(&e).or_else(|| Some("see the cause in the detail".into()))),
        Ok(MediaProbe { result, held, windows }) => {
            let map = RangeMap::new(media.start, media.end, &result.probed, &result.reachable, &held);
            let windows_note = if windows > 1 { format!(", in {windows} windows (the host's open-file limit is below the range)") } else { String::new() };
            let unreachable = result.unreachable();
            let busy_note = if held.is_empty() { windows_note } else { format!(" ({} port(s) in use by the server, not probed){windows_note}", held.len()) };
            let cloud_fw_broken = cloud.is_some_and(|c| c.firewall.as_ref().is_none_or(|fw| !fw.diff(&dep.spec.manifest().cloud_rules()).missing.is_empty()));
            let mut c = if result.probed.is_empty() {
                held_range(id, &held, host_drops, cloud_fw_broken, bound, &busy_note)
            } else if unreachable.is_empty() {
                check(id, Status::Pass, format!("{}/{} ports answered{busy_note}", result.reachable.len(), result.probed.len()), None)
            } else {
                let blocked_here = unreachable.iter().all(|p| host_drops.contains(p)) && !host_drops.is_empty();
                let hint = if blocked_here {
                    "the host firewall drops them (see host-firewall)".to_string()
                } else if cloud_fw_broken {
                    "the cloud firewall lacks the media rule (see cloud-firewall)".to_string()
                } else {
                    "something between this machine and the host drops UDP while the host firewall allows it: a cloud or network firewall outside sfuctl's, the platform (HTTP-only platforms carry no UDP), or NAT".to_string()
                };
                check(
                    id,
                    Status::Fail,
                    format!("{}/{} ports answered; unreachable: udp {}{busy_note}", result.reachable.len(), result.probed.len(), probe::ranges(&unreachable).join(", ")),
                    Some(hint),
                )
            };
            c.range = Some(map);
            c
        }
    }
}

/// The judgement when no port of the media range was free to probe: the server's own sockets hold all of it (a
/// mediasoup WebRtcServer on one port, say). A responder cannot prove those from outside, so the sockets are the
/// proof that the server listens, and the firewall checks say whether packets get to them: a warning that says
/// how it was judged, or a failure when a firewall drops them.
fn held_range(id: &'static str, held: &[u16], host_drops: &[u16], cloud_fw_broken: bool, bound: &std::collections::BTreeSet<(Protocol, u16)>, note: &str) -> Check {
    let ports = probe::ranges(held).join(", ");
    if held.is_empty() {
        return check(id, Status::Fail, format!("no port of the media range could be probed{note}"), Some("the responder bound nothing: see the host's open-file limit and what else runs there".into()));
    }
    let dropped: Vec<u16> = held.iter().copied().filter(|p| host_drops.contains(p)).collect();
    if !dropped.is_empty() {
        return check(id, Status::Fail, format!("the server holds udp {ports}, but the host firewall drops udp {}", probe::ranges(&dropped).join(", ")), Some("see host-firewall".into()));
    }
    if cloud_fw_broken {
        return check(id, Status::Fail, format!("the server holds udp {ports}, but the cloud firewall lacks the media rule"), Some("see cloud-firewall".into()));
    }
    let by_sockets = held.iter().all(|p| bound.contains(&(Protocol::Udp, *p)));
    let sockets = if by_sockets { "bound UDP sockets on the host" } else { "the responder found them in use" };
    check(
        id,
        Status::Warn,
        format!(
            "every port of the media range (udp {ports}) is held by the server itself, so none was free for the probe: judged by the server's own sockets ({sockets}) and the firewall checks above, not by an answer from outside"
        ),
        Some("to prove the path too, connect a real client (a WebRTC call); the firewall checks above already show the ports open".into()),
    )
}

/// What probing the media range found.
struct MediaProbe {
    /// Probed and answered ports, over every window.
    result: probe::RangeResult,
    /// Ports bound by the server itself (not probed).
    held: Vec<u16>,
    /// How many windows the range took (more than one when the host's open-file limit is below the range).
    windows: usize,
}

/// Runs the responder on the host and probes it from here, window by window: each run binds what the host's
/// open-file limit allows and says where to go on (`next=`).
async fn probe_media(dep: &Arc<Deployment>, session: &Session, host: &HostTarget, opts: AuditOptions) -> Result<MediaProbe> {
    let media = dep.manifest.media();
    let address: IpAddr = host.address.parse()?;
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| anyhow::anyhow!("no random bytes: {e}"))?;
    let bind = if address.is_ipv4() { "0.0.0.0" } else { "::" };
    let limit = 30 + opts.probe_timeout_for(media.len() as usize).as_secs();
    let mut out = MediaProbe { result: probe::RangeResult::default(), held: Vec::new(), windows: 0 };
    let mut start = media.start;
    loop {
        let window = crate::ports::PortRange { start, end: media.end };
        // The responder goes as an argument (nothing is written on the host); the key goes on stdin, never in `ps`.
        let cmd = session.facts.as_root(&format!("exec python3 -c {} {window} {bind} {limit}", q(probe::RESPONDER)));
        let stdin = format!("{}\n", crate::artifact::hex(&key));
        let (sample, share) = (opts.sample, window.len() as f64 / media.len() as f64);
        let (found, _) = session
            .remote
            .run(move |r| {
                r.exec_while(&cmd, stdin.as_bytes(), "ready", Duration::from_secs(20), |line| {
                    let bound = probe::parse_ready(line);
                    let next = probe::parse_next(line);
                    // What the responder could not bind below where it stopped is held by another socket.
                    let covered_end = next.map_or(u32::from(window.end), |n| u32::from(n) - 1);
                    let held: Vec<u16> = (u32::from(window.start)..=covered_end).map(|p| p as u16).filter(|p| bound.binary_search(p).is_err()).collect();
                    let ports = probe::sample(&bound, sample.map(|n| ((n as f64 * share).ceil() as usize).max(1)));
                    probe::udp_range(address, &ports, &key, opts.probe_timeout_for(ports.len())).map(|r| (r, next, held))
                })
            })
            .await
            .map_err(probe_failure)?;
        let (result, next, held) = found?;
        out.windows += 1;
        out.held.extend(held);
        out.result.probed.extend(result.probed);
        out.result.reachable.extend(result.reachable);
        match next {
            Some(n) if n > start && n <= media.end => start = n,
            _ => break,
        }
    }
    out.result.probed.sort_unstable();
    out.result.reachable.sort_unstable();
    Ok(out)
}

/// A responder that could not start, with a hint for its real cause (python3 missing is only one of them).
fn probe_failure(e: anyhow::Error) -> anyhow::Error {
    let text = format!("{e:#}");
    let hint = if text.contains("python3: not found") || text.contains("python3: command not found") || text.contains("No such file or directory") && text.contains("python3") {
        "the responder needs python3 on the host: install it (`apt-get install -y python3`)"
    } else if text.contains("Too many open files") {
        "the host's open-file limit is too low even for one window of the media range: raise the hard limit (`ulimit -Hn`) of the login user"
    } else {
        "the UDP responder could not start on the host: see the cause above"
    };
    UserError::failed("the UDP responder did not start").caused_by(e).hint(hint).into()
}

/// The public TCP ports to connect to (the SSH port is proven by the session itself).
fn manifest_tcp_ports(spec: &Spec) -> Vec<u16> {
    spec.manifest().single_ports(Protocol::Tcp)
}

/// How many ports of the TCP media range `tcp-reachability` connects to, spread evenly over it (both ends
/// included): enough to see a partial drop, few enough that a filtered range costs one connect timeout.
const TCP_RANGE_SAMPLE: usize = 16;

/// How long one TCP connect may take before the port counts as filtered.
const TCP_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// What one TCP connect found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TcpOutcome {
    /// The handshake completed: something listens.
    Connected,
    /// The host answered with a reset: it got the SYN (every firewall let it through), nothing listens.
    Refused,
    /// No answer in time, or an ICMP error on the way: something drops or rejects it.
    Filtered,
}

/// Connects to every port at once; the outcomes in the order of `ports`.
async fn connect_each(address: IpAddr, ports: &[u16]) -> Vec<(u16, TcpOutcome)> {
    let attempts: Vec<_> = ports
        .iter()
        .map(|&port| {
            tokio::spawn(async move {
                match tokio::time::timeout(TCP_CONNECT_TIMEOUT, tokio::net::TcpStream::connect(SocketAddr::new(address, port))).await {
                    Ok(Ok(_)) => TcpOutcome::Connected,
                    Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => TcpOutcome::Refused,
                    _ => TcpOutcome::Filtered,
                }
            })
        })
        .collect();
    let mut out = Vec::with_capacity(ports.len());
    for (&port, attempt) in ports.iter().zip(attempts) {
        out.push((port, attempt.await.unwrap_or(TcpOutcome::Filtered)));
    }
    out
}

/// Connects to the manifest's single TCP ports (each must accept: the server listens there) and, when
/// `sfu.rtc_tcp` opens the media range over TCP, to a sample of that range: there a refused connect is fine (the
/// host's firewalls let it through; the server listens only on the ports of live transports), a timed-out one is
/// not (filtered). The range is reported with a map, like the UDP range.
async fn tcp_reachability(host: &HostTarget, ports: Vec<u16>, media: Option<crate::ports::PortRange>) -> Check {
    let id = "tcp-reachability";
    let Ok(address) = host.address.parse::<IpAddr>() else {
        return check(id, Status::Fail, format!("`{}` is not an IP address", host.address), None);
    };
    if ports.is_empty() && media.is_none() {
        return check(id, Status::Pass, "no public TCP port besides SSH (reached)", None);
    }
    let sample = media.map(|m| probe::sample(&(m.start..=m.end).collect::<Vec<u16>>(), Some(TCP_RANGE_SAMPLE))).unwrap_or_default();
    let (single, sampled) = tokio::join!(connect_each(address, &ports), connect_each(address, &sample));
    let with = |outcomes: &[(u16, TcpOutcome)], wanted: TcpOutcome| outcomes.iter().filter(|(_, o)| *o == wanted).map(|(p, _)| *p).collect::<Vec<u16>>();
    let list = |v: &[u16]| v.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(", ");
    let (ok, refused, filtered) = (with(&single, TcpOutcome::Connected), with(&single, TcpOutcome::Refused), with(&single, TcpOutcome::Filtered));
    let range_filtered = with(&sampled, TcpOutcome::Filtered);

    let mut parts = Vec::new();
    if !ok.is_empty() {
        parts.push(format!("tcp {} connected", list(&ok)));
    }
    if !refused.is_empty() {
        parts.push(format!("tcp {} refused (nothing listens)", list(&refused)));
    }
    if !filtered.is_empty() {
        parts.push(format!("tcp {} timed out (filtered)", list(&filtered)));
    }
    let mut map = None;
    if let Some(m) = media {
        let reached: Vec<u16> = sampled.iter().filter(|(_, o)| *o != TcpOutcome::Filtered).map(|(p, _)| *p).collect();
        let mut part = format!("media tcp {m}: {}/{} sampled ports reached", reached.len(), sampled.len());
        if !range_filtered.is_empty() {
            part.push_str(&format!(", timed out (filtered): tcp {}", probe::ranges(&range_filtered).join(", ")));
        }
        parts.push(part);
        map = Some(RangeMap::new(m.start, m.end, &sample, &reached, &[]));
    }
    let mut hints = Vec::new();
    if !refused.is_empty() {
        hints.push("the server is not listening: see the service check");
    }
    if !filtered.is_empty() || !range_filtered.is_empty() {
        hints.push("a firewall between here and the host drops TCP to these ports (see host-firewall and cloud-firewall)");
    }
    let status = if hints.is_empty() { Status::Pass } else { Status::Fail };
    let mut c = check(id, status, parts.join("; "), (!hints.is_empty()).then(|| hints.join("; ")));
    c.range = map;
    c
}

/// The shared secret as the audit knows it: from `$SFUCTL_SECRET` (or `sfu.secret_env`), when set.
fn audit_secret(spec: &Spec) -> Option<String> {
    std::env::var(spec.sfu.secret_env()).ok().filter(|v| !v.is_empty())
}

/// Tries one abuse against the server from outside.
fn abuse_check(spec: &Spec, host: &HostTarget, abuse: AbuseCheck, run: &Invocation) -> Check {
    let id = abuse.id();
    let (Ok(address), Some(port)) = (host.address.parse::<IpAddr>(), spec.sfu.listen_port()) else {
        return check(id, Status::Fail, format!("`{}` is not an IP address", host.address), None);
    };
    let target = SocketAddr::new(address, port);
    let result = match abuse {
        AbuseCheck::TurnAuth => turn_auth(spec, target, run),
        AbuseCheck::TurnPeers => turn_peers(spec, target, host.address_v6.as_deref().and_then(|a| a.parse().ok()), audit_secret(spec).as_deref(), run),
        AbuseCheck::JanusApi => janus_api(spec, target, run),
        AbuseCheck::JanusIce => janus_ice(spec, target, run),
    };
    result.unwrap_or_else(|e| check(id, Status::Fail, format!("the probe could not run: {e:#}"), Some("see tcp-reachability and service: the server must answer on its port".into())))
}

const ABUSE_TIMEOUT: Duration = Duration::from_secs(3);

fn turn_auth(spec: &Spec, target: SocketAddr, run: &Invocation) -> Result<Check> {
    let id = "turn-auth";
    let mut anonymous = probe::TurnClient::new(target, None, ABUSE_TIMEOUT)?;
    match anonymous.allocate()? {
        probe::Allocation::Refused(401) => {}
        probe::Allocation::Refused(code) => {
            return Ok(check(id, Status::Fail, format!("an Allocate without a credential on udp {target} got {code}, not 401"), Some(format!("coturn must run with use-auth-secret: `{}` renders it again", run.command("up", "")))));
        }
        probe::Allocation::Relayed(relay) => {
            anonymous.release();
            return Ok(check(id, Status::Fail, format!("an Allocate without a credential on udp {target} got a relay ({relay}): an open relay"), Some(format!("coturn must run with use-auth-secret: `{}` renders it again", run.command("up", "")))));
        }
    }
    let Some(secret) = audit_secret(spec) else {
        return Ok(check(id, Status::Warn, format!("an Allocate without a credential is refused (401); ${} is unset, so the credential was not tried", spec.sfu.secret_env()), Some(format!("export {} to check that clients' credentials work", spec.sfu.secret_env()))));
    };
    let (user, password) = probe::turn_rest_credential(&secret, "sfuctl-audit");
    let mut client = probe::TurnClient::new(target, Some((&user, &password)), ABUSE_TIMEOUT)?;
    let media = spec.manifest().media();
    Ok(match client.allocate()? {
        probe::Allocation::Relayed(relay) => {
            client.release();
            if relay.ip() != target.ip() || !media.contains(relay.port()) {
                check(id, Status::Fail, format!("the relay is {relay}, not the host's public address with a port in {media}"), Some("the relay announces another address or range than the firewalls open: see config-consistency".into()))
            } else {
                check(id, Status::Pass, format!("an Allocate without a credential is refused (401); with the shared secret's credential it relays from {relay}"), None)
            }
        }
        probe::Allocation::Refused(code) => check(
            id,
            Status::Fail,
            format!("an Allocate with the credential derived from ${} was refused ({code})", spec.sfu.secret_env()),
            Some(if code == 486 { "the relay's quota is used up (user-quota/total-quota)".into() } else { format!("the server has another secret than the one exported here: clients will fail too; run `{}`", run.command("up", "")) }),
        ),
    })
}

/// Tries CreatePermission towards each of `peers` on `client`'s allocation: (granted, refused other than with 403).
fn try_peers(client: &mut probe::TurnClient, peers: &[(String, SocketAddr)]) -> Result<(Vec<String>, Vec<String>)> {
    let mut allowed = Vec::new();
    let mut odd = Vec::new();
    for (what, peer) in peers {
        match client.create_permission(*peer)? {
            None => allowed.push(what.clone()),
            Some(403) => {}
            Some(code) => odd.push(format!("{what}: {code}")),
        }
    }
    Ok((allowed, odd))
}

/// With the shared secret's credential: CreatePermission towards the host itself, private, loopback and metadata
/// addresses must be refused; where the host has an IPv6 address, the same from an IPv6 relay towards its IPv6
/// counterparts.
fn turn_peers(spec: &Spec, target: SocketAddr, own_v6: Option<IpAddr>, secret: Option<&str>, run: &Invocation) -> Result<Check> {
    let id = "turn-peers";
    let Some(secret) = secret else {
        return Ok(check(id, Status::Skip, format!("${} is unset: no credential to allocate a relay with", spec.sfu.secret_env()), None));
    };
    let (user, password) = probe::turn_rest_credential(secret, "sfuctl-audit");
    let mut client = probe::TurnClient::new(target, Some((&user, &password)), ABUSE_TIMEOUT)?;
    match client.allocate()? {
        probe::Allocation::Relayed(_) => {}
        probe::Allocation::Refused(code) => return Ok(check(id, Status::Skip, format!("no relay to try from (Allocate refused with {code}: see turn-auth)"), None)),
    }
    let own: IpAddr = target.ip();
    let ssh = spec.ssh.port();
    let mut peers: Vec<(String, SocketAddr)> = vec![
        (format!("the host itself ({own}, sshd)"), SocketAddr::new(own, ssh)),
        ("a private address (10.0.0.1)".to_string(), "10.0.0.1:80".parse()?),
        ("loopback (127.0.0.1)".to_string(), "127.0.0.1:22".parse()?),
        ("cloud metadata (169.254.169.254)".to_string(), "169.254.169.254:80".parse()?),
    ];
    let (mut allowed, mut odd) = try_peers(&mut client, &peers)?;
    client.release();
    let mut notes = Vec::new();
    if let Some(v6) = own_v6 {
        // An IPv4 allocation cannot reach IPv6 peers: ask for an IPv6 relay (RFC 6156) on a client of its own.
        let mut client6 = probe::TurnClient::new(target, Some((&user, &password)), ABUSE_TIMEOUT)?;
        match client6.allocate_ipv6()? {
            probe::Allocation::Relayed(_) => {
                let peers6: Vec<(String, SocketAddr)> = vec![
                    (format!("the host itself over IPv6 ({v6}, sshd)"), SocketAddr::new(v6, ssh)),
                    ("a unique-local address (fd00::1)".to_string(), "[fd00::1]:80".parse()?),
                    ("IPv6 loopback (::1)".to_string(), "[::1]:22".parse()?),
                    ("IPv4-mapped loopback (::ffff:127.0.0.1)".to_string(), "[::ffff:127.0.0.1]:22".parse()?),
                    ("the unspecified address (::)".to_string(), "[::]:22".parse()?),
                    ("a link-local address (fe80::1)".to_string(), "[fe80::1]:80".parse()?),
                ];
                let (a, o) = try_peers(&mut client6, &peers6)?;
                client6.release();
                allowed.extend(a);
                odd.extend(o);
                peers.extend(peers6);
            }
            probe::Allocation::Refused(code) => notes.push(format!("no IPv6 relay is given (Allocate for IPv6 refused with {code}), so no IPv6 peer is reachable")),
        }
    }
    let notes = if notes.is_empty() { String::new() } else { format!("; {}", notes.join("; ")) };
    Ok(if !allowed.is_empty() {
        check(id, Status::Fail, format!("the relay grants a permission towards {}", allowed.join(", ")), Some(format!("anyone with a credential can reach those through the relay: `{}` renders coturn's denied-peer-ip again", run.command("up", ""))))
    } else if !odd.is_empty() {
        check(id, Status::Warn, format!("CreatePermission was refused, but not with 403: {}", odd.join("; ")), None)
    } else {
        check(id, Status::Pass, format!("CreatePermission is refused (403) towards {}{notes}", peers.iter().map(|(w, _)| w.as_str()).collect::<Vec<_>>().join(", ")), None)
    })
}

fn janus_api(spec: &Spec, target: SocketAddr, run: &Invocation) -> Result<Check> {
    let id = "janus-api";
    let (status, body) = probe::http_post_json(target, "/janus", r#"{"janus":"create","transaction":"sfuctl-audit"}"#, ABUSE_TIMEOUT)?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    if v["janus"] == "success" {
        if let Some(session) = v["data"]["id"].as_u64() {
            let _ = probe::http_post_json(target, &format!("/janus/{session}"), r#"{"janus":"destroy","transaction":"sfuctl-audit"}"#, ABUSE_TIMEOUT);
        }
        return Ok(check(id, Status::Fail, format!("POST /janus on tcp {target} without an apisecret created a session: anyone can drive this Janus"), Some(format!("Janus must run with api_secret: `{}` renders it again", run.command("up", "")))));
    }
    let code = v["error"]["code"].as_u64();
    if status != 200 || code != Some(403) {
        return Ok(check(id, Status::Fail, format!("POST /janus on tcp {target} answered {status} {}, not Janus's 403 unauthorized", body.chars().take(80).collect::<String>()), None));
    }
    let Some(secret) = audit_secret(spec) else {
        return Ok(check(id, Status::Pass, format!("a call without the apisecret is refused (403); ${} is unset, so the secret was not tried", spec.sfu.secret_env()), None));
    };
    let with = serde_json::json!({ "janus": "create", "transaction": "sfuctl-audit", "apisecret": secret }).to_string();
    let (_, body) = probe::http_post_json(target, "/janus", &with, ABUSE_TIMEOUT)?;
    let v: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    match v["data"]["id"].as_u64() {
        Some(session) => {
            let destroy = serde_json::json!({ "janus": "destroy", "transaction": "sfuctl-audit", "apisecret": secret }).to_string();
            let _ = probe::http_post_json(target, &format!("/janus/{session}"), &destroy, ABUSE_TIMEOUT);
            Ok(check(id, Status::Pass, format!("a call without the apisecret is refused (403); with the shared secret it is answered (tcp {target})"), None))
        }
        None => Ok(check(id, Status::Fail, format!("a call with the apisecret from ${} is refused too", spec.sfu.secret_env()), Some(format!("the server has another secret than the one exported here: apps will fail too; run `{}`", run.command("up", ""))))),
    }
}

/// How long Janus may take to gather candidates and answer an echotest offer.
const JANUS_ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Through the API with the shared secret: an echotest session, our SDP offer, Janus's answer, then an ICE
/// connectivity check from here to each UDP candidate Janus announces on the host's public address. Proof that
/// the server's own media socket answers on the announced address, not only that some port is open.
fn janus_ice(spec: &Spec, target: SocketAddr, run: &Invocation) -> Result<Check> {
    let id = "janus-ice";
    let Some(secret) = audit_secret(spec) else {
        return Ok(check(id, Status::Skip, format!("${} is unset: no apisecret to open a session with", spec.sfu.secret_env()), None));
    };
    let fail = |layer: &str, detail: String, hint: &str| check(id, Status::Fail, format!("{layer}: {detail}"), Some(hint.to_string()));
    let session = match crate::janus_session::JanusSession::create(target, &secret, ABUSE_TIMEOUT) {
        Ok(s) => s,
        Err(e) => return Ok(fail("Janus API", format!("{e:#}"), "see janus-api: the server must accept the shared secret as apisecret")),
    };
    let local = crate::ice::IceCredentials::random()?;
    let answer = session
        .attach("janus.plugin.echotest")
        .and_then(|handle| session.offer(handle, serde_json::json!({ "audio": true, "video": false }), &crate::ice::audio_offer(&local)?, JANUS_ANSWER_WAIT))
        .and_then(|sdp| crate::ice::parse_answer(&sdp));
    let answer = match answer {
        Ok(a) => a,
        Err(e) => return Ok(fail("signaling", format!("an echotest session on tcp {target}: {e:#}"), "the echotest plugin must be loaded (janus.jcfg's plugins.disable must not name it); see the service log")),
    };
    let public = target.ip();
    let udp: Vec<&crate::ice::Candidate> = answer.candidates.iter().filter(|c| c.transport == "udp" && c.component == 1).collect();
    let announced: Vec<&crate::ice::Candidate> = udp.iter().copied().filter(|c| c.address.ip() == public).collect();
    if announced.is_empty() {
        let seen: Vec<String> = answer.candidates.iter().map(ToString::to_string).collect();
        return Ok(fail(
            "candidates",
            format!("Janus announces no UDP candidate on the host's public address {public} (it announces: {})", if seen.is_empty() { "none".to_string() } else { seen.join(", ") }),
            &format!("nat.nat_1_1_mapping must be the public address: see config-consistency, or run `{}`", run.command("up", "")),
        ));
    }
    let mut dead = Vec::new();
    for candidate in &announced {
        match crate::ice::connectivity_check(candidate.address, &local, &answer.credentials, ABUSE_TIMEOUT)? {
            crate::ice::CheckOutcome::Answered { mapped } => {
                let media = spec.manifest().media();
                if !media.contains(candidate.address.port()) {
                    return Ok(fail("candidates", format!("the candidate {candidate} answers, but its port is outside the media range {media}"), "Janus's media.rtp_port_range differs from the manifest: see config-consistency"));
                }
                let others = if dead.is_empty() { String::new() } else { format!("; silent: {}", dead.join(", ")) };
                return Ok(check(
                    id,
                    Status::Pass,
                    format!("an echotest session's candidate {candidate} answered an ICE connectivity check signed with Janus's ice-pwd (it saw us at {mapped}){others}"),
                    None,
                ));
            }
            crate::ice::CheckOutcome::BadIntegrity => dead.push(format!("{candidate}: answered without Janus's MESSAGE-INTEGRITY (not Janus's socket)")),
            crate::ice::CheckOutcome::Error(code) => dead.push(format!("{candidate}: Binding error {code}")),
            crate::ice::CheckOutcome::Refused => dead.push(format!("{candidate}: nothing listens (ICMP port unreachable)")),
            crate::ice::CheckOutcome::Silent => dead.push(format!("{candidate}: no answer")),
        }
    }
    drop(session);
    Ok(fail(
        "ICE",
        format!("no candidate Janus announces answered a connectivity check: {}", dead.join("; ")),
        "UDP to the media range does not reach Janus's socket: see udp-reachability and host-firewall",
    ))
}

/// The audit as a table, one block per host.
pub fn to_text(audits: &[HostAudit]) -> String {
    let mut out = String::new();
    for a in audits {
        out.push_str(&format!("{} ({})\n", a.name, a.address));
        for c in &a.checks {
            out.push_str(&format!("  {:<19} {:<5} {}\n", c.id, c.status.as_str(), c.detail));
            if let Some(map) = &c.range {
                out.push_str(&format!("  {:<19} {:<5} {}\n", "", "", map.line()));
            }
            if c.status != Status::Pass
                && let Some(h) = &c.hint
            {
                out.push_str(&format!("  {:<19} {:<5} hint: {h}\n", "", ""));
            }
        }
        if let Some(cause) = a.cause {
            out.push_str(&format!("  => media will not flow: fix `{cause}` first\n"));
        }
    }
    let failed = audits.iter().filter(|a| a.failed()).count();
    let warnings: usize = audits.iter().map(|a| a.checks.iter().filter(|c| c.status == Status::Warn).count()).sum();
    out.push_str(&format!("Audit: {} host(s), {failed} failing, {warnings} warning(s).\n", audits.len()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::spec::SfuKind;

    fn read_config(kind: SfuKind, text: &str) -> ConfigValues {
        super::read_config(&kind.descriptor().read_back, text)
    }

    #[test]
    fn reads_every_kind_of_config() {
        let coturn = read_config(SfuKind::Coturn, "listening-ip=0.0.0.0\nexternal-ip=203.0.113.5\nmin-port=40000\nmax-port=40999\n");
        assert_eq!(coturn, ConfigValues { announced: Some("203.0.113.5".into()), listen: Some("0.0.0.0".into()), min: Some(40000), max: Some(40999) });
        let janus = read_config(SfuKind::Janus, "media: {\n\trtp_port_range = \"20000-20999\"\n}\nnat: {\n\tnat_1_1_mapping = \"203.0.113.5\"\n}\n");
        assert_eq!((janus.announced.as_deref(), janus.min, janus.max), (Some("203.0.113.5"), Some(20000), Some(20999)));
        let lk = read_config(SfuKind::Livekit, "bind_addresses:\n  - \"0.0.0.0\"\nrtc:\n  port_range_start: 50000\n  port_range_end: 51000\n  node_ip: \"203.0.113.5\"\n");
        assert_eq!((lk.announced.as_deref(), lk.listen.as_deref(), lk.min, lk.max), (Some("203.0.113.5"), Some("0.0.0.0"), Some(50000), Some(51000)));
        let ms = read_config(SfuKind::Mediasoup, "const listenIp = \"0.0.0.0\";\nconst announcedAddress = \"203.0.113.5\";\nconst rtcMinPort = 40000;\nconst rtcMaxPort = 41000;\n");
        assert_eq!((ms.announced.as_deref(), ms.min, ms.max), (Some("203.0.113.5"), Some(40000), Some(41000)));
        let custom = read_config(SfuKind::Custom, "SFU_ANNOUNCED_IP=203.0.113.5\nSFU_LISTEN_IP=0.0.0.0\nSFU_RTC_MIN_PORT=40000\nSFU_RTC_MAX_PORT=40099\n");
        assert_eq!((custom.announced.as_deref(), custom.max), (Some("203.0.113.5"), Some(40099)));
    }

    #[tokio::test]
    async fn tcp_reachability_counts_a_refused_media_port_as_reached() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let media = crate::ports::PortRange { start: 45000, end: 45999 };
        let c = tcp_reachability(&HostTarget::new("a", "127.0.0.1"), vec![port], Some(media)).await;
        assert_eq!(c.status, Status::Pass, "{c:?}");
        assert_eq!(c.detail, format!("tcp {port} connected; media tcp 45000-45999: 16/16 sampled ports reached"));
        let map = c.range.expect("the range has a map");
        assert_eq!((map.start, map.end, map.probed, map.answered), (45000, 45999, 16, 16));
        // A port bound but not listening refuses connections, and no other test can take it meanwhile (a port
        // freed by dropping the listener could be bound again by a test running alongside).
        let closed = tokio::net::TcpSocket::new_v4().unwrap();
        closed.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let port = closed.local_addr().unwrap().port();
        let c = tcp_reachability(&HostTarget::new("a", "127.0.0.1"), vec![port], None).await;
        assert_eq!((c.status, c.detail.as_str()), (Status::Fail, format!("tcp {port} refused (nothing listens)").as_str()), "a single port must accept");
        assert!(c.range.is_none());
    }

    #[test]
    fn hints_name_the_spec_as_the_user_typed_it() {
        let spec = crate::spec::Spec::parse("name: t\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.5 }] }\nsfu: { kind: coturn, rtc_ports: 40000-40999 }\n").unwrap();
        let run = Invocation::new(std::path::Path::new("deploy/turn.yaml"));
        let cloud = CloudView { provider: "DigitalOcean", firewall: None, servers: Vec::new(), needs_outbound_rules: false };
        let c = cloud_firewall(&spec, &HostTarget::new("a", "203.0.113.5"), Some(&cloud), &run);
        assert_eq!(c.hint.as_deref(), Some("run `sfuctl up deploy/turn.yaml` to create it"), "{c:?}");
        let c = ssh_exposure(&spec, None, true, &run);
        assert_eq!(c.hint.as_deref(), Some("run `sfuctl up deploy/turn.yaml` to load it again (see host-firewall)"), "{c:?}");
    }

    #[test]
    fn each_format_finds_its_fields() {
        let t = "a=1\nb = \"x y\";\n";
        assert_eq!(lookup(ConfigFormat::KeyValue, t, "a"), Some("1"));
        assert_eq!(lookup(ConfigFormat::Jcfg, t, "b"), Some("x y"));
        assert_eq!(lookup(ConfigFormat::Env, t, "c"), None);
        assert_eq!(lookup(ConfigFormat::JsConst, "const port = 5;\nconst portRange = 1;\n", "port"), Some("5"));
        let y = "other:\n  - \"10.0.0.1\"\nbind_addresses:\n  - \"0.0.0.0\"\nrtc:\n  node_ip: '203.0.113.5'\n";
        assert_eq!(lookup(ConfigFormat::Yaml, y, "bind_addresses[0]"), Some("0.0.0.0"));
        assert_eq!(lookup(ConfigFormat::Yaml, y, "node_ip"), Some("203.0.113.5"));
        assert_eq!(lookup(ConfigFormat::Yaml, y, "missing[0]"), None);
    }

    #[test]
    fn every_shipped_config_is_read_back() {
        // What sfuctl renders, the audit reads back: each kind's rendered config against its descriptor.
        for kind in SfuKind::ALL {
            let spec = crate::spec::Spec::parse(&format!(
                "name: t\nprovider: {{ kind: ssh, hosts: [{{ name: a, address: 203.0.113.9 }}] }}\nsfu: {{ kind: {}, command: x, rtc_ports: 40000-40999 }}\n",
                kind.as_str()
            ))
            .unwrap();
            let host = &crate::render::host_targets(&spec, crate::render::PLACEHOLDER_ADDRESS)[0];
            let files = crate::render::Renderer::new(None).unwrap().render_host(&spec, std::path::Path::new("."), host, &crate::secret::Secret::new("s")).unwrap();
            let wanted = &config_files(&Layout::of(&spec), &spec)[0];
            let file = files.files.iter().find(|f| &f.path == wanted).unwrap_or_else(|| panic!("{}: {wanted} is not rendered", kind.as_str()));
            let v = read_config(kind, &file.contents);
            assert_eq!((v.announced.as_deref(), v.min, v.max), (Some("203.0.113.9"), Some(40000), Some(40999)), "{}", kind.as_str());
            assert_eq!(v.listen.as_deref(), Some("0.0.0.0"), "{}", kind.as_str());
        }
    }

    /// The coturn sfuctl renders, run on loopback: listening on 127.0.0.1, relaying from 127.0.0.1 and ::1 (so an
    /// IPv6 relay exists). Killed on drop.
    struct LoopbackCoturn {
        child: std::process::Child,
        _dir: tempfile::TempDir,
        port: u16,
    }

    impl Drop for LoopbackCoturn {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    fn free_udp_port() -> u16 {
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
    }

    fn loopback_coturn(spec: &Spec, secret: &str) -> LoopbackCoturn {
        let which = std::process::Command::new("sh").args(["-c", "command -v turnserver"]).output().unwrap();
        assert!(which.status.success(), "turnserver is missing: install coturn (scripts/testbed/install does)");
        let mut host = crate::render::HostTarget::new("a", "127.0.0.1");
        host.address_v6 = Some("::1".into());
        let files = crate::render::Renderer::new(None).unwrap().render_host(spec, std::path::Path::new("."), &host, &crate::secret::Secret::new(secret)).unwrap();
        let conf = files.files.into_iter().find(|f| f.path.ends_with("turnserver.conf")).unwrap().contents;
        let dir = tempfile::tempdir().unwrap();
        let (port, relay) = (free_udp_port(), free_udp_port());
        let mut lines: Vec<String> = conf
            .lines()
            // No external-ip: with one (IPv4) external address coturn reports every relay, IPv6 ones too, as that.
            .filter(|l| !["listening-ip=", "listening-port=", "external-ip=", "min-port=", "max-port=", "pidfile=", "userdb="].iter().any(|k| l.starts_with(k)))
            .map(str::to_string)
            .collect();
        lines.extend([
            "listening-ip=127.0.0.1".to_string(),
            format!("listening-port={port}"),
            "relay-ip=127.0.0.1".into(),
            "relay-ip=::1".into(),
            format!("min-port={relay}"),
            format!("max-port={}", relay.saturating_add(4)),
            format!("pidfile={}/t.pid", dir.path().display()),
            format!("userdb={}/t.db", dir.path().display()),
        ]);
        let path = dir.path().join("turnserver.conf");
        std::fs::write(&path, lines.join("\n") + "\n").unwrap();
        let child = std::process::Command::new("turnserver").arg("-c").arg(&path).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).spawn().unwrap();
        // Ready once it answers a STUN Binding request.
        let target: SocketAddr = SocketAddr::new("127.0.0.1".parse().unwrap(), port);
        let started = std::time::Instant::now();
        while probe::stun_binding(target, Duration::from_millis(200)).is_err() {
            assert!(started.elapsed() < Duration::from_secs(10), "coturn did not start on udp {target}");
        }
        LoopbackCoturn { child, _dir: dir, port }
    }

    #[test]
    fn turn_peers_refuses_ipv6_peers_from_an_ipv6_relay_of_the_rendered_coturn() {
        let spec = crate::spec::Spec::parse("name: t\nprovider: { kind: ssh, hosts: [{ name: a, address: 127.0.0.1 }] }\nsfu: { kind: coturn, rtc_ports: 40000-40999 }\n").unwrap();
        let secret = "loopback-secret-0123456789abcdef0123456789abcdef";
        let coturn = loopback_coturn(&spec, secret);
        let target = SocketAddr::new("127.0.0.1".parse().unwrap(), coturn.port);
        let c = turn_peers(&spec, target, Some("::1".parse().unwrap()), Some(secret), &Invocation::new(std::path::Path::new("spec.yaml"))).unwrap();
        assert_eq!(c.status, Status::Pass, "{c:?}");
        for peer in ["the host itself over IPv6 (::1, sshd)", "fd00::1", "::ffff:127.0.0.1", "(::)", "fe80::1", "cloud metadata (169.254.169.254)"] {
            assert!(c.detail.contains(peer), "{peer} in {}", c.detail);
        }
        // What the denied ranges leave open is open: a public IPv6 peer gets a permission (none sends anything).
        let (user, password) = probe::turn_rest_credential(secret, "test");
        let mut client = probe::TurnClient::new(target, Some((&user, &password)), ABUSE_TIMEOUT).unwrap();
        let relayed = client.allocate_ipv6().unwrap();
        assert!(matches!(relayed, probe::Allocation::Relayed(a) if a.is_ipv6()), "{relayed:?}");
        assert_eq!(client.create_permission("[2606:4700::1111]:3478".parse().unwrap()).unwrap(), None, "a public IPv6 peer");
        assert_eq!(client.create_permission("[64:ff9b::a00:1]:80".parse().unwrap()).unwrap(), Some(403), "NAT64 into 10.0.0.1");
        client.release();
        let mut client = probe::TurnClient::new(target, Some((&user, &password)), ABUSE_TIMEOUT).unwrap();
        assert!(matches!(client.allocate().unwrap(), probe::Allocation::Relayed(a) if a.is_ipv4()));
        assert_eq!(client.create_permission("1.1.1.1:3478".parse().unwrap()).unwrap(), None, "a public IPv4 peer");
        client.release();
        // Without the secret there is nothing to allocate with.
        assert_eq!(turn_peers(&spec, target, None, None, &Invocation::new(std::path::Path::new("spec.yaml"))).unwrap().status, Status::Skip);
    }

    #[test]
    fn gathered_output_is_split_into_files() {
        let g = Gathered::parse("client=10.200.1.1\ndev=eth0\naddrs=127.0.0.1 10.200.1.2 \nnft={\"nftables\": []}\n== /opt/a\nx=1\n== /opt/b\n!! missing\n");
        assert_eq!(g.client, Some("10.200.1.1".parse().unwrap()));
        assert_eq!(g.addrs, ["127.0.0.1", "10.200.1.2"]);
        assert_eq!(g.files, vec![("/opt/a".to_string(), Some("x=1\n".to_string())), ("/opt/b".to_string(), None)]);
    }
}
