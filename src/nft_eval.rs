//! Would the host's firewall drop a packet? An evaluator for the subset of nftables rulesets (`nft -j list
//! ruleset`) that host firewalls use: ports, protocols, source prefixes, interfaces, conntrack state, verdicts,
//! jumps. ufw and iptables-nft rules appear in the same ruleset.
//!
//! Each packet is walked through every base chain on the `prerouting` and `input` hooks: a drop in any chain
//! drops it (an accept only ends its own chain). Expressions the evaluator does not know make the answer
//! uncertain rather than wrong: the rule is treated as not matching and the result says so.

use std::collections::HashMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde_json::Value;

use crate::ports::Protocol;

/// A new inbound packet, as the host sees it.
#[derive(Clone, Debug)]
pub struct Packet {
    /// UDP or TCP.
    pub protocol: Protocol,
    /// The destination port.
    pub dport: u16,
    /// The source address (this machine, as the host sees it).
    pub saddr: IpAddr,
    /// The interface it arrives on.
    pub iif: String,
}

/// The ruleset's answer for one packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Whether the packet gets through every chain.
    pub accepted: bool,
    /// The chain that dropped it (`table/chain`), when one did.
    pub dropped_by: Option<String>,
    /// Expressions the evaluator did not understand on the way (the answer may then be wrong).
    pub unknown: Vec<String>,
}

struct Rule {
    exprs: Vec<Value>,
}

struct Chain {
    hook: Option<String>,
    policy_drop: bool,
    rules: Vec<Rule>,
}

/// A parsed ruleset.
pub struct Ruleset {
    /// Chains by `family/table/chain`.
    chains: HashMap<String, Chain>,
    /// Base chains in the order listed (their keys).
    base: Vec<String>,
    /// Tables, as `family/name`.
    tables: Vec<String>,
}

enum Outcome {
    Accept,
    Drop,
    Return,
    Continue,
}

impl Ruleset {
    /// Parses the output of `nft -j list ruleset`.
    pub fn parse(json: &str) -> anyhow::Result<Self> {
        let doc: Value = serde_json::from_str(json)?;
        let items = doc["nftables"].as_array().ok_or_else(|| anyhow::anyhow!("no `nftables` list in the ruleset"))?;
        let mut chains: HashMap<String, Chain> = HashMap::new();
        let mut base = Vec::new();
        let mut tables = Vec::new();
        let key = |v: &Value, name: &str| format!("{}/{}/{}", v["family"].as_str().unwrap_or(""), v["table"].as_str().unwrap_or(""), name);
        for item in items {
            if let Some(t) = item.get("table") {
                tables.push(format!("{}/{}", t["family"].as_str().unwrap_or(""), t["name"].as_str().unwrap_or("")));
            } else if let Some(c) = item.get("chain") {
                let k = key(c, c["name"].as_str().unwrap_or(""));
                let hook = c["hook"].as_str().map(str::to_string);
                if hook.is_some() && c["type"].as_str() == Some("filter") {
                    base.push(k.clone());
                }
                chains.insert(k, Chain { hook, policy_drop: c["policy"].as_str() == Some("drop"), rules: Vec::new() });
            } else if let Some(r) = item.get("rule") {
                let k = key(r, r["chain"].as_str().unwrap_or(""));
                let exprs = r["expr"].as_array().cloned().unwrap_or_default();
                chains.entry(k).or_insert(Chain { hook: None, policy_drop: false, rules: Vec::new() }).rules.push(Rule { exprs });
            }
        }
        Ok(Self { chains, base, tables })
    }

    /// Whether the ruleset holds table `name` of `family` (`inet`, `ip`, ...).
    pub fn has_table(&self, family: &str, name: &str) -> bool {
        self.tables.iter().any(|t| t == &format!("{family}/{name}"))
    }

    /// Evaluates a new inbound packet.
    pub fn evaluate(&self, packet: &Packet) -> Verdict {
        let mut unknown = Vec::new();
        for k in &self.base {
            let chain = &self.chains[k];
            let family = k.split('/').next().unwrap_or("");
            let applies = match family {
                "inet" | "netdev" | "bridge" => true,
                "ip" => packet.saddr.is_ipv4(),
                "ip6" => packet.saddr.is_ipv6(),
                _ => false,
            };
            if !applies || !matches!(chain.hook.as_deref(), Some("input" | "prerouting")) {
                continue;
            }
            let dropped = match self.run(k, packet, &mut unknown, 0) {
                Outcome::Drop => true,
                Outcome::Accept => false,
                Outcome::Return | Outcome::Continue => chain.policy_drop,
            };
            if dropped {
                let short = k.split_once('/').map_or(&k[..], |(_, rest)| rest).to_string();
                return Verdict { accepted: false, dropped_by: Some(short), unknown };
            }
        }
        Verdict { accepted: true, dropped_by: None, unknown }
    }

    fn run(&self, chain: &str, packet: &Packet, unknown: &mut Vec<String>, depth: u32) -> Outcome {
        let Some(c) = self.chains.get(chain) else { return Outcome::Continue };
        if depth > 16 {
            unknown.push(format!("jumps nested deeper than 16 at {chain}"));
            return Outcome::Continue;
        }
        let family = chain.split('/').next().unwrap_or("");
        let table = chain.split('/').nth(1).unwrap_or("");
        'rules: for rule in &c.rules {
            for e in &rule.exprs {
                if let Some(m) = e.get("match") {
                    match matches(m, packet) {
                        Some(true) => continue,
                        Some(false) => continue 'rules,
                        None => {
                            unknown.push(compact(m));
                            continue 'rules;
                        }
                    }
                }
                let Some((verb, arg)) = e.as_object().and_then(|o| o.iter().next()) else { continue };
                match verb.as_str() {
                    "accept" => return Outcome::Accept,
                    "drop" | "reject" => return Outcome::Drop,
                    "return" => return Outcome::Return,
                    "jump" | "goto" => {
                        let target = format!("{family}/{table}/{}", arg["target"].as_str().unwrap_or(""));
                        match self.run(&target, packet, unknown, depth + 1) {
                            Outcome::Accept => return Outcome::Accept,
                            Outcome::Drop => return Outcome::Drop,
                            _ if verb == "goto" => return Outcome::Return,
                            _ => continue 'rules,
                        }
                    }
                    // Statements that do not decide: counting, logging, marking, limits (treated as passing).
                    "counter" | "log" | "comment" | "limit" | "mangle" | "meta" | "ct" | "notrack" | "quota" | "set" => {}
                    other => {
                        unknown.push(format!("statement `{other}`"));
                        continue 'rules;
                    }
                }
            }
        }
        Outcome::Continue
    }
}

/// Whether a `match` expression matches the packet; `None` when the evaluator does not know the expression.
fn matches(m: &Value, p: &Packet) -> Option<bool> {
    let op = m["op"].as_str().unwrap_or("==");
    let left = &m["left"];
    let right = &m["right"];
    let hit = if let Some(payload) = left.get("payload") {
        let proto = payload["protocol"].as_str().unwrap_or("");
        let field = payload["field"].as_str().unwrap_or("");
        match (proto, field) {
            ("udp" | "tcp", "dport") => {
                if proto != p.protocol.to_string() {
                    // `udp dport 53` on a TCP packet: the protocol part already fails.
                    return Some(op == "!=");
                }
                contains_port(right, p.dport)?
            }
            ("udp" | "tcp", "sport") => {
                if proto != p.protocol.to_string() {
                    return Some(op == "!=");
                }
                // Our source port is random: a rule on it is not one the audit can predict.
                return None;
            }
            ("ip", "saddr") if p.saddr.is_ipv4() => contains_addr(right, p.saddr)?,
            ("ip6", "saddr") if p.saddr.is_ipv6() => contains_addr(right, p.saddr)?,
            ("ip", "saddr") | ("ip6", "saddr") => return Some(op == "!="),
            ("ip", "protocol") | ("ip6", "nexthdr") => contains_name(right, &p.protocol.to_string())?,
            ("ip", "daddr") | ("ip6", "daddr") => return Some(true),
            _ => return None,
        }
    } else if let Some(meta) = left.get("meta") {
        match meta["key"].as_str().unwrap_or("") {
            "l4proto" => contains_name(right, &p.protocol.to_string())?,
            "iif" | "iifname" => contains_name(right, &p.iif)?,
            "nfproto" => contains_name(right, if p.saddr.is_ipv4() { "ipv4" } else { "ipv6" })?,
            "pkttype" => contains_name(right, "host")?,
            _ => return None,
        }
    } else if let Some(ct) = left.get("ct") {
        match ct["key"].as_str().unwrap_or("") {
            "state" => contains_name(right, "new")?,
            _ => return None,
        }
    } else {
        return None;
    };
    Some(match op {
        "==" | "in" => hit,
        "!=" => !hit,
        _ => return None,
    })
}

/// Every atom of a right-hand side: a set's elements, or the value itself.
fn atoms(right: &Value) -> Vec<&Value> {
    match right.get("set").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => match right.as_array() {
            Some(items) => items.iter().collect(),
            None => vec![right],
        },
    }
}

fn contains_port(right: &Value, port: u16) -> Option<bool> {
    let mut any = false;
    for a in atoms(right) {
        any |= if let Some(n) = a.as_u64() {
            n == u64::from(port)
        } else if let Some(r) = a.get("range").and_then(Value::as_array) {
            let (lo, hi) = (r.first()?.as_u64()?, r.get(1)?.as_u64()?);
            (lo..=hi).contains(&u64::from(port))
        } else {
            return None;
        };
    }
    Some(any)
}

fn contains_addr(right: &Value, addr: IpAddr) -> Option<bool> {
    let mut any = false;
    for a in atoms(right) {
        any |= if let Some(s) = a.as_str() {
            s.parse::<IpAddr>().ok()? == addr
        } else if let Some(prefix) = a.get("prefix") {
            let net: IpNet = format!("{}/{}", prefix["addr"].as_str()?, prefix["len"].as_u64()?).parse().ok()?;
            net.contains(&addr)
        } else if let Some(r) = a.get("range").and_then(Value::as_array) {
            let (lo, hi): (IpAddr, IpAddr) = (r.first()?.as_str()?.parse().ok()?, r.get(1)?.as_str()?.parse().ok()?);
            lo <= addr && addr <= hi
        } else {
            return None;
        };
    }
    Some(any)
}

fn contains_name(right: &Value, name: &str) -> Option<bool> {
    let mut any = false;
    for a in atoms(right) {
        any |= match a.as_str() {
            Some(s) => s == name,
            // Protocol numbers: 6 tcp, 17 udp.
            None => matches!((a.as_u64()?, name), (6, "tcp") | (17, "udp")),
        };
    }
    Some(any)
}

fn compact(v: &Value) -> String {
    let s = v.to_string();
    if s.len() > 120 { format!("{}…", &s[..120]) } else { s }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `nft -j list ruleset` printed here for sfuctl's own table plus a user table dropping part of the range.
    const RULESET: &str = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}},
      {"table": {"family": "inet", "name": "sfuctl_demo", "handle": 1}},
      {"chain": {"family": "inet", "table": "sfuctl_demo", "name": "input", "handle": 1, "type": "filter", "hook": "input", "prio": 0, "policy": "drop"}},
      {"rule": {"family": "inet", "table": "sfuctl_demo", "chain": "input", "handle": 2, "expr": [{"match": {"op": "==", "left": {"meta": {"key": "iif"}}, "right": "lo"}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "sfuctl_demo", "chain": "input", "handle": 3, "expr": [{"match": {"op": "in", "left": {"ct": {"key": "state"}}, "right": ["established", "related"]}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "sfuctl_demo", "chain": "input", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "ip", "field": "saddr"}}, "right": {"set": [{"prefix": {"addr": "10.200.1.0", "len": 24}}]}}}, {"match": {"op": "==", "left": {"payload": {"protocol": "tcp", "field": "dport"}}, "right": 22}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "sfuctl_demo", "chain": "input", "handle": 5, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": {"range": [40000, 41000]}}}, {"accept": null}]}},
      {"rule": {"family": "inet", "table": "sfuctl_demo", "chain": "input", "handle": 6, "expr": [{"counter": {"packets": 0, "bytes": 0}}]}},
      {"table": {"family": "ip", "name": "user", "handle": 2}},
      {"chain": {"family": "ip", "table": "user", "name": "in", "handle": 1, "type": "filter", "hook": "input", "prio": 10, "policy": "accept"}},
      {"rule": {"family": "ip", "table": "user", "chain": "in", "handle": 2, "expr": [{"jump": {"target": "media"}}]}},
      {"chain": {"family": "ip", "table": "user", "name": "media", "handle": 3}},
      {"rule": {"family": "ip", "table": "user", "chain": "media", "handle": 4, "expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "udp", "field": "dport"}}, "right": {"range": [40500, 41000]}}}, {"drop": null}]}}
    ]}"#;

    fn packet(protocol: Protocol, dport: u16, saddr: &str) -> Packet {
        Packet { protocol, dport, saddr: saddr.parse().unwrap(), iif: "eth0".into() }
    }

    #[test]
    fn follows_sets_ranges_prefixes_jumps_and_policies() {
        let rs = Ruleset::parse(RULESET).unwrap();
        assert!(rs.evaluate(&packet(Protocol::Udp, 40000, "198.51.100.7")).accepted);
        let v = rs.evaluate(&packet(Protocol::Udp, 40600, "198.51.100.7"));
        assert_eq!((v.accepted, v.dropped_by.as_deref()), (false, Some("user/in")));
        assert!(rs.evaluate(&packet(Protocol::Tcp, 22, "10.200.1.1")).accepted);
        let v = rs.evaluate(&packet(Protocol::Tcp, 22, "198.51.100.7"));
        assert_eq!(v.dropped_by.as_deref(), Some("sfuctl_demo/input"), "SSH from elsewhere hits the policy");
        assert!(!rs.evaluate(&packet(Protocol::Tcp, 443, "198.51.100.7")).accepted);
        assert!(v.unknown.is_empty());
    }

    #[test]
    fn unknown_expressions_make_the_answer_uncertain() {
        let rs = Ruleset::parse(r#"{"nftables": [
          {"chain": {"family": "ip", "table": "filter", "name": "INPUT", "type": "filter", "hook": "input", "policy": "accept"}},
          {"rule": {"family": "ip", "table": "filter", "chain": "INPUT", "expr": [{"xt": {"type": "match", "name": "recent"}}, {"drop": null}]}}
        ]}"#)
        .unwrap();
        let v = rs.evaluate(&packet(Protocol::Udp, 40000, "198.51.100.7"));
        assert!(v.accepted);
        assert_eq!(v.unknown, ["statement `xt`"]);
    }
}
