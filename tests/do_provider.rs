//! The DigitalOcean provider against the stateful fake (`tests/support/do_fake.rs`): every request it sends must
//! pass the official OpenAPI document, and each guard asserts that on drop.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sfuctl::error::{Exit, exit_of, render};
use sfuctl::http::{RetryPolicy, Secret};
use sfuctl::ports::{PortRange, Protocol};
use sfuctl::provider::digitalocean::DigitalOcean;
use sfuctl::provider::{FirewallRequest, FirewallRule, Owner, Provider, ServerId, ServerRequest, ServerStatus, SshKeyId};
use sfuctl::spec::Spec;

use crate::support::do_fake::{DoFake, pool};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl";
/// `ssh-keygen -l -E md5` of KEY.
const KEY_MD5: &str = "6f:da:2d:83:ce:03:2a:35:30:16:fb:38:1d:95:ac:72";

/// Fast retries, so fault tests take milliseconds (a `Retry-After` is still honoured as sent).
fn quick() -> RetryPolicy {
    RetryPolicy { base_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200), ..RetryPolicy::default() }
}

fn provider(fake: &DoFake) -> DigitalOcean {
    DigitalOcean::new(&fake.url(), Secret::new(fake.token()), quick()).unwrap()
}

fn spec(extra: &str) -> Spec {
    Spec::parse(&format!(
        "name: demo\nprovider: {{ kind: digitalocean, region: fra1 }}\nssh: {{ allow_from: [203.0.113.7/32] }}\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n{extra}"
    ))
    .unwrap()
}

fn server_request(owner: &Owner, index: u32) -> ServerRequest {
    ServerRequest {
        name: owner.server_name(index),
        region: "fra1".into(),
        size: "s-1vcpu-1gb".into(),
        image: "ubuntu-24-04-x64".into(),
        ssh_key_ids: vec![],
        public_key: None,
        tags: vec![owner.tag()],
        user_data: None,
        ipv6: false,
        firewall_id: None,
    }
}

/// The last request the client sent to `method path`, with its body.
fn last_body(fake: &DoFake, method: &str, path: &str) -> Value {
    fake.requests().into_iter().rev().find(|r| r["method"] == method && r["path"] == path).map(|r| r["body"].clone()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn ssh_key_is_created_then_reused_by_fingerprint() {
    let fake = DoFake::start();
    let p = provider(&fake);
    let (key, created) = p.ensure_ssh_key("sfuctl-demo", KEY).await.unwrap();
    assert!(created);
    assert_eq!((key.fingerprint.as_str(), key.name.as_str()), (KEY_MD5, "sfuctl-demo"));
    let before = p.requests();
    let (again, created) = p.ensure_ssh_key("another-name", &format!("{KEY}\n")).await.unwrap();
    assert!(!created);
    assert_eq!(again, key);
    let used = p.requests().total - before.total;
    assert_eq!((used, p.requests().mutating), (1, 1), "one GET by fingerprint, no list of all keys");
    assert!(fake.request_lines().iter().all(|l| !l.starts_with("GET /v2/account/keys ")), "{:?}", fake.request_lines());
    p.delete_ssh_key(&key.id).await.unwrap();
    p.delete_ssh_key(&key.id).await.unwrap();
}

#[tokio::test]
async fn firewall_is_created_by_tag_with_the_manifest_rules_and_outbound_rules() {
    let fake = DoFake::start();
    let p = provider(&fake);
    let owner = Owner::new("demo");
    let manifest = spec("  tcp_ports: [443]\n").manifest();
    let wanted = manifest.cloud_rules();
    let fw = p.put_firewall(&FirewallRequest::for_manifest(&owner, &manifest), None).await.unwrap();
    assert_eq!(fw.name, "sfuctl-demo");
    assert_eq!(fw.tags, ["sfuctl:demo"]);
    assert!(fw.diff(&wanted).is_empty(), "{:?}", fw.diff(&wanted));
    assert!(fw.outbound_ok);
    assert!(!fw.ready, "a new firewall is `waiting` at first");
    // With no droplets and no delay, the next read shows it applied.
    let again = p.get_firewall(&fw.id).await.unwrap().unwrap();
    assert!(again.ready, "{}", again.status);
    assert_eq!(p.list_firewalls(&owner).await.unwrap(), vec![again.clone()]);
    assert!(p.list_firewalls(&Owner::new("dem")).await.unwrap().is_empty(), "names match exactly");

    // What went over the wire: the tag first, explicit port strings, ICMP with "0".
    let lines = fake.request_lines();
    assert_eq!(lines[..2], ["POST /v2/tags -> 201".to_string(), "POST /v2/firewalls -> 202".to_string()]);
    let body = last_body(&fake, "POST", "/v2/firewalls");
    let inbound: Vec<String> = body["inbound_rules"].as_array().unwrap().iter().map(|r| format!("{} {}", r["protocol"], r["ports"])).collect();
    assert_eq!(inbound, [r#""tcp" "22""#, r#""udp" "40000-41000""#, r#""tcp" "8088""#, r#""tcp" "443""#]);
    let outbound: Vec<String> = body["outbound_rules"].as_array().unwrap().iter().map(|r| format!("{} {}", r["protocol"], r["ports"])).collect();
    assert_eq!(outbound, [r#""tcp" "1-65535""#, r#""udp" "1-65535""#, r#""icmp" "0""#]);
    assert_eq!(body["inbound_rules"][0]["sources"], json!({ "addresses": ["203.0.113.7/32"] }));

    // Creating again when it already exists (a lost answer, a second run without reading first) takes it over.
    let taken = p.put_firewall(&FirewallRequest::for_manifest(&owner, &manifest), None).await.unwrap();
    assert_eq!(taken.id, fw.id);
    p.delete_firewall(&fw.id).await.unwrap();
    p.delete_firewall(&fw.id).await.unwrap();
    assert!(p.get_firewall(&fw.id).await.unwrap().is_none());
}

#[tokio::test]
async fn firewall_update_in_place_keeps_tags_and_droplets() {
    let fake = DoFake::start();
    let p = provider(&fake);
    let owner = Owner::new("demo");
    let manifest = spec("").manifest();
    let mut req = FirewallRequest::for_manifest(&owner, &manifest);
    let fw = p.put_firewall(&req, None).await.unwrap();
    let server = p.create_server(&server_request(&owner, 1)).await.unwrap();
    let server = p.get_server(&server.id).await.unwrap().unwrap();
    assert!(fw.covers(&server), "covered through the tag");
    // Someone attaches a droplet by hand; sfuctl's update must not drop it.
    fake.oob("POST", &format!("/v2/firewalls/{}/droplets", fw.id), Some(&json!({ "droplet_ids": [server.id.0.parse::<u64>().unwrap()] })));
    let current = p.get_firewall(&fw.id).await.unwrap().unwrap();

    // Unchanged: nothing is sent.
    let before = p.requests().mutating;
    assert_eq!(p.put_firewall(&req, Some(&current)).await.unwrap(), current);
    assert_eq!(p.requests().mutating, before);

    req.rules.push(FirewallRule::new(Protocol::Tcp, PortRange::single(443), sfuctl::ports::anywhere()));
    let updated = p.put_firewall(&req, Some(&current)).await.unwrap();
    assert_eq!(updated.id, fw.id);
    assert_eq!(updated.tags, ["sfuctl:demo"]);
    assert_eq!(updated.server_ids, std::slice::from_ref(&server.id));
    assert!(updated.diff_rules(&req.rules).is_empty());
    assert!(updated.outbound_ok);
    assert_eq!(fake.request_lines().iter().filter(|l| l.starts_with("PUT ")).count(), 1);
    let listed = p.list_firewalls(&owner).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert!(listed[0].covers(&server));
}

#[tokio::test]
async fn server_is_created_with_tags_keys_and_user_data_and_comes_up() {
    let fake = DoFake::start_with(&["--address-pool", &pool(2), "--boot-delay", "0.3"]);
    let p = provider(&fake);
    let owner = Owner::new("demo");
    let (key, _) = p.ensure_ssh_key(&owner.ssh_key_name(), KEY).await.unwrap();
    let user_data = "#cloud-config\nruncmd: [\"echo hello\"]\n".to_string();
    let req = ServerRequest::for_spec(&spec(""), 1, vec![key.id.clone()], Some(user_data.clone())).unwrap();
    let server = p.create_server(&req).await.unwrap();
    assert_eq!((server.name.as_str(), &server.status, server.public_ipv4), ("sfuctl-demo-1", &ServerStatus::Pending, None));
    assert_eq!(server.tags, ["sfuctl:demo"]);
    let state = fake.get("/_fake/state");
    let droplet = state["droplets"].as_array().unwrap().iter().find(|d| d["name"] == "sfuctl-demo-1").unwrap().clone();
    assert_eq!(droplet["_fake"]["user_data"], json!(user_data), "user_data goes as plain text");
    assert_eq!(droplet["_fake"]["ssh_key_ids"], json!([key.id.0.parse::<u64>().unwrap()]));
    assert_eq!(last_body(&fake, "POST", "/v2/droplets")["size"], "s-2vcpu-4gb", "the default size from providers/digitalocean.yaml");

    // The engine's wait: poll until running with a public address.
    let up = sfuctl::wait::until("droplet", Duration::from_secs(10), Duration::from_millis(100), || async {
        let s = p.get_server(&server.id).await?.expect("still there");
        Ok(if s.is_up() { sfuctl::wait::Check::Done(s) } else { sfuctl::wait::Check::NotYet(s.status.to_string()) })
    })
    .await
    .unwrap();
    assert_eq!(up.public_ipv4, Some("10.200.250.2".parse().unwrap()));
    assert_eq!(up.region.as_deref(), Some("fra1"));
}

#[tokio::test]
async fn listing_by_tag_follows_pages_past_20_droplets() {
    let fake = DoFake::start_with(&["--address-pool", &pool(27)]);
    let p = provider(&fake);
    let owner = Owner::new("big");
    for i in 1..=25 {
        p.create_server(&server_request(&owner, i)).await.unwrap();
    }
    let other = Owner::new("big-2");
    p.create_server(&server_request(&other, 1)).await.unwrap();

    let paged = p.clone().with_page_size(10);
    let before = paged.requests().total;
    let servers = paged.list_servers(&owner).await.unwrap();
    assert_eq!(paged.requests().total - before, 3, "pages of 10, 10 and 5");
    let mut names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    names.sort();
    names.dedup();
    assert_eq!(names.len(), 25);
    assert!(servers.iter().all(|s| s.tags == ["sfuctl:big"]), "the other deployment's droplet is not ours");

    let before = p.requests().total;
    assert_eq!(p.list_servers(&owner).await.unwrap().len(), 25);
    assert_eq!(p.requests().total - before, 1, "one page of 200");
    assert_eq!(p.list_servers(&other).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_deleted_droplet_reads_as_none_and_deletes_twice() {
    let fake = DoFake::start();
    let p = provider(&fake);
    let owner = Owner::new("demo");
    let server = p.create_server(&server_request(&owner, 1)).await.unwrap();
    p.delete_server(&server.id).await.unwrap();
    assert_eq!(p.get_server(&server.id).await.unwrap(), None);
    p.delete_server(&server.id).await.unwrap();
    assert!(p.list_servers(&owner).await.unwrap().is_empty());
    p.forget_owner(&owner).await.unwrap();
    p.forget_owner(&owner).await.unwrap();
    let err = p.get_server(&ServerId("not-a-number".into())).await.unwrap_err();
    assert!(render(&err).contains("not a DigitalOcean droplet id"));
}

#[tokio::test]
async fn rate_limit_429_with_retry_after_is_waited_out() {
    let fake = DoFake::start();
    let p = provider(&fake);
    fake.fault(json!({ "method": "GET", "path_regex": "^/v2/droplets$", "status": 429, "count": 2, "retry_after": 1 }));
    let started = Instant::now();
    assert!(p.list_servers(&Owner::new("demo")).await.unwrap().is_empty());
    let stats = p.requests();
    assert_eq!((stats.total, stats.retries, stats.rate_limited), (3, 2, 2), "{stats:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After: 1 waited twice, took {:?}", started.elapsed());
    assert!(stats.waited_ms >= 2000);
}

#[tokio::test]
async fn rate_limit_that_persists_fails_with_a_hint() {
    let fake = DoFake::start();
    let policy = RetryPolicy { max_attempts: 2, ..quick() };
    let p = DigitalOcean::new(&fake.url(), Secret::new(fake.token()), policy).unwrap();
    fake.fault(json!({ "method": "GET", "path_regex": "^/v2/firewalls$", "status": 429, "count": -1 }));
    let err = p.list_firewalls(&Owner::new("demo")).await.unwrap_err();
    let text = render(&err);
    assert!(text.contains("GET /v2/firewalls returned 429 (after 2 attempts)"), "{text}");
    assert!(text.contains("Caused by: API Rate limit exceeded."), "{text}");
    assert!(text.contains("hint: DigitalOcean's rate limit was hit"), "{text}");
}

#[tokio::test]
async fn server_errors_are_retried_and_a_create_is_never_doubled() {
    let fake = DoFake::start();
    let p = provider(&fake);
    let owner = Owner::new("demo");
    fake.fault(json!({ "method": "GET", "path_regex": "^/v2/firewalls$", "status": 500, "count": 1 }));
    assert!(p.list_firewalls(&owner).await.unwrap().is_empty());
    assert_eq!(p.requests().retries, 1);

    // A create answered 500 may or may not have happened: the engine looks by name before it posts again.
    fake.fault(json!({ "method": "POST", "path_regex": "^/v2/droplets$", "status": 500, "count": 1 }));
    let server = sfuctl::engine::apply::create_server(&p, &owner, &server_request(&owner, 1), &quick()).await.unwrap();
    assert_eq!(server.name, "sfuctl-demo-1");
    assert_eq!(p.list_servers(&owner).await.unwrap().len(), 1);
    let lines = fake.request_lines();
    assert_eq!(
        lines[2..5],
        ["POST /v2/droplets -> 500".to_string(), "GET /v2/droplets -> 200".to_string(), "POST /v2/droplets -> 202".to_string()]
    );
}

#[tokio::test]
async fn a_422_names_the_operation_and_carries_digitaloceans_message() {
    let fake = DoFake::start();
    let p = provider(&fake);
    let mut req = server_request(&Owner::new("demo"), 1);
    req.size = "s-99vcpu-1tb".into();
    let err = p.create_server(&req).await.unwrap_err();
    assert_eq!(exit_of(&err), Exit::Failed);
    assert_eq!(sfuctl::http::api_status(&err), Some(422));
    assert_eq!(
        render(&err),
        "error: cannot create droplet `sfuctl-demo-1` on DigitalOcean\n  Caused by: POST /v2/droplets returned 422\n  Caused by: You specified an invalid size for Droplet creation.\n"
    );
    assert_eq!(p.requests().total, 1, "a 422 is not retried");
}

#[tokio::test]
async fn a_bad_token_is_a_401_with_a_hint_and_the_token_is_never_shown() {
    let fake = DoFake::start();
    let token = "dop_v1_this-is-not-the-token-0123456789";
    let p = DigitalOcean::new(&fake.url(), Secret::new(token), quick()).unwrap();
    let err = p.list_servers(&Owner::new("demo")).await.unwrap_err();
    let text = render(&err);
    assert!(text.contains("GET /v2/droplets returned 401"), "{text}");
    assert!(text.contains("Caused by: Unable to authenticate you."), "{text}");
    assert!(text.contains("hint: check $DIGITALOCEAN_TOKEN"), "{text}");
    assert_eq!(p.requests().total, 1, "a 401 is not retried");
    for shown in [text, format!("{err:?}"), format!("{err:#}"), format!("{p:?}")] {
        assert!(!shown.contains(token) && !shown.contains(fake.token()), "token leaked: {shown}");
    }
}

#[tokio::test]
async fn the_full_create_flow_costs_few_requests() {
    let fake = DoFake::start_with(&["--address-pool", &pool(2), "--boot-delay", "0.2", "--firewall-delay", "0.2"]);
    let p = provider(&fake);
    let spec = spec("");
    let owner = Owner::new(&spec.name);
    let provider: &dyn Provider = &p;
    // What `up` does, in order: read what exists, key, firewall (before any server), server, wait.
    assert!(provider.list_servers(&owner).await.unwrap().is_empty());
    assert!(provider.list_firewalls(&owner).await.unwrap().is_empty());
    let (key, _) = provider.ensure_ssh_key(&owner.ssh_key_name(), KEY).await.unwrap();
    let fw = provider.put_firewall(&FirewallRequest::for_manifest(&owner, &spec.manifest()), None).await.unwrap();
    let req = ServerRequest::for_spec(&spec, 1, vec![SshKeyId(key.id.0.clone())], Some("#cloud-config\n".into())).unwrap();
    let server = provider.create_server(&req).await.unwrap();
    let created = provider.requests();
    let server = sfuctl::wait::until("droplet", Duration::from_secs(10), Duration::from_millis(100), || async {
        let s = provider.get_server(&server.id).await?.expect("exists");
        Ok(if s.is_up() { sfuctl::wait::Check::Done(s) } else { sfuctl::wait::Check::NotYet(s.status.to_string()) })
    })
    .await
    .unwrap();
    let fw = sfuctl::wait::until("firewall", Duration::from_secs(10), Duration::from_millis(100), || async {
        let f = provider.get_firewall(&fw.id).await?.expect("exists");
        Ok(if f.ready { sfuctl::wait::Check::Done(f) } else { sfuctl::wait::Check::NotYet(f.status.clone()) })
    })
    .await
    .unwrap();
    assert!(fw.covers(&server));
    let total = provider.requests();
    eprintln!("create flow: {created:?} before waiting; {total:?} after; {:#?}", fake.request_lines());
    assert_eq!((created.total, created.mutating), (7, 4), "2 lists, key GET+POST, tag+firewall POST, droplet POST");
}
