//! Ports and protocols as a firewall rule sees them: a protocol and an inclusive port range (`40000-41000`, or one
//! port). The leaf every layer shares: the spec, the server kinds, the manifest and the providers.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A transport protocol a firewall rule covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
}

impl fmt::Display for Protocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Udp => "udp",
            Self::Tcp => "tcp",
        })
    }
}

/// An inclusive range of ports; a single port is a range of one. Written `"40000-41000"` or `"443"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// The first port.
    pub start: u16,
    /// The last port (equal to `start` for a single port).
    pub end: u16,
}

impl PortRange {
    /// A single port.
    pub fn single(port: u16) -> Self {
        Self { start: port, end: port }
    }

    /// How many ports the range holds (0 when inverted).
    pub fn len(&self) -> u32 {
        if self.end < self.start { 0 } else { u32::from(self.end) - u32::from(self.start) + 1 }
    }

    /// Whether the range holds no port (only an inverted range does).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether `port` is inside the range.
    pub fn contains(&self, port: u16) -> bool {
        self.start <= port && port <= self.end
    }

    /// Whether the two ranges share at least one port.
    pub fn overlaps(&self, other: &PortRange) -> bool {
        self.start <= other.end && other.start <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end { write!(f, "{}", self.start) } else { write!(f, "{}-{}", self.start, self.end) }
    }
}

impl std::str::FromStr for PortRange {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let port = |p: &str| {
            p.trim().parse::<u16>().map_err(|_| format!("`{s}` is not a port range like `40000-41000` (ports are 1-65535)"))
        };
        match s.split_once('-') {
            Some((a, b)) => Ok(Self { start: port(a)?, end: port(b)? }),
            None => port(s).map(Self::single),
        }
    }
}

impl Serialize for PortRange {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RangeVisitor;
        impl serde::de::Visitor<'_> for RangeVisitor {
            type Value = PortRange;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port range like \"40000-41000\"")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<PortRange, E> {
                u16::try_from(v).map(PortRange::single).map_err(|_| E::custom(format!("{v} is not a port (1-65535)")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<PortRange, E> {
                Err(E::custom(format!("{v} is not a port (1-65535)")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PortRange, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(RangeVisitor)
    }
}
