//! Unit tests of the AWS provider: parsing, normalisation, the rule plan, and the paths moto is too lenient to
//! exercise (DependencyViolation, inverted ranges, throttling, HTML 500s, replayed ClientTokens), driven by a
//! scripted loopback HTTP server.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::config::{AwsConfig, Credentials};
use super::*;
use crate::error::render;
use crate::secret::Secret;

const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl";

/// A loopback HTTP server answering from a script, recording every request body.
struct Scripted {
    url: String,
    bodies: Arc<Mutex<Vec<String>>>,
}

impl Scripted {
    async fn start(replies: Vec<(u16, String)>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(VecDeque::from(replies)));
        let seen = Arc::clone(&bodies);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut raw = Vec::new();
                let mut buf = [0u8; 8192];
                let body = loop {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break None;
                    }
                    raw.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&raw).to_string();
                    if let Some((head, body)) = text.split_once("\r\n\r\n") {
                        let len = head
                            .lines()
                            .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().unwrap_or(0)))
                            .unwrap_or(0);
                        if body.len() >= len {
                            break Some(body.to_string());
                        }
                    }
                };
                let Some(body) = body else { continue };
                seen.lock().unwrap().push(body);
                let (status, reply) = script.lock().unwrap().pop_front().unwrap_or((599, "script exhausted".into()));
                let head = format!("HTTP/1.1 {status} X\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", reply.len());
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        });
        Self { url, bodies }
    }

    /// The `Action` of every request so far.
    fn actions(&self) -> Vec<String> {
        self.bodies().iter().map(|b| param(b, "Action").unwrap_or_default()).collect()
    }

    fn bodies(&self) -> Vec<String> {
        self.bodies.lock().unwrap().clone()
    }
}

/// A form parameter of a request body.
fn param(body: &str, key: &str) -> Option<String> {
    let decode = |s: &str| {
        let mut out = Vec::new();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(if b[i] == b'+' { b' ' } else { b[i] });
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    body.split('&').filter_map(|pair| pair.split_once('=')).find(|(k, _)| decode(k) == key).map(|(_, v)| decode(v))
}

fn quick() -> RetryPolicy {
    RetryPolicy { base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(20), max_attempts: 4, ..RetryPolicy::default() }
}

fn provider(url: &str, policy: RetryPolicy) -> Aws {
    let credentials = Credentials { access_key_id: "AKIDTEST".into(), secret_access_key: Secret::new("secret"), session_token: None, source: "test".into() };
    Aws::new(AwsConfig { credentials, region: "us-east-1".into(), endpoint: url.into() }, policy).unwrap()
}

fn ok(body: &str) -> (u16, String) {
    (200, body.to_string())
}

fn ec2_error(status: u16, code: &str, message: &str) -> (u16, String) {
    (status, format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>r</RequestID></Response>"))
}

fn instances(items: &str) -> String {
    format!(r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId><reservationSet><item><reservationId>r-1</reservationId><instancesSet>{items}</instancesSet></item></reservationSet></DescribeInstancesResponse>"#)
}

fn instance(id: &str, state: &str, ip: Option<&str>) -> String {
    let ip = ip.map(|a| format!("<ipAddress>{a}</ipAddress>")).unwrap_or_default();
    format!(
        "<item><instanceId>{id}</instanceId><instanceState><code>0</code><name>{state}</name></instanceState>{ip}<tagSet><item><key>sfuctl</key><value>demo</value></item><item><key>Name</key><value>sfuctl-demo-1</value></item></tagSet><networkInterfaceSet><item><ipv6AddressesSet><item><ipv6Address>2001:db8::5</ipv6Address></item></ipv6AddressesSet></item></networkInterfaceSet></item>"
    )
}

const EMPTY_INSTANCES: &str = r#"<DescribeInstancesResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><requestId>r</requestId><reservationSet/></DescribeInstancesResponse>"#;

/// A group the way DescribeSecurityGroups shows it: wanted-looking rules, plus what sfuctl cannot represent and
/// an inverted range moto accepted.
const GROUP: &str = r#"<DescribeSecurityGroupsResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><requestId>r</requestId><securityGroupInfo><item>
  <ownerId>123456789012</ownerId><groupId>sg-0123</groupId><groupName>sfuctl-demo</groupName><groupDescription>d</groupDescription><vpcId>vpc-1</vpcId>
  <ipPermissions>
    <item><ipProtocol>udp</ipProtocol><fromPort>40000</fromPort><toPort>41000</toPort><groups/><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp><description>sfuctl</description></item></ipRanges><ipv6Ranges><item><cidrIpv6>::/0</cidrIpv6></item></ipv6Ranges><prefixListIds/></item>
    <item><ipProtocol>tcp</ipProtocol><fromPort>22</fromPort><toPort>22</toPort><ipRanges><item><cidrIp>203.0.113.7/32</cidrIp></item><item><cidrIp>198.51.100.0/24</cidrIp></item></ipRanges></item>
    <item><ipProtocol>tcp</ipProtocol><fromPort>0</fromPort><toPort>65535</toPort><ipRanges><item><cidrIp>10.0.0.0/8</cidrIp></item></ipRanges></item>
    <item><ipProtocol>icmp</ipProtocol><fromPort>-1</fromPort><toPort>-1</toPort><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges></item>
    <item><ipProtocol>tcp</ipProtocol><fromPort>80</fromPort><toPort>80</toPort><groups><item><userId>123456789012</userId><groupId>sg-other</groupId></item></groups></item>
    <item><ipProtocol>udp</ipProtocol><fromPort>41000</fromPort><toPort>40000</toPort><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges></item>
  </ipPermissions>
  <ipPermissionsEgress><item><ipProtocol>-1</ipProtocol><ipRanges><item><cidrIp>0.0.0.0/0</cidrIp></item></ipRanges></item></ipPermissionsEgress>
  <tagSet><item><key>sfuctl</key><value>demo</value></item></tagSet>
</item></securityGroupInfo></DescribeSecurityGroupsResponse>"#;

fn group() -> xml::SecurityGroup {
    xml::parse::<xml::DescribeSecurityGroups>(GROUP.as_bytes()).unwrap().security_group_info.items.remove(0)
}

fn rule(protocol: Protocol, start: u16, end: u16, sources: &[&str]) -> FirewallRule {
    FirewallRule::new(protocol, PortRange { start, end }, sources.iter().map(|s| s.parse::<IpNet>().unwrap()))
}

#[test]
fn a_group_normalises_like_the_manifest() {
    let fw = normalise_group(&group());
    let rules: Vec<String> = fw.rules.iter().map(ToString::to_string).collect();
    assert_eq!(rules, ["udp 40000-41000 from 0.0.0.0/0, ::/0", "tcp 1-65535 from 10.0.0.0/8", "tcp 22 from 198.51.100.0/24, 203.0.113.7/32"]);
    assert_eq!(fw.other_inbound, ["icmp -1 from 0.0.0.0/0", "tcp 80 from security group sg-other", "udp 41000-40000 from 0.0.0.0/0"]);
    assert!(!fw.outbound_ok, "IPv6 egress is missing");
    assert!(fw.ready && fw.tags.is_empty());
    let mut g = group();
    g.ip_permissions_egress.items[0].ipv6_ranges.items.push(xml::Ipv6Range { cidr_ipv6: Some("::/0".into()) });
    assert!(normalise_group(&g).outbound_ok);
}

#[test]
fn the_rule_plan_authorizes_missing_and_revokes_everything_unwanted() {
    let wanted = [rule(Protocol::Udp, 40000, 41000, &["0.0.0.0/0", "::/0"]), rule(Protocol::Tcp, 22, 22, &["203.0.113.7/32"]), rule(Protocol::Tcp, 3478, 3478, &["::/0"])];
    let plan = RulePlan::new(&group(), &wanted);
    let show = |v: &[RawRule]| v.iter().map(RawRule::describe).collect::<Vec<_>>();
    assert_eq!(show(&plan.authorize), ["tcp 3478 from ::/0"]);
    assert_eq!(
        show(&plan.revoke),
        ["tcp 22 from 198.51.100.0/24", "tcp 0-65535 from 10.0.0.0/8", "icmp -1 from 0.0.0.0/0", "tcp 80 from security group sg-other", "udp 41000-40000 from 0.0.0.0/0"]
    );
    assert_eq!(show(&plan.egress), ["all all from ::/0"]);
    // The revoke names each entry exactly as EC2 holds it, group sources included.
    let p = permission_params(&FirewallId("sg-0123".into()), &plan.revoke);
    let body = p.body("RevokeSecurityGroupIngress");
    for needle in ["IpPermissions.4.Groups.1.GroupId=sg-other", "IpPermissions.4.Groups.1.UserId=123456789012", "IpPermissions.3.IpProtocol=icmp", "IpPermissions.3.FromPort=-1", "IpPermissions.5.FromPort=41000&IpPermissions.5.ToPort=40000"] {
        assert!(body.contains(needle), "{needle} in {body}");
    }
    let egress = permission_params(&FirewallId("sg-0123".into()), &plan.egress).body("AuthorizeSecurityGroupEgress");
    assert!(egress.ends_with("IpPermissions.1.IpProtocol=-1&IpPermissions.1.Ipv6Ranges.1.CidrIpv6=%3A%3A%2F0"), "{egress}");
}

#[tokio::test]
async fn inverted_or_zero_ranges_are_refused_before_anything_is_sent() {
    // moto accepts FromPort > ToPort; EC2 does not. sfuctl never sends one.
    let server = Scripted::start(vec![]).await;
    let p = provider(&server.url, quick());
    let owner = Owner::new("demo");
    for bad in [rule(Protocol::Udp, 41000, 40000, &["0.0.0.0/0"]), rule(Protocol::Tcp, 0, 10, &["0.0.0.0/0"])] {
        let req = FirewallRequest { name: owner.firewall_name(), owner: owner.clone(), rules: vec![bad], server_ids: vec![] };
        let err = p.put_firewall(&req, None).await.unwrap_err();
        assert!(render(&err).contains("is not a port range EC2 accepts"), "{}", render(&err));
    }
    assert_eq!(server.actions(), Vec::<String>::new());
}

#[tokio::test]
async fn delete_firewall_answers_busy_while_in_use_and_never_waits() {
    // moto deletes a group that an instance still uses; EC2 answers DependencyViolation until the ENI is gone.
    let busy = || ec2_error(400, "DependencyViolation", "resource sg-0123 has a dependent object");
    let server = Scripted::start(vec![busy()]).await;
    let err = provider(&server.url, quick()).delete_firewall(&FirewallId("sg-0123".into())).await.unwrap_err();
    assert!(crate::provider::busy_reason(&err).is_some_and(|r| r.contains("DependencyViolation")), "{err:#}");
    assert_eq!(server.actions(), ["DeleteSecurityGroup"], "the provider never waits itself");

    // The engine waits and calls again (engine::teardown::delete_firewall, tested with the fake provider).
    let server = Scripted::start(vec![ok("<DeleteSecurityGroupResponse><return>true</return></DeleteSecurityGroupResponse>")]).await;
    provider(&server.url, quick()).delete_firewall(&FirewallId("sg-0123".into())).await.unwrap();

    // Gone already is success.
    let server = Scripted::start(vec![ec2_error(400, "InvalidGroup.NotFound", "no such group")]).await;
    provider(&server.url, quick()).delete_firewall(&FirewallId("sg-0123".into())).await.unwrap();
}

#[tokio::test]
async fn throttling_and_5xx_are_retried_with_backoff_then_reported() {
    let throttled = || ec2_error(503, "RequestLimitExceeded", "Request limit exceeded.");
    let server = Scripted::start(vec![throttled(), (500, "<html><body>Internal Server Error</body></html>".into()), ok(EMPTY_INSTANCES)]).await;
    let p = provider(&server.url, quick());
    assert_eq!(p.list_servers(&Owner::new("demo")).await.unwrap(), vec![]);
    let stats = p.requests();
    assert_eq!((stats.total, stats.retries, stats.rate_limited, stats.mutating), (3, 2, 1, 0));

    let server = Scripted::start((0..10).map(|_| throttled()).collect()).await;
    let p = provider(&server.url, RetryPolicy { max_attempts: 3, ..quick() });
    let text = render(&p.list_servers(&Owner::new("demo")).await.unwrap_err());
    assert!(text.contains("EC2 DescribeInstances returned 503 RequestLimitExceeded (after 3 attempts)"), "{text}");
    assert!(text.contains("hint: EC2's request rate limit was hit"), "{text}");
    assert_eq!(server.actions().len(), 3);

    // moto answers some malformed requests with an HTML 500: a clear message, not a parse error.
    let server = Scripted::start((0..10).map(|_| (500, "<!doctype html><title>500 Internal Server Error</title>".into())).collect()).await;
    let p = provider(&server.url, RetryPolicy { max_attempts: 2, ..quick() });
    let text = render(&p.delete_server(&ServerId("i-1".into())).await.unwrap_err());
    assert!(text.contains("returned 500 HTTP 500") && text.contains("body starts") && text.contains("AWS had a problem on its side"), "{text}");
}

#[tokio::test]
async fn instances_read_as_servers_and_terminated_ones_are_gone() {
    let server = Scripted::start(vec![
        ok(&instances(&instance("i-0a", "running", Some("203.0.113.9")))),
        ok(&instances(&instance("i-0a", "shutting-down", None))),
        ok(&instances(&instance("i-0a", "terminated", None))),
        ec2_error(400, "InvalidInstanceID.NotFound", "The instance ID 'i-0b' does not exist"),
        ec2_error(400, "InvalidInstanceID.NotFound", "The instance ID 'i-0b' does not exist"),
        ec2_error(400, "InvalidInstanceID.NotFound", "The instance ID 'i-0b' does not exist"),
        ec2_error(400, "InvalidInstanceID.NotFound", "The instance ID 'i-0b' does not exist"),
    ])
    .await;
    let p = provider(&server.url, quick());
    let id = ServerId("i-0a".into());
    let s = p.get_server(&id).await.unwrap().unwrap();
    assert!(s.is_up());
    assert_eq!((s.name.as_str(), s.public_ipv4, s.public_ipv6), ("sfuctl-demo-1", Some("203.0.113.9".parse().unwrap()), Some("2001:db8::5".parse().unwrap())));
    assert!(s.tags.contains(&Owner::new("demo").tag()), "{:?}", s.tags);
    assert_eq!(p.get_server(&id).await.unwrap().unwrap().status, ServerStatus::Gone);
    assert_eq!(p.get_server(&id).await.unwrap(), None, "terminated");
    // Unknown after a few tries (eventual consistency right after RunInstances) is gone.
    assert_eq!(p.get_server(&ServerId("i-0b".into())).await.unwrap(), None);
    assert_eq!(server.actions().len(), 7);
}

fn run_request(user_data: &str) -> ServerRequest {
    ServerRequest {
        name: "sfuctl-demo-1".into(),
        region: String::new(),
        size: "c6i.large".into(),
        image: "ami-0a1b2c3d4e5f60002".into(),
        ssh_key_ids: vec![SshKeyId("sfuctl-demo".into())],
        public_key: None,
        tags: vec![Owner::new("demo").tag()],
        user_data: Some(user_data.into()),
        ipv6: false,
        firewall_id: Some(FirewallId("sg-0123".into())),
    }
}

#[tokio::test]
async fn run_instances_is_tagged_idempotent_and_skips_replayed_dead_instances() {
    let reservation = |item: String| format!("<RunInstancesResponse><reservationId>r-1</reservationId><instancesSet>{item}</instancesSet></RunInstancesResponse>");
    let server = Scripted::start(vec![
        // The first token was used by an instance terminated since (scale down, then up again).
        ok(&reservation(instance("i-old", "terminated", None))),
        ok(&reservation(instance("i-new", "pending", None))),
    ])
    .await;
    let p = provider(&server.url, quick());
    let s = p.create_server(&run_request("#cloud-config\n")).await.unwrap();
    assert_eq!((s.id.0.as_str(), s.status.clone()), ("i-new", ServerStatus::Pending));
    let bodies = server.bodies();
    let tokens: Vec<String> = bodies.iter().map(|b| param(b, "ClientToken").unwrap()).collect();
    assert!(tokens[0].starts_with("sfuctl-") && tokens[0].len() <= 64 && tokens[0].is_ascii(), "{tokens:?}");
    assert_eq!(tokens[1], format!("{}-g1", tokens[0]));
    let b = &bodies[1];
    for (k, v) in [
        ("ImageId", "ami-0a1b2c3d4e5f60002"),
        ("KeyName", "sfuctl-demo"),
        ("SecurityGroupId.1", "sg-0123"),
        ("MinCount", "1"),
        ("MaxCount", "1"),
        ("UserData", "I2Nsb3VkLWNvbmZpZwo="),
        ("TagSpecification.1.ResourceType", "instance"),
        ("TagSpecification.1.Tag.1.Key", "sfuctl"),
        ("TagSpecification.1.Tag.1.Value", "demo"),
        ("TagSpecification.1.Tag.2.Key", "Name"),
        ("TagSpecification.1.Tag.2.Value", "sfuctl-demo-1"),
        ("MetadataOptions.HttpTokens", "required"),
    ] {
        assert_eq!(param(b, k).as_deref(), Some(v), "{k} in {b}");
    }
    // The same request always gets the same token; another request another one.
    let params = |data: &str| {
        let mut p = Params::new();
        p.set("ImageId", "ami-1").set("UserData", data);
        client_token(&p)
    };
    assert_eq!(params("a"), params("a"));
    assert_ne!(params("a"), params("b"));
    // Too much user data is refused before anything is sent.
    let server = Scripted::start(vec![]).await;
    let err = provider(&server.url, quick()).create_server(&run_request(&"x".repeat(17 * 1024))).await.unwrap_err();
    assert!(render(&err).contains("at most 16 KiB"), "{}", render(&err));
    assert!(server.actions().is_empty());
}

#[tokio::test]
async fn a_duplicate_in_an_authorize_batch_is_replayed_rule_by_rule() {
    let existing = normalise_group(&group());
    let wanted = vec![rule(Protocol::Udp, 40000, 41000, &["0.0.0.0/0", "::/0"]), rule(Protocol::Tcp, 3478, 3478, &["0.0.0.0/0", "::/0"])];
    let done = |action: &str| ok(&format!("<{action}Response><return>true</return></{action}Response>"));
    let server = Scripted::start(vec![
        ok(GROUP),
        // Someone added one of the two meanwhile: EC2 rejects the whole batch.
        ec2_error(400, "InvalidPermission.Duplicate", "the specified rule already exists"),
        ec2_error(400, "InvalidPermission.Duplicate", "the specified rule already exists"),
        done("AuthorizeSecurityGroupIngress"),
        done("RevokeSecurityGroupIngress"),
        done("AuthorizeSecurityGroupEgress"),
        ok(GROUP),
        ok(EMPTY_INSTANCES),
    ])
    .await;
    let p = provider(&server.url, quick());
    let owner = Owner::new("demo");
    let req = FirewallRequest { name: owner.firewall_name(), owner, rules: wanted, server_ids: vec![] };
    p.put_firewall(&req, Some(&existing)).await.unwrap();
    assert_eq!(
        server.actions(),
        [
            "DescribeSecurityGroups",
            "AuthorizeSecurityGroupIngress",
            "AuthorizeSecurityGroupIngress",
            "AuthorizeSecurityGroupIngress",
            "RevokeSecurityGroupIngress",
            "AuthorizeSecurityGroupEgress",
            "DescribeSecurityGroups",
            "DescribeInstances"
        ]
    );
    let bodies = server.bodies();
    assert_eq!(param(&bodies[1], "IpPermissions.2.Ipv6Ranges.1.CidrIpv6").as_deref(), Some("::/0"), "{}", bodies[1]);
    assert!(param(&bodies[2], "IpPermissions.2.IpProtocol").is_none(), "one rule at a time: {}", bodies[2]);
    assert_eq!(param(&bodies[7], "Filter.1.Name").as_deref(), Some("instance.group-id"));

    // A firewall that already matches sends nothing at all.
    let server = Scripted::start(vec![]).await;
    let mut matching = normalise_group(&group());
    matching.rules = req.rules.clone();
    matching.other_inbound.clear();
    matching.outbound_ok = true;
    provider(&server.url, quick()).put_firewall(&req, Some(&matching)).await.unwrap();
    assert!(server.actions().is_empty());
}

#[tokio::test]
async fn key_pairs_are_found_by_any_fingerprint_form_and_imported_tagged() {
    let material = KeyMaterial::parse(KEY).unwrap();
    let pairs = format!(
        "<DescribeKeyPairsResponse><keySet><item><keyName>theirs</keyName><keyFingerprint>00:11</keyFingerprint></item><item><keyName>sfuctl-demo</keyName><keyFingerprint>{}</keyFingerprint></item></keySet></DescribeKeyPairsResponse>",
        material.fingerprints[3]
    );
    let server = Scripted::start(vec![ok(&pairs)]).await;
    let p = provider(&server.url, quick());
    let (key, created) = p.ensure_ssh_key("sfuctl-demo", KEY).await.unwrap();
    assert_eq!((key.name.as_str(), key.id.0.as_str(), created), ("sfuctl-demo", "sfuctl-demo", false));
    for fp in &material.fingerprints {
        let pair = xml::KeyPair { key_name: None, key_fingerprint: Some(fp.clone()), public_key: None, tag_set: xml::Items::default() };
        assert!(material.matches(&pair), "{fp}");
    }
    assert_eq!(material.sha256, "SHA256:".to_string() + &material.fingerprints[2]);

    let server = Scripted::start(vec![
        ok("<DescribeKeyPairsResponse><keySet/></DescribeKeyPairsResponse>"),
        ok("<ImportKeyPairResponse><keyName>sfuctl-demo</keyName><keyFingerprint>ab:cd</keyFingerprint><keyPairId>key-1</keyPairId></ImportKeyPairResponse>"),
    ])
    .await;
    let (key, created) = provider(&server.url, quick()).ensure_ssh_key("sfuctl-demo", KEY).await.unwrap();
    assert!(created);
    assert_eq!(key.fingerprint, "ab:cd");
    let import = &server.bodies()[1];
    let material = base64::engine::general_purpose::STANDARD.decode(param(import, "PublicKeyMaterial").unwrap()).unwrap();
    assert_eq!(String::from_utf8(material).unwrap(), KEY.trim_end_matches(" test@sfuctl"));
    assert_eq!(param(import, "TagSpecification.1.Tag.1.Value").as_deref(), Some("demo"));
}

#[test]
fn the_newest_canonical_image_for_the_architecture_is_chosen() {
    let image = |id: &str, name: &str, date: &str, owner: &str, state: &str| xml::Image {
        image_id: id.into(),
        name: Some(format!("ubuntu/images/hvm-ssd-gp3/{name}")),
        creation_date: Some(date.into()),
        image_state: Some(state.into()),
        image_owner_id: Some(owner.into()),
        architecture: None,
    };
    let images = vec![
        image("ami-old", "ubuntu-noble-24.04-amd64-server-20250115", "2025-01-15T08:30:00.000Z", CANONICAL, "available"),
        image("ami-new", "ubuntu-noble-24.04-amd64-server-20250610", "2025-06-10T08:30:00.000Z", CANONICAL, "available"),
        image("ami-pending", "ubuntu-noble-24.04-amd64-server-20250801", "2025-08-01T08:30:00.000Z", CANONICAL, "pending"),
        image("ami-squat", "ubuntu-noble-24.04-amd64-server-20251231", "2025-12-31T00:00:00.000Z", "111122223333", "available"),
        image("ami-arm", "ubuntu-noble-24.04-arm64-server-20250610", "2025-06-10T08:30:00.000Z", CANONICAL, "available"),
        image("ami-jammy", "ubuntu-jammy-22.04-amd64-server-20250701", "2025-07-01T00:00:00.000Z", CANONICAL, "available"),
    ];
    assert_eq!(newest_image(images, "amd64").as_deref(), Some("ami-new"));
    for (size, arch) in [("c6i.large", "amd64"), ("c7g.large", "arm64"), ("m6gd.xlarge", "arm64"), ("t4g.small", "arm64"), ("a1.medium", "arm64"), ("g5.xlarge", "amd64"), ("c7gn.large", "arm64")] {
        assert_eq!(architecture(size), arch, "{size}");
    }
}
