//! The operator's commands that need no host: shell completions and manual pages (`init` has its own module).

use crate::support::cli::sfuctl;

/// Every command a user can type, as the completions and the manual must name them.
const COMMANDS: &[&str] = &["init", "validate", "plan", "render", "up", "status", "audit", "down", "logs", "ssh", "completions", "man"];

#[test]
fn completions_for_every_shell_name_every_command_and_bash_parses_its_own() {
    let home = tempfile::tempdir().expect("temp dir");
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let out = sfuctl(home.path()).args(["completions", shell]).assert().success();
        let script = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        assert!(!script.trim().is_empty(), "{shell}: empty completion script");
        for command in COMMANDS {
            assert!(script.contains(command), "{shell}'s completions do not name `{command}`:\n{script}");
        }
    }
    crate::support::cli::require_tool("bash", "bash");
    let script = tempfile::NamedTempFile::new().expect("temp file");
    let out = sfuctl(home.path()).args(["completions", "bash"]).assert().success();
    std::fs::write(script.path(), &out.get_output().stdout).expect("write the script");
    let check = std::process::Command::new("bash").arg("-n").arg(script.path()).output().expect("bash runs");
    assert!(check.status.success(), "bash -n rejects the bash completions: {}", String::from_utf8_lossy(&check.stderr));
    // Sourcing it registers the completion function for sfuctl.
    let source = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p sfuctl", script.path().display()))
        .output()
        .expect("bash runs");
    assert!(source.status.success() && String::from_utf8_lossy(&source.stdout).contains("sfuctl"), "{source:?}");
}

#[test]
fn an_unknown_shell_is_bad_input() {
    let home = tempfile::tempdir().expect("temp dir");
    sfuctl(home.path()).args(["completions", "tcsh"]).assert().code(2);
}

#[test]
fn man_prints_the_page_and_writes_one_per_command() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = sfuctl(home.path()).arg("man").assert().success();
    let page = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(page.contains(".TH sfuctl 1"), "not a roff page: {page}");
    for command in COMMANDS {
        assert!(page.contains(command), "sfuctl(1) does not name `{command}`");
    }
    let dir = home.path().join("man/man1");
    sfuctl(home.path()).args(["man", "--out"]).arg(&dir).assert().success();
    for command in COMMANDS {
        let file = dir.join(format!("sfuctl-{command}.1"));
        let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        assert!(text.contains(".TH"), "{} is not a roff page", file.display());
    }
    assert!(dir.join("sfuctl.1").is_file());
}

#[test]
fn plan_text_ends_with_a_newline_so_the_next_message_starts_on_its_own_line() {
    let home = tempfile::tempdir().expect("temp dir");
    for spec in crate::support::cli::examples() {
        let out = sfuctl(home.path()).arg("plan").arg(&spec).assert().success();
        let stdout = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
        assert!(stdout.ends_with(".\n"), "{}: plan's text does not end with a full line: {stdout:?}", spec.display());
    }
}

#[test]
fn down_does_not_repeat_the_specs_warnings() {
    let home = tempfile::tempdir().expect("temp dir");
    let spec = home.path().join("open-ssh.yaml");
    // SSH open to the world: a warning for validate, plan and up.
    std::fs::write(&spec, "name: open-ssh\nprovider: { kind: digitalocean, region: fra1 }\nsfu: { kind: janus, rtc_ports: 20000-20999 }\n").unwrap();
    sfuctl(home.path()).arg("validate").arg(&spec).assert().success().stderr(predicates::str::contains("warning:"));
    // Without credentials `down` stops at once (exit 2); it says why and nothing about the spec's advice.
    let out = sfuctl(home.path()).args(["down", "--yes"]).arg(&spec).assert().code(2);
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).into_owned();
    assert!(!stderr.contains("warning:"), "down repeated the spec's warnings:\n{stderr}");
    assert!(stderr.contains("error:"), "{stderr}");
}

#[test]
fn help_never_breaks_a_path_in_two() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = sfuctl(home.path()).args(["render", "--help"]).assert().success();
    let help = String::from_utf8_lossy(&out.get_output().stdout).into_owned();
    assert!(help.contains("DIR/sfuctl-janus-demo-1/opt/sfuctl/janus-demo/config/janus.jcfg"), "{help}");
}

/// Runs `sfuctl ARGS` on a pseudo-terminal (util-linux `script`), typing `answers`; returns its output and code.
fn on_a_terminal(home: &std::path::Path, env: &[(&str, String)], args: &str, answers: &str) -> (String, Option<i32>) {
    crate::support::cli::require_tool("script", "bsdutils");
    let binary = assert_cmd::cargo::cargo_bin("sfuctl");
    // `timeout`: a run that never ends fails the test (exit 124) instead of hanging it.
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["120", "script", "-qec", &format!("{} {args}", binary.display()), "/dev/null"]).current_dir(home).env("HOME", home).env("RUST_BACKTRACE", "0").env_remove("SSH_CONNECTION").env_remove("SSH_CLIENT");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.stdin(std::process::Stdio::piped()).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped()).spawn().expect("script runs");
    use std::io::{Read, Write};
    // Type each answer when its question is on the screen (the output ends in `: `), as a person would: typed
    // ahead, the terminal's echo lands in the middle of the next prompt.
    let mut stdout = child.stdout.take().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    for answer in answers.split_inclusive(['\n', '\x03']) {
        while !seen.ends_with(b": ") {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
        stdin.write_all(answer.as_bytes()).unwrap();
        stdin.flush().unwrap();
        // The echo of the answer comes back first; the next question follows it.
        seen.extend_from_slice(b"\n");
    }
    drop(stdin);
    stdout.read_to_end(&mut seen).unwrap();
    let out = child.wait_with_output().unwrap();
    (format!("{}{}", String::from_utf8_lossy(&seen), String::from_utf8_lossy(&out.stderr)), out.status.code())
}

#[test]
fn init_asks_on_a_terminal() {
    let home = tempfile::tempdir().expect("temp dir");
    let (out, code) = on_a_terminal(home.path(), &[], "init --out asked.yaml", "vultr\nnosuch\ncoturn\nturn-1\n");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("Provider (digitalocean, linode, aws, vultr, ssh) [digitalocean]:") && out.contains("`nosuch` is not one of"), "{out}");
    let spec = std::fs::read_to_string(home.path().join("asked.yaml")).unwrap();
    assert!(spec.contains("name: turn-1") && spec.contains("kind: vultr") && spec.contains("kind: coturn"), "{spec}");
}

/// A coturn deployment `name` on the DigitalOcean fake, for `up` on a terminal: the spec and key in `home`; the
/// fake and the environment sfuctl needs.
fn a_cloud_spec(home: &std::path::Path, name: &str) -> (crate::support::do_fake::DoFake, Vec<(&'static str, String)>) {
    use crate::support::cloud_deployment::CloudEnv;
    let fake = crate::support::do_fake::DoFake::start();
    let key = home.join("id_ed25519");
    let keygen = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(&key).output().unwrap();
    assert!(keygen.status.success());
    std::fs::write(
        home.join("spec.yaml"),
        format!("name: {name}\nprovider: {{ kind: digitalocean, region: fra1 }}\nssh: {{ private_key: {}, allow_from: [203.0.113.7/32] }}\nsfu: {{ kind: coturn, rtc_ports: 40000-40999 }}\n", key.display()),
    )
    .unwrap();
    let mut env: Vec<(&str, String)> = fake.env();
    env.push(("SFUCTL_STATE_DIR", home.join("state").display().to_string()));
    env.push(("SFUCTL_SECRET", "terminal-secret-0123456789abcdef0123456789".into()));
    (fake, env)
}

/// The fake holds no droplet, firewall or key.
fn nothing_created(fake: &crate::support::do_fake::DoFake) {
    let state = fake.get("/_fake/state");
    for list in ["droplets", "firewalls", "ssh_keys"] {
        assert!(state[list].as_array().is_some_and(|l| l.is_empty()), "{list}: {state}");
    }
}

#[test]
fn up_on_a_terminal_shows_the_plan_and_a_no_creates_nothing() {
    let home = tempfile::tempdir().expect("temp dir");
    let (fake, env) = a_cloud_spec(home.path(), "ask");
    let (out, code) = on_a_terminal(home.path(), &env, "up spec.yaml", "no\n");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("+ server") && out.contains("Do you want to perform these actions?") && out.contains("cancelled: nothing was created or deleted"), "{out}");
    nothing_created(&fake);
}

/// Ctrl-C typed at `up`'s question (a real pseudo-terminal turns it into SIGINT) ends the run at once with 130 and
/// creates nothing.
#[test]
fn ctrl_c_at_ups_question_stops_at_once_and_creates_nothing() {
    let home = tempfile::tempdir().expect("temp dir");
    let (fake, env) = a_cloud_spec(home.path(), "ctrlc");
    let (out, code) = on_a_terminal(home.path(), &env, "up spec.yaml", "\x03");
    assert_eq!(code, Some(130), "{out}");
    assert!(out.contains("Do you want to perform these actions?"), "{out}");
    assert!(out.contains("interrupted at the question: nothing was changed") || out.contains("interrupted before the question: nothing was changed"), "{out}");
    nothing_created(&fake);
}

#[test]
fn a_reader_that_stops_early_is_not_an_error() {
    crate::support::cli::require_tool("head", "coreutils");
    let binary = assert_cmd::cargo::cargo_bin("sfuctl");
    for args in ["man", "completions zsh", "completions fish"] {
        let out = std::process::Command::new("sh").arg("-c").arg(format!("{} {args} | head -c 1 >/dev/null", binary.display())).env("RUST_BACKTRACE", "0").output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("error") && !stderr.contains("panicked"), "{args}: {stderr}");
    }
}
