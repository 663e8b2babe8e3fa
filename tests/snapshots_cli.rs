//! Snapshots (insta) of every command's help and of the main text outputs, so that a change of wording is a
//! deliberate one: review with `cargo insta review`, or accept with `INSTA_UPDATE=always` after reading the diff.

use std::path::Path;

use crate::support::cli::{example, examples, sfuctl};
use crate::support::cloud_deployment::CloudEnv;
use crate::support::do_fake::DoFake;

/// Every command, as `sfuctl <command> --help` takes it (an empty name: the top level).
const COMMANDS: &[&str] = &["", "init", "validate", "plan", "render", "up", "status", "audit", "down", "logs", "ssh", "completions", "man"];

/// stdout, then stderr under a marker, with the temporary directory and HOME written as placeholders.
fn both(out: &std::process::Output, temp: &Path) -> String {
    let text = format!("{}--- stderr ---\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    text.replace(&temp.display().to_string(), "[TEMP]").replace(&crate::support::cli::repo().display().to_string(), "[REPO]")
}

#[test]
fn help_of_every_command() {
    let home = tempfile::tempdir().unwrap();
    for command in COMMANDS {
        let mut cmd = sfuctl(home.path());
        if !command.is_empty() {
            cmd.arg(command);
        }
        let out = cmd.arg("--help").output().unwrap();
        assert!(out.status.success(), "{command} --help: {out:?}");
        let name = if command.is_empty() { "help".to_string() } else { format!("help_{command}") };
        insta::assert_snapshot!(name, String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn validate_and_plan_of_every_example() {
    let home = tempfile::tempdir().unwrap();
    for spec in examples() {
        let stem = spec.file_stem().unwrap().to_string_lossy().into_owned();
        let validate = sfuctl(home.path()).current_dir(crate::support::cli::repo()).arg("validate").arg(Path::new("examples").join(spec.file_name().unwrap())).output().unwrap();
        insta::assert_snapshot!(format!("validate_{stem}"), both(&validate, home.path()));
        let plan = sfuctl(home.path()).env("SFUCTL_SECRET", "snapshot-secret-0123456789abcdef0123456789").current_dir(crate::support::cli::repo()).arg("plan").arg(Path::new("examples").join(spec.file_name().unwrap())).output().unwrap();
        assert!(plan.status.success(), "{plan:?}");
        insta::assert_snapshot!(format!("plan_{stem}"), both(&plan, home.path()));
    }
}

#[test]
fn validate_of_a_spec_with_problems() {
    let home = tempfile::tempdir().unwrap();
    let spec = home.path().join("bad.yaml");
    std::fs::write(&spec, "name: Bad_Name\nprovider: { kind: digitalocean }\nssh: { allow_from: [10.0.0.1/8] }\nsfu: { kind: janus, rtc_ports: 41000-40000 }\n").unwrap();
    let out = sfuctl(home.path()).current_dir(home.path()).args(["validate", "bad.yaml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    insta::assert_snapshot!("validate_problems", both(&out, home.path()));
}

#[test]
fn render_summary_and_init_messages() {
    let home = tempfile::tempdir().unwrap();
    let out = sfuctl(home.path()).current_dir(home.path()).env("SFUCTL_SECRET", "snapshot-secret-0123456789abcdef0123456789").args(["render", "--out", "out"]).arg(example("janus-linode.yaml")).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    insta::assert_snapshot!("render_janus_linode", both(&out, home.path()));
    let init = sfuctl(home.path()).current_dir(home.path()).env_remove("SSH_CONNECTION").env_remove("SSH_CLIENT").args(["init", "--provider", "vultr", "--kind", "coturn"]).output().unwrap();
    assert!(init.status.success(), "{init:?}");
    insta::assert_snapshot!("init_vultr_coturn", both(&init, home.path()));
    insta::assert_snapshot!("init_vultr_coturn_spec", std::fs::read_to_string(home.path().join("my-coturn.yaml")).unwrap());
}

#[test]
fn down_and_up_ask_before_they_change_anything() {
    let home = tempfile::tempdir().unwrap();
    // down on existing hosts, without a terminal: what it would remove, and the refusal.
    let down = sfuctl(home.path()).current_dir(crate::support::cli::repo()).args(["down", "examples/existing-host.yaml"]).output().unwrap();
    assert_eq!(down.status.code(), Some(2));
    insta::assert_snapshot!("down_refused", both(&down, home.path()));

    // up on a cloud with nothing made yet, without a terminal: the plan, and the refusal.
    let fake = DoFake::start();
    let key = home.path().join("id_ed25519");
    let keygen = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-C", "snapshot", "-f"]).arg(&key).output().unwrap();
    assert!(keygen.status.success());
    let spec = home.path().join("spec.yaml");
    std::fs::write(&spec, format!("name: snap\nprovider: {{ kind: digitalocean, region: fra1 }}\nssh: {{ private_key: {}, allow_from: [203.0.113.7/32] }}\nsfu: {{ kind: janus, rtc_ports: 20000-20999 }}\n", key.display())).unwrap();
    let mut up = sfuctl(home.path());
    for (k, v) in fake.env() {
        up.env(k, v);
    }
    let up = up.env("SFUCTL_STATE_DIR", home.path().join("state")).env("SFUCTL_SECRET", "snapshot-secret-0123456789abcdef0123456789").current_dir(home.path()).args(["up", "spec.yaml"]).output().unwrap();
    assert_eq!(up.status.code(), Some(2), "{up:?}");
    insta::assert_snapshot!("up_refused_without_a_terminal", both(&up, home.path()));
}
