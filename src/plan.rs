//! The plan: what `up` would create, change or destroy, printed like Terraform (`+ create`, `~ update`,
//! `- delete`) or as JSON.
//!
//! What changes comes from the engine's diff (cloud resources) and from inspecting hosts (what each one has);
//! this module only holds the result and prints it. Without credentials the diff is made against an empty
//! account, and the plan says so.

use serde::Serialize;

use crate::ports::{CloudRule, Manifest};
use crate::render::{HostTarget, Layout, file_plan, host_targets, nft_table, service_name};
use crate::spec::Spec;

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
    /// A plan from its changes: the cloud's (from the engine's diff, which against an empty account is "create
    /// everything") followed by each host's. `refreshed` says whether what exists was read from the provider.
    pub fn new(spec: &Spec, notes: Vec<String>, resources: Vec<Change>, refreshed: bool) -> Self {
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

/// Everything one host gets from scratch: the host firewall table and the service with its files.
pub fn host_changes(spec: &Spec, manifest: &Manifest, host: &HostTarget) -> Vec<Change> {
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
    details.insert(0, format!("{} server, announcing {}; {}", spec.sfu.kind.as_str(), host.address, server_source(spec, &layout)));
    out.push(Change { action: Action::Create, kind: "service", name: service_name(spec), host: host_name, details });
    out
}

/// Where the server's program comes from on a new host, as `up` really gets it: the spec's artifact, unpacked
/// into the app directory; the kind's distribution packages when there is no artifact (Janus, coturn); or, for a
/// kind that installs nothing, what is already on the host (`up` checks the start command's program is there).
fn server_source(spec: &Spec, layout: &Layout) -> String {
    if spec.sfu.artifact.is_some() {
        return format!("artifact into {}", layout.app);
    }
    match spec.sfu.kind.descriptor().install.packages.as_slice() {
        [] => "no artifact: its program must already be on the host".to_string(),
        [one] => format!("{} from the distribution's package `{one}`", spec.sfu.kind.as_str()),
        many => format!("{} from the distribution's packages {}", spec.sfu.kind.as_str(), many.iter().map(|p| format!("`{p}`")).collect::<Vec<_>>().join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service_line(sfu: &str) -> String {
        let spec = Spec::parse(&format!("name: t\nprovider: {{ kind: ssh, hosts: [{{ name: a, address: 203.0.113.5 }}] }}\nsfu: {sfu}\n")).unwrap();
        let host = HostTarget::new("a", "203.0.113.5");
        let changes = host_changes(&spec, &spec.manifest(), &host);
        changes.iter().find(|c| c.kind == "service").unwrap().details[0].clone()
    }

    #[test]
    fn the_plan_says_where_the_server_comes_from() {
        assert_eq!(service_line("{ kind: janus, rtc_ports: 20000-20999 }"), "janus server, announcing 203.0.113.5; janus from the distribution's package `janus`");
        assert_eq!(service_line("{ kind: coturn, rtc_ports: 40000-40999 }"), "coturn server, announcing 203.0.113.5; coturn from the distribution's package `coturn`");
        assert_eq!(service_line("{ kind: coturn, rtc_ports: 40000-40999, artifact: ./coturn.tar.gz }"), "coturn server, announcing 203.0.113.5; artifact into /opt/sfuctl/t/app");
        assert_eq!(service_line("{ kind: livekit, rtc_ports: 50000-50999 }"), "livekit server, announcing 203.0.113.5; no artifact: its program must already be on the host");
    }
}
