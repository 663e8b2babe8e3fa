//! Validation of a parsed spec: everything types cannot check (names, ranges, overlaps, CIDRs, files, the
//! provider's rules and limits, the server kind's ports), every problem at once, each naming its field, line and
//! fix. It sits above the spec, the server kinds, the manifest and the provider catalog, and reads all of them.

use std::net::IpAddr;
use std::path::Path;

use crate::kind::PortField;
use crate::ports::{PortRange, PortRole, Protocol};
use crate::locate;
use crate::provider::catalog::ProviderData;
use crate::spec::{Diagnostic, FileCheck, Findings, Spec, closest, name_problem, parse_cidr, resolve_path};
use crate::spec_parse::parse_all;

/// A spec's text, read and checked: the spec when it could be read, and every problem found.
#[derive(Debug)]
pub struct Checked {
    /// The spec; `None` when a required part is missing or unusable (then `findings.errors` says why).
    pub spec: Option<Spec>,
    /// Every structural and semantic problem, errors in the order of their place in the file.
    pub findings: Findings,
}

/// Reads a spec's text and checks it: every structural problem (syntax, unknown fields, types, missing fields) and,
/// when the rest could be read, every semantic one. Findings about a field whose value was unusable are left out:
/// they would only repeat the type error or judge a default the user did not choose.
pub fn check_source(source: &str, base_dir: &Path, files: FileCheck) -> Checked {
    let parsed = parse_all(source);
    let mut findings = Findings { errors: parsed.errors, ..Findings::default() };
    if let Some(spec) = &parsed.spec {
        let semantic = spec.validate_beside(source, base_dir, files, &parsed.dropped);
        let fresh = |d: &Diagnostic| !parsed.dropped.iter().any(|dropped| related(dropped, &d.field));
        findings.errors.extend(semantic.errors.into_iter().filter(fresh));
        findings.warnings.extend(semantic.warnings.into_iter().filter(fresh));
        findings.notes.extend(semantic.notes.into_iter().filter(fresh));
    }
    findings.errors.sort_by_key(|d| d.location.map_or((usize::MAX, usize::MAX), |l| (l.line, l.column)));
    let spec = if findings.errors.is_empty() { parsed.spec } else { None };
    Checked { spec, findings }
}

/// `1 port`, `2 ports`.
fn plural(n: u32, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Whether one dotted field path lies within the other (`sfu` and `sfu.tcp_ports[0]`, or the same path).
fn related(a: &str, b: &str) -> bool {
    let within = |inner: &str, outer: &str| {
        inner.strip_prefix(outer).is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
    };
    within(a, b) || within(b, a)
}

/// How `sfuctl init` marks a value it could not know (`<REPLACE-ME: what to put here>`): a spec still holding one
/// is refused, naming the line.
pub const PLACEHOLDER: &str = "<REPLACE-ME";

impl Spec {
    /// Checks everything types cannot. Returns every error and warning, each naming its field and line.
    pub fn validate(&self, source: &str, base_dir: &Path, files: FileCheck) -> Findings {
        self.validate_beside(source, base_dir, files, &[])
    }

    /// [`Spec::validate`] for a spec read past structural problems: `mended` are the fields that hold a default or
    /// a placeholder instead of what the user wrote. When one of them feeds the port manifest, overlaps and rule
    /// counts are not judged (they would be judged on a port the user did not choose).
    pub fn validate_beside(&self, source: &str, base_dir: &Path, files: FileCheck, mended: &[String]) -> Findings {
        let mended_ports = mended.iter().any(|m| PORT_FIELDS.iter().any(|f| related(m, f)));
        let mut v = Validator { source, findings: Findings::default(), mended_ports };
        v.check(self, base_dir, files);
        v.findings
    }
}

/// The fields the port manifest is derived from (with the kind, which decides the server's own ports).
const PORT_FIELDS: [&str; 7] = ["sfu.kind", "sfu.rtc_ports", "sfu.tcp_ports", "sfu.udp_ports", "sfu.listen_port", "sfu.ice_tcp_port", "ssh.port"];

/// The most hosts one deployment may ask a cloud for: every one is planned, created and audited in one run.
const MAX_COUNT: u32 = 100;

struct Validator<'a> {
    source: &'a str,
    findings: Findings,
    /// Whether a field the port manifest comes from holds a value the user did not write.
    mended_ports: bool,
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

    fn note(&mut self, field: &str, message: impl Into<String>, hint: impl Into<Option<String>>) {
        let d = self.diag(field, message.into(), hint.into());
        self.findings.notes.push(d);
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
        self.check_provider(spec, data);
        self.check_ssh(spec, base_dir, files);
        self.check_sfu(spec, base_dir, files);
        // Overlaps and rule counts are judged on sound ports only: an inverted range or a port 0 would only add noise.
        let port_problem = self.findings.errors.iter().any(|d| PORT_FIELDS.iter().any(|f| d.field.starts_with(f)));
        if !port_problem && !self.mended_ports {
            self.check_manifest(spec, data);
        }
        self.check_placeholders();
    }

    /// A placeholder `sfuctl init` left is the one problem of its line: what else was said about that line (not
    /// an IP address, a missing file) is dropped in favour of saying what to put there.
    fn check_placeholders(&mut self) {
        let found: Vec<(usize, usize, String)> = self
            .source
            .lines()
            .enumerate()
            .filter_map(|(i, line)| {
                let code = line.split('#').next()?;
                let start = code.find(PLACEHOLDER)?;
                let end = code[start..].find('>').map_or(code.len(), |e| start + e + 1);
                Some((i + 1, start + 1, code[start..end].to_string()))
            })
            .collect();
        if found.is_empty() {
            return;
        }
        let on_line = |d: &Diagnostic, line: usize| d.location.is_some_and(|l| l.line == line);
        for (line, column, text) in found {
            // The field as another check named it (`provider.hosts[0].address`), else `<section>.<key>`.
            let named = self.findings.errors.iter().chain(&self.findings.warnings).find(|d| on_line(d, line) && !d.field.is_empty()).map(|d| d.field.clone());
            let field = named.unwrap_or_else(|| self.section_key(line));
            self.findings.errors.retain(|d| !on_line(d, line));
            self.findings.warnings.retain(|d| !on_line(d, line));
            self.findings.errors.push(Diagnostic {
                field,
                location: Some(locate::Location { line, column }),
                message: format!("still holds the placeholder `{text}` that `sfuctl init` wrote"),
                hint: Some("replace it, quotes included, with the real value it describes".to_string()),
            });
        }
    }

    /// `<section>.<key>` for a `key: value` line under a top-level section (`sfu.command`); just `key` elsewhere.
    fn section_key(&self, line: usize) -> String {
        let lines: Vec<&str> = self.source.lines().collect();
        let key = lines.get(line - 1).and_then(|l| l.split_once(':')).map(|(k, _)| k.trim().trim_start_matches("- ").to_string()).unwrap_or_default();
        let section = lines[..line - 1].iter().rev().find(|l| !l.starts_with([' ', '#']) && l.trim_end().ends_with(':')).map(|l| l.trim_end().trim_end_matches(':'));
        match section {
            Some(section) if !key.is_empty() => format!("{section}.{key}"),
            _ => key,
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
            if let Some(region) = &p.region
                && !data.regions.is_empty() && !data.regions.iter().any(|r| r == region) {
                    let hint = closest(region, &data.regions).map_or_else(
                        || format!("known regions: {}", data.regions.join(", ")),
                        |best| format!("did you mean `{best}`?"),
                    );
                    self.warning("provider.region", format!("`{region}` is not a {} region sfuctl knows", data.title), Some(hint));
                }
            match p.count {
                Some(0) => self.error("provider.count", "must be at least 1", Some("remove `count` for one host".to_string())),
                Some(n) if n > MAX_COUNT => self.error(
                    "provider.count",
                    format!("{n} hosts are more than one deployment holds (at most {MAX_COUNT})"),
                    Some("split the hosts over several specs, each with its own `name`".to_string()),
                ),
                _ => {}
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
        if let Some(user) = &ssh.user
            && (user.is_empty() || !user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')) {
                self.error("ssh.user", format!("`{user}` is not a valid user name"), None);
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
        if sfu.rtc_tcp && !descriptor.media_over_tcp {
            let kinds: Vec<String> = crate::spec::SfuKind::ALL.iter().filter(|k| k.descriptor().media_over_tcp).map(|k| format!("`{}`", k.as_str())).collect();
            self.error("sfu.rtc_tcp", format!("only applies to kind {}: kind `{kind}` takes no media over TCP on the media range", kinds.join(" or ")), Some("remove it".to_string()));
        }
        if descriptor.needs_artifact && sfu.artifact.is_none() {
            self.error(
                "sfu",
                format!("kind `{kind}` needs an `artifact`: {} is a library, and your app is what runs on the host", descriptor.title),
                Some("add `artifact: ./my-app` (a directory with package.json, or a .tar.gz of it); examples/mediasoup-app is a minimal one that follows README's mediasoup app contract".to_string()),
            );
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
        if let Some(user) = &sfu.run_as
            && (user.is_empty() || !user.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')) {
                self.error("sfu.run_as", format!("`{user}` is not a valid user name"), None);
            }
        if r.start <= r.end
            && let Some(per) = descriptor.ports_per_participant {
                let capacity = r.len() / per;
                let wanted = sfu.participants.unwrap_or(10);
                if capacity < wanted {
                    let need = wanted.saturating_mul(per);
                    let ports = plural(r.len(), "port", "ports");
                    let carry = if r.len() == 1 { "carries" } else { "carry" };
                    let each = plural(per, "port", "ports");
                    let message = match capacity {
                        0 => format!("{ports} {carry} not even one participant on {kind}, which needs about {each} per participant; {wanted} wanted"),
                        n => format!("{ports} {carry} about {} on {kind} (about {each} each), fewer than {wanted}", plural(n, "participant", "participants")),
                    };
                    let last = u32::from(r.start).saturating_add(need - 1).min(65535);
                    self.warning(
                        "sfu.rtc_ports",
                        message,
                        Some(format!("widen the range to at least {need} ports, e.g. `{}-{last}`", r.start)),
                    );
                }
            }
        for (i, name) in sfu.packages.iter().enumerate() {
            let ok = name.len() >= 2 && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b)) && name.as_bytes()[0].is_ascii_alphanumeric();
            if !ok {
                self.error(&format!("sfu.packages[{i}]"), format!("`{name}` is not a Debian/Ubuntu package name"), Some("package names are lowercase letters, digits and `+-.`, e.g. `ffmpeg`".to_string()));
            }
        }
        if let Some(v) = sfu.node_version {
            if sfu.kind.descriptor().install.node.is_none() {
                self.error("sfu.node_version", format!("`{kind}` does not run on Node.js"), Some("remove `node_version`".to_string()));
            } else if !(18..=99).contains(&v) {
                self.error("sfu.node_version", format!("{v} is not a Node.js major version sfuctl installs"), Some("use a current major, e.g. `node_version: 22`".to_string()));
            }
        }
    }

    fn check_manifest(&mut self, spec: &Spec, data: &ProviderData) {
        let manifest = spec.manifest();
        // A listed port the kind opens anyway is fine (the manifest keeps one rule): say so, once.
        for (protocol, ports, field) in [(Protocol::Tcp, &spec.sfu.tcp_ports, "sfu.tcp_ports"), (Protocol::Udp, &spec.sfu.udp_ports, "sfu.udp_ports")] {
            for (i, &port) in ports.iter().enumerate() {
                let own = manifest.rules.iter().find(|r| r.role == PortRole::Service && r.protocol == protocol && r.ports == PortRange::single(port));
                if let Some(own) = own {
                    self.note(
                        &format!("{field}[{i}]"),
                        format!("{protocol} {port} is already opened by `{}` ({}); listing it again changes nothing", own.field, own.purpose),
                        Some(format!("you may remove it from `{}`", field.trim_start_matches("sfu."))),
                    );
                }
            }
        }
        // Overlaps within one protocol: two purposes claiming the same port.
        let rules = &manifest.rules;
        for (i, a) in rules.iter().enumerate() {
            for b in &rules[i + 1..] {
                if a.protocol == b.protocol && a.ports.overlaps(&b.ports) {
                    // A listed port is named by its item, so the position is the port itself.
                    let list = match b.field {
                        "sfu.tcp_ports" => Some(&spec.sfu.tcp_ports),
                        "sfu.udp_ports" => Some(&spec.sfu.udp_ports),
                        _ => None,
                    };
                    let field = match list.and_then(|l| l.iter().position(|&p| PortRange::single(p) == b.ports)) {
                        Some(index) => format!("{}[{index}]", b.field),
                        None => b.field.to_string(),
                    };
                    self.error(
                        &field,
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
            let count = data.rules_needed(&manifest);
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
