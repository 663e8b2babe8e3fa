//! The provider trait: one cloud's servers, firewalls and SSH keys, found by the deployment's owner tag.
//!
//! Providers translate; the engine decides. A provider turns normalised requests into its API's calls and its
//! answers into normalised records ([`Server`], [`Firewall`], [`SshKey`]). It never waits for a state (the engine
//! polls with `wait::until`), never decides what to create (the engine plans from what the list calls return),
//! and treats "already gone" as success on delete. Retries on 429, 5xx and timeouts live in `http::Client`.
//!
//! The methods return boxed futures so the engine can hold any provider as `Arc<dyn Provider>` and drive hosts
//! from spawned tasks (`async fn` in a trait is neither object-safe nor `Send` by default).

pub mod aws;
pub mod catalog;
pub mod digitalocean;
pub mod existing;
pub mod linode;
pub mod vultr;

use std::collections::BTreeSet;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;

use anyhow::Result;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::error::UserError;
use crate::http::RequestStats;
use crate::ports::{CloudRule, Manifest, PortRange, Protocol};
use crate::spec::Spec;
use catalog::ProviderData;

pub use crate::owner::Owner;

/// A provider's "not now": the call was refused for a reason that passes by itself (a security group still used
/// by a terminating instance, a server still locked after create). Providers return it instead of waiting; the
/// engine waits with a timeout and calls again.
#[derive(Debug)]
pub struct Busy(pub String);

impl fmt::Display for Busy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Busy {}

/// Whether an error is (or was caused by) a provider's [`Busy`]; its reason if so.
pub fn busy_reason(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|c| c.downcast_ref::<Busy>()).map(|b| b.0.clone())
}

/// A create refused because the name is taken where names are unique (a Linode label): most likely another run
/// creating the same server at the same moment. Providers return it instead of deciding; the engine looks the name
/// up and takes the server over when sfuctl owns it (the owner tag and its name).
#[derive(Debug)]
pub struct NameTaken(pub String);

impl fmt::Display for NameTaken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the name `{}` is taken", self.0)
    }
}

impl std::error::Error for NameTaken {}

/// Whether an error is (or was caused by) a provider's [`NameTaken`].
pub fn name_taken(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<NameTaken>())
}

/// The future every provider method returns: boxed and `Send`, so `dyn Provider` works across tasks.
pub type ProviderFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// A provider's ID of a server (a droplet id, a Linode id, an EC2 instance id), kept as text.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ServerId(pub String);

/// A provider's ID of a firewall.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FirewallId(pub String);

/// A provider's ID of a registered SSH key.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SshKeyId(pub String);

macro_rules! id_display {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    )*};
}
id_display!(ServerId, FirewallId, SshKeyId);

/// A server's state, normalised across providers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ServerStatus {
    /// Being created or booting (DigitalOcean `new`, Linode `provisioning`/`booting`, EC2 `pending`).
    Pending,
    /// Running (DigitalOcean `active`).
    Running,
    /// Powered off, but still there.
    Off,
    /// Being deleted, or deleted and still listed (DigitalOcean `archive`, EC2 `terminated`).
    Gone,
    /// A state sfuctl has no meaning for, as the provider spells it.
    Other(String),
}

impl fmt::Display for ServerStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Pending => f.write_str("pending"),
            Self::Running => f.write_str("running"),
            Self::Off => f.write_str("off"),
            Self::Gone => f.write_str("gone"),
            Self::Other(raw) => f.write_str(raw),
        }
    }
}

/// A server, normalised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Server {
    /// The provider's ID.
    pub id: ServerId,
    /// Its name.
    pub name: String,
    /// Its state.
    pub status: ServerStatus,
    /// The public IPv4 address, once it has one.
    pub public_ipv4: Option<IpAddr>,
    /// The public IPv6 address, when IPv6 is on and assigned.
    pub public_ipv6: Option<IpAddr>,
    /// Its tags (or labels).
    pub tags: Vec<String>,
    /// The region it runs in, when the provider says.
    pub region: Option<String>,
}

impl Server {
    /// Whether it is running and reachable from outside: what the engine waits for after create.
    pub fn is_up(&self) -> bool {
        self.status == ServerStatus::Running && self.public_ipv4.is_some()
    }
}

/// An inbound rule, normalised so it compares with [`CloudRule`]s: `"0"`, `"all"`, `""` and `"1-65535"` all read
/// as 1-65535, sources are sorted and deduplicated.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct FirewallRule {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The port range.
    pub ports: PortRange,
    /// Who may reach it (CIDRs).
    pub sources: Vec<IpNet>,
}

impl FirewallRule {
    /// A rule with sources in a canonical order.
    pub fn new(protocol: Protocol, ports: PortRange, sources: impl IntoIterator<Item = IpNet>) -> Self {
        let sources: BTreeSet<IpNet> = sources.into_iter().collect();
        Self { protocol, ports, sources: sources.into_iter().collect() }
    }

    /// Every port of the protocol.
    pub const ALL_PORTS: PortRange = PortRange { start: 1, end: 65535 };
}

impl From<&CloudRule> for FirewallRule {
    fn from(rule: &CloudRule) -> Self {
        Self::new(rule.protocol, rule.ports, rule.sources.iter().copied())
    }
}

impl fmt::Display for FirewallRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sources: Vec<String> = self.sources.iter().map(ToString::to_string).collect();
        write!(f, "{} {} from {}", self.protocol, self.ports, sources.join(", "))
    }
}

/// What differs between a firewall's inbound rules and the wanted ones.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleDiff {
    /// Wanted, not there.
    pub missing: Vec<FirewallRule>,
    /// There, not wanted (including rules sfuctl cannot represent, in [`Firewall::other_inbound`]).
    pub extra: Vec<FirewallRule>,
    /// Rules sfuctl cannot represent (ICMP, tag or droplet sources), as the provider describes them.
    pub unknown: Vec<String>,
}

impl RuleDiff {
    /// Whether the firewall already has exactly the wanted rules.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.extra.is_empty() && self.unknown.is_empty()
    }
}

/// A cloud firewall, normalised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Firewall {
    /// The provider's ID.
    pub id: FirewallId,
    /// Its name.
    pub name: String,
    /// Inbound rules sfuctl can represent, sorted.
    pub rules: Vec<FirewallRule>,
    /// Inbound rules it cannot (ICMP, sources that are tags or servers), described in the provider's terms.
    pub other_inbound: Vec<String>,
    /// Whether every change is applied (DigitalOcean: `status` is `succeeded` and `pending_changes` is empty).
    pub ready: bool,
    /// The provider's status word, for messages (`waiting`, `succeeded`, `failed`).
    pub status: String,
    /// Servers attached one by one.
    pub server_ids: Vec<ServerId>,
    /// Tags attached: every server carrying one is covered.
    pub tags: Vec<String>,
    /// Whether outbound traffic is allowed everywhere (tcp, udp and icmp, IPv4 and IPv6).
    pub outbound_ok: bool,
}

impl Firewall {
    /// How the inbound rules differ from `wanted` (e.g. `manifest.cloud_rules()`).
    pub fn diff(&self, wanted: &[CloudRule]) -> RuleDiff {
        let wanted: Vec<FirewallRule> = wanted.iter().map(FirewallRule::from).collect();
        self.diff_rules(&wanted)
    }

    /// How the inbound rules differ from `wanted`, already normalised (e.g. a [`FirewallRequest`]'s rules).
    pub fn diff_rules(&self, wanted: &[FirewallRule]) -> RuleDiff {
        let want: BTreeSet<FirewallRule> = wanted.iter().map(|r| FirewallRule::new(r.protocol, r.ports, r.sources.iter().copied())).collect();
        let have: BTreeSet<FirewallRule> = self.rules.iter().cloned().collect();
        RuleDiff {
            missing: want.difference(&have).cloned().collect(),
            extra: have.difference(&want).cloned().collect(),
            unknown: self.other_inbound.clone(),
        }
    }

    /// Whether the firewall covers `server`, by ID or by one of its tags.
    pub fn covers(&self, server: &Server) -> bool {
        self.server_ids.contains(&server.id) || self.tags.iter().any(|t| server.tags.contains(t))
    }
}

/// An SSH public key registered with the provider.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SshKey {
    /// The provider's ID.
    pub id: SshKeyId,
    /// The provider's fingerprint of it (DigitalOcean: MD5, colon-hex).
    pub fingerprint: String,
    /// Its name on the provider.
    pub name: String,
}

/// What a new server should be. Build one with [`ServerRequest::for_spec`] or by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRequest {
    /// Its name, `sfuctl-<name>-<n>`.
    pub name: String,
    /// The region slug; empty when the provider resolves it itself (AWS: the spec, AWS_REGION or ~/.aws/config).
    pub region: String,
    /// The size (machine type) slug.
    pub size: String,
    /// The image slug or ID; empty for the provider's own choice (AWS: the newest Canonical Ubuntu 24.04 AMI).
    pub image: String,
    /// SSH keys to install (IDs from [`Provider::ensure_ssh_key`]), for providers that register keys.
    pub ssh_key_ids: Vec<SshKeyId>,
    /// The public key line itself, for providers that take keys at create instead (`ssh_key: inline`).
    pub public_key: Option<String>,
    /// Tags: the owner tag first. Firewalls attached by tag cover the server from its first boot.
    pub tags: Vec<String>,
    /// cloud-init user data, as plain text (providers that want base64 encode it themselves).
    pub user_data: Option<String>,
    /// Whether to assign a public IPv6 address.
    pub ipv6: bool,
    /// The deployment's firewall, for providers that attach it at create (an AWS security group); providers that
    /// attach by tag (DigitalOcean) ignore it.
    pub firewall_id: Option<FirewallId>,
}

impl ServerRequest {
    /// Server number `index` (from 1) of a spec: region from the spec, size and image from the spec or the
    /// provider's defaults (`providers/<kind>.yaml`), tagged with the owner tag.
    pub fn for_spec(spec: &Spec, index: u32, ssh_key_ids: Vec<SshKeyId>, user_data: Option<String>) -> Result<Self> {
        let data = ProviderData::get(spec.provider.kind);
        let owner = Owner::new(&spec.name);
        let missing = |field: &str| {
            UserError::input(format!("`provider.{field}` is not set and {} has no default", data.title))
                .hint(format!("add `{field}:` under `provider:` in the spec"))
        };
        // A provider whose region may come from elsewhere (AWS: AWS_REGION, ~/.aws/config) gets "" and uses its own.
        let region = match spec.provider.region.clone() {
            Some(region) => region,
            None if !data.region_required => String::new(),
            None => return Err(missing("region").hint(format!("e.g. `region: {}`", data.example_region)).into()),
        };
        let size = spec.provider.size.clone().or_else(|| data.defaults.size.clone()).ok_or_else(|| missing("size"))?;
        // `image: null` in the provider's data means the provider looks one up (AWS: the newest Ubuntu AMI): "".
        let image = spec.provider.image.clone().or_else(|| data.defaults.image.clone()).unwrap_or_default();
        Ok(Self {
            name: owner.server_name(index),
            region,
            size,
            image,
            ssh_key_ids,
            public_key: None,
            tags: vec![owner.tag()],
            user_data,
            ipv6: spec.provider.ipv6,
            firewall_id: None,
        })
    }
}

/// What the deployment's firewall should be.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FirewallRequest {
    /// Its name, `sfuctl-<name>`.
    pub name: String,
    /// The deployment: the firewall is attached to the owner tag, so it covers every server of the deployment.
    pub owner: Owner,
    /// The inbound rules (outbound is always allow-all; providers that need explicit rules add them).
    pub rules: Vec<FirewallRule>,
    /// Servers to attach one by one as well (for providers or hosts without tags; usually empty).
    pub server_ids: Vec<ServerId>,
}

impl FirewallRequest {
    /// The firewall of a deployment: its manifest's cloud rules.
    pub fn for_manifest(owner: &Owner, manifest: &Manifest) -> Self {
        Self { name: owner.firewall_name(), owner: owner.clone(), rules: manifest.cloud_rules().iter().map(FirewallRule::from).collect(), server_ids: Vec::new() }
    }
}

/// A spec value (`provider.region`, `provider.size`, `provider.image`) that the cloud does not offer: bad input
/// naming the field, with the closest valid choice and the valid ones `listed_by` (the API call) returned.
pub fn unknown_choice(cloud: &str, field: &str, value: &str, choices: &[String], listed_by: &str) -> anyhow::Error {
    /// More than this many choices are cut short in the hint.
    const SHOWN: usize = 30;
    let mut valid: Vec<String> = choices.to_vec();
    valid.sort();
    valid.dedup();
    let noun = field.rsplit('.').next().unwrap_or(field);
    let mut hint = match crate::spec::closest(value, &valid) {
        Some(best) => format!("did you mean `{best}`? "),
        None => String::new(),
    };
    if valid.is_empty() {
        hint.push_str(&format!("{listed_by} lists none that fits"));
    } else {
        // A long list (EC2's hundreds of instance types) is cut to the value's own family (`c6i.` of `c6i.hyper`).
        let family = value.find(['.', '-']).map_or(value, |i| &value[..=i]);
        let kin: Vec<&String> = valid.iter().filter(|v| v.starts_with(family) && v.len() > family.len()).collect();
        let (list, of) = if valid.len() > SHOWN && !kin.is_empty() {
            (kin, format!(" {} in all; those like `{family}…`", valid.len()))
        } else {
            (valid.iter().collect(), String::new())
        };
        let more = list.len().saturating_sub(SHOWN);
        let shown = list.iter().take(SHOWN).map(|s| s.as_str()).collect::<Vec<_>>().join(", ");
        let rest = if more > 0 { format!(", and {more} more") } else { String::new() };
        hint.push_str(&format!("{cloud} offers{of}: {shown}{rest} ({listed_by})"));
    }
    crate::error::UserError::input(format!("{field}: {cloud} has no {noun} `{value}`")).hint(hint).into()
}

/// One cloud (or the `ssh` pseudo-provider): translation between sfuctl's records and the provider's API.
///
/// Every method makes API calls and returns at once; none waits for a state to be reached or sleeps: a refusal
/// that passes by itself comes back as [`Busy`], and the engine decides whether and how long to wait. Deletes of
/// something already gone succeed. Facts that differ per provider but are not translation (how the firewall
/// attaches, create pacing, wording) are data in `providers/<kind>.yaml` ([`catalog::ProviderData`]).
pub trait Provider: Send + Sync {
    /// The provider's name in messages (`DigitalOcean`).
    fn name(&self) -> &'static str;

    /// The API requests sent so far (total, mutating, retries).
    fn requests(&self) -> RequestStats;

    /// Every server carrying the owner's tag, across all pages.
    fn list_servers<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Server>>;

    /// One server; `None` when it does not exist (any more).
    fn get_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, Option<Server>>;

    /// Creates a server and returns at once (typically `Pending`, without addresses). A create whose answer was
    /// lost is not repeated blindly: the provider looks for the server by name first.
    fn create_server<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, Server>;

    /// Deletes a server; one that is already gone is success.
    fn delete_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, ()>;

    /// The owner's firewalls (on DigitalOcean: those named exactly `sfuctl-<name>`).
    fn list_firewalls<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Firewall>>;

    /// One firewall; `None` when it does not exist.
    fn get_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, Option<Firewall>>;

    /// Creates the firewall (`existing` is `None`) or brings `existing` in line with `req` in place, keeping
    /// whatever else is attached to it. Sends nothing when `existing` already matches.
    fn put_firewall<'a>(&'a self, req: &'a FirewallRequest, existing: Option<&'a Firewall>) -> ProviderFuture<'a, Firewall>;

    /// Deletes a firewall; one that is already gone is success.
    fn delete_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, ()>;

    /// Finds `public_key` (an OpenSSH public key line) among the registered keys, by fingerprint; registers
    /// nothing (for `plan`).
    fn find_ssh_key<'a>(&'a self, public_key: &'a str) -> ProviderFuture<'a, Option<SshKey>>;

    /// Registers `public_key` (an OpenSSH public key line) under `name`, or finds it when it is already
    /// registered (by fingerprint, under any name). Returns the key and whether it was created now.
    fn ensure_ssh_key<'a>(&'a self, name: &'a str, public_key: &'a str) -> ProviderFuture<'a, (SshKey, bool)>;

    /// Deletes a registered key; one that is already gone is success.
    fn delete_ssh_key<'a>(&'a self, id: &'a SshKeyId) -> ProviderFuture<'a, ()>;

    /// Checks, before anything is created, that the region, size and image of `req` are ones this API offers. One
    /// it does not offer is bad input (exit 2, see [`unknown_choice`]) naming the spec field and listing the valid
    /// choices the API gave; reading the lists is all this does. Default: nothing to check.
    fn check_choices<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, ()> {
        let _ = req;
        Box::pin(async { Ok(()) })
    }

    /// Removes what the provider keeps for the owner itself, once every resource is gone (DigitalOcean: the
    /// `sfuctl:<name>` tag). Call it last in `down`; a no-op by default.
    fn forget_owner<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, ()> {
        let _ = owner;
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> Spec {
        Spec::parse(&format!(
            "name: demo\nprovider: {{ kind: digitalocean, region: fra1{extra} }}\nssh: {{ allow_from: [203.0.113.7/32] }}\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n"
        ))
        .unwrap()
    }

    #[test]
    fn server_request_takes_defaults_from_provider_data() {
        let req = ServerRequest::for_spec(&spec(""), 1, vec![SshKeyId("7".into())], Some("#cloud-config\n".into())).unwrap();
        assert_eq!((req.region.as_str(), req.size.as_str(), req.image.as_str()), ("fra1", "s-2vcpu-4gb", "ubuntu-24-04-x64"));
        assert_eq!(req.tags, ["sfuctl:demo"]);
        let req = ServerRequest::for_spec(&spec(", size: c-2, ipv6: true"), 1, vec![], None).unwrap();
        assert_eq!(req.size, "c-2");
        assert!(req.ipv6);
    }

    #[test]
    fn firewall_diff_compares_normalised_rules() {
        let s = spec("");
        let wanted = s.manifest().cloud_rules();
        let mut fw = Firewall {
            id: FirewallId("f".into()),
            name: "sfuctl-demo".into(),
            rules: wanted.iter().map(FirewallRule::from).collect(),
            other_inbound: vec![],
            ready: true,
            status: "succeeded".into(),
            server_ids: vec![],
            tags: vec!["sfuctl:demo".into()],
            outbound_ok: true,
        };
        assert!(fw.diff(&wanted).is_empty());
        // Source order does not matter.
        fw.rules[1].sources.reverse();
        fw.rules = fw.rules.iter().map(|r| FirewallRule::new(r.protocol, r.ports, r.sources.clone())).collect();
        assert!(fw.diff(&wanted).is_empty());
        fw.rules.push(FirewallRule::new(Protocol::Tcp, FirewallRule::ALL_PORTS, crate::ports::anywhere()));
        let diff = fw.diff(&wanted);
        assert_eq!(diff.extra.len(), 1);
        assert_eq!(diff.extra[0].to_string(), "tcp 1-65535 from 0.0.0.0/0, ::/0");
    }
}
