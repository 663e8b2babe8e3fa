//! The host firewall in one line, for `status`: what sfuctl's nftables table lets in (protocol, ports, from where),
//! its policy, and how many packets it has dropped, read from `nft list table inet <table>` on the host.

use serde::Serialize;

/// What `nft list table` showed of sfuctl's table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FirewallSummary {
    /// Whether the table is loaded.
    pub loaded: bool,
    /// The input chain's policy (`drop`), when the table is loaded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What is let in, one entry per accepting port rule: `udp 40000-40999`, `tcp 22 from 203.0.113.0/24`.
    pub allows: Vec<String>,
    /// Rules in the table's chains.
    pub rules: usize,
    /// Packets counted by the final "dropped by sfuctl" counter, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dropped_packets: Option<u64>,
}

impl FirewallSummary {
    /// Reads the output of `nft list table inet <table>` (empty when the table is not loaded).
    pub fn parse(listing: &str) -> Self {
        let mut out = Self { loaded: listing.contains("table inet "), ..Self::default() };
        if !out.loaded {
            return out;
        }
        for line in listing.lines().map(str::trim) {
            if line.is_empty() || line.starts_with("table ") || line.starts_with("chain ") || line == "}" {
                continue;
            }
            if line.starts_with("type ") {
                if let Some(policy) = line.split("policy ").nth(1) {
                    out.policy = Some(policy.trim_end_matches(';').trim().to_string());
                }
                continue;
            }
            out.rules += 1;
            let words: Vec<&str> = line.split_whitespace().collect();
            if words.contains(&"counter") && line.contains("dropped by sfuctl") {
                out.dropped_packets = words.iter().position(|w| *w == "packets").and_then(|i| words.get(i + 1)).and_then(|n| n.parse().ok());
                continue;
            }
            if !words.contains(&"accept") {
                continue;
            }
            let Some(dport) = words.iter().position(|w| *w == "dport") else { continue };
            let proto = words[..dport].last().copied().unwrap_or("?");
            let ports = set_or_word(&words[dport + 1..]);
            let from = words.iter().position(|w| *w == "saddr").map(|i| set_or_word(&words[i + 1..]));
            out.allows.push(match from {
                Some(from) => format!("{proto} {ports} from {from}"),
                None => format!("{proto} {ports}"),
            });
        }
        out
    }

    /// `table inet sfuctl_x (policy drop): udp 40000-40999, tcp 22 from 203.0.113.0/24; 12 packets dropped`, or
    /// `not loaded`.
    pub fn line(&self, table: &str) -> String {
        if !self.loaded {
            return format!("table inet {table} not loaded");
        }
        let policy = self.policy.as_deref().map(|p| format!(" (policy {p})")).unwrap_or_default();
        let allows = if self.allows.is_empty() { "no port let in".to_string() } else { format!("lets in {}", self.allows.join(", ")) };
        let dropped = self.dropped_packets.map(|n| format!("; {n} packets dropped")).unwrap_or_default();
        format!("table inet {table}{policy}: {allows}{dropped}")
    }
}

/// The value after a keyword: one word, or a `{ a, b }` set joined as `a, b`.
fn set_or_word(words: &[&str]) -> String {
    match words.first() {
        Some(&"{") => words[1..].iter().take_while(|w| **w != "}").map(|w| w.trim_end_matches(',')).collect::<Vec<_>>().join(", "),
        Some(w) => w.to_string(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LISTING: &str = r#"table inet sfuctl_existing {
	chain input {
		type filter hook input priority filter; policy drop;
		iif "lo" accept
		ct state established,related accept
		ct state invalid drop
		meta l4proto icmp accept
		udp dport 68 accept comment "DHCP client"
		ip saddr { 203.0.113.0/24, 198.51.100.7 } tcp dport 22 accept comment "SSH"
		ip6 saddr 2001:db8::/32 tcp dport 22 accept comment "SSH"
		udp dport 40000-40999 accept comment "TURN relay range"
		counter packets 12 bytes 840 comment "dropped by sfuctl"
	}
}
"#;

    #[test]
    fn a_loaded_table_is_summarised() {
        let s = FirewallSummary::parse(LISTING);
        assert_eq!(s.allows, ["udp 68", "tcp 22 from 203.0.113.0/24, 198.51.100.7", "tcp 22 from 2001:db8::/32", "udp 40000-40999"]);
        assert_eq!((s.rules, s.dropped_packets, s.policy.as_deref()), (9, Some(12), Some("drop")));
        assert_eq!(
            s.line("sfuctl_existing"),
            "table inet sfuctl_existing (policy drop): lets in udp 68, tcp 22 from 203.0.113.0/24, 198.51.100.7, tcp 22 from 2001:db8::/32, udp 40000-40999; 12 packets dropped"
        );
    }

    #[test]
    fn a_missing_table_says_so() {
        let s = FirewallSummary::parse("");
        assert!(!s.loaded);
        assert_eq!(s.line("sfuctl_x"), "table inet sfuctl_x not loaded");
    }
}
