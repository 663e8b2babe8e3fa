//! Reading what exists for a deployment: servers by the owner tag, the firewall by its exact name, the login key
//! by fingerprint. Reads only.

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
    /// The firewall `sfuctl-<name>`, when it exists.
    pub firewall: Option<Firewall>,
    /// The registered SSH key with the spec's fingerprint, when there is one.
    pub key: Option<SshKey>,
}

/// Reads what exists. `public_key` is the key line to look for among registered keys (`None`: not looked for).
pub async fn refresh(provider: &dyn Provider, data: &ProviderData, owner: &Owner, public_key: Option<&str>) -> Result<Current> {
    let mut servers = provider.list_servers(owner).await?;
    // Existing hosts keep the spec's order; servers sfuctl made go by their index.
    if data.creates_servers() {
        servers.sort_by_key(|s| (owner.server_index(&s.name).unwrap_or(u32::MAX), s.name.clone()));
    }
    let firewall = if data.has_firewall() {
        provider.list_firewalls(owner).await?.into_iter().find(|f| f.name == owner.firewall_name())
    } else {
        None
    };
    let key = match public_key {
        Some(k) if data.ssh_key == KeyHandling::Register => provider.find_ssh_key(k).await?,
        _ => None,
    };
    Ok(Current { servers, firewall, key })
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
