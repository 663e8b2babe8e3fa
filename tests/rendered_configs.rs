//! Every template of every kind, rendered from the examples: snapshots, and checks by the configs' own tools
//! (node loads the mediasoup module, systemd-analyze verifies the unit, nft checks the ruleset).

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::support::cli::{examples, require_tool, sfuctl};

/// Renders one example into a temp dir with a fixed secret and address; returns (dir, host dirs).
fn render(spec: &Path) -> (tempfile::TempDir, Vec<PathBuf>) {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut cmd = sfuctl(home.path());
    cmd.env("SFUCTL_SECRET", "snapshot-secret-0123456789abcdef0123456789abcdef").args(["render", "--out"]).arg(out.path()).arg(spec);
    if !spec.ends_with("existing-host.yaml") {
        cmd.args(["--address", "203.0.113.5"]);
    }
    cmd.assert().success();
    let hosts = std::fs::read_dir(out.path()).unwrap().map(|e| e.unwrap().path()).collect();
    (out, hosts)
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() { out.extend(files_under(&path)) } else { out.push(path) }
    }
    out.sort();
    out
}

fn find(host: &Path, suffix: &str) -> Option<PathBuf> {
    files_under(host).into_iter().find(|p| p.to_string_lossy().ends_with(suffix))
}

#[test]
fn every_rendered_file_matches_its_snapshot() {
    for spec in examples() {
        let example = spec.file_stem().unwrap().to_string_lossy().into_owned();
        let (_out, hosts) = render(&spec);
        for host in hosts {
            for file in files_under(&host) {
                let rel = file.strip_prefix(&host).unwrap().to_string_lossy().replace('/', "__");
                let contents = std::fs::read_to_string(&file).unwrap();
                insta::assert_snapshot!(format!("{example}__{rel}"), contents);
            }
        }
    }
}

#[test]
fn node_loads_the_mediasoup_module_with_both_shapes() {
    require_tool("node", "nodejs");
    let (_out, hosts) = render(&crate::support::cli::example("mediasoup-digitalocean.yaml"));
    let module = find(&hosts[0], "config/mediasoup-config.js").expect("mediasoup config rendered");
    let check = r#"
        const c = require(process.argv[1]);
        const assert = require('assert');
        assert.strictEqual(c.announcedAddress, '203.0.113.5');
        assert.deepStrictEqual(c.webRtcTransportOptions.listenInfos[0],
            { protocol: 'udp', ip: '0.0.0.0', announcedAddress: '203.0.113.5', announcedIp: '203.0.113.5', portRange: { min: 40000, max: 41000 } });
        assert.strictEqual(c.webRtcTransportOptions.listenInfos.length, 1, 'no TCP listenInfo: the firewalls open no TCP media');
        assert.strictEqual(c.legacyWebRtcTransportOptions.enableTcp, false);
        assert.deepStrictEqual(c.worker, { rtcMinPort: 40000, rtcMaxPort: 41000 });
        assert.deepStrictEqual(c.legacyWebRtcTransportOptions.listenIps, [{ ip: '0.0.0.0', announcedIp: '203.0.113.5' }]);
        console.log('ok');
    "#;
    let out = Command::new("node").args(["-e", check]).arg(&module).output().unwrap();
    assert!(out.status.success(), "node: {}", String::from_utf8_lossy(&out.stderr));
    let env = std::fs::read_to_string(find(&hosts[0], "config/mediasoup.env").unwrap()).unwrap();
    assert!(env.contains("MEDIASOUP_ANNOUNCED_ADDRESS=203.0.113.5\n") && env.contains("MEDIASOUP_MIN_PORT=40000\n"));
    // The app makes WebRtcTransports on the media range: no WebRtcServer on a port the manifest does not open.
    assert!(env.contains("\nMEDIASOUP_USE_WEBRTC_SERVER=false\n") && env.contains("\nMEDIASOUP_CONFIG=/opt/sfuctl/clearcomms/config/mediasoup-config.js\n"), "{env}");
}

#[test]
fn systemd_analyze_verifies_every_unit() {
    require_tool("systemd-analyze", "systemd");
    require_tool("nft", "nftables");
    for spec in examples() {
        let (_out, hosts) = render(&spec);
        for host in hosts {
            let unit = files_under(&host).into_iter().find(|p| p.extension().is_some_and(|e| e == "service")).unwrap();
            // A root with the host's files (so ExecStart exists) and systemd's own units (so targets resolve).
            let root = tempfile::tempdir().unwrap();
            let system = root.path().join("usr/lib/systemd");
            std::fs::create_dir_all(&system).unwrap();
            assert!(Command::new("cp").args(["-r", "/usr/lib/systemd/system"]).arg(&system).status().unwrap().success());
            assert!(Command::new("cp").arg("-r").arg(host.join("opt")).arg(root.path()).status().unwrap().success());
            // cloud-init installs nftables on every host; the unit loads the host firewall with it.
            std::fs::create_dir_all(root.path().join("usr/sbin")).unwrap();
            std::fs::copy("/usr/sbin/nft", root.path().join("usr/sbin/nft")).unwrap();
            let etc = root.path().join("etc/systemd/system");
            std::fs::create_dir_all(&etc).unwrap();
            let name = unit.file_name().unwrap();
            std::fs::copy(&unit, etc.join(name)).unwrap();
            let out = Command::new("systemd-analyze").arg("verify").arg(format!("--root={}", root.path().display())).arg(name).output().unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success() && stderr.trim().is_empty(), "{}: {stderr}", spec.display());
        }
    }
}

#[test]
fn nft_accepts_every_host_ruleset() {
    require_tool("nft", "nftables");
    for spec in examples() {
        let (_out, hosts) = render(&spec);
        for host in hosts {
            let ruleset = find(&host, "nftables.nft").expect("host firewall rendered");
            // --check parses and validates in the kernel without changing anything.
            let out = Command::new("nft").args(["--check", "-f"]).arg(&ruleset).output().unwrap();
            assert!(out.status.success(), "{}: {}", spec.display(), String::from_utf8_lossy(&out.stderr));
        }
    }
}

#[test]
fn yaml_outputs_parse_and_carry_the_manifest() {
    let (_out, hosts) = render(&crate::support::cli::example("livekit-aws.yaml"));
    let livekit: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(find(&hosts[0], "livekit.yaml").unwrap()).unwrap()).unwrap();
    assert_eq!(livekit["rtc"]["port_range_start"].as_u64(), Some(50000));
    assert_eq!(livekit["rtc"]["port_range_end"].as_u64(), Some(51000));
    assert_eq!(livekit["rtc"]["tcp_port"].as_u64(), Some(7881));
    assert_eq!(livekit["rtc"]["node_ip"].as_str(), Some("203.0.113.5"));
    assert_eq!(livekit["rtc"]["use_external_ip"].as_bool(), Some(false));
    assert!(livekit["keys"]["sfuctl"].as_str().is_some_and(|s| s.len() >= 32));
    let user_data: serde_yaml::Value = serde_yaml::from_str(&std::fs::read_to_string(hosts[0].join("cloud-init/user-data")).unwrap()).unwrap();
    let files = user_data["write_files"].as_sequence().unwrap();
    let nft = files.iter().find(|f| f["path"].as_str().unwrap().ends_with("nftables.nft")).unwrap();
    assert!(nft["content"].as_str().unwrap().contains("udp dport 50000-51000 accept"));
}

#[test]
fn mediasoup_gets_a_tcp_listen_info_exactly_when_the_manifest_opens_tcp_media() {
    require_tool("node", "nodejs");
    require_tool("nft", "nftables");
    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("mediasoup-tcp.yaml");
    let source = std::fs::read_to_string(crate::support::cli::example("mediasoup-digitalocean.yaml")).unwrap();
    std::fs::write(&spec, source.replace("  rtc_ports: 40000-41000\n", "  rtc_ports: 40000-41000\n  rtc_tcp: true\n")).unwrap();
    let (_out, hosts) = render(&spec);
    let module = find(&hosts[0], "config/mediasoup-config.js").expect("mediasoup config rendered");
    let check = r#"
        const c = require(process.argv[1]);
        const assert = require('assert');
        assert.deepStrictEqual(c.webRtcTransportOptions.listenInfos.map((l) => l.protocol), ['udp', 'tcp']);
        assert.deepStrictEqual(c.webRtcTransportOptions.listenInfos[1],
            { protocol: 'tcp', ip: '0.0.0.0', announcedAddress: '203.0.113.5', announcedIp: '203.0.113.5', portRange: { min: 40000, max: 41000 } });
        assert.strictEqual(c.legacyWebRtcTransportOptions.enableTcp, true);
        console.log('ok');
    "#;
    let out = Command::new("node").args(["-e", check]).arg(&module).output().unwrap();
    assert!(out.status.success(), "node: {}", String::from_utf8_lossy(&out.stderr));
    // The same range over TCP in the host firewall (and nft accepts the ruleset) and in the cloud firewall's plan.
    let ruleset = find(&hosts[0], "nftables.nft").unwrap();
    let text = std::fs::read_to_string(&ruleset).unwrap();
    assert!(text.contains("tcp dport 40000-41000 accept") && text.contains("udp dport 40000-41000 accept"), "{text}");
    let out = Command::new("nft").args(["--check", "-f"]).arg(&ruleset).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let home = tempfile::tempdir().unwrap();
    let plan = sfuctl(home.path()).args(["plan"]).arg(&spec).output().unwrap();
    let plan = String::from_utf8_lossy(&plan.stdout);
    assert!(plan.contains("tcp 40000-41000"), "{plan}");
}
