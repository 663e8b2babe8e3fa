//! `up` in the cloud: make what the diff says, in a safe order, saving each ID the moment it exists, then wait
//! until every server runs with a public address, the firewall is applied and SSH answers.
//!
//! Order: SSH key, firewall (so no server is ever exposed without it), servers (created concurrently within the
//! provider's create pacing), deletes of servers the spec no longer wants, then the waits; nothing is created or destroyed before `confirm`
//! accepts the diff.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::deploy::Deployment;
use crate::engine::diff::{Diff, FirewallChange};
use crate::engine::pacing::Gate;
use crate::engine::refresh::{Current, duplicates, not_owned, public_key, refresh_with};
use crate::engine::{Timings, targets, wait_for_ssh};
use crate::error::UserError;
use crate::interrupt;
use crate::http::{RetryPolicy, maybe_applied};
use crate::owner::Owner;
use crate::provider::catalog::{Attach, KeyHandling, ProviderData};
use crate::provider::{Firewall, FirewallRequest, Provider, Server, ServerRequest, SshKeyId, name_taken};
use crate::render::{HostTarget, PLACEHOLDER_ADDRESS, Renderer};
use crate::secret::Secret;
use crate::spec::Spec;
use crate::wait::{self, Check};

/// Attempts at a create whose answer was lost (5xx, timeout), each after looking for what it may have made.
const CREATE_ATTEMPTS: u32 = 3;

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

impl CloudReport {
    /// Whether anything in the cloud changed.
    pub fn changed(&self) -> bool {
        self.key_created || self.firewall != "unchanged" || !self.servers_created.is_empty() || !self.servers_deleted.is_empty()
    }
}

/// A record of something the engine made or removed, saved the moment it happens (the local state is a cache of
/// IDs: losing it loses nothing, but keeping it saves a lookup).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Saved {
    /// The SSH key, by ID.
    Key(String),
    /// The firewall, by ID.
    Firewall(String),
    /// A server, by name and ID.
    Server(String, String),
    /// A server that was deleted, by name.
    ServerGone(String),
}

/// Where [`Saved`] records go.
pub type Ledger = Arc<dyn Fn(Saved) -> Result<()> + Send + Sync>;

/// The ledger that writes into a deployment's local state.
pub fn state_ledger(dep: &Arc<Deployment>) -> Ledger {
    let dep = Arc::clone(dep);
    Arc::new(move |saved| {
        dep.with_state(|s| {
            match saved {
                Saved::Key(id) => s.state.resources.insert("ssh_key".into(), id),
                Saved::Firewall(id) => s.state.resources.insert("firewall".into(), id),
                Saved::Server(name, id) => {
                    s.state.set_server_id(&name, &id);
                    None
                }
                Saved::ServerGone(name) => {
                    s.state.forget_server(&name);
                    None
                }
            };
            s.save()
        })
    })
}

/// `up` in the cloud, then the wait for SSH: returns the hosts to deploy to. For existing hosts this is a
/// refresh that returns the spec's hosts and changes nothing.
pub async fn apply(
    dep: &Arc<Deployment>,
    provider: Arc<dyn Provider>,
    renderer: &Renderer,
    secret: &Secret,
    timings: &Timings,
    confirm: impl FnOnce(&Diff) -> Result<()>,
) -> Result<(Vec<HostTarget>, CloudReport)> {
    let spec = &dep.spec;
    let data = ProviderData::get(spec.provider.kind);
    let public_key = if data.ssh_key == KeyHandling::None { None } else { Some(public_key(spec, &dep.base_dir)?) };
    let saved_ids = dep.with_state(|s| s.state.resources.iter().filter(|(k, _)| k.starts_with("server:")).map(|(_, v)| v.clone()).collect());
    let inputs = Inputs { spec, base_dir: &dep.base_dir, renderer, secret, public_key, timings, ledger: state_ledger(dep), saved_ids };
    let (servers, report) = converge(&provider, &inputs, confirm).await?;
    if data.creates_servers() {
        // Every server's ID in the state (found by tag after a lost state too): host keys are pinned by it.
        dep.with_state(|s| {
            for server in &servers {
                s.state.set_server_id(&server.name, &server.id.0);
            }
            s.save()
        })?;
    }
    let hosts = targets(spec, &servers);
    if data.creates_servers() {
        let mut ssh_waits = tokio::task::JoinSet::new();
        for host in hosts.clone() {
            let (port, timeout) = (spec.ssh.port(), timings.ssh);
            ssh_waits.spawn(async move { wait_for_ssh(&host, port, timeout).await });
        }
        while let Some(joined) = ssh_waits.join_next().await {
            joined.map_err(anyhow::Error::from).and_then(|r| r)?;
        }
    }
    Ok((hosts, report))
}

/// What [`converge`] works from.
pub struct Inputs<'a> {
    /// The spec.
    pub spec: &'a Spec,
    /// The spec's directory.
    pub base_dir: &'a Path,
    /// Renders each new server's cloud-init user-data.
    pub renderer: &'a Renderer,
    /// The shared secret, for the templates.
    pub secret: &'a Secret,
    /// The login key line (`None` where the provider takes no key).
    pub public_key: Option<String>,
    /// How long to wait for things.
    pub timings: &'a Timings,
    /// Where each ID goes the moment it exists.
    pub ledger: Ledger,
    /// Server IDs saved in the local state: a tagged server with one of these IDs is the deployment's whatever
    /// its name (see [`crate::engine::refresh::not_owned`]).
    pub saved_ids: Vec<String>,
}

/// Makes the key, firewall and servers the spec wants, deletes extra servers and waits
/// until every server runs with a public address and the firewall is applied; `confirm` is asked first whenever
/// something would be created or destroyed ([`Diff::creates_or_destroys`]). Returns the servers, in index order.
pub async fn converge(provider: &Arc<dyn Provider>, inputs: &Inputs<'_>, confirm: impl FnOnce(&Diff) -> Result<()>) -> Result<(Vec<Server>, CloudReport)> {
    let spec = inputs.spec;
    let data = ProviderData::get(spec.provider.kind);
    let owner = Owner::new(&spec.name);
    let current = refresh_with(provider.as_ref(), data, &owner, inputs.public_key.as_deref(), &inputs.saved_ids).await?;
    let diff = Diff::new(spec, data, &owner, &current);
    if diff.creates_or_destroys() {
        confirm(&diff)?;
    }
    let mut report = CloudReport { firewall: "unchanged", ..CloudReport::default() };
    if !data.creates_servers() {
        return Ok((diff.keep, report));
    }

    // A region, size or image the cloud does not offer fails here, before the key or the firewall exists.
    if let Some(&first) = diff.create.first() {
        let req = ServerRequest::for_spec(spec, first, Vec::new(), None)?;
        provider.check_choices(&req).await?;
    }
    // Between two steps, Ctrl-C stops the run (every ID made so far is saved): see `crate::interrupt`.
    interrupt::check("before anything was created or changed")?;
    let key_ids = ensure_key(provider.as_ref(), data, &owner, &current, inputs, &mut report).await?;
    interrupt::check("after the SSH key, before the firewall")?;
    let firewall = ensure_firewall(provider.as_ref(), data, &owner, &diff, &current, inputs, &mut report).await?;
    interrupt::check("after the firewall, before creating servers")?;
    let (created, failures) = create_servers(provider, data, inputs, &diff, key_ids.clone(), firewall.as_ref()).await;
    report.servers_created = created.iter().map(|s| s.name.clone()).collect();
    if let Some(first) = failures.into_iter().next() {
        return Err(first.context("creating servers failed; what was created is tagged and saved: run `up` again to continue, or `down` to remove it"));
    }
    interrupt::check("after creating servers, before deleting or waiting for any")?;
    for server in &diff.delete {
        crate::engine::teardown::delete_server(provider.as_ref(), &server.id, &server.name, inputs.timings.busy).await?;
        eprintln!("deleted server {} ({})", server.name, server.id);
        (inputs.ledger)(Saved::ServerGone(server.name.clone()))?;
        report.servers_deleted.push(server.name.clone());
    }
    for server in &diff.duplicates {
        crate::engine::teardown::delete_server(provider.as_ref(), &server.id, &server.name, inputs.timings.busy).await?;
        eprintln!("deleted server {} ({}): a duplicate of that name (the lowest ID is kept)", server.name, server.id);
        report.servers_deleted.push(format!("{} ({})", server.name, server.id));
    }
    // Another run (another machine, or one without the lock) may have made the same firewall at the same time:
    // every run keeps the lowest ID of the name and deletes the others.
    let firewall = match firewall {
        Some(fw) if report.firewall == "created" || !current.extra_firewalls.is_empty() => Some(settle_firewall(provider.as_ref(), &owner, fw, inputs).await?),
        other => other,
    };

    let mut servers: Vec<Server> = diff.keep.iter().chain(created.iter()).cloned().collect();
    servers.sort_by_key(|s| owner.server_index(&s.name));
    let recheck = !created.is_empty();
    let servers = wait_until_up(provider, &owner, servers, recheck, inputs).await?;
    // A tag-attached firewall that was ready before is not any more once new servers carry the tag: it applies
    // itself to them (DigitalOcean's pending_changes). Re-read it then, so no server is deployed uncovered; one
    // given at launch covers its server from the start.
    let joined_by_tag = data.firewall.attach == Attach::Tag && !report.servers_created.is_empty();
    if let Some(fw) = firewall.filter(|fw| !fw.ready || joined_by_tag) {
        wait_until_applied(provider, &fw, inputs.timings.firewall).await?;
    }
    if report.key_created
        && let (Some(mine), Some(line)) = (key_ids.first(), inputs.public_key.as_deref())
    {
        settle_key(provider.as_ref(), &owner, mine, line, inputs).await?;
    }
    let stats = provider.requests();
    (report.requests, report.mutating_requests) = (stats.total, stats.mutating);
    Ok((servers, report))
}

/// After this run registered the login key: where names need not be unique (Vultr), another run may have
/// registered the same key under the same name at the same time. The provider's lookup prefers the lowest ID of
/// sfuctl's name; when that is not ours, ours is the duplicate and goes (servers made with it keep their login:
/// a key is copied onto a server at create). Both runs end here after their servers are up, so both see both keys
/// and agree.
async fn settle_key(provider: &dyn Provider, owner: &Owner, mine: &SshKeyId, public_key: &str, inputs: &Inputs<'_>) -> Result<()> {
    let Some(kept) = provider.find_ssh_key(public_key).await? else { return Ok(()) };
    if kept.name == owner.ssh_key_name() && &kept.id != mine {
        provider.delete_ssh_key(mine).await?;
        eprintln!("deleted SSH key {} ({mine}): another run registered it at the same time; the lowest ID is kept", kept.name);
        (inputs.ledger)(Saved::Key(kept.id.0.clone()))?;
    }
    Ok(())
}

/// Registers the login key where the provider keeps keys; returns the IDs to name at create.
async fn ensure_key(provider: &dyn Provider, data: &ProviderData, owner: &Owner, current: &Current, inputs: &Inputs<'_>, report: &mut CloudReport) -> Result<Vec<SshKeyId>> {
    if data.ssh_key != KeyHandling::Register {
        return Ok(Vec::new());
    }
    let key = match (&current.key, inputs.public_key.as_deref()) {
        (Some(key), _) => key.clone(),
        (None, Some(public_key)) => {
            let name = owner.ssh_key_name();
            // A register whose answer was lost: the key found by its fingerprint is the one it made.
            let (key, created) = create_looking_first(
                async || provider.ensure_ssh_key(&name, public_key).await,
                async || Ok(provider.find_ssh_key(public_key).await?.map(|k| (k, true))),
            )
            .await?;
            report.key_created = created;
            if created {
                eprintln!("created SSH key {} ({})", owner.ssh_key_name(), key.fingerprint);
            }
            (inputs.ledger)(Saved::Key(key.id.0.clone()))?;
            key
        }
        (None, None) => return Ok(Vec::new()),
    };
    Ok(vec![key.id])
}

/// Creates the firewall or brings its rules in line, in place.
async fn ensure_firewall(
    provider: &dyn Provider,
    data: &ProviderData,
    owner: &Owner,
    diff: &Diff,
    current: &Current,
    inputs: &Inputs<'_>,
    report: &mut CloudReport,
) -> Result<Option<Firewall>> {
    if !data.has_firewall() {
        return Ok(None);
    }
    match (&diff.firewall, &current.firewall) {
        (FirewallChange::Keep, Some(fw)) => Ok(Some(fw.clone())),
        (_, existing) => {
            let req = FirewallRequest::for_manifest(owner, &inputs.spec.manifest());
            // A create whose answer was lost: the firewall found by its name is the one it made (its rules are
            // brought in line, in case the create stopped half way).
            let fw = create_looking_first(
                async || provider.put_firewall(&req, existing.as_ref()).await,
                async || match provider.list_firewalls(owner).await?.into_iter().find(|f| f.name == owner.firewall_name()) {
                    Some(found) if existing.is_none() => Ok(Some(provider.put_firewall(&req, Some(&found)).await?)),
                    _ => Ok(None),
                },
            )
            .await?;
            report.firewall = if existing.is_some() { "updated" } else { "created" };
            eprintln!("{} firewall {} ({})", report.firewall, fw.name, fw.id);
            (inputs.ledger)(Saved::Firewall(fw.id.0.clone()))?;
            Ok(Some(fw))
        }
    }
}

/// Creates the missing servers concurrently, within the provider's pacing; each ID is saved the moment the API
/// returns it. Returns what was created and every failure.
async fn create_servers(
    provider: &Arc<dyn Provider>,
    data: &ProviderData,
    inputs: &Inputs<'_>,
    diff: &Diff,
    key_ids: Vec<SshKeyId>,
    firewall: Option<&Firewall>,
) -> (Vec<Server>, Vec<anyhow::Error>) {
    let spec = inputs.spec;
    let owner = Owner::new(&spec.name);
    let gate = Arc::new(Gate::new(data.servers.create_pacing));
    let mut tasks = tokio::task::JoinSet::new();
    let mut failures = Vec::new();
    for &i in &diff.create {
        let host = HostTarget::new(owner.server_name(i), PLACEHOLDER_ADDRESS);
        let req = inputs.renderer.render_host(spec, inputs.base_dir, &host, inputs.secret).and_then(|files| {
            let mut req = ServerRequest::for_spec(spec, i, key_ids.clone(), files.cloud_init)?;
            if data.ssh_key == KeyHandling::Inline {
                req.public_key = inputs.public_key.clone();
            }
            if data.firewall.attach == Attach::Launch {
                req.firewall_id = firewall.map(|f| f.id.clone());
            }
            Ok(req)
        });
        let req = match req {
            Ok(req) => req,
            Err(e) => {
                failures.push(e);
                continue;
            }
        };
        let (provider, ledger, gate, owner) = (Arc::clone(provider), Arc::clone(&inputs.ledger), Arc::clone(&gate), owner.clone());
        tasks.spawn(async move {
            let slot = gate.admit().await;
            if let Err(e) = interrupt::check(&format!("before creating server {}", req.name)) {
                gate.finished(slot).await;
                return Err(e);
            }
            let created = create_server(provider.as_ref(), &owner, &req, &RetryPolicy::default()).await;
            gate.finished(slot).await;
            let server = created?;
            eprintln!("created server {} ({})", server.name, server.id);
            ledger(Saved::Server(server.name.clone(), server.id.0.clone()))?;
            Ok::<Server, anyhow::Error>(server)
        });
    }
    let mut created = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(anyhow::Error::from).and_then(|r| r) {
            Ok(server) => created.push(server),
            Err(e) => failures.push(e),
        }
    }
    (created, failures)
}

/// Creates one server. A create whose answer was lost (5xx, timeout: it may have happened) is never simply
/// sent again: after a pause the owner's servers are listed, and one with the wanted name is taken over. A create
/// refused because the name is taken ([`crate::provider::NameTaken`]: another run is creating the same server) is
/// settled the same way: the server of that name is taken over when sfuctl owns it; one it does not own is an error.
pub async fn create_server(provider: &dyn Provider, owner: &Owner, req: &ServerRequest, policy: &RetryPolicy) -> Result<Server> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match provider.create_server(req).await {
            Ok(server) => return Ok(server),
            Err(e) if (maybe_applied(&e) || name_taken(&e)) && attempt < CREATE_ATTEMPTS => {
                tokio::time::sleep(policy.backoff(attempt)).await;
                if let Some(found) = provider.list_servers(owner).await?.into_iter().find(|s| s.name == req.name && not_owned(owner, s, &[]).is_none()) {
                    return Ok(found);
                }
            }
            Err(e) if name_taken(&e) => {
                return Err(UserError::failed(format!("cannot create server {}: {} already has a server of that name that sfuctl does not own", req.name, provider.name()))
                    .caused_by(e)
                    .hint(format!("rename or delete that server, or give the spec another `name`; sfuctl never takes over a server without the tag {}", owner.tag()))
                    .into());
            }
            Err(e) => return Err(e),
        }
    }
}

/// Calls `create`; after a failure that may have been applied all the same (a 5xx, a reset, a timeout: see
/// [`maybe_applied`]) it pauses, looks for what the call made (`find`), and takes that, or calls again: up to
/// [`CREATE_ATTEMPTS`] calls in all. Anything else fails at once.
async fn create_looking_first<T>(mut create: impl AsyncFnMut() -> Result<T>, mut find: impl AsyncFnMut() -> Result<Option<T>>) -> Result<T> {
    let policy = RetryPolicy::default();
    let mut attempt = 0;
    loop {
        attempt += 1;
        match create().await {
            Ok(made) => return Ok(made),
            Err(e) if maybe_applied(&e) && attempt < CREATE_ATTEMPTS => {
                tokio::time::sleep(policy.backoff(attempt)).await;
                if let Some(found) = find().await? {
                    return Ok(found);
                }
            }
            Err(e) => return Err(e),
        }
    }
}

/// The firewall to use after this run created one (or found several): the lowest ID named exactly
/// `sfuctl-<name>`; any other of that name is deleted (two runs that created it at once both end here and agree).
async fn settle_firewall(provider: &dyn Provider, owner: &Owner, mine: Firewall, inputs: &Inputs<'_>) -> Result<Firewall> {
    let mut named: Vec<Firewall> = provider.list_firewalls(owner).await?.into_iter().filter(|f| f.name == owner.firewall_name()).collect();
    if !named.iter().any(|f| f.id == mine.id) {
        named.push(mine.clone());
    }
    named.sort_by(|a, b| (a.id.0.len(), &a.id.0).cmp(&(b.id.0.len(), &b.id.0)));
    let keep = named.remove(0);
    for extra in named {
        crate::engine::teardown::delete_firewall(provider, &extra.id, &extra.name, inputs.timings.busy).await?;
        eprintln!("deleted firewall {} ({}): a duplicate of that name (the lowest ID is kept)", extra.name, extra.id);
    }
    if keep.id != mine.id {
        (inputs.ledger)(Saved::Firewall(keep.id.0.clone()))?;
    }
    Ok(keep)
}

/// Waits for every server to run with a public IPv4: one list by tag per round, however many servers there are
/// (polling each one would spend the API's rate limit ten times as fast for ten servers).
///
/// Servers are followed by name: when another run created the same name at the same time, every run keeps the
/// lowest ID (the same choice on every machine), deletes the others and follows the one kept. `recheck` lists at
/// least once even when every server already looks up (after a create).
async fn wait_until_up(provider: &Arc<dyn Provider>, owner: &Owner, servers: Vec<Server>, recheck: bool, inputs: &Inputs<'_>) -> Result<Vec<Server>> {
    if !recheck && servers.iter().all(Server::is_up) {
        return Ok(servers);
    }
    let wanted: Vec<(String, crate::provider::ServerId)> = servers.iter().map(|s| (s.name.clone(), s.id.clone())).collect();
    let what = if wanted.len() == 1 { format!("server {} to run with a public IPv4", servers[0].name) } else { format!("{} servers to run with a public IPv4", wanted.len()) };
    let gone = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::<String>::new()));
    let (busy, ledger, saved_ids) = (inputs.timings.busy, Arc::clone(&inputs.ledger), inputs.saved_ids.clone());
    let wanted = Arc::new(std::sync::Mutex::new(wanted));
    wait::until(&what, inputs.timings.server, Duration::from_secs(1), || {
        let (provider, owner, wanted, gone, ledger, saved_ids) = (Arc::clone(provider), owner.clone(), Arc::clone(&wanted), Arc::clone(&gone), Arc::clone(&ledger), saved_ids.clone());
        async move {
            let skip = gone.lock().unwrap().clone();
            let listed: Vec<Server> = provider
                .list_servers(&owner)
                .await?
                .into_iter()
                .filter(|s| not_owned(&owner, s, &saved_ids).is_none() && !skip.contains(&s.id.0))
                .collect();
            let names: Vec<String> = wanted.lock().unwrap().iter().map(|(n, _)| n.clone()).collect();
            let ours: Vec<Server> = listed.iter().filter(|s| names.contains(&s.name)).cloned().collect();
            for dup in duplicates(&owner, &ours) {
                crate::engine::teardown::delete_server(provider.as_ref(), &dup.id, &dup.name, busy).await?;
                eprintln!("deleted server {} ({}): another run created the same name at the same time; the lowest ID is kept", dup.name, dup.id);
                gone.lock().unwrap().insert(dup.id.0.clone());
            }
            let skip = gone.lock().unwrap().clone();
            let listed: Vec<Server> = listed.into_iter().filter(|s| !skip.contains(&s.id.0)).collect();
            // Follow the kept server of each name (ours, or the other run's when its ID is lower).
            let current: Vec<(String, crate::provider::ServerId)> = wanted.lock().unwrap().clone();
            for (name, id) in &current {
                let Some(kept) = listed.iter().find(|s| &s.name == name).filter(|s| &s.id != id) else { continue };
                if skip.contains(&id.0) || listed.iter().all(|s| &s.id != id) && provider.get_server(id).await?.is_none() {
                    ledger(Saved::Server(name.clone(), kept.id.0.clone()))?;
                    for w in wanted.lock().unwrap().iter_mut().filter(|(n, _)| n == name) {
                        w.1 = kept.id.clone();
                    }
                }
            }
            let wanted_ids: Vec<crate::provider::ServerId> = wanted.lock().unwrap().iter().map(|(_, id)| id.clone()).collect();
            let mut found = Vec::new();
            for id in &wanted_ids {
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
    .await
}

/// Waits until the firewall's changes are applied.
async fn wait_until_applied(provider: &Arc<dyn Provider>, firewall: &Firewall, timeout: Duration) -> Result<()> {
    let id = firewall.id.clone();
    wait::until(&format!("firewall {} to be applied", firewall.name), timeout, Duration::from_secs(1), || {
        let (provider, id) = (Arc::clone(provider), id.clone());
        async move {
            Ok(match provider.get_firewall(&id).await? {
                Some(fw) if fw.ready => Check::Done(()),
                Some(fw) => Check::NotYet(format!("status {}", fw.status)),
                None => return Err(UserError::failed(format!("firewall {id} disappeared while sfuctl waited for it")).into()),
            })
        }
    })
    .await
}
