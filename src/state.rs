//! The local state: a cache of what sfuctl made (IDs) and the SSH host keys it pinned, one JSON file per
//! deployment.
//!
//! The provider (found by owner tag) and the hosts themselves are the truth; losing this file loses no resource.
//! It does lose first-contact host key pins, which is why it is kept outside the working directory, written
//! atomically (temporary file + rename) with mode 0600, and never holds a secret.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;
use serde::{Deserialize, Serialize};

use crate::error::UserError;

/// Where state files live: `$SFUCTL_STATE_DIR`, else `$XDG_STATE_HOME/sfuctl`, else `~/.local/state/sfuctl`.
pub fn state_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("SFUCTL_STATE_DIR").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_STATE_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(dir).join("sfuctl");
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".local/state/sfuctl")
}

/// One deployment's state.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// The deployment's name.
    pub name: String,
    /// Pinned SSH host keys (`SHA256:…`): by host address for hosts you gave sfuctl, by [`server_pin`] (the
    /// provider's ID) for servers sfuctl made, so a new server at a reused address is first contact again.
    #[serde(default)]
    pub host_keys: BTreeMap<String, String>,
    /// What sfuctl deployed on each host, by host name.
    #[serde(default)]
    pub hosts: BTreeMap<String, HostRecord>,
    /// Cloud resources sfuctl created, by kind and name: their provider IDs.
    #[serde(default)]
    pub resources: BTreeMap<String, String>,
    /// The shared secret last deployed, as a salted fingerprint (never the secret): `up` refuses another one
    /// without `--rotate-secret`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<crate::secret::SecretFingerprint>,
}

/// The `host_keys` entry of a server sfuctl made: `server:<provider ID>`.
pub fn server_pin(id: &str) -> String {
    format!("server:{id}")
}

impl State {
    /// The provider ID saved for server `name`.
    pub fn server_id(&self, name: &str) -> Option<&String> {
        self.resources.get(&format!("server:{name}"))
    }

    /// Saves server `name`'s ID; a pin of an ID it replaces (the same name made anew) is dropped.
    pub fn set_server_id(&mut self, name: &str, id: &str) {
        if let Some(old) = self.resources.insert(format!("server:{name}"), id.to_string()).filter(|old| old != id) {
            self.host_keys.remove(&server_pin(&old));
        }
    }

    /// Forgets server `name`: its ID, its record and its host key pin (the server is gone).
    pub fn forget_server(&mut self, name: &str) {
        self.hosts.remove(name);
        if let Some(id) = self.resources.remove(&format!("server:{name}")) {
            self.host_keys.remove(&server_pin(&id));
        }
    }
}

/// What sfuctl last deployed on a host.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostRecord {
    /// The host's address.
    pub address: String,
    /// How the service is run: `systemd` or `supervisor`.
    pub service_manager: Option<String>,
    /// The sha256 of the artifact last deployed.
    pub artifact_sha256: Option<String>,
}

/// A state file on disk.
pub struct StateFile {
    path: PathBuf,
    /// The state as loaded (or new).
    pub state: State,
}

impl StateFile {
    /// Loads the state of deployment `name`, or an empty one when there is none yet.
    pub fn load(name: &str) -> Result<Self> {
        Self::load_from(&state_dir().join(format!("{name}.json")), name)
    }

    /// Loads a state file from an explicit path.
    pub fn load_from(path: &Path, name: &str) -> Result<Self> {
        let state = match std::fs::read_to_string(path) {
            Ok(text) => serde_json::from_str(&text).map_err(|e| {
                UserError::failed(format!("the state file `{}` is damaged", path.display()))
                    .caused_by(e)
                    .hint("move it away: sfuctl finds its cloud resources by tag; only first-contact host key pins are lost")
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State { name: name.to_string(), ..State::default() },
            Err(e) => return Err(UserError::failed(format!("cannot read the state file `{}`", path.display())).caused_by(e).into()),
        };
        Ok(Self { path: path.to_path_buf(), state })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the state atomically (a temporary file in the same directory, then rename) with mode 0600.
    pub fn save(&self) -> Result<()> {
        let fail = |what: &str, e: std::io::Error| UserError::failed(format!("cannot {what} the state file `{}`", self.path.display())).caused_by(e);
        let dir = self.path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir).map_err(|e| fail("create the directory of", e))?;
        let tmp = dir.join(format!(".{}.tmp-{}", self.path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(), std::process::id()));
        let text = serde_json::to_string_pretty(&self.state).expect("state serializes");
        {
            use std::io::Write;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create(true).truncate(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(&tmp).map_err(|e| fail("write", e))?;
            file.write_all(text.as_bytes()).and_then(|()| file.sync_all()).map_err(|e| fail("write", e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| fail("replace", e))?;
        Ok(())
    }
}

/// Creates `dir` and its missing parents with mode 0700: the state holds host key pins and server IDs, which are
/// nobody else's business. Directories that already exist keep their mode (the state directory may be one the
/// user chose, shared with other things).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// How long a run waits for another run of the same deployment on this machine: `$SFUCTL_LOCK_TIMEOUT` seconds,
/// else 10 minutes.
pub fn lock_timeout() -> std::time::Duration {
    let secs = std::env::var("SFUCTL_LOCK_TIMEOUT").ok().and_then(|v| v.parse().ok()).unwrap_or(600);
    std::time::Duration::from_secs(secs)
}

/// An exclusive lock on one deployment (`<state dir>/<name>.lock`, an OS file lock released when the process
/// ends, however it ends): `up` and `down` of one deployment on one machine run one at a time.
#[derive(Debug)]
pub struct DeploymentLock {
    _file: std::fs::File,
    path: PathBuf,
}

impl DeploymentLock {
    /// Takes the lock of deployment `name`, waiting up to `timeout` (with a message) while another run holds it.
    pub async fn acquire(name: &str, timeout: std::time::Duration) -> Result<Self> {
        Self::acquire_at(&state_dir().join(format!("{name}.lock")), timeout).await
    }

    /// [`DeploymentLock::acquire`] on an explicit path.
    pub async fn acquire_at(path: &Path, timeout: std::time::Duration) -> Result<Self> {
        let fail = |what: &str, e: std::io::Error| UserError::failed(format!("cannot {what} the lock file `{}`", path.display())).caused_by(e);
        if let Some(dir) = path.parent() {
            create_private_dir(dir).map_err(|e| fail("create the directory of", e))?;
        }
        let mut options = std::fs::OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let file = options.open(path).map_err(|e| fail("open", e))?;
        let started = std::time::Instant::now();
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(std::fs::TryLockError::WouldBlock) => {
                    let holder = std::fs::read_to_string(path).unwrap_or_default();
                    let holder = holder.trim();
                    if started.elapsed() >= timeout {
                        return Err(UserError::failed(format!(
                            "another sfuctl run of this deployment still holds `{}`{} after {}s",
                            path.display(),
                            if holder.is_empty() { String::new() } else { format!(" ({holder})") },
                            timeout.as_secs()
                        ))
                        .hint("wait for it to finish and run again (set SFUCTL_LOCK_TIMEOUT to wait longer); the lock is released when that process ends, however it ends")
                        .into());
                    }
                    if !told {
                        eprintln!(
                            "waiting for another sfuctl run of this deployment{} to finish (lock `{}`, up to {}s)",
                            if holder.is_empty() { String::new() } else { format!(" ({holder})") },
                            path.display(),
                            timeout.as_secs()
                        );
                        told = true;
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                }
                Err(std::fs::TryLockError::Error(e)) => return Err(fail("lock", e).into()),
            }
        }
        // Who holds it, for the message another run prints (the lock is the OS lock, not this text).
        let _ = file.set_len(0).and_then(|()| {
            use std::io::Write;
            (&file).write_all(format!("pid {}", std::process::id()).as_bytes())
        });
        Ok(Self { _file: file, path: path.to_path_buf() })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_atomically_with_mode_0600() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/demo.json");
        let mut file = StateFile::load_from(&path, "demo").unwrap();
        assert_eq!(file.state.name, "demo");
        file.state.host_keys.insert("203.0.113.10".into(), "SHA256:abc".into());
        file.save().unwrap();
        let again = StateFile::load_from(&path, "demo").unwrap();
        assert_eq!(again.state, file.state);
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::metadata(path.parent().unwrap()).unwrap().permissions().mode() & 0o777, 0o700, "a directory it creates is private");
        assert_eq!(std::fs::read_dir(path.parent().unwrap()).unwrap().count(), 1, "no temporary file left behind");
    }

    #[test]
    fn a_server_pin_goes_with_its_server() {
        let mut s = State::default();
        s.set_server_id("sfuctl-d-1", "7");
        s.host_keys.insert(server_pin("7"), "SHA256:a".into());
        s.set_server_id("sfuctl-d-1", "7");
        assert!(s.host_keys.contains_key("server:7"), "the same server keeps its pin");
        s.set_server_id("sfuctl-d-1", "8");
        assert!(s.host_keys.is_empty(), "a server made anew under the name starts from first contact");
        s.host_keys.insert(server_pin("8"), "SHA256:b".into());
        s.forget_server("sfuctl-d-1");
        assert!(s.host_keys.is_empty() && s.resources.is_empty());
    }

    #[tokio::test]
    async fn a_second_run_waits_for_the_lock_then_fails_clearly_after_the_bound() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.lock");
        let first = DeploymentLock::acquire_at(&path, std::time::Duration::from_secs(1)).await.unwrap();
        let started = std::time::Instant::now();
        let err = DeploymentLock::acquire_at(&path, std::time::Duration::from_millis(600)).await.unwrap_err();
        assert!(started.elapsed() >= std::time::Duration::from_millis(600));
        let text = crate::error::render(&err);
        assert!(text.contains("another sfuctl run of this deployment still holds") && text.contains(&format!("pid {}", std::process::id())), "{text}");
        assert!(text.contains("SFUCTL_LOCK_TIMEOUT"), "{text}");
        // Released when the holder goes: the next run gets it at once.
        drop(first);
        DeploymentLock::acquire_at(&path, std::time::Duration::from_millis(100)).await.unwrap();
    }

    #[test]
    fn a_damaged_file_is_an_error_with_a_hint() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo.json");
        std::fs::write(&path, "{not json").unwrap();
        let err = StateFile::load_from(&path, "demo").err().unwrap();
        assert!(crate::error::render(&err).contains("hint: move it away"));
    }
}
