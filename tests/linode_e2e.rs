//! Linode end to end: `plan`, `up`, `audit`, `status` and `down` against the stateful fake (every request checked
//! against Linode's OpenAPI document), whose instances get the addresses of real namespace hosts, so the SSH
//! deploy of coturn, its health check, the host firewall and the audit are real. And a `count: 12` run through
//! the engine that must keep to Linode's create limit (10 per 30 s) instead of failing on it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;
use sfuctl::engine::apply::{Inputs, Ledger, converge};
use sfuctl::engine::{Timings, destroy, refresh};
use sfuctl::http::{RetryPolicy, Secret};
use sfuctl::provider::catalog::ProviderData;
use sfuctl::provider::linode::Linode;
use sfuctl::provider::{Owner, Provider};
use sfuctl::render::Renderer;
use sfuctl::spec::{ProviderKind, Spec};

use crate::support::cli::require_tool;
use crate::support::cloud_deployment::{CloudDeployment, json};
use crate::support::linode_fake::{LinodeFake, pool};
use crate::support::netns::TestHost;

/// The spec's provider block for this cloud.
const LINODE: &str = "  kind: linode\n  region: eu-central\n  size: g6-nanode-1\n";


/// The client's requests since `seen` that could change something.
fn mutating_since(fake: &LinodeFake, seen: usize) -> Vec<String> {
    fake.request_lines().into_iter().skip(seen).filter(|l| !l.starts_with("GET")).collect()
}

fn firewall_of(fake: &LinodeFake, name: &str) -> Value {
    fake.firewalls().into_iter().find(|f| f["label"] == format!("sfuctl-{name}").as_str()).unwrap_or_else(|| panic!("no firewall sfuctl-{name}"))
}

#[test]
fn linode_plan_up_audit_status_converge_and_down() {
    require_tool("turnserver", "coturn");
    let hosts = [TestHost::start("li-1")];
    let fake = LinodeFake::start_with(&["--address-pool", &hosts[0].address(), "--boot-delay", "1"]);
    let dep = CloudDeployment::new("li", &hosts[0], &[&hosts[0]], LINODE);
    dep.write_spec("40000-40999", 1);

    // plan with LINODE_TOKEN set refreshes from the API (it used to exit 2): nothing exists yet.
    let plan = json(&dep.sfuctl(&fake, &["plan", "--output", "json"]).assert().success());
    assert_eq!(plan["refreshed"], true, "{plan}");
    assert_eq!(plan["summary"]["add"], 4, "firewall, server, host firewall, service (no key: it goes inline): {plan}");

    // up: firewall, instance with firewall_id + authorized_keys + user data, wait, SSH deploy, health, audit.
    let up = json(&dep.sfuctl(&fake, &["up", "--yes", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["firewall"], "created", "{up}");
    assert_eq!(up["cloud"]["key_created"], false);
    assert_eq!(up["cloud"]["servers_created"], serde_json::json!([format!("sfuctl-{}-1", dep.name)]));
    let host = &up["hosts"][0]["host"];
    assert_eq!(host["address"], hosts[0].address().as_str(), "the pool address is announced");
    assert!(host["health"].to_string().contains("STUN Binding"), "{up}");
    assert_eq!(up["audit"]["ok"], true, "{up}");
    let conf = std::fs::read_to_string(hosts[0].opt_dir().join(&dep.name).join("config/turnserver.conf")).unwrap();
    assert!(conf.contains(&format!("external-ip={}\n", hosts[0].address())), "the API's public IPv4 is the announced address");

    let instance = fake.instances().into_iter().next().unwrap();
    assert!(instance["_fake"]["user_data"].as_str().unwrap().starts_with("#cloud-config"), "{instance}");
    let public = std::fs::read_to_string(hosts[0].client_key().with_extension("pub")).unwrap();
    assert_eq!(instance["_fake"]["authorized_keys"], serde_json::json!([public.trim()]));
    assert_eq!(instance["_fake"]["create_request"]["root_pass"], "<redacted>");
    assert_eq!(instance["tags"], serde_json::json!([format!("sfuctl:{}", dep.name)]));
    let fw = firewall_of(&fake, &dep.name);
    assert_eq!(instance["_fake"]["create_request"]["firewall_id"], fw["id"], "the firewall is given at create");
    assert_eq!(fw["devices"][0]["entity"]["id"], instance["id"]);
    assert_eq!((fw["rules"]["inbound_policy"].as_str(), fw["rules"]["outbound_policy"].as_str()), (Some("DROP"), Some("ACCEPT")));
    let rules = fw["rules"]["inbound"].to_string();
    assert!(rules.contains("\"ports\":\"40000-40999\"") && rules.contains("\"ports\":\"3478\"") && rules.contains("\"protocol\":\"UDP\""), "{rules}");
    assert_eq!(fw["tags"], serde_json::json!([format!("sfuctl:{}", dep.name)]));

    // audit on its own passes; status shows the instance and the service.
    let audit = json(&dep.sfuctl(&fake, &["audit", "--output", "json"]).assert().success());
    assert_eq!(audit["ok"], true, "{audit}");
    let status = json(&dep.sfuctl(&fake, &["status", "--output", "json"]).assert().success());
    assert_eq!(status["servers"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["hosts"][0]["service"]["state"], "active", "{status}");

    // Converged: "No changes", and not one mutating request.
    let seen = fake.request_lines().len();
    dep.sfuctl(&fake, &["up"]).assert().success().stdout(predicate::str::contains("No changes."));
    assert_eq!(mutating_since(&fake, seen), Vec::<String>::new());
    dep.sfuctl(&fake, &["plan"]).assert().success().stdout(predicate::str::contains("No changes."));

    // Someone deletes the media rule in the console: the audit names the cloud firewall, `up` puts it back in
    // place (one PUT of the rules: the same firewall, the same device).
    let inbound: Vec<Value> = fw["rules"]["inbound"].as_array().unwrap().iter().filter(|r| r["ports"] != "40000-40999").cloned().collect();
    fake.oob("PUT", &format!("/v4/networking/firewalls/{}/rules", fw["id"]), Some(&serde_json::json!({ "inbound": inbound })));
    let out = dep.sfuctl(&fake, &["audit", "--output", "json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    let audit: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(audit["hosts"][0]["cause"], "cloud-firewall", "{audit}");
    let seen = fake.request_lines().len();
    let up = json(&dep.sfuctl(&fake, &["up", "--output", "json"]).assert().success());
    assert_eq!(up["cloud"]["firewall"], "updated", "{up}");
    assert_eq!(up["audit"]["ok"], true, "{up}");
    assert_eq!(mutating_since(&fake, seen), [format!("PUT /v4/networking/firewalls/{}/rules -> 200", fw["id"])]);
    assert_eq!(firewall_of(&fake, &dep.name)["id"], fw["id"]);

    // The state is a cache: without it, everything is still found by tag and label.
    std::fs::remove_dir_all(dep.dir.path().join("state")).unwrap();
    dep.sfuctl(&fake, &["plan"]).assert().success().stdout(predicate::str::contains("No changes."));

    // down removes everything it made; the fake holds nothing of the deployment; a second down has nothing to do.
    dep.sfuctl(&fake, &["down"]).assert().code(2);
    dep.sfuctl(&fake, &["down", "--yes"]).assert().success().stdout(predicate::str::contains("deleted firewall"));
    assert_eq!(fake.leftovers(&dep.name), Vec::<String>::new());
    assert!(fake.instances().is_empty() && fake.firewalls().is_empty(), "{}", fake.get("/_fake/state"));
    dep.sfuctl(&fake, &["down", "--yes"]).assert().success().stderr(predicate::str::contains("Nothing to delete"));
}

#[test]
fn a_bad_token_fails_with_a_hint_and_creates_nothing() {
    let host = TestHost::start("li-token");
    let fake = LinodeFake::start_with(&["--address-pool", &host.address()]);
    let dep = CloudDeployment::new("lit", &host, &[&host], LINODE);
    dep.write_spec("40000-40999", 1);
    let mut cmd = dep.sfuctl(&fake, &["up"]);
    cmd.env("LINODE_TOKEN", "linode-wrong-token-value-0123");
    let out = cmd.assert().code(2);
    let err = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(err.contains("401") && err.contains("Invalid Token") && err.contains("LINODE_TOKEN"), "{err}");
    assert!(!err.contains("linode-wrong-token-value-0123"));
    assert_eq!(fake.leftovers(&dep.name), Vec::<String>::new());
    // plan with the right token refreshes, and prints no token.
    let out = dep.sfuctl(&fake, &["plan"]).assert().success();
    let text = format!("{}{}", String::from_utf8_lossy(&out.get_output().stdout), String::from_utf8_lossy(&out.get_output().stderr));
    assert!(text.contains("Refreshed from Linode") && !text.contains(fake.token()), "{text}");
}

/// `count: 12` through the engine (no SSH): the fake enforces Linode's 10 creates per 30 s, and the engine's
/// pacing must keep to it, so no create is refused and the run takes at least one window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_instances_keep_to_the_create_limit() {
    let fake = LinodeFake::start_with(&["--address-pool", &pool(12), "--boot-delay", "0.5"]);
    let provider: Arc<dyn Provider> = Arc::new(Linode::new(&fake.api_url(), Secret::new(fake.token()), RetryPolicy::default()).unwrap());
    let name = format!("pace{}", std::process::id());
    let yaml = format!(
        "name: {name}\nprovider: {{ kind: linode, region: eu-central, size: g6-nanode-1, count: 12 }}\nssh: {{ allow_from: [203.0.113.7/32] }}\nsfu: {{ kind: janus, rtc_ports: 40000-41000 }}\n"
    );
    let spec = Spec::parse(&yaml).unwrap();
    let pacing = ProviderData::get(ProviderKind::Linode).servers.create_pacing.expect("providers/linode.yaml paces creates");
    let saved = Arc::new(Mutex::new(Vec::new()));
    let ledger: Ledger = {
        let saved = Arc::clone(&saved);
        Arc::new(move |s| {
            saved.lock().unwrap().push(s);
            Ok(())
        })
    };
    let renderer = Renderer::new(None).unwrap();
    let secret = Secret::new("pacing-secret-0123456789abcdef0123456789");
    let timings = Timings { server: Duration::from_secs(120), firewall: Duration::from_secs(30), ssh: Duration::from_secs(5), busy: Duration::from_secs(30) };
    let key = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl".to_string();
    let inputs = Inputs { spec: &spec, base_dir: std::path::Path::new("."), renderer: &renderer, secret: &secret, public_key: Some(key), timings: &timings, ledger, saved_ids: vec![] };

    let started = Instant::now();
    let (servers, report) = converge(&provider, &inputs, |diff| {
        assert!(diff.delete.is_empty() && diff.create.len() == 12, "asked about {diff:?}");
        Ok(())
    }).await.unwrap_or_else(|e| panic!("{e:#}"));
    let took = started.elapsed();
    // 12 creates at 10 per 30 s: the 11th may start no sooner than 30 s after the 1st.
    let creates = 12u32;
    let bound = Duration::from_secs(pacing.per_seconds * u64::from((creates - 1) / pacing.max));
    let stats = provider.requests();
    eprintln!("[linode pacing] {creates} instances at {}/{} s: wall time {took:.2?}, lower bound {bound:?}; {stats:?}", pacing.max, pacing.per_seconds);

    assert_eq!(servers.len(), 12);
    assert_eq!(report.servers_created.len(), 12);
    assert!(servers.iter().all(|s| s.is_up()), "{servers:?}");
    assert!(took >= bound, "12 creates took {took:?}, under the pacing's bound {bound:?}");
    assert!(took < bound + Duration::from_secs(20), "pacing should cost about one window, took {took:?}");
    let refused: Vec<String> = fake.request_lines().into_iter().filter(|l| l.ends_with("-> 429")).collect();
    assert_eq!(refused, Vec::<String>::new(), "the engine paces creates: the API never had to refuse one");
    assert_eq!(stats.rate_limited, 0, "{stats:?}");
    assert_eq!(fake.instances().len(), 12);
    let fw = fake.firewalls();
    assert_eq!(fw.len(), 1);
    assert_eq!(fw[0]["devices"].as_array().unwrap().len(), 12, "every instance got the firewall at create");

    // down: nothing of the deployment is left.
    let owner = Owner::new(&name);
    let current = refresh(provider.as_ref(), ProviderData::get(ProviderKind::Linode), &owner, None).await.unwrap();
    let teardown = destroy(Arc::clone(&provider), &owner, &current, &timings).await;
    assert!(teardown.failed.is_empty(), "{teardown:?}");
    assert_eq!(teardown.deleted.len(), 13, "12 instances and the firewall");
    assert_eq!(fake.leftovers(&name), Vec::<String>::new());
}
