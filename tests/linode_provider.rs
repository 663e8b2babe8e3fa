//! The Linode provider against the stateful fake (`tests/support/linode_fake.rs`): every request it sends must
//! pass Linode's OpenAPI document (the guard asserts `/_fake/violations` is empty on drop).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sfuctl::error::{Exit, exit_of, render};
use sfuctl::http::{RetryPolicy, Secret};
use sfuctl::ports::{PortRange, Protocol};
use sfuctl::provider::linode::Linode;
use sfuctl::provider::{FirewallId, FirewallRequest, FirewallRule, Owner, Provider, ServerId, ServerRequest, ServerStatus};
use sfuctl::spec::Spec;

use crate::support::linode_fake::{LinodeFake, pool};

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl";

/// Fast retries, so fault tests take milliseconds (a `Retry-After` is still honoured as sent).
fn quick() -> RetryPolicy {
    RetryPolicy { base_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200), ..RetryPolicy::default() }
}

fn provider(fake: &LinodeFake) -> Linode {
    Linode::new(&fake.api_url(), Secret::new(fake.token()), quick()).unwrap()
}

fn spec(region: &str, extra: &str) -> Spec {
    Spec::parse(&format!(
        "name: demo\nprovider: {{ kind: linode, region: {region} }}\nssh: {{ allow_from: [203.0.113.7/32] }}\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n{extra}"
    ))
    .unwrap()
}

/// Server `index` of `owner`, as the engine asks for it (key inline, no user data).
fn server_request(owner: &Owner, index: u32) -> ServerRequest {
    let mut req = ServerRequest::for_spec(&spec("eu-central", ""), index, vec![], None).unwrap();
    req.name = owner.server_name(index);
    req.tags = vec![owner.tag()];
    req.size = "g6-nanode-1".into();
    req.public_key = Some(KEY.into());
    req
}

/// The last request the client sent to `method path`, with its body.
fn last_body(fake: &LinodeFake, method: &str, path: &str) -> Value {
    fake.requests().into_iter().rev().find(|r| r["method"] == method && r["path"] == path).map(|r| r["body"].clone()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn firewall_is_created_with_drop_policy_explicit_rules_and_the_owner_tag() {
    let fake = LinodeFake::start();
    let p = provider(&fake);
    let owner = Owner::new("demo");
    let manifest = spec("eu-central", "  tcp_ports: [443]\n").manifest();
    let wanted = manifest.cloud_rules();
    let fw = p.put_firewall(&FirewallRequest::for_manifest(&owner, &manifest), None).await.unwrap();
    assert_eq!(fw.name, "sfuctl-demo");
    assert!(fw.diff(&wanted).is_empty(), "{:?}", fw.diff(&wanted));
    assert!(fw.ready && fw.outbound_ok, "{fw:?}");
    assert!(fw.tags.is_empty(), "a Linode firewall's tags attach nothing");
    assert_eq!(p.get_firewall(&fw.id).await.unwrap().as_ref(), Some(&fw));
    assert_eq!(p.list_firewalls(&owner).await.unwrap(), vec![fw.clone()]);
    assert!(p.list_firewalls(&Owner::new("dem")).await.unwrap().is_empty(), "labels match exactly");

    let body = last_body(&fake, "POST", "/v4/networking/firewalls");
    assert_eq!(body["label"], "sfuctl-demo");
    assert_eq!(body["tags"], json!(["sfuctl:demo"]));
    assert_eq!((body["rules"]["inbound_policy"].as_str(), body["rules"]["outbound_policy"].as_str()), (Some("DROP"), Some("ACCEPT")));
    let inbound: Vec<String> = body["rules"]["inbound"].as_array().unwrap().iter().map(|r| format!("{} {}", r["protocol"], r["ports"])).collect();
    assert_eq!(inbound, [r#""TCP" "22""#, r#""UDP" "40000-41000""#, r#""TCP" "8088""#, r#""TCP" "443""#]);
    assert_eq!(body["rules"]["inbound"][0]["addresses"], json!({ "ipv4": ["203.0.113.7/32"] }));
    assert_eq!(body["rules"]["inbound"][1]["addresses"], json!({ "ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"] }));

    // Creating again when it already exists (a lost answer): the label is taken, so it is taken over.
    let taken = p.put_firewall(&FirewallRequest::for_manifest(&owner, &manifest), None).await.unwrap();
    assert_eq!(taken.id, fw.id);
    assert_eq!(fake.firewalls().len(), 1);
    p.delete_firewall(&fw.id).await.unwrap();
    p.delete_firewall(&fw.id).await.unwrap();
    assert!(p.get_firewall(&fw.id).await.unwrap().is_none());
}

#[tokio::test]
async fn firewall_rules_are_replaced_in_place_and_nothing_is_sent_when_they_match() {
    let fake = LinodeFake::start();
    let p = provider(&fake);
    let owner = Owner::new("demo");
    let mut req = FirewallRequest::for_manifest(&owner, &spec("eu-central", "").manifest());
    let fw = p.put_firewall(&req, None).await.unwrap();
    let mut sreq = server_request(&owner, 1);
    sreq.firewall_id = Some(fw.id.clone());
    let server = p.create_server(&sreq).await.unwrap();
    let current = p.get_firewall(&fw.id).await.unwrap().unwrap();
    assert_eq!(current.server_ids, std::slice::from_ref(&server.id), "firewall_id at create assigns the instance");
    assert!(current.covers(&server));

    let before = p.requests().mutating;
    assert_eq!(p.put_firewall(&req, Some(&current)).await.unwrap(), current);
    assert_eq!(p.requests().mutating, before, "unchanged: nothing is sent");

    req.rules.push(FirewallRule::new(Protocol::Tcp, PortRange::single(443), sfuctl::ports::anywhere()));
    let updated = p.put_firewall(&req, Some(&current)).await.unwrap();
    assert_eq!(updated.id, fw.id);
    assert_eq!(updated.server_ids, std::slice::from_ref(&server.id), "devices stay");
    assert!(updated.diff_rules(&req.rules).is_empty());
    let puts: Vec<String> = fake.request_lines().into_iter().filter(|l| l.starts_with("PUT ")).collect();
    assert_eq!(puts, [format!("PUT /v4/networking/firewalls/{}/rules -> 200", fw.id)]);
    let reread = p.get_firewall(&fw.id).await.unwrap().unwrap();
    assert_eq!(reread, updated);

    // Someone opens the inbound policy in the console: it reads as a difference and is closed again.
    fake.oob("PUT", &format!("/v4/networking/firewalls/{}/rules", fw.id), Some(&json!({ "inbound_policy": "ACCEPT" })));
    let opened = p.get_firewall(&fw.id).await.unwrap().unwrap();
    assert!(!opened.diff_rules(&req.rules).is_empty(), "{opened:?}");
    let closed = p.put_firewall(&req, Some(&opened)).await.unwrap();
    assert!(closed.diff_rules(&req.rules).is_empty(), "{closed:?}");
    assert_eq!(fake.firewalls()[0]["rules"]["inbound_policy"], "DROP");
}

#[tokio::test]
async fn instance_is_created_with_key_firewall_tags_and_base64_user_data_and_comes_up() {
    let fake = LinodeFake::start_with(&["--address-pool", &pool(2), "--boot-delay", "0.4"]);
    let p = provider(&fake);
    let s = spec("eu-central", "");
    let owner = Owner::new(&s.name);
    let fw = p.put_firewall(&FirewallRequest::for_manifest(&owner, &s.manifest()), None).await.unwrap();
    let user_data = "#cloud-config\nruncmd: [\"echo hello\"]\n".to_string();
    let mut req = ServerRequest::for_spec(&s, 1, vec![], Some(user_data.clone())).unwrap();
    req.public_key = Some(KEY.into());
    req.firewall_id = Some(fw.id.clone());
    let server = p.create_server(&req).await.unwrap();
    assert_eq!((server.name.as_str(), &server.status), ("sfuctl-demo-1", &ServerStatus::Pending));
    assert_eq!(server.public_ipv4, Some("10.200.250.2".parse().unwrap()), "Linode assigns the IPv4 at once");
    assert!(server.public_ipv6.is_some());
    assert_eq!(server.tags, ["sfuctl:demo"]);

    let inst = fake.instances().into_iter().find(|i| i["label"] == "sfuctl-demo-1").unwrap();
    assert_eq!(inst["_fake"]["user_data"], json!(user_data), "user data arrives intact (sent as base64)");
    assert_eq!(inst["_fake"]["authorized_keys"], json!([KEY]));
    assert_eq!((inst["type"].as_str(), inst["image"].as_str()), (Some("g6-standard-2"), Some("linode/ubuntu24.04")), "defaults from providers/linode.yaml");
    let sent = last_body(&fake, "POST", "/v4/linode/instances");
    assert_eq!(sent["firewall_id"], json!(fw.id.0.parse::<u64>().unwrap()));
    assert_eq!(sent["root_pass"], "<redacted>", "a root_pass was sent (the fake's log redacts it)");
    let lines = fake.request_lines();
    assert!(lines.iter().any(|l| l.starts_with("GET /v4/regions/eu-central ")), "the region's Metadata capability is checked: {lines:?}");

    let up = sfuctl::wait::until("instance", Duration::from_secs(10), Duration::from_millis(100), || async {
        let s = p.get_server(&server.id).await?.expect("still there");
        Ok(if s.is_up() { sfuctl::wait::Check::Done(s) } else { sfuctl::wait::Check::NotYet(s.status.to_string()) })
    })
    .await
    .unwrap();
    assert_eq!(up.region.as_deref(), Some("eu-central"));

    // A second create in the same region reads the region no more.
    p.create_server(&server_request(&owner, 2)).await.unwrap();
    let mut req3 = ServerRequest::for_spec(&s, 3, vec![], Some("#cloud-config\n".into())).unwrap();
    req3.public_key = Some(KEY.into());
    fake.post("/_fake/address-pool", &json!({ "addresses": ["10.200.250.9"] }));
    p.create_server(&req3).await.unwrap();
    assert_eq!(fake.request_lines().iter().filter(|l| l.starts_with("GET /v4/regions/")).count(), 1);
}

#[tokio::test]
async fn a_region_without_metadata_is_a_clear_error_and_nothing_is_created() {
    let fake = LinodeFake::start();
    let p = provider(&fake);
    let req = ServerRequest::for_spec(&spec("us-southeast", ""), 1, vec![], Some("#cloud-config\n".into())).unwrap();
    let err = p.create_server(&req).await.unwrap_err();
    let text = render(&err);
    assert_eq!(exit_of(&err), Exit::BadInput, "{text}");
    assert!(text.contains("`us-southeast` lacks the `Metadata` capability") && text.contains("provider.region"), "{text}");
    assert!(fake.instances().is_empty());
    assert!(!fake.request_lines().iter().any(|l| l.starts_with("POST")), "{:?}", fake.request_lines());
}

#[tokio::test]
async fn listing_by_tag_follows_page_and_pages() {
    let fake = LinodeFake::start_with(&["--address-pool", &pool(8), "--page-size", "2"]);
    let p = provider(&fake).with_page_size(None);
    let owner = Owner::new("big");
    for i in 1..=5 {
        p.create_server(&server_request(&owner, i)).await.unwrap();
    }
    let other = Owner::new("big-2");
    p.create_server(&server_request(&other, 1)).await.unwrap();
    let before = p.requests().total;
    let servers = p.list_servers(&owner).await.unwrap();
    assert_eq!(p.requests().total - before, 3, "pages of 2, 2 and 1");
    let mut names: Vec<String> = servers.iter().map(|s| s.name.clone()).collect();
    names.sort();
    assert_eq!(names, (1..=5).map(|i| owner.server_name(i)).collect::<Vec<_>>());
    assert!(servers.iter().all(|s| s.tags == ["sfuctl:big"]), "the other deployment's instance is not ours");
    assert_eq!(p.list_servers(&other).await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_deleted_instance_reads_as_none_and_deletes_twice() {
    let fake = LinodeFake::start();
    let p = provider(&fake);
    let owner = Owner::new("demo");
    let server = p.create_server(&server_request(&owner, 1)).await.unwrap();
    p.delete_server(&server.id).await.unwrap();
    assert_eq!(p.get_server(&server.id).await.unwrap(), None);
    p.delete_server(&server.id).await.unwrap();
    assert!(p.list_servers(&owner).await.unwrap().is_empty());
    let err = p.get_server(&ServerId("not-a-number".into())).await.unwrap_err();
    assert!(render(&err).contains("not a Linode instance id"));
    assert!(p.get_firewall(&FirewallId("../1".into())).await.is_err());
}

#[tokio::test]
async fn a_400_carries_linodes_reason_and_names_the_spec_field() {
    let fake = LinodeFake::start();
    let p = provider(&fake);
    let mut req = server_request(&Owner::new("demo"), 1);
    req.size = "g6-huge-99".into();
    let err = p.create_server(&req).await.unwrap_err();
    assert_eq!(exit_of(&err), Exit::Failed);
    assert_eq!(sfuctl::http::api_status(&err), Some(400));
    assert_eq!(
        render(&err),
        "error: cannot create Linode instance `sfuctl-demo-1`\n  Caused by: POST /linode/instances returned 400\n  Caused by: type: A valid plan type by that ID was not found\nhint: the instance type comes from `provider.size` in the spec (e.g. `g6-standard-2`; `GET /v4/linode/types` lists them)\n"
    );
    assert_eq!(p.requests().total, 1, "a 400 is not retried");
    req.size = "g6-nanode-1".into();
    req.region = "mars-1".into();
    let text = render(&p.create_server(&req).await.unwrap_err());
    assert!(text.contains("region: region is not valid") && text.contains("provider.region"), "{text}");
    req.region = "eu-central".into();
    req.image = "linode/windows".into();
    let text = render(&p.create_server(&req).await.unwrap_err());
    assert!(text.contains("image: Image 'linode/windows' not found") && text.contains("provider.image"), "{text}");
}

#[tokio::test]
async fn a_bad_token_is_a_401_with_a_hint_and_no_secret_is_ever_shown() {
    let fake = LinodeFake::start();
    let token = "linode-this-is-not-the-token-0123456789";
    let p = Linode::new(&fake.api_url(), Secret::new(token), quick()).unwrap();
    let err = p.list_servers(&Owner::new("demo")).await.unwrap_err();
    let text = render(&err);
    assert!(text.contains("GET /linode/instances returned 401"), "{text}");
    assert!(text.contains("Caused by: Invalid Token"), "{text}");
    assert!(text.contains("hint: check $LINODE_TOKEN"), "{text}");
    assert_eq!(p.requests().total, 1, "a 401 is not retried");
    for shown in [text, format!("{err:?}"), format!("{err:#}"), format!("{p:?}")] {
        assert!(!shown.contains(token) && !shown.contains(fake.token()), "token leaked: {shown}");
    }
    // A rejected root password would name the field, never the password.
    let good = provider(&fake);
    fake.fault(json!({ "method": "POST", "path_regex": "^/v4/linode/instances$", "status": 400, "count": 1, "reason": "Password does not meet strength requirement." }));
    let text = render(&good.create_server(&server_request(&Owner::new("demo"), 1)).await.unwrap_err());
    assert!(text.contains("Password does not meet strength requirement."), "{text}");
    assert!(fake.requests().iter().all(|r| !r["body"].to_string().contains("root_pass\":\"") || r["body"]["root_pass"] == "<redacted>"));
}

#[tokio::test]
async fn rate_limit_429_with_retry_after_is_waited_out() {
    let fake = LinodeFake::start();
    let p = provider(&fake);
    fake.fault(json!({ "method": "GET", "path_regex": "^/v4/linode/instances$", "status": 429, "count": 2, "retry_after": 1 }));
    let started = Instant::now();
    assert!(p.list_servers(&Owner::new("demo")).await.unwrap().is_empty());
    let stats = p.requests();
    assert_eq!((stats.total, stats.retries, stats.rate_limited), (3, 2, 2), "{stats:?}");
    assert!(started.elapsed() >= Duration::from_secs(2), "Retry-After: 1 waited twice, took {:?}", started.elapsed());
}

#[tokio::test]
async fn the_create_limit_answers_429_and_a_lost_create_is_never_doubled() {
    // The fake's own create limit, lowered: the 3rd create within 2 s gets 429 + Retry-After, which is waited out.
    let fake = LinodeFake::start_with(&["--address-pool", &pool(4), "--create-rate-limit", "2/2"]);
    let p = provider(&fake);
    let owner = Owner::new("demo");
    for i in 1..=3 {
        p.create_server(&server_request(&owner, i)).await.unwrap();
    }
    assert!(p.requests().rate_limited >= 1, "{:?}", p.requests());
    assert_eq!(fake.instances().len(), 3);

    // A create answered 500 may or may not have happened: the engine looks by label before it posts again.
    fake.fault(json!({ "method": "POST", "path_regex": "^/v4/linode/instances$", "status": 500, "count": 1 }));
    let server = sfuctl::engine::apply::create_server(&p, &owner, &server_request(&owner, 4), &quick()).await.unwrap();
    assert_eq!(server.name, "sfuctl-demo-4");
    assert_eq!(p.list_servers(&owner).await.unwrap().len(), 4);
}
