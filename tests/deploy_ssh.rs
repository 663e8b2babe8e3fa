//! `up`, `status` and `down` for existing hosts (kind ssh), end to end: namespace hosts with a real sshd, the real
//! coturn and Janus binaries from Debian's packages as artifacts, real nftables.

use std::time::{Duration, Instant};

use predicates::prelude::*;
use serde_json::Value;

use crate::support::cli::require_tool;
use crate::support::deployment::Deployment;
use crate::support::netns::TestHost;

const COTURN: &str = "  kind: coturn\n  artifact: /usr/bin/turnserver\n  rtc_ports: 40000-40999\n";

fn json(out: &assert_cmd::assert::Assert) -> Value {
    serde_json::from_slice(&out.get_output().stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.get_output().stdout)))
}

fn stderr(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

/// The processes running in the host's namespace, besides sshd.
fn service_processes(host: &TestHost) -> Vec<String> {
    let out = std::process::Command::new("ip").args(["netns", "pids", host.ns()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok())
        .map(|c| c.replace('\0', " ").trim().to_string())
        .filter(|c| !c.is_empty() && !c.contains("sshd"))
        .collect()
}

#[test]
fn coturn_up_status_rerun_converge_and_down() {
    require_tool("turnserver", "coturn");
    let host = TestHost::start("coturn");
    let dep = Deployment::new(&host, "turn", COTURN, "");

    let out = dep.sfuctl(&["up"]).assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(text.contains("STUN Binding on udp"), "{text}");
    assert!(stderr(&out).contains(&format!("pinned host key {}", host.host_key_fingerprint())), "{}", stderr(&out));
    assert!(dep.root().join("config/turnserver.conf").is_file());

    let status = json(&dep.sfuctl(&["status", "--output", "json"]).assert().success());
    let h = &status["hosts"][0];
    assert_eq!(h["service"]["state"], "active", "{status}");
    assert_eq!(h["manager"], "supervisor");
    assert_eq!(h["ports_bound"], serde_json::json!(["udp 3478", "tcp 3478"]));
    assert_eq!(h["host_firewall"], true);
    assert_eq!(h["artifact_sha256"].as_str().unwrap().len(), 64);
    let text_status = dep.sfuctl(&["status"]).assert().success();
    assert!(String::from_utf8_lossy(&text_status.get_output().stdout).contains("active (supervisor)"));

    // Unchanged: nothing sent, nothing restarted.
    let again = dep.sfuctl(&["up", "--output", "json"]).assert().success();
    let again = json(&again);
    assert_eq!(again["changed"], false, "{again}");
    assert_eq!(again["hosts"][0]["host"]["artifact_bytes"], 0);
    assert_eq!(again["hosts"][0]["host"]["file_bytes"], 0);
    assert_eq!(again["hosts"][0]["host"]["service"], "unchanged");
    dep.sfuctl(&["up"]).assert().success().stdout(predicate::str::contains("No changes."));

    // A new media range: configs re-rendered, firewall updated, service restarted once, artifact not re-sent.
    dep.write_spec(&host, &host.client_key(), &COTURN.replace("40000-40999", "42000-42999"), "");
    let changed = json(&dep.sfuctl(&["up", "--output", "json"]).assert().success());
    let h = &changed["hosts"][0]["host"];
    assert_eq!(h["service"], "restarted", "{changed}");
    assert_eq!(h["host_firewall"], "loaded");
    assert_eq!(h["artifact_bytes"], 0);
    let conf = std::fs::read_to_string(dep.root().join("config/turnserver.conf")).unwrap();
    assert!(conf.contains("min-port=42000\nmax-port=42999\n"), "{conf}");
    let table = host.exec_in_ns(&["nft", "list", "table", "inet", &format!("sfuctl_{}", dep.name.replace('-', "_"))]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("udp dport 42000-42999 accept") && !table.contains("40000-40999"), "{table}");

    // Down asks without a terminal and refuses; with --yes it leaves no trace.
    dep.sfuctl(&["down"]).assert().code(2).stderr(predicate::str::contains("--yes"));
    assert!(dep.root().exists(), "nothing is removed without confirmation");
    dep.sfuctl(&["down", "--yes"]).assert().success().stdout(predicate::str::contains("removed service"));
    assert!(!dep.root().exists(), "/opt/sfuctl/<name> is gone");
    let table = host.exec_in_ns(&["nft", "list", "table", "inet", &format!("sfuctl_{}", dep.name.replace('-', "_"))]);
    assert!(!table.status.success(), "the nftables table is gone");
    assert_eq!(service_processes(&host), Vec::<String>::new(), "no process of the deployment is left");
    dep.sfuctl(&["down", "--yes"]).assert().success().stdout(predicate::str::contains("already clean"));
}

#[test]
fn janus_answers_its_info_endpoint_and_goes_away() {
    require_tool("janus", "janus");
    let host = TestHost::start("janus");
    let dep = Deployment::new(&host, "janus", "  kind: janus\n  artifact: /usr/bin/janus\n  rtc_ports: 20000-20999\n", "");
    dep.sfuctl(&["up", "--health-timeout", "30"]).assert().success().stdout(predicate::str::contains("GET /janus/info on tcp"));
    let conf = std::fs::read_to_string(dep.root().join("config/janus.jcfg")).unwrap();
    assert!(conf.contains("rtp_port_range = \"20000-20999\"") && conf.contains(&format!("nat_1_1_mapping = \"{}\"", host.address())));
    let status = json(&dep.sfuctl(&["status", "--output", "json"]).assert().success());
    assert_eq!(status["hosts"][0]["ports_bound"], serde_json::json!(["tcp 8088"]));
    dep.sfuctl(&["down", "--yes"]).assert().success();
    assert!(!dep.root().exists());
    assert_eq!(service_processes(&host), Vec::<String>::new());
}

#[test]
fn a_directory_artifact_is_unpacked_and_not_resent() {
    let host = TestHost::start("dir-artifact");
    let app = crate::support::deployment::sleeper_app();
    let sfu = format!("  kind: custom\n  artifact: {}\n  command: ./bin/run.sh\n  rtc_ports: 40000-40099\n", app.path().display());
    let dep = Deployment::new(&host, "dir", &sfu, "host_firewall: false\n");
    let first = json(&dep.sfuctl(&["up", "--output", "json"]).assert().success());
    assert!(first["hosts"][0]["host"]["artifact_bytes"].as_u64().unwrap() > 0);
    assert_eq!(first["hosts"][0]["host"]["host_firewall"], "off");
    assert!(dep.root().join("app/bin/run.sh").is_file(), "the directory is unpacked into app/");
    let env = std::fs::read_to_string(dep.root().join("sfuctl.env")).unwrap();
    assert!(env.contains(&format!("SFU_ANNOUNCED_IP={}", host.address())) && env.contains("SFU_RTC_MIN_PORT=40000"));
    let second = json(&dep.sfuctl(&["up", "--output", "json"]).assert().success());
    assert_eq!(second["hosts"][0]["host"]["artifact_bytes"], 0);
    assert_eq!(second["changed"], false);
    dep.sfuctl(&["down", "--yes"]).assert().success();
}

#[test]
fn a_failed_health_check_shows_the_service_log() {
    let host = TestHost::start("unhealthy");
    let sfu = "  kind: custom\n  command: echo sfuctl-e2e-boom >&2; exit 3\n  rtc_ports: 40000-40099\n  tcp_ports: [7000]\n";
    let dep = Deployment::new(&host, "sick", sfu, "host_firewall: false\n");
    let out = dep.sfuctl(&["up", "--health-timeout", "3"]).assert().code(1);
    let err = stderr(&out);
    assert!(err.contains("did not become healthy"), "{err}");
    assert!(err.contains("sfuctl-e2e-boom"), "the log's last lines are shown: {err}");
    // The hint names a command that exists, with the spec path as given, and the log's real place on the host.
    assert!(err.contains(&format!("`sfuctl logs {} media-1`", dep.spec().display())) && err.contains(&format!("/opt/sfuctl/{}/service.log", dep.name)), "{err}");
    dep.sfuctl(&["logs"]).assert().success().stdout(predicate::str::contains("sfuctl-e2e-boom"));
    dep.sfuctl(&["down", "--yes"]).assert().success();
}

#[test]
fn a_changed_host_key_is_refused_with_both_fingerprints() {
    let mut host = TestHost::start("hostkey");
    let dep = Deployment::new(&host, "hk", "  kind: custom\n  command: sleep 600\n  rtc_ports: 40000-40099\n", "host_firewall: false\n");
    let old = host.host_key_fingerprint();
    dep.sfuctl(&["up"]).assert().success();
    let new = host.restart_sshd_with_new_host_key();
    let out = dep.sfuctl(&["up"]).assert().code(1);
    let err = stderr(&out);
    assert!(err.contains(&old) && err.contains(&new), "both fingerprints are shown: {err}");
    assert!(err.contains("hint:"), "{err}");
    // The pin is not silently replaced: a second try is refused too.
    dep.sfuctl(&["status"]).assert().code(1);
    // Cleanup goes through the spec's pin, which the user sets after checking the new key.
    let spec = std::fs::read_to_string(dep.spec()).unwrap().replace("ssh:\n", &format!("ssh:\n  host_key: \"{new}\"\n"));
    std::fs::write(dep.spec(), spec).unwrap();
    dep.sfuctl(&["down", "--yes"]).assert().success();
}

#[test]
fn a_wrong_key_fails_with_a_hint_naming_it() {
    let host = TestHost::start("wrongkey");
    let stranger = host.new_client_key("stranger", "ed25519", None, false);
    let dep = Deployment::new(&host, "wk", "  kind: custom\n  command: sleep 600\n  rtc_ports: 40000-40099\n", "");
    dep.write_spec(&host, &stranger, "  kind: custom\n  command: sleep 600\n  rtc_ports: 40000-40099\n", "");
    let out = dep.sfuctl(&["up"]).assert().code(1);
    let err = stderr(&out);
    assert!(err.contains("media-1") && err.contains(&stranger.display().to_string()), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(!dep.root().exists(), "nothing was created on the host");
}

#[test]
fn an_unreachable_host_fails_within_the_timeout() {
    let host = TestHost::start("unreachable");
    let dep = Deployment::new(&host, "gone", "  kind: custom\n  command: sleep 600\n  rtc_ports: 40000-40099\n", "");
    let spec = std::fs::read_to_string(dep.spec()).unwrap().replace(&format!("address: {}", host.address()), &format!("address: {}", host.unused_address()));
    std::fs::write(dep.spec(), spec).unwrap();
    let started = Instant::now();
    let out = dep.sfuctl(&["up", "--connect-timeout", "3"]).assert().code(1);
    assert!(started.elapsed() < Duration::from_secs(8), "took {:?}", started.elapsed());
    let err = stderr(&out);
    assert!(err.contains("cannot connect to host `media-1`") && err.contains(&host.unused_address()), "{err}");
}

#[test]
fn a_passphrase_protected_key_works_from_the_environment_and_fails_clearly_without_it() {
    let host = TestHost::start("passphrase");
    let key = host.new_client_key("locked", "ed25519", Some("correct horse"), true);
    let sfu = "  kind: custom\n  command: sleep 600\n  rtc_ports: 40000-40099\n";
    let dep = Deployment::new(&host, "pp", sfu, "host_firewall: false\n");
    dep.write_spec(&host, &key, sfu, "host_firewall: false\n");
    // No terminal to ask and no SFUCTL_SSH_PASSPHRASE: bad input, nothing done.
    let out = dep.sfuctl(&["up", "--no-audit"]).assert().code(2);
    let err = stderr(&out);
    assert!(err.contains("protected by a passphrase") && err.contains("SFUCTL_SSH_PASSPHRASE"), "{err}");
    assert!(!dep.root().exists());
    let mut wrong = dep.sfuctl(&["up", "--no-audit"]);
    wrong.env("SFUCTL_SSH_PASSPHRASE", "wrong horse");
    let err = stderr(&wrong.assert().code(1));
    assert!(err.contains("passphrase") && !err.contains("wrong horse"), "the passphrase never shows: {err}");
    let mut right = dep.sfuctl(&["up", "--no-audit"]);
    right.env("SFUCTL_SSH_PASSPHRASE", "correct horse");
    right.assert().success();
    dep.sfuctl(&["down", "--yes"]).env("SFUCTL_SSH_PASSPHRASE", "correct horse").assert().success();
}

#[test]
fn ssh_agent_is_used_when_the_spec_names_no_key() {
    let host = TestHost::start("agent");
    let key = host.new_client_key("agent_key", "rsa", None, true);
    let sock = host.dir().join("agent.sock");
    let agent = std::process::Command::new("ssh-agent").arg("-D").arg("-a").arg(&sock).stdout(std::process::Stdio::null()).spawn().expect("ssh-agent runs");
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _agent = Kill(agent);
    for _ in 0..50 {
        if sock.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = std::process::Command::new("ssh-add").arg(&key).env("SSH_AUTH_SOCK", &sock).output().unwrap();
    assert!(added.status.success(), "ssh-add: {}", String::from_utf8_lossy(&added.stderr));
    let sfu = "  kind: custom\n  command: sleep 600\n  rtc_ports: 40000-40099\n";
    let dep = Deployment::new(&host, "ag", sfu, "host_firewall: false\n");
    let spec = std::fs::read_to_string(dep.spec()).unwrap();
    let no_key: String = spec.lines().filter(|l| !l.contains("private_key")).map(|l| format!("{l}\n")).collect();
    std::fs::write(dep.spec(), no_key).unwrap();
    dep.sfuctl(&["up", "--no-audit"]).env("SSH_AUTH_SOCK", &sock).assert().success();
    dep.sfuctl(&["down", "--yes"]).env("SSH_AUTH_SOCK", &sock).assert().success();
}

#[test]
fn a_non_root_login_with_sudo_deploys_runs_as_that_user_and_cleans_up() {
    require_tool("turnserver", "coturn");
    assert!(
        std::process::Command::new("id").arg("sfutest").output().is_ok_and(|o| o.status.success()),
        "the user `sfutest` with passwordless sudo is missing: run `scripts/testbed/install`"
    );
    let host = TestHost::start("sudo");
    let dep = Deployment::new(&host, "sudo", COTURN, "");
    let spec = std::fs::read_to_string(dep.spec()).unwrap().replace("  user: root\n", "  user: sfutest\n");
    std::fs::write(dep.spec(), spec).unwrap();
    let up = json(&dep.sfuctl(&["up", "--output", "json"]).assert().success());
    assert_eq!(up["audit"]["ok"], true, "{up}");
    // The service runs as the login user (the default run_as for existing hosts), not as root.
    let ps = std::process::Command::new("ps").args(["-o", "user=,args=", "-C", "turnserver"]).output().unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    let line = ps.lines().find(|l| l.contains(&format!("/opt/sfuctl/{}/", dep.name))).unwrap_or_else(|| panic!("turnserver not found: {ps}"));
    assert!(line.starts_with("sfutest "), "{line}");
    use std::os::unix::fs::MetadataExt;
    let conf = std::fs::metadata(dep.root().join("config/turnserver.conf")).unwrap();
    let uid = String::from_utf8_lossy(&std::process::Command::new("id").args(["-u", "sfutest"]).output().unwrap().stdout).trim().parse::<u32>().unwrap();
    assert_eq!(conf.uid(), uid, "uploads are made as the login user");
    dep.sfuctl(&["up"]).assert().success().stdout(predicate::str::contains("No changes."));
    dep.sfuctl(&["down", "--yes"]).assert().success();
    assert!(!dep.root().exists());
    assert_eq!(service_processes(&host), Vec::<String>::new());
}

#[test]
fn the_shared_secret_changes_only_on_purpose() {
    require_tool("turnserver", "coturn");
    let host = TestHost::start("secret");
    let dep = Deployment::new(&host, "sec", COTURN, "");
    let (first, second) = ("first-secret-0123456789abcdef0123456789abcdef", "second-secret-0123456789abcdef0123456789abcdef");

    // A guessable secret is refused before anything is touched.
    let short = stderr(&dep.sfuctl(&["up", "--no-audit"]).env("SFUCTL_SECRET", "abc").assert().code(2));
    assert!(short.contains("at least 32") && short.contains("openssl rand -hex 32") && !short.contains("abc\n"), "{short}");
    assert!(!dep.root().exists());

    dep.sfuctl(&["up", "--no-audit"]).env("SFUCTL_SECRET", first).assert().success();
    let conf = || std::fs::read_to_string(dep.root().join("config/turnserver.conf")).unwrap();
    assert!(conf().contains(&format!("static-auth-secret={first}\n")));
    // The state directory also holds the run lock (`<name>.lock`): the state is the JSON file.
    let state_file = std::fs::read_dir(dep.spec().parent().unwrap().join("state"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "json"))
        .expect("the state file");
    let state = std::fs::read_to_string(&state_file).unwrap();
    assert!(state.contains("\"salt\"") && !state.contains(first), "a salted fingerprint, never the secret: {state}");

    // Another secret, by accident: refused with both fingerprints, nothing changed on the host.
    let refused = stderr(&dep.sfuctl(&["up", "--no-audit"]).env("SFUCTL_SECRET", second).assert().code(2));
    assert!(refused.contains("not the secret last deployed") && refused.contains("--rotate-secret"), "{refused}");
    assert!(!refused.contains(first) && !refused.contains(second), "{refused}");
    let shorts: Vec<&str> = refused.split(|c: char| !c.is_ascii_hexdigit()).filter(|w| w.len() == 12).collect();
    assert_eq!(shorts.len(), 2, "both short fingerprints: {refused}");
    assert_ne!(shorts[0], shorts[1]);
    assert!(conf().contains(&format!("static-auth-secret={first}\n")));

    // On purpose: the new secret is deployed and the server restarted once; then it is the remembered one.
    let rotated = json(&dep.sfuctl(&["up", "--no-audit", "--rotate-secret", "--output", "json"]).env("SFUCTL_SECRET", second).assert().success());
    assert_eq!(rotated["hosts"][0]["host"]["service"], "restarted", "{rotated}");
    assert!(conf().contains(&format!("static-auth-secret={second}\n")));
    assert!(!std::fs::read_to_string(&state_file).unwrap().contains(second));
    dep.sfuctl(&["up", "--no-audit"]).env("SFUCTL_SECRET", second).assert().success().stdout(predicate::str::contains("No changes."));
    dep.sfuctl(&["up", "--no-audit"]).env("SFUCTL_SECRET", first).assert().code(2);
    dep.sfuctl(&["down", "--yes"]).env("SFUCTL_SECRET", second).assert().success();
    assert!(!std::fs::read_to_string(&state_file).unwrap().contains("\"salt\""), "down forgets the fingerprint");

    // After `down` nothing runs with the old secret: a new one is a first deployment, not a refused rotation.
    dep.sfuctl(&["up", "--no-audit"]).env("SFUCTL_SECRET", first).assert().success();
    assert!(conf().contains(&format!("static-auth-secret={first}\n")));
    dep.sfuctl(&["up", "--no-audit"]).env("SFUCTL_SECRET", second).assert().code(2);
    dep.sfuctl(&["down", "--yes"]).env("SFUCTL_SECRET", first).assert().success();
}
