//! Secrets (API tokens, the shared TURN/LiveKit secret): a string whose `Debug` and `Display` never show it, so
//! no log line, error or state file can carry one by accident.

use std::fmt;

use anyhow::Result;

/// A secret string. Only [`Secret::expose`] gives the value, for the one place that must use it (a request
/// header, a rendered config file).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret from the environment variable `name`; when it is unset, a new random one and `false`.
    pub fn from_env_or_random(name: &str) -> Result<(Self, bool)> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok((Self(v), true)),
            _ => Ok((Self::random()?, false)),
        }
    }

    /// A new random secret: 32 bytes as 64 hex characters (LiveKit asks for at least 32).
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot get random bytes from the OS: {e}"))?;
        Ok(Self(bytes.iter().map(|b| format!("{b:02x}")).collect()))
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_printed() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?} {s}"), "Secret(***) ***");
        assert_eq!(Secret::random().unwrap().expose().len(), 64);
    }
}
