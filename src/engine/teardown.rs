//! `down` in the cloud: delete every server with the owner tag, wait until they are gone, then the firewall
//! (waiting out a provider's "still in use"), then the SSH key when sfuctl registered it. Keeps going past errors
//! and reports them all.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde::Serialize;

use crate::engine::Timings;
use crate::engine::refresh::Current;
use crate::error::UserError;
use crate::owner::Owner;
use crate::provider::{FirewallId, Provider, ServerId, busy_reason};
use crate::wait::{self, Check};

/// What `down` removed, and what it could not.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Teardown {
    /// Resources deleted, as `kind name (id)`.
    pub deleted: Vec<String>,
    /// Resources that could not be deleted, with the reason.
    pub failed: Vec<String>,
}

/// Deletes what `current` holds. The SSH key goes only when sfuctl registered it (named `sfuctl-<name>`; a key
/// you registered yourself is never touched).
pub async fn destroy(provider: Arc<dyn Provider>, owner: &Owner, current: &Current, timings: &Timings) -> Teardown {
    let mut out = Teardown::default();
    let mut tasks = tokio::task::JoinSet::new();
    for server in current.servers.clone() {
        let (provider, timeout, busy) = (Arc::clone(&provider), timings.server, timings.busy);
        tasks.spawn(async move {
            // A server still being set up may refuse its delete for a while (Vultr: "Server is currently locked").
            let mut r = delete_server(provider.as_ref(), &server.id, &server.name, busy).await;
            if r.is_ok() {
                // Wait until it is really gone, so the firewall and tag can go after it; one that stays is a failure.
                r = wait::until(&format!("server {} to be deleted", server.name), timeout, Duration::from_secs(1), || {
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
    for fw in current.firewall.iter().chain(&current.extra_firewalls) {
        match delete_firewall(provider.as_ref(), &fw.id, &fw.name, timings.busy).await {
            Ok(()) => out.deleted.push(format!("firewall {} ({})", fw.name, fw.id)),
            Err(e) => out.failed.push(format!("firewall {} ({}): {e:#}", fw.name, fw.id)),
        }
    }
    let mut key = current.key.clone().filter(|k| k.name == owner.ssh_key_name());
    // Two runs at once may each have registered the key under sfuctl's name: look again after each delete.
    for _ in 0..5 {
        let Some(k) = key.take() else { break };
        match provider.delete_ssh_key(&k.id).await {
            Ok(()) => out.deleted.push(format!("ssh key {} ({})", k.name, k.fingerprint)),
            Err(e) => {
                out.failed.push(format!("ssh key {} ({}): {e:#}", k.name, k.fingerprint));
                break;
            }
        }
        if let Some(line) = &current.public_key {
            key = provider.find_ssh_key(line).await.ok().flatten().filter(|again| again.name == owner.ssh_key_name() && again.id != k.id);
        }
    }
    if out.failed.is_empty()
        && let Err(e) = provider.forget_owner(owner).await
    {
        out.failed.push(format!("tag {}: {e:#}", owner.tag()));
    }
    out
}

/// Calls `call` again while the provider answers [`crate::provider::Busy`] (a refusal that passes by itself), up
/// to `timeout`; any other error ends it at once. `what` completes "waiting for ...".
pub async fn while_busy<T, F, Fut>(what: &str, timeout: Duration, mut call: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T>>,
{
    let interval = (timeout / 200).clamp(Duration::from_millis(10), Duration::from_secs(3));
    wait::until(what, timeout, interval, || {
        let attempt = call();
        async move {
            match attempt.await {
                Ok(value) => Ok(Check::Done(value)),
                Err(e) => match busy_reason(&e) {
                    Some(reason) => Ok(Check::NotYet(reason)),
                    None => Err(e),
                },
            }
        }
    })
    .await
}

/// Deletes a server, calling again while the provider answers [`crate::provider::Busy`] (a server still locked
/// after create), up to `timeout`.
pub async fn delete_server(provider: &dyn Provider, id: &ServerId, name: &str, timeout: Duration) -> Result<()> {
    while_busy(&format!("server {name} to accept its delete"), timeout, || provider.delete_server(id)).await.map_err(|e| {
        // Only the wait's own timeout needs saying more; the provider's errors already name the server.
        if e.to_string().starts_with("timed out") {
            UserError::failed(format!("cannot delete server {name} ({id}) on {}", provider.name()))
                .caused_by(e)
                .hint("the provider still refuses to delete a server it is setting up: run `sfuctl down` again in a few minutes")
                .into()
        } else {
            e
        }
    })
}

/// Deletes a firewall, calling again while the provider answers [`crate::provider::Busy`] (a security group
/// still used by a terminating instance's network interface), up to `timeout`.
pub async fn delete_firewall(provider: &dyn Provider, id: &FirewallId, name: &str, timeout: Duration) -> Result<()> {
    while_busy(&format!("firewall {name} to be released by its servers"), timeout, || provider.delete_firewall(id)).await.map_err(|e| {
        UserError::failed(format!("cannot delete firewall {name} ({id}) on {}", provider.name()))
            .caused_by(e)
            .hint("a provider keeps a firewall while a server or its network interface still uses it, for some minutes after the server went: run `sfuctl down` again later")
            .into()
    })
}
