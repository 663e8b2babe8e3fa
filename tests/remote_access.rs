//! `sfuctl logs` and `sfuctl ssh` on real hosts: a namespace host (the fallback supervisor) and a fresh VM
//! (systemd), with the pinned host key enforced by sfuctl and by OpenSSH.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::cli::require_tool;
use crate::support::deployment::Deployment;
use crate::support::netns::TestHost;

/// A custom server that logs a marker line, then one line a second so there is something to follow.
const TALKER: &str = "  kind: custom\n  command: sh -c 'echo sfuctl-logs-marker; while sleep 1; do echo tick; done'\n  rtc_ports: 40000-40099\n";

fn stdout(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stdout).into_owned()
}

fn stderr(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

/// Runs `logs -f` until `wanted` appears in what it prints, then stops it: following works and ends cleanly.
fn follow_until(mut cmd: std::process::Command, wanted: &str) {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("sfuctl logs -f starts");
    let reader = BufReader::new(child.stdout.take().unwrap());
    let mut seen = Vec::new();
    for line in reader.lines() {
        let line = line.unwrap_or_default();
        let found = line.contains(wanted);
        seen.push(line);
        if found {
            break;
        }
    }
    child.kill().ok();
    let out = child.wait_with_output().unwrap();
    assert!(seen.iter().any(|l| l.contains(wanted)), "`logs -f` never printed {wanted}: {seen:?}\n{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn logs_and_ssh_on_a_supervisor_host_and_a_changed_key_is_refused() {
    require_tool("ssh", "openssh-client");
    let mut host = TestHost::start("logs-ssh");
    let dep = Deployment::new(&host, "talk", TALKER, "host_firewall: false\n");
    dep.sfuctl(&["up", "--no-audit"]).assert().success();

    // The log of the only host, from the supervisor's log file.
    let out = dep.sfuctl(&["logs", "-n", "50"]).assert().success();
    assert!(stdout(&out).contains("sfuctl-logs-marker"), "{}", stdout(&out));
    let named = dep.sfuctl(&["logs", "--output", "json"]).arg("media-1").assert().success();
    let json: serde_json::Value = serde_json::from_slice(&named.get_output().stdout).unwrap();
    assert!(json["hosts"][0]["log"].as_str().unwrap().contains("sfuctl-logs-marker"), "{json}");
    dep.sfuctl(&["logs"]).arg("media-9").assert().code(2).stderr(predicates::str::contains("media-1"));
    let mut follow = std::process::Command::new(assert_cmd::cargo::cargo_bin("sfuctl"));
    follow.args(dep.sfuctl(&["logs", "-f", "-n", "1"]).get_args());
    for (k, v) in dep.sfuctl(&[]).get_envs() {
        match v {
            Some(v) => follow.env(k, v),
            None => follow.env_remove(k),
        };
    }
    follow_until(follow, "tick");

    // A stopped service: the audit's hint says where its log is, and with which command to read it.
    dep.sfuctl(&["ssh"]).args(["--", &format!("kill -TERM -$(cat /opt/sfuctl/{}/service.pid)", dep.name)]).assert().success();
    let audit = dep.sfuctl(&["audit", "--output", "json"]).assert().code(3);
    let audit: serde_json::Value = serde_json::from_slice(&audit.get_output().stdout).unwrap();
    let service = audit["hosts"][0]["checks"].as_array().unwrap().iter().find(|c| c["id"] == "service").unwrap().clone();
    let hint = service["hint"].as_str().unwrap_or_default();
    assert!(hint.contains(&format!("`sfuctl logs {} media-1`", dep.spec().display())) && hint.contains(&format!("/opt/sfuctl/{}/service.log", dep.name)), "{service}");
    dep.sfuctl(&["up", "--no-audit"]).assert().success();

    // One command through OpenSSH: its output and exit code pass through.
    let ran = dep.sfuctl(&["ssh"]).args(["media-1", "--", "echo", "hello-from-$(hostname)", ";", "exit", "7"]).assert().code(7);
    assert!(stdout(&ran).contains("hello-from-"), "{}", stdout(&ran));
    dep.sfuctl(&["ssh"]).args(["--", "true"]).assert().success();

    // A new host key: sfuctl refuses before OpenSSH is even asked, and says how to recover.
    let new = host.restart_sshd_with_new_host_key();
    let refused = dep.sfuctl(&["ssh"]).args(["--", "touch", "/tmp/sfuctl-should-not-exist"]).assert().code(1);
    assert!(stderr(&refused).contains("CHANGED") && stderr(&refused).contains(&new), "{}", stderr(&refused));
    dep.sfuctl(&["logs"]).assert().code(1);

    let spec = std::fs::read_to_string(dep.spec()).unwrap().replace("ssh:\n", &format!("ssh:\n  host_key: \"{new}\"\n"));
    std::fs::write(dep.spec(), spec).unwrap();
    dep.sfuctl(&["down", "--yes"]).assert().success();
}

/// OpenSSH itself, given sfuctl's known_hosts and options: the pinned key logs in, any other key is refused.
#[test]
fn openssh_with_sfuctls_options_accepts_only_the_pinned_key() {
    use base64::Engine;
    use sfuctl::openssh::OpenSsh;
    use sfuctl::remote::HostPublicKey;
    require_tool("ssh", "openssh-client");
    let host = TestHost::start("openssh-pin");
    let public = std::fs::read_to_string(host.dir().join("host_key.pub")).unwrap();
    let blob = base64::engine::general_purpose::STANDARD.decode(public.split_whitespace().nth(1).unwrap()).unwrap();
    let pinned = HostPublicKey::from_blob(&blob).unwrap();
    assert_eq!(pinned.fingerprint(), host.host_key_fingerprint());
    let run = |key: &HostPublicKey| {
        let ssh = OpenSsh::new(key, "sfuctl.pin-test.media-1", &host.address(), host.port(), "root", Some(&host.client_key())).unwrap();
        std::process::Command::new("ssh").args(ssh.args(&["echo".into(), "pinned-ok".into()], false)).arg("-oBatchMode=yes").stdin(Stdio::null()).output().unwrap()
    };
    let good = run(&pinned);
    assert!(good.status.success() && String::from_utf8_lossy(&good.stdout).contains("pinned-ok"), "{good:?}");
    // Another ed25519 key under the same alias: OpenSSH must refuse before logging in.
    let mut other = blob.clone();
    let last = other.len() - 1;
    other[last] ^= 0x5a;
    let stranger = HostPublicKey::from_blob(&other).unwrap();
    let refused = run(&stranger);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(255), "{refused:?}");
    assert!(err.contains("Host key verification failed") || err.contains("HOST IDENTIFICATION HAS CHANGED"), "{err}");
    assert!(!String::from_utf8_lossy(&refused.stdout).contains("pinned-ok"));
}

/// `logs` reads journald on a systemd host (a fresh VM), and `ssh` reaches it with the pinned key.
#[test]
fn logs_and_ssh_on_a_fresh_systemd_vm() {
    require_tool("ssh", "openssh-client");
    let dep = crate::support::freshvm::ExistingVm::start("vm-logs", "root");
    dep.write(TALKER, "host_firewall: false\n");
    let name = &dep.name;
    let sfuctl = |args: &[&str]| dep.sfuctl(args);
    let up = sfuctl(&["up", "--no-audit", "--output", "json"]).timeout(std::time::Duration::from_secs(900)).assert().success();
    let up: serde_json::Value = serde_json::from_slice(&up.get_output().stdout).unwrap();
    assert_eq!(up["hosts"][0]["host"]["manager"], "systemd", "{up:#}");

    let out = sfuctl(&["logs", "-n", "200"]).assert().success();
    let log = stdout(&out);
    assert!(log.contains("sfuctl-logs-marker"), "journald has the service's output: {log}");
    assert!(log.contains(&format!("sfuctl-{name}")), "journalctl names the unit: {log}");
    let mut follow = std::process::Command::new(assert_cmd::cargo::cargo_bin("sfuctl"));
    follow.args(sfuctl(&["logs", "-f", "-n", "1"]).get_args()).env("HOME", dep.home()).env("SFUCTL_STATE_DIR", dep.state_dir()).env_remove("SSH_AUTH_SOCK");
    follow_until(follow, "tick");

    let active = sfuctl(&["ssh"]).args(["media-1", "--", "systemctl", "is-active", &format!("sfuctl-{name}")]).assert().success();
    assert_eq!(stdout(&active).trim(), "active");
    sfuctl(&["ssh"]).args(["--", "false"]).assert().code(1);
    sfuctl(&["down", "--yes"]).assert().success();
}
