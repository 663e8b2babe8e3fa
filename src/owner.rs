//! Who owns a resource: one deployment. Every name sfuctl gives anything, in a cloud or on a host, comes from
//! here, so the tag that finds a resource again and the names `down` removes cannot drift apart.

use serde::{Deserialize, Serialize};

/// The owner of everything one deployment makes. Every cloud resource carries the tag [`Owner::tag`] and a name
/// starting with [`Owner::prefix`]; on a host, the service, the nftables table and the directory carry the name too.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Owner {
    name: String,
}

impl Owner {
    /// The owner of deployment `name` (a valid spec name: `[a-z0-9-]`, so the tag fits every provider's rules).
    pub fn new(name: impl Into<String>) -> Self {
        Self { name: name.into() }
    }

    /// The deployment's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ownership tag, `sfuctl:<name>`.
    pub fn tag(&self) -> String {
        format!("sfuctl:{}", self.name)
    }

    /// The prefix of every resource name, `sfuctl-<name>`.
    pub fn prefix(&self) -> String {
        format!("sfuctl-{}", self.name)
    }

    /// The firewall's name: exactly the prefix. Matched exactly, never as a prefix: deployment `demo` must not
    /// claim `sfuctl-demo-2`, the firewall of deployment `demo-2`.
    pub fn firewall_name(&self) -> String {
        self.prefix()
    }

    /// The SSH key's name on the provider.
    pub fn ssh_key_name(&self) -> String {
        self.prefix()
    }

    /// The name of server number `index` (from 1): `sfuctl-<name>-<index>`.
    pub fn server_name(&self, index: u32) -> String {
        format!("{}-{index}", self.prefix())
    }

    /// The index `n` of a server named `sfuctl-<name>-<n>`; `None` for any other name.
    pub fn server_index(&self, server_name: &str) -> Option<u32> {
        server_name.strip_prefix(&format!("{}-", self.prefix()))?.parse().ok().filter(|n| *n > 0)
    }

    /// The service on each host: `sfuctl-<name>` (a systemd unit of that name, or the fallback supervisor's process).
    pub fn service_name(&self) -> String {
        self.prefix()
    }

    /// The nftables table sfuctl owns on each host: `sfuctl_<name>` (nft names take no `-`).
    pub fn nft_table(&self) -> String {
        format!("sfuctl_{}", self.name.replace('-', "_"))
    }

    /// The directory holding everything sfuctl puts on a host: `/opt/sfuctl/<name>`.
    pub fn host_root(&self) -> String {
        format!("/opt/sfuctl/{}", self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_comes_from_the_deployment_name() {
        let o = Owner::new("demo-2");
        assert_eq!((o.tag(), o.prefix(), o.server_name(2)), ("sfuctl:demo-2".into(), "sfuctl-demo-2".into(), "sfuctl-demo-2-2".into()));
        assert_eq!((o.service_name(), o.nft_table(), o.host_root()), ("sfuctl-demo-2".into(), "sfuctl_demo_2".into(), "/opt/sfuctl/demo-2".into()));
    }

    #[test]
    fn server_index_reads_only_our_names() {
        let o = Owner::new("demo");
        assert_eq!(o.server_index("sfuctl-demo-3"), Some(3));
        assert_eq!(o.server_index("sfuctl-demo-2-1"), None, "deployment demo-2's server is not ours");
        assert_eq!(o.server_index("sfuctl-demo-0"), None);
        assert_eq!(o.server_index("web-1"), None);
    }
}
