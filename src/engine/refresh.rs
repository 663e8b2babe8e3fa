//! Reading what exists for a deployment: servers by the owner tag, the firewall by its exact name, the login key
//! by fingerprint. Reads only.
//!
//! Ownership is proven here, on sfuctl's side, whatever the API's filter returned: a server is the deployment's
//! only when it carries the owner tag AND is named `sfuctl-<name>-<n>` (or its ID is one sfuctl saved); a
//! firewall only when it is named exactly `sfuctl-<name>`. Anything else a list returned is reported (a
//! warning naming it, and [`Current::foreign`]) and never changed or deleted.

use std::path::Path;

use anyhow::Result;

use crate::error::UserError;
use crate::owner::Owner;
use crate::provider::catalog::{KeyHandling, ProviderData};
use crate::provider::{Firewall, Provider, Server, SshKey};
use crate::spec::{Spec, resolve_path};

/// What exists for a deployment.
#[derive(Clone, Debug, Default)]
pub struct Current {
    /// Servers carrying the owner tag (or, for existing hosts, the spec's hosts), sorted by index, then name.
    pub servers: Vec<Server>,
    /// The firewall `sfuctl-<name>`, when it exists (the lowest ID when there are several).
    pub firewall: Option<Firewall>,
    /// More firewalls named exactly `sfuctl-<name>` (two runs that created it at once): `up` and `down` delete them.
    pub extra_firewalls: Vec<Firewall>,
    /// The registered SSH key with the spec's fingerprint, when there is one.
    pub key: Option<SshKey>,
    /// The key line the key was looked for by (to find a second copy after deleting one: two runs at once may
    /// each have registered it).
    pub public_key: Option<String>,
    /// What the provider's lists returned that failed the ownership check, as `kind name (id): why`: left alone.
    pub foreign: Vec<String>,
}

/// Why `server` is not the deployment's (`None`: it is). `saved` are server IDs sfuctl saved in its state.
pub fn not_owned(owner: &Owner, server: &Server, saved: &[String]) -> Option<String> {
    let tagged = server.tags.iter().any(|t| *t == owner.tag());
    let named = owner.server_index(&server.name).is_some();
    let known = saved.contains(&server.id.0);
    match (tagged, named || known) {
        (true, true) => None,
        (false, _) => Some(format!("it does not carry the tag {}", owner.tag())),
        (true, false) => Some(format!("it is not named {}-<n> and its ID is not in sfuctl's state", owner.prefix())),
    }
}

/// Reads what exists. `public_key` is the key line to look for among registered keys (`None`: not looked for).
pub async fn refresh(provider: &dyn Provider, data: &ProviderData, owner: &Owner, public_key: Option<&str>) -> Result<Current> {
    refresh_with(provider, data, owner, public_key, &[]).await
}

/// [`refresh`], also accepting tagged servers whose ID is in `saved` (IDs from the local state) whatever their name.
pub async fn refresh_with(provider: &dyn Provider, data: &ProviderData, owner: &Owner, public_key: Option<&str>, saved: &[String]) -> Result<Current> {
    let listed = provider.list_servers(owner).await?;
    let mut foreign = Vec::new();
    let mut servers = Vec::new();
    if data.creates_servers() {
        for s in listed {
            match not_owned(owner, &s, saved) {
                None => servers.push(s),
                Some(why) => foreign.push(format!("server {} ({}): {why}", s.name, s.id)),
            }
        }
        // Servers sfuctl made go by their index; duplicates of one name by ID (shortest, then lowest), so every
        // run, on any machine, picks the same one to keep (see [`duplicates`]).
        servers.sort_by_key(|s| sort_key(owner, s));
    } else {
        // Existing hosts are the spec's own, in the spec's order.
        servers = listed;
    }
    let mut extra_firewalls = Vec::new();
    let firewall = if data.has_firewall() {
        let mut named = Vec::new();
        for f in provider.list_firewalls(owner).await? {
            if f.name == owner.firewall_name() {
                named.push(f);
            } else {
                foreign.push(format!("firewall {} ({}): it is not named exactly {}", f.name, f.id, owner.firewall_name()));
            }
        }
        named.sort_by(|a, b| (a.id.0.len(), &a.id.0).cmp(&(b.id.0.len(), &b.id.0)));
        let mut named = named.into_iter();
        let first = named.next();
        extra_firewalls = named.collect();
        first
    } else {
        None
    };
    let key = match public_key {
        Some(k) if data.ssh_key == KeyHandling::Register => provider.find_ssh_key(k).await?,
        _ => None,
    };
    for f in &foreign {
        crate::error::warn(format!("{} returned {f}; sfuctl leaves it alone", provider.name()));
    }
    Ok(Current { servers, firewall, extra_firewalls, key, public_key: public_key.map(str::to_string), foreign })
}

/// How servers sfuctl made sort: by index, then name, then ID as a number where it is one (shorter first).
fn sort_key(owner: &Owner, s: &Server) -> (u32, String, usize, String) {
    (owner.server_index(&s.name).unwrap_or(u32::MAX), s.name.clone(), s.id.0.len(), s.id.0.clone())
}

/// Servers that share a name with one before them (in [`refresh`]'s order): two runs that each created
/// `sfuctl-<name>-1`. The first of each name (the lowest ID) is kept by every run; these are the others.
pub fn duplicates(owner: &Owner, servers: &[Server]) -> Vec<Server> {
    let mut sorted: Vec<&Server> = servers.iter().collect();
    sorted.sort_by_key(|s| sort_key(owner, s));
    let mut seen = std::collections::BTreeSet::new();
    sorted.into_iter().filter(|s| !seen.insert(s.name.clone())).cloned().collect()
}

/// The public key line given to new servers: `ssh.public_key`, else the private key's path + `.pub`, else
/// `~/.ssh/id_ed25519.pub`.
pub fn public_key(spec: &Spec, base_dir: &Path) -> Result<String> {
    let path = public_key_path(spec, base_dir);
    let text = std::fs::read_to_string(&path).map_err(|e| {
        UserError::input(format!("cannot read the SSH public key `{}`", path.display()))
            .caused_by(e)
            .hint("cloud hosts are created with your public key: set `ssh.public_key`, or put it next to the private key as `<key>.pub`")
    })?;
    Ok(text.trim().to_string())
}

/// Where the public key is read from (see [`public_key`]).
pub fn public_key_path(spec: &Spec, base_dir: &Path) -> std::path::PathBuf {
    let raw = spec.ssh.public_key.clone().unwrap_or_else(|| format!("{}.pub", spec.ssh.private_key.as_deref().unwrap_or("~/.ssh/id_ed25519")));
    resolve_path(&raw, base_dir)
}
