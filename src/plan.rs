//! The plan: what `up` would create, change or destroy, printed like Terraform (`+ create`, `~ update`,
//! `- delete`) or as JSON.
//!
//! Without credentials the plan is made against an empty account and says so. Refreshing from a provider's API
//! (finding what exists by the owner tag) comes with each provider.

use serde::Serialize;

use crate::ports::{CloudRule, Manifest};
use crate::providers::ProviderData;
use crate::render::{HostTarget, Layout, file_plan, host_targets, nft_table, service_name};
use crate::spec::{ProviderKind, Spec, resolve_path};

/// What happens to a resource.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// `+`: it does not exist and will be made.
    Create,
    /// `~`: it exists and will be changed in place.
    Update,
    /// `-`: it exists and will be removed.
    Delete,
}

impl Action {
    fn sign(self) -> char {
        match self {
            Self::Create => '+',
            Self::Update => '~',
            Self::Delete => '-',
        }
    }
}

/// One planned change.
#[derive(Clone, Debug, Serialize)]
pub struct Change {
    /// Create, update or delete.
    pub action: Action,
    /// `ssh_key`, `firewall`, `server`, `host_firewall` or `service`.
    pub kind: &'static str,
    /// The resource's name.
    pub name: String,
    /// The host it lives on, for host-level resources.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Lines of detail for the text output.
    #[serde(skip)]
    pub details: Vec<String>,
}

/// A firewall rule in the plan's JSON: `ports` is a string (`"40000-41000"` or `"443"`).
#[derive(Clone, Debug, Serialize)]
pub struct PlannedRule {
    /// `udp` or `tcp`.
    pub protocol: String,
    /// `"40000-41000"` or `"443"`.
    pub ports: String,
    /// CIDRs allowed in.
    pub sources: Vec<String>,
    /// What the rule is for.
    pub purposes: Vec<String>,
}

/// A file a host gets.
#[derive(Clone, Debug, Serialize)]
pub struct PlannedFile {
    /// The host's name.
    pub host: String,
    /// The absolute path on the host.
    pub path: String,
}

/// A whole plan.
#[derive(Clone, Debug, Serialize)]
pub struct Plan {
    /// The deployment's name.
    pub name: String,
    /// The provider kind.
    pub provider: &'static str,
    /// Whether the plan was refreshed from the provider (false: planned against an empty account).
    pub refreshed: bool,
    /// Notes about how the plan was made (no credentials found, hosts not inspected).
    pub notes: Vec<String>,
    /// The changes, in the order `up` makes them.
    pub resources: Vec<Change>,
    /// The firewall rules every layer gets (cloud and host), adjacent ranges merged.
    pub firewall_rules: Vec<PlannedRule>,
    /// The files every host gets.
    pub files: Vec<PlannedFile>,
    /// `{add, change, destroy}` counts.
    pub summary: Summary,
}

/// Counts of a plan's changes.
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Summary {
    /// Resources to create.
    pub add: usize,
    /// Resources to change in place.
    pub change: usize,
    /// Resources to destroy.
    pub destroy: usize,
}

impl Plan {
    /// The plan for a spec against an empty account (or hosts not yet inspected).
    pub fn against_nothing(spec: &Spec, base_dir: &std::path::Path, notes: Vec<String>) -> Self {
        let data = ProviderData::get(spec.provider.kind);
        let manifest = spec.manifest();
        let rules = manifest.cloud_rules();
        let owner = format!("sfuctl:{}", spec.name);
        let resource = format!("sfuctl-{}", spec.name);
        let mut resources = Vec::new();
        let hosts = host_targets(spec, "(known after create)");
        if spec.provider.kind.is_cloud() {
            let public_key = spec.ssh.public_key.clone().unwrap_or_else(|| format!("{}.pub", spec.ssh.private_key.as_deref().unwrap_or("~/.ssh/id_ed25519")));
            resources.push(Change {
                action: Action::Create,
                kind: "ssh_key",
                name: resource.clone(),
                host: None,
                details: vec![format!("from {}  (an existing key with the same fingerprint is reused)", resolve_path(&public_key, base_dir).display())],
            });
            let what = if spec.provider.kind == ProviderKind::Aws { "security group" } else { "cloud firewall" };
            let mut details = vec![format!("{} {what}, owner tag {owner}", data.title)];
            details.extend(rule_lines(&rules));
            details.extend(outbound_line(spec));
            resources.push(Change { action: Action::Create, kind: "firewall", name: resource.clone(), host: None, details });
            for host in &hosts {
                resources.push(server_change(spec, &host.name));
            }
        }
        for host in &hosts {
            resources.extend(host_changes(spec, &manifest, host));
        }
        Self::new(spec, notes, resources, false)
    }

    /// The plan against what exists: `changes` in the cloud (from the engine's diff), plus what every new server
    /// gets. Existing servers are converged over SSH by `up`, which plan does not contact.
    pub fn refreshed(spec: &Spec, notes: Vec<String>, changes: Vec<Change>) -> Self {
        let manifest = spec.manifest();
        let mut resources = changes;
        let new_servers: Vec<String> =
            resources.iter().filter(|c| c.kind == "server" && c.action == Action::Create).map(|c| c.name.clone()).collect();
        for (change, name) in resources.iter_mut().filter(|c| c.kind == "server" && c.action == Action::Create).zip(&new_servers) {
            change.details = server_change(spec, name).details;
        }
        for name in new_servers {
            let host = HostTarget { name, address: "(known after create)".into(), address_v6: None, listen_ip: "0.0.0.0".into() };
            resources.extend(host_changes(spec, &manifest, &host));
        }
        Self::new(spec, notes, resources, true)
    }

    fn new(spec: &Spec, notes: Vec<String>, resources: Vec<Change>, refreshed: bool) -> Self {
        let rules = spec.manifest().cloud_rules();
        let files = host_targets(spec, "(known after create)")
            .iter()
            .flat_map(|h| file_plan(spec).into_iter().map(move |(_, path, _)| PlannedFile { host: h.name.clone(), path }))
            .collect();
        let count = |a: Action| resources.iter().filter(|c| c.action == a).count();
        let summary = Summary { add: count(Action::Create), change: count(Action::Update), destroy: count(Action::Delete) };
        Plan {
            name: spec.name.clone(),
            provider: spec.provider.kind.as_str(),
            refreshed,
            notes,
            firewall_rules: rules
                .iter()
                .map(|r| PlannedRule {
                    protocol: r.protocol.to_string(),
                    ports: r.ports.to_string(),
                    sources: r.sources.iter().map(|s| s.to_string()).collect(),
                    purposes: r.purposes.clone(),
                })
                .collect(),
            resources,
            files,
            summary,
        }
    }

    /// Whether the plan changes anything.
    pub fn has_changes(&self) -> bool {
        self.summary.add + self.summary.change + self.summary.destroy > 0
    }

    /// The plan as text, Terraform-style.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for note in &self.notes {
            out.push_str(&format!("{note}\n"));
        }
        if !self.has_changes() {
            out.push_str("\nNo changes. The deployment matches the spec.\n");
            return out;
        }
        out.push_str("\nsfuctl will perform these actions:\n\n");
        for c in &self.resources {
            let name = match &c.host {
                Some(h) => format!("{} on {h}", c.name),
                None => c.name.clone(),
            };
            out.push_str(&format!("  {} {:<14} {name}\n", c.action.sign(), c.kind));
            for d in &c.details {
                out.push_str(&format!("        {d}\n"));
            }
        }
        out.push_str(&format!(
            "\nPlan: {} to add, {} to change, {} to destroy.\n",
            self.summary.add, self.summary.change, self.summary.destroy
        ));
        out
    }
}

/// The outbound rules sfuctl adds where the provider needs them (DigitalOcean blocks all egress without them).
pub fn outbound_line(spec: &Spec) -> Option<String> {
    (spec.provider.kind == ProviderKind::Digitalocean)
        .then(|| "outbound  tcp, udp, icmp   all ports to anywhere (without these a DigitalOcean firewall blocks all egress)".to_string())
}

/// A server to create, with its size, image and region.
fn server_change(spec: &Spec, name: &str) -> Change {
    let data = ProviderData::get(spec.provider.kind);
    let size = spec.provider.size.clone().or(data.defaults.size.clone()).unwrap_or_default();
    let image = spec.provider.image.clone().or(data.defaults.image.clone()).unwrap_or_else(|| "newest Ubuntu 24.04 AMI".into());
    let region = spec.provider.region.clone().unwrap_or_else(|| "region from AWS_REGION or ~/.aws/config".into());
    Change {
        action: Action::Create,
        kind: "server",
        name: name.to_string(),
        host: None,
        details: vec![format!("{size}, {image}, {region}, tag sfuctl:{}, public address known after create", spec.name)],
    }
}

/// One line per cloud rule: `inbound   udp 40000-41000  from 0.0.0.0/0, ::/0   media (RTP/RTCP)`.
pub fn rule_lines(rules: &[CloudRule]) -> Vec<String> {
    rules
        .iter()
        .map(|r| {
            let sources: Vec<String> = r.sources.iter().map(|s| s.to_string()).collect();
            format!("inbound   {:<4} {:<12} from {:<28} {}", r.protocol, r.ports.to_string(), sources.join(", "), r.purposes.join(", "))
        })
        .collect()
}

/// What one host gets besides its files: the host firewall table and the service.
fn host_changes(spec: &Spec, manifest: &Manifest, host: &HostTarget) -> Vec<Change> {
    let layout = Layout::of(spec);
    let mut out = Vec::new();
    let host_name = Some(host.name.clone());
    if spec.host_firewall {
        let mut details = vec![format!("nftables table inet {} (policy drop; the host's other tables are left alone)", nft_table(spec))];
        details.extend(rule_lines(&manifest.cloud_rules()));
        out.push(Change { action: Action::Create, kind: "host_firewall", name: nft_table(spec), host: host_name.clone(), details });
    }
    let mut details: Vec<String> =
        file_plan(spec).into_iter().map(|(_, path, mode)| format!("file      {path} ({mode:04o})")).collect();
    details.insert(0, format!("{} server, announcing {}; artifact into {}", spec.sfu.kind.as_str(), host.address, layout.app));
    out.push(Change { action: Action::Create, kind: "service", name: service_name(spec), host: host_name, details });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offline_plan_for_a_cloud_spec_creates_key_firewall_servers_and_services() {
        let spec = Spec::parse("name: t\nprovider: { kind: digitalocean, region: fra1, count: 2 }\nsfu: { kind: janus, rtc_ports: 40000-41000 }\n").unwrap();
        let plan = Plan::against_nothing(&spec, std::path::Path::new("."), vec![]);
        let kinds: Vec<&str> = plan.resources.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["ssh_key", "firewall", "server", "server", "host_firewall", "service", "host_firewall", "service"]);
        assert_eq!(plan.summary.add, 8);
        assert_eq!(plan.firewall_rules[1].ports, "40000-41000");
        assert_eq!(plan.files.len(), 14);
        assert!(plan.to_text().contains("Plan: 8 to add, 0 to change, 0 to destroy."));
    }
}
