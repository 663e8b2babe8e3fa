//! `sfuctl init`: a starter spec for every provider and server kind that `validate` refuses while it holds
//! placeholders and accepts once they are filled in; the user's key and address when this machine knows them.

use crate::support::cli::sfuctl;

const PROVIDERS: &[&str] = &["digitalocean", "linode", "aws", "vultr", "ssh"];
const KINDS: &[&str] = &["mediasoup", "janus", "livekit", "coturn", "custom"];

fn stderr(out: &assert_cmd::assert::Assert) -> String {
    String::from_utf8_lossy(&out.get_output().stderr).into_owned()
}

/// The real value for each placeholder `init` writes, recognised by what it asks for; files it names are made.
fn fill_in(spec: &str, dir: &std::path::Path) -> String {
    std::fs::create_dir_all(dir.join("app")).unwrap();
    std::fs::write(dir.join("app/package.json"), "{\"name\": \"app\", \"version\": \"1.0.0\"}\n").unwrap();
    std::fs::write(dir.join("livekit-server"), "#!/bin/sh\n").unwrap();
    std::fs::write(dir.join("my-sfu"), "#!/bin/sh\n").unwrap();
    let key = dir.join("id_ed25519");
    std::fs::write(&key, "not used by validate\n").unwrap();
    std::fs::write(dir.join("id_ed25519.pub"), "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO6gMdTn8V7a4rP0iV4QbNf5lYt2cyEo9mCvE3D1sN0w test\n").unwrap();
    let answers = [
        ("your SSH private key", key.display().to_string()),
        ("your public IPv4 address/32", "203.0.113.7/32".to_string()),
        ("the server's public IP address", "203.0.113.10".to_string()),
        ("how to start your server", "./my-sfu".to_string()),
        ("your app's directory", "./app".to_string()),
        ("the server's binary", "./livekit-server".to_string()),
    ];
    let mut out = String::new();
    for line in spec.lines() {
        let mut line = line.to_string();
        if let Some(start) = line.find("\"<REPLACE-ME: ") {
            let end = start + line[start..].find(">\"").expect("a placeholder ends with >\"") + 2;
            let what = &line[start..end];
            let (_, value) = answers.iter().find(|(asks, _)| what.contains(asks)).unwrap_or_else(|| panic!("a placeholder this test cannot answer: {what}"));
            line.replace_range(start..end, value);
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[test]
fn every_provider_and_kind_validates_once_its_placeholders_are_filled_in() {
    for provider in PROVIDERS {
        for kind in KINDS {
            let home = tempfile::tempdir().unwrap();
            let spec = home.path().join("spec.yaml");
            sfuctl(home.path()).args(["init", "--provider", provider, "--kind", kind, "--out"]).arg(&spec).env_remove("SSH_CONNECTION").env_remove("SSH_CLIENT").assert().success();
            let text = std::fs::read_to_string(&spec).unwrap();
            assert!(text.contains(&format!("kind: {provider}")) && text.contains(&format!("kind: {kind}")), "{text}");
            // As written: no key and no address are known here, so validate refuses, naming each placeholder.
            let refused = sfuctl(home.path()).arg("validate").arg(&spec).assert().code(2);
            let err = stderr(&refused);
            assert!(err.contains("ssh.private_key") && err.contains("ssh.allow_from[0]") && err.contains("still holds the placeholder"), "{provider}/{kind}:\n{err}");
            // Filled in: valid, and without warnings (every file it names exists, SSH is limited).
            let filled = home.path().join("filled.yaml");
            std::fs::write(&filled, fill_in(&text, home.path())).unwrap();
            let ok = sfuctl(home.path()).arg("validate").arg(&filled).assert();
            let out = ok.get_output();
            assert!(out.status.success(), "{provider}/{kind} does not validate once filled in:\n{}\n{}", std::fs::read_to_string(&filled).unwrap(), String::from_utf8_lossy(&out.stderr));
            assert!(!String::from_utf8_lossy(&out.stderr).contains("warning:"), "{provider}/{kind}: {}", String::from_utf8_lossy(&out.stderr));
            // plan works on it too (no account needed).
            sfuctl(home.path()).arg("plan").arg(&filled).assert().success();
        }
    }
}

#[test]
fn the_users_key_and_public_address_are_used_when_this_machine_knows_them() {
    let home = tempfile::tempdir().unwrap();
    let ssh = home.path().join(".ssh");
    std::fs::create_dir_all(&ssh).unwrap();
    let keygen = std::process::Command::new("ssh-keygen").args(["-q", "-t", "ed25519", "-N", "", "-f"]).arg(ssh.join("id_ed25519")).output().expect("ssh-keygen runs");
    assert!(keygen.status.success(), "{keygen:?}");
    let spec = home.path().join("janus.yaml");
    sfuctl(home.path())
        .args(["init", "--provider", "digitalocean", "--kind", "janus", "--name", "janus-demo", "--out"])
        .arg(&spec)
        .env("SSH_CONNECTION", "198.51.100.23 50522 10.0.0.5 22")
        .assert()
        .success();
    let text = std::fs::read_to_string(&spec).unwrap();
    assert!(text.contains("private_key: ~/.ssh/id_ed25519") && text.contains("allow_from: [198.51.100.23/32]"), "{text}");
    assert!(!text.contains("REPLACE-ME: "), "nothing left to fill in: {text}");
    let ok = sfuctl(home.path()).arg("validate").arg(&spec).assert().success();
    assert!(!stderr(&ok).contains("warning:"), "{}", stderr(&ok));

    // Only a public key (the private one in an agent or a token): named as ssh.public_key, login through the agent.
    let agent_home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(agent_home.path().join(".ssh")).unwrap();
    std::fs::copy(ssh.join("id_ed25519.pub"), agent_home.path().join(".ssh/id_ed25519.pub")).unwrap();
    let agent = agent_home.path().join("agent.yaml");
    sfuctl(agent_home.path()).args(["init", "--provider", "aws", "--kind", "janus", "--out"]).arg(&agent).env("SSH_CONNECTION", "198.51.100.23 50522 10.0.0.5 22").assert().success();
    let text = std::fs::read_to_string(&agent).unwrap();
    assert!(text.contains("public_key: ~/.ssh/id_ed25519.pub") && !text.contains("private_key:"), "{text}");
    sfuctl(agent_home.path()).arg("validate").arg(&agent).assert().success();

    // A private address (a LAN, a VPN) is nobody's public address: a placeholder instead.
    let lan = home.path().join("lan.yaml");
    sfuctl(home.path()).args(["init", "--provider", "linode", "--kind", "coturn", "--out"]).arg(&lan).env("SSH_CONNECTION", "192.168.1.20 50522 192.168.1.5 22").assert().success();
    let text = std::fs::read_to_string(&lan).unwrap();
    assert!(!text.contains("192.168.1.20") && text.contains("REPLACE-ME: your public IPv4 address"), "{text}");
}

#[test]
fn init_never_overwrites_without_force_and_needs_flags_without_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let spec = home.path().join("spec.yaml");
    std::fs::write(&spec, "mine\n").unwrap();
    let refused = sfuctl(home.path()).args(["init", "--provider", "aws", "--kind", "coturn", "--out"]).arg(&spec).assert().code(2);
    assert!(stderr(&refused).contains("--force"), "{}", stderr(&refused));
    assert_eq!(std::fs::read_to_string(&spec).unwrap(), "mine\n", "untouched");
    sfuctl(home.path()).args(["init", "--provider", "aws", "--kind", "coturn", "--force", "--out"]).arg(&spec).assert().success();
    assert!(std::fs::read_to_string(&spec).unwrap().contains("kind: aws"));

    let other = home.path().join("other.yaml");
    let no_tty = sfuctl(home.path()).args(["init", "--out"]).arg(&other).assert().code(2);
    assert!(stderr(&no_tty).contains("--provider") && stderr(&no_tty).contains("digitalocean"), "{}", stderr(&no_tty));
    sfuctl(home.path()).args(["init", "--provider", "gcp", "--kind", "janus"]).assert().code(2);
    sfuctl(home.path()).args(["init", "--provider", "ssh", "--kind", "janus", "--name", "Bad_Name"]).assert().code(2);
    assert!(!other.exists(), "nothing written on bad input");
}
