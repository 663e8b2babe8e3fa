//! DigitalOcean end to end: `plan`, `up`, `status` and `down` against the stateful fake (every request checked
//! against the official OpenAPI document), whose droplets get the addresses of real namespace hosts, so the SSH
//! deploy of coturn, its health check and the host firewall are real.


use predicates::prelude::*;
use serde_json::Value;

use crate::support::cli::require_tool;
use crate::support::cloud_deployment::{CloudDeployment, json};
use crate::support::do_fake::DoFake;
use crate::support::netns::TestHost;

/// The spec's provider block for this cloud.
const DIGITALOCEAN: &str = "  kind: digitalocean\n  region: fra1\n  size: s-1vcpu-1gb\n";


/// Requests the fake has seen, as `METHOD path`.
fn mutating_since(fake: &DoFake, seen: usize) -> Vec<String> {
    fake.request_lines().into_iter().skip(seen).filter(|l| !l.starts_with("GET")).collect()
}

/// What the fake holds of a deployment: droplets with its tag, firewalls with its name, keys with its name.
fn leftovers(fake: &DoFake, name: &str) -> Vec<String> {
    let state = fake.get("/_fake/state");
    let tag = format!("sfuctl:{name}");
    let mut left = Vec::new();
    for d in state["droplets"].as_array().into_iter().flatten() {
        if d["tags"].as_array().is_some_and(|t| t.iter().any(|x| x == &Value::from(tag.clone()))) {
            left.push(format!("droplet {}", d["name"]));
        }
    }
    for f in state["firewalls"].as_array().into_iter().flatten() {
        if f["name"] == format!("sfuctl-{name}") {
            left.push(format!("firewall {}", f["name"]));
        }
    }
    for k in state["ssh_keys"].as_array().into_iter().flatten() {
        if k["name"] == format!("sfuctl-{name}") {
            left.push(format!("key {}", k["name"]));
        }
    }
    for t in state["tags"].as_array().into_iter().flatten() {
        if t["name"] == tag || *t == tag {
            left.push(format!("tag {t}"));
        }
    }
    left
}

#[test]
fn digitalocean_plan_up_converge_scale_and_down() {
    require_tool("turnserver", "coturn");
    let hosts = [TestHost::start("do-1"), TestHost::start("do-2"), TestHost::start("do-3")];
    let pool = hosts.iter().map(|h| h.address()).collect::<Vec<_>>().join(",");
    let fake = DoFake::start_with(&["--address-pool", &pool, "--boot-delay", "1"]);
    let dep = CloudDeployment::new("do", &hosts[0], &[&hosts[0], &hosts[1], &hosts[2]], DIGITALOCEAN);
    dep.write_spec("40000-40999", 1);

    // plan refreshes from the API: nothing exists yet.
    let plan = json(&dep.sfuctl(&fake, &["plan", "--output", "json"]).assert().success());
    assert_eq!(plan["refreshed"], true, "{plan}");
    assert_eq!(plan["summary"]["add"], 5, "key, firewall, server, host firewall, service: {plan}");

    // Without a terminal, `up` shows the plan and refuses to create billable resources unless --yes: exit 2,
    // not one mutating request.
    let seen = fake.request_lines().len();
    let refused = dep.sfuctl(&fake, &["up"]).assert().code(2);
    let err = String::from_utf8_lossy(&refused.get_output().stderr).into_owned();
    assert!(err.contains("+ server") && err.contains("+ firewall") && err.contains("Plan: 5 to add") && err.contains(&format!("sfuctl up {} --yes", dep.spec().display())), "{err}");
    assert_eq!(mutating_since(&fake, seen), Vec::<String>::new());
    assert!(fake.get("/_fake/state")["droplets"].as_array().unwrap().is_empty(), "nothing created without confirmation");

    // up: key, firewall by tag, droplet with cloud-init, wait, SSH deploy, health.
    let up = json(&dep.sfuctl(&fake, &["up", "--yes", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["firewall"], "created", "{up}");
    assert_eq!(up["cloud"]["key_created"], true);
    assert_eq!(up["cloud"]["servers_created"], serde_json::json!([format!("sfuctl-{}-1", dep.name)]));
    let host = &up["hosts"][0]["host"];
    assert_eq!(host["address"], hosts[0].address().as_str(), "the first pool address is announced");
    assert!(host["health"].to_string().contains("STUN Binding"), "{up}");
    let conf = std::fs::read_to_string(hosts[0].opt_dir().join(&dep.name).join("config/turnserver.conf")).unwrap();
    assert!(conf.contains(&format!("external-ip={}\n", hosts[0].address())), "the API's public IPv4 is the announced address");
    let state = fake.get("/_fake/state");
    let droplet = &state["droplets"][0];
    assert!(droplet["_fake"]["user_data"].as_str().unwrap().starts_with("#cloud-config"), "{droplet}");
    let fw = state["firewalls"].as_array().unwrap().iter().find(|f| f["name"] == format!("sfuctl-{}", dep.name)).unwrap().clone();
    let rules = fw["inbound_rules"].to_string();
    assert!(rules.contains("\"ports\":\"40000-40999\"") && rules.contains("\"ports\":\"3478\""), "{rules}");
    assert_eq!(fw["outbound_rules"].as_array().unwrap().len(), 3, "explicit allow-all egress: {fw}");
    assert_eq!(fw["tags"], serde_json::json!([format!("sfuctl:{}", dep.name)]));

    // Converged: "No changes", and not one mutating request.
    let seen = fake.request_lines().len();
    dep.sfuctl(&fake, &["up"]).assert().success().stdout(predicate::str::contains("No changes."));
    assert_eq!(mutating_since(&fake, seen), Vec::<String>::new());
    dep.sfuctl(&fake, &["plan"]).assert().success().stdout(predicate::str::contains("No changes."));
    // A droplet is pinned by its ID: `ssh` hands OpenSSH that pin under a HostKeyAlias, and the exit code passes.
    let server_name = format!("sfuctl-{}-1", dep.name);
    dep.sfuctl(&fake, &["ssh"]).args([server_name.as_str(), "--", "exit", "4"]).assert().code(4);

    // (h) Someone deletes the media rule in the console: the audit names the cloud firewall, `up` puts it back.
    let fw = fake.get("/_fake/state")["firewalls"].as_array().unwrap().iter().find(|f| f["name"] == format!("sfuctl-{}", dep.name)).unwrap().clone();
    let inbound: Vec<Value> = fw["inbound_rules"].as_array().unwrap().iter().filter(|r| r["ports"] != "40000-40999").cloned().collect();
    let edited = serde_json::json!({ "name": fw["name"], "inbound_rules": inbound, "outbound_rules": fw["outbound_rules"], "tags": fw["tags"] });
    fake.oob("PUT", &format!("/v2/firewalls/{}", fw["id"].as_str().unwrap()), Some(&edited));
    let out = dep.sfuctl(&fake, &["audit", "--output", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(audit["ok"], false);
    assert_eq!(audit["hosts"][0]["cause"], "cloud-firewall", "{audit}");
    let cloud_check = audit["hosts"][0]["checks"].as_array().unwrap().iter().find(|c| c["id"] == "cloud-firewall").unwrap().clone();
    assert!(cloud_check["detail"].as_str().unwrap().contains("missing udp 40000-40999"), "{cloud_check}");
    let up = json(&dep.sfuctl(&fake, &["up", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["firewall"], "updated", "{up}");
    assert_eq!(up["audit"]["ok"], true, "{up}");

    // A new media range: the firewall is updated in place, the droplet kept, the service restarted.
    let droplet_id = droplet["id"].clone();
    dep.write_spec("42000-42999", 1);
    let plan = dep.sfuctl(&fake, &["plan"]).assert().success();
    let text = String::from_utf8_lossy(&plan.get_output().stdout).into_owned();
    assert!(text.contains("~ firewall") && text.contains("+ inbound udp 42000-42999") && text.contains("- inbound udp 40000-40999"), "{text}");
    let up = json(&dep.sfuctl(&fake, &["up", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["firewall"], "updated", "{up}");
    assert_eq!(up["cloud"]["servers_created"], serde_json::json!([]));
    assert_eq!(up["hosts"][0]["host"]["service"], "restarted");
    let state = fake.get("/_fake/state");
    assert_eq!(state["droplets"][0]["id"], droplet_id, "the droplet is kept");
    assert!(state["firewalls"].to_string().contains("42000-42999"));

    // count 1 -> 3 adds two; 3 -> 1 removes two, only after confirmation.
    dep.write_spec("42000-42999", 3);
    let up = json(&dep.sfuctl(&fake, &["up", "--yes", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["servers_created"].as_array().unwrap().len(), 2, "{up}");
    assert_eq!(up["hosts"].as_array().unwrap().len(), 3);
    assert!(up["hosts"].as_array().unwrap().iter().all(|h| h["ok"] == true), "{up}");
    dep.write_spec("42000-42999", 1);
    dep.sfuctl(&fake, &["up"]).assert().code(2).stderr(predicate::str::contains("--yes"));
    assert_eq!(fake.get("/_fake/state")["droplets"].as_array().unwrap().len(), 3, "nothing deleted without confirmation");
    let up = json(&dep.sfuctl(&fake, &["up", "--yes", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["servers_deleted"].as_array().unwrap().len(), 2, "{up}");

    let status = json(&dep.sfuctl(&fake, &["status", "--output", "json"]).assert().success());
    assert_eq!(status["servers"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["hosts"][0]["service"]["state"], "active");

    // The state is a cache: without it, everything is still found by tag and name.
    std::fs::remove_dir_all(dep.dir.path().join("state")).unwrap();
    dep.sfuctl(&fake, &["plan"]).assert().success().stdout(predicate::str::contains("No changes."));

    // down removes everything it made and nothing else.
    let theirs = serde_json::json!({ "name": "someone-elses", "public_key": std::fs::read_to_string(hosts[1].client_key().with_extension("pub")).unwrap().trim() });
    fake.oob("POST", "/v2/account/keys", Some(&theirs));
    dep.sfuctl(&fake, &["down"]).assert().code(2);
    dep.sfuctl(&fake, &["down", "--yes"]).assert().success().stdout(predicate::str::contains("deleted firewall"));
    assert_eq!(leftovers(&fake, &dep.name), Vec::<String>::new());
    assert!(fake.get("/_fake/state")["ssh_keys"].to_string().contains("someone-elses"), "a key sfuctl did not make is never touched");
    dep.sfuctl(&fake, &["down", "--yes"]).assert().success().stderr(predicate::str::contains("Nothing to delete"));
}

#[test]
fn a_failure_midway_is_continued_by_up_and_cleaned_by_down() {
    let host = TestHost::start("do-midway");
    let fake = DoFake::start_with(&["--address-pool", &host.address()]);
    let dep = CloudDeployment::new("mid", &host, &[&host], DIGITALOCEAN);
    dep.write_spec("40000-40999", 1);
    // Every droplet create fails: the key and firewall exist by then.
    fake.fault(serde_json::json!({ "method": "POST", "path_regex": "^/v2/droplets$", "status": 422, "count": 1, "message": "Region is out of capacity" }));
    let out = dep.sfuctl(&fake, &["up", "--yes"]).assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("Region is out of capacity") && err.contains("run `up` again"), "{err}");
    assert!(!err.contains(fake.token()), "the token never appears");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(dep.dir.path().join(format!("state/{}.json", dep.name))).unwrap()).unwrap();
    assert!(state["resources"]["firewall"].is_string(), "the firewall's ID was saved the moment it existed: {state}");
    // A re-run continues where it stopped.
    let up = json(&dep.sfuctl(&fake, &["up", "--yes", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["firewall"], "unchanged", "{up}");
    assert_eq!(up["cloud"]["servers_created"].as_array().unwrap().len(), 1);
    dep.sfuctl(&fake, &["down", "--yes"]).assert().success();
    assert_eq!(leftovers(&fake, &dep.name), Vec::<String>::new());
}

#[test]
fn a_bad_token_fails_with_a_hint_and_creates_nothing() {
    let host = TestHost::start("do-token");
    let fake = DoFake::start_with(&["--address-pool", &host.address()]);
    let dep = CloudDeployment::new("tok", &host, &[&host], DIGITALOCEAN);
    dep.write_spec("40000-40999", 1);
    let mut cmd = dep.sfuctl(&fake, &["up"]);
    cmd.env("DIGITALOCEAN_TOKEN", "dop_v1_wrong_token_value");
    let out = cmd.assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("401") && err.contains("DIGITALOCEAN_TOKEN"), "{err}");
    assert!(!err.contains("dop_v1_wrong_token_value"));
    assert_eq!(leftovers(&fake, &dep.name), Vec::<String>::new());
    // plan with the right token refreshes, and prints no token.
    let out = dep.sfuctl(&fake, &["plan"]).assert().success();
    let text = format!("{}{}", String::from_utf8_lossy(&out.get_output().stdout), String::from_utf8_lossy(&out.get_output().stderr));
    assert!(text.contains("Refreshed from DigitalOcean") && !text.contains(fake.token()), "{text}");
}

/// Two `up` of one spec at once from two machines (two state directories: no lock between them), then from one
/// machine (one state directory: the second waits for the first's lock). Each ends with exactly `count` servers:
/// a duplicate of a name is found after create and the lowest ID is kept, whichever run sees it.
#[test]
fn two_runs_at_once_end_with_exactly_count_servers() {
    require_tool("turnserver", "coturn");
    let hosts = [TestHost::start("do-twin-1"), TestHost::start("do-twin-2"), TestHost::start("do-twin-3")];
    let pool = hosts.iter().map(|h| h.address()).collect::<Vec<_>>().join(",");
    let fake = DoFake::start_with(&["--address-pool", &pool, "--boot-delay", "1"]);
    let dep = CloudDeployment::new("twin", &hosts[0], &[&hosts[0], &hosts[1], &hosts[2]], DIGITALOCEAN);
    dep.write_spec("40000-40999", 1);
    let droplets = || -> Vec<String> {
        fake.get("/_fake/state")["droplets"].as_array().into_iter().flatten().map(|d| d["name"].as_str().unwrap_or_default().to_string()).collect()
    };
    let other_machine = dep.dir.path().join("state-of-another-machine");
    let run = |state: Option<&std::path::Path>| {
        let mut cmd = dep.sfuctl(&fake, &["up", "--yes"]);
        if let Some(dir) = state {
            cmd.env("SFUCTL_STATE_DIR", dir);
        }
        cmd.output().unwrap()
    };
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(None));
        let b = s.spawn(|| run(Some(&other_machine)));
        (a.join().unwrap(), b.join().unwrap())
    });
    let text = |o: &std::process::Output| format!("exit {:?}\n{}{}", o.status.code(), String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    eprintln!("two machines:\n--- a: {}\n--- b: {}", text(&a), text(&b));
    assert!(a.status.success() || b.status.success(), "at least one run succeeds:\n{}\n{}", text(&a), text(&b));
    assert_eq!(droplets(), [format!("sfuctl-{}-1", dep.name)], "exactly count servers after two machines ran up at once");
    // The next run from either machine converges with nothing to create.
    let again = run(None);
    assert!(again.status.success(), "{}", text(&again));
    assert_eq!(droplets().len(), 1);

    // One machine: the second run waits for the first's lock, then finds everything made.
    dep.write_spec("40000-40999", 2);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| run(None));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let b = s.spawn(|| run(None));
        (a.join().unwrap(), b.join().unwrap())
    });
    assert!(a.status.success() && b.status.success(), "{}\n{}", text(&a), text(&b));
    assert!(text(&a).contains("waiting for another sfuctl run") || text(&b).contains("waiting for another sfuctl run"), "{}\n{}", text(&a), text(&b));
    let mut names = droplets();
    names.sort();
    assert_eq!(names, [format!("sfuctl-{}-1", dep.name), format!("sfuctl-{}-2", dep.name)]);
    dep.sfuctl(&fake, &["down", "--yes"]).assert().success();
    assert_eq!(leftovers(&fake, &dep.name), Vec::<String>::new());
}

/// Clouds reuse addresses: a server sfuctl made is pinned by its provider ID, the pin goes with `down`, and a new
/// server at the same address (with a new host key) is first contact again; a changed key on the SAME server is
/// still refused.
#[test]
fn a_reused_address_is_first_contact_again_but_a_changed_key_on_the_same_server_is_refused() {
    require_tool("turnserver", "coturn");
    let mut host = TestHost::start("do-reuse");
    let fake = DoFake::start_with(&["--address-pool", &host.address()]);
    let dep = CloudDeployment::new("reuse", &host, &[&host], DIGITALOCEAN);
    dep.write_spec("40000-40999", 1);
    let state = || -> Value { serde_json::from_str(&std::fs::read_to_string(dep.dir.path().join(format!("state/{}.json", dep.name))).unwrap()).unwrap() };

    let out = dep.sfuctl(&fake, &["up", "--yes"]).assert().success();
    assert!(String::from_utf8_lossy(&out.get_output().stderr).contains("first contact"));
    let first_id = fake.get("/_fake/state")["droplets"][0]["id"].to_string();
    let pins = state()["host_keys"].clone();
    assert_eq!(pins.as_object().unwrap().keys().collect::<Vec<_>>(), [&format!("server:{first_id}")], "pinned by the droplet's ID, not its address: {pins}");

    dep.sfuctl(&fake, &["down", "--yes"]).assert().success();
    assert_eq!(state()["host_keys"], serde_json::json!({}), "down drops the pins of the servers it deleted");

    // A new droplet gets the same address, and the machine behind it has a new host key.
    host.restart_sshd_with_new_host_key();
    let out = dep.sfuctl(&fake, &["up", "--yes"]).assert().success();
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("first contact") && !err.contains("CHANGED"), "{err}");
    let second_id = fake.get("/_fake/state")["droplets"][0]["id"].to_string();
    assert_ne!(first_id, second_id);
    assert!(fake.get("/_fake/state")["droplets"][0]["networks"]["v4"].to_string().contains(&host.address()), "the address is reused");

    // The same droplet with a changed key: refused, naming the pin to remove.
    host.restart_sshd_with_new_host_key();
    let out = dep.sfuctl(&fake, &["up"]).assert().code(1);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("CHANGED") && err.contains(&format!("server:{second_id}")), "{err}");
    dep.sfuctl(&fake, &["down", "--yes"]).assert().success();
    assert_eq!(leftovers(&fake, &dep.name), Vec::<String>::new());
}
