//! Interruptions of the real `sfuctl up` (issue 14), against the cloud fakes behind their [`FaultProxy`]
//! (the conformance harnesses):
//! - SIGKILL at every API step of `up`, including between a create request and its answer: the proxy holds the
//!   k-th request, the test kills sfuctl, then lets the request through (the fake acts on it) or drops it. The
//!   next `up` converges with no duplicate (by owner tag and name), the run after it sends no mutating request,
//!   and `down` leaves nothing. DigitalOcean at every step; Linode, Vultr and AWS at every change (a kill at a
//!   read changes nothing in the cloud, and moto is slow);
//! - Ctrl-C (SIGINT) while a server create is in flight (DigitalOcean): `up` lets the create finish, saves its ID, stops at the
//!   next safe point with exit 130, says what exists and how to go on; `down` then leaves nothing.
//!
//! The fake hands out loopback addresses where a listener accepts and closes every connection: the cloud part of
//! `up` runs in full, and the SSH deploy after it fails at once (exit 1), which these tests do not look at.

use std::io::Read;
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use sfuctl::provider::Owner;
use sfuctl::provider::catalog::KeyHandling;

use super::{AwsHarness, Call, CloudFake, DoHarness, LinodeHarness, VultrHarness, provider_data};
use crate::support::cli::require_tool;
use crate::support::fault_proxy::{Effect, Fault, FaultProxy, Match, Release, Reply};

/// The fake's addresses: a server of the deployment gets one of them.
const ADDRESSES: [&str; 3] = ["127.0.0.1", "127.0.0.2", "127.0.0.3"];

/// The flag that makes a fake hand out [`ADDRESSES`] (it comes after the harness's own pool, and the last wins).
pub(crate) fn loopback_pool() -> [String; 2] {
    ["--address-pool".into(), ADDRESSES.join(",")]
}

/// A deployment on a cloud fake (a conformance harness started with [`loopback_pool`]), driven with the real
/// binary (also used by `lost_state.rs`).
pub(crate) struct Cli<'a> {
    pub(crate) fake: &'a dyn CloudFake,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) name: String,
    _sshd: Vec<std::thread::JoinHandle<()>>,
}

impl<'a> Cli<'a> {
    pub(crate) fn start(fake: &'a dyn CloudFake, label: &str) -> Cli<'a> {
        require_tool("ssh-keygen", "openssh-client");
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("id");
        let made = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).status().unwrap();
        assert!(made.success(), "ssh-keygen failed");
        // An "sshd" on every address the fake hands out that closes each connection: the wait for SSH ends at
        // once and the deploy fails at once.
        let first = TcpListener::bind((ADDRESSES[0], 0)).unwrap();
        let port = first.local_addr().unwrap().port();
        let mut listeners = vec![first];
        listeners.extend(ADDRESSES[1..].iter().map(|a| TcpListener::bind((*a, port)).unwrap_or_else(|e| panic!("{a}:{port}: {e}"))));
        let sshd = listeners.into_iter().map(|l| std::thread::spawn(move || for c in l.incoming() { drop(c) })).collect();
        let name = format!("int{}-{}-{label}", std::process::id(), fake.label());
        // The media range sits below the ephemeral ports, so the listener's port never falls inside it.
        let spec = format!(
            "name: {name}\nprovider: {}\nssh:\n  private_key: {}\n  port: {port}\n  allow_from: [10.200.0.0/16]\nsfu:\n  kind: coturn\n  rtc_ports: 10000-10999\n",
            fake.provider_yaml(1),
            key.display()
        );
        std::fs::write(dir.path().join("spec.yaml"), spec).unwrap();
        Cli { fake, dir, name, _sshd: sshd }
    }

    pub(crate) fn proxy(&self) -> &FaultProxy {
        self.fake.proxy()
    }

    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let bin = assert_cmd::cargo::cargo_bin("sfuctl");
        let mut cmd = Command::new(bin);
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("NO_COLOR", "1")
            .env("RUST_BACKTRACE", "0")
            .env("SFUCTL_STATE_DIR", self.state_dir())
            .env("SFUCTL_SECRET", "interruptions-secret-0123456789abcdef0123456789abcdef")
            .envs(self.fake.cli_env())
            .args(args)
            .arg(self.dir.path().join("spec.yaml"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        cmd
    }

    pub(crate) fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// `up` to the end; its JSON report and stderr. The deploy fails (exit 1); the cloud part must not.
    pub(crate) fn up(&self) -> (Value, String) {
        let out = self.command(&["up", "--yes", "--no-audit", "--connect-timeout", "1", "--output", "json"]).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("up printed no report ({e}), exit {:?}:\n{stderr}", out.status.code()));
        assert!(report["cloud"].is_object(), "the cloud part ran: {report}\n{stderr}");
        (report, stderr)
    }

    /// `down --yes`, which must succeed.
    pub(crate) fn down(&self) {
        let out = self.command(&["down", "--yes"]).output().unwrap();
        assert!(out.status.success(), "down failed:\n{}", String::from_utf8_lossy(&out.stderr));
    }

    /// What the fake holds of the deployment, one line each (servers by owner tag, firewalls and keys by name).
    pub(crate) fn inventory(&self) -> Vec<String> {
        let inv = self.fake.inventory(&self.name);
        let mut out: Vec<String> = inv.servers.iter().map(|s| format!("server {}", s.name)).collect();
        out.extend(inv.firewalls.iter().map(|f| format!("firewall {}", f.name)));
        out.extend(inv.keys.iter().map(|k| format!("key {k}")));
        out.extend(inv.other);
        out.sort();
        out
    }

    /// What a converged deployment holds: one server, the firewall, and the key where one is registered (and
    /// DigitalOcean's tag).
    pub(crate) fn converged(&self) -> Vec<String> {
        let mut want = vec![format!("firewall sfuctl-{}", self.name), format!("server sfuctl-{}-1", self.name)];
        if provider_data(self.fake).ssh_key == KeyHandling::Register {
            want.push(format!("key sfuctl-{}", self.name));
        }
        want.extend(self.fake.inventory(&self.name).other);
        want.sort();
        want
    }
}

/// Waits for a child's exit (up to 60 s) and returns its exit code and stderr.
fn finish(mut child: Child) -> (Option<i32>, String) {
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("sfuctl did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    (status.code(), stderr)
}

fn hold_at(n: u64) -> Fault {
    Fault { label: format!("held request {n}"), matches: Match::at(n), count: 1, effect: Effect::Hold, reply: Reply::json(500, "{}") }
}

/// SIGKILL at every step of a clean `up` of `fake` (`reads`: at reads too, else only at changes), each change
/// let through after the kill in one case and dropped in another.
fn sigkill_at_every_step(fake: &dyn CloudFake, reads: bool) {
    let started = Instant::now();
    let cli = Cli::start(fake, "kill");
    let proxy = cli.proxy();
    // A clean run from nothing: its cloud requests are the steps.
    let from = proxy.log().len();
    let (report, stderr) = cli.up();
    assert_eq!(cli.inventory(), cli.converged(), "{report}\n{stderr}");
    let steps: Vec<String> = proxy.log()[from..].iter().map(|s| s.line.clone()).collect();
    cli.down();
    assert_eq!(cli.inventory(), Vec::<String>::new());
    eprintln!("[kill {}] a clean up sends {} requests:\n  {}", fake.label(), steps.len(), steps.join("\n  "));

    let (mut kills, mut forwarded) = (0, 0);
    for (k, line) in steps.iter().enumerate() {
        // EC2 reads are POSTs too: `Action=Describe...`.
        let read = line.starts_with("GET") || line.contains("Action=Describe");
        let releases: &[Release] = match (read, reads) {
            (true, false) => &[],
            (true, true) => &[Release::Forward],
            (false, _) => &[Release::Forward, Release::Drop],
        };
        for &release in releases {
            let case = format!("SIGKILL at step {k} ({line}), then the request {release:?}");
            proxy.inject([hold_at(proxy.arrivals() + k as u64)]);
            let mut child = cli.command(&["up", "--yes", "--no-audit", "--connect-timeout", "1", "--output", "json"]).spawn().unwrap();
            assert!(proxy.wait_held(Duration::from_secs(60)), "{case}: the request was never held:\n{}", proxy.log_text());
            // SIGKILL: no handler, no cleanup.
            child.kill().unwrap();
            let (code, _) = finish(child);
            assert_eq!(code, None, "{case}: killed by a signal");
            proxy.release(release);
            proxy.clear();
            kills += 1;
            forwarded += usize::from(release == Release::Forward && !read);

            let (report, stderr) = cli.up();
            assert_eq!(cli.inventory(), cli.converged(), "{case}: the next up converges with no duplicate: {report}\n{stderr}\n{}", proxy.log_text());
            let (after, stderr) = cli.up();
            assert_eq!(after["cloud"]["mutating_requests"], 0, "{case}: the run after sends no change: {after}\n{stderr}");
            cli.down();
            assert_eq!(cli.inventory(), Vec::<String>::new(), "{case}: down leaves nothing");
        }
    }
    eprintln!(
        "[kill {}] {} steps, {kills} kills ({forwarded} with a change let through after the kill): 0 duplicates, 0 left; {:.1?}",
        fake.label(),
        steps.len(),
        started.elapsed()
    );
}

#[test]
fn sigkill_at_every_step_of_up_on_digitalocean() {
    sigkill_at_every_step(&DoHarness::start_with(&loopback_pool().each_ref().map(String::as_str)), true);
}

#[test]
fn sigkill_at_every_change_of_up_on_linode() {
    sigkill_at_every_step(&LinodeHarness::start_with(&loopback_pool().each_ref().map(String::as_str)), false);
}

#[test]
fn sigkill_at_every_change_of_up_on_vultr() {
    sigkill_at_every_step(&VultrHarness::start_with(&loopback_pool().each_ref().map(String::as_str)), false);
}

#[test]
fn sigkill_at_every_change_of_up_on_aws() {
    sigkill_at_every_step(&AwsHarness::start_with(&loopback_pool().each_ref().map(String::as_str)), false);
}

#[test]
fn ctrl_c_during_up_stops_at_a_safe_point_and_says_how_to_go_on() {
    let fake = DoHarness::start_with(&loopback_pool().each_ref().map(String::as_str));
    let cli = Cli::start(&fake, "int");
    let proxy = cli.proxy();
    // Hold the server create; Ctrl-C while it is in flight.
    let create = fake.call(Call::CreateServer, &Owner::new(&cli.name));
    proxy.inject([Fault { label: "server create held".into(), matches: create, count: 1, effect: Effect::Hold, reply: Reply::json(500, "{}") }]);
    let child = cli.command(&["up", "--yes", "--no-audit", "--connect-timeout", "1"]).spawn().unwrap();
    assert!(proxy.wait_held(Duration::from_secs(60)), "the create was never sent:\n{}", proxy.log_text());
    // SAFETY: a plain kill(2) of our own child.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0, "SIGINT sent");
    // The create goes on to the fake and its answer back to sfuctl, which saves the ID and then stops.
    std::thread::sleep(Duration::from_millis(200));
    proxy.release(Release::Forward);
    let (code, stderr) = finish(child);
    eprintln!("[ctrl-c] sfuctl said:\n{stderr}");
    assert_eq!(code, Some(130), "exit 130 after Ctrl-C:\n{stderr}");
    let server = format!("sfuctl-{}-1", cli.name);
    assert!(stderr.contains("interrupted: what exists of"), "says what exists:\n{stderr}");
    assert!(stderr.contains(&format!("server {server}: ")), "names the server made before the stop:\n{stderr}");
    assert!(stderr.contains("error: `sfuctl up` was interrupted"), "{stderr}");
    assert!(stderr.contains("hint: run `sfuctl up ") && stderr.contains("or `sfuctl down "), "says how to go on:\n{stderr}");
    assert!(!stderr.contains("waiting for server"), "stops before waiting for the server:\n{stderr}");
    // The state holds the server's ID, as the fake does.
    let state = std::fs::read_dir(cli.state_dir()).unwrap().filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "json")).expect("a state file");
    let state: Value = serde_json::from_str(&std::fs::read_to_string(state).unwrap()).unwrap();
    let saved = state["resources"][format!("server:{server}")].as_str().unwrap_or_else(|| panic!("the server's ID is saved: {state}")).to_string();
    let held = fake.inventory(&cli.name).servers.iter().find(|s| s.name == server).map(|s| s.id.clone());
    assert_eq!(held.as_deref(), Some(saved.as_str()), "the saved ID is the fake's server");
    assert_eq!(cli.inventory(), cli.converged());
    cli.down();
    assert_eq!(cli.inventory(), Vec::<String>::new(), "down leaves nothing");
}
