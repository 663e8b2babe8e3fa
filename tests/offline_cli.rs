//! The offline commands through the real binary: validate, plan and render, their exit codes and messages.

use predicates::prelude::*;
use serde_json::Value;

use crate::support::cli::{example, examples, sfuctl};

fn home() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

#[test]
fn plan_works_without_an_account_for_every_example() {
    let home = home();
    for spec in examples() {
        let out = sfuctl(home.path()).arg("plan").arg(&spec).assert().success();
        let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        assert!(stdout.contains("to add, 0 to change, 0 to destroy."), "{}: {stdout}", spec.display());
        if !spec.ends_with("existing-host.yaml") {
            assert!(stdout.contains("No credentials found"), "{}: {stdout}", spec.display());
        }
    }
}

#[test]
fn plan_json_has_the_contract_fields() {
    let home = home();
    let out = sfuctl(home.path()).args(["plan", "--output", "json"]).arg(example("mediasoup-digitalocean.yaml")).assert().success();
    let plan: Value = serde_json::from_slice(&out.get_output().stdout).expect("plan --output json prints JSON");
    let resources = plan["resources"].as_array().unwrap();
    let kinds: Vec<&str> = resources.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["ssh_key", "firewall", "server", "host_firewall", "service"]);
    assert!(resources.iter().all(|r| r["action"] == "create" && r["name"].is_string()));
    let rules = plan["firewall_rules"].as_array().unwrap();
    assert_eq!(rules[0]["protocol"], "tcp");
    assert_eq!(rules[0]["ports"], "22");
    assert_eq!(rules[0]["sources"], serde_json::json!(["203.0.113.7/32"]));
    assert_eq!(rules[1]["protocol"], "udp");
    assert_eq!(rules[1]["ports"], "40000-41000");
    assert_eq!(rules[1]["sources"], serde_json::json!(["0.0.0.0/0", "::/0"]));
    let files = plan["files"].as_array().unwrap();
    assert!(files.iter().any(|f| f["host"] == "sfuctl-clearcomms-1" && f["path"] == "/opt/sfuctl/clearcomms/config/mediasoup-config.js"));
    assert_eq!(plan["refreshed"], false);
}

#[test]
fn detailed_exitcode_reports_pending_changes() {
    let home = home();
    sfuctl(home.path()).args(["plan", "--detailed-exitcode"]).arg(example("janus-linode.yaml")).assert().code(3);
}

/// A spec that is valid, and mutations of it that each must fail with exit 2, naming the field and line.
const BASE: &str = include_str!("fixtures/janus-digitalocean.yaml");

struct Case {
    what: &'static str,
    from: &'static str,
    to: &'static str,
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case { what: "yaml syntax", from: "  kind: janus\n", to: "  kind: \"janus\n", expect: &["spec.yaml:11:1: ", "end of stream"] },
    Case { what: "wrong type", from: "[443]", to: "[https]", expect: &["spec.yaml:10:15: sfu.tcp_ports[0]: invalid type", "hint: `sfu.tcp_ports[0]` takes a port number"] },
    Case { what: "unknown field", from: "tcp_ports", to: "tcp_port", expect: &["spec.yaml:10:3: sfu.tcp_port: unknown field `tcp_port`", "hint: did you mean `tcp_ports`?"] },
    Case { what: "unknown provider", from: "digitalocean", to: "digitalocen", expect: &["unknown value `digitalocen`", "did you mean `digitalocean`?"] },
    Case { what: "missing field", from: "  rtc_ports: 40000-41000\n", to: "", expect: &["spec.yaml:7:1: sfu.rtc_ports: missing field `rtc_ports`", "hint: add `rtc_ports:` to `sfu`"] },
    Case { what: "inverted range", from: "40000-41000", to: "41000-40000", expect: &["spec.yaml:9:3: sfu.rtc_ports: range 41000-40000 is inverted", "40000-41000"] },
    Case { what: "range below 1024", from: "40000-41000", to: "1000-2000", expect: &["below 1024"] },
    Case { what: "a public port on ssh", from: "[443]", to: "[443, 22]", expect: &["spec.yaml:10:20: sfu.tcp_ports[1]: ", "overlaps tcp 22 (SSH"] },
    Case { what: "range overlaps ssh", from: "ssh:\n", to: "ssh:\n  port: 40022\n", expect: &["contains the SSH port 40022"] },
    Case { what: "udp port in the range", from: "  tcp_ports: [443]\n", to: "  udp_ports: [40001]\n", expect: &["spec.yaml:10:15: sfu.udp_ports[0]: ", "overlaps udp 40000-41000"] },
    Case { what: "invalid cidr", from: "203.0.113.7/32", to: "203.0.113.7/33", expect: &["spec.yaml:6:", "ssh.allow_from[0]: `203.0.113.7/33` is not a CIDR"] },
    Case { what: "host bits", from: "203.0.113.7/32", to: "203.0.113.7/24", expect: &["the network is `203.0.113.0/24`"] },
    Case { what: "bad name", from: "name: demo", to: "name: Demo!", expect: &["spec.yaml:1:1: name: ", "lowercase"] },
    Case { what: "hosts on a cloud", from: "  region: fra1\n", to: "  region: fra1\n  hosts: [{ name: a, address: 203.0.113.1 }]\n", expect: &["spec.yaml:5:3: provider.hosts: ", "kind: ssh"] },
    Case { what: "ssh without hosts", from: "digitalocean\n  region: fra1", to: "ssh", expect: &["needs `hosts`"] },
    Case { what: "unknown field in provider", from: "kind: digitalocean\n  region: fra1", to: "kind: linode\n  region: eu-central\nname2: x", expect: &["unknown field `name2`"] },
    Case { what: "tcp media on a kind without it", from: "  tcp_ports: [443]\n", to: "  tcp_ports: [443]\n  rtc_tcp: true\n", expect: &["spec.yaml:11:3: sfu.rtc_tcp: ", "only applies to kind `mediasoup`", "remove it"] },
    Case { what: "command of the wrong type", from: "  tcp_ports: [443]\n", to: "  tcp_ports: [443]\n  artifact: ./missing.tar.gz\n  command: [x]\n", expect: &["sfu.command: invalid type"] },
];

#[test]
fn every_invalid_spec_exits_2_naming_field_and_fix_and_creates_nothing() {
    let home = home();
    for case in CASES {
        let source = BASE.replacen(case.from, case.to, 1);
        assert_ne!(source, BASE, "case `{}` changed nothing", case.what);
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.yaml");
        std::fs::write(&spec, &source).unwrap();
        let out_dir = dir.path().join("out");
        for args in [vec!["validate"], vec!["plan"], vec!["render", "--out", out_dir.to_str().unwrap()]] {
            let out = sfuctl(home.path()).args(&args).arg(&spec).assert().code(2);
            let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
            assert!(stderr.contains("\nerror: invalid spec `"), "case `{}` ({args:?}): {stderr}", case.what);
            for needle in case.expect {
                assert!(stderr.contains(needle), "case `{}` ({args:?}): expected `{needle}` in:\n{stderr}", case.what);
            }
            assert!(!stderr.contains("panicked") && !stderr.contains("stack backtrace"), "{stderr}");
        }
        assert!(!out_dir.exists(), "case `{}`: render wrote files for an invalid spec", case.what);
    }
}

#[test]
fn linode_name_limit_and_rule_limit_are_enforced() {
    let home = home();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    let long = BASE.replace("digitalocean", "linode").replace("fra1", "eu-central").replace("name: demo", "name: a-name-that-is-26-chars-xy");
    std::fs::write(&spec, &long).unwrap();
    sfuctl(home.path()).arg("validate").arg(&spec).assert().code(2).stderr(predicate::str::contains("longer than 32 characters"));
    let ports: Vec<String> = (0..30).map(|i| (10000 + 2 * i).to_string()).collect();
    let many = BASE.replace("digitalocean", "linode").replace("fra1", "eu-central").replace("[443]", &format!("[{}]", ports.join(", ")));
    std::fs::write(&spec, &many).unwrap();
    sfuctl(home.path()).arg("validate").arg(&spec).assert().code(2).stderr(predicate::str::contains("33 Linode firewall rules, more than its limit of 25"));
}

#[test]
fn several_problems_are_reported_together() {
    let home = home();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, BASE.replace("40000-41000", "41000-40000").replace("203.0.113.7/32", "nowhere")).unwrap();
    sfuctl(home.path())
        .arg("validate")
        .arg(&spec)
        .assert()
        .code(2)
        .stderr(predicate::str::contains("2 problems"))
        .stderr(predicate::str::contains("spec.yaml:6:16: ssh.allow_from[0]: "))
        .stderr(predicate::str::contains("spec.yaml:9:3: sfu.rtc_ports: "));
}

#[test]
fn validate_json_lists_errors_with_locations() {
    let home = home();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, BASE.replace("40000-41000", "41000-40000")).unwrap();
    let out = sfuctl(home.path()).args(["validate", "--output", "json"]).arg(&spec).assert().code(2);
    let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["errors"][0]["field"], "sfu.rtc_ports");
    assert_eq!(v["errors"][0]["line"], 9);
}

#[test]
fn warnings_do_not_fail() {
    let home = home();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, BASE.replace("ssh:\n  allow_from: [203.0.113.7/32]\n", "").replace("40000-41000", "40000-40003")).unwrap();
    sfuctl(home.path())
        .arg("validate")
        .arg(&spec)
        .assert()
        .success()
        .stderr(predicate::str::contains("warning:"))
        .stderr(predicate::str::contains("SSH is open to the whole internet"))
        .stderr(predicate::str::contains("4 ports carry about 4 participants"));
}

#[test]
fn a_missing_spec_file_is_bad_input() {
    let home = home();
    sfuctl(home.path())
        .args(["plan", "no/such/spec.yaml"])
        .assert()
        .code(2)
        .stderr(predicate::str::contains("error: cannot read spec `no/such/spec.yaml`"))
        .stderr(predicate::str::contains("hint:"));
}

#[test]
fn usage_errors_exit_2_and_help_teaches() {
    let home = home();
    sfuctl(home.path()).arg("frobnicate").assert().code(2);
    sfuctl(home.path()).args(["render", "x.yaml"]).assert().code(2).stderr(predicate::str::contains("--out"));
    sfuctl(home.path())
        .arg("--help")
        .assert()
        .success()
        .stdout(predicate::str::contains("validate"))
        .stdout(predicate::str::contains("Exit codes"));
}

#[test]
fn render_writes_every_file_with_the_address_and_modes() {
    let home = home();
    let out = tempfile::tempdir().unwrap();
    sfuctl(home.path())
        .env("SFUCTL_SECRET", "s3cret-for-the-test")
        .args(["render", "--address", "203.0.113.5", "--out"])
        .arg(out.path())
        .arg(example("coturn-digitalocean.yaml"))
        .assert()
        .success()
        .stdout(predicate::str::contains("s3cret").not());
    let host = out.path().join("sfuctl-turn-relay-1");
    let conf = std::fs::read_to_string(host.join("opt/sfuctl/turn-relay/config/turnserver.conf")).unwrap();
    assert!(conf.contains("external-ip=203.0.113.5\n"));
    assert!(conf.contains("min-port=49152\nmax-port=49999\n"));
    assert!(conf.contains("static-auth-secret=s3cret-for-the-test\n"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &str| std::fs::metadata(host.join(p)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode("opt/sfuctl/turn-relay/config/turnserver.conf"), 0o600);
    assert_eq!(mode("opt/sfuctl/turn-relay/start.sh"), 0o755);
    let user_data = std::fs::read_to_string(host.join("cloud-init/user-data")).unwrap();
    assert!(user_data.starts_with("#cloud-config\n"));
    assert!(!user_data.contains("s3cret"), "cloud-init user-data is readable through the API: no secrets");
}

#[test]
fn render_without_a_secret_warns_and_makes_one() {
    let home = home();
    let out = tempfile::tempdir().unwrap();
    sfuctl(home.path())
        .args(["render", "--out"])
        .arg(out.path())
        .arg(example("livekit-aws.yaml"))
        .assert()
        .success()
        .stderr(predicate::str::contains("$SFUCTL_SECRET is unset"));
    let conf = std::fs::read_to_string(out.path().join("sfuctl-livekit-demo-1/opt/sfuctl/livekit-demo/config/livekit.yaml")).unwrap();
    assert!(conf.contains("node_ip: \"198.51.100.1\""), "the placeholder address is the default");
}

#[test]
fn render_rejects_a_bad_address_and_address_for_existing_hosts() {
    let home = home();
    let out = tempfile::tempdir().unwrap();
    sfuctl(home.path())
        .args(["render", "--address", "not-an-ip", "--out"])
        .arg(out.path().join("x"))
        .arg(example("janus-linode.yaml"))
        .assert()
        .code(2)
        .stderr(predicate::str::contains("--address `not-an-ip` is not an IP address"));
    sfuctl(home.path())
        .args(["render", "--address", "203.0.113.5", "--out"])
        .arg(out.path().join("y"))
        .arg(example("existing-host.yaml"))
        .assert()
        .code(2);
    assert!(!out.path().join("x").exists() && !out.path().join("y").exists());
}

#[test]
fn templates_can_be_overridden_from_a_directory() {
    let home = home();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("janus")).unwrap();
    std::fs::write(dir.path().join("janus/janus.transport.http.jcfg.j2"), "# mine on {{ sfu.listen_port }}\n").unwrap();
    let out = dir.path().join("out");
    sfuctl(home.path()).args(["render", "--templates"]).arg(dir.path()).arg("--out").arg(&out).arg(example("janus-linode.yaml")).assert().success();
    let http = std::fs::read_to_string(out.join("sfuctl-janus-demo-1/opt/sfuctl/janus-demo/config/janus.transport.http.jcfg")).unwrap();
    assert_eq!(http, "# mine on 8088\n");
    // A typo in an override fails at render time, naming the variable.
    std::fs::write(dir.path().join("janus/janus.transport.http.jcfg.j2"), "{{ sfu.listen_prot }}\n").unwrap();
    sfuctl(home.path())
        .args(["plan", "--templates"])
        .arg(dir.path())
        .arg(example("janus-linode.yaml"))
        .assert()
        .failure()
        .stderr(predicate::str::contains("janus/janus.transport.http.jcfg.j2"));
}

/// Issue 15: ports copied from a server's docs that the kind opens anyway are accepted, with a note.
#[test]
fn a_port_the_kind_already_opens_is_a_note() {
    let home = home();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    let cases = [
        ("janus", "  tcp_ports: [8088]\n", "sfu.tcp_ports[0]: tcp 8088 is already opened by `sfu.listen_port` (Janus HTTP API)"),
        ("livekit", "  tcp_ports: [7881, 443]\n", "sfu.tcp_ports[0]: tcp 7881 is already opened by `sfu.ice_tcp_port`"),
        ("coturn", "  udp_ports: [3478]\n", "sfu.udp_ports[0]: udp 3478 is already opened by `sfu.listen_port`"),
    ];
    for (kind, ports, note) in cases {
        std::fs::write(&spec, BASE.replace("kind: janus", &format!("kind: {kind}")).replace("  tcp_ports: [443]\n", ports)).unwrap();
        sfuctl(home.path())
            .arg("validate")
            .arg(&spec)
            .assert()
            .success()
            .stderr(predicate::str::contains(format!("note: {}:10:", spec.display())))
            .stderr(predicate::str::contains(note))
            .stdout(predicate::str::contains("is valid"));
        let out = sfuctl(home.path()).args(["validate", "-o", "json"]).arg(&spec).assert().success();
        let v: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["notes"].as_array().unwrap().len(), 1, "{kind}: {v}");
        // plan opens the port once.
        let out = sfuctl(home.path()).args(["plan", "-o", "json"]).arg(&spec).assert().success();
        let plan: Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
        let port = if kind == "janus" { "8088" } else if kind == "livekit" { "7881" } else { "3478" };
        let rules: Vec<&Value> = plan["firewall_rules"].as_array().unwrap().iter().filter(|r| r["ports"].as_str().is_some_and(|p| p.split('-').any(|x| x == port))).collect();
        assert!(!rules.is_empty(), "{kind}: {plan}");
        let listed_again = format!("_ports {port}");
        assert!(rules.iter().all(|r| !r["purposes"].to_string().contains(&listed_again)), "{kind}: the port got a second rule: {rules:?}");
    }
}
