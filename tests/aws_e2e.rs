//! AWS end to end: `plan`, `up`, `status` and `down` of the real binary against moto with signature checking on,
//! whose instances get the addresses of real namespace hosts (`--address-pool`), so the SSH deploy of coturn, its
//! health check and the host firewall are real. Nothing connects to an address moto invented: the pool is the
//! only source of public addresses, and an exhausted pool fails RunInstances (400) instead of inventing one.

use std::path::PathBuf;

use predicates::prelude::*;
use serde_json::Value;

use crate::support::cli::{require_tool, sfuctl};
use crate::support::moto::Moto;
use crate::support::netns::TestHost;

/// An AWS deployment under test: its spec, state and HOME (each test host has a private /opt/sfuctl, removed with
/// the host).
struct AwsDeployment {
    name: String,
    dir: tempfile::TempDir,
    home: tempfile::TempDir,
    key: PathBuf,
}

impl AwsDeployment {
    fn new(label: &str, host: &TestHost) -> Self {
        let name = format!("{label}-{}", host.ns().trim_start_matches("sfut-"));
        Self { name, dir: tempfile::tempdir().unwrap(), home: tempfile::tempdir().unwrap(), key: host.client_key() }
    }

    fn write_spec(&self, region: Option<&str>) {
        let region = region.map(|r| format!("  region: {r}\n")).unwrap_or_default();
        let spec = format!(
            "name: {}\nprovider:\n  kind: aws\n{region}  size: c6i.large\nssh:\n  user: root\n  private_key: {}\n  allow_from: [10.200.0.0/16]\nsfu:\n  kind: coturn\n  artifact: /usr/bin/turnserver\n  rtc_ports: 40000-40999\n  run_as: root\n",
            self.name,
            self.key.display()
        );
        std::fs::write(self.spec(), spec).unwrap();
    }

    fn spec(&self) -> PathBuf {
        self.dir.path().join("spec.yaml")
    }

    /// `sfuctl ARGS SPEC` against `moto`, signing with `secret`.
    fn sfuctl_with(&self, moto: &Moto, secret: &str, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = sfuctl(self.home.path());
        cmd.env("AWS_ACCESS_KEY_ID", moto.access_key())
            .env("AWS_SECRET_ACCESS_KEY", secret)
            .env("AWS_ENDPOINT_URL", moto.url())
            .env("SFUCTL_STATE_DIR", self.dir.path().join("state"))
            .env("SFUCTL_SECRET", "aws-e2e-secret-0123456789abcdef0123456789abcdef");
        cmd.args(args).arg(self.spec());
        cmd
    }

    fn sfuctl(&self, moto: &Moto, args: &[&str]) -> assert_cmd::Command {
        self.sfuctl_with(moto, moto.secret_key(), args)
    }
}

fn json(out: &assert_cmd::assert::Assert) -> Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.get_output().stdout)))
}

fn stderr(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

#[test]
fn aws_plan_up_converge_status_and_down_with_signatures_checked() {
    require_tool("turnserver", "coturn");
    let host = TestHost::start("aws-1");
    let moto = Moto::start_with_auth(&["--address-pool", &host.address(), "--pool-exhausted-status", "400"]);
    let dep = AwsDeployment::new("aws", &host);
    dep.write_spec(Some("us-east-1"));

    let plan = json(&dep.sfuctl(&moto, &["plan", "--output", "json"]).assert().success());
    assert_eq!(plan["refreshed"], true, "{plan}");
    assert_eq!(plan["summary"]["add"], 5, "key, security group, instance, host firewall, service: {plan}");

    // up: key pair, security group, instance with cloud-init, wait for running + public IPv4, SSH deploy, health.
    let up = json(&dep.sfuctl(&moto, &["up", "--yes", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["firewall"], "created", "{up}");
    assert_eq!(up["cloud"]["key_created"], true);
    assert_eq!(up["cloud"]["servers_created"], serde_json::json!([format!("sfuctl-{}-1", dep.name)]));
    let h = &up["hosts"][0]["host"];
    assert_eq!(h["address"], host.address().as_str(), "the pool address moto gave is the one deployed to");
    assert!(h["health"].to_string().contains("STUN Binding"), "{up}");
    assert_eq!(up["audit"]["ok"], true, "the audit from outside passes, the security group included: {up}");
    let conf = std::fs::read_to_string(host.opt_dir().join(&dep.name).join("config/turnserver.conf")).unwrap();
    assert!(conf.contains(&format!("external-ip={}\n", host.address())), "the instance's public IPv4 is announced");

    let inv = moto.inventory();
    let instance = inv["instances"].as_array().unwrap().iter().find(|i| i["tags"]["sfuctl"] == dep.name.as_str()).unwrap().clone();
    assert_eq!(instance["tags"]["Name"], format!("sfuctl-{}-1", dep.name).as_str());
    assert_eq!(instance["image"], "ami-0a1b2c3d4e5f60002", "the newest Canonical Ubuntu 24.04 amd64 AMI");
    let group = inv["groups"].as_array().unwrap().iter().find(|g| g["name"] == format!("sfuctl-{}", dep.name).as_str()).unwrap().clone();
    assert_eq!(instance["groups"], serde_json::json!([group["id"]]), "the security group is attached at launch");
    let ingress = group["ingress"].to_string();
    assert!(ingress.contains("40000") && ingress.contains("40999") && ingress.contains("3478") && ingress.contains("::/0"), "{ingress}");
    assert!(ingress.contains("10.200.0.0/16"), "SSH from allow_from only: {ingress}");
    assert_eq!(group["tags"]["sfuctl"], dep.name.as_str());
    assert!(inv["keys"].as_array().unwrap().iter().any(|k| k["name"] == format!("sfuctl-{}", dep.name).as_str()));

    // Converged: no changes, and not one mutating EC2 call (sfuctl's own count, and moto's state unchanged).
    let up = json(&dep.sfuctl(&moto, &["up", "--output", "json"]).assert().success());
    assert_eq!(up["changed"], false, "{up}");
    assert_eq!(up["cloud"]["mutating_requests"], 0, "{up}");
    assert_eq!(
        up["cloud"]["requests"], 7,
        "reads only: the refresh (instances by tag, the group, its instances, key pairs) and the audit's (the first three): {up}"
    );
    assert_eq!(moto.inventory(), inv, "nothing changed in EC2");
    dep.sfuctl(&moto, &["up"]).assert().success().stdout(predicate::str::contains("No changes."));
    dep.sfuctl(&moto, &["plan"]).assert().success().stdout(predicate::str::contains("No changes."));

    let status = json(&dep.sfuctl(&moto, &["status", "--output", "json"]).assert().success());
    assert_eq!(status["servers"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["servers"][0]["status"], "running");
    assert_eq!(status["hosts"][0]["service"]["state"], "active", "{status}");

    // down: terminate and wait, delete the group and the key pair sfuctl imported.
    dep.sfuctl(&moto, &["down"]).assert().code(2);
    let down = dep.sfuctl(&moto, &["down", "--yes"]).assert().success();
    let text = String::from_utf8_lossy(&down.get_output().stdout).into_owned();
    assert!(text.contains("deleted server") && text.contains("deleted firewall") && text.contains("deleted ssh key"), "{text}");
    assert_eq!(moto.leftovers(&dep.name), Vec::<String>::new());
    let states: Vec<(String, String)> = moto.instances();
    assert!(states.iter().all(|(_, s)| s == "terminated"), "{states:?}");
    dep.sfuctl(&moto, &["down", "--yes"]).assert().success().stderr(predicate::str::contains("Nothing to delete"));
}

#[test]
fn a_wrong_secret_fails_with_the_aws_code_and_a_hint_and_creates_nothing() {
    let host = TestHost::start("aws-sig");
    let moto = Moto::start_with_auth(&["--address-pool", &host.address(), "--pool-exhausted-status", "400"]);
    let dep = AwsDeployment::new("awssig", &host);
    dep.write_spec(Some("us-east-1"));
    let wrong = "wrong-secret-0000000000000000000000000000";
    let out = dep.sfuctl_with(&moto, wrong, &["up"]).assert().code(2);
    let err = stderr(&out);
    assert!(err.contains("AuthFailure") && err.contains("401"), "{err}");
    assert!(err.contains("hint: AWS did not accept the credentials") && err.contains("clock"), "{err}");
    assert!(!err.contains(wrong) && !err.contains(moto.secret_key()), "secrets are never printed: {err}");
    assert_eq!(moto.leftovers(&dep.name), Vec::<String>::new());
    assert!(moto.instances().is_empty());
}

#[test]
fn a_missing_region_or_secret_is_bad_input() {
    let host = TestHost::start("aws-input");
    let dep = AwsDeployment::new("awsin", &host);
    dep.write_spec(None);
    let mut cmd = sfuctl(dep.home.path());
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE").env("AWS_SECRET_ACCESS_KEY", "x").env("SFUCTL_SECRET", "s").arg("up").arg(dep.spec());
    let out = cmd.assert().code(2);
    assert!(stderr(&out).contains("no AWS region is set") && stderr(&out).contains("AWS_REGION"), "{}", stderr(&out));
    dep.write_spec(Some("us-east-1"));
    let mut cmd = sfuctl(dep.home.path());
    cmd.env("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE").env("SFUCTL_SECRET", "s").arg("up").arg(dep.spec());
    let out = cmd.assert().code(2);
    assert!(stderr(&out).contains("hint: export AWS_SECRET_ACCESS_KEY"), "{}", stderr(&out));
}
