//! A Janus session driven over its HTTP API (the plain REST transport on `sfu.listen_port`), as an app would: create
//! a session with the shared secret as `apisecret`, attach a plugin, send it a message with an SDP offer and read
//! the plugin's answer from the session's long-poll. The session is destroyed when the value is dropped, whatever
//! happened before: the audit leaves nothing behind on the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};
use serde_json::{Value, json};

use crate::probe;

/// One Janus session; destroyed on drop.
pub struct JanusSession {
    target: SocketAddr,
    secret: String,
    id: u64,
    timeout: Duration,
}

/// A transaction id: Janus echoes it; any string will do.
const TRANSACTION: &str = "sfuctl-audit";

/// Janus's own refusal in an API answer (`{"janus": "error", "error": {"code", "reason"}}`), as `<code> <reason>`.
fn janus_error(v: &Value) -> Option<String> {
    let e = v.get("error")?;
    Some(format!("{} {}", e["code"].as_u64().unwrap_or(0), e["reason"].as_str().unwrap_or("")))
}

impl JanusSession {
    /// Creates a session on the Janus API at `target`, authenticated with `secret` as `apisecret`.
    pub fn create(target: SocketAddr, secret: &str, timeout: Duration) -> Result<Self> {
        let v = post(target, "/janus", json!({ "janus": "create", "transaction": TRANSACTION, "apisecret": secret }), timeout)?;
        let id = v["data"]["id"].as_u64().ok_or_else(|| anyhow!("`create` was refused: {}", janus_error(&v).unwrap_or_else(|| v.to_string())))?;
        Ok(Self { target, secret: secret.to_string(), id, timeout })
    }

    /// Attaches `plugin` (`janus.plugin.echotest`); returns the handle's id.
    pub fn attach(&self, plugin: &str) -> Result<u64> {
        let v = post(self.target, &format!("/janus/{}", self.id), json!({ "janus": "attach", "plugin": plugin, "transaction": TRANSACTION, "apisecret": self.secret }), self.timeout)?;
        v["data"]["id"].as_u64().ok_or_else(|| anyhow!("attaching {plugin} was refused: {}", janus_error(&v).unwrap_or_else(|| v.to_string())))
    }

    /// Sends `body` with an SDP offer to `handle` and waits up to `wait` for the plugin's SDP answer on the
    /// session's long-poll; returns the answer's SDP.
    pub fn offer(&self, handle: u64, body: Value, sdp: &str, wait: Duration) -> Result<String> {
        let message = json!({ "janus": "message", "body": body, "jsep": { "type": "offer", "sdp": sdp }, "transaction": TRANSACTION, "apisecret": self.secret });
        let v = post(self.target, &format!("/janus/{}/{handle}", self.id), message, self.timeout)?;
        if let Some(e) = janus_error(&v) {
            bail!("the offer was refused: {e}");
        }
        let deadline = Instant::now() + wait;
        while Instant::now() < deadline {
            // Janus answers a long-poll as soon as an event is queued (else a keepalive after 30 s): wait on one
            // poll for the rest of the time, so no event goes to a poll we gave up on.
            let path = format!("/janus/{}?maxev=10&apisecret={}", self.id, percent_encode(&self.secret));
            let rest = deadline.saturating_duration_since(Instant::now()).max(Duration::from_secs(1));
            let (status, text) = probe::http_get(self.target, &path, rest).map_err(|e| anyhow!("no SDP answer within {:.0}s ({e})", wait.as_secs_f64()))?;
            if status != 200 {
                bail!("the session's long-poll answered HTTP {status}");
            }
            let events: Vec<Value> = match serde_json::from_str::<Value>(&text).unwrap_or_default() {
                Value::Array(all) => all,
                other => vec![other],
            };
            for event in events.iter().filter(|e| e["sender"].as_u64() == Some(handle)) {
                if let Some(sdp) = event["jsep"]["sdp"].as_str() {
                    return Ok(sdp.to_string());
                }
                if let Some(error) = event["plugindata"]["data"]["error"].as_str() {
                    bail!("the plugin refused the offer: {error}");
                }
            }
        }
        bail!("no SDP answer within {:.0}s", wait.as_secs_f64())
    }
}

impl Drop for JanusSession {
    fn drop(&mut self) {
        let _ = post(self.target, &format!("/janus/{}", self.id), json!({ "janus": "destroy", "transaction": TRANSACTION, "apisecret": self.secret }), self.timeout);
    }
}

/// POSTs a JSON request to the Janus API and reads the JSON answer.
fn post(target: SocketAddr, path: &str, body: Value, timeout: Duration) -> Result<Value> {
    let (status, text) = probe::http_post_json(target, path, &body.to_string(), timeout)?;
    if status != 200 {
        bail!("the Janus API on tcp {target} answered HTTP {status}");
    }
    serde_json::from_str(&text).map_err(|e| anyhow!("the Janus API on tcp {target} answered what is not JSON ({e})"))
}

/// A query-string value with everything but unreserved characters (RFC 3986) percent-encoded.
fn percent_encode(value: &str) -> String {
    value.bytes().map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_encoded() {
        assert_eq!(percent_encode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(percent_encode("a b&c=d/+é"), "a%20b%26c%3Dd%2F%2B%C3%A9");
    }

    #[test]
    fn janus_errors_read_as_code_and_reason() {
        let v: Value = serde_json::from_str(r#"{"janus":"error","error":{"code":403,"reason":"Unauthorized request (wrong or missing secret/token)"}}"#).unwrap();
        assert_eq!(janus_error(&v).unwrap(), "403 Unauthorized request (wrong or missing secret/token)");
        assert_eq!(janus_error(&json!({"janus": "success"})), None);
    }
}
