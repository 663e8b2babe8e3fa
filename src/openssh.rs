//! Handing a host to the OpenSSH client (`sfuctl ssh`, `sfuctl logs -f`) with the pinned host key enforced.
//!
//! sfuctl first connects itself, checking the host key against the pin as every command does (and pinning it at
//! first contact); then it writes that very key into a known_hosts file of its own and runs `ssh` with
//! `StrictHostKeyChecking=yes` against that file only, under a `HostKeyAlias` naming the host. A host that
//! offers OpenSSH any other key is refused by OpenSSH itself. Checking is never turned off.

use std::path::{Path, PathBuf};
use std::process::ExitStatus;

use anyhow::Result;

use crate::deploy::{Deployment, Session};
use crate::error::UserError;
use crate::remote::HostPublicKey;
use crate::render::{HostTarget, ssh_user};

/// One host, ready for the OpenSSH client: its verified key in a known_hosts file that lives as long as this.
pub struct OpenSsh {
    known_hosts: tempfile::NamedTempFile,
    alias: String,
    algorithms: String,
    address: String,
    port: u16,
    user: String,
    private_key: Option<PathBuf>,
}

impl OpenSsh {
    /// Writes a known_hosts file holding only `key`, under `alias` (e.g. `sfuctl.<deployment>.<host>`): the name
    /// OpenSSH checks the key under, whatever the address (a cloud server is pinned by its ID, not its address).
    pub fn new(key: &HostPublicKey, alias: &str, address: &str, port: u16, user: &str, private_key: Option<&Path>) -> Result<Self> {
        use std::io::Write;
        let fail = |e: std::io::Error| UserError::failed("cannot write a known_hosts file for ssh").caused_by(e);
        let mut known_hosts = tempfile::Builder::new().prefix("sfuctl-known_hosts-").tempfile().map_err(fail)?;
        known_hosts.write_all(key.known_hosts_line(alias).as_bytes()).map_err(fail)?;
        known_hosts.flush().map_err(fail)?;
        Ok(Self {
            known_hosts,
            alias: alias.to_string(),
            algorithms: key.algorithms(),
            address: address.to_string(),
            port,
            user: user.to_string(),
            private_key: private_key.map(Path::to_path_buf),
        })
    }

    /// The known_hosts file OpenSSH is given.
    pub fn known_hosts(&self) -> &Path {
        self.known_hosts.path()
    }

    /// The `ssh` command line: options first (the command line outranks any ~/.ssh/config), then `--`, the host
    /// and `remote_command` (OpenSSH joins its words with spaces for the login shell; none opens a shell).
    pub fn args(&self, remote_command: &[String], tty: bool) -> Vec<String> {
        let option = |o: &str| ["-o".to_string(), o.to_string()];
        let mut args = Vec::new();
        if tty {
            args.push("-t".to_string());
        }
        for o in [
            "StrictHostKeyChecking=yes".to_string(),
            format!("UserKnownHostsFile={}", self.known_hosts().display()),
            "GlobalKnownHostsFile=/dev/null".to_string(),
            format!("HostKeyAlias={}", self.alias),
            format!("HostKeyAlgorithms={}", self.algorithms),
            "CheckHostIP=no".to_string(),
            "UpdateHostKeys=no".to_string(),
            // Nothing but that file may vouch for a key: not DNS (SSHFP), not a command from ~/.ssh/config.
            "VerifyHostKeyDNS=no".to_string(),
            "KnownHostsCommand=none".to_string(),
        ] {
            args.extend(option(&o));
        }
        if let Some(key) = &self.private_key {
            args.push("-i".into());
            args.push(key.display().to_string());
            args.extend(option("IdentitiesOnly=yes"));
        }
        args.extend(["-p".to_string(), self.port.to_string(), "-l".to_string(), self.user.clone(), "--".to_string(), self.address.clone()]);
        args.extend(remote_command.iter().cloned());
        args
    }

    /// Runs `ssh` with this terminal (an interactive shell when `remote_command` is empty) and returns how it
    /// ended. Ctrl-C reaches `ssh` (it shares the terminal's process group); sfuctl waits for it and cleans up.
    /// With `tty` and a terminal, the remote command gets one too (so Ctrl-C also ends it on the host).
    pub async fn run(&self, remote_command: &[String], tty: bool) -> Result<ExitStatus> {
        use std::io::IsTerminal;
        let tty = tty && std::io::stdin().is_terminal();
        let mut child = tokio::process::Command::new("ssh").args(self.args(remote_command, tty)).spawn().map_err(|e| {
            let err = UserError::failed("cannot run `ssh`").caused_by(e);
            err.hint("install the OpenSSH client (`apt-get install openssh-client`)")
        })?;
        // While ssh runs, Ctrl-C is ssh's to handle: sfuctl outlives it, so the known_hosts file is removed.
        let ignore_interrupts = tokio::spawn(async {
            while tokio::signal::ctrl_c().await.is_ok() {}
        });
        let status = child.wait().await;
        ignore_interrupts.abort();
        Ok(status.map_err(|e| UserError::failed("`ssh` could not be waited for").caused_by(e))?)
    }
}

/// Connects to `host` the way every command does (the host key checked against the pin, or pinned at first
/// contact) and prepares OpenSSH with the key that was checked. The session stays usable for sfuctl's own commands.
pub async fn for_host(dep: &Deployment, host: &HostTarget) -> Result<(Session, OpenSsh)> {
    let session = dep.connect(host).await?;
    let key = session.remote.host_public_key().await?;
    let alias = format!("sfuctl.{}.{}", dep.spec.name, host.name);
    let ssh = OpenSsh::new(&key, &alias, &host.address, dep.spec.ssh.port(), &ssh_user(&dep.spec), dep.private_key())?;
    Ok((session, ssh))
}

/// The exit code a shell would report for `status`: the code, or 128 + the signal that ended it.
pub fn exit_code(status: ExitStatus) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ed25519() -> HostPublicKey {
        let mut blob = Vec::new();
        blob.extend(11u32.to_be_bytes());
        blob.extend(b"ssh-ed25519");
        blob.extend(32u32.to_be_bytes());
        blob.extend([7u8; 32]);
        HostPublicKey::from_blob(&blob).unwrap()
    }

    #[test]
    fn known_hosts_holds_the_one_key_under_the_alias_and_checking_is_strict() {
        let key = ed25519();
        let ssh = OpenSsh::new(&key, "sfuctl.demo.media-1", "203.0.113.9", 2222, "root", Some(Path::new("/k/id"))).unwrap();
        let text = std::fs::read_to_string(ssh.known_hosts()).unwrap();
        assert!(text.starts_with("sfuctl.demo.media-1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5"), "{text}");
        assert_eq!(text.lines().count(), 1);
        let args = ssh.args(&["exit".into(), "7".into()], false).join(" ");
        for part in ["StrictHostKeyChecking=yes", "GlobalKnownHostsFile=/dev/null", "VerifyHostKeyDNS=no", "KnownHostsCommand=none", "HostKeyAlias=sfuctl.demo.media-1", "HostKeyAlgorithms=ssh-ed25519", "-i /k/id", "-p 2222 -l root -- 203.0.113.9 exit 7"] {
            assert!(args.contains(part), "{part} missing: {args}");
        }
        assert!(!args.contains("StrictHostKeyChecking=no") && !args.contains("accept-new"), "checking is never relaxed: {args}");
        let path = ssh.known_hosts().to_path_buf();
        drop(ssh);
        assert!(!path.exists(), "the known_hosts file goes with it");
    }

    #[test]
    fn an_rsa_key_is_accepted_with_sha2_signatures_only() {
        let mut blob = Vec::new();
        blob.extend(7u32.to_be_bytes());
        blob.extend(b"ssh-rsa");
        let key = HostPublicKey::from_blob(&blob).unwrap();
        assert_eq!(key.algorithms(), "rsa-sha2-512,rsa-sha2-256");
        assert!(HostPublicKey::from_blob(&[0, 0, 0, 99, b'x']).is_none(), "a length past the end is refused");
    }
}
