//! From nothing to media on fresh VMs (docs/testbed.md): every server a cloud fake creates is a Debian 12 system
//! booted with the user-data sfuctl sent, with nothing installed, the image's login user, systemd, cloud-init and
//! apt through the test bed's proxy. Each test deploys with `up`, proves it with the audit, reboots the VM and
//! proves it again, re-runs `up` (nothing installed, nothing sent), and removes it all with `down`.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::cli::{repo, sfuctl};
use crate::support::cloud_deployment::CloudEnv;
use crate::support::do_fake::DoFake;
use crate::support::linode_fake::LinodeFake;
use crate::support::vultr_fake::VultrFake;
use crate::support::freshvm::{Mirrors, Vm, keypair, mediasoup_worker, reboot, require_testbed, ssh, ssh_ok, vm_exists};
use crate::support::moto::Moto;

/// Where a deployment's spec, state, HOME and key live.
struct Fresh {
    name: String,
    dir: tempfile::TempDir,
    key: PathBuf,
    env: Vec<(String, String)>,
}

impl Fresh {
    fn new(label: &str) -> Self {
        require_testbed();
        let dir = tempfile::tempdir().unwrap();
        let key = keypair(dir.path());
        let name = format!("{label}-{}", std::process::id() % 10000);
        Self { name, dir, key, env: vec![("SFUCTL_SECRET".into(), "fresh-vm-secret-0123456789abcdef0123456789abcdef".into())] }
    }

    /// The same deployment, with sfuctl pointed at a cloud fake.
    fn against(mut self, fake: &impl CloudEnv) -> Self {
        self.env.extend(fake.env().into_iter().map(|(k, v)| (k.to_string(), v)));
        self
    }

    fn spec(&self) -> PathBuf {
        self.dir.path().join("spec.yaml")
    }

    /// Writes the spec: `provider` and `sfu` blocks as YAML text; SSH uses this deployment's key.
    fn write(&self, provider: &str, sfu: &str) {
        let spec = format!(
            "name: {}\nprovider:\n{provider}ssh:\n  private_key: {}\n  allow_from: [10.200.0.0/16]\nsfu:\n{sfu}",
            self.name,
            self.key.display()
        );
        std::fs::write(self.spec(), spec).unwrap();
    }

    fn sfuctl(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = sfuctl(&self.dir.path().join("home"));
        cmd.env("SFUCTL_STATE_DIR", self.dir.path().join("state"));
        for (k, v) in &self.env {
            cmd.env(k, v);
        }
        cmd.args(args).arg(self.spec());
        cmd
    }

    /// Runs a command that must succeed and prints JSON; returns it.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.sfuctl(&all).timeout(std::time::Duration::from_secs(900)).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "sfuctl {args:?} exited {:?}\nstdout: {stdout}\nstderr: {}", out.status.code(), String::from_utf8_lossy(&out.stderr));
        serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    }
}

/// The audit in `up`'s or `audit`'s JSON passed, every check named in `must_pass` too.
fn assert_audit_ok(audit: &Value, must_pass: &[&str]) {
    assert_eq!(audit["ok"], true, "{audit:#}");
    for id in must_pass {
        let check = audit["hosts"][0]["checks"].as_array().unwrap().iter().find(|c| c["id"] == *id).unwrap_or_else(|| panic!("no {id} in {audit:#}"));
        assert_eq!(check["status"], "pass", "{id}: {check:#}");
    }
}

/// The whole life of one deployment on fresh VMs: up from nothing, audit, reboot, audit, converged re-run, status,
/// down. `login` is the image's login user; `distro_unit` the distribution's own unit that must never run.
fn lifecycle(dep: &Fresh, login: &str, distro_unit: Option<&str>) -> String {
    let up = dep.json(&["up", "--yes"]);
    let host = &up["hosts"][0]["host"];
    let address = host["address"].as_str().unwrap().to_string();
    eprintln!("{} up: {host:#}\naudit: {:#}", dep.name, up["audit"]["hosts"][0]["checks"]);
    assert_eq!(up["hosts"][0]["ok"], true, "{up:#}");
    assert_audit_ok(&up["audit"], &["host-firewall", "service", "config-consistency", "udp-reachability"]);
    // The service runs as the unprivileged default user, under systemd, and survives what a package would do.
    let user = ssh_ok(&address, login, &dep.key, &format!("ps -o user= -p $(systemctl show -p MainPID --value sfuctl-{})", dep.name));
    assert_eq!(user.trim(), "sfuctl", "the service runs as the default service user");
    if let Some(unit) = distro_unit {
        let state = ssh(&address, login, &dep.key, &format!("systemctl is-enabled {unit}; systemctl is-active {unit}"));
        let text = String::from_utf8_lossy(&state.stdout);
        assert!(text.contains("masked") && text.contains("inactive"), "{unit} must be masked and not running: {text}");
    }

    // A reboot empties nftables and restarts everything: the unit brings the host firewall back before the server.
    reboot(&address, login, &dep.key);
    let audit = dep.json(&["audit"]);
    assert_audit_ok(&audit, &["host-firewall", "ssh-exposure", "service", "udp-reachability"]);
    let status = dep.json(&["status"]);
    assert_eq!(status["hosts"][0]["service"]["state"], "active", "{status:#}");
    assert_eq!(status["hosts"][0]["host_firewall"], true, "{status:#}");

    // Converged: nothing installed, nothing sent, nothing restarted.
    let again = dep.json(&["up", "--yes"]);
    assert_eq!(again["changed"], false, "{again:#}");
    let h = &again["hosts"][0]["host"];
    assert_eq!((h["artifact_bytes"].as_u64(), h["file_bytes"].as_u64()), (Some(0), Some(0)), "{again:#}");
    assert!(h["installed"]["packages"].as_array().unwrap().is_empty() && h["installed"]["node"].is_null() && h["installed"]["npm"] == false, "{again:#}");
    address
}

/// A Janus deployed from nothing is locked down, proven from outside: an API call without the secret is refused
/// (sent here for real, and in the audit's JSON), and Janus's own media socket answers an ICE connectivity check on
/// the VM's address.
fn assert_janus_locked_down(dep: &Fresh, address: &str) {
    use std::io::{Read, Write};
    let body = r#"{"janus":"create","transaction":"t"}"#;
    let mut s = std::net::TcpStream::connect((address, 8088)).expect("connect to the Janus API");
    write!(s, "POST /janus HTTP/1.0\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    assert!(answer.contains("\"code\": 403") || answer.contains("\"code\":403"), "a create without the apisecret must be refused: {answer}");
    let audit = dep.json(&["audit"]);
    assert_audit_ok(&audit, &["janus-api", "janus-ice"]);
    let checks = audit["hosts"][0]["checks"].as_array().unwrap();
    let ice = checks.iter().find(|c| c["id"] == "janus-ice").unwrap()["detail"].as_str().unwrap();
    assert!(ice.contains(&format!("candidate udp {address}:")) && ice.contains("signed with Janus's ice-pwd"), "{ice}");
}

#[test]
fn coturn_from_nothing_on_a_fresh_digitalocean_droplet_survives_a_reboot() {
    let dep = Fresh::new("vm-coturn");
    let fake = DoFake::start_with(&["--boot-vms", "--boot-delay", "1"]);
    dep.write("  kind: digitalocean\n  region: fra1\n", "  kind: coturn\n  rtc_ports: 40000-49999\n");
    let dep = dep.against(&fake);
    let address = lifecycle(&dep, "root", Some("coturn.service"));
    let state_file = dep.dir.path().join("state").join(format!("{}.json", dep.name));
    assert!(std::fs::read_to_string(&state_file).unwrap().contains("\"salt\""), "up remembered the secret's fingerprint");
    let down = dep.json(&["down", "--yes"]);
    assert!(down["failed"].as_array().unwrap().is_empty(), "{down:#}");
    assert!(!std::fs::read_to_string(&state_file).unwrap().contains("\"salt\""), "down forgets the secret's fingerprint: a later up is a first deployment");
    assert!(fake.get("/_fake/state")["droplets"].as_array().unwrap().is_empty(), "the fake holds nothing");
    assert!(!vm_exists(&address), "the droplet's VM is gone with it");
    fake.assert_no_violations();
}

#[test]
fn janus_from_nothing_on_a_fresh_aws_instance_with_a_40000_port_range() {
    let dep = Fresh::new("vm-janus");
    let moto = Moto::start(&["--boot-vms"]);
    dep.write("  kind: aws\n  region: us-east-1\n  size: c6i.large\n", "  kind: janus\n  rtc_ports: 20000-59999\n");
    let dep = dep.against(&moto);
    let address = lifecycle(&dep, "ubuntu", Some("janus.service"));
    assert_janus_locked_down(&dep, &address);
    let down = dep.json(&["down", "--yes"]);
    assert!(down["failed"].as_array().unwrap().is_empty(), "{down:#}");
    assert!(moto.leftovers(&dep.name).is_empty(), "{:?}", moto.leftovers(&dep.name));
    assert!(!vm_exists(&address), "the instance's VM is gone with it");
}

#[test]
fn coturn_from_nothing_on_a_fresh_linode_instance() {
    let dep = Fresh::new("vm-li");
    let fake = LinodeFake::start_with(&["--boot-vms", "--boot-delay", "1"]);
    dep.write("  kind: linode\n  region: eu-central\n", "  kind: coturn\n  rtc_ports: 42000-42999\n");
    let dep = dep.against(&fake);
    let address = lifecycle(&dep, "root", Some("coturn.service"));
    let down = dep.json(&["down", "--yes"]);
    assert!(down["failed"].as_array().unwrap().is_empty(), "{down:#}");
    assert!(fake.get("/_fake/state")["instances"].as_array().unwrap().is_empty(), "the fake holds nothing");
    assert!(!vm_exists(&address), "the instance's VM is gone with it");
}

#[test]
fn janus_from_nothing_on_a_fresh_vultr_instance() {
    let dep = Fresh::new("vm-vu");
    let fake = VultrFake::start_with(&["--boot-vms", "--boot-delay", "1"]);
    dep.write("  kind: vultr\n  region: fra\n", "  kind: janus\n  rtc_ports: 43000-43999\n");
    let dep = dep.against(&fake);
    let address = lifecycle(&dep, "root", Some("janus.service"));
    assert_janus_locked_down(&dep, &address);
    let down = dep.json(&["down", "--yes"]);
    assert!(down["failed"].as_array().unwrap().is_empty(), "{down:#}");
    assert!(fake.leftovers(&dep.name).is_empty(), "{:?}", fake.leftovers(&dep.name));
    assert!(!vm_exists(&address), "the instance's VM is gone with it");
}

#[test]
fn a_mediasoup_app_installs_node_and_its_worker_on_a_fresh_droplet_and_answers_ice() {
    let dep = Fresh::new("vm-ms");
    let mirrors = Mirrors::start();
    let fake = DoFake::start_with(&["--boot-vms", "--boot-delay", "1"]);
    // The app as a user has it: sources and lock file; the worker binary rides along (hosts here have no
    // internet to fetch mediasoup's prebuilt one), found through MEDIASOUP_WORKER_BIN.
    let app = dep.dir.path().join("app");
    copy_dir(&repo().join("examples/mediasoup-app"), &app);
    std::fs::create_dir_all(app.join("worker")).unwrap();
    std::fs::copy(mediasoup_worker(), app.join("worker/mediasoup-worker")).unwrap();
    let root = format!("/opt/sfuctl/{}", dep.name);
    dep.write(
        "  kind: digitalocean\n  region: fra1\n",
        &format!(
            "  kind: mediasoup\n  artifact: {}\n  rtc_ports: 40000-40099\n  rtc_tcp: true\n  tcp_ports: [3000]\n  env:\n    PORT: \"3000\"\n    MEDIASOUP_WORKER_BIN: {root}/app/worker/mediasoup-worker\n    npm_config_registry: {}\n",
            app.display(),
            mirrors.npm
        ),
    );
    let mut dep = dep.against(&fake);
    dep.env.push(("NODEJS_ORG_MIRROR".into(), mirrors.node.clone()));

    let up = dep.json(&["up", "--yes"]);
    let host = &up["hosts"][0]["host"];
    let address = host["address"].as_str().unwrap().to_string();
    assert!(host["installed"]["node"].as_str().is_some_and(|v| v.starts_with("v22.")), "Node.js 22 from the mirror: {up:#}");
    assert_eq!(host["installed"]["npm"], true, "npm ci ran on the host: {up:#}");
    assert_audit_ok(&up["audit"], &["service", "config-consistency", "udp-reachability", "tcp-reachability"]);
    ice_check(&address, 40000..=40099);
    tcp_candidate_accepts(&address, 40000..=40099);

    reboot(&address, "root", &dep.key);
    assert_audit_ok(&dep.json(&["audit"]), &["host-firewall", "service", "udp-reachability"]);
    ice_check(&address, 40000..=40099);

    // Unchanged lock file: no npm ci, no Node.js install, nothing sent.
    let again = dep.json(&["up", "--yes"]);
    assert_eq!(again["changed"], false, "{again:#}");

    let down = dep.json(&["down", "--yes"]);
    assert!(down["failed"].as_array().unwrap().is_empty(), "{down:#}");
    assert!(!vm_exists(&address));
    fake.assert_no_violations();
}

#[test]
fn a_custom_server_on_an_existing_fresh_vm_as_nobody_with_packages_from_the_spec() {
    let dep = Fresh::new("vm-custom");
    let vm = Vm::start("custom", "root", &dep.key);
    // A server that is not there is named before anything starts: no crash loop.
    dep.write(&format!("  kind: ssh\n  hosts:\n    - {{ name: media-1, address: {} }}\n", vm.address()), "  kind: custom\n  command: no-such-server --port 8080\n  rtc_ports: 41000-41999\n");
    let out = dep.sfuctl(&["up"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("`no-such-server` is not on host `media-1`") && stderr.contains("sfu.packages"), "{stderr}");
    dep.write(
        &format!("  kind: ssh\n  hosts:\n    - {{ name: media-1, address: {} }}\n", vm.address()),
        "  kind: custom\n  command: socat -T 5 TCP-LISTEN:8080,reuseaddr,fork SYSTEM:'echo ok'\n  rtc_ports: 41000-41999\n  tcp_ports: [8080]\n  packages: [socat]\n  run_as: nobody\n",
    );
    let up = dep.json(&["up"]);
    let host = &up["hosts"][0]["host"];
    assert_eq!(host["installed"]["packages"], serde_json::json!(["socat"]), "apt installed the spec's package: {up:#}");
    assert_audit_ok(&up["audit"], &["host-firewall", "service", "udp-reachability", "tcp-reachability"]);
    let user = ssh_ok(vm.address(), "root", &dep.key, "ps -o user= -C socat | head -n 1");
    assert_eq!(user.trim(), "nobody");

    reboot(vm.address(), "root", &dep.key);
    assert_audit_ok(&dep.json(&["audit"]), &["host-firewall", "service", "tcp-reachability"]);
    let again = dep.json(&["up"]);
    assert_eq!(again["changed"], false, "{again:#}");

    let down = dep.json(&["down", "--yes"]);
    assert_eq!(down["hosts"][0]["ok"], true, "{down:#}");
    let left = ssh_ok(vm.address(), "root", &dep.key, &format!("ls /opt/sfuctl/{0} 2>&1; systemctl is-enabled sfuctl-{0} 2>&1; nft list tables", dep.name));
    assert!(left.contains("No such file") && !left.contains(&format!("sfuctl_{}", dep.name.replace('-', "_"))), "{left}");
}

/// The ICE connectivity check a browser sends, from this machine to the app's WebRtcTransport.
fn ice_check(address: &str, range: std::ops::RangeInclusive<u16>) {
    let out = Command::new("python3")
        .arg(repo().join("tests/fixtures/ice_check.py"))
        .arg(format!("http://{address}:3000/transport"))
        .args(["--timeout", "5", "--json"])
        .output()
        .expect("python3 runs ice_check.py");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "ICE check failed: {text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(address), "candidates announce the host's public address: {text}");
    let ports: Vec<u16> = serde_json::from_str::<Value>(text.lines().last().unwrap_or("{}"))
        .ok()
        .and_then(|v| v["candidates"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|c| c["candidate"].as_str()?.rsplit(':').next()?.parse().ok())
        .collect();
    assert!(!ports.is_empty() && ports.iter().all(|p| range.contains(p)), "candidate ports {ports:?} in the media range {range:?}: {text}");
}

/// With `sfu.rtc_tcp`, the real worker took the TCP listenInfo: the transport announces a TCP candidate on the
/// host's public address in the media range, and a TCP connection from here to it is accepted (both firewalls open
/// the range over TCP).
fn tcp_candidate_accepts(address: &str, range: std::ops::RangeInclusive<u16>) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect((address, 3000)).expect("connect to the app");
    write!(s, "GET /transport HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let body: Value = serde_json::from_str(answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")).unwrap_or_else(|e| panic!("{e}: {answer}"));
    let tcp: Vec<&Value> = body["iceCandidates"].as_array().unwrap().iter().filter(|c| c["protocol"] == "tcp").collect();
    assert_eq!(tcp.len(), 1, "one TCP candidate: {body:#}");
    let port = tcp[0]["port"].as_u64().unwrap() as u16;
    assert_eq!(tcp[0]["address"].as_str().or(tcp[0]["ip"].as_str()), Some(address), "{body:#}");
    assert!(range.contains(&port), "TCP candidate port {port} in the media range {range:?}");
    std::net::TcpStream::connect_timeout(&(address.parse::<std::net::IpAddr>().unwrap(), port).into(), std::time::Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("TCP to the candidate {address}:{port}: {e}"));
}

fn copy_dir(from: &Path, to: &Path) {
    let out = Command::new("cp").arg("-r").arg(from).arg(to).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// README's first command: `scripts/demo` boots a fresh VM, deploys coturn to it with `up`, audits it, converges
/// again, and removes the deployment and the VM.
#[test]
fn readme_first_command_deploys_to_a_fresh_vm_audits_and_removes_it_all() {
    require_testbed();
    let out = Command::new(repo().join("scripts/demo"))
        .env("SFUCTL", assert_cmd::cargo::cargo_bin("sfuctl"))
        .env_remove("SFUCTL_SECRET")
        .env_remove("SFUCTL_STATE_DIR")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run scripts/demo");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "scripts/demo exited {:?}:\n{text}", out.status.code());
    for expected in ["Up: 1 host(s) deployed, 0 failed", "turn-auth           pass", "Audit: 1 host(s), 0 failing", "No changes", "removed service"] {
        assert!(text.contains(expected), "`{expected}` in the demo's output:\n{text}");
    }
    let address = text.split("is up at ").nth(1).and_then(|rest| rest.split_whitespace().next()).expect("the VM's address in the output");
    assert!(!vm_exists(address.trim_end_matches(';')), "the demo's VM is destroyed:\n{text}");
}
