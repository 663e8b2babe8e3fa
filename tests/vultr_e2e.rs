//! Vultr end to end: `validate`, `plan`, `up`, `audit`, `status` and `down` against the stateful fake (every
//! request checked against Vultr's OpenAPI document and its prose rules), whose instances get the addresses of
//! real namespace hosts, so the SSH deploy of coturn, its health check, the host firewall and the audit are real.

use std::time::Instant;

use predicates::prelude::*;
use serde_json::{Value, json};

use crate::support::cli::require_tool;
use crate::support::cloud_deployment::{CloudDeployment, json};
use crate::support::netns::TestHost;

/// The spec's provider block for this cloud.
const VULTR: &str = "  kind: vultr\n  region: fra\n  size: vc2-1c-1gb\n";
use crate::support::vultr_fake::VultrFake;


/// Requests other than GET the fake has seen since `seen`.
fn mutating_since(fake: &VultrFake, seen: usize) -> Vec<String> {
    fake.request_lines().into_iter().skip(seen).filter(|l| !l.starts_with("GET")).collect()
}

#[test]
fn vultr_validate_plan_up_audit_status_and_down() {
    require_tool("turnserver", "coturn");
    let hosts = [TestHost::start("vu-1"), TestHost::start("vu-2")];
    let pool = hosts.iter().map(|h| h.address()).collect::<Vec<_>>().join(",");
    let fake = VultrFake::start_with(&["--address-pool", &pool, "--boot-delay", "1"]);
    let dep = CloudDeployment::new("vu", &hosts[0], &[&hosts[0], &hosts[1]], VULTR);
    dep.write_spec("40000-40999", 1);

    dep.sfuctl(&fake, &["validate"]).assert().success();
    // plan refreshes from the API: nothing exists yet, and the group is named in Vultr's terms.
    let out = dep.sfuctl(&fake, &["plan"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains(&format!("Vultr firewall group, description sfuctl-{}, given to each instance at launch", dep.name)), "{text}");
    assert!(!text.contains("outbound"), "a Vultr firewall group does not filter egress: no outbound rules: {text}");
    let plan = json(&dep.sfuctl(&fake, &["plan", "--output", "json"]).assert().success());
    assert_eq!(plan["refreshed"], true, "{plan}");
    assert_eq!(plan["summary"]["add"], 5, "key, firewall group, instance, host firewall, service: {plan}");

    // up: key, group with the manifest's rules, instance with it at launch and cloud-init, wait, SSH deploy, health.
    let up = json(&dep.sfuctl(&fake, &["up", "--yes", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["firewall"], "created", "{up}");
    assert_eq!(up["cloud"]["key_created"], true);
    assert_eq!(up["cloud"]["servers_created"], json!([format!("sfuctl-{}-1", dep.name)]));
    let host = &up["hosts"][0]["host"];
    assert_eq!(host["address"], hosts[0].address().as_str(), "the first pool address is announced");
    assert!(host["health"].to_string().contains("STUN Binding"), "{up}");
    let conf = std::fs::read_to_string(hosts[0].opt_dir().join(&dep.name).join("config/turnserver.conf")).unwrap();
    assert!(conf.contains(&format!("external-ip={}\n", hosts[0].address())), "the API's main_ip is the announced address");
    let state = fake.get("/_fake/state");
    let instance = state["instances"][0].clone();
    let group = fake.group(&dep.name).expect("the group exists");
    assert_eq!(instance["firewall_group_id"], group["id"], "the group was given at launch");
    assert_eq!(instance["tags"], json!([format!("sfuctl:{}", dep.name)]));
    assert_eq!(instance["_fake"]["create_request"]["os_id"], 2284, "Ubuntu 24.04 LTS x64, looked up by name");
    let rules: Vec<String> = group["rules"].as_array().unwrap().iter().map(|r| format!("{} {} {}", r["ip_type"].as_str().unwrap(), r["protocol"].as_str().unwrap(), r["port"].as_str().unwrap())).collect();
    for wanted in ["v4 udp 40000:40999", "v6 udp 40000:40999", "v4 udp 3478", "v6 tcp 3478", "v4 tcp 22"] {
        assert!(rules.contains(&wanted.to_string()), "{wanted} missing: {rules:#?}");
    }

    // The audit passes from outside, every layer.
    let out = dep.sfuctl(&fake, &["audit", "--output", "json"]).output().unwrap();
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    assert_eq!(out.status.code(), Some(0), "{audit}\n{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(audit["ok"], true, "{audit}");
    let cloud = audit["hosts"][0]["checks"].as_array().unwrap().iter().find(|c| c["id"] == "cloud-firewall").unwrap().clone();
    assert_eq!(cloud["status"], "pass", "{cloud}");

    // Converged: "No changes", and not one mutating request.
    let seen = fake.request_lines().len();
    dep.sfuctl(&fake, &["up"]).assert().success().stdout(predicate::str::contains("No changes."));
    assert_eq!(mutating_since(&fake, seen), Vec::<String>::new());

    // Someone deletes the v6 media rule in the console: the audit names the cloud firewall, `up` puts it back.
    let media_v6 = group["rules"].as_array().unwrap().iter().find(|r| r["ip_type"] == "v6" && r["port"] == "40000:40999").unwrap().clone();
    fake.oob("DELETE", &format!("/v2/firewalls/{}/rules/{}", group["id"].as_str().unwrap(), media_v6["id"]), None);
    let out = dep.sfuctl(&fake, &["audit", "--output", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(audit["hosts"][0]["cause"], "cloud-firewall", "{audit}");
    let seen = fake.request_lines().len();
    let up = json(&dep.sfuctl(&fake, &["up", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["firewall"], "updated", "{up}");
    assert_eq!(up["audit"]["ok"], true, "{up}");
    let changed = mutating_since(&fake, seen);
    assert_eq!(changed, [format!("POST /v2/firewalls/{}/rules -> 201", group["id"].as_str().unwrap())], "one rule added back, nothing else");

    let status = json(&dep.sfuctl(&fake, &["status", "--output", "json"]).assert().success());
    assert_eq!(status["servers"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["hosts"][0]["service"]["state"], "active", "{status}");

    // A second instance, locked for a while after create: `down` right after `up` waits until Vultr lets it go.
    fake.post("/_fake/config", &json!({ "lock_delay": 25 }));
    dep.write_spec("40000-40999", 2);
    let started = Instant::now();
    let up = json(&dep.sfuctl(&fake, &["up", "--yes", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["servers_created"].as_array().unwrap().len(), 1, "{up}");
    assert!(up["hosts"].as_array().unwrap().iter().all(|h| h["ok"] == true), "{up}");
    let state = fake.get("/_fake/state");
    let second = state["instances"].as_array().unwrap().iter().find(|i| i["label"] == format!("sfuctl-{}-2", dep.name).as_str()).unwrap().clone();
    assert_eq!(second["server_status"], "locked", "still locked when down starts ({:?} after up began)", started.elapsed());
    let seen = fake.request_lines().len();
    let out = dep.sfuctl(&fake, &["down", "--yes"]).assert().success();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    let deletes: Vec<String> = fake.request_lines().into_iter().skip(seen).filter(|l| l.starts_with(&format!("DELETE /v2/instances/{}", second["id"].as_str().unwrap()))).collect();
    assert!(deletes.first().is_some_and(|l| l.ends_with("-> 500")) && deletes.last().is_some_and(|l| l.ends_with("-> 204")), "refused while locked, then deleted: {deletes:#?}\n{err}");

    // down removed everything it made and nothing else; a second down has nothing to do.
    assert_eq!(fake.leftovers(&dep.name), Vec::<String>::new());
    let state = fake.get("/_fake/state");
    assert!(state["instances"].as_array().unwrap().is_empty() && state["firewall_groups"].as_array().unwrap().is_empty() && state["ssh_keys"].as_array().unwrap().is_empty(), "{state}");
    dep.sfuctl(&fake, &["down", "--yes"]).assert().success().stderr(predicate::str::contains("Nothing to delete"));
    fake.assert_no_violations();
}

#[test]
fn a_bad_api_key_fails_with_a_hint_and_creates_nothing() {
    let host = TestHost::start("vu-key");
    let fake = VultrFake::start_with(&["--address-pool", &host.address()]);
    let dep = CloudDeployment::new("vuk", &host, &[&host], VULTR);
    dep.write_spec("40000-40999", 1);
    let mut cmd = dep.sfuctl(&fake, &["up"]);
    cmd.env("VULTR_API_KEY", "WRONGKEY0123456789ABCDEFGHIJKLMNOPQR");
    let out = cmd.assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("401") && err.contains("VULTR_API_KEY") && err.contains("Invalid API token."), "{err}");
    assert!(!err.contains("WRONGKEY0123456789") && !err.contains(fake.api_key()), "{err}");
    assert_eq!(fake.leftovers(&dep.name), Vec::<String>::new());
    // Without a key, plan works against an empty account and says so.
    let mut cmd = dep.sfuctl(&fake, &["plan"]);
    cmd.env_remove("VULTR_API_KEY");
    let out = cmd.assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stdout).contains("Plan: 5 to add"));
    fake.assert_no_violations();
}
