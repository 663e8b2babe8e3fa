//! `sfuctl::remote` against real OpenSSH sshd in network namespaces: host key pinning, key kinds, failures
//! and their messages, checksummed atomic uploads, and the async handle.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use sfuctl::error::render;
use sfuctl::remote::{Remote, SshTarget, connect_async};
use sha2::{Digest, Sha256};

use crate::support::netns::TestHost;

fn target(host: &TestHost) -> SshTarget {
    let mut t = SshTarget::new(host.address(), host.port(), "root");
    t.private_key = Some(host.client_key());
    t.connect_timeout = Duration::from_secs(5);
    t.io_timeout = Duration::from_secs(60);
    t
}

fn connect_err(t: &SshTarget) -> String {
    match Remote::connect(t) {
        Ok(_) => panic!("connecting to {} should have failed", t.label()),
        Err(e) => render(&e),
    }
}

/// A fingerprint no host here has.
const OTHER_FP: &str = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";

#[test]
fn connects_and_runs_commands_as_root_with_an_ed25519_key() {
    let host = TestHost::start("exec");
    let (remote, _) = Remote::connect(&target(&host)).unwrap();
    assert_eq!(remote.label(), format!("root@{}:22", host.address()));

    let out = remote.exec("id -u").unwrap();
    assert_eq!((out.status, out.stdout.as_str()), (0, "0\n"));

    let out = remote.exec("echo out; echo err >&2; exit 3").unwrap();
    assert_eq!((out.status, out.stdout.as_str(), out.stderr.as_str()), (3, "out\n", "err\n"));
    assert!(!out.success());

    let err = render(&remote.exec_checked("echo first >&2; echo boom >&2; exit 4").unwrap_err());
    assert!(err.contains("exited with status 4"), "{err}");
    assert!(err.contains(&host.address()) && err.contains("first\n") && err.contains("boom"), "{err}");
    assert_eq!(remote.exec_checked("true").unwrap().status, 0);

    // stdin is closed at once: a command that reads it ends instead of waiting for the I/O timeout.
    let started = Instant::now();
    assert_eq!(remote.exec_checked("cat").unwrap().stdout, "");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn first_contact_returns_the_ssh_keygen_fingerprint_and_the_pin_then_holds() {
    let host = TestHost::start("first-contact");
    let (_, fp) = Remote::connect(&target(&host)).unwrap();
    assert_eq!(fp, host.host_key_fingerprint());

    let mut pinned = target(&host);
    pinned.expected_host_key = Some(fp.clone());
    let (remote, again) = Remote::connect(&pinned).unwrap();
    assert_eq!((again.as_str(), remote.host_key_fingerprint()), (fp.as_str(), fp.as_str()));
}

#[test]
fn a_wrong_pin_is_refused_before_authenticating() {
    let host = TestHost::start("wrong-pin");
    let mut t = target(&host);
    t.expected_host_key = Some(OTHER_FP.to_string());
    let err = connect_err(&t);
    assert!(err.contains("CHANGED") && err.contains(OTHER_FP), "{err}");
    assert!(err.contains(&host.host_key_fingerprint()), "{err}");
    assert!(err.contains(&format!("root@{}:22", host.address())), "{err}");
    assert!(err.contains("hint: ") && err.contains("remove the pinned host key"), "{err}");
    // The key was never offered: sshd logs every accepted or tried public key at LogLevel VERBOSE.
    let log = host.sshd_log();
    assert!(!log.contains("publickey"), "auth was attempted despite the wrong pin:\n{log}");
}

#[test]
fn after_the_host_key_changes_the_old_pin_is_refused() {
    let mut host = TestHost::start("rekey");
    let (_, old) = Remote::connect(&target(&host)).unwrap();
    let new = host.restart_sshd_with_new_host_key();
    assert_ne!(old, new);

    let mut t = target(&host);
    t.expected_host_key = Some(old.clone());
    let err = connect_err(&t);
    assert!(err.contains(&old) && err.contains(&new), "{err}");

    t.expected_host_key = Some(new.clone());
    assert_eq!(Remote::connect(&t).unwrap().1, new);
}

#[test]
fn a_key_the_host_does_not_know_fails_with_a_hint_naming_it() {
    let host = TestHost::start("wrong-key");
    let stranger = host.new_client_key("stranger", "ed25519", None, false);
    let mut t = target(&host);
    t.private_key = Some(stranger.clone());
    let err = connect_err(&t);
    assert!(err.contains("rejected"), "{err}");
    assert!(err.contains(&format!("hint: tried SSH key `{}`", stranger.display())), "{err}");

    t.private_key = Some(host.dir().join("no-such-key"));
    let err = connect_err(&t);
    assert!(err.contains("cannot read SSH private key") && err.contains("no-such-key"), "{err}");
}

#[test]
fn rsa_keys_work() {
    let host = TestHost::start("rsa");
    let mut t = target(&host);
    t.private_key = Some(host.new_client_key("rsa_key", "rsa", None, true));
    let (remote, _) = Remote::connect(&t).unwrap();
    assert_eq!(remote.exec_checked("echo ok").unwrap().stdout, "ok\n");
}

#[test]
fn passphrase_protected_keys_work_and_a_wrong_passphrase_says_so() {
    let host = TestHost::start("passphrase");
    let mut t = target(&host);
    t.private_key = Some(host.new_client_key("locked", "ed25519", Some("correct horse"), true));

    t.passphrase = Some("correct horse".into());
    Remote::connect(&t).unwrap();

    t.passphrase = Some("battery staple".into());
    let err = connect_err(&t);
    assert!(err.contains("passphrase") && err.contains("is wrong"), "{err}");
    assert!(!err.contains("battery staple") && !err.contains("Unsupported private key format"), "{err}");

    t.passphrase = None;
    let err = connect_err(&t);
    assert!(err.contains("protected by a passphrase, and none was given"), "{err}");
}

#[test]
fn unreachable_and_closed_addresses_fail_in_time_naming_the_host() {
    let host = TestHost::start("unreachable");
    let timeout = Duration::from_secs(2);

    let mut t = target(&host);
    t.address = host.unused_address();
    t.connect_timeout = timeout;
    let started = Instant::now();
    let err = connect_err(&t);
    assert!(started.elapsed() < timeout + Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(err.contains(&format!("root@{}:22", host.unused_address())), "{err}");
    assert!(err.contains("timed out") || err.contains("no route"), "{err}");

    let mut t = target(&host);
    t.port = 2222;
    let started = Instant::now();
    let err = connect_err(&t);
    assert!(started.elapsed() < Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(err.contains(&format!("root@{}:2222: connection refused", host.address())), "{err}");

    // Something that accepts TCP but never speaks SSH: the handshake is bounded by the same budget.
    let mut silent = std::process::Command::new("ip")
        .args(["netns", "exec", host.ns(), "socat"])
        .arg(format!("TCP-LISTEN:2200,bind={},reuseaddr,fork", host.address()))
        .arg("EXEC:sleep 30")
        .spawn()
        .unwrap();
    let addr = format!("{}:2200", host.address()).parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "socat did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut t = target(&host);
    t.port = 2200;
    t.connect_timeout = timeout;
    let started = Instant::now();
    let err = connect_err(&t);
    assert!(started.elapsed() < timeout + Duration::from_secs(2), "took {:?}", started.elapsed());
    assert!(err.contains(&format!("SSH handshake with root@{}:2200 timed out", host.address())), "{err}");
    let _ = silent.kill();
    let _ = silent.wait();
}

/// Deterministic incompressible-looking bytes (xorshift), so tests need no random source.
fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn hex_sha256(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> =
        fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn upload_is_checksummed_and_skipped_when_the_host_has_it() {
    let host = TestHost::start("upload");
    let (remote, _) = Remote::connect(&target(&host)).unwrap();
    // The namespace shares this machine's filesystem: the "remote" side is a private temp dir here.
    let local_dir = tempfile::tempdir().unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let data = pseudo_random(5 * 1024 * 1024 + 123, 42);
    let local = local_dir.path().join("sfu-binary");
    fs::write(&local, &data).unwrap();
    // A parent that does not exist yet, and names that need quoting.
    let dest_dir = remote_dir.path().join("opt dir/it's");
    let dest = dest_dir.join("sfu binary");
    let dest_str = dest.to_str().unwrap();

    let first = remote.upload(&local, dest_str, 0o755).unwrap();
    assert_eq!(first.sha256, hex_sha256(&data));
    assert_eq!((first.bytes_sent, first.skipped), (data.len() as u64, false));
    assert_eq!(hex_sha256(&fs::read(&dest).unwrap()), first.sha256);
    assert_eq!(fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o755);
    assert_eq!(entries(&dest_dir), ["sfu binary"], "no temporary file may be left behind");

    let second = remote.upload(&local, dest_str, 0o750).unwrap();
    assert_eq!((second.bytes_sent, second.skipped, second.sha256.as_str()), (0, true, first.sha256.as_str()));
    assert_eq!(fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o750, "a skip still applies the mode");

    let err = render(&remote.upload(&local_dir.path().join("missing"), dest_str, 0o644).unwrap_err());
    assert!(err.contains("cannot read") && err.contains("missing"), "{err}");
}

#[test]
fn upload_bytes_replaces_the_file_atomically() {
    let host = TestHost::start("upload-bytes");
    let (remote, _) = Remote::connect(&target(&host)).unwrap();
    let remote_dir = tempfile::tempdir().unwrap();
    let dest = remote_dir.path().join("etc/janus.jcfg");
    let dest_str = dest.to_str().unwrap();

    let v1 = remote.upload_bytes(b"general: { v = 1 }\n", dest_str, 0o600).unwrap();
    assert!(!v1.skipped && v1.bytes_sent == 19);
    let inode_v1 = fs::metadata(&dest).unwrap().ino();

    let v2 = remote.upload_bytes(b"general: { v = 2, longer = true }\n", dest_str, 0o600).unwrap();
    assert!(!v2.skipped && v2.sha256 != v1.sha256);
    assert_eq!(fs::read_to_string(&dest).unwrap(), "general: { v = 2, longer = true }\n");
    // A new inode: the file was renamed into place, never rewritten where it stood.
    assert_ne!(fs::metadata(&dest).unwrap().ino(), inode_v1);
    assert_eq!(fs::metadata(&dest).unwrap().permissions().mode() & 0o7777, 0o600);
    assert_eq!(entries(dest.parent().unwrap()), ["janus.jcfg"]);

    let again = remote.upload_bytes(b"general: { v = 2, longer = true }\n", dest_str, 0o600).unwrap();
    assert!(again.skipped && again.bytes_sent == 0);

    let err = render(&remote.upload_bytes(b"x", &format!("{}/", remote_dir.path().display()), 0o600).unwrap_err());
    assert!(err.contains("not a file path"), "{err}");

    // A parent that is a file: the host's own complaint reaches the message.
    let under_a_file = format!("{dest_str}/nested/x.conf");
    let err = render(&remote.upload_bytes(b"x", &under_a_file, 0o600).unwrap_err());
    assert!(err.contains(&format!("cannot upload to `{under_a_file}` on root@{}:22", host.address())), "{err}");
    assert!(err.contains("mkdir") && err.contains("Not a directory"), "{err}");
    assert_eq!(entries(dest.parent().unwrap()), ["janus.jcfg"]);
}

#[test]
fn the_async_handle_drives_two_hosts_at_once() {
    let a = TestHost::start("async-a");
    let b = TestHost::start("async-b");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let (ra, rb) = tokio::join!(connect_async(target(&a)), connect_async(target(&b)));
        let ((ha, fpa), (hb, fpb)) = (ra.unwrap(), rb.unwrap());
        assert_eq!((fpa, fpb), (a.host_key_fingerprint(), b.host_key_fingerprint()));

        // SSH_CONNECTION names the server address each session really reached.
        let cmd = "echo $SSH_CONNECTION";
        let (oa, ob) = tokio::join!(ha.exec_checked(cmd), hb.exec_checked(cmd));
        assert!(oa.unwrap().stdout.contains(&format!("{} 22", a.address())));
        assert!(ob.unwrap().stdout.contains(&format!("{} 22", b.address())));

        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("from-async").to_str().unwrap().to_string();
        let up = ha.upload_bytes(b"hello".to_vec(), dest.clone(), 0o644).await.unwrap();
        assert!(!up.skipped);
        assert_eq!(fs::read(&dest).unwrap(), b"hello");

        let err = render(&hb.exec_checked("exit 7").await.unwrap_err());
        assert!(err.contains("exited with status 7") && err.contains(&b.address()), "{err}");
    });
}
