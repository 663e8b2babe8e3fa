//! What sfuctl did, on stderr, for `-v` / `-vv` (or `SFUCTL_LOG`): every API request and every SSH command, with
//! secrets redacted.
//!
//! Two areas log: `http` (method, path, status and time of every attempt; at debug also the request body) and
//! `ssh` (every command run on a host, its exit and time; at debug the whole command and each upload's path and
//! size). `-v` turns both on at [`Level::Info`], `-vv` at [`Level::Debug`]. `SFUCTL_LOG` does the same in the style
//! of `RUST_LOG`: `info`, `debug`, `off`, or per area, `http=debug,ssh=info`; the flags raise what it sets.
//!
//! Redaction happens here, on every line, so no caller can forget it: every value wrapped in a
//! `Secret` (secret.rs) (API tokens, AWS keys, generated passwords, the shared secret) is registered with
//! [`register_secret`] and replaced by `[redacted]` wherever it appears; JSON and form bodies also lose the value
//! of every field whose name says it is secret (`password`, `token`, `secret`, `user_data`, `private_key`, …); and
//! PEM private key blocks are cut out whole.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::Instant;

/// How much an area logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u8)]
pub enum Level {
    /// Nothing.
    Off = 0,
    /// One line per API request and per SSH command (`-v`).
    Info = 1,
    /// Also request bodies, whole commands and uploads (`-vv`).
    Debug = 2,
}

impl Level {
    fn from_u8(n: u8) -> Self {
        match n {
            0 => Self::Off,
            1 => Self::Info,
            _ => Self::Debug,
        }
    }

    fn parse(word: &str) -> Option<Self> {
        match word.trim().to_ascii_lowercase().as_str() {
            "off" | "0" | "error" | "warn" => Some(Self::Off),
            "info" | "1" => Some(Self::Info),
            "debug" | "trace" | "2" => Some(Self::Debug),
            _ => None,
        }
    }
}

/// The areas that log.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Area {
    /// Cloud API requests (`http.rs`).
    Http,
    /// Commands and uploads on hosts (`remote.rs`).
    Ssh,
}

impl Area {
    fn name(self) -> &'static str {
        match self {
            Self::Http => "http",
            Self::Ssh => "ssh",
        }
    }
}

static HTTP_LEVEL: AtomicU8 = AtomicU8::new(0);
static SSH_LEVEL: AtomicU8 = AtomicU8::new(0);
static SECRETS: RwLock<Vec<String>> = RwLock::new(Vec::new());

fn slot(area: Area) -> &'static AtomicU8 {
    match area {
        Area::Http => &HTTP_LEVEL,
        Area::Ssh => &SSH_LEVEL,
    }
}

fn started() -> Instant {
    static START: OnceLock<Instant> = OnceLock::new();
    *START.get_or_init(Instant::now)
}

/// The levels `SFUCTL_LOG` asks for, per area (`info`, `http=debug,ssh=info`); words it does not know are
/// ignored, with the reason returned for a warning.
pub fn parse_filter(filter: &str) -> (Level, Level, Vec<String>) {
    let (mut http, mut ssh) = (Level::Off, Level::Off);
    let mut unknown = Vec::new();
    for part in filter.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('=') {
            None => match Level::parse(part) {
                Some(level) => (http, ssh) = (level, level),
                None => unknown.push(part.to_string()),
            },
            Some((area, word)) => match (area.trim(), Level::parse(word)) {
                ("http", Some(level)) => http = level,
                ("ssh", Some(level)) => ssh = level,
                _ => unknown.push(part.to_string()),
            },
        }
    }
    (http, ssh, unknown)
}

/// Sets the levels from the number of `-v` flags and `SFUCTL_LOG`: each area logs at the higher of the two.
/// Returns what `SFUCTL_LOG` held that is not understood.
pub fn init(verbose: u8) -> Vec<String> {
    started();
    let flags = Level::from_u8(verbose);
    let (http, ssh, unknown) = parse_filter(&std::env::var("SFUCTL_LOG").unwrap_or_default());
    HTTP_LEVEL.store(http.max(flags) as u8, Ordering::Relaxed);
    SSH_LEVEL.store(ssh.max(flags) as u8, Ordering::Relaxed);
    unknown
}

/// Whether `area` logs at `level`.
pub fn enabled(area: Area, level: Level) -> bool {
    level != Level::Off && slot(area).load(Ordering::Relaxed) >= level as u8
}

/// Prints one line (`[  1.234s] http: …`) to stderr when `area` logs at `level`, redacted. The message is built
/// only then.
pub fn log(area: Area, level: Level, message: impl FnOnce() -> String) {
    if !enabled(area, level) {
        return;
    }
    let elapsed = started().elapsed().as_secs_f64();
    let text = redact(&message());
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("");
    let mut out = format!("[{elapsed:>8.3}s] {}: {first}\n", area.name());
    for line in lines {
        out.push_str(&format!("{:>12}{:w$}  {line}\n", "", "", w = area.name().len()));
    }
    eprint!("{out}");
}

/// Remembers a secret's value so that no log line can show it. Values shorter than 6 characters are not
/// registered: replacing them would mangle ordinary words, and no credential is that short.
pub fn register_secret(value: &str) {
    if value.len() < 6 {
        return;
    }
    let mut secrets = SECRETS.write().unwrap_or_else(|p| p.into_inner());
    if !secrets.iter().any(|s| s == value) {
        secrets.push(value.to_string());
        // Longest first: a secret that contains another is replaced whole.
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Field names whose values are secret, matched case-insensitively as a part of the name.
const SECRET_FIELDS: &[&str] =
    &["password", "passwd", "root_pass", "secret", "token", "private_key", "privatekey", "user_data", "userdata", "authorization", "signature", "credential", "apikey", "api_key"];

/// Whether a field of that name holds a secret.
pub fn secret_field(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SECRET_FIELDS.iter().any(|f| lower.contains(f))
}

/// `text` without any registered secret, without PEM private key blocks, and with the values of secret fields
/// (`"password": "…"`, `Password=…`) replaced by `[redacted]`.
pub fn redact(text: &str) -> String {
    let mut out = text.to_string();
    for secret in SECRETS.read().unwrap_or_else(|p| p.into_inner()).iter() {
        if out.contains(secret.as_str()) {
            out = out.replace(secret.as_str(), "[redacted]");
        }
    }
    let mut from = 0;
    while let Some(rel) = out[from..].find("-----BEGIN ") {
        let start = from + rel;
        let line_end = out[start..].find('\n').map_or(out.len(), |i| start + i);
        if !out[start..line_end].contains("PRIVATE KEY") {
            from = line_end;
            continue;
        }
        let end = match out[line_end..].find("-----END ") {
            Some(e) => {
                let e = line_end + e + "-----END ".len();
                out[e..].find("-----").map_or(out.len(), |f| e + f + 5)
            }
            None => out.len(),
        };
        out.replace_range(start..end, "[redacted private key]");
        from = start + "[redacted private key]".len();
    }
    out
}

/// A request or form body for the log: JSON and `key=value&…` forms lose the values of secret fields (see
/// [`secret_field`]); anything else is shown as its size only. Registered secrets are removed by [`log`] too.
pub fn body(content_type: &str, bytes: &[u8]) -> String {
    if content_type.contains("json")
        && let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes)
    {
        redact_json(&mut value);
        return value.to_string();
    }
    if content_type.contains("x-www-form-urlencoded")
        && let Ok(text) = std::str::from_utf8(bytes)
    {
        return text
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if secret_field(k) => format!("{k}=[redacted]"),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join("&");
    }
    format!("({} bytes of {content_type})", bytes.len())
}

fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if secret_field(k) && !v.is_null() {
                    *v = serde_json::Value::String("[redacted]".into());
                } else {
                    redact_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        _ => {}
    }
}

/// A command for an `-v` line: the script inside sfuctl's `sh -c '…'` wrapper (with or without `sudo -n`), its
/// first line that does something (not `set -e`), cut at 160 characters, with how many lines there are besides.
pub fn one_line(cmd: &str) -> String {
    let inner = ["sudo -n sh -c '", "sh -c '"].iter().find_map(|p| cmd.strip_prefix(p)).map(|rest| rest.strip_suffix('\'').unwrap_or(rest)).unwrap_or(cmd);
    let lines: Vec<&str> = inner.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let first = lines.iter().find(|l| **l != "set -e").copied().unwrap_or("");
    let mut short: String = first.chars().take(160).collect();
    if short.len() < first.len() {
        short.push('…');
    }
    if lines.len() > 1 {
        short.push_str(&format!(" (+{} lines)", lines.len() - 1));
    }
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_read_like_rust_log() {
        assert_eq!(parse_filter("debug"), (Level::Debug, Level::Debug, vec![]));
        assert_eq!(parse_filter("http=debug, ssh=info"), (Level::Debug, Level::Info, vec![]));
        assert_eq!(parse_filter("ssh=2,bogus,tls=info"), (Level::Off, Level::Debug, vec!["bogus".to_string(), "tls=info".to_string()]));
        assert_eq!(parse_filter(""), (Level::Off, Level::Off, vec![]));
    }

    #[test]
    fn registered_secrets_and_secret_fields_never_show() {
        register_secret("tok-0123456789-redact-me");
        register_secret("abc");
        let line = redact("Bearer tok-0123456789-redact-me and abc");
        assert_eq!(line, "Bearer [redacted] and abc");
        let json = body("application/json", br#"{"name":"x","root_pass":"p","tags":["a"],"nested":{"user_data":"cloud-config"}}"#);
        assert_eq!(json, r#"{"name":"x","nested":{"user_data":"[redacted]"},"root_pass":"[redacted]","tags":["a"]}"#);
        let form = body("application/x-www-form-urlencoded; charset=utf-8", b"Action=RunInstances&UserData=I2Nsb3Vk&KeyName=k");
        assert_eq!(form, "Action=RunInstances&UserData=[redacted]&KeyName=k");
        assert_eq!(body("application/octet-stream", b"1234"), "(4 bytes of application/octet-stream)");
    }

    #[test]
    fn private_key_blocks_are_cut_out() {
        let text = "key:\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA\n-----END OPENSSH PRIVATE KEY-----\nafter";
        assert_eq!(redact(text), "key:\n[redacted private key]\nafter");
        let public = "-----BEGIN PUBLIC KEY-----\nMIIB\n-----END PUBLIC KEY-----";
        assert_eq!(redact(public), public);
    }

    #[test]
    fn commands_shorten_to_one_line() {
        assert_eq!(one_line("set -e\nsystemctl restart x\n"), "systemctl restart x (+1 lines)");
        assert_eq!(one_line("sudo -n sh -c 'set -e\nmkdir -p /opt/x\nchown a /opt/x'"), "mkdir -p /opt/x (+2 lines)");
        assert_eq!(one_line("echo hi"), "echo hi");
    }
}
