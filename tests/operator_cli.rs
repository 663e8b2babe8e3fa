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
