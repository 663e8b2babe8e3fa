//! The stateful Vultr fake (`tests/fakes/vultr/server.py`), started by the shared launcher ([`ApiFake`]): the
//! same control API, and the same drop check that no request broke Vultr's OpenAPI document.

use std::ops::Deref;

use serde_json::Value;

use crate::support::api_fake::{ApiFake, FakeKind, pool};

/// The Vultr fake's command line.
pub const VULTR: FakeKind = FakeKind { title: "Vultr", label: "vultr", script: "tests/fakes/vultr/server.py", credential_flag: "--api-key" };

/// A running Vultr fake. Dropping it checks for OpenAPI violations and stops it.
pub struct VultrFake(ApiFake);

impl VultrFake {
    /// Starts a fake with an address pool of ten 10.200.250.x addresses and no delays.
    pub fn start() -> VultrFake {
        Self::start_with(&["--address-pool", &pool(10)])
    }

    /// Starts a fake with extra flags (`--address-pool`, `--boot-delay`, `--lock-delay`, ...).
    pub fn start_with(args: &[&str]) -> VultrFake {
        VultrFake(ApiFake::start(VULTR, args))
    }

    /// The API base URL, `/v2` included: it replaces `https://api.vultr.com/v2` as a whole.
    pub fn api_url(&self) -> String {
        format!("{}/v2", self.0.url())
    }

    /// The only API key the fake accepts.
    pub fn api_key(&self) -> &str {
        self.0.token()
    }

    /// What of deployment `name` the fake holds: instances with its tag, the group described and the key named
    /// `sfuctl-<name>`, one line each.
    pub fn leftovers(&self, name: &str) -> Vec<String> {
        let state = self.get("/_fake/state");
        let (tag, marked) = (format!("sfuctl:{name}"), format!("sfuctl-{name}"));
        let list = |key: &str| state[key].as_array().cloned().unwrap_or_default();
        let mut left = Vec::new();
        for i in list("instances").iter().filter(|i| i["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag.as_str()))) {
            left.push(format!("instance {} ({})", i["label"], i["id"]));
        }
        for g in list("firewall_groups").iter().filter(|g| g["description"] == marked.as_str()) {
            left.push(format!("firewall group {} ({})", g["description"], g["id"]));
        }
        for k in list("ssh_keys").iter().filter(|k| k["name"] == marked.as_str()) {
            left.push(format!("ssh key {} ({})", k["name"], k["id"]));
        }
        left
    }

    /// The group described `sfuctl-<name>`, with its `rules`.
    pub fn group(&self, name: &str) -> Option<Value> {
        let state = self.get("/_fake/state");
        state["firewall_groups"].as_array()?.iter().find(|g| g["description"] == format!("sfuctl-{name}").as_str()).cloned()
    }
}

impl Deref for VultrFake {
    type Target = ApiFake;

    fn deref(&self) -> &ApiFake {
        &self.0
    }
}

impl crate::support::cloud_deployment::CloudEnv for VultrFake {
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("VULTR_API_KEY", self.api_key().to_string()), ("VULTR_API_ENDPOINT", self.api_url())]
    }
}
