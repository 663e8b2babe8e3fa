//! A cloud deployment under test, the same for every cloud fake: a coturn spec whose servers are namespace hosts
//! the fake hands out, a state directory and HOME of its own, and `sfuctl` run with the fake's credentials.

use std::path::PathBuf;

use crate::support::cli::sfuctl;
use crate::support::netns::TestHost;

/// How to point sfuctl at a cloud fake: the environment its provider reads.
pub trait CloudEnv {
    /// The variables (credential and API URL) that make sfuctl talk to this fake.
    fn env(&self) -> Vec<(&'static str, String)>;
}

/// A deployment: its name, directory (spec and state) and key.
pub struct CloudDeployment {
    /// The deployment's name (`<label>-<n>`).
    pub name: String,
    /// Holds `spec.yaml` and `state/`.
    pub dir: tempfile::TempDir,
    home: tempfile::TempDir,
    /// The client key the servers accept.
    pub key: PathBuf,
    /// The spec's `provider` block without `count`, two-space indented lines.
    provider: String,
}

impl CloudDeployment {
    /// A deployment whose servers accept `key_host`'s client key; `hosts` are the namespace hosts the fake hands
    /// out (each is told to accept that key, as cloud-init would); `provider` is the spec's provider block.
    pub fn new(label: &str, key_host: &TestHost, hosts: &[&TestHost], provider: &str) -> Self {
        let public = std::fs::read_to_string(key_host.client_key().with_extension("pub")).unwrap();
        for h in hosts {
            let authorized = h.dir().join("authorized_keys");
            let mut keys = std::fs::read_to_string(&authorized).unwrap_or_default();
            if !keys.contains(public.trim()) {
                keys.push_str(&public);
                std::fs::write(&authorized, keys).unwrap();
            }
        }
        let name = format!("{label}-{}", key_host.ns().trim_start_matches("sfut-"));
        Self { name, dir: tempfile::tempdir().unwrap(), home: tempfile::tempdir().unwrap(), key: key_host.client_key(), provider: provider.into() }
    }

    /// Writes a coturn spec with `count` servers and the media range `rtc`.
    pub fn write_spec(&self, rtc: &str, count: u32) {
        let spec = format!(
            "name: {}\nprovider:\n{}  count: {count}\nssh:\n  private_key: {}\n  allow_from: [10.200.0.0/16]\nsfu:\n  kind: coturn\n  artifact: /usr/bin/turnserver\n  rtc_ports: {rtc}\n  run_as: root\n",
            self.name,
            self.provider,
            self.key.display()
        );
        std::fs::write(self.spec(), spec).unwrap();
    }

    /// The spec's path.
    pub fn spec(&self) -> PathBuf {
        self.dir.path().join("spec.yaml")
    }

    /// `sfuctl ARGS SPEC` against `fake`, with this deployment's state directory and shared secret.
    pub fn sfuctl(&self, fake: &impl CloudEnv, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = sfuctl(self.home.path());
        for (k, v) in fake.env() {
            cmd.env(k, v);
        }
        cmd.env("SFUCTL_STATE_DIR", self.dir.path().join("state")).env("SFUCTL_SECRET", "cloud-e2e-secret-0123456789abcdef0123456789abcdef");
        cmd.args(args).arg(self.spec());
        cmd
    }
}

/// A command's stdout as JSON, or a panic showing it.
pub fn json(out: &assert_cmd::assert::Assert) -> serde_json::Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.get_output().stdout)))
}
