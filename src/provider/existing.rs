//! Existing hosts (`provider.kind: ssh`) as a provider: the servers are the spec's `provider.hosts`, always
//! running at the address given; there is no API, no cloud firewall and no key to register.
//!
//! With this behind the same trait as the clouds, `plan`, `up`, `status`, `audit` and `down` have one path for
//! every kind; what differs (nothing to create, nothing to delete through an API) is data in `providers/ssh.yaml`.

use std::net::IpAddr;
use std::sync::Arc;

use anyhow::Result;

use super::{Firewall, FirewallId, FirewallRequest, Provider, ProviderFuture, Server, ServerId, ServerRequest, ServerStatus, SshKey, SshKeyId};
use crate::error::UserError;
use crate::http::RequestStats;
use crate::owner::Owner;
use crate::spec::{HostSpec, Spec};

/// The servers a spec lists.
#[derive(Clone, Debug)]
pub struct Existing {
    hosts: Vec<HostSpec>,
}

/// The registration's constructor: existing hosts need no credentials.
pub fn connect(spec: &Spec) -> Result<Arc<dyn Provider>> {
    Ok(Arc::new(Existing::new(spec.provider.hosts.clone())))
}

impl Existing {
    /// The provider for these hosts.
    pub fn new(hosts: Vec<HostSpec>) -> Self {
        Self { hosts }
    }

    fn server(host: &HostSpec) -> Server {
        // Validation made sure the address is an IP; it is announced as given, IPv4 or IPv6.
        let address: Option<IpAddr> = host.address.parse().ok();
        Server {
            id: ServerId(host.name.clone()),
            name: host.name.clone(),
            status: ServerStatus::Running,
            public_ipv4: address,
            public_ipv6: None,
            tags: Vec::new(),
            region: None,
        }
    }

    fn not_ours<T>(what: &str) -> ProviderFuture<'static, T> {
        let message = format!("existing hosts cannot {what}: sfuctl does not create or delete them");
        Box::pin(async move { Err(UserError::failed(message).into()) })
    }
}

impl Provider for Existing {
    fn name(&self) -> &'static str {
        "existing hosts"
    }

    fn requests(&self) -> RequestStats {
        RequestStats::default()
    }

    fn list_servers<'a>(&'a self, _owner: &'a Owner) -> ProviderFuture<'a, Vec<Server>> {
        Box::pin(async move { Ok(self.hosts.iter().map(Self::server).collect()) })
    }

    fn get_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, Option<Server>> {
        Box::pin(async move { Ok(self.hosts.iter().find(|h| h.name == id.0).map(Self::server)) })
    }

    fn create_server<'a>(&'a self, _req: &'a ServerRequest) -> ProviderFuture<'a, Server> {
        Self::not_ours("be created")
    }

    fn delete_server<'a>(&'a self, _id: &'a ServerId) -> ProviderFuture<'a, ()> {
        Self::not_ours("be deleted through an API")
    }

    fn list_firewalls<'a>(&'a self, _owner: &'a Owner) -> ProviderFuture<'a, Vec<Firewall>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn get_firewall<'a>(&'a self, _id: &'a FirewallId) -> ProviderFuture<'a, Option<Firewall>> {
        Box::pin(async { Ok(None) })
    }

    fn put_firewall<'a>(&'a self, _req: &'a FirewallRequest, _existing: Option<&'a Firewall>) -> ProviderFuture<'a, Firewall> {
        Self::not_ours("have a cloud firewall")
    }

    fn delete_firewall<'a>(&'a self, _id: &'a FirewallId) -> ProviderFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }

    fn find_ssh_key<'a>(&'a self, _public_key: &'a str) -> ProviderFuture<'a, Option<SshKey>> {
        Box::pin(async { Ok(None) })
    }

    fn ensure_ssh_key<'a>(&'a self, _name: &'a str, _public_key: &'a str) -> ProviderFuture<'a, (SshKey, bool)> {
        Self::not_ours("register an SSH key")
    }

    fn delete_ssh_key<'a>(&'a self, _id: &'a SshKeyId) -> ProviderFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lists_the_spec_hosts_as_running_servers() {
        let hosts = vec![
            HostSpec { name: "a".into(), address: "203.0.113.10".into(), host_key: None },
            HostSpec { name: "b".into(), address: "2001:db8::10".into(), host_key: None },
        ];
        let p = Existing::new(hosts);
        let owner = Owner::new("demo");
        let servers = p.list_servers(&owner).await.unwrap();
        assert_eq!(servers.len(), 2);
        assert!(servers.iter().all(Server::is_up));
        assert_eq!(servers[1].public_ipv4.unwrap().to_string(), "2001:db8::10");
        assert!(p.list_firewalls(&owner).await.unwrap().is_empty());
        assert!(p.get_server(&ServerId("c".into())).await.unwrap().is_none());
        assert!(p.delete_server(&ServerId("a".into())).await.is_err(), "an existing host is never deleted through an API");
    }
}
