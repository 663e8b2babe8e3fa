//! Declarative per-provider data (`providers/<kind>.yaml`, embedded in the binary): API base URLs, credential
//! variables, defaults, known regions, firewall limits and naming limits.
//!
//! Keeping this as data means a new region, a changed limit or a new default is a one-line change that a reader
//! can check against the provider's documentation, with no code to follow.

use std::sync::OnceLock;

use serde::Deserialize;

use crate::spec::ProviderKind;

/// Everything sfuctl knows about one provider that is not code.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderData {
    /// The provider kind, as in the spec.
    pub kind: ProviderKind,
    /// The provider's name in messages.
    pub title: String,
    /// The API endpoint, for cloud providers.
    pub api: Option<ApiData>,
    /// Where credentials come from.
    #[serde(default)]
    pub credentials: CredentialData,
    /// Whether the spec must name a region.
    pub region_required: bool,
    /// A region to show in hints.
    pub example_region: String,
    /// Regions sfuctl knows; an unknown one is a warning, since providers add regions.
    #[serde(default)]
    pub regions: Vec<String>,
    /// Defaults for fields the spec leaves out.
    pub defaults: Defaults,
    /// The cloud firewall's limits.
    pub firewall: FirewallData,
    /// Naming limits of the provider's resources.
    pub names: NameData,
}

/// The API endpoint of a cloud provider.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiData {
    /// The default base URL.
    pub url: String,
    /// Environment variables that override it, first found wins (also the test seam).
    pub url_env: Vec<String>,
}

/// Where a provider's credentials come from.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CredentialData {
    /// Environment variables, any of which means credentials are set.
    #[serde(default)]
    pub env: Vec<String>,
    /// Files (`~/` expanded), any of which means credentials are set.
    #[serde(default)]
    pub files: Vec<String>,
}

/// Defaults for spec fields.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// The machine size.
    #[serde(default)]
    pub size: Option<String>,
    /// The OS image (`None`: looked up, e.g. the newest Ubuntu AMI).
    #[serde(default)]
    pub image: Option<String>,
    /// The SSH login user of the provider's images.
    pub ssh_user: String,
}

/// A cloud firewall's limits, and how the provider counts rules against them.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FirewallData {
    /// The most rules one firewall may hold (`None`: no cloud firewall).
    pub rule_limit: Option<u32>,
    /// Whether every source CIDR counts as a rule of its own (AWS), rather than every port rule (DigitalOcean).
    pub count_per_cidr: bool,
    /// Rules sfuctl always adds besides the manifest's (DigitalOcean's outbound allow-all rules).
    pub fixed_rules: u32,
}

/// Naming limits.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NameData {
    /// The longest `sfuctl-<name>` the provider accepts for every resource sfuctl names that way.
    pub max_name_len: Option<usize>,
    /// Which resource sets that limit, for the message.
    pub longest_resource: String,
}

const SOURCES: [(ProviderKind, &str); 4] = [
    (ProviderKind::Digitalocean, include_str!("../providers/digitalocean.yaml")),
    (ProviderKind::Linode, include_str!("../providers/linode.yaml")),
    (ProviderKind::Aws, include_str!("../providers/aws.yaml")),
    (ProviderKind::Ssh, include_str!("../providers/ssh.yaml")),
];

impl ProviderData {
    /// The embedded data of one provider.
    pub fn get(kind: ProviderKind) -> &'static ProviderData {
        static ALL: OnceLock<Vec<ProviderData>> = OnceLock::new();
        let all = ALL.get_or_init(|| {
            SOURCES
                .iter()
                .map(|(kind, text)| {
                    // The files ship inside the binary and are checked by a unit test, so a failure here is a bug.
                    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("providers/{}.yaml is invalid: {e}", kind.as_str()))
                })
                .collect()
        });
        all.iter().find(|d| d.kind == kind).expect("every provider kind has a data file")
    }

    /// The first credential source that is set (an environment variable or file name), if any.
    pub fn credentials_found(&self) -> Option<String> {
        let env = self.credentials.env.iter().find(|name| std::env::var_os(name).is_some_and(|v| !v.is_empty()));
        if let Some(name) = env {
            return Some(format!("${name}"));
        }
        self.credentials.files.iter().find(|f| crate::spec::resolve_path(f, std::path::Path::new("/")).is_file()).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_provider_file_parses_and_matches_its_kind() {
        for (kind, _) in SOURCES {
            let data = ProviderData::get(kind);
            assert_eq!(data.kind, kind);
            assert_eq!(data.region_required, !data.example_region.is_empty() && kind != ProviderKind::Aws);
        }
        assert_eq!(ProviderData::get(ProviderKind::Linode).firewall.rule_limit, Some(25));
        assert_eq!(ProviderData::get(ProviderKind::Aws).defaults.ssh_user, "ubuntu");
    }
}
