//! `-v` / `-vv` / `SFUCTL_LOG`: what sfuctl did, on stderr, with every secret redacted.

use predicates::prelude::*;

use crate::support::cli::{example, sfuctl};

#[test]
fn verbose_is_a_global_flag_and_sfuctl_log_is_checked() {
    let home = tempfile::tempdir().unwrap();
    for args in [&["plan", "--verbose"][..], &["plan", "-vv"], &["-v", "validate"]] {
        sfuctl(home.path()).args(args).arg(example("janus-linode.yaml")).assert().success();
    }
    sfuctl(home.path())
        .env("SFUCTL_LOG", "http=debug,bogus")
        .arg("validate")
        .arg(example("janus-linode.yaml"))
        .assert()
        .success()
        .stderr(predicate::str::contains("SFUCTL_LOG: `bogus` is not understood"));
}

#[test]
fn status_help_documents_its_exit_codes() {
    let home = tempfile::tempdir().unwrap();
    sfuctl(home.path())
        .args(["status", "--help"])
        .assert()
        .success()
        .stdout(predicate::str::contains("Exit codes: 0 every service runs; 3 a service is not running"))
        .stdout(predicate::str::contains("not deployed"));
}
