//! Fake VM hosts for integration tests: one network namespace each, with its own OpenSSH sshd.
//!
//! [`TestHost::start`] makes namespace `sfut-N` with the subnet 10.200.N.0/24 (the machine side is 10.200.N.1 on
//! veth `vht-N`, the host is 10.200.N.2), generates a fresh ed25519 host key and client key, and starts
//! `sshd -D` inside, key-only, root allowed by key. Dropping the [`TestHost`] (also while a test panics) kills
//! every process in the namespace and removes the namespace, the veth and the host's directory.
//!
//! N is taken from 100..=250 (the practice hosts of `scripts/testbed/host` use 1..=99). `ip netns add` fails
//! when the name exists, which makes the choice atomic across threads and processes; a lock file also lets a
//! later run reclaim the namespaces of a run that was killed outright (its owner PID is gone).
//!
//! Traffic rule: tests talk only to loopback and to the 10.200.0.0/16 namespaces they made themselves. The
//! `unreachable 10.200.0.0/16` safety route makes sure a missing veth never sends anything out of the machine.
//!
//! Needs root and the test bed packages; a missing prerequisite panics with a pointer to
//! `scripts/testbed/install` instead of skipping.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// Test hosts take N from this range; practice hosts (`scripts/testbed/host`) use 1..=99.
const N_RANGE: std::ops::RangeInclusive<u32> = 100..=250;
/// Parent of every test host's directory, and home of the allocation lock.
const ROOT_DIR: &str = "/tmp/sfuctl-tests";
const SSHD: &str = "/usr/sbin/sshd";

static NEXT: AtomicUsize = AtomicUsize::new(0);
static PREREQS: Once = Once::new();
static SWEEP: Once = Once::new();

/// One namespace host with a running sshd. Dropping it removes everything it made.
pub struct TestHost {
    label: String,
    n: u32,
    ns: String,
    veth: String,
    dir: PathBuf,
    sshd: Option<Child>,
}

impl TestHost {
    /// Makes a namespace host with a running sshd; `label` only names it in messages and key comments.
    /// Panics (with the sshd log when there is one) if anything fails.
    pub fn start(label: &str) -> TestHost {
        PREREQS.call_once(check_prerequisites);
        let n = allocate();
        let ns = ns_name(n);
        // From here on, Drop cleans up whatever a panic leaves half made.
        let mut host =
            TestHost { label: label.to_string(), n, ns: ns.clone(), veth: veth_name(n), dir: host_dir(n), sshd: None };
        host.setup_network();
        host.setup_sshd();
        host.start_sshd();
        host
    }

    /// The host's address, 10.200.N.2.
    pub fn address(&self) -> String {
        format!("10.200.{}.2", self.n)
    }

    /// An address in the host's subnet where nothing answers (10.200.N.3).
    pub fn unused_address(&self) -> String {
        format!("10.200.{}.3", self.n)
    }

    /// The machine's own address on the host's link, 10.200.N.1.
    pub fn gateway_address(&self) -> String {
        format!("10.200.{}.1", self.n)
    }

    /// sshd's port.
    pub fn port(&self) -> u16 {
        22
    }

    /// The network namespace's name (`sfut-N`).
    pub fn ns(&self) -> &str {
        &self.ns
    }

    /// The host's private directory (keys, sshd config and log). Removed on drop.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The ed25519 client key authorized for root (no passphrase).
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client_key")
    }

    /// The current host key's fingerprint, as `ssh-keygen -lf` prints it (`SHA256:…`).
    pub fn host_key_fingerprint(&self) -> String {
        let out = run_ok(Command::new("ssh-keygen").arg("-lf").arg(self.dir.join("host_key.pub")));
        let text = String::from_utf8_lossy(&out.stdout);
        text.split_whitespace().nth(1).unwrap_or_else(|| panic!("unexpected ssh-keygen -lf output: {text}")).to_string()
    }

    /// What the host sees as `/opt/sfuctl` (its own directory, bound there for its sshd and everything it runs).
    pub fn opt_dir(&self) -> PathBuf {
        self.dir.join("opt-sfuctl")
    }

    /// Everything sshd logged so far (LogLevel VERBOSE: connections, accepted keys).
    pub fn sshd_log(&self) -> String {
        fs::read_to_string(self.dir.join("sshd.log")).unwrap_or_default()
    }

    /// Generates a new client key `name` in the host's directory (`kind`: `ed25519` or `rsa`, with an optional
    /// passphrase); if `authorize`, adds it to the authorized keys. Returns the private key's path.
    pub fn new_client_key(&self, name: &str, kind: &str, passphrase: Option<&str>, authorize: bool) -> PathBuf {
        let key = self.dir.join(name);
        let mut cmd = Command::new("ssh-keygen");
        cmd.args(["-q", "-t", kind, "-N", passphrase.unwrap_or(""), "-C", &format!("{}-{name}", self.label), "-f"])
            .arg(&key);
        if kind == "rsa" {
            cmd.args(["-b", "3072"]);
        }
        run_ok(&mut cmd);
        if authorize {
            let public = fs::read_to_string(key.with_extension("pub")).expect("read the new public key");
            let mut keys = OpenOptions::new().append(true).open(self.dir.join("authorized_keys")).unwrap();
            keys.write_all(public.as_bytes()).unwrap();
        }
        key
    }

    /// Runs `args` inside the namespace (`ip netns exec NS args…`) and returns its output, whatever the status.
    pub fn exec_in_ns(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.ns])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {args:?} in {}: {e}", self.ns))
    }

    /// Applies an nftables ruleset inside the namespace (start it with `flush ruleset`), then flushes conntrack:
    /// without that, a flow allowed by the previous rules stays allowed (testbed.md, "conntrack leaks").
    pub fn nft(&self, ruleset: &str) {
        let file = self.dir.join("ruleset.nft");
        fs::write(&file, ruleset).unwrap();
        let out = self.exec_in_ns(&["nft", "-f", file.to_str().unwrap()]);
        assert!(out.status.success(), "nft -f in {} failed: {}", self.ns, String::from_utf8_lossy(&out.stderr));
        let out = self.exec_in_ns(&["conntrack", "-F"]);
        assert!(out.status.success(), "conntrack -F in {} failed: {}", self.ns, String::from_utf8_lossy(&out.stderr));
    }

    /// Stops sshd, replaces its host key with a fresh one and starts it again (sessions already open keep
    /// running). Returns the new fingerprint.
    pub fn restart_sshd_with_new_host_key(&mut self) -> String {
        self.stop_sshd();
        let _ = fs::remove_file(self.dir.join("host_key"));
        let _ = fs::remove_file(self.dir.join("host_key.pub"));
        keygen(&self.dir.join("host_key"), &format!("{}-host", self.label));
        self.start_sshd();
        self.host_key_fingerprint()
    }

    fn setup_network(&self) {
        let (ns, veth, n) = (&self.ns, &self.veth, self.n);
        ip(&["link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns]);
        ip(&["addr", "add", &format!("10.200.{n}.1/24"), "dev", veth]);
        ip(&["link", "set", veth, "up"]);
        ip(&["-n", ns, "addr", "add", &format!("10.200.{n}.2/24"), "dev", "eth0"]);
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
        // Closed ports must answer with ICMP at once, or "closed" looks like "filtered" (testbed.md trap 2).
        let out = self.exec_in_ns(&[
            "sysctl",
            "-qw",
            "net.ipv4.icmp_ratelimit=0",
            "net.ipv4.icmp_msgs_per_sec=1000000",
            "net.ipv4.icmp_msgs_burst=100000",
        ]);
        assert!(out.status.success(), "sysctl in {ns}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn setup_sshd(&self) {
        let d = &self.dir;
        keygen(&d.join("host_key"), &format!("{}-host", self.label));
        keygen(&d.join("client_key"), &format!("{}-client", self.label));
        fs::copy(d.join("client_key.pub"), d.join("authorized_keys")).unwrap();
        let config = format!(
            "ListenAddress {addr}:22\n\
             HostKey {d}/host_key\n\
             PidFile {d}/sshd.pid\n\
             AuthorizedKeysFile {d}/authorized_keys\n\
             PermitRootLogin prohibit-password\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             UsePAM no\n\
             StrictModes no\n\
             Subsystem sftp internal-sftp\n\
             LogLevel VERBOSE\n",
            addr = self.address(),
            d = d.display()
        );
        fs::write(d.join("sshd_config"), config).unwrap();
    }

    fn start_sshd(&mut self) {
        let log = File::create(self.dir.join("sshd.log")).unwrap();
        // Like a VM, each host has a disk of its own where sfuctl installs: `ip netns exec` already gives sshd a
        // mount namespace of its own, in which the host's directory is bound over /opt/sfuctl. Without it, two
        // hosts of one deployment would share /opt/sfuctl/<name>, pid files included.
        fs::create_dir_all(self.opt_dir()).unwrap();
        fs::create_dir_all("/opt/sfuctl").unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", &self.ns, "sh", "-c", "mount --bind \"$0\" /opt/sfuctl && exec \"$1\" -D -e -f \"$2\""])
            .arg(self.opt_dir())
            .arg(SSHD)
            .arg(self.dir.join("sshd_config"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sshd in {}: {e}", self.ns));
        self.sshd = Some(child);
        let addr: SocketAddr = format!("{}:22", self.address()).parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            if let Some(status) = self.sshd.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("sshd in {} exited at start ({status}); its log:\n{}", self.ns, self.sshd_log());
            }
            if Instant::now() > deadline {
                panic!("sshd in {} did not accept connections within 10 s; its log:\n{}", self.ns, self.sshd_log());
            }
            sleep(Duration::from_millis(20));
        }
    }

    fn stop_sshd(&mut self) {
        if let Some(mut child) = self.sshd.take() {
            let _ = Command::new("kill").arg(child.id().to_string()).status();
            let _ = child.wait();
        }
    }
}

impl Drop for TestHost {
    fn drop(&mut self) {
        // Never panic here: this often runs while a failed test unwinds.
        self.stop_sshd();
        teardown(self.n);
    }
}

fn ns_name(n: u32) -> String {
    format!("sfut-{n}")
}

fn veth_name(n: u32) -> String {
    format!("vht-{n}")
}

fn host_dir(n: u32) -> PathBuf {
    Path::new(ROOT_DIR).join(ns_name(n))
}

/// Takes a free N: `ip netns add` is the atomic claim; under the lock we also reclaim namespaces whose owner
/// process is gone (a run killed with SIGKILL never ran its Drop).
fn allocate() -> u32 {
    fs::create_dir_all(ROOT_DIR).unwrap();
    let lock = File::create(Path::new(ROOT_DIR).join(".lock")).unwrap();
    lock.lock().expect("lock the test host allocation file");
    // The safety net first: with no veth, 10.200.x.x would otherwise go out of the default route.
    run_ok(Command::new("ip").args(["route", "replace", "unreachable", "10.200.0.0/16"]));
    SWEEP.call_once(reclaim_stale_hosts);

    let count = (*N_RANGE.end() - *N_RANGE.start() + 1) as usize;
    let offset = (std::process::id() as usize).wrapping_mul(7) + NEXT.fetch_add(1, Ordering::Relaxed);
    for i in 0..count {
        let n = *N_RANGE.start() + ((offset + i) % count) as u32;
        let mut claimed = netns_add(n);
        if !claimed && owner_is_gone(n) {
            teardown(n);
            claimed = netns_add(n);
        }
        if claimed {
            let dir = host_dir(n);
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join("owner"), std::process::id().to_string()).unwrap();
            // A leftover veth of a reclaimed host would block ours.
            if link_exists(&veth_name(n)) {
                let _ = Command::new("ip").args(["link", "del", &veth_name(n)]).status();
            }
            return n;
        }
    }
    panic!("no free test namespace in sfut-{}..sfut-{}: `ip netns list` shows what is left over", N_RANGE.start(), N_RANGE.end());
}

/// Removes the test hosts of runs that died without running their Drop (SIGKILL, a timeout), so red runs
/// never pile up namespaces. Called under the allocation lock.
fn reclaim_stale_hosts() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else { return };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        if let Some(n) = name.strip_prefix("sfut-").and_then(|n| n.parse::<u32>().ok())
            && N_RANGE.contains(&n)
            && owner_is_gone(n)
        {
            teardown(n);
        }
    }
}

fn netns_add(n: u32) -> bool {
    Command::new("ip")
        .args(["netns", "add", &ns_name(n)])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn owner_is_gone(n: u32) -> bool {
    let Ok(pid) = fs::read_to_string(host_dir(n).join("owner")) else {
        // Allocation writes the owner under the lock, so a namespace without one was left half made.
        return true;
    };
    !pid_alive(pid.trim())
}

fn pid_alive(pid: &str) -> bool {
    // A zombie still has /proc/PID; its state letter (after the command in parentheses) is Z.
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat.rsplit(')').next().and_then(|s| s.split_whitespace().next()) != Some("Z"),
        Err(_) => false,
    }
}

fn ns_pids(ns: &str) -> Vec<String> {
    Command::new("ip")
        .args(["netns", "pids", ns])
        .stderr(Stdio::null())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// Kills every process in namespace N, deletes it, its veth and its directory. Never panics.
fn teardown(n: u32) {
    let ns = ns_name(n);
    for signal in ["-TERM", "-KILL"] {
        let pids: Vec<String> = ns_pids(&ns).into_iter().filter(|p| pid_alive(p)).collect();
        if pids.is_empty() {
            break;
        }
        let _ = Command::new("kill").arg(signal).args(&pids).stderr(Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline && ns_pids(&ns).iter().any(|p| pid_alive(p)) {
            sleep(Duration::from_millis(20));
        }
    }
    // The namespace goes last: its name is the claim on N, so nobody can take N while we still remove things.
    let veth = veth_name(n);
    let deadline = Instant::now() + Duration::from_secs(2);
    while link_exists(&veth) && Instant::now() < deadline {
        let _ = Command::new("ip").args(["link", "del", &veth]).stderr(Stdio::null()).status();
        if link_exists(&veth) {
            sleep(Duration::from_millis(20));
        }
    }
    let _ = fs::remove_dir_all(host_dir(n));
    let _ = Command::new("ip").args(["netns", "del", &ns]).stderr(Stdio::null()).status();
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn keygen(path: &Path, comment: &str) {
    run_ok(Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"]).arg(path));
}

fn ip(args: &[&str]) {
    run_ok(Command::new("ip").args(args));
}

fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    out
}

fn check_prerequisites() {
    let uid = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2).map(str::to_string)))
        .flatten();
    assert_eq!(
        uid.as_deref(),
        Some("0"),
        "the namespace test hosts need root (ip netns, sshd, nft): run the integration tests as root"
    );
    let missing: Vec<&str> = ["ip", "nft", "conntrack", "ssh-keygen", SSHD]
        .into_iter()
        .filter(|bin| {
            if bin.starts_with('/') {
                !Path::new(bin).exists()
            } else {
                !["/usr/sbin", "/usr/bin", "/sbin", "/bin"].iter().any(|d| Path::new(d).join(bin).exists())
            }
        })
        .collect();
    assert!(
        missing.is_empty(),
        "the test bed is not installed (missing: {}): run `scripts/testbed/install` as root first",
        missing.join(", ")
    );
    // sshd refuses to start without its privilege separation directory.
    fs::create_dir_all("/run/sshd").expect("create /run/sshd");
}
