//! The audit's media range, presented and judged (issue 15): a single-port range is probed like any other, a range
//! the server itself holds entirely is judged by its own sockets (a warning saying so, not a failure), and the text
//! shows each probed range as a one-line map with the silent part marked (JSON keeps the numbers).

use serde_json::Value;

use crate::support::cli::require_tool;
use crate::support::deployment::Deployment;
use crate::support::netns::TestHost;

/// A drop rule on this machine's side of the host's veth (the network between here and the host). Removed on drop.
struct PathDrop {
    table: String,
}

impl PathDrop {
    fn new(host: &TestHost, what: &str) -> Self {
        let n = host.ns().trim_start_matches("sfut-").to_string();
        let table = format!("sfut_rmap_{n}");
        let ruleset = format!("table inet {table} {{\n chain out {{\n  type filter hook output priority 0; policy accept;\n  oifname \"vht-{n}\" {what} drop\n }}\n}}\n");
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ruleset).unwrap();
        let out = std::process::Command::new("nft").arg("-f").arg(file.path()).output().unwrap();
        assert!(out.status.success(), "nft: {}", String::from_utf8_lossy(&out.stderr));
        Self { table }
    }
}

impl Drop for PathDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("nft").args(["delete", "table", "inet", &self.table]).status();
    }
}

/// `sfuctl audit ARGS… SPEC` without the shared secret: the TURN checks then allocate no relay, which would hold
/// a media port for a while and show up in the next audit's map.
fn audit(dep: &Deployment, args: &[&str]) -> std::process::Output {
    let mut all = vec!["audit", "--probe-timeout-ms", "4000"];
    all.extend_from_slice(args);
    dep.sfuctl(&all).env_remove("SFUCTL_SECRET").output().unwrap()
}

fn audit_json(dep: &Deployment) -> (i32, Value) {
    let out = audit(dep, &["--output", "json"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)));
    (out.status.code().unwrap_or(-1), v["hosts"][0].clone())
}

fn udp_check(host: &Value) -> Value {
    host["checks"].as_array().unwrap().iter().find(|c| c["id"] == "udp-reachability").unwrap_or_else(|| panic!("no udp-reachability: {host}")).clone()
}

/// The udp-reachability lines of the audit's text (the check and its map), for snapshots.
fn udp_text(dep: &Deployment) -> (i32, String) {
    let out = audit(dep, &[]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let mut lines = text.lines().skip_while(|l| !l.trim_start().starts_with("udp-reachability"));
    let check = lines.next().unwrap_or_else(|| panic!("no udp-reachability line:\n{text}")).to_string();
    let map = lines.next().unwrap_or("").to_string();
    (out.status.code().unwrap_or(-1), format!("{check}\n{map}\n"))
}

#[test]
fn a_single_port_range_is_probed() {
    require_tool("turnserver", "coturn");
    let host = TestHost::start("rmap-one");
    let dep = Deployment::new(&host, "rmap-one", "  kind: coturn\n  artifact: /usr/bin/turnserver\n  rtc_ports: \"44444\"\n", "");
    dep.sfuctl(&["up", "--no-audit"]).assert().success();
    let (code, h) = audit_json(&dep);
    let udp = udp_check(&h);
    assert_eq!((code, udp["status"].as_str()), (0, Some("pass")), "{h}");
    assert_eq!(udp["detail"], "1/1 ports answered", "{h}");
    assert_eq!(udp["range"], serde_json::json!({ "start": 44444, "end": 44444, "probed": 1, "answered": 1, "silent": [], "held": [] }));
    let (code, text) = udp_text(&dep);
    assert_eq!(code, 0);
    insta::assert_snapshot!("single_port_range", text);
}

#[test]
fn a_range_the_server_holds_entirely_is_judged_by_its_sockets() {
    let host = TestHost::start("rmap-held");
    // A custom server that holds the one media port, as a mediasoup WebRtcServer does.
    let server = "socat -u UDP4-RECV:44444 /dev/null";
    let dep = Deployment::new(&host, "rmap-held", &format!("  kind: custom\n  command: {server}\n  rtc_ports: \"44444\"\n"), "");
    dep.sfuctl(&["up", "--no-audit"]).assert().success();
    let (code, h) = audit_json(&dep);
    let udp = udp_check(&h);
    assert_eq!(code, 0, "a warning does not fail the audit: {h}");
    assert_eq!(udp["status"], "warn", "{h}");
    let detail = udp["detail"].as_str().unwrap();
    assert!(detail.contains("held by the server itself") && detail.contains("judged by the server's own sockets (bound UDP sockets on the host)"), "{detail}");
    assert_eq!(udp["range"]["held"], serde_json::json!([[44444, 44444]]));
    assert!(h["cause"].is_null(), "{h}");
    let (_, text) = udp_text(&dep);
    insta::assert_snapshot!("held_range", text);
}

#[test]
fn a_partial_drop_shows_on_the_map() {
    require_tool("turnserver", "coturn");
    let host = TestHost::start("rmap-drop");
    let dep = Deployment::new(&host, "rmap-drop", "  kind: coturn\n  artifact: /usr/bin/turnserver\n  rtc_ports: 40000-40999\n", "");
    dep.sfuctl(&["up", "--no-audit"]).assert().success();
    let _drop = PathDrop::new(&host, "udp dport 40500-40620");
    let (code, h) = audit_json(&dep);
    assert_eq!(code, 3, "{h}");
    let udp = udp_check(&h);
    assert_eq!(udp["range"]["silent"], serde_json::json!([[40500, 40620]]), "{h}");
    assert_eq!((udp["range"]["probed"].as_u64(), udp["range"]["answered"].as_u64()), (Some(1000), Some(879)));
    let (code, text) = udp_text(&dep);
    assert_eq!(code, 3);
    insta::assert_snapshot!("partial_drop", text);
}
