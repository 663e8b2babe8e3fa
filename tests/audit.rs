//! `sfuctl audit` against faults built for real: nftables rules in the host's namespace or on the path to it,
//! edited configs, a stopped service, a cloud firewall edited out of band. Each scenario first audits the same
//! host clean, then breaks one layer and asserts the audit names exactly that layer.

use serde_json::Value;

use crate::support::cli::require_tool;
use crate::support::deployment::Deployment;
use crate::support::netns::TestHost;

const COTURN: &str = "  kind: coturn\n  artifact: /usr/bin/turnserver\n  rtc_ports: 40000-40999\n";

/// A drop rule on this machine's side of a host's veth: the network between here and the host (a cloud
/// firewall, an HTTP-only platform), which the host itself cannot see. Removed on drop.
struct PathDrop {
    table: String,
}

impl PathDrop {
    fn new(host: &TestHost, what: &str) -> Self {
        let n = host.ns().trim_start_matches("sfut-").to_string();
        let table = format!("sfut_path_{n}");
        let ruleset = format!("table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  oifname \"vht-{n}\" {what} drop\n }}\n}}\n");
        nft(None, &ruleset);
        Self { table }
    }
}

impl Drop for PathDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "inet", &self.table]).status();
    }
}

/// Loads a ruleset (into the host's namespace when given), without flushing anything else.
fn nft(host: Option<&TestHost>, ruleset: &str) {
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), ruleset).unwrap();
    let path = file.path().to_str().unwrap();
    let out = match host {
        Some(h) => {
            let out = h.exec_in_ns(&["nft", "-f", path]);
            // A flow allowed before must not ride on an old conntrack entry.
            h.exec_in_ns(&["conntrack", "-F"]);
            out
        }
        None => std::process::Command::new("nft").args(["-f", path]).output().unwrap(),
    };
    assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
}

/// Runs `audit --output json` and returns (exit code, the host's entry).
fn audit(dep: &Deployment) -> (i32, Value) {
    // A generous probe budget: the tests share 2 cores with several others.
    let out = dep.sfuctl(&["audit", "--output", "json", "--probe-timeout-ms", "4000"]).output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v["hosts"][0].clone())
}

fn status_of<'a>(host: &'a Value, id: &str) -> (&'a str, &'a str) {
    let c = host["checks"].as_array().unwrap().iter().find(|c| c["id"] == id).unwrap_or_else(|| panic!("no check {id}: {host}"));
    (c["status"].as_str().unwrap(), c["detail"].as_str().unwrap())
}

fn failing(host: &Value) -> Vec<String> {
    host["checks"].as_array().unwrap().iter().filter(|c| c["status"] == "fail").map(|c| c["id"].as_str().unwrap().to_string()).collect()
}

/// A coturn deployment that `up` made and a first audit found healthy.
fn healthy(label: &str) -> (TestHost, Deployment) {
    require_tool("turnserver", "coturn");
    let host = TestHost::start(label);
    let dep = Deployment::new(&host, label, COTURN, "");
    dep.sfuctl(&["up", "--no-audit"]).assert().success();
    let (code, h) = audit(&dep);
    assert_eq!((code, failing(&h)), (0, vec![]), "a fresh deployment audits clean: {h}");
    for id in ["ssh-exposure", "host-firewall", "service", "config-consistency", "udp-reachability", "tcp-reachability", "turn-auth", "turn-peers"] {
        assert_eq!(status_of(&h, id).0, "pass", "{id}: {h}");
    }
    assert_eq!(status_of(&h, "cloud-firewall").0, "skip");
    assert_eq!(status_of(&h, "udp-reachability").1, "1000/1000 ports answered");
    // The TURN checks give their relay allocations back: within a few seconds nothing holds a media port, so the
    // scenarios below start from a host whose whole range is free.
    let started = std::time::Instant::now();
    loop {
        let held = relay_ports_in_use(&host);
        if held.is_empty() {
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(15), "the audit's TURN allocations still hold udp {held:?} after 15 s");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    (host, dep)
}

/// UDP ports of the media range (40000-40999) bound in the host's namespace.
fn relay_ports_in_use(host: &TestHost) -> Vec<u16> {
    let out = std::process::Command::new("ip").args(["netns", "exec", host.ns(), "ss", "-Hunl"]).output().expect("run ss in the namespace");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(3)?.rsplit(':').next()?.parse::<u16>().ok())
        .filter(|p| (40000..=40999).contains(p))
        .collect()
}

#[test]
fn a_tcp_open_all_udp_dropped_on_the_way() {
    let (host, dep) = healthy("aud-a");
    let _drop = PathDrop::new(&host, "meta l4proto udp");
    let (code, h) = audit(&dep);
    assert_eq!(code, 3);
    assert_eq!(h["cause"], "udp-reachability", "{h}");
    // The TURN abuse probes travel over UDP too: they cannot run, and the cause stays the first failing layer.
    assert_eq!(failing(&h), ["udp-reachability", "turn-auth", "turn-peers"]);
    assert!(status_of(&h, "udp-reachability").1.starts_with("0/1000 ports answered; unreachable: udp 40000-40999"), "{h}");
    assert_eq!(status_of(&h, "tcp-reachability").0, "pass", "signaling over TCP still works: the HTTP-only platform failure");
}

#[test]
fn b_half_the_media_range_dropped() {
    let (host, dep) = healthy("aud-b");
    let _drop = PathDrop::new(&host, "udp dport 40500-40999");
    let (code, h) = audit(&dep);
    assert_eq!(code, 3);
    assert_eq!(h["cause"], "udp-reachability", "{h}");
    assert_eq!(status_of(&h, "udp-reachability").1, "500/1000 ports answered; unreachable: udp 40500-40999");
}

#[test]
fn c_host_firewall_drops_the_range() {
    let (host, dep) = healthy("aud-c");
    nft(Some(&host), "table ip user_rules {\n chain in {\n  type filter hook input priority 10; policy accept;\n  udp dport 40000-40999 drop\n }\n}\n");
    let (code, h) = audit(&dep);
    assert_eq!(code, 3);
    assert_eq!(h["cause"], "host-firewall", "{h}");
    assert!(status_of(&h, "host-firewall").1.contains("drops udp 40000-40999 (chain user_rules/in)"), "{h}");
    let (udp, _) = status_of(&h, "udp-reachability");
    assert_eq!(udp, "fail", "the probe agrees with the ruleset");
}

#[test]
fn d_config_announces_a_wrong_address() {
    let (_host, dep) = healthy("aud-d");
    let conf = dep.root().join("config/turnserver.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("external-ip=", "external-ip=203.0.113.99\n# was: ")).unwrap();
    let (code, h) = audit(&dep);
    assert_eq!(code, 3);
    assert_eq!(h["cause"], "config-consistency", "{h}");
    assert_eq!(failing(&h), ["config-consistency"]);
    assert!(status_of(&h, "config-consistency").1.contains("announces 203.0.113.99, but the host's public address is"), "{h}");
}

#[test]
fn e_config_range_differs_from_the_firewalls() {
    let (_host, dep) = healthy("aud-e");
    let conf = dep.root().join("config/turnserver.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(&conf, text.replace("min-port=40000", "min-port=30000")).unwrap();
    let (code, h) = audit(&dep);
    assert_eq!(code, 3);
    assert_eq!(h["cause"], "config-consistency", "{h}");
    assert!(status_of(&h, "config-consistency").1.contains("media range 30000-40999, but the manifest and firewalls have 40000-40999"), "{h}");
}

#[test]
fn f_service_not_running() {
    let (host, dep) = healthy("aud-f");
    // Paths as the host sees them: its /opt/sfuctl is its own.
    host.exec_in_ns(&["pkill", "-f", &format!("/opt/sfuctl/{}/supervise.sh", dep.name)]);
    host.exec_in_ns(&["pkill", "-f", &format!("/opt/sfuctl/{}/app/turnserver", dep.name)]);
    std::thread::sleep(std::time::Duration::from_millis(300));
    let (code, h) = audit(&dep);
    assert_eq!(code, 3);
    assert_eq!(h["cause"], "service", "{h}");
    assert!(status_of(&h, "service").1.contains("is inactive") || status_of(&h, "service").1.contains("is activating"), "{h}");
}

#[test]
fn g_ssh_open_to_the_world_is_a_warning() {
    require_tool("turnserver", "coturn");
    let host = TestHost::start("aud-g");
    let dep = Deployment::new(&host, "aud-g", COTURN, "");
    let spec = std::fs::read_to_string(dep.spec()).unwrap();
    let open = spec.lines().filter(|l| !l.contains("allow_from")).collect::<Vec<_>>().join("\n") + "\n";
    std::fs::write(dep.spec(), open).unwrap();
    dep.sfuctl(&["up"]).assert().success();
    let (code, h) = audit(&dep);
    assert_eq!(code, 0, "warnings do not fail the audit: {h}");
    assert_eq!(failing(&h), Vec::<String>::new());
    let (status, detail) = status_of(&h, "ssh-exposure");
    assert_eq!(status, "warn");
    assert!(detail.contains("0.0.0.0/0") && detail.contains("::/0"), "{detail}");
}

#[test]
fn up_fails_with_exit_3_when_its_audit_fails() {
    let (host, dep) = healthy("aud-up");
    let _drop = PathDrop::new(&host, "meta l4proto udp");
    let out = dep.sfuctl(&["up"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("fix `udp-reachability` first"));
    dep.sfuctl(&["up", "--no-audit"]).assert().success();
}

/// A copy of sfuctl's templates with `kind/file` edited by `edit`: what a config without the lock-down deploys.
fn templates_with(kind_file: &str, edit: impl Fn(&str) -> String) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let source = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("templates").join(kind_file)).unwrap();
    let path = dir.path().join(kind_file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, edit(&source)).unwrap();
    dir
}

#[test]
fn h_turn_credentials_and_relay_peers_from_outside() {
    let (_host, dep) = healthy("aud-h");
    let (_, h) = audit(&dep);
    let (_, auth) = status_of(&h, "turn-auth");
    assert!(auth.contains("without a credential is refused (401)") && auth.contains("relays from"), "{auth}");
    let (_, peers) = status_of(&h, "turn-peers");
    assert!(peers.contains("the host itself") && peers.contains("169.254.169.254") && peers.contains("127.0.0.1"), "{peers}");

    // The relay without its peer lock-down, deployed for real: the audit sees the relay reach private networks and
    // the cloud metadata service (coturn itself refuses loopback, and here the host's own address, which is one it
    // listens on).
    let open = templates_with("coturn/turnserver.conf.j2", |t| t.lines().filter(|l| !l.contains("denied-peer-ip")).map(|l| format!("{l}\n")).collect());
    dep.sfuctl(&["up", "--no-audit", "--templates", open.path().to_str().unwrap()]).assert().success();
    let (code, h) = audit(&dep);
    assert_eq!(code, 3, "{h}");
    assert_eq!(failing(&h), ["turn-peers"], "{h}");
    let (_, detail) = status_of(&h, "turn-peers");
    assert!(detail.contains("grants a permission towards") && detail.contains("a private address (10.0.0.1)") && detail.contains("169.254.169.254"), "{detail}");

    // A credential from another secret is refused: clients with it would fail too.
    let out = dep.sfuctl(&["audit", "--output", "json"]).env("SFUCTL_SECRET", "another-secret-0123456789abcdef0123456789abcdef").output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (status, detail) = status_of(&v["hosts"][0], "turn-auth");
    assert_eq!(status, "fail", "{detail}");
    assert!(detail.contains("was refused (401)"), "{detail}");
}

/// POSTs `body` to the Janus API at `address:8088` with a plain HTTP/1.0 client; returns the JSON answer.
fn janus_post(address: &str, path: &str, body: &str) -> Value {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((address, 8088)).expect("connect to the Janus API");
    write!(s, "POST {path} HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (_, json) = answer.split_once("\r\n\r\n").unwrap_or_else(|| panic!("not HTTP: {answer}"));
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {json}"))
}

#[test]
fn i_janus_api_without_the_secret_is_refused() {
    require_tool("janus", "janus");
    let host = TestHost::start("aud-i");
    let dep = Deployment::new(&host, "aud-i", "  kind: janus\n  artifact: /usr/bin/janus\n  rtc_ports: 20000-20099\n", "");
    dep.sfuctl(&["up", "--no-audit", "--health-timeout", "30"]).assert().success();
    // The abuse itself: an app without the secret cannot create a session (or anything else).
    let refused = janus_post(&host.address(), "/janus", r#"{"janus":"create","transaction":"t"}"#);
    assert_eq!((refused["janus"].as_str(), refused["error"]["code"].as_u64()), (Some("error"), Some(403)), "{refused}");
    let wrong = janus_post(&host.address(), "/janus", r#"{"janus":"create","transaction":"t","apisecret":"not-the-secret"}"#);
    assert_eq!(wrong["error"]["code"].as_u64(), Some(403), "{wrong}");
    let (code, h) = audit(&dep);
    assert_eq!((code, failing(&h)), (0, vec![]), "{h}");
    let (status, detail) = status_of(&h, "janus-api");
    assert_eq!(status, "pass", "{detail}");
    assert!(detail.contains("without the apisecret is refused (403)") && detail.contains("with the shared secret it is answered"), "{detail}");
    // Janus's own media socket answers an ICE check on the announced (public) address and a media port.
    let (status, detail) = status_of(&h, "janus-ice");
    assert_eq!(status, "pass", "{detail}");
    assert!(detail.contains(&format!("candidate udp {}:200", host.address())) && detail.contains("signed with Janus's ice-pwd"), "{detail}");
    // Every session the audit opened (janus-api's and janus-ice's) was destroyed again.
    let log = std::fs::read_to_string(dep.root().join("service.log")).unwrap();
    let (created, destroyed) = (log.matches("Creating new session").count(), log.matches("Destroying session").count());
    assert!(created >= 2 && created == destroyed, "{created} session(s) created, {destroyed} destroyed:\n{log}");

    // Janus without api_secret, deployed for real: anyone can drive it, and the audit says so.
    let open = templates_with("janus/janus.jcfg.j2", |t| t.lines().filter(|l| !l.contains("api_secret")).map(|l| format!("{l}\n")).collect());
    dep.sfuctl(&["up", "--no-audit", "--health-timeout", "30", "--templates", open.path().to_str().unwrap()]).assert().success();
    let (code, h) = audit(&dep);
    assert_eq!(code, 3, "{h}");
    assert_eq!(failing(&h), ["janus-api"], "{h}");
    assert!(status_of(&h, "janus-api").1.contains("without an apisecret created a session"), "{h}");
}

#[test]
fn j_janus_media_dropped_on_the_way_fails_the_ice_check() {
    require_tool("janus", "janus");
    let host = TestHost::start("aud-j");
    let dep = Deployment::new(&host, "aud-j", "  kind: janus\n  artifact: /usr/bin/janus\n  rtc_ports: 20000-20099\n", "");
    dep.sfuctl(&["up", "--no-audit", "--health-timeout", "30"]).assert().success();
    // Signaling over TCP works; UDP to the media range is dropped between here and the host.
    let _drop = PathDrop::new(&host, "udp dport 20000-20099");
    let (code, h) = audit(&dep);
    assert_eq!(code, 3, "{h}");
    assert_eq!(failing(&h), ["udp-reachability", "janus-ice"], "{h}");
    assert_eq!(status_of(&h, "janus-api").0, "pass", "{h}");
    let (_, detail) = status_of(&h, "janus-ice");
    assert!(detail.starts_with("ICE: no candidate Janus announces answered a connectivity check") && detail.contains("no answer"), "{detail}");

    // Without the secret the check cannot open a session: skipped, never a pass.
    let out = dep.sfuctl(&["audit", "--output", "json"]).env_remove("SFUCTL_SECRET").output().unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status_of(&v["hosts"][0], "janus-ice").0, "skip", "{v}");
    drop(_drop);

    // Janus announcing another address than the host's: its candidates are not where clients can reach it.
    let wrong = templates_with("janus/janus.jcfg.j2", |t| t.replace("nat_1_1_mapping = {{ host.address | tojson }}", "nat_1_1_mapping = \"203.0.113.99\""));
    dep.sfuctl(&["up", "--no-audit", "--health-timeout", "30", "--templates", wrong.path().to_str().unwrap()]).assert().success();
    let (code, h) = audit(&dep);
    assert_eq!(code, 3, "{h}");
    assert_eq!(failing(&h), ["config-consistency", "janus-ice"], "{h}");
    let (_, detail) = status_of(&h, "janus-ice");
    assert!(detail.starts_with("candidates: Janus announces no UDP candidate on the host's public address") && detail.contains("203.0.113.99"), "{detail}");
}

#[test]
fn k_a_relay_paired_with_one_sfu_relays_to_nothing_else() {
    use sfuctl::probe::{Allocation, TurnClient, turn_rest_credential};
    require_tool("turnserver", "coturn");
    let host = TestHost::start("aud-k");
    // The SFU this relay serves: this machine's side of the host's link (a private address, which the relay
    // refuses unless it is the paired one).
    let sfu: std::net::IpAddr = host.gateway_address().parse().unwrap();
    let dep = Deployment::new(&host, "aud-k", &format!("{COTURN}  vars: {{ only_peers: [{sfu}] }}\n"), "");
    dep.sfuctl(&["up", "--no-audit"]).assert().success();
    let (code, h) = audit(&dep);
    assert_eq!((code, failing(&h)), (0, vec![]), "{h}");
    assert_eq!(status_of(&h, "turn-peers").0, "pass", "{h}");

    let target = std::net::SocketAddr::new(host.address().parse().unwrap(), 3478);
    let (user, password) = turn_rest_credential("e2e-secret-0123456789abcdef0123456789abcdef", "test-k");
    let mut client = TurnClient::new(target, Some((&user, &password)), std::time::Duration::from_secs(3)).unwrap();
    assert!(matches!(client.allocate().unwrap(), Allocation::Relayed(_)));
    assert_eq!(client.create_permission(std::net::SocketAddr::new(sfu, 40000)).unwrap(), None, "the paired SFU is a peer");
    // A public address: refused only because of only_peers (CreatePermission sends nothing to the peer).
    assert_eq!(client.create_permission("1.1.1.1:3478".parse().unwrap()).unwrap(), Some(403), "any other peer is refused");
    assert_eq!(client.create_permission("10.0.0.1:80".parse().unwrap()).unwrap(), Some(403));
    client.release();
}

/// The major version of this machine's Node.js (`v20.1.0` -> 20).
fn node_major() -> u32 {
    require_tool("node", "nodejs");
    let out = std::process::Command::new("node").arg("--version").output().unwrap();
    let version = String::from_utf8_lossy(&out.stdout);
    version.trim().trim_start_matches('v').split('.').next().and_then(|m| m.parse().ok()).unwrap_or_else(|| panic!("cannot read `node --version`: {version}"))
}

#[test]
fn l_the_tcp_media_range_is_sampled_and_a_drop_on_the_way_fails_it() {
    require_tool("npm", "npm");
    let host = TestHost::start("aud-l");
    // A mediasoup app that listens on nothing until a client comes (as a real one does before its first
    // transport), with `sfu.rtc_tcp`: the TCP media range is open in every firewall, and every connect is refused.
    let app = tempfile::tempdir().unwrap();
    std::fs::write(app.path().join("package.json"), "{ \"name\": \"idle\", \"version\": \"1.0.0\", \"scripts\": { \"start\": \"exec sleep 86400\" } }\n").unwrap();
    let sfu = format!("  kind: mediasoup\n  artifact: {}\n  rtc_ports: 40000-40099\n  rtc_tcp: true\n  node_version: {}\n", app.path().display(), node_major());
    let dep = Deployment::new(&host, "aud-l", &sfu, "");
    // This machine's Node.js stands in for the one `up` would fetch: it finds the runtime in place.
    let node_bin = dep.root().join("node/bin");
    std::fs::create_dir_all(&node_bin).unwrap();
    let node = std::process::Command::new("sh").args(["-c", "command -v node"]).output().unwrap();
    std::os::unix::fs::symlink(String::from_utf8_lossy(&node.stdout).trim(), node_bin.join("node")).unwrap();
    dep.sfuctl(&["up", "--no-audit"]).assert().success();

    let (code, h) = audit(&dep);
    assert_eq!((code, failing(&h)), (0, vec![]), "{h}");
    let tcp = h["checks"].as_array().unwrap().iter().find(|c| c["id"] == "tcp-reachability").unwrap().clone();
    assert_eq!(tcp["status"], "pass", "{h}");
    assert_eq!(tcp["detail"], "media tcp 40000-40099: 16/16 sampled ports reached", "refused is reached: {h}");
    assert_eq!(tcp["range"], serde_json::json!({ "start": 40000, "end": 40099, "probed": 16, "answered": 16, "silent": [], "held": [] }));

    // Half the range dropped on the way: the connects there time out, and the check fails naming them.
    let _drop = PathDrop::new(&host, "tcp dport 40050-40099");
    let (code, h) = audit(&dep);
    assert_eq!(code, 3, "{h}");
    assert_eq!(h["cause"], "tcp-reachability", "{h}");
    assert_eq!(failing(&h), ["tcp-reachability"], "UDP still flows: {h}");
    let tcp = h["checks"].as_array().unwrap().iter().find(|c| c["id"] == "tcp-reachability").unwrap().clone();
    let detail = tcp["detail"].as_str().unwrap();
    assert!(detail.starts_with("media tcp 40000-40099: 8/16 sampled ports reached, timed out (filtered): tcp "), "{detail}");
    assert!(tcp["hint"].as_str().unwrap().contains("drops TCP"), "{tcp}");
    let silent = tcp["range"]["silent"].as_array().unwrap();
    assert!(silent.iter().all(|s| s[0].as_u64().unwrap() >= 40050), "only the dropped half is silent: {tcp}");
    let out = dep.sfuctl(&["audit", "--probe-timeout-ms", "4000"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("40000-40099 [") && text.contains("50% silent"), "the text shows the range's map:\n{text}");
    dep.sfuctl(&["down", "--yes"]).assert().success();
}
