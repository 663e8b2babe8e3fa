//! The difference between a spec and what exists, and the same difference as plan entries. The offline plan is
//! this diff against an empty [`Current`]: there is one way to decide what `up` would do.

use std::path::Path;

use crate::engine::refresh::{Current, public_key_path};
use crate::owner::Owner;
use crate::plan::{Action, Change, rule_lines};
use crate::provider::catalog::{KeyHandling, ProviderData};
use crate::provider::{RuleDiff, Server};
use crate::spec::Spec;

/// What the firewall needs.
#[derive(Clone, Debug)]
pub enum FirewallChange {
    /// It does not exist.
    Create,
    /// Its rules differ from the manifest (or its outbound rules are missing).
    Update(RuleDiff),
    /// It matches, or the provider has no cloud firewall.
    Keep,
}

/// The difference between the spec and what exists.
#[derive(Clone, Debug)]
pub struct Diff {
    /// Whether the SSH key must be registered.
    pub create_key: bool,
    /// What the firewall needs.
    pub firewall: FirewallChange,
    /// Servers that exist and are wanted.
    pub keep: Vec<Server>,
    /// Indices of servers to create.
    pub create: Vec<u32>,
    /// Servers to delete (beyond `count`, or not named like sfuctl's): asked first.
    pub delete: Vec<Server>,
    /// Second servers of one name (two runs created `sfuctl-<name>-1` at once): the lowest ID is kept, these go
    /// without asking (sfuctl's own copies of a server it keeps).
    pub duplicates: Vec<Server>,
}

impl Diff {
    /// Compares a spec with what exists. For existing hosts every listed host is kept: nothing is created or
    /// deleted through an API.
    pub fn new(spec: &Spec, data: &ProviderData, owner: &Owner, current: &Current) -> Self {
        if !data.creates_servers() {
            return Self { create_key: false, firewall: FirewallChange::Keep, keep: current.servers.clone(), create: vec![], delete: vec![], duplicates: vec![] };
        }
        let count = spec.provider.count.unwrap_or(1);
        let wanted = spec.manifest().cloud_rules();
        let firewall = match &current.firewall {
            _ if !data.has_firewall() => FirewallChange::Keep,
            None => FirewallChange::Create,
            Some(fw) => {
                // Egress blocked is a change to make whatever the provider's mechanism (DigitalOcean's missing
                // outbound rules, an AWS group without egress, a Linode outbound policy set to DROP): every
                // provider reads `outbound_ok` from its own firewall, and its `put_firewall` restores it.
                let diff = fw.diff(&wanted);
                if diff.is_empty() && fw.outbound_ok { FirewallChange::Keep } else { FirewallChange::Update(diff) }
            }
        };
        let duplicates = crate::engine::refresh::duplicates(owner, &current.servers);
        let (mut keep, mut delete) = (Vec::new(), Vec::new());
        for server in current.servers.iter().filter(|s| !duplicates.contains(s)) {
            match owner.server_index(&server.name) {
                Some(i) if i <= count => keep.push(server.clone()),
                _ => delete.push(server.clone()),
            }
        }
        let create = (1..=count).filter(|i| !keep.iter().any(|s| owner.server_index(&s.name) == Some(*i))).collect();
        let create_key = data.ssh_key == KeyHandling::Register && current.key.is_none();
        Self { create_key, firewall, keep, create, delete, duplicates }
    }

    /// Whether anything in the cloud would change.
    pub fn is_empty(&self) -> bool {
        !self.create_key && matches!(self.firewall, FirewallChange::Keep) && self.create.is_empty() && self.delete.is_empty() && self.duplicates.is_empty()
    }

    /// Whether cloud resources would be created or destroyed (a server, the firewall, the SSH key): what `up` asks
    /// about first. Changing a firewall's rules and removing sfuctl's own duplicates of a server it keeps are not.
    pub fn creates_or_destroys(&self) -> bool {
        self.create_key || matches!(self.firewall, FirewallChange::Create) || !self.create.is_empty() || !self.delete.is_empty()
    }

    /// The cloud changes and, for every server to be created, what it will get there: what `plan` shows, and what
    /// `up` shows before asking.
    pub fn changes_with_new_hosts(&self, spec: &Spec, data: &ProviderData, owner: &Owner, base_dir: &Path) -> Vec<Change> {
        let mut out = self.changes(spec, data, owner, base_dir);
        for i in &self.create {
            let host = crate::render::HostTarget::new(owner.server_name(*i), "(known after create)");
            out.extend(crate::plan::host_changes(spec, &spec.manifest(), &host));
        }
        out
    }

    /// The cloud changes as plan entries, in the order `up` makes them.
    pub fn changes(&self, spec: &Spec, data: &ProviderData, owner: &Owner, base_dir: &Path) -> Vec<Change> {
        let mut out = Vec::new();
        let change = |action, kind, name: String, details: Vec<String>| Change { action, kind, name, host: None, details };
        if self.create_key {
            let from = public_key_path(spec, base_dir);
            out.push(change(
                Action::Create,
                "ssh_key",
                owner.ssh_key_name(),
                vec![format!("from {}  (an existing key with the same fingerprint is reused)", from.display())],
            ));
        }
        match &self.firewall {
            FirewallChange::Create => {
                let mut details = vec![data.firewall_description(owner)];
                details.extend(rule_lines(&spec.manifest().cloud_rules()));
                details.extend(data.outbound_line());
                out.push(change(Action::Create, "firewall", owner.firewall_name(), details));
            }
            FirewallChange::Update(diff) => {
                let mut details: Vec<String> = diff.missing.iter().map(|r| format!("+ inbound {r}")).collect();
                details.extend(diff.extra.iter().map(|r| format!("- inbound {r}")));
                details.extend(diff.unknown.iter().map(|r| format!("- inbound {r} (not in the manifest)")));
                if details.is_empty() {
                    details.push("+ outbound: allow all traffic".into());
                }
                out.push(change(Action::Update, "firewall", owner.firewall_name(), details));
            }
            FirewallChange::Keep => {}
        }
        for i in &self.create {
            out.push(change(Action::Create, "server", owner.server_name(*i), vec![server_details(spec, data, owner)]));
        }
        for s in &self.delete {
            let addr = s.public_ipv4.map(|a| a.to_string()).unwrap_or_else(|| "no address".into());
            out.push(change(Action::Delete, "server", s.name.clone(), vec![format!("id {}, {addr}", s.id)]));
        }
        for s in &self.duplicates {
            let addr = s.public_ipv4.map(|a| a.to_string()).unwrap_or_else(|| "no address".into());
            out.push(change(Action::Delete, "server", s.name.clone(), vec![format!("id {}, {addr}: a duplicate (the lowest ID of that name is kept)", s.id)]));
        }
        out
    }
}

/// A new server's size, image and region, as the plan shows them.
fn server_details(spec: &Spec, data: &ProviderData, owner: &Owner) -> String {
    let size = spec.provider.size.clone().or(data.defaults.size.clone()).unwrap_or_default();
    let image = spec.provider.image.clone().or(data.defaults.image.clone()).unwrap_or_else(|| "newest Ubuntu 24.04 image".into());
    let region = spec.provider.region.clone().unwrap_or_else(|| "region from the provider's configuration".into());
    format!("{size}, {image}, {region}, tag {}, public address known after create", owner.tag())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::provider::{ServerId, ServerStatus};

    fn spec(provider: &str) -> Spec {
        Spec::parse(&format!("name: t\nprovider: {provider}\nsfu: {{ kind: janus, rtc_ports: 40000-41000 }}\n")).unwrap()
    }

    fn server(name: &str) -> Server {
        Server { id: ServerId(name.into()), name: name.into(), status: ServerStatus::Running, public_ipv4: None, public_ipv6: None, tags: vec![], region: None }
    }

    #[test]
    fn against_nothing_everything_is_created() {
        let s = spec("{ kind: digitalocean, region: fra1, count: 2 }");
        let data = ProviderData::get(s.provider.kind);
        let owner = Owner::new("t");
        let diff = Diff::new(&s, data, &owner, &Current::default());
        assert!(diff.create_key && matches!(diff.firewall, FirewallChange::Create));
        assert_eq!(diff.create, [1, 2]);
        let kinds: Vec<&str> = diff.changes(&s, data, &owner, Path::new(".")).iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["ssh_key", "firewall", "server", "server"]);
    }

    #[test]
    fn extra_and_foreign_names_are_deleted_and_gaps_filled() {
        let s = spec("{ kind: digitalocean, region: fra1, count: 2 }");
        let data = ProviderData::get(s.provider.kind);
        let owner = Owner::new("t");
        let current = Current { servers: vec![server("sfuctl-t-2"), server("sfuctl-t-3"), server("sfuctl-t-x")], ..Current::default() };
        let diff = Diff::new(&s, data, &owner, &current);
        assert_eq!(diff.create, [1]);
        assert_eq!(diff.keep.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["sfuctl-t-2"]);
        assert_eq!(diff.delete.len(), 2);
    }

    #[test]
    fn existing_hosts_are_kept_and_nothing_is_made() {
        let s = spec("{ kind: ssh, hosts: [{ name: a, address: 203.0.113.10 }] }");
        let data = ProviderData::get(s.provider.kind);
        let owner = Owner::new("t");
        let current = Current { servers: vec![server("a")], ..Current::default() };
        let diff = Diff::new(&s, data, &owner, &current);
        assert!(diff.is_empty());
        assert_eq!(diff.keep.len(), 1);
        assert!(Diff::new(&s, data, &owner, &Current::default()).changes(&s, data, &owner, Path::new(".")).is_empty());
    }

    #[test]
    fn the_offline_plan_is_the_diff_against_nothing_plus_every_host() {
        use crate::plan::{Plan, host_changes};
        use crate::render::host_targets;
        let spec = Spec::parse("name: t\nprovider: { kind: digitalocean, region: fra1, count: 2 }\nsfu: { kind: janus, rtc_ports: 40000-41000 }\n").unwrap();
        let data = ProviderData::get(spec.provider.kind);
        let owner = Owner::new("t");
        let diff = Diff::new(&spec, data, &owner, &Current::default());
        let mut resources = diff.changes(&spec, data, &owner, Path::new("."));
        for host in host_targets(&spec, "(known after create)") {
            resources.extend(host_changes(&spec, &spec.manifest(), &host));
        }
        let plan = Plan::new(&spec, vec![], resources, false);
        let kinds: Vec<&str> = plan.resources.iter().map(|c| c.kind).collect();
        assert_eq!(kinds, ["ssh_key", "firewall", "server", "server", "host_firewall", "service", "host_firewall", "service"]);
        assert_eq!(plan.summary.add, 8);
        assert_eq!(plan.firewall_rules[1].ports, "40000-41000");
        assert_eq!(plan.files.len(), 22);
        assert!(plan.to_text().contains("Plan: 8 to add, 0 to change, 0 to destroy."));
        assert!(plan.resources[1].details[0].contains("DigitalOcean cloud firewall, attached by tag sfuctl:t"), "{:?}", plan.resources[1].details);
    }
}
