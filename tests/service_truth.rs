//! Service truth (issue 14): `status` and the audit say the same of a crash-looping service (restarts counted, last
//! exit shown), `status` exits 3 when a service is not running and says "not deployed" after `down`, and shows
//! the host firewall. On a namespace host (sfuctl's fallback supervisor) and on a fresh VM (systemd).

use self::text::crash_loop;

use crate::support::deployment::Deployment;
use crate::support::netns::TestHost;

/// A server that fails at once with status 7: started again and again.
const CRASHING: &str = "  kind: custom\n  command: sh -c 'echo sfuctl-test-crash >&2; exit 7'\n  rtc_ports: 40000-40099\n";

mod text {
    /// Whether `text` says the service is crash-looping with `exit status 7` after at least one restart.
    pub fn crash_loop(text: &str) -> bool {
        text.contains("crash-looping: restarted ") && text.contains("last exit status 7")
    }
}

/// Runs `f` up to three times until it returns true: between two restarts the crashing server is alive for a
/// moment (shown, rightly, as `active, restarted N times`), and one look may land there.
fn eventually(mut f: impl FnMut() -> (bool, String)) -> String {
    let mut last = String::new();
    for _ in 0..3 {
        let (ok, seen) = f();
        if ok {
            return seen;
        }
        last = seen;
        std::thread::sleep(std::time::Duration::from_millis(700));
    }
    panic!("not seen as crash-looping in three looks; last:\n{last}");
}

#[test]
fn a_crash_loop_under_the_supervisor_is_told_alike_by_status_and_audit() {
    let host = TestHost::start("truth-sup");
    let dep = Deployment::new(&host, "truth-sup", CRASHING, "");
    let up = dep.sfuctl(&["up", "--health-timeout", "5"]).output().unwrap();
    assert_eq!(up.status.code(), Some(1), "never healthy: {}", String::from_utf8_lossy(&up.stderr));

    let status = eventually(|| {
        let out = dep.sfuctl(&["status"]).output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.code() == Some(3) && crash_loop(&text), format!("exit {:?}\n{text}", out.status.code()))
    });
    assert!(status.contains("(supervisor)"), "{status}");
    assert!(status.contains("host firewall: table inet sfuctl_") && status.contains("(policy drop): lets in") && status.contains("udp 40000-40099"), "{status}");

    let audit = eventually(|| {
        let out = dep.sfuctl(&["audit", "--output", "json"]).output().unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let service = v["hosts"][0]["checks"].as_array().unwrap().iter().find(|c| c["id"] == "service").unwrap().clone();
        let detail = service["detail"].as_str().unwrap_or("").to_string();
        (out.status.code() == Some(3) && service["status"] == "fail" && crash_loop(&detail), format!("exit {:?}: {service}", out.status.code()))
    });
    assert!(audit.contains("(supervisor)") && audit.contains("service.log"), "the hint names the log: {audit}");

    let json = dep.sfuctl(&["status", "--output", "json"]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    let service = &v["hosts"][0]["service"];
    assert!(service["restarts"].as_u64().is_some_and(|n| n >= 1), "{v:#}");
    assert_eq!(v["hosts"][0]["firewall"]["loaded"], true, "{v:#}");

    dep.sfuctl(&["down", "--yes"]).assert().success();
    let out = dep.sfuctl(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("not deployed") && !text.contains("inactive"), "{text}");
}

#[test]
fn a_running_service_exits_0_and_shows_its_firewall() {
    let host = TestHost::start("truth-ok");
    let dep = Deployment::new(&host, "truth-ok", "  kind: custom\n  command: sleep 600\n  rtc_ports: 40000-40099\n", "");
    dep.sfuctl(&["up", "--no-audit"]).assert().success();
    let out = dep.sfuctl(&["status"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("active (supervisor)") && text.contains("host firewall: table inet sfuctl_"), "{text}");
    assert!(text.contains(&format!("tcp 22 from {},", host.gateway_address())), "SSH only from the spec's allow_from: {text}");
    // Stopped by hand: not running, exit 3.
    host.exec_in_ns(&["pkill", "-f", &format!("/opt/sfuctl/{}/supervise.sh", dep.name)]);
    host.exec_in_ns(&["pkill", "-f", "sleep 600"]);
    let out = dep.sfuctl(&["status"]).output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", String::from_utf8_lossy(&out.stdout));
    dep.sfuctl(&["down", "--yes"]).assert().success();
}

/// The same crash loop under systemd, on a fresh VM: systemd counts the restarts (NRestarts) and keeps the last
/// exit status (ExecMainStatus) while the unit waits to start again.
#[test]
fn a_crash_loop_under_systemd_on_a_fresh_vm_is_told_alike_by_status_and_audit() {
    let dep = crate::support::freshvm::ExistingVm::start("truth-vm", "root");
    dep.write(CRASHING, "");
    let sfuctl = |args: &[&str]| dep.sfuctl(args).output().unwrap();
    let up = sfuctl(&["up", "--health-timeout", "8"]);
    assert_eq!(up.status.code(), Some(1), "never healthy: {}", String::from_utf8_lossy(&up.stderr));

    let status = eventually(|| {
        let out = sfuctl(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        (out.status.code() == Some(3) && crash_loop(&text), format!("exit {:?}\n{text}{}", out.status.code(), String::from_utf8_lossy(&out.stderr)))
    });
    assert!(status.contains("(systemd)") && status.contains("host firewall: table inet sfuctl_"), "{status}");
    eventually(|| {
        let out = sfuctl(&["audit", "--output", "json"]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let service = v["hosts"][0]["checks"].as_array().and_then(|c| c.iter().find(|c| c["id"] == "service").cloned()).unwrap_or_default();
        let detail = service["detail"].as_str().unwrap_or("").to_string();
        (out.status.code() == Some(3) && crash_loop(&detail) && detail.contains("(systemd)"), format!("exit {:?}: {service}", out.status.code()))
    });

    let down = sfuctl(&["down", "--yes"]);
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let out = sfuctl(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("not deployed") && !text.contains("inactive"), "{text}");
}
