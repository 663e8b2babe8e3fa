//! The stateful Linode fake (`tests/fakes/linode/server.py`, see its README), started by the shared launcher
//! ([`ApiFake`]). Every request under `/v4` is checked against Linode's OpenAPI document (with the named
//! relaxations of its known defects); the guard's drop asserts there was no violation.

use std::ops::Deref;

pub use crate::support::api_fake::pool;
use crate::support::api_fake::{ApiFake, FakeKind};

/// The Linode fake's command line.
pub const LINODE: FakeKind = FakeKind { title: "Linode", label: "linode", script: "tests/fakes/linode/server.py", credential_flag: "--token" };

/// A running Linode fake.
pub struct LinodeFake(ApiFake);

impl LinodeFake {
    /// Starts a fake with an address pool of ten 10.200.250.x addresses and no boot delay.
    pub fn start() -> LinodeFake {
        Self::start_with(&["--address-pool", &pool(10)])
    }

    /// Starts a fake with extra flags (`--address-pool`, `--boot-delay`, `--page-size`, `--create-rate-limit`).
    pub fn start_with(args: &[&str]) -> LinodeFake {
        LinodeFake(ApiFake::start(LINODE, args))
    }

    /// The API base the provider talks to, version path included (`http://127.0.0.1:PORT/v4`).
    pub fn api_url(&self) -> String {
        format!("{}/v4", self.url())
    }

    /// The fake's instances, from its control API.
    pub fn instances(&self) -> Vec<serde_json::Value> {
        self.get("/_fake/state")["instances"].as_array().cloned().unwrap_or_default()
    }

    /// The fake's firewalls (with their devices), from its control API.
    pub fn firewalls(&self) -> Vec<serde_json::Value> {
        self.get("/_fake/state")["firewalls"].as_array().cloned().unwrap_or_default()
    }

    /// What the fake holds of deployment `name`: instances tagged `sfuctl:<name>`, firewalls labelled
    /// `sfuctl-<name>` or tagged `sfuctl:<name>`, keys labelled `sfuctl-<name>`, one line each.
    pub fn leftovers(&self, name: &str) -> Vec<String> {
        let state = self.get("/_fake/state");
        let (tag, label) = (format!("sfuctl:{name}"), format!("sfuctl-{name}"));
        let tagged = |v: &serde_json::Value| v["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == tag.as_str()));
        let mut left = Vec::new();
        for i in state["instances"].as_array().into_iter().flatten().filter(|i| tagged(i)) {
            left.push(format!("instance {} ({})", i["label"], i["id"]));
        }
        for f in state["firewalls"].as_array().into_iter().flatten().filter(|f| tagged(f) || f["label"] == label.as_str()) {
            left.push(format!("firewall {} ({})", f["label"], f["id"]));
        }
        for k in state["ssh_keys"].as_array().into_iter().flatten().filter(|k| k["label"] == label.as_str()) {
            left.push(format!("key {}", k["label"]));
        }
        left
    }
}

impl Deref for LinodeFake {
    type Target = ApiFake;

    fn deref(&self) -> &ApiFake {
        &self.0
    }
}

impl crate::support::cloud_deployment::CloudEnv for LinodeFake {
    /// `LINODE_URL` is the host only: sfuctl appends `/v4`, as the terraform provider does.
    fn env(&self) -> Vec<(&'static str, String)> {
        vec![("LINODE_TOKEN", self.token().to_string()), ("LINODE_URL", self.url())]
    }
}
