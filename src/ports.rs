//! The port manifest: every public port of a deployment, with its protocol, purpose and allowed sources.
//!
//! It is derived once from the spec and the SFU kind, and it is the only source for the cloud firewall rules, the
//! host firewall ruleset, the ports in the SFU's own config, and the audit. No layer types a port list of its own,
//! so the layers cannot drift apart.

use ipnet::IpNet;
use serde::Serialize;

use crate::kind::KindDescriptor;
use crate::spec::{Spec, parse_cidr};

pub use crate::port_range::{PortRange, Protocol};

/// What a public port is for; the audit and the templates pick ports by role, not by number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PortRole {
    /// SSH, from `ssh.allow_from` only.
    Ssh,
    /// The UDP media range (`sfu.rtc_ports`).
    Media,
    /// A port the SFU kind itself listens on (`sfu.listen_port`, `sfu.ice_tcp_port`).
    Service,
    /// A port listed in `sfu.tcp_ports` or `sfu.udp_ports`.
    Extra,
}

/// One entry of the manifest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PortRule {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The port or range.
    pub ports: PortRange,
    /// What it is for, in words (`media (RTP/RTCP)`, `Janus HTTP API`).
    pub purpose: String,
    /// Its role, for code that picks ports by meaning.
    pub role: PortRole,
    /// Who may reach it.
    pub sources: Vec<IpNet>,
    /// The spec field it comes from, for messages.
    #[serde(skip)]
    pub field: &'static str,
}

/// A cloud firewall rule: manifest entries with the same protocol and sources, adjacent ranges merged.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct CloudRule {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The merged port range.
    pub ports: PortRange,
    /// Who may reach it.
    pub sources: Vec<IpNet>,
    /// The purposes merged into this rule.
    pub purposes: Vec<String>,
}

/// The port manifest of a deployment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Manifest {
    /// Every public port, in a stable order: SSH, media, the kind's own ports, then extras.
    pub rules: Vec<PortRule>,
}

/// `0.0.0.0/0` and `::/0`.
pub fn anywhere() -> Vec<IpNet> {
    vec!["0.0.0.0/0".parse().expect("valid CIDR"), "::/0".parse().expect("valid CIDR")]
}

impl Manifest {
    /// Derives the manifest from a spec. Invalid CIDRs are left out here; validation reports them.
    pub fn derive(spec: &Spec) -> Self {
        Self::derive_for(spec, spec.sfu.kind.descriptor())
    }

    /// Derives the manifest from a spec for the server kind `kind` (its descriptor gives the media range's purpose
    /// and the kind's own ports).
    pub fn derive_for(spec: &Spec, kind: &KindDescriptor) -> Self {
        let sfu = &spec.sfu;
        let ssh_sources = match &spec.ssh.allow_from {
            Some(list) => list.iter().filter_map(|raw| parse_cidr(raw).ok()).collect(),
            None => anywhere(),
        };
        let mut rules = vec![PortRule {
            protocol: Protocol::Tcp,
            ports: PortRange::single(spec.ssh.port()),
            purpose: "SSH".into(),
            role: PortRole::Ssh,
            sources: ssh_sources,
            field: "ssh.port",
        }];
        rules.push(PortRule {
            protocol: Protocol::Udp,
            ports: sfu.rtc_ports,
            purpose: kind.media_purpose.clone(),
            role: PortRole::Media,
            sources: anywhere(),
            field: "sfu.rtc_ports",
        });
        if sfu.rtc_tcp {
            rules.push(PortRule {
                protocol: Protocol::Tcp,
                ports: sfu.rtc_ports,
                purpose: "media over TCP (ICE-TCP)".into(),
                role: PortRole::Media,
                sources: anywhere(),
                field: "sfu.rtc_tcp",
            });
        }
        for own in &kind.own_ports {
            let port = own.field.in_spec(sfu).unwrap_or(own.default);
            for rule in &own.rules {
                rules.push(PortRule {
                    protocol: rule.protocol,
                    ports: PortRange::single(port),
                    purpose: rule.purpose.clone(),
                    role: PortRole::Service,
                    sources: anywhere(),
                    field: own.field.path(),
                });
            }
        }
        for (protocol, ports, field) in [(Protocol::Tcp, &sfu.tcp_ports, "sfu.tcp_ports"), (Protocol::Udp, &sfu.udp_ports, "sfu.udp_ports")] {
            for &port in ports {
                // A port the kind opens anyway (Janus `tcp_ports: [8088]`) is one rule, not two.
                let opened = rules.iter().any(|r| r.role == PortRole::Service && r.protocol == protocol && r.ports == PortRange::single(port));
                if opened {
                    continue;
                }
                rules.push(PortRule {
                    protocol,
                    ports: PortRange::single(port),
                    purpose: format!("{field} {port}").replacen("sfu.", "", 1),
                    role: PortRole::Extra,
                    sources: anywhere(),
                    field,
                });
            }
        }
        Self { rules }
    }

    /// The UDP media range.
    pub fn media(&self) -> PortRange {
        self.rules.iter().find(|r| r.role == PortRole::Media && r.protocol == Protocol::Udp).map(|r| r.ports).expect("the manifest always has a media range")
    }

    /// The media range over TCP, when `sfu.rtc_tcp` opens it (ICE-TCP).
    pub fn tcp_media(&self) -> Option<PortRange> {
        self.rules.iter().find(|r| r.role == PortRole::Media && r.protocol == Protocol::Tcp).map(|r| r.ports)
    }

    /// The SSH rule.
    pub fn ssh(&self) -> &PortRule {
        self.rules.iter().find(|r| r.role == PortRole::Ssh).expect("the manifest always has an SSH rule")
    }

    /// Every public port of a protocol other than SSH and the media range, sorted.
    pub fn single_ports(&self, protocol: Protocol) -> Vec<u16> {
        let mut ports: Vec<u16> = self
            .rules
            .iter()
            .filter(|r| r.protocol == protocol && !matches!(r.role, PortRole::Ssh | PortRole::Media))
            .flat_map(|r| r.ports.start..=r.ports.end)
            .collect();
        ports.sort_unstable();
        ports.dedup();
        ports
    }

    /// Whether any public port other than SSH is below 1024 (the service then needs CAP_NET_BIND_SERVICE).
    pub fn needs_privileged_ports(&self) -> bool {
        self.rules.iter().any(|r| r.role != PortRole::Ssh && r.ports.start < 1024)
    }

    /// The rules a cloud firewall gets: entries with the same protocol and sources are merged where their ranges
    /// touch or overlap, so `7000` and `7001` become `7000-7001`.
    pub fn cloud_rules(&self) -> Vec<CloudRule> {
        let mut sorted: Vec<&PortRule> = self.rules.iter().collect();
        sorted.sort_by(|a, b| (a.protocol, &a.sources, a.ports).cmp(&(b.protocol, &b.sources, b.ports)));
        let mut merged: Vec<CloudRule> = Vec::new();
        for rule in sorted {
            if let Some(last) = merged.last_mut() {
                let touches = u32::from(rule.ports.start) <= u32::from(last.ports.end) + 1;
                if last.protocol == rule.protocol && last.sources == rule.sources && touches {
                    last.ports.end = last.ports.end.max(rule.ports.end);
                    last.purposes.push(rule.purpose.clone());
                    continue;
                }
            }
            merged.push(CloudRule { protocol: rule.protocol, ports: rule.ports, sources: rule.sources.clone(), purposes: vec![rule.purpose.clone()] });
        }
        // Present them in manifest order (SSH, media, service, extras) rather than sorted by protocol.
        let position = |c: &CloudRule| self.rules.iter().position(|r| c.purposes.first() == Some(&r.purpose)).unwrap_or(usize::MAX);
        merged.sort_by_key(position);
        merged
    }
}

impl Spec {
    /// The port manifest of this spec (see [`Manifest`]).
    pub fn manifest(&self) -> Manifest {
        Manifest::derive(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(kind: &str, extra: &str) -> Spec {
        Spec::parse(&format!(
            "name: t\nprovider: {{ kind: digitalocean, region: fra1 }}\nssh: {{ allow_from: [203.0.113.7/32] }}\nsfu:\n  kind: {kind}\n  rtc_ports: 40000-41000\n{extra}"
        ))
        .unwrap()
    }

    #[test]
    fn ranges_parse_and_print() {
        assert_eq!("40000-41000".parse::<PortRange>().unwrap(), PortRange { start: 40000, end: 41000 });
        assert_eq!("443".parse::<PortRange>().unwrap().to_string(), "443");
        assert!("40000-".parse::<PortRange>().is_err());
        assert!("70000".parse::<PortRange>().is_err());
        assert_eq!(PortRange { start: 40000, end: 41000 }.len(), 1001);
    }

    #[test]
    fn janus_manifest_has_ssh_media_and_http() {
        let m = spec("janus", "  tcp_ports: [443]\n").manifest();
        let lines: Vec<String> = m.rules.iter().map(|r| format!("{} {} {}", r.protocol, r.ports, r.purpose)).collect();
        assert_eq!(lines, ["tcp 22 SSH", "udp 40000-41000 media (RTP/RTCP)", "tcp 8088 Janus HTTP API", "tcp 443 tcp_ports 443"]);
        assert_eq!(m.ssh().sources, vec!["203.0.113.7/32".parse::<IpNet>().unwrap()]);
        assert_eq!(m.single_ports(Protocol::Tcp), vec![443, 8088]);
        assert!(m.needs_privileged_ports());
    }

    #[test]
    fn rtc_tcp_opens_the_media_range_over_tcp_too() {
        let m = spec("mediasoup", "  rtc_tcp: true\n  tcp_ports: [3000]\n").manifest();
        let lines: Vec<String> = m.rules.iter().map(|r| format!("{} {} {}", r.protocol, r.ports, r.purpose)).collect();
        assert_eq!(lines, ["tcp 22 SSH", "udp 40000-41000 media (RTP/RTCP)", "tcp 40000-41000 media over TCP (ICE-TCP)", "tcp 3000 tcp_ports 3000"]);
        assert_eq!(m.media(), PortRange { start: 40000, end: 41000 });
        assert_eq!(m.single_ports(Protocol::Tcp), vec![3000], "the TCP media range is no single port to connect to");
        assert_eq!(m.tcp_media(), Some(PortRange { start: 40000, end: 41000 }), "the audit samples it");
        assert_eq!(spec("mediasoup", "").manifest().rules.len(), 2, "no TCP media unless asked");
        assert_eq!(spec("mediasoup", "").manifest().tcp_media(), None);
    }

    #[test]
    fn coturn_listens_on_udp_and_tcp() {
        let m = spec("coturn", "").manifest();
        assert_eq!(m.single_ports(Protocol::Udp), vec![3478]);
        assert_eq!(m.single_ports(Protocol::Tcp), vec![3478]);
        assert!(!m.needs_privileged_ports());
    }

    #[test]
    fn livekit_has_signaling_and_ice_tcp() {
        let m = spec("livekit", "").manifest();
        assert_eq!(m.single_ports(Protocol::Tcp), vec![7880, 7881]);
    }

    #[test]
    fn adjacent_ports_with_the_same_sources_merge() {
        let m = spec("livekit", "  tcp_ports: [7882, 9000]\n").manifest();
        let rules: Vec<String> = m.cloud_rules().iter().map(|r| format!("{} {}", r.protocol, r.ports)).collect();
        assert_eq!(rules, ["tcp 22", "udp 40000-41000", "tcp 7880-7882", "tcp 9000"]);
        assert_eq!(rules.len(), 4);
    }
}
