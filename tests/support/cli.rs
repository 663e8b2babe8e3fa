//! Running the real `sfuctl` binary in a clean environment: no cloud credentials, no backtraces, a HOME of its own.

use std::path::{Path, PathBuf};

use assert_cmd::Command;

/// Variables that would change what sfuctl does if the developer's shell happens to set them.
const CLEARED: &[&str] = &[
    "DIGITALOCEAN_TOKEN",
    "DIGITALOCEAN_ACCESS_TOKEN",
    "DIGITALOCEAN_API_URL",
    "LINODE_TOKEN",
    "LINODE_URL",
    "LINODE_API_VERSION",
    "VULTR_API_KEY",
    "VULTR_API_ENDPOINT",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_EC2",
    "SFUCTL_SECRET",
    "NODEJS_ORG_MIRROR",
    "SSH_AUTH_SOCK",
    "SFUCTL_LOG",
];

/// The repository root (where `examples/` lives).
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An example spec's path.
pub fn example(name: &str) -> PathBuf {
    repo().join("examples").join(name)
}

/// Every example spec.
pub fn examples() -> Vec<PathBuf> {
    let mut all: Vec<PathBuf> = std::fs::read_dir(repo().join("examples"))
        .expect("examples/ exists")
        .map(|e| e.expect("readable").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    all.sort();
    all
}

/// `sfuctl` with a clean environment and `home` as HOME.
pub fn sfuctl(home: &Path) -> Command {
    Command::from_std(sfuctl_process(home))
}

/// The same clean `sfuctl` as [`sfuctl`], as a plain `std::process::Command` (to spawn it and read it as it runs).
pub fn sfuctl_process(home: &Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(assert_cmd::cargo::cargo_bin("sfuctl"));
    for var in CLEARED {
        cmd.env_remove(var);
    }
    cmd.env("RUST_BACKTRACE", "0").env("HOME", home).env("NO_COLOR", "1");
    cmd
}

/// Fails the test with an install hint when a tool the test needs is missing: never a silent skip.
pub fn require_tool(tool: &str, package: &str) {
    let found = std::process::Command::new("sh").args(["-c", &format!("command -v {tool}")]).output().is_ok_and(|o| o.status.success());
    assert!(found, "`{tool}` is missing: run `scripts/testbed/install` (it installs the Debian package `{package}`)");
}
