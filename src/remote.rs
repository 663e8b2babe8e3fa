//! SSH to one host: connect with the host key pinned, run commands, upload files checksummed and atomically.
//!
//! Built on `ssh2` (libssh2, blocking). [`Remote`] is the blocking session; [`RemoteHandle`] wraps it for tokio
//! (every call runs on `spawn_blocking`), so several hosts can be driven at once.
//!
//! Every error names the host as `user@addr:port` and carries a hint where one helps. Passphrases and key
//! contents never appear in errors or logs.

use std::fmt;
use std::fs::File;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;
use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest, Sha256};
use ssh2::{ErrorCode, HashType, MethodType, Session};

use crate::error::UserError;
use crate::log::{self, Area, Level};

/// Host key algorithms in the order offered. ed25519 first, so the key negotiated is the one usually pinned
/// (a server has several host keys and libssh2 would otherwise pick by its own order).
const HOST_KEY_PREFS: &str = "ssh-ed25519,ecdsa-sha2-nistp256,rsa-sha2-512,rsa-sha2-256";

/// Size of each write during an upload: libssh2 only pipelines within one write call, and 256 KiB was the
/// fastest size measured (32 KiB writes were a third slower).
const UPLOAD_CHUNK: usize = 256 * 1024;

/// How many trailing lines of stderr a failed command shows.
const STDERR_TAIL_LINES: usize = 20;

// libssh2 error codes we translate (LIBSSH2_ERROR_*).
const LIBSSH2_ERROR_FILE: i32 = -16;
const LIBSSH2_ERROR_AUTHENTICATION_FAILED: i32 = -18;
const LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED: i32 = -19;
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;

/// Where and how to log in to one host.
#[derive(Clone)]
pub struct SshTarget {
    /// IP address or DNS name of the host.
    pub address: String,
    /// TCP port of sshd (usually 22).
    pub port: u16,
    /// Login user.
    pub user: String,
    /// Private key file to log in with (OpenSSH or PEM; ed25519, ecdsa or RSA). `None`: use ssh-agent
    /// through `SSH_AUTH_SOCK`.
    pub private_key: Option<PathBuf>,
    /// Passphrase of `private_key`, if it has one. Never printed.
    pub passphrase: Option<String>,
    /// The pinned host key fingerprint (`SHA256:…`, as `ssh-keygen -lf` prints it). `None`: first contact,
    /// accept whatever key the host offers (the caller pins the fingerprint [`Remote::connect`] returns).
    pub expected_host_key: Option<String>,
    /// Budget for TCP connect, SSH handshake and authentication together.
    pub connect_timeout: Duration,
    /// After login: the longest any single SSH operation may wait for the host. A command that prints nothing
    /// for this long fails, so keep it above the longest silent step (a package install, a service start).
    pub io_timeout: Duration,
}

impl SshTarget {
    /// A target with no key (ssh-agent), no pin, a 10 s connect timeout and a 10 min I/O timeout.
    pub fn new(address: impl Into<String>, port: u16, user: impl Into<String>) -> Self {
        Self {
            address: address.into(),
            port,
            user: user.into(),
            private_key: None,
            passphrase: None,
            expected_host_key: None,
            connect_timeout: Duration::from_secs(10),
            io_timeout: Duration::from_secs(600),
        }
    }

    /// The host as every message names it: `user@addr:port` (IPv6 addresses in brackets).
    pub fn label(&self) -> String {
        if self.address.contains(':') {
            format!("{}@[{}]:{}", self.user, self.address, self.port)
        } else {
            format!("{}@{}:{}", self.user, self.address, self.port)
        }
    }
}

impl fmt::Debug for SshTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SshTarget")
            .field("address", &self.address)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("private_key", &self.private_key)
            .field("passphrase", &self.passphrase.as_ref().map(|_| "<redacted>"))
            .field("expected_host_key", &self.expected_host_key)
            .field("connect_timeout", &self.connect_timeout)
            .field("io_timeout", &self.io_timeout)
            .finish()
    }
}

/// What a remote command did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecOutput {
    /// Exit status; -1 when the command was killed by a signal (see `signal`).
    pub status: i32,
    /// Everything the command wrote to stdout (invalid UTF-8 replaced).
    pub stdout: String,
    /// Everything the command wrote to stderr (invalid UTF-8 replaced).
    pub stderr: String,
    /// The signal that killed the command, e.g. `KILL`, if one did.
    pub signal: Option<String>,
}

impl ExecOutput {
    /// True when the command exited with status 0.
    pub fn success(&self) -> bool {
        self.status == 0 && self.signal.is_none()
    }
}

/// What an upload did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UploadOutcome {
    /// Bytes sent over the wire (0 when skipped).
    pub bytes_sent: u64,
    /// True when the host already had the same content, so nothing was sent.
    pub skipped: bool,
    /// Lowercase hex sha256 of the content, as `sha256sum` prints it.
    pub sha256: String,
}

/// An authenticated SSH session to one host (blocking). Use [`RemoteHandle`] from async code.
pub struct Remote {
    session: Session,
    label: String,
    fingerprint: String,
    io_timeout_ms: u32,
}

impl fmt::Debug for Remote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Remote").field("host", &self.label).field("host_key", &self.fingerprint).finish()
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        // A polite goodbye; the host may already be gone, so never wait long for it.
        self.session.set_timeout(1000);
        let _ = self.session.disconnect(None, "sfuctl done", None);
    }
}

impl Remote {
    /// Connects, checks the host key against `target.expected_host_key` (before authenticating), and logs in.
    ///
    /// Returns the session and the host key fingerprint (`SHA256:…`, equal to `ssh-keygen -lf`), which the
    /// caller pins on first contact.
    pub fn connect(target: &SshTarget) -> Result<(Remote, String)> {
        let label = target.label();
        let started = Instant::now();
        let remaining = || target.connect_timeout.saturating_sub(started.elapsed()).max(Duration::from_millis(1));

        // Read the key before touching the network: a typo in the path should not cost a connect timeout.
        let key = match &target.private_key {
            Some(path) => Some(KeyFile::inspect(path, &label)?),
            None => None,
        };
        if let Some(k) = &key
            && k.encrypted
            && target.passphrase.is_none()
        {
            return Err(UserError::failed(format!(
                "cannot log in to {label}: SSH private key `{}` is protected by a passphrase, and none was given",
                k.path.display()
            ))
            .hint(format!(
                "run sfuctl interactively to be asked for the passphrase, or load the key into ssh-agent \
                     (`ssh-add {}`) and leave the key unset so the agent is used",
                k.path.display()
            ))
            .into());
        }

        let tcp = tcp_connect(target, &label, started)?;
        let mut session = Session::new()
            .map_err(|e| UserError::failed(format!("cannot start an SSH session to {label}")).caused_by(e))?;
        session.set_tcp_stream(tcp);
        session.set_timeout(millis(remaining()));
        session
            .method_pref(MethodType::HostKey, HOST_KEY_PREFS)
            .map_err(|e| UserError::failed(format!("cannot set host key preferences for {label}")).caused_by(e))?;
        session.handshake().map_err(|e| {
            let err = if is_timeout(&e) {
                UserError::failed(format!(
                    "SSH handshake with {label} timed out after {}",
                    secs(target.connect_timeout)
                ))
                .hint("something accepted the TCP connection but did not speak SSH in time: check that the port is sshd's")
            } else {
                UserError::failed(format!("SSH handshake with {label} failed"))
                    .hint("check that the port is sshd's and that the host offers a modern host key (ed25519, ecdsa or rsa-sha2)")
            };
            err.caused_by(e)
        })?;

        let fingerprint = session
            .host_key_hash(HashType::Sha256)
            .map(fingerprint_sha256)
            .ok_or_else(|| UserError::failed(format!("{label} sent no host key")))?;
        if let Some(expected) = &target.expected_host_key
            && !fingerprints_equal(expected, &fingerprint)
        {
            return Err(UserError::failed(format!(
                "host key of {label} has CHANGED: pinned {expected}, offered {fingerprint}; refusing to log in"
            ))
            .hint(
                "this could be a man-in-the-middle attack. If the host was legitimately rebuilt or its \
                     keys rotated, remove the pinned host key for this host from the local state (or the spec) and \
                     connect again to pin the new one",
            )
            .into());
        }

        session.set_timeout(millis(remaining()));
        authenticate(&session, target, key.as_ref(), &label)?;

        session.set_timeout(millis(target.io_timeout));
        Ok((Remote { session, label, fingerprint: fingerprint.clone(), io_timeout_ms: millis(target.io_timeout) }, fingerprint))
    }

    /// The host as messages name it: `user@addr:port`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The host key fingerprint seen at connect time (`SHA256:…`).
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The host key this session checked against the pin, as a known_hosts line needs it.
    pub fn host_public_key(&self) -> Result<HostPublicKey> {
        let (blob, _) = self.session.host_key().ok_or_else(|| UserError::failed(format!("{} sent no host key", self.label)))?;
        HostPublicKey::from_blob(blob).ok_or_else(|| UserError::failed(format!("{} sent a host key sfuctl cannot read", self.label)).into())
    }

    /// Runs `cmd` through the login user's shell and collects its output. A non-zero exit is not an error here
    /// (see [`Remote::exec_checked`]); failing to run it at all is.
    pub fn exec(&self, cmd: &str) -> Result<ExecOutput> {
        let doing = format!("running `{}`", short(cmd));
        let started = log_command(&self.label, cmd);
        let mut channel = self.session.channel_session().map_err(|e| ssh_fail(&self.label, &doing, e))?;
        channel.exec(cmd).map_err(|e| ssh_fail(&self.label, &doing, e))?;
        let out = collect(channel, &self.label, &doing);
        log_exit(&self.label, &out, started);
        out
    }

    /// Runs `cmd` with `stdin` written to it, waits (up to `ready_within`) until its stdout prints a line
    /// starting with `ready`, and calls `during` with that line while the command keeps running. Then it closes
    /// the command's stdin (the signal to finish) and returns `during`'s result with the command's output. For
    /// short-lived helpers on the host, such as the audit's UDP responder.
    pub fn exec_while<T>(&self, cmd: &str, stdin: &[u8], ready: &str, ready_within: Duration, during: impl FnOnce(&str) -> T) -> Result<(T, ExecOutput)> {
        let doing = format!("running `{}`", short(cmd));
        let started = log_command(&self.label, cmd);
        let mut channel = self.session.channel_session().map_err(|e| ssh_fail(&self.label, &doing, e))?;
        channel.exec(cmd).map_err(|e| ssh_fail(&self.label, &doing, e))?;
        channel.write_all(stdin).map_err(|e| io_fail(&self.label, &doing, e))?;
        channel.flush().map_err(|e| io_fail(&self.label, &doing, e))?;
        let deadline = Instant::now() + ready_within;
        let mut seen = Vec::new();
        let line = loop {
            if let Some(line) = String::from_utf8_lossy(&seen).lines().find(|l| l.starts_with(ready)) {
                break line.to_string();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() || channel.eof() {
                let out = collect(channel, &self.label, &doing)?;
                let told = format!("{}{}", String::from_utf8_lossy(&seen), out.stdout);
                return Err(UserError::failed(format!("{doing} on {} did not get ready", self.label))
                    .caused_by(anyhow::anyhow!("{}", tail_lines(&format!("{told}{}", out.stderr), STDERR_TAIL_LINES)))
                    .into());
            }
            self.session.set_timeout(left.as_millis().clamp(1, u128::from(u32::MAX)) as u32);
            let mut buf = [0u8; 4096];
            match channel.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::TimedOut || e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    self.session.set_timeout(self.io_timeout_ms);
                    return Err(io_fail(&self.label, &doing, e));
                }
            }
        };
        self.session.set_timeout(self.io_timeout_ms);
        let result = during(&line);
        let out = collect(channel, &self.label, &doing);
        log_exit(&self.label, &out, started);
        Ok((result, out?))
    }

    /// Like [`Remote::exec`], but a non-zero exit (or a signal) is an error showing the tail of stderr.
    pub fn exec_checked(&self, cmd: &str) -> Result<ExecOutput> {
        let out = self.exec(cmd)?;
        if out.success() {
            return Ok(out);
        }
        Err(command_failed(&self.label, &format!("`{}`", short(cmd)), &out))
    }

    /// Uploads a local file to `remote_path` with permissions `mode` (e.g. `0o755`), atomically and checksummed.
    ///
    /// If the host already has the same content (sha256), nothing is sent and only `mode` is applied. Otherwise
    /// the content goes to a temporary file next to the target, its sha256 is checked on the host, and it is
    /// renamed over the target, so the target is never seen half-written. Parent directories are created.
    pub fn upload(&self, local: &Path, remote_path: &str, mode: i32) -> Result<UploadOutcome> {
        let read_err = |e: io::Error| -> anyhow::Error {
            UserError::failed(format!("cannot read `{}` to upload it to {}", local.display(), self.label))
                .caused_by(e)
                .into()
        };
        let hash = || -> Result<String> {
            let mut file = File::open(local).map_err(read_err)?;
            let mut hasher = Sha256::new();
            let mut buf = vec![0u8; UPLOAD_CHUNK];
            loop {
                match file.read(&mut buf).map_err(read_err)? {
                    0 => return Ok(hex(&hasher.finalize())),
                    n => hasher.update(&buf[..n]),
                }
            }
        };
        let open = || -> Result<Box<dyn Read>> { Ok(Box::new(File::open(local).map_err(read_err)?)) };
        self.upload_from(&hash, &open, remote_path, mode)
    }

    /// Uploads `data` (a rendered config, say) to `remote_path`, with the same semantics as [`Remote::upload`].
    pub fn upload_bytes(&self, data: &[u8], remote_path: &str, mode: i32) -> Result<UploadOutcome> {
        let hash = || Ok(hex(&Sha256::digest(data)));
        let open = || -> Result<Box<dyn Read + '_>> { Ok(Box::new(data)) };
        self.upload_from(&hash, &open, remote_path, mode)
    }

    /// The whole upload runs in ONE remote shell (every extra command costs a channel, a shell start and round
    /// trips; as root on the test bed each shell start alone was 0.25 s). The script reports the sha256 the
    /// host has, we answer `skip` or `send <sha256>` and stream the data on stdin into a temporary file, whose
    /// sha256 the host checks before renaming it into place.
    fn upload_from<'a>(
        &self,
        hash: &dyn Fn() -> Result<String>,
        open: &dyn Fn() -> Result<Box<dyn Read + 'a>>,
        remote_path: &str,
        mode: i32,
    ) -> Result<UploadOutcome> {
        let label = &self.label;
        let fail = |e: anyhow::Error| upload_error(label, remote_path, e);
        let (dir, name) = split_remote_path(remote_path).ok_or_else(|| {
            UserError::failed(format!("cannot upload to `{remote_path}` on {label}: not a file path"))
        })?;
        // What an upload to the same target cut short (its connection dropped) left behind.
        let stale = format!("{}/{}*", shell_quote(dir), shell_quote(&format!(".{name}.sfuctl-tmp-")));
        let tmp = match dir {
            "/" => format!("/.{name}.sfuctl-tmp-{}", random_hex()),
            _ => format!("{dir}/.{name}.sfuctl-tmp-{}", random_hex()),
        };
        // `openssl dgst` hashes about 4x faster than coreutils' sha256sum where the CPU has SHA extensions
        // (0.06 s against 0.27 s for 50 MB here); sha256sum is the fallback.
        let script = format!(
            "if command -v openssl >/dev/null 2>&1; then sha() {{ openssl dgst -sha256 -r; }}\n\
             elif command -v sha256sum >/dev/null 2>&1; then sha() {{ sha256sum; }}\n\
             else echo 'neither openssl nor sha256sum is installed on the host' >&2; exit 127; fi\n\
             mkdir -p -- {dir} || exit 1\n\
             rm -f -- {stale}\n\
             if [ -f {target} ]; then h=$(sha < {target} | cut -c1-64); else h=none; fi\n\
             echo \"sfuctl-have $h\"\n\
             IFS= read -r answer || exit 1\n\
             case $answer in\n\
             skip) exec chmod {mode:o} -- {target} ;;\n\
             'send '*) want=${{answer#send }} ;;\n\
             *) echo 'unexpected answer from sfuctl' >&2; exit 2 ;;\n\
             esac\n\
             if ! cat > {tmp}; then rm -f -- {tmp}; exit 1; fi\n\
             got=$(sha < {tmp} | cut -c1-64)\n\
             if [ \"$got\" = \"$want\" ]; then chmod {mode:o} -- {tmp} && mv -f -- {tmp} {target} && echo sfuctl-done; exit; fi\n\
             rm -f -- {tmp}\n\
             echo \"checksum mismatch after upload: sent $want, the host has $got\" >&2\n\
             exit 3\n",
            dir = shell_quote(dir),
            target = shell_quote(remote_path),
            tmp = shell_quote(&tmp),
            mode = mode & 0o7777,
        );
        let doing = format!("uploading to `{remote_path}`");
        let started = Instant::now();
        let mut channel = self.session.channel_session().map_err(|e| ssh_fail(label, &doing, e))?;
        channel.exec(&script).map_err(|e| ssh_fail(label, &doing, e))?;

        // Hash while the host starts its shell and hashes its own copy.
        let sha256 = hash()?;
        let have = read_line(&mut channel).map_err(|e| io_fail(label, &doing, e))?;
        let Some(have) = have.strip_prefix("sfuctl-have ") else {
            return Err(fail(script_failed(label, "the upload script", channel)));
        };
        if have.trim() == sha256 {
            channel.write_all(b"skip\n").map_err(|e| io_fail(label, &doing, e))?;
            let out = collect(channel, label, &doing)?;
            if !out.success() {
                return Err(fail(command_failed(label, &format!("`chmod {:o}`", mode & 0o7777), &out)));
            }
            log_upload(label, remote_path, mode, None, started);
            return Ok(UploadOutcome { bytes_sent: 0, skipped: true, sha256 });
        }

        channel.write_all(format!("send {sha256}\n").as_bytes()).map_err(|e| io_fail(label, &doing, e))?;
        let mut reader = open()?;
        let mut buf = vec![0u8; UPLOAD_CHUNK];
        let mut sent = 0u64;
        loop {
            let n = reader
                .read(&mut buf)
                .map_err(|e| fail(UserError::failed("cannot read the data to upload").caused_by(e).into()))?;
            if n == 0 {
                break;
            }
            if let Err(e) = channel.write_all(&buf[..n]) {
                // The host may have stopped reading because the script failed: its stderr says why.
                return Err(fail(match collect(channel, label, &doing) {
                    Ok(out) if !out.success() => command_failed(label, "the upload script", &out),
                    _ => io_fail(label, &doing, e),
                }));
            }
            sent += n as u64;
        }
        let out = collect(channel, label, &doing)?;
        if !out.success() || !out.stdout.contains("sfuctl-done") {
            return Err(fail(command_failed(label, "the upload script", &out)));
        }
        log_upload(label, remote_path, mode, Some(sent), started);
        Ok(UploadOutcome { bytes_sent: sent, skipped: false, sha256 })
    }
}

/// Logs a command about to run (`-v`: its first line; `-vv`: all of it) and returns when it started.
fn log_command(label: &str, cmd: &str) -> Instant {
    if log::enabled(Area::Ssh, Level::Debug) {
        log::log(Area::Ssh, Level::Debug, || format!("{label}: run\n{}", cmd.trim_end()));
    } else {
        log::log(Area::Ssh, Level::Info, || format!("{label}: run {}", log::one_line(cmd)));
    }
    Instant::now()
}

/// Logs how a command ended (`-v`).
fn log_exit(label: &str, out: &Result<ExecOutput>, started: Instant) {
    log::log(Area::Ssh, Level::Info, || {
        let took = started.elapsed().as_millis();
        match out {
            Ok(o) => match &o.signal {
                Some(signal) => format!("{label}: killed by signal {signal} ({took} ms)"),
                None => format!("{label}: exit {} ({took} ms)", o.status),
            },
            Err(e) => format!("{label}: failed: {e} ({took} ms)"),
        }
    });
}

/// Logs an upload: `-v` where to; `-vv` also the mode and how much was sent (nothing when the host had the same
/// content).
fn log_upload(label: &str, remote_path: &str, mode: i32, sent: Option<u64>, started: Instant) {
    let took = started.elapsed().as_millis();
    if log::enabled(Area::Ssh, Level::Debug) {
        let what = match sent {
            Some(bytes) => format!("{bytes} bytes sent, sha256 checked on the host"),
            None => "unchanged (same sha256), not sent".to_string(),
        };
        log::log(Area::Ssh, Level::Debug, || format!("{label}: upload {remote_path} (mode {:o}): {what} ({took} ms)", mode & 0o7777));
    } else {
        log::log(Area::Ssh, Level::Info, || format!("{label}: upload {remote_path} ({took} ms)"));
    }
}

/// Reads one line from a channel's stdout without reading past it (the script prints nothing else until
/// answered). Returns what was read, without the newline, possibly short if the channel ended.
fn read_line(channel: &mut ssh2::Channel) -> io::Result<String> {
    let mut line = Vec::new();
    let mut buf = [0u8; 256];
    while !line.ends_with(b"\n") {
        match channel.read(&mut buf)? {
            0 => break,
            n => line.extend_from_slice(&buf[..n]),
        }
    }
    Ok(String::from_utf8_lossy(&line).trim_end_matches('\n').to_string())
}

/// Sends EOF (a command reading stdin ends instead of waiting), collects the rest of the channel's output and
/// its exit status.
fn collect(mut channel: ssh2::Channel, label: &str, doing: &str) -> Result<ExecOutput> {
    channel.send_eof().map_err(|e| ssh_fail(label, doing, e))?;
    // Reading stdout to the end before stderr cannot deadlock: libssh2 queues stderr packets and keeps
    // re-opening the window while stdout is read.
    let mut stdout = Vec::new();
    channel.read_to_end(&mut stdout).map_err(|e| io_fail(label, doing, e))?;
    let mut stderr = Vec::new();
    channel.stderr().read_to_end(&mut stderr).map_err(|e| io_fail(label, doing, e))?;
    channel.wait_close().map_err(|e| ssh_fail(label, doing, e))?;
    let signal = channel.exit_signal().ok().and_then(|s| s.exit_signal);
    let status = if signal.is_some() { -1 } else { channel.exit_status().map_err(|e| ssh_fail(label, doing, e))? };
    Ok(ExecOutput {
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        signal,
    })
}

fn script_failed(label: &str, what: &str, channel: ssh2::Channel) -> anyhow::Error {
    match collect(channel, label, &format!("running {what}")) {
        Ok(out) if !out.success() => command_failed(label, what, &out),
        Ok(out) => UserError::failed(format!("{what} on {label} answered unexpectedly"))
            .caused_by(anyhow::anyhow!("{}", tail_lines(&out.stdout, STDERR_TAIL_LINES)))
            .into(),
        Err(e) => e,
    }
}

/// Attempts at an upload whose connection was lost, each after logging in again (to the same host key).
const UPLOAD_ATTEMPTS: u32 = 3;

/// Cloneable async handle to a [`Remote`]: every call runs on tokio's blocking pool, one at a time per host.
#[derive(Clone, Debug)]
pub struct RemoteHandle {
    inner: Arc<Mutex<Remote>>,
    label: Arc<str>,
    fingerprint: Arc<str>,
    /// How to log in again after the connection was lost, the host key pinned to the one first seen; `None` for
    /// a handle made from a connected [`Remote`] (it cannot reconnect).
    again: Option<Arc<SshTarget>>,
}

/// Async [`Remote::connect`]: returns a [`RemoteHandle`] and the host key fingerprint.
pub async fn connect_async(target: SshTarget) -> Result<(RemoteHandle, String)> {
    let label = target.label();
    let mut again = target.clone();
    let (remote, fp) = blocking(&label, move || Remote::connect(&target)).await?;
    again.expected_host_key = Some(fp.clone());
    Ok((RemoteHandle { again: Some(Arc::new(again)), ..RemoteHandle::from(remote) }, fp))
}

impl From<Remote> for RemoteHandle {
    fn from(remote: Remote) -> Self {
        Self {
            label: remote.label.as_str().into(),
            fingerprint: remote.fingerprint.as_str().into(),
            inner: Arc::new(Mutex::new(remote)),
            again: None,
        }
    }
}

impl RemoteHandle {
    /// The host as messages name it: `user@addr:port`.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The host key fingerprint seen at connect time (`SHA256:…`).
    pub fn host_key_fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Async [`Remote::host_public_key`].
    pub async fn host_public_key(&self) -> Result<HostPublicKey> {
        self.run(|r| r.host_public_key()).await
    }

    /// Async [`Remote::exec`].
    pub async fn exec(&self, cmd: impl Into<String>) -> Result<ExecOutput> {
        let cmd = cmd.into();
        self.run(move |r| r.exec(&cmd)).await
    }

    /// Async [`Remote::exec_checked`].
    pub async fn exec_checked(&self, cmd: impl Into<String>) -> Result<ExecOutput> {
        let cmd = cmd.into();
        self.run(move |r| r.exec_checked(&cmd)).await
    }

    /// Async [`Remote::upload`]; a connection lost during it is made again and the upload sent again (see
    /// [`RemoteHandle::upload_retrying`]).
    pub async fn upload(
        &self,
        local: impl Into<PathBuf>,
        remote_path: impl Into<String>,
        mode: i32,
    ) -> Result<UploadOutcome> {
        let (local, remote_path) = (local.into(), remote_path.into());
        self.upload_retrying(move |r| r.upload(&local, &remote_path, mode)).await
    }

    /// Async [`Remote::upload_bytes`].
    pub async fn upload_bytes(
        &self,
        data: impl Into<Vec<u8>>,
        remote_path: impl Into<String>,
        mode: i32,
    ) -> Result<UploadOutcome> {
        let (data, remote_path) = (data.into(), remote_path.into());
        self.upload_retrying(move |r| r.upload_bytes(&data, &remote_path, mode)).await
    }

    /// Runs an upload; when it fails and the session no longer answers (the connection dropped mid-upload), logs
    /// in again, to the host key seen first, and sends it again, up to [`UPLOAD_ATTEMPTS`] in all. An upload
    /// is atomic and its sha256 checked on the host, so an interrupted one left the target as it was. A failure
    /// on a live session (a checksum mismatch, a full disk) is returned at once.
    async fn upload_retrying<F>(&self, upload: F) -> Result<UploadOutcome>
    where
        F: Fn(&Remote) -> Result<UploadOutcome> + Send + Sync + 'static,
    {
        let upload = Arc::new(upload);
        let mut attempt = 1;
        loop {
            let once = Arc::clone(&upload);
            match self.run(move |r| once(r)).await {
                Ok(outcome) => return Ok(outcome),
                Err(e) if attempt < UPLOAD_ATTEMPTS && self.again.is_some() && !self.answers().await => {
                    eprintln!("{}: the connection dropped during an upload; logging in again to send it again", self.label);
                    if let Err(again) = self.reconnect().await {
                        return Err(e.context(format!("logging in again failed too: {:#}", again)));
                    }
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Whether the session still runs a command.
    async fn answers(&self) -> bool {
        self.run(|r| r.exec("true")).await.is_ok_and(|out| out.success())
    }

    /// Replaces the session with a new login to the same host and host key.
    async fn reconnect(&self) -> Result<()> {
        let Some(target) = self.again.clone() else { return Ok(()) };
        let inner = Arc::clone(&self.inner);
        blocking(&self.label, move || {
            let (fresh, _) = Remote::connect(&target)?;
            *inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
            Ok(())
        })
        .await
    }

    /// Runs any blocking operation on the session, e.g. several commands in a row without other callers in
    /// between.
    pub async fn run<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Remote) -> Result<T> + Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        blocking(&self.label, move || {
            // A panic in an earlier call poisons the lock, but the session itself is still usable.
            let remote = inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&remote)
        })
        .await
    }
}

async fn blocking<T: Send + 'static>(label: &str, f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| UserError::failed(format!("SSH worker for {label} stopped unexpectedly")).caused_by(e))?
}

/// A host's public key in OpenSSH's terms: the key type named inside the blob (`ssh-ed25519`,
/// `ecdsa-sha2-nistp256`, `ssh-rsa`) and the blob itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostPublicKey {
    /// The key type, as the first field of the blob names it.
    pub key_type: String,
    /// The SSH wire-format key blob.
    pub blob: Vec<u8>,
}

impl HostPublicKey {
    /// Reads the key type from a wire-format blob (a length-prefixed name comes first); `None` when malformed.
    pub fn from_blob(blob: &[u8]) -> Option<Self> {
        let len = u32::from_be_bytes(blob.get(..4)?.try_into().ok()?) as usize;
        let name = std::str::from_utf8(blob.get(4..4usize.checked_add(len)?)?).ok()?;
        let printable = !name.is_empty() && name.chars().all(|c| c.is_ascii_graphic());
        printable.then(|| Self { key_type: name.to_string(), blob: blob.to_vec() })
    }

    /// The key's fingerprint, as `ssh-keygen -lf` prints it (`SHA256:…`).
    pub fn fingerprint(&self) -> String {
        fingerprint_sha256(&Sha256::digest(&self.blob))
    }

    /// One known_hosts line for `host`: `<host> <type> <base64 blob>`.
    pub fn known_hosts_line(&self, host: &str) -> String {
        format!("{host} {} {}\n", self.key_type, base64::engine::general_purpose::STANDARD.encode(&self.blob))
    }

    /// The host key algorithms OpenSSH may accept for this key (an RSA key is signed with SHA-2 only).
    pub fn algorithms(&self) -> String {
        match self.key_type.as_str() {
            "ssh-rsa" => "rsa-sha2-512,rsa-sha2-256".into(),
            other => other.into(),
        }
    }
}

/// Formats a raw SHA-256 host key hash the way `ssh-keygen -lf` does: `SHA256:` + unpadded standard base64.
pub fn fingerprint_sha256(hash: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(hash))
}

/// Quotes `s` for a POSIX shell: safe characters pass as they are, anything else goes in single quotes (with
/// embedded single quotes written as `'\''`). The empty string becomes `''`.
pub fn shell_quote(s: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !s.is_empty() && s.chars().all(safe) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// True if the SSH private key at `path` is protected by a passphrase (OpenSSH or PEM format), so a caller
/// can ask for it before connecting. The key's contents are never shown in errors.
pub fn key_needs_passphrase(path: &Path) -> Result<bool> {
    Ok(KeyFile::inspect(path, "the host")?.encrypted)
}

/// Compares fingerprints, tolerating a missing `SHA256:` prefix and base64 padding in the pinned value.
fn fingerprints_equal(pinned: &str, offered: &str) -> bool {
    let norm = |s: &str| s.trim().trim_start_matches("SHA256:").trim_end_matches('=').to_string();
    norm(pinned) == norm(offered)
}

/// A private key file we looked at without keeping its contents.
struct KeyFile {
    path: PathBuf,
    encrypted: bool,
}

impl KeyFile {
    fn inspect(path: &Path, label: &str) -> Result<KeyFile> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            UserError::failed(format!("cannot read SSH private key `{}` to log in to {label}", path.display()))
                .hint("check the key path in the spec; the file must be readable by you")
                .caused_by(e)
        })?;
        Ok(KeyFile { path: path.to_path_buf(), encrypted: key_text_is_encrypted(&text) })
    }
}

/// Whether a private key text is passphrase-protected. OpenSSH keys name their cipher in the binary header
/// (`none` when unencrypted); PEM keys say `ENCRYPTED`.
fn key_text_is_encrypted(text: &str) -> bool {
    const OPENSSH_BEGIN: &str = "-----BEGIN OPENSSH PRIVATE KEY-----";
    if let Some(start) = text.find(OPENSSH_BEGIN) {
        let body: String = text[start + OPENSSH_BEGIN.len()..]
            .lines()
            .take_while(|l| !l.starts_with("-----END"))
            .collect::<Vec<_>>()
            .concat();
        let Ok(blob) = base64::engine::general_purpose::STANDARD.decode(body.trim()) else {
            return false;
        };
        let magic = b"openssh-key-v1\0";
        if !blob.starts_with(magic) || blob.len() < magic.len() + 4 {
            return false;
        }
        let rest = &blob[magic.len()..];
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        return rest.get(4..4 + len).is_some_and(|cipher| cipher != b"none");
    }
    text.contains("BEGIN ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED")
}

fn tcp_connect(target: &SshTarget, label: &str, started: Instant) -> Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (target.address.as_str(), target.port)
        .to_socket_addrs()
        .map_err(|e| {
            UserError::failed(format!("cannot resolve the address of {label}"))
                .hint("check the host address (a typo, or DNS not reachable)")
                .caused_by(e)
        })?
        .collect();
    let mut last: Option<io::Error> = None;
    for addr in &addrs {
        let left = target.connect_timeout.saturating_sub(started.elapsed());
        if left.is_zero() {
            break;
        }
        match TcpStream::connect_timeout(addr, left) {
            Ok(tcp) => {
                let _ = tcp.set_nodelay(true);
                return Ok(tcp);
            }
            Err(e) => last = Some(e),
        }
    }
    let timeout = secs(target.connect_timeout);
    let err = match last {
        None => UserError::failed(format!("cannot connect to {label}: timed out after {timeout}")),
        Some(e) => {
            let err = match e.kind() {
                io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock => {
                    UserError::failed(format!("cannot connect to {label}: timed out after {timeout}")).hint(
                        "the host did not answer: check the address, that the host is running, and that a firewall \
                         (cloud or host) allows TCP to the SSH port from here",
                    )
                }
                io::ErrorKind::ConnectionRefused => UserError::failed(format!(
                    "cannot connect to {label}: connection refused"
                ))
                .hint("the host is up but nothing listens on that port: check the SSH port, and that sshd is running"),
                io::ErrorKind::HostUnreachable | io::ErrorKind::NetworkUnreachable => {
                    UserError::failed(format!("cannot connect to {label}: no route to the host"))
                        .hint("check the address; the host may be down or not on a network reachable from here")
                }
                _ => UserError::failed(format!("cannot connect to {label}")),
            };
            err.caused_by(e)
        }
    };
    Err(err.into())
}

fn authenticate(session: &Session, target: &SshTarget, key: Option<&KeyFile>, label: &str) -> Result<()> {
    let user = &target.user;
    if let Some(key) = key {
        let shown = key.path.display();
        return match session.userauth_pubkey_file(user, None, &key.path, target.passphrase.as_deref()) {
            Ok(()) if session.authenticated() => Ok(()),
            Ok(()) => Err(auth_rejected(label, &format!("key `{shown}`"), &key.path)),
            Err(e) if is_timeout(&e) => Err(UserError::failed(format!(
                "logging in to {label} timed out after {}",
                secs(target.connect_timeout)
            ))
            .caused_by(e)
            .into()),
            Err(e) if matches!(e.code(), ErrorCode::Session(LIBSSH2_ERROR_FILE)) => {
                // libssh2 says "Unsupported private key format" both for a wrong passphrase and for key types it
                // cannot read; our own look at the file tells the two apart.
                // libssh2's own text would contradict the message, so it is not kept as the cause there.
                if key.encrypted {
                    return Err(UserError::failed(format!(
                        "cannot log in to {label}: the passphrase for SSH key `{shown}` is wrong"
                    ))
                    .hint(format!("check the passphrase with `ssh-keygen -y -f {shown}`"))
                    .into());
                }
                Err(UserError::failed(format!(
                    "cannot log in to {label}: SSH key `{shown}` is in a format sfuctl cannot read"
                ))
                .hint("use an OpenSSH or PEM ed25519, ecdsa or RSA key (`ssh-keygen -t ed25519`)")
                .caused_by(anyhow::anyhow!("libssh2: {}", e.message()))
                .into())
            }
            Err(e)
                if matches!(
                    e.code(),
                    ErrorCode::Session(LIBSSH2_ERROR_AUTHENTICATION_FAILED | LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED)
                ) =>
            {
                Err(auth_rejected(label, &format!("key `{shown}`"), &key.path))
            }
            Err(e) => {
                Err(UserError::failed(format!("cannot log in to {label} with SSH key `{shown}`")).caused_by(e).into())
            }
        };
    }

    if std::env::var_os("SSH_AUTH_SOCK").is_none_or(|s| s.is_empty()) {
        return Err(UserError::failed(format!("cannot log in to {label}: no SSH key given and no ssh-agent running"))
            .hint("set `ssh.private_key` in the spec, or start ssh-agent and `ssh-add` your key (SSH_AUTH_SOCK is not set)")
            .into());
    }
    let agent_err = |e: ssh2::Error| -> anyhow::Error {
        UserError::failed(format!("cannot use ssh-agent to log in to {label}")).caused_by(e).into()
    };
    let mut agent = session.agent().map_err(agent_err)?;
    agent.connect().map_err(agent_err)?;
    agent.list_identities().map_err(agent_err)?;
    let identities = agent.identities().map_err(agent_err)?;
    if identities.is_empty() {
        return Err(UserError::failed(format!("cannot log in to {label}: ssh-agent holds no keys"))
            .hint("add your key with `ssh-add <key file>`, or set `ssh.private_key` in the spec")
            .into());
    }
    let mut tried = Vec::new();
    for id in &identities {
        tried.push(if id.comment().is_empty() { "(no comment)".to_string() } else { id.comment().to_string() });
        if agent.userauth(user, id).is_ok() && session.authenticated() {
            let _ = agent.disconnect();
            return Ok(());
        }
    }
    let _ = agent.disconnect();
    Err(UserError::failed(format!("cannot log in to {label}: the host accepted none of the ssh-agent's keys"))
        .hint(format!(
            "tried ssh-agent keys: {}. Add the right public key to ~{user}/.ssh/authorized_keys on the host, or set \
             the SSH private key in the spec",
            tried.join(", ")
        ))
        .into())
}

fn auth_rejected(label: &str, what: &str, key: &Path) -> anyhow::Error {
    let user = label.split('@').next().unwrap_or("root");
    UserError::failed(format!("cannot log in to {label}: the host rejected {what}"))
        .hint(format!(
            "tried SSH key `{}` (not ssh-agent). Check that its public key (`ssh-keygen -y -f {}`) is in \
             ~{user}/.ssh/authorized_keys on the host, and that the user is right",
            key.display(),
            key.display()
        ))
        .into()
}

/// `what` (a quoted command, or a description) exited non-zero: the error shows the tail of its stderr.
fn command_failed(label: &str, what: &str, out: &ExecOutput) -> anyhow::Error {
    let how = match &out.signal {
        Some(sig) => format!("was killed by signal {sig}"),
        None => format!("exited with status {}", out.status),
    };
    let tail = tail_lines(&out.stderr, STDERR_TAIL_LINES);
    let err = UserError::failed(format!("{what} failed on {label}: {how}"));
    if tail.is_empty() { err.into() } else { err.caused_by(anyhow::anyhow!("{tail}")).into() }
}

fn upload_error(label: &str, remote_path: &str, cause: anyhow::Error) -> anyhow::Error {
    UserError::failed(format!("cannot upload to `{remote_path}` on {label}")).caused_by(cause).into()
}

const TIMEOUT_HINT: &str =
    "the host stayed silent longer than the I/O timeout; raise it if the step is legitimately slow";

/// An SSH failure while `doing` something on the host.
fn ssh_fail(label: &str, doing: &str, e: ssh2::Error) -> anyhow::Error {
    let err = UserError::failed(format!("SSH failed on {label} while {doing}"));
    if is_timeout(&e) { err.hint(TIMEOUT_HINT) } else { err }.caused_by(e).into()
}

/// An I/O failure on a channel while `doing` something on the host (ssh2 maps its timeout to `TimedOut`).
fn io_fail(label: &str, doing: &str, e: io::Error) -> anyhow::Error {
    let err = UserError::failed(format!("SSH failed on {label} while {doing}"));
    if e.kind() == io::ErrorKind::TimedOut { err.hint(TIMEOUT_HINT) } else { err }.caused_by(e).into()
}

fn is_timeout(e: &ssh2::Error) -> bool {
    matches!(e.code(), ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT))
}

/// `dir` and file name of a remote file path; `None` for paths that name no file (empty, ending in `/`).
fn split_remote_path(path: &str) -> Option<(&str, &str)> {
    if path.is_empty() || path.ends_with('/') {
        return None;
    }
    let (dir, name) = match path.rfind('/') {
        Some(0) => ("/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (".", path),
    };
    (!matches!(name, "." | "..")).then_some((dir, name))
}

fn tail_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A command shortened for messages (uploads send long scripts).
fn short(cmd: &str) -> String {
    let one_line = cmd.split_whitespace().collect::<Vec<_>>().join(" ");
    if one_line.chars().count() > 120 {
        format!("{}…", one_line.chars().take(117).collect::<String>())
    } else {
        one_line
    }
}

fn random_hex() -> String {
    let mut b = [0u8; 6];
    if getrandom::fill(&mut b).is_err() {
        // Uniqueness only needs to hold against our own concurrent uploads; time and pid are enough then.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        return format!("{:x}{:x}", t, std::process::id());
    }
    hex(&b)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn millis(d: Duration) -> u32 {
    d.as_millis().clamp(1, u32::MAX as u128) as u32
}

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprint_is_ssh_keygen_format() {
        // sha256 of nothing, as a host key hash would be: ssh-keygen drops base64 padding.
        let hash = Sha256::digest(b"");
        assert_eq!(fingerprint_sha256(&hash), "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU");
    }

    #[test]
    fn fingerprint_comparison_tolerates_prefix_and_padding() {
        let fp = "SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU";
        assert!(fingerprints_equal(fp, fp));
        assert!(fingerprints_equal("47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=", fp));
        assert!(!fingerprints_equal("SHA256:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFV", fp));
    }

    #[test]
    fn shell_quote_leaves_safe_words_and_quotes_the_rest() {
        assert_eq!(shell_quote("/opt/sfu/bin-1.2_x"), "/opt/sfu/bin-1.2_x");
        assert_eq!(shell_quote(""), "''");
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(shell_quote("$(rm -rf /)"), "'$(rm -rf /)'");
        assert_eq!(shell_quote("a\nb"), "'a\nb'");
    }

    #[test]
    fn shell_quote_round_trips_through_sh() {
        let nasty = "we'ird $HOME `x` \"q\" \\ *; \n end";
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf %s {}", shell_quote(nasty)))
            .output()
            .unwrap();
        assert_eq!(String::from_utf8(out.stdout).unwrap(), nasty);
    }

    #[test]
    fn remote_paths_split_into_dir_and_name() {
        assert_eq!(split_remote_path("/etc/janus/janus.jcfg"), Some(("/etc/janus", "janus.jcfg")));
        assert_eq!(split_remote_path("/x"), Some(("/", "x")));
        assert_eq!(split_remote_path("rel"), Some((".", "rel")));
        assert_eq!(split_remote_path("/etc/"), None);
        assert_eq!(split_remote_path(""), None);
        assert_eq!(split_remote_path("/a/.."), None);
    }

    #[test]
    fn labels_name_user_address_and_port() {
        assert_eq!(SshTarget::new("10.0.0.1", 22, "root").label(), "root@10.0.0.1:22");
        assert_eq!(SshTarget::new("2001:db8::1", 2222, "ubuntu").label(), "ubuntu@[2001:db8::1]:2222");
    }

    #[test]
    fn debug_never_shows_the_passphrase() {
        let mut t = SshTarget::new("h", 22, "u");
        t.passphrase = Some("hunter2".into());
        assert!(!format!("{t:?}").contains("hunter2"));
    }

    #[test]
    fn encrypted_keys_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        for (pass, want) in [("", false), ("secret pass", true)] {
            let key = dir.path().join(format!("k{}", pass.len()));
            let ok = std::process::Command::new("ssh-keygen")
                .args(["-q", "-t", "ed25519", "-N", pass, "-f"])
                .arg(&key)
                .status()
                .unwrap()
                .success();
            assert!(ok);
            assert_eq!(key_needs_passphrase(&key).unwrap(), want);
        }
        assert!(key_text_is_encrypted("-----BEGIN RSA PRIVATE KEY-----\nProc-Type: 4,ENCRYPTED\n"));
        assert!(!key_text_is_encrypted("-----BEGIN RSA PRIVATE KEY-----\nMIIE\n"));
    }

    #[test]
    fn stderr_tail_keeps_the_last_lines() {
        let text: String = (1..=30).map(|i| format!("line {i}\n")).collect();
        let tail = tail_lines(&text, 3);
        assert_eq!(tail, "line 28\nline 29\nline 30");
    }
}
