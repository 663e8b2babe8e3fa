//! The cloud engine every provider shares: refresh what exists (found by the owner tag), diff it against the
//! spec, apply the difference in a safe order, wait with timeouts, and hand the servers to the SSH deploy path.
//!
//! Providers translate; this module decides. Order of `up`: SSH key, firewall (so no server is ever exposed
//! without it), servers (created concurrently, each ID saved the moment it exists), wait for every server to run
//! with a public IPv4, wait for the firewall to be applied, wait for SSH, then deploy. `down` goes the other way
//! and keeps going past errors.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::deploy::Deployment;
use crate::error::UserError;
use crate::http::RetryPolicy;
use crate::plan::{Action, Change};
use crate::provider::digitalocean::DigitalOcean;
use crate::provider::{Firewall, FirewallRequest, Owner, Provider, RuleDiff, Server, ServerRequest, SshKey};
use crate::providers::ProviderData;
use crate::render::{HostTarget, PLACEHOLDER_ADDRESS, Renderer, host_targets};
use crate::secret::Secret;
use crate::spec::{ProviderKind, Spec, resolve_path};
use crate::wait::{self, Check};

/// How long a new server may take to run with a public address.
const SERVER_TIMEOUT: Duration = Duration::from_secs(600);
/// How long a firewall may take to be applied.
const FIREWALL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a new server's sshd may take to answer.
const SSH_TIMEOUT: Duration = Duration::from_secs(300);

/// The provider for a spec, when its credentials are set; `None` without credentials.
pub fn provider_for(spec: &Spec) -> Result<Option<Arc<dyn Provider>>> {
    let data = ProviderData::get(spec.provider.kind);
    if data.credentials_found().is_none() {
        return Ok(None);
    }
    match spec.provider.kind {
        ProviderKind::Digitalocean => Ok(Some(Arc::new(DigitalOcean::from_env(RetryPolicy::default())?))),
        ProviderKind::Aws => Ok(Some(Arc::new(crate::provider::aws::Aws::from_spec(spec, RetryPolicy::default())?))),
        ProviderKind::Ssh => Ok(None),
        other => Err(UserError::input(format!("provider.kind `{}` cannot be deployed by this build yet", other.as_str()))
            .hint("`sfuctl plan` and `sfuctl render` work for it; `up` works for digitalocean, aws and ssh")
            .into()),
    }
}

/// The provider for a spec; missing credentials are bad input (exit 2).
pub fn require_provider(spec: &Spec) -> Result<Arc<dyn Provider>> {
    provider_for(spec)?.ok_or_else(|| {
        let data = ProviderData::get(spec.provider.kind);
        let vars: Vec<String> = data.credentials.env.iter().map(|v| format!("${v}")).collect();
        UserError::input(format!("no {} credentials found ({} unset)", data.title, vars.join(", ")))
            .hint(format!("export {}=<your API token>", data.credentials.env.first().map_or("the token", String::as_str)))
            .into()
    })
}

/// The public key line to register: `ssh.public_key`, else the private key's path + `.pub`, else
/// `~/.ssh/id_ed25519.pub`.
pub fn public_key(spec: &Spec, base_dir: &Path) -> Result<String> {
    let raw = spec.ssh.public_key.clone().unwrap_or_else(|| format!("{}.pub", spec.ssh.private_key.as_deref().unwrap_or("~/.ssh/id_ed25519")));
    let path = resolve_path(&raw, base_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        UserError::input(format!("cannot read the SSH public key `{}`", path.display()))
            .caused_by(e)
            .hint("cloud hosts are created with your public key: set `ssh.public_key`, or put it next to the private key as `<key>.pub`")
    })?;
    Ok(text.trim().to_string())
}

/// What exists for a deployment.
#[derive(Clone, Debug, Default)]
pub struct Current {
    /// Servers carrying the owner tag, sorted by name.
    pub servers: Vec<Server>,
    /// The firewall `sfuctl-<name>`, when it exists.
    pub firewall: Option<Firewall>,
    /// The registered SSH key with the spec's fingerprint, when there is one.
    pub key: Option<SshKey>,
}

/// Reads what exists: servers by tag, the firewall by name, the key by fingerprint. Reads only.
pub async fn refresh(provider: &dyn Provider, owner: &Owner, public_key: Option<&str>) -> Result<Current> {
    let mut servers = provider.list_servers(owner).await?;
    servers.sort_by_key(|s| (index_of(owner, &s.name).unwrap_or(u32::MAX), s.name.clone()));
    let firewall = provider.list_firewalls(owner).await?.into_iter().find(|f| f.name == owner.firewall_name());
    let key = match public_key {
        Some(k) => provider.find_ssh_key(k).await?,
        None => None,
    };
    Ok(Current { servers, firewall, key })
}

/// The index `n` of a server named `sfuctl-<name>-<n>`.
fn index_of(owner: &Owner, name: &str) -> Option<u32> {
    name.strip_prefix(&format!("{}-", owner.prefix()))?.parse().ok()
}

/// What the firewall needs.
#[derive(Clone, Debug)]
pub enum FirewallChange {
    /// It does not exist.
    Create,
    /// Its rules differ from the manifest (or its outbound rules are missing).
    Update(RuleDiff),
    /// It matches.
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
    /// Servers to delete (beyond `count`, or not named like sfuctl's).
    pub delete: Vec<Server>,
}

impl Diff {
    /// Compares a spec with what exists.
    pub fn new(spec: &Spec, owner: &Owner, current: &Current) -> Self {
        let count = spec.provider.count.unwrap_or(1);
        let wanted = spec.manifest().cloud_rules();
        let firewall = match &current.firewall {
            None => FirewallChange::Create,
            Some(fw) => {
                let diff = fw.diff(&wanted);
                if diff.is_empty() && fw.outbound_ok { FirewallChange::Keep } else { FirewallChange::Update(diff) }
            }
        };
        let (mut keep, mut delete) = (Vec::new(), Vec::new());
        for server in &current.servers {
            match index_of(owner, &server.name) {
                Some(i) if (1..=count).contains(&i) && !keep.iter().any(|k: &Server| k.name == server.name) => keep.push(server.clone()),
                _ => delete.push(server.clone()),
            }
        }
        let create = (1..=count).filter(|i| !keep.iter().any(|s| index_of(owner, &s.name) == Some(*i))).collect();
        Self { create_key: current.key.is_none(), firewall, keep, create, delete }
    }

    /// Whether anything in the cloud would change.
    pub fn is_empty(&self) -> bool {
        !self.create_key && matches!(self.firewall, FirewallChange::Keep) && self.create.is_empty() && self.delete.is_empty()
    }

    /// The changes as plan entries, in the order `up` makes them.
    pub fn changes(&self, spec: &Spec, owner: &Owner) -> Vec<Change> {
        let data = ProviderData::get(spec.provider.kind);
        let mut out = Vec::new();
        let change = |action, kind, name: String, details: Vec<String>| Change { action, kind, name, host: None, details };
        if self.create_key {
            out.push(change(Action::Create, "ssh_key", owner.ssh_key_name(), vec!["your public key is not registered yet".into()]));
        }
        match &self.firewall {
            FirewallChange::Create => {
                let attached = match spec.provider.kind {
                    ProviderKind::Aws => format!("security group in the default VPC, tagged {}, given to each instance at launch", owner.tag()),
                    _ => format!("cloud firewall, attached by tag {}", owner.tag()),
                };
                let mut details = vec![format!("{} {attached}", data.title)];
                details.extend(crate::plan::rule_lines(&spec.manifest().cloud_rules()));
                details.extend(crate::plan::outbound_line(spec));
                out.push(change(Action::Create, "firewall", owner.firewall_name(), details));
            }
            FirewallChange::Update(diff) => {
                let mut details: Vec<String> = diff.missing.iter().map(|r| format!("+ inbound {r}")).collect();
                details.extend(diff.extra.iter().map(|r| format!("- inbound {r}")));
                details.extend(diff.unknown.iter().map(|r| format!("- inbound {r} (not in the manifest)")));
                if details.is_empty() {
                    details.push("+ outbound allow-all rules".into());
                }
                out.push(change(Action::Update, "firewall", owner.firewall_name(), details));
            }
            FirewallChange::Keep => {}
        }
        for i in &self.create {
            out.push(change(Action::Create, "server", owner.server_name(*i), vec![format!("tag {}, public address known after create", owner.tag())]));
        }
        for s in &self.delete {
            let addr = s.public_ipv4.map(|a| a.to_string()).unwrap_or_else(|| "no address".into());
            out.push(change(Action::Delete, "server", s.name.clone(), vec![format!("id {}, {addr}", s.id)]));
        }
        out
    }
}

/// What `up` did in the cloud.
#[derive(Clone, Debug, Default, Serialize)]
pub struct CloudReport {
    /// The key was registered now.
    pub key_created: bool,
    /// `created`, `updated` or `unchanged`.
    pub firewall: &'static str,
    /// Servers created now.
    pub servers_created: Vec<String>,
    /// Servers deleted now.
    pub servers_deleted: Vec<String>,
    /// API requests made (all / mutating).
    pub requests: u64,
    /// Mutating API requests made.
    pub mutating_requests: u64,
}

/// `up` in the cloud: makes the key, firewall and servers the spec wants, deletes extra servers (`confirm` is
/// asked first), waits until everything is ready and returns the hosts to deploy to.
pub async fn apply(
    dep: &Arc<Deployment>,
    provider: Arc<dyn Provider>,
    renderer: &Renderer,
    secret: &Secret,
    confirm: impl FnOnce(&[Server]) -> Result<()>,
) -> Result<(Vec<HostTarget>, CloudReport)> {
    let spec = &dep.spec;
    let owner = Owner::new(&spec.name);
    let public_key = public_key(spec, &dep.base_dir)?;
    let current = refresh(provider.as_ref(), &owner, Some(&public_key)).await?;
    let diff = Diff::new(spec, &owner, &current);
    if !diff.delete.is_empty() {
        confirm(&diff.delete)?;
    }
    let mut report = CloudReport { firewall: "unchanged", ..CloudReport::default() };

    let key = match current.key {
        Some(key) => key,
        None => {
            let (key, created) = provider.ensure_ssh_key(&owner.ssh_key_name(), &public_key).await?;
            report.key_created = created;
            if created {
                eprintln!("created SSH key {} ({})", owner.ssh_key_name(), key.fingerprint);
            }
            dep.with_state(|s| {
                s.state.resources.insert("ssh_key".into(), key.id.0.clone());
                s.save()
            })?;
            key
        }
    };

    let firewall = match (&diff.firewall, &current.firewall) {
        (FirewallChange::Keep, Some(fw)) => fw.clone(),
        (_, existing) => {
            let fw = provider.put_firewall(&FirewallRequest::for_manifest(&owner, &dep.manifest), existing.as_ref()).await?;
            report.firewall = if existing.is_some() { "updated" } else { "created" };
            eprintln!("{} firewall {} ({})", report.firewall, fw.name, fw.id);
            dep.with_state(|s| {
                s.state.resources.insert("firewall".into(), fw.id.0.clone());
                s.save()
            })?;
            fw
        }
    };

    // Create the missing servers concurrently; each ID is saved the moment the API returns it.
    let mut created = Vec::new();
    let mut tasks = tokio::task::JoinSet::new();
    for &i in &diff.create {
        let name = owner.server_name(i);
        let host = HostTarget { name: name.clone(), address: PLACEHOLDER_ADDRESS.into(), address_v6: None, listen_ip: "0.0.0.0".into() };
        let user_data = renderer.render_host(spec, &dep.base_dir, &host, secret)?.cloud_init;
        let mut req = ServerRequest::for_spec(spec, i, vec![key.id.clone()], user_data)?;
        req.firewall_id = Some(firewall.id.clone());
        let (provider, dep) = (Arc::clone(&provider), Arc::clone(dep));
        tasks.spawn(async move {
            let server = provider.create_server(&req).await?;
            eprintln!("created server {} ({})", server.name, server.id);
            dep.with_state(|s| {
                s.state.resources.insert(format!("server:{}", server.name), server.id.0.clone());
                s.save()
            })?;
            Ok::<Server, anyhow::Error>(server)
        });
    }
    let mut failures = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(server) => created.push(server),
            Err(e) => failures.push(e),
        }
    }
    report.servers_created = created.iter().map(|s| s.name.clone()).collect();
    if let Some(first) = failures.into_iter().next() {
        return Err(first.context("creating servers failed; what was created is tagged and saved: run `up` again to continue, or `down` to remove it"));
    }

    for server in &diff.delete {
        provider.delete_server(&server.id).await?;
        eprintln!("deleted server {} ({})", server.name, server.id);
        dep.with_state(|s| {
            s.state.resources.remove(&format!("server:{}", server.name));
            s.state.hosts.remove(&server.name);
            s.save()
        })?;
        report.servers_deleted.push(server.name.clone());
    }

    // Wait for every wanted server to run with a public IPv4: one list by tag per round, however many servers
    // there are (polling each one would spend the API's rate limit ten times as fast for ten servers).
    let mut servers: Vec<Server> = diff.keep.iter().chain(created.iter()).cloned().collect();
    servers.sort_by_key(|s| index_of(&owner, &s.name));
    if servers.iter().any(|s| !s.is_up()) {
        let wanted: Vec<_> = servers.iter().map(|s| s.id.clone()).collect();
        let what = if wanted.len() == 1 { format!("server {} to run with a public IPv4", servers[0].name) } else { format!("{} servers to run with a public IPv4", wanted.len()) };
        servers = wait::until(&what, SERVER_TIMEOUT, Duration::from_secs(1), || {
            let (provider, owner, wanted) = (Arc::clone(&provider), owner.clone(), wanted.clone());
            async move {
                let listed = provider.list_servers(&owner).await?;
                let mut found = Vec::new();
                for id in &wanted {
                    match listed.iter().find(|s| &s.id == id) {
                        Some(s) if s.is_up() => found.push(s.clone()),
                        Some(s) => return Ok(Check::NotYet(format!("{} is {}", s.name, s.status))),
                        // Just created, a list may not show it yet (eventual consistency); gone is an error.
                        None => match provider.get_server(id).await? {
                            Some(s) => return Ok(Check::NotYet(format!("{} is {} (not listed yet)", s.name, s.status))),
                            None => return Err(UserError::failed(format!("server {id} disappeared while sfuctl waited for it")).into()),
                        },
                    }
                }
                Ok(Check::Done(found))
            }
        })
        .await?;
    }

    if !firewall.ready {
        let id = firewall.id.clone();
        wait::until(&format!("firewall {} to be applied", firewall.name), FIREWALL_TIMEOUT, Duration::from_secs(1), || {
            let (provider, id) = (Arc::clone(&provider), id.clone());
            async move {
                Ok(match provider.get_firewall(&id).await? {
                    Some(fw) if fw.ready => Check::Done(()),
                    Some(fw) => Check::NotYet(format!("status {}", fw.status)),
                    None => return Err(UserError::failed(format!("firewall {id} disappeared while sfuctl waited for it")).into()),
                })
            }
        })
        .await?;
    }

    let hosts = targets(spec, &servers);
    let mut ssh_waits = tokio::task::JoinSet::new();
    for host in hosts.clone() {
        let port = spec.ssh.port();
        ssh_waits.spawn(async move { wait_for_ssh(&host, port).await });
    }
    while let Some(joined) = ssh_waits.join_next().await {
        joined.map_err(anyhow::Error::from).and_then(|r| r)?;
    }
    let stats = provider.requests();
    report.requests = stats.total;
    report.mutating_requests = stats.mutating;
    Ok((hosts, report))
}

/// Deploy targets for servers: their public IPv4 (and IPv6 when the spec asks for it) is what the SFU announces.
pub fn targets(spec: &Spec, servers: &[Server]) -> Vec<HostTarget> {
    servers
        .iter()
        .filter_map(|s| {
            let v4 = s.public_ipv4?;
            Some(HostTarget {
                name: s.name.clone(),
                address: v4.to_string(),
                address_v6: spec.provider.ipv6.then_some(s.public_ipv6).flatten().map(|a| a.to_string()),
                listen_ip: "0.0.0.0".into(),
            })
        })
        .collect()
}

/// Waits until the host's SSH port accepts TCP connections (a new server's sshd starts after it reports running).
async fn wait_for_ssh(host: &HostTarget, port: u16) -> Result<()> {
    let addr: SocketAddr = SocketAddr::new(host.address.parse().map_err(|_| UserError::failed(format!("`{}` is not an IP address", host.address)))?, port);
    wait::until(&format!("SSH on {} ({addr})", host.name), SSH_TIMEOUT, Duration::from_millis(500), || async move {
        Ok(match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Check::Done(()),
            Ok(Err(e)) => Check::NotYet(e.to_string()),
            Err(_) => Check::NotYet("no answer".into()),
        })
    })
    .await
}

/// What `down` removed, and what it could not.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Teardown {
    /// Resources deleted, as `kind name (id)`.
    pub deleted: Vec<String>,
    /// Resources that could not be deleted, with the reason.
    pub failed: Vec<String>,
}

/// `down` in the cloud: deletes every server with the owner tag, the firewall, and the SSH key when sfuctl
/// registered it (named `sfuctl-<name>`; a key you registered yourself is never touched). Keeps going past
/// errors and reports them all.
pub async fn destroy(provider: Arc<dyn Provider>, owner: &Owner, current: &Current) -> Teardown {
    let mut out = Teardown::default();
    let mut tasks = tokio::task::JoinSet::new();
    for server in current.servers.clone() {
        let provider = Arc::clone(&provider);
        tasks.spawn(async move {
            let r = provider.delete_server(&server.id).await;
            if r.is_ok() {
                // Wait until it is really gone, so the firewall and tag can go after it.
                let _ = wait::until(&format!("server {} to be deleted", server.name), SERVER_TIMEOUT, Duration::from_secs(1), || {
                    let (provider, id) = (Arc::clone(&provider), server.id.clone());
                    async move { Ok(if provider.get_server(&id).await?.is_none() { Check::Done(()) } else { Check::NotYet("still there".into()) }) }
                })
                .await;
            }
            (server, r)
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok((s, Ok(()))) => out.deleted.push(format!("server {} ({})", s.name, s.id)),
            Ok((s, Err(e))) => out.failed.push(format!("server {} ({}): {e:#}", s.name, s.id)),
            Err(e) => out.failed.push(format!("a delete task stopped: {e}")),
        }
    }
    if let Some(fw) = &current.firewall {
        match provider.delete_firewall(&fw.id).await {
            Ok(()) => out.deleted.push(format!("firewall {} ({})", fw.name, fw.id)),
            Err(e) => out.failed.push(format!("firewall {} ({}): {e:#}", fw.name, fw.id)),
        }
    }
    if let Some(key) = current.key.as_ref().filter(|k| k.name == owner.ssh_key_name()) {
        match provider.delete_ssh_key(&key.id).await {
            Ok(()) => out.deleted.push(format!("ssh key {} ({})", key.name, key.fingerprint)),
            Err(e) => out.failed.push(format!("ssh key {} ({}): {e:#}", key.name, key.fingerprint)),
        }
    }
    if out.failed.is_empty() {
        if let Err(e) = provider.forget_owner(owner).await {
            out.failed.push(format!("tag {}: {e:#}", owner.tag()));
        }
    }
    out
}

/// The hosts of a deployment as they exist now, with what the refresh found on a cloud (`None` for existing
/// hosts, which come from the spec).
pub async fn existing_hosts(spec: &Spec, provider: Option<&dyn Provider>) -> Result<(Vec<HostTarget>, Option<Current>)> {
    match provider {
        Some(p) => {
            let current = refresh(p, &Owner::new(&spec.name), None).await?;
            Ok((targets(spec, &current.servers), Some(current)))
        }
        None => Ok((host_targets(spec, PLACEHOLDER_ADDRESS), None)),
    }
}
