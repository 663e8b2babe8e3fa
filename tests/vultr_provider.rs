//! The Vultr provider against the stateful fake (`tests/support/vultr_fake.rs`): every request it sends must pass
//! Vultr's OpenAPI document and the rules it states only in prose (each test asserts the violations list is empty,
//! and every guard asserts it again on drop).

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sfuctl::error::{Exit, exit_of, render};
use sfuctl::http::{RetryPolicy, Secret};
use sfuctl::ports::{PortRange, Protocol};
use sfuctl::provider::vultr::Vultr;
use sfuctl::provider::{FirewallRequest, FirewallRule, Owner, Provider, ServerId, ServerRequest, ServerStatus, busy_reason};
use sfuctl::spec::Spec;

use crate::support::do_fake::pool;
use crate::support::vultr_fake::VultrFake;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl";

/// Fast retries, so fault tests take milliseconds (a `Retry-After` is still honoured as sent).
fn quick() -> RetryPolicy {
    RetryPolicy { base_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200), ..RetryPolicy::default() }
}

fn provider(fake: &VultrFake) -> Vultr {
    Vultr::new(&fake.api_url(), Secret::new(fake.api_key()), quick()).unwrap()
}

fn spec(extra: &str) -> Spec {
    Spec::parse(&format!(
        "name: demo\nprovider: {{ kind: vultr, region: fra }}\nssh: {{ allow_from: [203.0.113.7/32] }}\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n{extra}"
    ))
    .unwrap()
}

fn server_request(owner: &Owner, index: u32) -> ServerRequest {
    ServerRequest {
        name: owner.server_name(index),
        region: "fra".into(),
        size: "vc2-1c-1gb".into(),
        image: String::new(),
        ssh_key_ids: vec![],
        public_key: None,
        tags: vec![owner.tag()],
        user_data: None,
        ipv6: false,
        firewall_id: None,
    }
}

/// The bodies the client sent to `method path`, in order.
fn bodies(fake: &VultrFake, method: &str, path: &str) -> Vec<Value> {
    fake.requests().into_iter().filter(|r| r["method"] == method && r["path"] == path).map(|r| r["body"].clone()).collect()
}

async fn wait_up(p: &Vultr, id: &ServerId) -> sfuctl::provider::Server {
    sfuctl::wait::until("instance", Duration::from_secs(10), Duration::from_millis(100), || async {
        let s = p.get_server(id).await?.expect("still there");
        Ok(if s.is_up() { sfuctl::wait::Check::Done(s) } else { sfuctl::wait::Check::NotYet(s.status.to_string()) })
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn ssh_key_is_registered_by_name_then_found_by_its_key_material() {
    let fake = VultrFake::start();
    let p = provider(&fake);
    let (key, created) = p.ensure_ssh_key("sfuctl-demo", KEY).await.unwrap();
    assert!(created);
    assert_eq!(key.name, "sfuctl-demo");
    assert!(key.fingerprint.starts_with("SHA256:"), "{key:?}");
    let (again, created) = p.ensure_ssh_key("another-name", &format!("no-pty {KEY}\n")).await.unwrap();
    assert!(!created);
    assert_eq!(again, key);
    assert_eq!(p.find_ssh_key(KEY).await.unwrap(), Some(key.clone()));
    assert_eq!(bodies(&fake, "POST", "/v2/ssh-keys"), [json!({ "name": "sfuctl-demo", "ssh_key": KEY })]);
    p.delete_ssh_key(&key.id).await.unwrap();
    p.delete_ssh_key(&key.id).await.unwrap();
    assert_eq!(p.find_ssh_key(KEY).await.unwrap(), None);
    fake.assert_no_violations();
}

#[tokio::test]
async fn firewall_group_gets_one_rule_per_family_and_changes_in_place() {
    let fake = VultrFake::start();
    let p = provider(&fake);
    let owner = Owner::new("demo");
    let manifest = spec("  tcp_ports: [443]\n").manifest();
    let wanted = manifest.cloud_rules();
    let mut req = FirewallRequest::for_manifest(&owner, &manifest);
    let fw = p.put_firewall(&req, None).await.unwrap();
    assert_eq!(fw.name, "sfuctl-demo");
    assert!(fw.diff(&wanted).is_empty(), "{:?}", fw.diff(&wanted));
    assert!(fw.ready && fw.outbound_ok && fw.tags.is_empty());
    assert_eq!(p.list_firewalls(&owner).await.unwrap(), vec![fw.clone()]);
    assert!(p.list_firewalls(&Owner::new("dem")).await.unwrap().is_empty(), "descriptions match exactly");

    // On the wire: the group by description, then rules with lower-case protocols and colon ranges, v4 and v6 apart.
    assert_eq!(bodies(&fake, "POST", "/v2/firewalls"), [json!({ "description": "sfuctl-demo" })]);
    let rules = bodies(&fake, "POST", &format!("/v2/firewalls/{}/rules", fw.id));
    let lines: Vec<String> = rules.iter().map(|r| format!("{} {} {} {}/{}", r["ip_type"], r["protocol"], r["port"], r["subnet"], r["subnet_size"])).collect();
    assert!(lines.contains(&r#""v4" "udp" "40000:41000" "0.0.0.0"/0"#.to_string()), "{lines:#?}");
    assert!(lines.contains(&r#""v6" "udp" "40000:41000" "::"/0"#.to_string()), "{lines:#?}");
    assert!(lines.contains(&r#""v4" "tcp" "22" "203.0.113.7"/32"#.to_string()), "{lines:#?}");
    let sources: usize = wanted.iter().map(|r| r.sources.len()).sum();
    assert_eq!(rules.len(), sources, "one rule per source CIDR");

    // Unchanged: nothing is sent at all.
    let before = p.requests();
    assert_eq!(p.put_firewall(&req, Some(&fw)).await.unwrap(), fw);
    assert_eq!(p.requests().total, before.total);

    // Someone adds an ICMP rule in the console; the spec drops 443 and adds 8443: one group, changed by rule id.
    fake.oob("POST", &format!("/v2/firewalls/{}/rules", fw.id), Some(&json!({ "ip_type": "v4", "protocol": "icmp", "subnet": "0.0.0.0", "subnet_size": 0 })));
    let current = p.get_firewall(&fw.id).await.unwrap().unwrap();
    assert_eq!(current.other_inbound, ["icmp from 0.0.0.0/0"]);
    req.rules.retain(|r| r.ports != PortRange::single(443));
    req.rules.push(FirewallRule::new(Protocol::Tcp, PortRange::single(8443), sfuctl::ports::anywhere()));
    let seen = fake.requests().len();
    let updated = p.put_firewall(&req, Some(&current)).await.unwrap();
    assert_eq!(updated.id, fw.id);
    assert!(updated.diff_rules(&req.rules).is_empty() && updated.other_inbound.is_empty(), "{updated:?}");
    let changes: Vec<String> = fake.requests()[seen..].iter().filter(|r| r["method"] != "GET").map(|r| format!("{} {}", r["method"].as_str().unwrap(), r["path"].as_str().unwrap())).collect();
    assert_eq!(changes.iter().filter(|c| c.starts_with("POST")).count(), 2, "8443 for v4 and v6: {changes:#?}");
    assert_eq!(changes.iter().filter(|c| c.starts_with("DELETE")).count(), 3, "443 for v4 and v6, and the ICMP rule: {changes:#?}");
    assert!(changes.iter().all(|c| c.contains("/rules")), "{changes:#?}");

    p.delete_firewall(&fw.id).await.unwrap();
    p.delete_firewall(&fw.id).await.unwrap();
    assert!(p.get_firewall(&fw.id).await.unwrap().is_none());
    fake.assert_no_violations();
}

#[tokio::test]
async fn a_group_too_small_for_the_manifest_is_refused_before_any_rule() {
    let fake = VultrFake::start_with(&["--max-rule-count", "4"]);
    let p = provider(&fake);
    let owner = Owner::new("demo");
    let err = p.put_firewall(&FirewallRequest::for_manifest(&owner, &spec("").manifest()), None).await.unwrap_err();
    let text = render(&err);
    assert!(text.contains("at most 4"), "{text}");
    assert_eq!(exit_of(&err), Exit::Failed, "the group exists by then: not bad input");
    let group = fake.group("demo").expect("the group exists");
    assert_eq!(group["rules"], json!([]), "no rule was sent");
    fake.assert_no_violations();
}

#[tokio::test]
async fn instance_is_created_with_the_looked_up_os_tags_key_group_and_base64_user_data() {
    let fake = VultrFake::start_with(&["--address-pool", &pool(2), "--boot-delay", "0.3"]);
    // Pages of 5: Ubuntu 24.04 LTS x64 is on the third page of GET /os.
    let p = provider(&fake).with_page_size(5);
    let owner = Owner::new("demo");
    let (key, _) = p.ensure_ssh_key(&owner.ssh_key_name(), KEY).await.unwrap();
    let fw = p.put_firewall(&FirewallRequest::for_manifest(&owner, &spec("").manifest()), None).await.unwrap();
    let user_data = "#cloud-config\nruncmd: [\"echo hello\"]\n".to_string();
    let mut req = ServerRequest::for_spec(&spec(""), 1, vec![key.id.clone()], Some(user_data.clone())).unwrap();
    req.firewall_id = Some(fw.id.clone());
    let server = p.create_server(&req).await.unwrap();
    assert_eq!((server.name.as_str(), &server.status, server.public_ipv4), ("sfuctl-demo-1", &ServerStatus::Pending, None));
    assert!(fake.requests().iter().filter(|r| r["path"] == "/v2/os").count() >= 3, "GET /os was paged");

    let body = bodies(&fake, "POST", "/v2/instances").pop().unwrap();
    assert_eq!(body["os_id"], 2284);
    assert_eq!(body["plan"], "vc2-2c-4gb", "the default size from providers/vultr.yaml");
    assert_eq!((body["label"].as_str(), body["hostname"].as_str()), (Some("sfuctl-demo-1"), Some("sfuctl-demo-1")));
    assert_eq!(body["tags"], json!(["sfuctl:demo"]));
    assert_eq!(body["sshkey_id"], json!([key.id.0]));
    assert_eq!(body["firewall_group_id"], json!(fw.id.0));
    let state = fake.get("/_fake/state");
    let sent = state["instances"][0]["_fake"]["user_data"].as_str().unwrap().to_string();
    use base64::Engine as _;
    assert_eq!(base64::engine::general_purpose::STANDARD.decode(sent).unwrap(), user_data.as_bytes(), "sent as base64");

    let up = wait_up(&p, &server.id).await;
    assert_eq!(up.public_ipv4, Some("10.200.250.2".parse().unwrap()));
    assert_eq!(up.region.as_deref(), Some("fra"));
    let fw = p.get_firewall(&fw.id).await.unwrap().unwrap();
    assert!(fw.covers(&up), "the group lists the instance linked at launch: {fw:?}");
    // A second create in the same run reads GET /os no more.
    let os_reads = fake.requests().iter().filter(|r| r["path"] == "/v2/os").count();
    p.create_server(&server_request(&owner, 2)).await.unwrap();
    assert_eq!(fake.requests().iter().filter(|r| r["path"] == "/v2/os").count(), os_reads);
    fake.assert_no_violations();
}

#[tokio::test]
async fn ipv6_instances_are_up_only_with_their_v6_address() {
    let fake = VultrFake::start_with(&["--address-pool", &pool(1), "--boot-delay", "0.2"]);
    let p = provider(&fake);
    let mut req = server_request(&Owner::new("six"), 1);
    req.ipv6 = true;
    let server = p.create_server(&req).await.unwrap();
    let up = wait_up(&p, &server.id).await;
    assert!(up.public_ipv6.is_some_and(|a| a.is_ipv6()), "{up:?}");
    assert_eq!(bodies(&fake, "POST", "/v2/instances")[0]["enable_ipv6"], true);
    fake.assert_no_violations();
}

#[tokio::test]
async fn listing_reads_every_page_and_filters_by_tag_on_sfuctls_side() {
    let fake = VultrFake::start_with(&["--address-pool", &pool(8)]);
    let p = provider(&fake);
    let owner = Owner::new("big");
    for i in 1..=7 {
        p.create_server(&server_request(&owner, i)).await.unwrap();
    }
    let other = Owner::new("big-2");
    p.create_server(&server_request(&other, 1)).await.unwrap();

    let paged = provider(&fake).with_page_size(3);
    let servers = paged.list_servers(&owner).await.unwrap();
    assert_eq!(paged.requests().total, 3, "pages of 3, 3 and 2");
    assert_eq!(servers.len(), 7);
    assert!(servers.iter().all(|s| s.tags == ["sfuctl:big"]), "the other deployment's instance is not ours");
    assert_eq!(p.list_servers(&other).await.unwrap().len(), 1);
    let lists: Vec<String> = fake.requests().iter().filter(|r| r["path"] == "/v2/instances" && r["method"] == "GET").map(|r| r["query"].to_string()).collect();
    assert!(lists.iter().all(|q| !q.contains("tag=")), "the deprecated tag filter is never used: {lists:?}");
    fake.assert_no_violations();
}

#[tokio::test]
async fn an_early_delete_is_busy_for_the_engine_and_404_is_gone() {
    let fake = VultrFake::start_with(&["--address-pool", &pool(1), "--boot-delay", "0.3", "--lock-delay", "1.5"]);
    let p = provider(&fake);
    let server = p.create_server(&server_request(&Owner::new("demo"), 1)).await.unwrap();
    let err = p.delete_server(&server.id).await.unwrap_err();
    let reason = busy_reason(&err).unwrap_or_else(|| panic!("not Busy: {}", render(&err)));
    assert!(reason.contains("currently locked") || reason.contains("not currently active"), "{reason}");
    assert_eq!(fake.requests().iter().filter(|r| r["method"] == "DELETE").count(), 1, "the transport does not retry a locked delete");

    // The engine waits it out.
    let started = Instant::now();
    sfuctl::engine::teardown::delete_server(&p, &server.id, "sfuctl-demo-1", Duration::from_secs(10)).await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
    let deletes: Vec<Value> = fake.requests().into_iter().filter(|r| r["method"] == "DELETE").collect();
    assert!(deletes.len() >= 2 && deletes.last().unwrap()["status"] == 204, "{deletes:#?}");
    assert_eq!(p.get_server(&server.id).await.unwrap(), None);
    p.delete_server(&server.id).await.unwrap();
    fake.assert_no_violations();
}

#[tokio::test]
async fn errors_carry_vultrs_message_and_a_hint_naming_the_fix() {
    let fake = VultrFake::start();
    let p = provider(&fake);
    let mut req = server_request(&Owner::new("demo"), 1);
    req.region = "xyz".into();
    let err = p.create_server(&req).await.unwrap_err();
    let text = render(&err);
    assert!(text.contains("cannot create instance `sfuctl-demo-1` on Vultr") && text.contains("POST /instances returned 400"), "{text}");
    assert!(text.contains("hint: check `provider.region` (`xyz`)"), "{text}");
    req.region = "fra".into();
    req.size = "vc2-99c-1tb".into();
    assert!(render(&p.create_server(&req).await.unwrap_err()).contains("hint: check `provider.size`"));
    req.size = "vc2-1c-1gb".into();
    req.image = "Ubuntu 12.04 x64".into();
    let err = p.create_server(&req).await.unwrap_err();
    assert_eq!(exit_of(&err), Exit::BadInput);
    assert!(render(&err).contains("Ubuntu 24.04 LTS x64"), "the hint lists the Ubuntu images: {}", render(&err));
    assert!(fake.requests().iter().filter(|r| r["method"] == "POST").count() == 2, "an unknown image name is never sent");

    let key = "not-the-key-0123456789";
    let bad = Vultr::new(&fake.api_url(), Secret::new(key), quick()).unwrap();
    let err = bad.list_servers(&Owner::new("demo")).await.unwrap_err();
    let text = render(&err);
    assert!(text.contains("GET /instances returned 401") && text.contains("Invalid API token.") && text.contains("hint: check $VULTR_API_KEY"), "{text}");
    assert_eq!(bad.requests().total, 1, "a 401 is not retried");
    for shown in [text, format!("{err:?}"), format!("{bad:?}")] {
        assert!(!shown.contains(key) && !shown.contains(fake.api_key()), "key leaked: {shown}");
    }
    fake.assert_no_violations();
}

#[tokio::test]
async fn rate_limit_429_with_retry_after_is_waited_out_and_5xx_retried() {
    let fake = VultrFake::start();
    let p = provider(&fake);
    fake.fault(json!({ "method": "GET", "path_regex": "^/v2/instances$", "status": 429, "count": 1, "retry_after": 1 }));
    fake.fault(json!({ "method": "GET", "path_regex": "^/v2/firewalls$", "status": 500, "count": 1 }));
    let started = Instant::now();
    assert!(p.list_servers(&Owner::new("demo")).await.unwrap().is_empty());
    assert!(p.list_firewalls(&Owner::new("demo")).await.unwrap().is_empty());
    let stats = p.requests();
    assert_eq!((stats.total, stats.retries, stats.rate_limited), (4, 2, 1), "{stats:?}");
    assert!(started.elapsed() >= Duration::from_secs(1), "Retry-After: 1 was waited, took {:?}", started.elapsed());
    fake.assert_no_violations();
}

#[test]
fn the_provider_reads_its_key_and_url_from_the_environment() {
    let data = sfuctl::provider::catalog::ProviderData::get(sfuctl::spec::ProviderKind::Vultr);
    assert_eq!(data.credentials.env, ["VULTR_API_KEY"]);
    let api = data.api.as_ref().unwrap();
    assert_eq!((api.url.as_str(), api.url_env.as_slice()), ("https://api.vultr.com/v2", ["VULTR_API_ENDPOINT".to_string()].as_slice()));
    let p = Vultr::new(&api.url, Secret::new("k"), RetryPolicy::default()).unwrap();
    assert_eq!(p.client().base_url(), "https://api.vultr.com/v2");
    assert_eq!(Provider::name(&p), "Vultr");
}
