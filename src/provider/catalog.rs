//! The catalog of providers: each one's declarative data (`providers/<kind>.yaml`, embedded in the binary) and
//! the one registration line that connects a spec to its [`Provider`].
//!
//! Keeping facts as data means a new region, a changed limit, a new default or how a cloud attaches its firewall
//! is a change a reader can check against the provider's documentation, with no `match` in the engine, the plan
//! or the audit. Adding a cloud: its yaml, its provider file, and one [`Registration`] in [`REGISTRY`].

use std::sync::{Arc, OnceLock};

use anyhow::Result;
use serde::Deserialize;

use super::Provider;
use crate::error::UserError;
use crate::spec::{ProviderKind, Spec};

/// One provider kind: its data and how to connect to it.
pub struct Registration {
    /// The kind, as in the spec.
    pub kind: ProviderKind,
    /// `providers/<kind>.yaml`.
    pub data: &'static str,
    /// Builds the provider for a spec whose credentials are set; `None` while this build cannot deploy the kind
    /// (plan and render still work from its data).
    pub connect: Option<Connect>,
}

/// A provider's constructor: the spec in, the provider out (its credentials read from the environment).
pub type Connect = fn(&Spec) -> Result<Arc<dyn Provider>>;

/// Every provider kind sfuctl knows. A new cloud is one line here.
pub const REGISTRY: &[Registration] = &[
    Registration { kind: ProviderKind::Digitalocean, data: include_str!("../../providers/digitalocean.yaml"), connect: Some(super::digitalocean::connect) },
    Registration { kind: ProviderKind::Linode, data: include_str!("../../providers/linode.yaml"), connect: Some(super::linode::connect) },
    Registration { kind: ProviderKind::Aws, data: include_str!("../../providers/aws.yaml"), connect: Some(super::aws::connect) },
    Registration { kind: ProviderKind::Vultr, data: include_str!("../../providers/vultr.yaml"), connect: Some(super::vultr::connect) },
    Registration { kind: ProviderKind::Ssh, data: include_str!("../../providers/ssh.yaml"), connect: Some(super::existing::connect) },
];

/// The provider for a spec, when its credentials are set (or it needs none); `None` without credentials.
pub fn connect(spec: &Spec) -> Result<Option<Arc<dyn Provider>>> {
    let data = ProviderData::get(spec.provider.kind);
    if data.needs_credentials() && data.credentials_found().is_none() {
        return Ok(None);
    }
    let registration = REGISTRY.iter().find(|r| r.kind == spec.provider.kind).expect("every provider kind is registered");
    match registration.connect {
        Some(connect) => connect(spec).map(Some),
        None => Err(UserError::input(format!("provider.kind `{}` cannot be deployed by this build yet", spec.provider.kind.as_str()))
            .hint(format!(
                "`sfuctl plan` and `sfuctl render` work for it; `up` works for {}",
                REGISTRY.iter().filter(|r| r.connect.is_some()).map(|r| r.kind.as_str()).collect::<Vec<_>>().join(", ")
            ))
            .into()),
    }
}

/// The provider for a spec; missing credentials are bad input (exit 2).
pub fn require(spec: &Spec) -> Result<Arc<dyn Provider>> {
    connect(spec)?.ok_or_else(|| {
        let data = ProviderData::get(spec.provider.kind);
        let vars: Vec<String> = data.credentials.env.iter().map(|v| format!("${v}")).collect();
        UserError::input(format!("no {} credentials found ({} unset)", data.title, vars.join(", ")))
            .hint(format!("export {}=<your API token>", data.credentials.env.first().map_or("the token", String::as_str)))
            .into()
    })
}

/// Everything sfuctl knows about one provider that is not code.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderData {
    /// The provider kind, as in the spec.
    pub kind: ProviderKind,
    /// The provider's name in messages.
    pub title: String,
    /// The API endpoint, for cloud providers.
    pub api: Option<ApiData>,
    /// Where credentials come from.
    #[serde(default)]
    pub credentials: CredentialData,
    /// Whether the spec must name a region.
    pub region_required: bool,
    /// A region to show in hints.
    pub example_region: String,
    /// Regions sfuctl knows; an unknown one is a warning, since providers add regions.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Defaults for fields the spec leaves out.
    pub defaults: Defaults,
    /// The cloud firewall's limits.
    pub firewall: FirewallData,
    /// Naming limits of the provider's resources.
    pub names: NameData,
    /// Where the servers come from and how they are made.
    pub servers: ServerData,
    /// How the login key reaches new servers.
    pub ssh_key: KeyHandling,
}

/// Whether sfuctl makes the servers or is given them.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Lifecycle {
    /// sfuctl creates and deletes them through the provider's API.
    Created,
    /// They exist already (kind `ssh`): sfuctl deploys to them and removes only what it put there.
    Existing,
}

/// How the provider's servers are made.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerData {
    /// Created by sfuctl, or existing.
    pub lifecycle: Lifecycle,
    /// What the provider calls a server, in messages (`droplet`, `instance`, `host`).
    pub noun: String,
    /// The provider's limit on creates, which the engine keeps to instead of failing on a large `count`.
    #[serde(default)]
    pub create_pacing: Option<Pacing>,
}

/// At most `max` creates in any `per_seconds` window.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Pacing {
    /// Creates allowed per window.
    pub max: u32,
    /// The window, in seconds.
    pub per_seconds: u64,
}

/// How the login key reaches new servers.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum KeyHandling {
    /// Registered with the provider first (found again by fingerprint), then named at create.
    Register,
    /// Passed in the create request itself; nothing is registered.
    Inline,
    /// No key is given to anything (existing hosts already let you in).
    None,
}

/// How a cloud firewall reaches the servers.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Attach {
    /// By the owner tag: every server carrying it is covered, from its first boot.
    Tag,
    /// Named in each server's create request.
    Launch,
    /// There is no cloud firewall.
    None,
}

/// The API endpoint of a cloud provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiData {
    /// The default base URL.
    pub url: String,
    /// Environment variables that override it, first found wins (also the test seam).
    pub url_env: Vec<String>,
    /// The version path appended to the URL (`v4`), for APIs whose request paths leave it out; `None` when the
    /// paths carry it themselves (DigitalOcean's `/v2/...`).
    #[serde(default)]
    pub version: Option<String>,
    /// Environment variables that override the version path, first found wins (`LINODE_API_VERSION`).
    #[serde(default)]
    pub version_env: Vec<String>,
}

impl ApiData {
    /// The base URL requests go to: the first override that is set, else the default, then the version path
    /// when there is one (`https://api.linode.com` + `v4`). A URL that already ends with that version path (a
    /// user who wrote `LINODE_URL=https://api.linode.com/v4`) does not get it twice.
    pub fn base_url(&self) -> String {
        let set = |names: &[String]| names.iter().find_map(|name| std::env::var(name).ok().map(|v| v.trim().to_string()).filter(|v| !v.is_empty()));
        let url = set(&self.url_env).unwrap_or_else(|| self.url.clone());
        let url = url.trim_end_matches('/');
        match set(&self.version_env).or_else(|| self.version.clone()) {
            Some(version) => {
                let version = version.trim_matches('/');
                if version.is_empty() || url.ends_with(&format!("/{version}")) { url.to_string() } else { format!("{url}/{version}") }
            }
            None => url.to_string(),
        }
    }
}

/// Where a provider's credentials come from.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialData {
    /// Environment variables, any of which means credentials are set.
    #[serde(default)]
    pub env: Vec<String>,
    /// Files (`~/` expanded), any of which means credentials are set.
    #[serde(default)]
    pub files: Vec<String>,
}

/// Defaults for spec fields.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The machine size.
    #[serde(default)]
    pub size: Option<String>,
    /// The OS image (`None`: looked up, e.g. the newest Ubuntu AMI).
    #[serde(default)]
    pub image: Option<String>,
    /// The SSH login user of the provider's images.
    pub ssh_user: String,
}

/// A cloud firewall's limits, and how the provider counts rules against them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FirewallData {
    /// The most rules one firewall may hold (`None`: no cloud firewall).
    pub rule_limit: Option<u32>,
    /// Whether every source CIDR counts as a rule of its own (AWS), rather than every port rule (DigitalOcean).
    pub count_per_cidr: bool,
    /// Rules sfuctl always adds besides the manifest's (DigitalOcean's outbound allow-all rules).
    pub fixed_rules: u32,
    /// How the firewall reaches the servers.
    pub attach: Attach,
    /// What the provider calls it, in messages (`cloud firewall`, `security group`).
    #[serde(default)]
    pub noun: String,
    /// Where it lives, when that is worth saying (`in the default VPC`).
    #[serde(default)]
    pub placement: Option<String>,
    /// For a firewall that carries no tags: the field holding its name `sfuctl-<name>`, by which sfuctl finds it
    /// again (Vultr: `description`). `None`: it carries the owner tag.
    #[serde(default)]
    pub named_by: Option<String>,
    /// Whether outbound traffic must be allowed by explicit rules (a DigitalOcean firewall without them blocks
    /// all egress); the audit then checks them too.
    #[serde(default)]
    pub explicit_outbound: bool,
}

/// Naming limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameData {
    /// The longest `sfuctl-<name>` the provider accepts for every resource sfuctl names that way.
    pub max_name_len: Option<usize>,
    /// Which resource sets that limit, for the message.
    pub longest_resource: String,
}

impl ProviderData {
    /// The embedded data of one provider.
    pub fn get(kind: ProviderKind) -> &'static ProviderData {
        static ALL: OnceLock<Vec<ProviderData>> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            REGISTRY
                .iter()
                .map(|r| {
                    // The files ship inside the binary and are checked by a unit test, so a failure here is a bug.
                    serde_yaml::from_str(r.data).unwrap_or_else(|e| panic!("providers/{}.yaml is invalid: {e}", r.kind.as_str()))
                })
                .collect()
        });
        all.iter().find(|d| d.kind == kind).expect("every provider kind has a data file")
    }

    /// Whether sfuctl creates this provider's servers (a cloud) or is given them.
    pub fn creates_servers(&self) -> bool {
        self.servers.lifecycle == Lifecycle::Created
    }

    /// Whether it has a cloud firewall.
    pub fn has_firewall(&self) -> bool {
        self.firewall.attach != Attach::None
    }

    /// Whether an API needs credentials at all (existing hosts need none).
    pub fn needs_credentials(&self) -> bool {
        !self.credentials.env.is_empty() || !self.credentials.files.is_empty()
    }

    /// How the firewall is described in plans: `DigitalOcean cloud firewall, attached by tag sfuctl:demo`.
    pub fn firewall_description(&self, owner: &super::Owner) -> String {
        let placement = self.firewall.placement.as_deref().map(|p| format!(" {p}")).unwrap_or_default();
        let tag = owner.tag();
        let marked = match &self.firewall.named_by {
            Some(field) => format!("{field} {}", owner.firewall_name()),
            None => format!("tagged {tag}"),
        };
        let attached = match self.firewall.attach {
            Attach::Tag => format!("attached by tag {tag}"),
            Attach::Launch => format!("{marked}, given to each {} at launch", self.servers.noun),
            Attach::None => String::new(),
        };
        format!("{} {}{placement}, {attached}", self.title, self.firewall.noun)
    }

    /// How many rules the provider's firewall needs for `manifest`, counted the provider's way (per CIDR on AWS,
    /// per rule elsewhere), with the rules sfuctl always adds.
    pub fn rules_needed(&self, manifest: &crate::ports::Manifest) -> u32 {
        let rules = manifest.cloud_rules();
        let inbound: usize = if self.firewall.count_per_cidr { rules.iter().map(|r| r.sources.len()).sum() } else { rules.len() };
        inbound as u32 + self.firewall.fixed_rules
    }

    /// The plan's line for the outbound rules sfuctl adds, where the provider needs them.
    pub fn outbound_line(&self) -> Option<String> {
        self.firewall.explicit_outbound.then(|| {
            format!("outbound  tcp, udp, icmp   all ports to anywhere (without these a {} {} blocks all egress)", self.title, self.firewall.noun)
        })
    }

    /// The first credential source that is set (an environment variable or file name), if any.
    pub fn credentials_found(&self) -> Option<String> {
        let env = self.credentials.env.iter().find(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if let Some(name) = env {
            return Some(format!("${name}"));
        }
        self.credentials.files.iter().find(|f| crate::spec::resolve_path(f, std::path::Path::new("/")).is_file()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_file_parses_and_matches_its_kind() {
        for r in REGISTRY {
            let data = ProviderData::get(r.kind);
            assert_eq!(data.kind, r.kind);
            assert_eq!(data.region_required, !data.example_region.is_empty() && r.kind != ProviderKind::Aws);
            assert_eq!(data.creates_servers(), data.needs_credentials(), "{}: clouds need credentials, existing hosts none", r.kind.as_str());
            assert_eq!(data.has_firewall(), data.firewall.rule_limit.is_some());
            assert!(!data.has_firewall() || !data.firewall.noun.is_empty());
        }
        // SSH from one source, the other three rules from two each (IPv4 and IPv6): AWS counts CIDRs.
        let spec = Spec::parse("name: t\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.9 }] }\nssh: { allow_from: [203.0.113.7/32] }\nsfu: { kind: livekit, rtc_ports: 40000-41000, tcp_ports: [7882, 9000] }\n").unwrap();
        let m = spec.manifest();
        assert_eq!(ProviderData::get(ProviderKind::Digitalocean).rules_needed(&m), 4 + 3);
        assert_eq!(ProviderData::get(ProviderKind::Aws).rules_needed(&m), 7);
        assert_eq!(ProviderData::get(ProviderKind::Linode).firewall.rule_limit, Some(25));
        let linode = ProviderData::get(ProviderKind::Linode).api.as_ref().unwrap();
        assert_eq!((linode.url.as_str(), linode.version.as_deref()), ("https://api.linode.com", Some("v4")));
        assert_eq!(ProviderData::get(ProviderKind::Aws).defaults.ssh_user, "ubuntu");
    }

    #[test]
    fn the_version_path_is_appended_once() {
        let api = |url: &str, version: Option<&str>| ApiData {
            url: url.into(),
            url_env: vec!["SFUCTL_TEST_NEVER_SET_URL".into()],
            version: version.map(String::from),
            version_env: vec!["SFUCTL_TEST_NEVER_SET_VERSION".into()],
        };
        assert_eq!(api("https://api.linode.com", Some("v4")).base_url(), "https://api.linode.com/v4");
        assert_eq!(api("https://api.linode.com/", Some("/v4beta")).base_url(), "https://api.linode.com/v4beta");
        assert_eq!(api("http://127.0.0.1:9/v4", Some("v4")).base_url(), "http://127.0.0.1:9/v4");
        assert_eq!(api("https://api.digitalocean.com", None).base_url(), "https://api.digitalocean.com");
    }

    #[test]
    fn plans_describe_each_firewall_in_its_providers_terms() {
        let owner = super::super::Owner::new("demo");
        let describe = |kind| ProviderData::get(kind).firewall_description(&owner);
        assert_eq!(describe(ProviderKind::Digitalocean), "DigitalOcean cloud firewall, attached by tag sfuctl:demo");
        assert_eq!(describe(ProviderKind::Aws), "AWS security group in the default VPC, tagged sfuctl:demo, given to each instance at launch");
        assert_eq!(describe(ProviderKind::Vultr), "Vultr firewall group, description sfuctl-demo, given to each instance at launch");
        let vultr = ProviderData::get(ProviderKind::Vultr);
        assert_eq!((vultr.firewall.rule_limit, vultr.firewall.count_per_cidr, vultr.outbound_line()), (Some(50), true, None));
    }
}
