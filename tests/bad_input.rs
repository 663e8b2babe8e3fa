//! Bad input, table-driven (issue 14): malformed specs and flag combinations through the real binary. Every case
//! must exit 2 with a message that names the field or the line, never panic, and create nothing: offline cases
//! write no file (render) and no state; cloud cases run `up --yes` against the DigitalOcean, Linode and Vultr fakes
//! and moto, which must hold nothing afterwards and have seen no creating request at all.

use std::path::Path;

use serde_json::Value;

use crate::support::cli::{example, sfuctl};
use crate::support::cloud_deployment::CloudEnv;
use crate::support::do_fake::DoFake;
use crate::support::linode_fake::LinodeFake;
use crate::support::moto::Moto;
use crate::support::vultr_fake::VultrFake;

/// The valid spec every spec case starts from.
const BASE: &str = include_str!("fixtures/janus-digitalocean.yaml");

/// Where a case's spec comes from.
enum Source {
    /// `BASE` with the first `from` replaced by `to`.
    Edit(&'static str, &'static str),
    /// A whole spec; `{key}` stands for an existing private key file.
    Whole(&'static str),
}

struct Case {
    what: &'static str,
    source: Source,
    /// Every one of these must be in stderr.
    expect: &'static [&'static str],
}

fn spec_text(source: &Source, key: &Path) -> String {
    match source {
        Source::Edit(from, to) => {
            assert!(BASE.contains(from), "`{from}` is not in the base spec");
            BASE.replacen(from, to, 1)
        }
        Source::Whole(text) => text.replace("{key}", &key.display().to_string()),
    }
}

const SSH_HOSTS: &str = "name: demo\nprovider:\n  kind: ssh\n  hosts:\n    - name: a\n      address: 203.0.113.10\nssh:\n  allow_from: [203.0.113.7/32]\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n";

/// Specs every command must refuse: syntax, types, unknown fields, ranges, CIDRs, names and the rules of providers
/// and server kinds.
const SPEC_CASES: &[Case] = &[
    Case { what: "unclosed quote", source: Source::Edit("  kind: janus\n", "  kind: \"janus\n"), expect: &["spec.yaml:11:1: ", "end of stream"] },
    Case { what: "tab indentation", source: Source::Edit("  kind: janus\n", "\tkind: janus\n"), expect: &["spec.yaml:8:1: ", "hint: this line is indented with a tab"] },
    Case { what: "duplicate key", source: Source::Edit("  tcp_ports: [443]\n", "  tcp_ports: [443]\n  kind: coturn\n"), expect: &["spec.yaml:11:3: ", "the key `kind` appears twice"] },
    Case { what: "empty file", source: Source::Whole(""), expect: &["spec.yaml:1:1: the spec is empty"] },
    Case { what: "a list, not a mapping", source: Source::Whole("- name: demo\n"), expect: &["spec.yaml:1:1: the spec is a list"] },
    Case { what: "port of the wrong type", source: Source::Edit("[443]", "[https]"), expect: &["spec.yaml:10:15: sfu.tcp_ports[0]: invalid type", "takes a port number"] },
    Case { what: "range as a list", source: Source::Edit("40000-41000", "[40000, 41000]"), expect: &["spec.yaml:9:", "sfu.rtc_ports: "] },
    Case { what: "boolean of the wrong type", source: Source::Edit("name: demo\n", "name: demo\nhost_firewall: maybe\n"), expect: &["spec.yaml:2:", "host_firewall: invalid type", "`true` or `false`"] },
    Case { what: "count as a word", source: Source::Edit("  region: fra1\n", "  region: fra1\n  count: two\n"), expect: &["spec.yaml:5:", "provider.count: invalid type"] },
    Case { what: "section as a string", source: Source::Edit("ssh:\n  allow_from: [203.0.113.7/32]\n", "ssh: root\n"), expect: &["spec.yaml:5:", "ssh: invalid type", "a mapping of fields"] },
    Case { what: "unknown top-level field", source: Source::Edit("name: demo\n", "name: demo\nregoin: fra1\n"), expect: &["spec.yaml:2:1: regoin: unknown field `regoin`"] },
    Case {
        what: "two unknown fields at once",
        source: Source::Edit("  allow_from: [203.0.113.7/32]\nsfu:\n  kind: janus\n  rtc_ports", "  alow_from: [203.0.113.7/32]\nsfu:\n  kind: janus\n  rtc_port"),
        expect: &["spec.yaml:6:3: ssh.alow_from: unknown field", "did you mean `allow_from`?", "spec.yaml:9:3: sfu.rtc_port: unknown field", "did you mean `rtc_ports`?", "2 problems"],
    },
    Case { what: "unknown field in a host", source: Source::Whole("name: demo\nprovider:\n  kind: ssh\n  hosts:\n    - name: a\n      adress: 203.0.113.10\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n"), expect: &["spec.yaml:6:7: provider.hosts[0].adress: unknown field", "did you mean `address`?"] },
    Case { what: "unknown provider kind", source: Source::Edit("digitalocean", "digitalocen"), expect: &["provider.kind: unknown value `digitalocen`", "did you mean `digitalocean`?"] },
    Case { what: "unknown server kind", source: Source::Edit("kind: janus", "kind: jnaus"), expect: &["spec.yaml:8:", "sfu.kind: unknown value `jnaus`", "did you mean `janus`?"] },
    Case { what: "no sfu section", source: Source::Edit("sfu:\n  kind: janus\n  rtc_ports: 40000-41000\n  tcp_ports: [443]\n", ""), expect: &["sfu: missing field `sfu`", "add `sfu:` to the top level"] },
    Case { what: "no name", source: Source::Edit("name: demo\n", ""), expect: &["name: missing field `name`"] },
    Case { what: "inverted range", source: Source::Edit("40000-41000", "41000-40000"), expect: &["spec.yaml:9:3: sfu.rtc_ports: range 41000-40000 is inverted", "`40000-41000`"] },
    Case { what: "range below 1024", source: Source::Edit("40000-41000", "1000-2000"), expect: &["sfu.rtc_ports: ", "below 1024"] },
    Case { what: "range past 65535", source: Source::Edit("40000-41000", "40000-70000"), expect: &["spec.yaml:9:", "sfu.rtc_ports: ", "ports are 1-65535"] },
    Case { what: "range that is a word", source: Source::Edit("40000-41000", "media"), expect: &["sfu.rtc_ports: ", "`media` is not a port range"] },
    Case { what: "port 0", source: Source::Edit("[443]", "[443, 0]"), expect: &["sfu.tcp_ports[1]: 0 is not a port"] },
    Case { what: "port listed twice", source: Source::Edit("[443]", "[443, 443]"), expect: &["sfu.tcp_ports[1]: port 443 is listed twice"] },
    Case { what: "a public port on SSH", source: Source::Edit("[443]", "[443, 22]"), expect: &["spec.yaml:10:20: sfu.tcp_ports[1]: ", "overlaps tcp 22 (SSH"] },
    Case { what: "udp port in the media range", source: Source::Edit("  tcp_ports: [443]\n", "  udp_ports: [40001]\n"), expect: &["spec.yaml:10:15: sfu.udp_ports[0]: ", "overlaps udp 40000-41000"] },
    Case { what: "SSH inside the media range", source: Source::Edit("ssh:\n", "ssh:\n  port: 40022\n"), expect: &["sfu.rtc_ports: ", "contains the SSH port 40022"] },
    Case { what: "invalid CIDR", source: Source::Edit("203.0.113.7/32", "203.0.113.7/33"), expect: &["spec.yaml:6:", "ssh.allow_from[0]: `203.0.113.7/33` is not a CIDR"] },
    Case { what: "CIDR with host bits", source: Source::Edit("203.0.113.7/32", "203.0.113.7/24"), expect: &["ssh.allow_from[0]: ", "the network is `203.0.113.0/24`"] },
    Case { what: "empty allow_from", source: Source::Edit("[203.0.113.7/32]", "[]"), expect: &["spec.yaml:6:3: ssh.allow_from: is empty"] },
    Case { what: "name with capitals", source: Source::Edit("name: demo", "name: Demo!"), expect: &["spec.yaml:1:1: name: ", "lowercase"] },
    Case { what: "name with --", source: Source::Edit("name: demo", "name: de--mo"), expect: &["spec.yaml:1:1: name: ", "`--`"] },
    Case { what: "name too long", source: Source::Edit("name: demo", "name: abcdefghijklmnopqrstuvwxyz0123456"), expect: &["name: ", "1 to 32 characters"] },
    Case { what: "unknown field after a section", source: Source::Edit("kind: digitalocean\n  region: fra1", "kind: linode\n  region: eu-central\nname2: x"), expect: &["spec.yaml:5:1: name2: unknown field"] },
    Case { what: "name too long for Linode", source: Source::Whole("name: a-name-that-is-26-chars-xy\nprovider: { kind: linode, region: eu-central }\nsfu: { kind: janus, rtc_ports: 40000-41000 }\n"), expect: &["spec.yaml:1:1: name: ", "longer than 32 characters, the most Linode allows"] },
    Case { what: "hosts on a cloud", source: Source::Edit("  region: fra1\n", "  region: fra1\n  hosts: [{ name: a, address: 203.0.113.1 }]\n"), expect: &["spec.yaml:5:3: provider.hosts: ", "kind: ssh"] },
    Case { what: "ssh without hosts", source: Source::Edit("digitalocean\n  region: fra1", "ssh"), expect: &["provider: ", "needs `hosts`"] },
    Case { what: "host address not an IP", source: Source::Whole("name: demo\nprovider:\n  kind: ssh\n  hosts:\n    - name: a\n      address: media.example.com\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n"), expect: &["spec.yaml:6:7: provider.hosts[0].address: `media.example.com` is not an IP address"] },
    Case {
        what: "two hosts of one name",
        source: Source::Whole("name: demo\nprovider:\n  kind: ssh\n  hosts:\n    - { name: a, address: 203.0.113.10 }\n    - { name: a, address: 203.0.113.11 }\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n"),
        expect: &["spec.yaml:6:", "provider.hosts[1].name: two hosts are named `a`"],
    },
    Case { what: "bad host key", source: Source::Edit("  allow_from: [203.0.113.7/32]\n", "  allow_from: [203.0.113.7/32]\n  host_key: md5:aa:bb\n"), expect: &["spec.yaml:7:3: ssh.host_key: `md5:aa:bb` is not a SHA256 host key fingerprint"] },
    Case { what: "count 0", source: Source::Edit("  region: fra1\n", "  region: fra1\n  count: 0\n"), expect: &["spec.yaml:5:3: provider.count: must be at least 1"] },
    Case { what: "count past the limit", source: Source::Edit("  region: fra1\n", "  region: fra1\n  count: 4000000000\n"), expect: &["spec.yaml:5:3: provider.count: 4000000000 hosts are more than one deployment holds"] },
    Case { what: "count past u32", source: Source::Edit("  region: fra1\n", "  region: fra1\n  count: 99999999999\n"), expect: &["spec.yaml:5:", "provider.count: invalid value", "a whole number"] },
    Case { what: "region on kind ssh", source: Source::Whole("name: demo\nprovider:\n  kind: ssh\n  region: fra1\n  hosts: [{ name: a, address: 203.0.113.10 }]\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n"), expect: &["spec.yaml:4:3: provider.region: ", "only applies to cloud providers"] },
    Case { what: "ipv6 on kind ssh", source: Source::Whole("name: demo\nprovider:\n  kind: ssh\n  ipv6: true\n  hosts: [{ name: a, address: 203.0.113.10 }]\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n"), expect: &["spec.yaml:4:3: provider.ipv6: "] },
    Case { what: "ice_tcp_port on janus", source: Source::Edit("  tcp_ports: [443]\n", "  ice_tcp_port: 7881\n"), expect: &["spec.yaml:10:3: sfu.ice_tcp_port: only applies to kind"] },
    Case { what: "listen_port on custom", source: Source::Edit("kind: janus", "kind: custom\n  command: ./run\n  listen_port: 9000"), expect: &["sfu.listen_port: kind `custom` has no listen port of its own"] },
    Case { what: "custom without command", source: Source::Edit("kind: janus", "kind: custom"), expect: &["spec.yaml:7:1: sfu: kind `custom` needs a `command`"] },
    Case { what: "mediasoup without artifact", source: Source::Edit("kind: janus", "kind: mediasoup"), expect: &["spec.yaml:7:1: sfu: kind `mediasoup` needs an `artifact`"] },
    Case { what: "env var sfuctl sets", source: Source::Edit("  tcp_ports: [443]\n", "  env:\n    SFU_RTC_MIN_PORT: \"1\"\n"), expect: &["spec.yaml:11:5: sfu.env.SFU_RTC_MIN_PORT: ", "set by sfuctl"] },
    Case { what: "env var name", source: Source::Edit("  tcp_ports: [443]\n", "  env:\n    1BAD: x\n"), expect: &["sfu.env.1BAD: ", "not a valid environment variable name"] },
    Case { what: "bad domain", source: Source::Edit("  tcp_ports: [443]\n", "  domain: localhost\n"), expect: &["spec.yaml:10:3: sfu.domain: `localhost` is not a domain name"] },
    Case { what: "node_version on janus", source: Source::Edit("  tcp_ports: [443]\n", "  node_version: 22\n"), expect: &["spec.yaml:10:3: sfu.node_version: ", "does not run on Node.js"] },
    Case { what: "package name", source: Source::Edit("  tcp_ports: [443]\n", "  packages: [\"rm -rf /\"]\n"), expect: &["sfu.packages[0]: ", "not a Debian/Ubuntu package name"] },
    Case { what: "secret_env name", source: Source::Edit("  tcp_ports: [443]\n", "  secret_env: my-secret\n"), expect: &["spec.yaml:10:3: sfu.secret_env: ", "not an environment variable name"] },
    Case { what: "ssh user", source: Source::Edit("  allow_from: [203.0.113.7/32]\n", "  allow_from: [203.0.113.7/32]\n  user: \"root;reboot\"\n"), expect: &["spec.yaml:7:3: ssh.user: "] },
    Case { what: "too many firewall rules on Linode", source: Source::Whole("name: demo\nprovider: { kind: linode, region: eu-central }\nssh: { allow_from: [203.0.113.7/32] }\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n  tcp_ports: [10000, 10002, 10004, 10006, 10008, 10010, 10012, 10014, 10016, 10018, 10020, 10022, 10024, 10026, 10028, 10030, 10032, 10034, 10036, 10038, 10040, 10042, 10044, 10046, 10048, 10050]\n"), expect: &["spec.yaml:4:1: sfu: ", "more than its limit of 25"] },
    Case {
        what: "a missing field and a bad CIDR together",
        source: Source::Whole("name: demo\nprovider:\n  kind: digitalocean\n  region: fra1\nssh:\n  allow_from: [203.0.113.7/24]\nsfu:\n  rtc_ports: 40000-41000\n"),
        expect: &["spec.yaml:6:16: ssh.allow_from[0]: ", "spec.yaml:7:1: sfu.kind: missing field `kind`", "2 problems"],
    },
    Case {
        what: "types, unknown fields and semantics together",
        source: Source::Whole("name: Demo\nprovider:\n  kind: ssh\n  hosts:\n    - name: a\n      address: 203.0.113.10\n      port: 22\nssh:\n  allow_from: [203.0.113.7/33]\n  port: ssh\nsfu:\n  kind: janus\n  rtc_ports: 41000-40000\n"),
        expect: &["spec.yaml:1:1: name: ", "spec.yaml:7:7: provider.hosts[0].port: unknown field", "spec.yaml:9:16: ssh.allow_from[0]: ", "spec.yaml:10:3: ssh.port: invalid type", "spec.yaml:13:3: sfu.rtc_ports: range 41000-40000 is inverted", "5 problems"],
    },
];

fn check_stderr(what: &str, args: &[&str], stderr: &str, expect: &[&str]) {
    assert!(!stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"), "case `{what}` ({args:?}) panicked:\n{stderr}");
    for needle in expect {
        assert!(stderr.contains(needle), "case `{what}` ({args:?}): expected `{needle}` in:\n{stderr}");
    }
}

#[test]
fn every_malformed_spec_exits_2_naming_the_field_or_line_and_creates_nothing() {
    assert!(SPEC_CASES.len() >= 40, "issue 14 asks for at least 40 malformed specs");
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("id_ed25519");
    std::fs::write(&key, "not used: every case stops before SSH\n").unwrap();
    for case in SPEC_CASES {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.yaml");
        std::fs::write(&spec, spec_text(&case.source, &key)).unwrap();
        let out = dir.path().join("out");
        let state = dir.path().join("state");
        let commands: [&[&str]; 7] =
            [&["validate"], &["plan"], &["render", "--out", out.to_str().unwrap()], &["up", "--yes"], &["status"], &["audit"], &["down", "--yes"]];
        for args in commands {
            let run = sfuctl(home.path()).env("SFUCTL_STATE_DIR", &state).args(args).arg(&spec).assert().code(2);
            let stderr = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
            check_stderr(case.what, args, &stderr, case.expect);
            assert!(stderr.contains("\nerror: invalid spec `"), "case `{}` ({args:?}): no summary line:\n{stderr}", case.what);
        }
        // validate --output json: the same problems, each with field, line, column, message and hint.
        let run = sfuctl(home.path()).args(["validate", "--output", "json"]).arg(&spec).assert().code(2);
        let report: Value = serde_json::from_slice(&run.get_output().stdout).unwrap_or_else(|e| panic!("case `{}`: not JSON ({e})", case.what));
        assert_eq!(report["ok"], false);
        let errors = report["errors"].as_array().unwrap();
        assert!(!errors.is_empty(), "case `{}`: {report}", case.what);
        for e in errors {
            for key in ["field", "line", "column", "message", "hint"] {
                assert!(e.get(key).is_some(), "case `{}`: `{key}` missing in {e}", case.what);
            }
            assert!(e["field"].as_str().is_some_and(|f| !f.is_empty()) || e["line"].is_u64(), "case `{}`: names neither field nor line: {e}", case.what);
        }
        assert!(!out.exists(), "case `{}`: render wrote files for an invalid spec", case.what);
        assert!(!state.exists(), "case `{}`: a command wrote state for an invalid spec", case.what);
    }
}

#[test]
fn several_unknown_fields_are_reported_together_in_json() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    std::fs::write(&spec, BASE.replace("allow_from", "alow_from").replace("rtc_ports", "rtc_port").replace("[443]", "[https]")).unwrap();
    let run = sfuctl(home.path()).args(["validate", "-o", "json"]).arg(&spec).assert().code(2);
    let report: Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    let errors = report["errors"].as_array().unwrap();
    let found: Vec<(&str, u64, u64)> = errors.iter().map(|e| (e["field"].as_str().unwrap(), e["line"].as_u64().unwrap(), e["column"].as_u64().unwrap())).collect();
    assert_eq!(found, [("ssh.alow_from", 6, 3), ("sfu.rtc_port", 9, 3), ("sfu.tcp_ports[0]", 10, 15)], "{report:#}");
    assert!(errors[0]["hint"].as_str().unwrap().starts_with("did you mean `allow_from`?"));
    assert!(errors[1]["hint"].as_str().unwrap().starts_with("did you mean `rtc_ports`?"));
    assert!(errors[2]["hint"].as_str().unwrap().contains("port number"));
}

/// Files and credentials `up` needs, and flag combinations: each exit 2 before anything is touched.
struct FlagCase {
    what: &'static str,
    /// A spec (see [`Source`]).
    source: Source,
    /// The arguments; `SPEC` stands for the spec's path, `OUT` for an output directory that must not appear.
    args: &'static [&'static str],
    expect: &'static [&'static str],
}

const CLOUD_SPEC: &str = "name: demo\nprovider: { kind: digitalocean, region: fra1 }\nssh: { allow_from: [203.0.113.7/32], private_key: \"{key}\" }\nsfu: { kind: janus, rtc_ports: 40000-41000 }\n";

const FLAG_CASES: &[FlagCase] = &[
    FlagCase { what: "up: missing artifact", source: Source::Edit("  tcp_ports: [443]\n", "  tcp_ports: [443]\n  artifact: ./no-such-app\n"), args: &["up", "--yes", "SPEC"], expect: &["sfu.artifact: ", "no-such-app` does not exist", "hint: build the artifact first"] },
    FlagCase { what: "up: missing private key", source: Source::Edit("  allow_from: [203.0.113.7/32]\n", "  allow_from: [203.0.113.7/32]\n  private_key: ./no-such-key\n"), args: &["up", "--yes", "SPEC"], expect: &["spec.yaml:7:3: ssh.private_key: ", "no-such-key` does not exist"] },
    FlagCase { what: "up: no credentials", source: Source::Whole(CLOUD_SPEC), args: &["up", "--yes", "SPEC"], expect: &["DIGITALOCEAN_TOKEN"] },
    FlagCase { what: "an unknown output format", source: Source::Whole(CLOUD_SPEC), args: &["validate", "--output", "yaml", "SPEC"], expect: &["invalid value 'yaml'", "--output"] },
    FlagCase { what: "render without --out", source: Source::Whole(CLOUD_SPEC), args: &["render", "SPEC"], expect: &["--out"] },
    FlagCase { what: "render: address not an IP", source: Source::Whole(CLOUD_SPEC), args: &["render", "--address", "not-an-ip", "--out", "OUT", "SPEC"], expect: &["--address `not-an-ip` is not an IP address"] },
    FlagCase { what: "render: address for existing hosts", source: Source::Whole(SSH_HOSTS), args: &["render", "--address", "203.0.113.5", "--out", "OUT", "SPEC"], expect: &["--address"] },
    FlagCase { what: "up: --sample with --no-audit", source: Source::Whole(CLOUD_SPEC), args: &["up", "--yes", "--no-audit", "--sample", "5", "SPEC"], expect: &["--no-audit", "--sample"] },
    FlagCase { what: "two specs", source: Source::Whole(CLOUD_SPEC), args: &["validate", "SPEC", "SPEC"], expect: &["unexpected argument"] },
    FlagCase { what: "a spec that is a directory", source: Source::Whole(CLOUD_SPEC), args: &["plan", "OUT/.."], expect: &["cannot read spec"] },
    FlagCase { what: "a missing spec", source: Source::Whole(CLOUD_SPEC), args: &["plan", "OUT/none.yaml"], expect: &["cannot read spec", "hint: "] },
    FlagCase { what: "a timeout that is not a number", source: Source::Whole(CLOUD_SPEC), args: &["up", "--yes", "--connect-timeout", "soon", "SPEC"], expect: &["invalid value 'soon'", "--connect-timeout"] },
    FlagCase { what: "down without a terminal or --yes", source: Source::Whole(SSH_HOSTS), args: &["down", "SPEC"], expect: &["--yes"] },
];

#[test]
fn missing_files_credentials_and_conflicting_flags_exit_2() {
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("id_ed25519");
    std::fs::write(&key, "-----BEGIN OPENSSH PRIVATE KEY-----\nnot a real key\n-----END OPENSSH PRIVATE KEY-----\n").unwrap();
    std::fs::write(home.path().join("id_ed25519.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDjOuuJ8Q2o7d0tGo1lpvb7m3Zx8mA0Yq6a0n9O1dZ2b test\n").unwrap();
    for case in FLAG_CASES {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.yaml");
        std::fs::write(&spec, spec_text(&case.source, &key)).unwrap();
        let out = dir.path().join("out");
        let state = dir.path().join("state");
        let args: Vec<String> = case
            .args
            .iter()
            .map(|a| a.replace("SPEC", spec.to_str().unwrap()).replace("OUT", out.to_str().unwrap()))
            .collect();
        let run = sfuctl(home.path()).env("SFUCTL_STATE_DIR", &state).args(&args).assert().code(2);
        let stderr = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
        check_stderr(case.what, case.args, &stderr, case.expect);
        let made = out.exists() && std::fs::read_dir(&out).is_ok_and(|mut d| d.next().is_some());
        assert!(!made, "case `{}`: files were written", case.what);
        assert!(!state.join("demo.json").exists(), "case `{}`: state was written", case.what);
    }
}

/// A cloud case: `up --yes` of a spec whose region, size or image the API does not offer.
struct ApiCase {
    what: &'static str,
    provider: &'static str,
    expect: &'static [&'static str],
}

fn cloud_spec(provider: &str, key: &Path) -> String {
    format!(
        "name: bad-choice\nprovider: {provider}\nssh: {{ allow_from: [203.0.113.7/32], private_key: \"{}\" }}\nsfu: {{ kind: coturn, rtc_ports: 40000-41000, artifact: /usr/bin/true }}\n",
        key.display()
    )
}

/// Runs every case against one cloud: exit 2, the field and the API's valid choices named, and the API saw only
/// reads (no POST, PUT or DELETE), so nothing was created.
fn run_api_cases(env: &impl CloudEnv, cases: &[ApiCase], requests: impl Fn() -> Vec<String>) {
    let home = tempfile::tempdir().unwrap();
    let key = home.path().join("id_ed25519");
    let made = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status().expect("ssh-keygen (openssh-client) is installed");
    assert!(made.success());
    for case in cases {
        let dir = tempfile::tempdir().unwrap();
        let spec = dir.path().join("spec.yaml");
        std::fs::write(&spec, cloud_spec(case.provider, &key)).unwrap();
        let mut cmd = sfuctl(home.path());
        for (k, v) in env.env() {
            cmd.env(k, v);
        }
        let run = cmd.env("SFUCTL_STATE_DIR", dir.path().join("state")).env("SFUCTL_SECRET", "bad-input-secret-0123456789abcdef0123456789").args(["up", "--yes"]).arg(&spec).assert().code(2);
        let stderr = String::from_utf8_lossy(&run.get_output().stderr).into_owned();
        check_stderr(case.what, &["up", "--yes"], &stderr, case.expect);
        let writes: Vec<String> = requests().into_iter().filter(|r| !r.starts_with("GET ")).collect();
        assert!(writes.is_empty(), "case `{}`: the API was asked to change something: {writes:?}\n{stderr}", case.what);
    }
}

/// The fake's inventory: every list of resources it holds must be empty.
fn assert_empty_inventory(title: &str, state: &Value, lists: &[&str]) {
    for list in lists {
        let items = state[list].as_array().unwrap_or_else(|| panic!("{title} state has no `{list}`: {state}"));
        assert!(items.is_empty(), "{title} holds {list} after bad input: {items:?}");
    }
}

fn fake_writes(fake: &crate::support::api_fake::ApiFake) -> Vec<String> {
    fake.request_lines().into_iter().filter(|l| !l.contains("/_fake/")).collect()
}

#[test]
fn unknown_region_size_and_image_are_reported_from_the_digitalocean_api() {
    let fake = DoFake::start();
    let cases = [
        ApiCase { what: "DigitalOcean region", provider: "{ kind: digitalocean, region: fra9 }", expect: &["provider.region", "`fra9`", "did you mean `fra1`?", "nyc3", "GET /v2/regions"] },
        ApiCase { what: "DigitalOcean size", provider: "{ kind: digitalocean, region: fra1, size: s-1vcpu-3gb }", expect: &["provider.size", "`s-1vcpu-3gb`", "s-1vcpu-2gb", "GET /v2/sizes"] },
        ApiCase { what: "DigitalOcean image", provider: "{ kind: digitalocean, region: fra1, image: ubuntu-99-04-x64 }", expect: &["provider.image", "`ubuntu-99-04-x64`", "ubuntu-24-04-x64", "GET /v2/images"] },
    ];
    run_api_cases(&fake, &cases, || fake_writes(&fake));
    assert_empty_inventory("DigitalOcean", &fake.get("/_fake/state"), &["droplets", "firewalls", "ssh_keys", "tags"]);
}

#[test]
fn unknown_region_size_and_image_are_reported_from_the_linode_api() {
    let fake = LinodeFake::start();
    let cases = [
        ApiCase { what: "Linode region", provider: "{ kind: linode, region: eu-centrl }", expect: &["provider.region", "`eu-centrl`", "did you mean `eu-central`?", "GET /v4/regions"] },
        ApiCase { what: "Linode type", provider: "{ kind: linode, region: eu-central, size: g6-standard-99 }", expect: &["provider.size", "`g6-standard-99`", "g6-standard-2", "GET /v4/linode/types"] },
        ApiCase { what: "Linode image", provider: "{ kind: linode, region: eu-central, image: linode/ubuntu99.04 }", expect: &["provider.image", "`linode/ubuntu99.04`", "linode/ubuntu24.04", "GET /v4/images"] },
    ];
    run_api_cases(&fake, &cases, || fake_writes(&fake));
    assert_empty_inventory("Linode", &fake.get("/_fake/state"), &["instances", "firewalls", "ssh_keys"]);
}

#[test]
fn unknown_region_size_and_image_are_reported_from_the_vultr_api() {
    let fake = VultrFake::start();
    let cases = [
        ApiCase { what: "Vultr region", provider: "{ kind: vultr, region: frx }", expect: &["provider.region", "`frx`", "fra", "GET /regions"] },
        ApiCase { what: "Vultr plan", provider: "{ kind: vultr, region: fra, size: vc2-9c-9gb }", expect: &["provider.size", "`vc2-9c-9gb`", "vc2-1c-1gb", "GET /plans"] },
        ApiCase { what: "Vultr OS", provider: "{ kind: vultr, region: fra, image: TempleOS }", expect: &["provider.image", "`TempleOS`", "Ubuntu 24.04", "GET /os"] },
    ];
    run_api_cases(&fake, &cases, || fake_writes(&fake));
    assert_empty_inventory("Vultr", &fake.get("/_fake/state"), &["instances", "firewall_groups", "ssh_keys"]);
}

#[test]
fn an_unknown_instance_type_is_reported_from_the_ec2_api() {
    let moto = Moto::start(&[]);
    let cases = [ApiCase { what: "EC2 instance type", provider: "{ kind: aws, region: us-east-1, size: c6i.hyper }", expect: &["provider.size", "`c6i.hyper`", "c6i.large", "DescribeInstanceTypeOfferings in us-east-1"] }];
    run_api_cases(&moto, &cases, Vec::new);
    let inv = moto.inventory();
    assert!(inv["instances"].as_array().unwrap().is_empty(), "{inv}");
    let ours: Vec<&Value> = inv["groups"].as_array().unwrap().iter().filter(|g| g["name"].as_str().is_some_and(|n| n.contains("bad-choice"))).collect();
    assert!(ours.is_empty(), "a security group was created: {ours:?}");
}

#[test]
fn examples_stay_valid() {
    // The suite's base and the examples are valid: the cases above fail for their own reason only.
    let home = tempfile::tempdir().unwrap();
    for name in ["janus-linode.yaml", "coturn-digitalocean.yaml", "existing-host.yaml"] {
        sfuctl(home.path()).arg("validate").arg(example(name)).assert().success();
    }
}

/// The wording of a many-problem spec's report, text and JSON, changes only on purpose (insta snapshots).
#[test]
fn the_report_of_many_problems_is_snapshotted() {
    let home = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.yaml");
    let source = "name: Demo\nprovider:\n  kind: digitalocean\n  region: fra1\n  cout: 2\nssh:\n  allow_from: [203.0.113.7/24]\n  usr: root\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n  participants: many\n  tcp_ports: [443, 8088, 22]\n  udp_ports: [40500]\n";
    std::fs::write(&spec, source).unwrap();
    let run = sfuctl(home.path()).arg("validate").arg(&spec).assert().code(2);
    let text = String::from_utf8_lossy(&run.get_output().stderr).replace(&spec.display().to_string(), "spec.yaml");
    insta::assert_snapshot!("validate_text_many_problems", text);
    let run = sfuctl(home.path()).args(["validate", "-o", "json"]).arg(&spec).assert().code(2);
    let json: Value = serde_json::from_slice(&run.get_output().stdout).unwrap();
    insta::assert_snapshot!("validate_json_many_problems", serde_json::to_string_pretty(&json).unwrap());
}
