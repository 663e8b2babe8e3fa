//! Secrets never leak (issue 14): every command (validate, plan, render, up, status, audit, down) at the highest
//! verbosity against the DigitalOcean fake, whose droplet is a real namespace host reached over SSH. With a known
//! API token, a known shared secret and the SSH private key, none of their texts may appear in stdout, stderr, the
//! state files or any rendered file but the secret's own destination (coturn's config); the state is private
//! (files 0600, directories 0700). The log must really have run: API requests and SSH commands are in stderr.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::support::cli::require_tool;
use crate::support::cloud_deployment::CloudDeployment;
use crate::support::do_fake::DoFake;
use crate::support::netns::TestHost;

/// The shared secret `CloudDeployment::sfuctl` exports.
const SHARED_SECRET: &str = "cloud-e2e-secret-0123456789abcdef0123456789abcdef";

/// Every file under `dir`, with the directories on the way.
fn walk(dir: &Path, files: &mut Vec<PathBuf>, dirs: &mut Vec<PathBuf>) {
    dirs.push(dir.to_path_buf());
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            walk(&path, files, dirs);
        } else {
            files.push(path);
        }
    }
}

/// The texts that must never show: the token, the shared secret, and each base64 line of the private key.
fn secrets(token: &str, key: &Path) -> Vec<(String, String)> {
    let mut out = vec![("the API token".to_string(), token.to_string()), ("the shared secret".to_string(), SHARED_SECRET.to_string())];
    let pem = std::fs::read_to_string(key).unwrap();
    for (i, line) in pem.lines().filter(|l| !l.starts_with("-----") && l.len() >= 16).enumerate() {
        out.push((format!("line {} of the SSH private key", i + 1), line.to_string()));
    }
    assert!(out.len() > 3, "the private key has base64 lines: {pem}");
    out
}

fn assert_clean(what: &str, text: &str, secrets: &[(String, String)]) {
    for (name, value) in secrets {
        assert!(!text.contains(value.as_str()), "{name} appears in {what}:\n{text}");
    }
}

#[test]
fn every_command_at_the_highest_verbosity_shows_no_secret() {
    require_tool("turnserver", "coturn");
    let host = TestHost::start("leak");
    let fake = DoFake::start_with(&["--address-pool", &host.address(), "--boot-delay", "1"]);
    let dep = CloudDeployment::new("leak", &host, &[&host], "  kind: digitalocean\n  region: fra1\n  size: s-1vcpu-1gb\n");
    dep.write_spec("40000-40099", 1);
    let secrets = secrets(fake.token(), &dep.key);
    let rendered = tempfile::tempdir().unwrap();
    let out_dir = rendered.path().join("out");
    let out_arg = out_dir.to_str().unwrap();

    // Each command with the exit it must give: `status` after `down` says "not deployed" and exits 3.
    let runs: Vec<(Vec<&str>, i32)> = vec![
        (vec!["-vv", "validate"], 0),
        (vec!["-vv", "plan"], 0),
        (vec!["-vv", "render", "--out", out_arg, "--address", "203.0.113.5"], 0),
        (vec!["-vv", "up", "--yes"], 0),
        (vec!["-vv", "status"], 0),
        (vec!["-vv", "audit", "--probe-timeout-ms", "4000"], 0),
        (vec!["-vv", "--output", "json", "status"], 0),
        (vec!["-vv", "down", "--yes"], 0),
        (vec!["-vv", "status"], 3),
    ];
    let mut all_stderr = String::new();
    for (args, code) in &runs {
        let out = dep.sfuctl(&fake, args).output().unwrap();
        let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(*code), "sfuctl {args:?}:\n{stdout}\n{stderr}");
        assert_clean(&format!("the stdout of sfuctl {args:?}"), &stdout, &secrets);
        assert_clean(&format!("the stderr of sfuctl {args:?}"), &stderr, &secrets);
        all_stderr.push_str(&stderr);
    }
    assert!(all_stderr.contains(&format!("not deployed (run `sfuctl up {}`)", dep.spec().display())), "status after down: {all_stderr}");

    // The log ran: API requests with status and time, request bodies, SSH commands and uploads.
    for shown in ["http: GET /v2/droplets?", "http: POST /v2/droplets body: {", "-> 201 (", "ssh: root@", ": run\n", "upload /opt/sfuctl/", "bytes sent", "http: DELETE /v2/droplets/"] {
        assert!(all_stderr.contains(shown), "`{shown}` is not in the -vv log:\n{all_stderr}");
    }
    assert!(!all_stderr.to_ascii_lowercase().contains("bearer "), "no Authorization header is logged");

    // The state: private, and free of secrets.
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&dep.dir.path().join("state"), &mut files, &mut dirs);
    assert!(files.iter().any(|f| f.extension().is_some_and(|e| e == "json")), "a state file was written: {files:?}");
    for file in &files {
        assert_eq!(std::fs::metadata(file).unwrap().permissions().mode() & 0o777, 0o600, "{}", file.display());
        assert_clean(&file.display().to_string(), &std::fs::read_to_string(file).unwrap_or_default(), &secrets);
    }
    for dir in &dirs {
        assert_eq!(std::fs::metadata(dir).unwrap().permissions().mode() & 0o777, 0o700, "{}", dir.display());
    }

    // Rendered files: the shared secret only in coturn's config, nothing else anywhere.
    let (mut files, mut dirs) = (Vec::new(), Vec::new());
    walk(&out_dir, &mut files, &mut dirs);
    let mut holders = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        if text.contains(SHARED_SECRET) {
            holders.push(file.file_name().unwrap().to_string_lossy().to_string());
        }
        let others: Vec<(String, String)> = secrets.iter().filter(|(_, v)| v != SHARED_SECRET).cloned().collect();
        assert_clean(&file.display().to_string(), &text, &others);
    }
    assert_eq!(holders, ["turnserver.conf"], "the shared secret is in its own destination and nowhere else");
}

/// Linode needs a root password at create: sfuctl generates one, sends it once, and never shows it. Its text is
/// known only to sfuctl (and the fake redacts it on its side), so this asserts what the log shows in its place:
/// the request body with `root_pass` redacted, and no token anywhere.
#[test]
fn the_generated_linode_root_password_is_redacted_in_the_request_log() {
    use crate::support::linode_fake::LinodeFake;
    require_tool("turnserver", "coturn");
    let host = TestHost::start("leak-li");
    let fake = LinodeFake::start_with(&["--address-pool", &host.address(), "--boot-delay", "1"]);
    let dep = CloudDeployment::new("leak-li", &host, &[&host], "  kind: linode\n  region: eu-central\n  size: g6-nanode-1\n");
    dep.write_spec("40000-40099", 1);
    let secrets = secrets(fake.token(), &dep.key);
    let mut stderr = String::new();
    for args in [&["-vv", "up", "--yes", "--no-audit"][..], &["-vv", "down", "--yes"]] {
        let out = dep.sfuctl(&fake, args).output().unwrap();
        let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "sfuctl {args:?}:\n{o}\n{e}");
        assert_clean(&format!("the output of sfuctl {args:?}"), &format!("{o}{e}"), &secrets);
        stderr.push_str(&e);
    }
    let create = stderr.lines().find(|l| l.contains("http: POST /v4/linode/instances body:")).unwrap_or_else(|| panic!("the create request is logged:\n{stderr}"));
    assert!(create.contains(r#""root_pass":"[redacted]""#), "{create}");
}

/// AWS signs every request (SigV4): neither the secret access key nor a signature (the `Authorization` header, an
/// `X-Amz-Signature`) may show at -vv, and RunInstances' form body loses its `UserData`.
#[test]
fn aws_signatures_and_the_secret_key_never_show() {
    use crate::support::moto::Moto;
    require_tool("turnserver", "coturn");
    let host = TestHost::start("leak-aws");
    let moto = Moto::start_with_auth(&["--address-pool", &host.address(), "--pool-exhausted-status", "400"]);
    let dep = CloudDeployment::new("leak-aws", &host, &[&host], "  kind: aws\n  region: us-east-1\n  size: c6i.large\n");
    dep.write_spec("40000-40099", 1);
    // The namespace host takes root, not the image's default login.
    let spec = std::fs::read_to_string(dep.spec()).unwrap().replace("ssh:\n", "ssh:\n  user: root\n");
    std::fs::write(dep.spec(), spec).unwrap();
    let mut secrets = secrets(moto.secret_key(), &dep.key);
    secrets[0].0 = "the AWS secret access key".into();
    let mut stderr = String::new();
    for args in [&["-vv", "up", "--yes", "--no-audit"][..], &["-vv", "status"], &["-vv", "down", "--yes"]] {
        let out = dep.sfuctl(&moto, args).output().unwrap();
        let (o, e) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "sfuctl {args:?}:\n{o}\n{e}");
        assert_clean(&format!("the output of sfuctl {args:?}"), &format!("{o}{e}"), &secrets);
        stderr.push_str(&e);
    }
    let run = stderr.lines().find(|l| l.contains("Action=RunInstances")).unwrap_or_else(|| panic!("the RunInstances body is logged:\n{stderr}"));
    assert!(run.contains("UserData=[redacted]"), "{run}");
    for never in ["AWS4-HMAC-SHA256", "Signature=", "X-Amz-Security-Token"] {
        assert!(!stderr.contains(never), "`{never}` is in the -vv log:\n{stderr}");
    }
}
