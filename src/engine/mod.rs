//! The engine every provider shares, existing hosts included: refresh what exists (found by the owner tag),
//! diff it against the spec, apply the difference in a safe order, wait with timeouts, and hand the servers to
//! the SSH deploy path. `down` goes the other way and keeps going past errors.
//!
//! Providers translate; this module decides. Every wait, every "call again later" decision and the create pacing
//! live here; providers return at once (a passing refusal as [`crate::provider::Busy`]).

pub mod apply;
pub mod diff;
pub mod pacing;
pub mod refresh;
pub mod teardown;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Result;

use crate::error::UserError;
use crate::owner::Owner;
use crate::provider::catalog::ProviderData;
use crate::provider::{Provider, Server};
use crate::render::HostTarget;
use crate::spec::Spec;
use crate::wait::{self, Check};

pub use apply::{CloudReport, apply};
pub use diff::{Diff, FirewallChange};
pub use refresh::{Current, public_key, refresh};
pub use teardown::{Teardown, destroy};

/// How long the engine waits for each kind of thing.
#[derive(Clone, Copy, Debug)]
pub struct Timings {
    /// A new server to run with a public address; a deleted one to be gone.
    pub server: Duration,
    /// A firewall's changes to be applied.
    pub firewall: Duration,
    /// A new server's sshd to answer.
    pub ssh: Duration,
    /// A provider's [`crate::provider::Busy`] to pass (a firewall still in use).
    pub busy: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Self { server: Duration::from_secs(600), firewall: Duration::from_secs(300), ssh: Duration::from_secs(300), busy: Duration::from_secs(600) }
    }
}

/// Deploy targets for servers: their public address (and IPv6 when the spec asks for it) is what the SFU
/// announces; it binds the wildcard address of the same family.
pub fn targets(spec: &Spec, servers: &[Server]) -> Vec<HostTarget> {
    servers
        .iter()
        .filter_map(|s| {
            let address = s.public_ipv4?;
            Some(HostTarget {
                address_v6: spec.provider.ipv6.then_some(s.public_ipv6).flatten().map(|a| a.to_string()),
                ..HostTarget::new(&s.name, address.to_string())
            })
        })
        .collect()
}

/// The hosts of a deployment as they exist now, with what the refresh found.
pub async fn existing_hosts(spec: &Spec, provider: &dyn Provider) -> Result<(Vec<HostTarget>, Current)> {
    let data = ProviderData::get(spec.provider.kind);
    let current = refresh(provider, data, &Owner::new(&spec.name), None).await?;
    Ok((targets(spec, &current.servers), current))
}

/// Waits until the host's SSH port accepts TCP connections (a new server's sshd starts after it reports running).
pub async fn wait_for_ssh(host: &HostTarget, port: u16, timeout: Duration) -> Result<()> {
    let ip: IpAddr = host.address.parse().map_err(|_| UserError::failed(format!("`{}` is not an IP address", host.address)))?;
    let addr = SocketAddr::new(ip, port);
    wait::until(&format!("SSH on {} ({addr})", host.name), timeout, Duration::from_millis(500), || async move {
        Ok(match tokio::time::timeout(Duration::from_secs(3), tokio::net::TcpStream::connect(addr)).await {
            Ok(Ok(_)) => Check::Done(()),
            Ok(Err(e)) => Check::NotYet(e.to_string()),
            Err(_) => Check::NotYet("no answer".into()),
        })
    })
    .await
}


#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
