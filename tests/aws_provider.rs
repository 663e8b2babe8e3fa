//! The AWS provider against moto (`tests/support/moto.rs`): signed requests (IAM mode checks every signature),
//! the security group's create/converge/revoke cycle, the AMI lookup, ClientToken idempotency and key pairs.
//! Public addresses come from a pool of addresses nothing is ever sent to (no SSH here; see aws_e2e.rs).

use std::time::Duration;

use sfuctl::error::{Exit, exit_of, render};
use sfuctl::http::{RetryPolicy, Secret};
use sfuctl::ports::{PortRange, Protocol};
use sfuctl::provider::aws::Aws;
use sfuctl::provider::aws::config::{AwsConfig, Credentials};
use sfuctl::provider::{FirewallRequest, FirewallRule, Owner, Provider, ServerRequest, ServerStatus};

use crate::support::do_fake::pool;
use crate::support::moto::Moto;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl";

fn quick() -> RetryPolicy {
    RetryPolicy { base_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200), max_attempts: 3, ..RetryPolicy::default() }
}

fn provider_with(moto: &Moto, secret: &str) -> Aws {
    let credentials = Credentials { access_key_id: moto.access_key().into(), secret_access_key: Secret::new(secret), session_token: None, source: "the test".into() };
    Aws::new(AwsConfig { credentials, region: "us-east-1".into(), endpoint: moto.url() }, quick()).unwrap()
}

fn provider(moto: &Moto) -> Aws {
    provider_with(moto, moto.secret_key())
}

fn rule(protocol: Protocol, start: u16, end: u16, sources: &[&str]) -> FirewallRule {
    FirewallRule::new(protocol, PortRange { start, end }, sources.iter().map(|s| s.parse().unwrap()))
}

fn request(owner: &Owner, rules: Vec<FirewallRule>) -> FirewallRequest {
    FirewallRequest { name: owner.firewall_name(), owner: owner.clone(), rules, server_ids: vec![] }
}

#[tokio::test]
async fn signed_requests_pass_and_a_wrong_secret_is_refused_with_a_hint() {
    let moto = Moto::start_with_auth(&["--address-pool", &pool(2)]);
    assert!(moto.checks_signatures());
    let owner = Owner::new("sig");
    assert_eq!(provider(&moto).list_servers(&owner).await.unwrap(), vec![]);

    let wrong = provider_with(&moto, "not-the-secret-at-all");
    let err = wrong.list_servers(&owner).await.unwrap_err();
    let text = render(&err);
    assert_eq!(exit_of(&err), Exit::BadInput, "credentials AWS refuses are bad input, like missing ones");
    assert!(text.contains("returned 401 AuthFailure") && text.contains("Caused by: AuthFailure:"), "{text}");
    assert!(text.contains("hint: AWS did not accept the credentials") && text.contains("clock"), "{text}");
    assert!(!text.contains("not-the-secret-at-all") && !text.contains(moto.secret_key()), "{text}");
    assert_eq!(wrong.requests().retries, 0, "an auth failure is not retried");
}

#[tokio::test]
async fn the_security_group_is_created_converged_and_cleaned_of_unwanted_rules() {
    let moto = Moto::start(&["--address-pool", &pool(2)]);
    let p = provider(&moto);
    let owner = Owner::new("fw");
    let media = rule(Protocol::Udp, 40000, 41000, &["0.0.0.0/0", "::/0"]);
    let ssh = rule(Protocol::Tcp, 22, 22, &["10.200.0.0/16"]);
    let fw = p.put_firewall(&request(&owner, vec![media.clone(), ssh.clone()]), None).await.unwrap();
    assert!(fw.id.0.starts_with("sg-") && fw.ready && fw.outbound_ok, "{fw:?}");
    assert!(fw.diff_rules(&[media.clone(), ssh.clone()]).is_empty(), "{fw:?}");

    // Listed by name and owner tag; the same request again sends nothing.
    let listed = p.list_firewalls(&owner).await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].rules, fw.rules);
    assert!(p.list_firewalls(&Owner::new("fw-2")).await.unwrap().is_empty(), "a name is matched exactly");
    let before = p.requests();
    p.put_firewall(&request(&owner, vec![media.clone(), ssh.clone()]), Some(&listed[0])).await.unwrap();
    assert_eq!(p.requests().total, before.total);

    // A new media range: the old rule is revoked, IPv6 included, the new one authorized.
    let media2 = rule(Protocol::Udp, 42000, 42999, &["0.0.0.0/0", "::/0"]);
    let fw = p.put_firewall(&request(&owner, vec![media2.clone(), ssh.clone()]), Some(&listed[0])).await.unwrap();
    assert!(fw.diff_rules(&[media2.clone(), ssh.clone()]).is_empty(), "{fw:?}");
    let inv = moto.inventory();
    let group = inv["groups"].as_array().unwrap().iter().find(|g| g["id"] == fw.id.0.as_str()).unwrap().clone();
    let ingress = group["ingress"].to_string();
    assert!(!ingress.contains("40000") && ingress.contains("42000") && ingress.contains("::/0"), "{ingress}");
    assert_eq!(group["tags"]["sfuctl"], "fw");
    assert!(group["egress"].to_string().contains("::/0"), "IPv6 egress added: {}", group["egress"]);

    // Going down: a group nobody uses is deleted; deleting it again is success.
    p.delete_firewall(&fw.id).await.unwrap();
    p.delete_firewall(&fw.id).await.unwrap();
    assert_eq!(p.get_firewall(&fw.id).await.unwrap(), None);
    assert_eq!(moto.leftovers("fw"), Vec::<String>::new());
}

#[tokio::test]
async fn instances_launch_once_per_token_on_the_newest_ubuntu_and_terminate() {
    let moto = Moto::start(&["--address-pool", &pool(3), "--pool-exhausted-status", "400"]);
    let p = provider(&moto);
    let owner = Owner::new("vm");
    let fw = p.put_firewall(&request(&owner, vec![rule(Protocol::Tcp, 22, 22, &["10.200.0.0/16"])]), None).await.unwrap();
    let (key, created) = p.ensure_ssh_key(&owner.ssh_key_name(), KEY).await.unwrap();
    assert!(created);
    assert!(!p.ensure_ssh_key(&owner.ssh_key_name(), KEY).await.unwrap().1, "found again by fingerprint");
    assert_eq!(p.find_ssh_key(KEY).await.unwrap().map(|k| k.name), Some("sfuctl-vm".into()));
    let req = ServerRequest {
        name: owner.server_name(1),
        region: String::new(),
        size: "c6i.large".into(),
        image: String::new(),
        ssh_key_ids: vec![key.id.clone()],
        public_key: None,
        tags: vec![owner.tag()],
        user_data: Some("#cloud-config\n".into()),
        ipv6: false,
        firewall_id: Some(fw.id.clone()),
    };
    let first = p.create_server(&req).await.unwrap();
    // A retry after a lost answer (same request, same ClientToken) gets the same instance.
    let again = p.create_server(&req).await.unwrap();
    assert_eq!(first.id, again.id);
    let state = moto.state();
    let instances = state["instances"].as_array().unwrap();
    assert_eq!(instances.len(), 1, "{state}");
    assert_eq!(instances[0]["image_id"], "ami-0a1b2c3d4e5f60002", "the newest available Canonical noble amd64 AMI");
    assert_eq!(instances[0]["key_name"], "sfuctl-vm");
    assert_eq!(instances[0]["security_group_ids"], serde_json::json!([fw.id.0]));

    let up = p.get_server(&first.id).await.unwrap().unwrap();
    assert!(up.is_up() && up.public_ipv4 == Some("10.200.250.2".parse().unwrap()), "{up:?}");
    assert_eq!(up.name, "sfuctl-vm-1");
    assert_eq!(p.list_servers(&owner).await.unwrap(), vec![up.clone()]);
    assert_eq!(p.get_firewall(&fw.id).await.unwrap().unwrap().server_ids, vec![up.id.clone()], "the group covers its instance");

    p.delete_server(&up.id).await.unwrap();
    p.delete_server(&up.id).await.unwrap();
    assert!(p.get_server(&up.id).await.unwrap().is_none_or(|s| s.status == ServerStatus::Gone));
    assert!(p.list_servers(&owner).await.unwrap().is_empty(), "terminated instances are not listed");
    p.delete_firewall(&fw.id).await.unwrap();
    p.delete_ssh_key(&key.id).await.unwrap();
    p.delete_ssh_key(&key.id).await.unwrap();
    assert_eq!(moto.leftovers("vm"), Vec::<String>::new());
}

#[tokio::test]
async fn an_exhausted_address_pool_is_a_clear_capacity_error() {
    let moto = Moto::start(&["--address-pool", &pool(1), "--pool-exhausted-status", "400"]);
    let p = provider(&moto);
    let owner = Owner::new("cap");
    let fw = p.put_firewall(&request(&owner, vec![rule(Protocol::Tcp, 22, 22, &["10.200.0.0/16"])]), None).await.unwrap();
    let mut req = ServerRequest {
        name: owner.server_name(1),
        region: "us-east-1".into(),
        size: "c6i.large".into(),
        image: String::new(),
        ssh_key_ids: vec![],
        public_key: None,
        tags: vec![owner.tag()],
        user_data: None,
        ipv6: false,
        firewall_id: Some(fw.id.clone()),
    };
    p.create_server(&req).await.unwrap();
    req.name = owner.server_name(2);
    let err = p.create_server(&req).await.unwrap_err();
    let text = render(&err);
    assert!(text.starts_with("error: cannot create instance `sfuctl-cap-2` on AWS (us-east-1)"), "{text}");
    assert!(text.contains("InsufficientInstanceCapacity") && text.contains("hint: AWS has no capacity"), "{text}");
    req.region = "eu-west-1".into();
    assert_eq!(exit_of(&p.create_server(&req).await.unwrap_err()), Exit::BadInput, "a request for another region is refused");
}
