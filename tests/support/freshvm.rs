//! Fresh cloud-like VMs for deploy tests (docs/testbed.md): `scripts/testbed/vm` boots a Debian 12 system with
//! systemd, cloud-init and apt (through the test bed's proxy), as a cloud would. The cloud fakes boot one per
//! server with `--boot-vms`; [`Vm`] makes one directly, for existing-host tests. Also the local Node.js mirror and
//! npm registry that VMs (which have no internet) install from.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crate::support::cli::repo;

/// The test bed's bridge address: what VMs reach this machine at (TCP 18000-18999 for test servers).
pub const BRIDGE: &str = "10.200.252.1";

static INSTALL: Once = Once::new();
static NEXT: AtomicU32 = AtomicU32::new(0);

/// Makes sure the VM test bed is set up (idempotent, about 0.6 s once installed); fails with a pointer to
/// `scripts/testbed/install` when it cannot be.
pub fn require_testbed() {
    INSTALL.call_once(|| {
        let out = Command::new(repo().join("scripts/testbed/vm")).arg("install").stdin(Stdio::null()).output().expect("run scripts/testbed/vm");
        assert!(
            out.status.success(),
            "the fresh-VM test bed is not ready: run `scripts/testbed/install` as root\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    });
}

/// A fresh ed25519 key pair in `dir`; returns the private key's path (the public key is beside it, `.pub`).
pub fn keypair(dir: &Path) -> PathBuf {
    let key = dir.join("id_ed25519");
    let out = Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "sfuctl-fresh-vm-test", "-f"]).arg(&key).output().expect("ssh-keygen");
    assert!(out.status.success(), "ssh-keygen: {}", String::from_utf8_lossy(&out.stderr));
    key
}

/// Runs `cmd` on a VM over OpenSSH (a test's own look at the host, independent of sfuctl's SSH code).
pub fn ssh(address: &str, user: &str, key: &Path, cmd: &str) -> Output {
    Command::new("ssh")
        .args(["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "LogLevel=ERROR", "-i"])
        .arg(key)
        .arg(format!("{user}@{address}"))
        .arg(cmd)
        .stdin(Stdio::null())
        .output()
        .expect("run ssh")
}

/// `ssh` that must succeed; returns stdout.
pub fn ssh_ok(address: &str, user: &str, key: &Path, cmd: &str) -> String {
    let out = ssh(address, user, key, cmd);
    assert!(out.status.success(), "`{cmd}` on {address} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Reboots the VM from inside and waits until it is back (a new PID 1) with systemd up (`is-system-running --wait`).
pub fn reboot(address: &str, user: &str, key: &Path) {
    // A container shares the kernel's boot id: PID 1's start time tells one boot from the next.
    let boot = || String::from_utf8_lossy(&ssh(address, user, key, "ps -o lstart= -p 1").stdout).trim().to_string();
    let before = boot();
    let _ = ssh(address, user, key, "sudo systemctl reboot || systemctl reboot");
    let started = Instant::now();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = boot();
        if !now.is_empty() && now != before && ssh(address, user, key, "systemctl is-system-running --wait >/dev/null 2>&1; true").status.success() {
            return;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "{address} did not come back within 120 s of the reboot");
    }
}

/// One VM made directly (an "existing server"); destroyed on drop, also when the test panics.
pub struct Vm {
    name: String,
    address: String,
}

impl Vm {
    /// Boots a VM whose `login` user (`root` or `ubuntu`) accepts `key`; waits until SSH works.
    pub fn start(label: &str, login: &str, key: &Path) -> Vm {
        require_testbed();
        let name = format!("t{}-{}-{label}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let public = std::fs::read_to_string(key.with_extension("pub")).expect("the public key");
        let out = Command::new(repo().join("scripts/testbed/vm"))
            .args(["create", &name, "--login", login, "--public-key", public.trim()])
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/testbed/vm create");
        assert!(out.status.success(), "vm create failed: {}", String::from_utf8_lossy(&out.stderr));
        let vm = Vm { name, address: String::from_utf8_lossy(&out.stdout).trim().to_string() };
        let out = Command::new(repo().join("scripts/testbed/vm"))
            .args(["wait-ssh", &vm.name, "--timeout", "120", "--user", login, "--key"])
            .arg(key)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/testbed/vm wait-ssh");
        assert!(out.status.success(), "VM {} did not answer SSH: {}", vm.name, String::from_utf8_lossy(&out.stderr));
        vm
    }

    /// Its address.
    pub fn address(&self) -> &str {
        &self.address
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        let _ = Command::new(repo().join("scripts/testbed/vm")).args(["destroy", &self.name]).stdin(Stdio::null()).output();
    }
}

/// Whether a VM with this address still exists (the fakes destroy a server's VM with the server).
pub fn vm_exists(address: &str) -> bool {
    let out = Command::new(repo().join("scripts/testbed/vm")).args(["list", "--json"]).stdin(Stdio::null()).output().expect("vm list");
    String::from_utf8_lossy(&out.stdout).contains(&format!("\"{address}\""))
}

/// The Node.js mirror and the npm registry the test bed caches (`scripts/testbed/mediasoup-deps`), served on the
/// bridge address for VMs; stopped on drop.
pub struct Mirrors {
    children: Vec<Child>,
    /// `NODEJS_ORG_MIRROR` for sfuctl.
    pub node: String,
    /// `npm_config_registry` for the host.
    pub npm: String,
}

impl Mirrors {
    /// Starts both servers on free ports of 18000-18999 on the bridge.
    pub fn start() -> Mirrors {
        require_testbed();
        let mut children = Vec::new();
        let mut urls = Vec::new();
        for script in ["node-mirror", "npm-registry"] {
            let port = free_bridge_port();
            let child = Command::new(repo().join("scripts/testbed").join(script))
                .args(["serve", "--bind", BRIDGE, "--port", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start scripts/testbed/{script}: {e}; run `scripts/testbed/install`"));
            children.push(child);
            let started = Instant::now();
            while std::net::TcpStream::connect((BRIDGE, port)).is_err() {
                assert!(started.elapsed() < Duration::from_secs(20), "scripts/testbed/{script} did not listen on {BRIDGE}:{port}");
                std::thread::sleep(Duration::from_millis(50));
            }
            urls.push(format!("http://{BRIDGE}:{port}"));
        }
        Mirrors { children, npm: format!("{}/", urls[1]), node: urls.swap_remove(0) }
    }
}

impl Drop for Mirrors {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A port in 18000-18999 free on the bridge address now.
fn free_bridge_port() -> u16 {
    let start = 18000 + (std::process::id() % 500) as u16 + (NEXT.fetch_add(7, Ordering::Relaxed) % 400) as u16;
    (start..19000).chain(18000..start).find(|p| TcpListener::bind((BRIDGE, *p)).is_ok()).expect("a free port in 18000-18999")
}

/// The mediasoup worker the test bed built (`scripts/testbed/mediasoup-worker`).
pub fn mediasoup_worker() -> PathBuf {
    let out = Command::new(repo().join("scripts/testbed/mediasoup-worker")).arg("--path").stdin(Stdio::null()).output().expect("run mediasoup-worker");
    let path = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    assert!(path.is_file(), "the mediasoup worker is not built: run `scripts/testbed/install` (it runs scripts/testbed/mediasoup-deps)");
    path
}

/// One fresh VM deployed to as an existing host (`provider.kind: ssh`), with its own key, spec, state and HOME in
/// a temp dir; the VM is destroyed on drop.
pub struct ExistingVm {
    // Declared first so the VM goes before the directory holding its key.
    vm: Vm,
    dir: tempfile::TempDir,
    login: String,
    /// The deployment's name (unique per test process).
    pub name: String,
    /// The spec's path.
    pub spec: PathBuf,
}

impl ExistingVm {
    /// Boots a VM whose `login` user accepts a new key; `label` makes the names unique.
    pub fn start(label: &str, login: &str) -> Self {
        require_testbed();
        let dir = tempfile::tempdir().expect("temp dir");
        let key = keypair(dir.path());
        let vm = Vm::start(label, login, &key);
        let name = format!("{label}-{}", std::process::id() % 10000);
        let spec = dir.path().join("spec.yaml");
        ExistingVm { vm, dir, login: login.to_string(), name, spec }
    }

    /// The VM's address.
    pub fn address(&self) -> &str {
        self.vm.address()
    }

    /// Writes the spec: the VM as the one host `media-1`, SSH from the test bed, `sfu` (indented YAML lines)
    /// and `extra` top-level YAML.
    pub fn write(&self, sfu: &str, extra: &str) {
        let spec = format!(
            "name: {}\nprovider:\n  kind: ssh\n  hosts:\n    - {{ name: media-1, address: {} }}\nssh:\n  user: {}\n  private_key: {}\n  allow_from: [10.200.0.0/16]\nsfu:\n{sfu}{extra}",
            self.name,
            self.address(),
            self.login,
            self.dir.path().join("id_ed25519").display()
        );
        std::fs::write(&self.spec, spec).expect("write the spec");
    }

    /// `sfuctl ARGS SPEC` with this deployment's HOME and state directory.
    pub fn sfuctl(&self, args: &[&str]) -> assert_cmd::Command {
        let mut cmd = crate::support::cli::sfuctl(&self.home());
        cmd.env("SFUCTL_STATE_DIR", self.state_dir()).args(args).arg(&self.spec);
        cmd
    }

    /// sfuctl's HOME in these tests.
    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// sfuctl's state directory in these tests.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }
}
