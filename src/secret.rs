//! Secrets (API tokens, the shared TURN/LiveKit secret): a string whose `Debug` and `Display` never show it, so
//! no log line, error or state file can carry one by accident. Every value is also registered with
//! [`crate::log::register_secret`], so the verbose log redacts it wherever it appears.

use std::fmt;

use anyhow::Result;

/// A secret string. Only [`Secret::expose`] gives the value, for the one place that must use it (a request
/// header, a rendered config file).
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(value: impl Into<String>) -> Self {
        let value = value.into();
        crate::log::register_secret(&value);
        Self(value)
    }

    /// The secret from the environment variable `name`; when it is unset, a new random one and `false`.
    pub fn from_env_or_random(name: &str) -> Result<(Self, bool)> {
        match std::env::var(name) {
            Ok(v) if !v.is_empty() => Ok((Self::new(v), true)),
            _ => Ok((Self::random()?, false)),
        }
    }

    /// A new random secret: 32 bytes as 64 hex characters (LiveKit asks for at least 32).
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot get random bytes from the OS: {e}"))?;
        Ok(Self::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()))
    }

    /// The value itself.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// HMAC-SHA256 of the secret under `salt`, as hex: tells whether two secrets are the same without keeping
    /// either (the salt makes a stolen state file useless for guessing common secrets).
    pub fn fingerprint(&self, salt: &[u8]) -> String {
        use hmac::{Hmac, Mac};
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(salt).expect("HMAC takes a key of any length");
        mac.update(self.0.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// What the local state remembers of the shared secret: a salted fingerprint, never the secret.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct SecretFingerprint {
    /// 16 random bytes, as hex.
    pub salt: String,
    /// [`Secret::fingerprint`] under that salt.
    pub hmac: String,
}

impl SecretFingerprint {
    /// The fingerprint of `secret` under a new random salt.
    pub fn new(secret: &Secret) -> Result<Self> {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("cannot get random bytes from the OS: {e}"))?;
        let salt: String = salt.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self { hmac: secret.fingerprint(salt.as_bytes()), salt })
    }

    /// Whether `secret` is the one remembered.
    pub fn matches(&self, secret: &Secret) -> bool {
        secret.fingerprint(self.salt.as_bytes()) == self.hmac
    }

    /// The remembered fingerprint's short form (12 hex digits), and `secret`'s under the same salt: comparable,
    /// and neither tells the secret.
    pub fn short_forms(&self, secret: &Secret) -> (String, String) {
        (self.hmac.chars().take(12).collect(), secret.fingerprint(self.salt.as_bytes()).chars().take(12).collect())
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

    #[test]
    fn a_fingerprint_tells_same_from_different_without_the_secret() {
        let s = Secret::new("0123456789abcdef0123456789abcdef");
        let f = SecretFingerprint::new(&s).unwrap();
        assert!(f.matches(&s));
        assert!(!f.matches(&Secret::new("another-secret-0123456789abcdef01")));
        assert!(!f.hmac.contains(s.expose()) && !f.salt.contains(s.expose()));
        assert_ne!(f, SecretFingerprint::new(&s).unwrap(), "a new salt every time");
        let (old, new) = f.short_forms(&Secret::new("x"));
        assert_eq!((old.len(), new.len()), (12, 12));
        assert_ne!(old, new);
    }
}
