//! Lost state (issue 14): with the local state directory deleted, the real `sfuctl audit` still finds the
//! deployment's server by its owner tag and audits it, and `sfuctl down` still removes everything (the fake's
//! inventory is empty afterwards), on every cloud fake. The engine-level half (a refresh with no saved IDs finds
//! the same servers, firewall and key) is scenario 5 of `conformance.rs`.

use super::interruptions::{Cli, loopback_pool};
use super::{AwsHarness, CloudFake, DoHarness, LinodeHarness, VultrHarness};

fn with_the_state_deleted(fake: &dyn CloudFake) {
    let cli = Cli::start(fake, "lost");
    let (report, stderr) = cli.up();
    assert_eq!(cli.inventory(), cli.converged(), "{report}\n{stderr}");
    std::fs::remove_dir_all(cli.state_dir()).unwrap();

    let server = format!("sfuctl-{}-1", cli.name);
    let out = cli.command(&["audit", "--output", "json"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The host's SSH here closes every connection, so the audit fails; it must fail on the host it found.
    assert!(stdout.contains(&server) || stderr.contains(&server), "the audit found {server} by its tag:\n{stdout}\n{stderr}");
    assert!(!stderr.contains("not deployed") && !stderr.contains("no servers"), "{stderr}");

    std::fs::remove_dir_all(cli.state_dir()).ok();
    cli.down();
    assert_eq!(cli.inventory(), Vec::<String>::new(), "down removed everything by owner tag, without the state");
}

#[test]
fn with_the_state_deleted_audit_and_down_work_on_digitalocean() {
    with_the_state_deleted(&DoHarness::start_with(&loopback_pool().each_ref().map(String::as_str)));
}

#[test]
fn with_the_state_deleted_audit_and_down_work_on_linode() {
    with_the_state_deleted(&LinodeHarness::start_with(&loopback_pool().each_ref().map(String::as_str)));
}

#[test]
fn with_the_state_deleted_audit_and_down_work_on_vultr() {
    with_the_state_deleted(&VultrHarness::start_with(&loopback_pool().each_ref().map(String::as_str)));
}

#[test]
fn with_the_state_deleted_audit_and_down_work_on_aws() {
    with_the_state_deleted(&AwsHarness::start_with(&loopback_pool().each_ref().map(String::as_str)));
}
