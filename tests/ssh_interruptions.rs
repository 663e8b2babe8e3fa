//! SIGKILL in the middle of deploying over SSH (issue 14): `up -v` logs every SSH step as it starts, the test kills
//! sfuctl at each of them in turn (a little later each time, so some kills land inside an upload), and then proves
//! the host is never left half-made: the next `up` converges to one healthy service with the artifact whole, no
//! upload's temporary file is left, and `down` removes everything.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use crate::support::deployment::Deployment;
use crate::support::netns::TestHost;

/// The service's processes on the host (the supervisor's `sleep` stand-in for a server).
fn servers(host: &TestHost) -> usize {
    let out = std::process::Command::new("ip").args(["netns", "pids", host.ns()]).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/cmdline")).ok())
        .filter(|c| c.replace('\0', " ").trim() == "sleep 600")
        .count()
}

/// Files an upload left behind (`.<name>.sfuctl-tmp-…`) anywhere under the deployment's directory.
fn upload_leftovers(dir: &std::path::Path) -> Vec<String> {
    let out = std::process::Command::new("find").arg(dir).args(["-name", "*.sfuctl-tmp-*"]).output().unwrap();
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

/// Runs `up -v` and SIGKILLs it `delay` after its `step`-th SSH step (1-based) starts; returns whether it was
/// killed (false: the run ended before that step).
fn kill_at_step(dep: &Deployment, step: usize, delay: Duration) -> bool {
    let mut child = dep.process(&["up", "-v", "--no-audit"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("sfuctl runs");
    let stderr = child.stderr.take().unwrap();
    let mut seen = 0;
    let mut killed = false;
    for line in BufReader::new(stderr).lines().map_while(Result::ok) {
        if line.contains("] ssh: ") && (line.contains(": run ") || line.contains(": upload ")) {
            seen += 1;
            if seen == step {
                std::thread::sleep(delay);
                killed = child.kill().is_ok();
                break;
            }
        }
    }
    let _ = child.wait();
    killed
}

#[test]
fn sigkill_at_every_ssh_step_of_up_leaves_nothing_half_made() {
    let host = TestHost::start("kill-ssh");
    let app = crate::support::deployment::sleeper_app();
    // Enough bytes that an upload takes a while: some kills land inside it.
    let data: Vec<u8> = (0..6_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(app.path().join("data.bin"), &data).unwrap();
    let sfu = format!("  kind: custom\n  artifact: {}\n  command: ./bin/run.sh\n  rtc_ports: 40000-40099\n", app.path().display());
    let dep = Deployment::new(&host, "kill", &sfu, "");

    // A clean first deployment counts the SSH steps; `down` resets the host for the kills.
    let clean = dep.process(&["up", "-v", "--no-audit"]).output().unwrap();
    let log = String::from_utf8_lossy(&clean.stderr);
    assert!(clean.status.success(), "{log}");
    let steps = log.lines().filter(|l| l.contains("] ssh: ") && (l.contains(": run ") || l.contains(": upload "))).count();
    assert!(steps >= 5, "up -v logs its SSH steps:\n{log}");
    dep.sfuctl(&["down", "--yes"]).assert().success();

    let mut kills = 0;
    for step in 1..=steps {
        let delay = Duration::from_millis(25 * (step as u64 % 4));
        kills += usize::from(kill_at_step(&dep, step, delay));
        let again = dep.sfuctl(&["up", "--no-audit"]).output().unwrap();
        assert!(again.status.success(), "killed at step {step}/{steps}: the next up converges\n{}", String::from_utf8_lossy(&again.stderr));
        assert_eq!(servers(&host), 1, "killed at step {step}: exactly one server runs");
        assert_eq!(std::fs::read(dep.root().join("app/data.bin")).unwrap(), data, "killed at step {step}: the artifact is whole");
        assert_eq!(upload_leftovers(&dep.root()), Vec::<String>::new(), "killed at step {step}: no upload left a temporary file");
        dep.sfuctl(&["down", "--yes"]).assert().success();
        assert!(!dep.root().exists() && servers(&host) == 0, "killed at step {step}: down removes everything");
    }
    eprintln!("{kills} of {steps} runs killed mid-way");
    assert!(kills >= steps - 1, "{kills} of {steps} runs were killed mid-way");
}
