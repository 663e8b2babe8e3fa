//! Server kinds: everything sfuctl knows about one kind of media server, read from its descriptor
//! `templates/<kind>/kind.yaml` (embedded in the binary by `build.rs`, next to the kind's templates).
//!
//! A descriptor says which config files the kind gets and where, how to start it, the ports it listens on itself,
//! how many media ports a participant holds, whether it needs the shared secret, how the audit reads its config
//! back from the host, and how health probes it. Render, the port manifest, the audit, health and the commands
//! read these facts here; no other module matches on [`SfuKind`] to know them. Adding a kind is a template folder
//! with a `kind.yaml`, plus the [`SfuKind`] variant that lets a spec name it.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde::{Deserialize, Deserializer};

use crate::port_range::Protocol;
use crate::remote::shell_quote;
use crate::spec::{SfuKind, SfuSpec};

/// Every descriptor sfuctl ships: `(kind name, templates/<kind>/kind.yaml)`, sorted by name.
const EMBEDDED: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/kinds.rs"));

/// What sfuctl knows about one server kind: the parsed `templates/<kind>/kind.yaml`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindDescriptor {
    /// The kind's name as a spec writes it (`sfu.kind`): the name of its folder under `templates/`.
    #[serde(skip)]
    pub name: String,
    /// The server's name in messages, e.g. `Janus`.
    pub title: String,
    /// The kind's own config files, rendered into the deployment's config directory, in this order.
    #[serde(default)]
    pub config_files: Vec<ConfigFile>,
    /// The default start command (when the spec has no `sfu.command`), a template with placeholders (see
    /// [`expand_command`]). None: the spec must give `sfu.command`.
    #[serde(default)]
    pub command: Option<String>,
    /// The ports the server listens on itself, each from one spec field, in manifest order.
    #[serde(default)]
    pub own_ports: Vec<OwnPort>,
    /// About how many ports of the media range one participant holds, for the range-size warning; none when the
    /// kind gives no way to estimate it.
    #[serde(default)]
    pub ports_per_participant: Option<u32>,
    /// Whether the server can take ICE over TCP on the media range, so `sfu.rtc_tcp` applies (mediasoup's
    /// WebRtcTransports with a TCP listenInfo).
    #[serde(default)]
    pub media_over_tcp: bool,
    /// Whether the kind cannot run without `sfu.artifact` (mediasoup is a library: the app is the server).
    #[serde(default)]
    pub needs_artifact: bool,
    /// The media range's purpose in the manifest, firewall rules and plan.
    #[serde(default = "default_media_purpose")]
    pub media_purpose: String,
    /// Whether the server's config carries the shared secret (`sfu.secret_env`): `up` then refuses to run without
    /// it and `render` warns when it made up a random one.
    #[serde(default)]
    pub needs_secret: bool,
    /// The shortest shared secret `up` accepts (a shorter one can be guessed): exit 2 with a hint.
    #[serde(default)]
    pub min_secret_len: Option<usize>,
    /// How the audit reads the deployed config back from the host.
    pub read_back: ReadBack,
    /// How health checks, from loopback on the host, that the server answers; none: running and having bound its
    /// ports is the server's health.
    #[serde(default)]
    pub health: Option<HealthProbe>,
    /// The abuses the audit tries against this kind from outside (each a check of its own, after the network
    /// checks): `turn_auth`, `turn_peers`, `janus_api`, `janus_ice`.
    #[serde(default)]
    pub abuse_checks: Vec<AbuseCheck>,
    /// What a fresh host needs before the server can start: distribution packages (when the spec gives no
    /// artifact), the distribution units to mask, the binary to check for, a runtime and the app's dependencies.
    #[serde(default)]
    pub install: Install,
}

fn default_media_purpose() -> String {
    "media (RTP/RTCP)".into()
}

/// One config file of a kind.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    /// The template inside the kind's folder, e.g. `janus.jcfg.j2` (a `--templates DIR` override goes in
    /// `DIR/<kind>/<template>`).
    pub template: String,
    /// The file's name in the config directory (`/opt/sfuctl/<name>/config/`).
    pub file: String,
    /// Its mode, written in octal as a string: `"0644"`, or `"0600"` when it holds the secret.
    #[serde(deserialize_with = "octal_mode")]
    pub mode: u32,
    /// Whether the service also reads it as an environment file (after `sfuctl.env`).
    #[serde(default)]
    pub env_file: bool,
    /// The template's full name, `<kind>/<template>` (set on load).
    #[serde(skip)]
    pub template_name: String,
}

fn octal_mode<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let raw = String::deserialize(d)?;
    u32::from_str_radix(&raw, 8).ok().filter(|m| *m <= 0o7777).ok_or_else(|| serde::de::Error::custom(format!("mode `{raw}` is not an octal file mode like \"0644\"")))
}

/// A port the server listens on itself.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnPort {
    /// The spec field that sets it.
    pub field: PortField,
    /// The port when the spec does not set it.
    pub default: u16,
    /// The manifest entries it makes: one per protocol it listens on.
    pub rules: Vec<OwnRule>,
}

/// The spec fields a kind's own ports come from (the spec's contract: a kind picks one, it cannot add one).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum PortField {
    /// `sfu.listen_port`: the server's main port.
    ListenPort,
    /// `sfu.ice_tcp_port`: an ICE-over-TCP port.
    IceTcpPort,
}

impl PortField {
    /// The field's dotted path in the spec, for messages.
    pub fn path(self) -> &'static str {
        match self {
            Self::ListenPort => "sfu.listen_port",
            Self::IceTcpPort => "sfu.ice_tcp_port",
        }
    }

    /// The value the spec gives the field, if it gives one.
    pub fn in_spec(self, sfu: &SfuSpec) -> Option<u16> {
        match self {
            Self::ListenPort => sfu.listen_port,
            Self::IceTcpPort => sfu.ice_tcp_port,
        }
    }
}

/// One manifest entry of an own port.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OwnRule {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// What it is for, in words (manifest, firewall rules, plan).
    pub purpose: String,
}

/// Where and how the audit reads the deployed config back: the announced address, the listen address and the
/// media range, each found by a field name in one file of a known format.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReadBack {
    /// The file, relative to the deployment's directory `/opt/sfuctl/<name>/`: `config/<file>` or `sfuctl.env`.
    pub file: String,
    /// How to find a field's value in it.
    pub format: ConfigFormat,
    /// The field holding the announced (public) address.
    pub announced: String,
    /// The field holding the listen address, or `{ fixed: <address> }` when the server binds a fixed address the
    /// file does not name; absent when the config has none.
    #[serde(default)]
    pub listen: Option<ReadField>,
    /// The field holding the media range's first port (with `rtc_max`).
    #[serde(default)]
    pub rtc_min: Option<String>,
    /// The field holding the media range's last port (with `rtc_min`).
    #[serde(default)]
    pub rtc_max: Option<String>,
    /// The field holding the whole media range as `min-max` (instead of `rtc_min` and `rtc_max`).
    #[serde(default)]
    pub rtc_range: Option<String>,
}

/// A value the audit reads back: a field of the file, or a value known without reading.
#[derive(Clone, Debug, Deserialize)]
#[serde(untagged)]
pub enum ReadField {
    /// The value of this field.
    Key(String),
    /// Always this value.
    Fixed(Fixed),
}

/// A fixed value, written `{ fixed: 0.0.0.0 }`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Fixed {
    /// The value.
    pub fixed: String,
}

/// The config formats the audit can read a field from. Every parser looks at one line per field (the first one
/// whose key is the field's name, at any indentation) and strips quotes and a trailing `;` or `,`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ConfigFormat {
    /// `key=value` lines (coturn's `turnserver.conf`).
    KeyValue,
    /// `key = "value"` inside libconfig groups (Janus's `.jcfg`).
    Jcfg,
    /// `key: value` lines; `name[0]` is the first item of the list under `name:` (LiveKit's YAML).
    Yaml,
    /// `const name = value;` (a JavaScript module, mediasoup's config).
    JsConst,
    /// `NAME=value` lines (an environment file, `sfuctl.env`).
    Env,
}

/// How health checks that the server answers, on its `sfu.listen_port`: `{ probe: http_get, path: ...,
/// json_key: ..., json_value: ... }` or `{ probe: stun_binding }`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(tag = "probe", rename_all = "snake_case", deny_unknown_fields)]
pub enum HealthProbe {
    /// `GET path` over TCP answers 200 with a JSON object whose `json_key` is `json_value`.
    HttpGet {
        /// The path, e.g. `/janus/info`.
        path: String,
        /// The key of the JSON answer to look at.
        json_key: String,
        /// The value it must have.
        json_value: String,
    },
    /// A STUN Binding request over UDP gets a success answer.
    StunBinding {},
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
}

/// An abuse the audit tries from outside; the check's id is the name with `-` for `_`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum AbuseCheck {
    /// A TURN Allocate without a credential is refused (401); one with the REST credential derived from the
    /// shared secret relays from the host's public address and the media range.
    TurnAuth,
    /// CreatePermission towards the host itself, a private address, loopback and cloud metadata is refused (403).
    TurnPeers,
    /// A Janus API call without the `apisecret` is refused.
    JanusApi,
    /// An echotest session's ICE candidate (the server's own media socket) answers a connectivity check signed
    /// with the ice-pwd of Janus's answer, on the host's public address.
    JanusIce,
}

impl AbuseCheck {
    /// The check's id in the audit.
    pub fn id(self) -> &'static str {
        match self {
            Self::TurnAuth => "turn-auth",
            Self::TurnPeers => "turn-peers",
            Self::JanusApi => "janus-api",
            Self::JanusIce => "janus-ice",
        }
    }
}

/// What a fresh host needs before a kind's server can start.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Install {
    /// Distribution packages that bring the server, installed when the spec gives no artifact (`[coturn]`).
    #[serde(default)]
    pub packages: Vec<String>,
    /// Units those packages enable with a stock config on the ports sfuctl opens (`coturn.service`, an open relay
    /// on 3478): masked before the packages are installed, so only sfuctl's unit owns the ports.
    #[serde(default)]
    pub mask_units: Vec<String>,
    /// The Node.js major the app runs on (installed from the official release tarballs; `sfu.node_version`
    /// overrides it).
    #[serde(default)]
    pub node: Option<u32>,
    /// How the app's dependencies are installed on the host (never copied from where sfuctl runs).
    #[serde(default)]
    pub deps: Option<Deps>,
}

/// How an app's dependencies are installed on the host.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Deps {
    /// `npm ci --omit=dev` whenever `package-lock.json` changed.
    Npm,
}

impl KindDescriptor {
    /// Parses and checks the descriptor of kind `name` (its folder's name).
    pub fn parse(name: &str, yaml: &str) -> Result<Self, String> {
        let mut kind: Self = serde_yaml::from_str(yaml).map_err(|e| format!("templates/{name}/kind.yaml: {e}"))?;
        kind.name = name.to_string();
        for f in &mut kind.config_files {
            f.template_name = format!("{name}/{}", f.template);
        }
        let problem = |what: String| format!("templates/{name}/kind.yaml: {what}");
        if let Some(command) = &kind.command {
            expand_command(command, "/config", Some("app")).map_err(problem)?;
        }
        let rb = &kind.read_back;
        if rb.rtc_range.is_some() == (rb.rtc_min.is_some() || rb.rtc_max.is_some()) || rb.rtc_min.is_some() != rb.rtc_max.is_some() {
            return Err(problem("read_back needs either `rtc_range` or both `rtc_min` and `rtc_max`".into()));
        }
        let readable = rb.file == "sfuctl.env" || kind.config_files.iter().any(|f| rb.file == format!("config/{}", f.file));
        if !readable {
            return Err(problem(format!("read_back.file `{}` is neither `sfuctl.env` nor `config/<one of config_files>`", rb.file)));
        }
        for (i, p) in kind.own_ports.iter().enumerate() {
            if kind.own_ports[..i].iter().any(|q| q.field == p.field) {
                return Err(problem(format!("own_ports lists `{}` twice", p.field.path())));
            }
        }
        if kind.health.is_some() && kind.own_port(PortField::ListenPort).is_none() {
            return Err(problem("a health probe needs a `listen_port` in own_ports".into()));
        }
        Ok(kind)
    }

    /// The own port set by `field`, when the kind has one.
    pub fn own_port(&self, field: PortField) -> Option<&OwnPort> {
        self.own_ports.iter().find(|p| p.field == field)
    }

    /// The port `field` gives this kind for a spec: the spec's value, else the kind's default; none when the kind
    /// has no such port.
    pub fn port(&self, field: PortField, sfu: &SfuSpec) -> Option<u16> {
        self.own_port(field).map(|p| field.in_spec(sfu).unwrap_or(p.default))
    }

    /// The default start command for a deployment whose config directory is `config_dir`, with the uploaded
    /// single-file artifact `artifact_file`, if any. None: the kind has no default.
    pub fn default_command(&self, config_dir: &str, artifact_file: Option<&str>) -> Option<String> {
        self.command.as_deref().map(|c| expand_command(c, config_dir, artifact_file).expect("placeholders are checked when the descriptor is loaded"))
    }
}

/// Expands a start-command template. Placeholders:
///
/// - `{bin:NAME}`: the uploaded artifact when it is a single file (`./<file>`), else `NAME` from the host's PATH;
/// - `{config_dir}`: the config directory;
/// - `{config:FILE}`: a file in it.
///
/// Paths are shell-quoted (the command runs under `/bin/sh`).
pub fn expand_command(template: &str, config_dir: &str, artifact_file: Option<&str>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}').map(|e| start + e).ok_or_else(|| format!("command `{template}` has a `{{` without `}}`"))?;
        let placeholder = &rest[start + 1..end];
        let value = match placeholder.split_once(':') {
            None if placeholder == "config_dir" => shell_quote(config_dir),
            Some(("bin", name)) if !name.is_empty() => artifact_file.map_or_else(|| name.to_string(), |f| format!("./{}", shell_quote(f))),
            Some(("config", file)) if !file.is_empty() => shell_quote(&format!("{config_dir}/{file}")),
            _ => return Err(format!("command `{template}`: unknown placeholder `{{{placeholder}}}` (use {{bin:NAME}}, {{config_dir}} or {{config:FILE}})")),
        };
        out.push_str(&value);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

fn registry() -> &'static BTreeMap<&'static str, KindDescriptor> {
    static KINDS: OnceLock<BTreeMap<&'static str, KindDescriptor>> = OnceLock::new();
    KINDS.get_or_init(|| {
        EMBEDDED
            .iter()
            .map(|(name, yaml)| (*name, KindDescriptor::parse(name, yaml).unwrap_or_else(|e| panic!("a shipped descriptor is broken: {e}"))))
            .collect()
    })
}

impl SfuKind {
    /// This kind's descriptor (`templates/<kind>/kind.yaml`).
    pub fn descriptor(self) -> &'static KindDescriptor {
        registry().get(self.as_str()).unwrap_or_else(|| panic!("sfuctl ships no templates/{}/kind.yaml", self.as_str()))
    }
}

/// The kinds that have an own port set by `field`, for messages (``kind `livekit` ``).
pub fn kinds_with(field: PortField) -> String {
    let names: Vec<String> = SfuKind::ALL.iter().filter(|k| k.descriptor().own_port(field).is_some()).map(|k| format!("`{}`", k.as_str())).collect();
    names.join(" or ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ports::PortRole;
    use crate::spec::Spec;

    const TEMPLATES: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/templates.rs"));

    #[test]
    fn every_descriptor_parses_and_matches_its_folder() {
        for (name, yaml) in EMBEDDED {
            let kind: SfuKind = serde_yaml::from_str(name).unwrap_or_else(|e| panic!("templates/{name}/ is not an sfu.kind: {e}"));
            let d = KindDescriptor::parse(name, yaml).unwrap();
            assert_eq!(kind.as_str(), *name);
            assert_eq!(d.name, *name);
            for f in &d.config_files {
                assert!(TEMPLATES.iter().any(|(t, _)| *t == f.template_name), "{name}: no template {}", f.template_name);
            }
        }
        for kind in SfuKind::ALL {
            assert_eq!(kind.descriptor().name, kind.as_str());
        }
        assert_eq!(EMBEDDED.len(), SfuKind::ALL.len(), "a templates/<kind>/kind.yaml without an SfuKind variant");
    }

    #[test]
    fn default_commands_are_today_s() {
        let config = "/opt/sfuctl/t/config";
        let cmd = |k: SfuKind, artifact| k.descriptor().default_command(config, artifact);
        assert_eq!(cmd(SfuKind::Mediasoup, None).as_deref(), Some("npm start"));
        assert_eq!(cmd(SfuKind::Janus, None).as_deref(), Some("janus --configs-folder=/opt/sfuctl/t/config"));
        assert_eq!(cmd(SfuKind::Janus, Some("my janus")).as_deref(), Some("./'my janus' --configs-folder=/opt/sfuctl/t/config"));
        assert_eq!(cmd(SfuKind::Coturn, None).as_deref(), Some("turnserver -c /opt/sfuctl/t/config/turnserver.conf"));
        assert_eq!(cmd(SfuKind::Livekit, Some("livekit-server")).as_deref(), Some("./livekit-server --config /opt/sfuctl/t/config/livekit.yaml"));
        assert_eq!(cmd(SfuKind::Custom, Some("x")), None);
    }

    #[test]
    fn bad_descriptors_are_refused() {
        let base = "title: t\nread_back: { file: sfuctl.env, format: env, announced: A, rtc_min: B, rtc_max: C }\n";
        assert!(KindDescriptor::parse("t", base).is_ok());
        let err = |extra: &str| KindDescriptor::parse("t", &format!("{base}{extra}")).expect_err(extra);
        assert!(err("colour: red\n").contains("unknown field `colour`"));
        assert!(err("command: \"{bin:x} {configdir}\"\n").contains("unknown placeholder `{configdir}`"));
        assert!(err("config_files: [{ template: a.j2, file: a, mode: \"0999\" }]\n").contains("octal"));
        assert!(err("health: { probe: stun_binding }\n").contains("listen_port"));
        assert!(err("health: { probe: stun_binding, path: /x }\n").contains("unknown field `path`"));
        let no_range = "title: t\nread_back: { file: sfuctl.env, format: env, announced: A, rtc_min: B }\n";
        assert!(KindDescriptor::parse("t", no_range).unwrap_err().contains("rtc_max"));
        let wrong_file = "title: t\nread_back: { file: config/x.conf, format: env, announced: A, rtc_range: R }\n";
        assert!(KindDescriptor::parse("t", wrong_file).unwrap_err().contains("read_back.file"));
    }

    /// A kind that exists only in this test drives the file plan, the port manifest and the audit's read-back
    /// without any code knowing it.
    #[test]
    fn a_made_up_kind_needs_no_code() {
        let yaml = r#"
title: Example SFU
config_files:
  - { template: example.toml.j2, file: example.toml, mode: "0600" }
  - { template: example.env.j2, file: example.env, mode: "0644", env_file: true }
command: "{bin:example-sfu} --config {config:example.toml}"
own_ports:
  - field: listen_port
    default: 9443
    rules:
      - { protocol: tcp, purpose: Example signaling }
      - { protocol: udp, purpose: Example QUIC }
ports_per_participant: 3
media_purpose: example media
needs_secret: true
read_back:
  file: config/example.toml
  format: key_value
  announced: public_ip
  listen: { fixed: "::" }
  rtc_range: ports
health: { probe: http_get, path: /healthz, json_key: status, json_value: ok }
install: { packages: [example-sfu], mask_units: [example-sfu.service], node: 20, deps: npm }
"#;
        let kind = KindDescriptor::parse("example", yaml).unwrap();
        let spec = Spec::parse("name: t\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.9 }] }\nsfu: { kind: custom, command: x, rtc_ports: 40000-41000 }\n").unwrap();

        let files: Vec<(String, String, u32)> = crate::render::file_plan_for(&spec, &kind).into_iter().map(|(t, p, m)| (t.to_string(), p, m)).collect();
        assert!(files.contains(&("example/example.toml.j2".into(), "/opt/sfuctl/t/config/example.toml".into(), 0o600)), "{files:?}");
        assert!(files.contains(&("example/example.env.j2".into(), "/opt/sfuctl/t/config/example.env".into(), 0o644)), "{files:?}");

        let m = crate::ports::Manifest::derive_for(&spec, &kind);
        let lines: Vec<String> = m.rules.iter().filter(|r| r.role != PortRole::Ssh).map(|r| format!("{} {} {} {}", r.protocol, r.ports, r.purpose, r.field)).collect();
        assert_eq!(lines, ["udp 40000-41000 example media sfu.rtc_ports", "tcp 9443 Example signaling sfu.listen_port", "udp 9443 Example QUIC sfu.listen_port"]);

        let v = crate::audit::read_config(&kind.read_back, "public_ip = \"203.0.113.9\"\nports = \"40000-41000\"\n");
        assert_eq!((v.announced.as_deref(), v.listen.as_deref(), v.min, v.max), (Some("203.0.113.9"), Some("::"), Some(40000), Some(41000)));

        assert_eq!(kind.default_command("/c", None).as_deref(), Some("example-sfu --config /c/example.toml"));
        assert_eq!(kind.install.packages, ["example-sfu"]);
        assert_eq!((kind.install.node, kind.install.deps), (Some(20), Some(Deps::Npm)));
    }
}
