//! Is the server healthy? Three layers: the process is alive, the ports it should own are bound, and the server
//! answers its kind's probe (the descriptor's `health`: Janus `GET /janus/info`, coturn a STUN Binding request).

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::{Result, bail};

use crate::ports::{Manifest, PortRole, Protocol};
use crate::probe;
use crate::kind::HealthProbe;
use crate::spec::Spec;

/// A shell command that prints the host's socket tables (bound UDP, listening TCP), read by [`bound_ports`].
/// `/proc/net` is there on every Linux host, unlike `ss` or `netstat`.
pub const SOCKETS_SCRIPT: &str = "for f in tcp tcp6 udp udp6; do echo \"# $f\"; cat /proc/net/$f 2>/dev/null; done";

/// The ports bound on a host, from [`SOCKETS_SCRIPT`]'s output: `(protocol, port)` for listening TCP sockets
/// and bound UDP sockets.
pub fn bound_ports(output: &str) -> BTreeSet<(Protocol, u16)> {
    let mut ports = BTreeSet::new();
    let mut protocol = None;
    for line in output.lines() {
        if let Some(table) = line.strip_prefix("# ") {
            protocol = Some(if table.starts_with("tcp") { Protocol::Tcp } else { Protocol::Udp });
            continue;
        }
        let fields: Vec<&str> = line.split_whitespace().collect();
        // "sl local_address rem_address st ...": skip the header line.
        let (Some(proto), Some(local), Some(state)) = (protocol, fields.get(1), fields.get(3)) else { continue };
        let Some(port) = local.rsplit(':').next().and_then(|p| u16::from_str_radix(p, 16).ok()) else { continue };
        // TCP state 0A is LISTEN; a UDP socket that is bound shows 07 (unconnected).
        if (proto == Protocol::Tcp && *state == "0A") || (proto == Protocol::Udp && *state == "07") {
            ports.insert((proto, port));
        }
    }
    ports
}

/// The single ports the server itself must have bound: the kind's own ports and the extra ones. The media range
/// is bound per session, so it is not expected at start.
pub fn expected_ports(manifest: &Manifest) -> Vec<(Protocol, u16)> {
    manifest
        .rules
        .iter()
        .filter(|r| matches!(r.role, PortRole::Service | PortRole::Extra))
        .flat_map(|r| (r.ports.start..=r.ports.end).map(move |p| (r.protocol, p)))
        .collect()
}

/// Which expected ports are missing from what is bound.
pub fn missing_ports(manifest: &Manifest, bound: &BTreeSet<(Protocol, u16)>) -> Vec<String> {
    expected_ports(manifest).into_iter().filter(|p| !bound.contains(p)).map(|(proto, port)| format!("{proto} {port}")).collect()
}

/// The kind-specific probe run on the host itself against loopback (python3), so that health says whether the
/// server works and leaves whether it is reachable to the audit. Prints `probe: ok <what>` or `probe: fail <why>`;
/// prints nothing for kinds without a probe, and `probe: unavailable` without python3.
pub fn kind_probe_script(spec: &Spec) -> String {
    let Some(port) = spec.sfu.listen_port() else { return String::new() };
    let program = match &spec.sfu.kind.descriptor().health {
        None => return String::new(),
        Some(HealthProbe::HttpGet { path, json_key, json_value }) => format!(
            "import json, urllib.request\ntry:\n    b = urllib.request.urlopen('http://127.0.0.1:{port}{path}', timeout=1).read()\n    print('probe: ok GET {path} on tcp 127.0.0.1:{port} answered' if json.loads(b).get('{json_key}') == '{json_value}' else 'probe: fail not {json_value}')\nexcept Exception as e:\n    print('probe: fail GET {path} on tcp 127.0.0.1:{port}: %s' % e)\n"
        ),
        Some(HealthProbe::StunBinding {}) => format!(
            "import os, socket, struct\ns = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)\ntx = os.urandom(12)\ntry:\n    s.sendto(struct.pack('!HHI', 1, 0, 0x2112A442) + tx, ('127.0.0.1', {port}))\n    d = s.recv(1500)\n    print('probe: ok STUN Binding on udp 127.0.0.1:{port} answered' if d[:2] == b'\\x01\\x01' and d[8:20] == tx and b'\\x00\\x20' in d[20:] else 'probe: fail not a STUN Binding success')\nexcept Exception as e:\n    print('probe: fail STUN Binding on udp 127.0.0.1:{port}: %s' % e)\n"
        ),
    };
    format!("if command -v python3 >/dev/null 2>&1; then python3 -c {}; else echo 'probe: unavailable'; fi\n", crate::remote::shell_quote(&program))
}

/// The kind-specific probe, from this machine to the host's public address (used where the host has no python3):
/// the descriptor's `health`, e.g. Janus answers `GET /janus/info`, coturn a STUN Binding request. Kinds without
/// one have none (alive and bound is their health).
pub fn kind_probe(spec: &Spec, address: IpAddr, timeout: Duration) -> Result<Option<String>> {
    let Some(port) = spec.sfu.listen_port() else { return Ok(None) };
    let target = SocketAddr::new(address, port);
    let kind = spec.sfu.kind.descriptor();
    match &kind.health {
        None => Ok(None),
        Some(HealthProbe::HttpGet { path, json_value, .. }) => {
            let (status, body) = probe::http_get(target, path, timeout)?;
            if status != 200 || !body.contains(json_value.as_str()) {
                bail!("GET http://{target}{path} answered {status}, not {}'s {json_value}", kind.title);
            }
            Ok(Some(format!("GET {path} on tcp {target} answered")))
        }
        Some(HealthProbe::StunBinding {}) => {
            let mapped = probe::stun_binding(target, timeout)?;
            Ok(Some(format!("STUN Binding on udp {target} answered (mapped {mapped})")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC: &str = "\
# tcp
  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000:1F98 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1 1 0 100 0 0 10 0
   1: 020AC80A:0016 010AC80A:D2F0 01 00000000:00000000 02:0008D1A0 00000000     0        0 2 4 0 20 4 30 10 -1
# tcp6
  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
# udp
   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
  100: 00000000:0D96 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 3 2 0 0
# udp6
";

    #[test]
    fn reads_listening_tcp_and_bound_udp() {
        let ports = bound_ports(PROC);
        assert_eq!(ports, BTreeSet::from([(Protocol::Tcp, 8088), (Protocol::Udp, 3478)]));
    }

    #[test]
    fn janus_probe_script_is_unchanged() {
        let spec = Spec::parse("name: t\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.9 }] }\nsfu: { kind: janus, rtc_ports: 40000-41000 }\n").unwrap();
        let port = 8088;
        let program = format!(
            "import json, urllib.request\ntry:\n    b = urllib.request.urlopen('http://127.0.0.1:{port}/janus/info', timeout=1).read()\n    print('probe: ok GET /janus/info on tcp 127.0.0.1:{port} answered' if json.loads(b).get('janus') == 'server_info' else 'probe: fail not server_info')\nexcept Exception as e:\n    print('probe: fail GET /janus/info on tcp 127.0.0.1:{port}: %s' % e)\n"
        );
        assert!(kind_probe_script(&spec).contains(&crate::remote::shell_quote(&program)));
        let mediasoup = Spec::parse("name: t\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.9 }] }\nsfu: { kind: mediasoup, rtc_ports: 40000-41000 }\n").unwrap();
        assert_eq!(kind_probe_script(&mediasoup), "");
    }

    #[test]
    fn coturn_expects_its_listening_port_on_both_protocols() {
        let spec = Spec::parse("name: t\nprovider: { kind: ssh, hosts: [{ name: a, address: 203.0.113.9 }] }\nsfu: { kind: coturn, rtc_ports: 40000-41000 }\n").unwrap();
        let m = spec.manifest();
        assert_eq!(expected_ports(&m), vec![(Protocol::Udp, 3478), (Protocol::Tcp, 3478)]);
        assert_eq!(missing_ports(&m, &bound_ports(PROC)), vec!["tcp 3478"]);
    }
}
