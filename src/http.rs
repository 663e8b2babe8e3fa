//! A small JSON client for cloud provider APIs: a base URL, bearer auth, timeouts, bounded retries with capped
//! exponential backoff and jitter, pacing on the provider's rate-limit headers, and request counters.
//!
//! It knows nothing about any one provider. What differs between providers comes in an [`ApiStyle`]: the name
//! used in messages, the variable that holds the token (for the 401 hint), and a hook that turns the provider's
//! error body into one line ([`digitalocean_error`], [`linode_error`]).
//!
//! What is retried, and why:
//! - 429 always (the request was refused, nothing happened), waiting `Retry-After` when the provider sends it;
//! - connection failures before the request was sent, always;
//! - 5xx, 408 and timeouts only for requests marked [`Retry::Always`] (GET, PUT, DELETE and idempotent POSTs).
//!   A create POST ([`Retry::IfNotSent`]) may have been applied before the failure, so the error comes back at
//!   once, marked by [`maybe_applied`], and the provider looks up what exists before it creates again.
//!
//! A failed call becomes a [`UserError`] naming the operation (`POST /v2/firewalls returned 422`) whose cause is an
//! [`ApiFailure`] holding the provider's own message. The token never appears in an error, a `Debug` or a log.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Result;
use reqwest::header::{HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::error::UserError;

pub use crate::secret::Secret;

/// A provider's error body, reduced to what a person needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProviderMessage {
    /// The provider's error code, when it has one (DigitalOcean's `id`, e.g. `unprocessable_entity`).
    pub code: Option<String>,
    /// The provider's message, one line.
    pub message: String,
}

/// Parses a provider's error body; `None` when the body is not in the provider's error format.
pub type ErrorParser = fn(&[u8]) -> Option<ProviderMessage>;

/// DigitalOcean's error body: `{"id": "...", "message": "...", "request_id": "..."}`.
pub fn digitalocean_error(body: &[u8]) -> Option<ProviderMessage> {
    #[derive(serde::Deserialize)]
    struct Body {
        id: Option<String>,
        message: Option<String>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let message = body.message.filter(|m| !m.trim().is_empty()).or_else(|| body.id.clone())?;
    Some(ProviderMessage { code: body.id, message })
}

/// Linode's error body: `{"errors": [{"field": "...", "reason": "..."}]}`, joined as `field: reason; reason`.
pub fn linode_error(body: &[u8]) -> Option<ProviderMessage> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        field: Option<String>,
        reason: Option<String>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let parts: Vec<String> = body
        .errors
        .into_iter()
        .filter_map(|e| {
            let reason = e.reason?;
            Some(match e.field.filter(|f| !f.is_empty()) {
                Some(field) => format!("{field}: {reason}"),
                None => reason,
            })
        })
        .collect();
    (!parts.is_empty()).then(|| ProviderMessage { code: None, message: parts.join("; ") })
}

/// What differs between providers' APIs, as far as this client cares.
#[derive(Clone, Copy, Debug)]
pub struct ApiStyle {
    /// The provider's name in messages (`DigitalOcean`).
    pub title: &'static str,
    /// The variable the token comes from, named in the 401 hint (`DIGITALOCEAN_TOKEN`).
    pub token_env: &'static str,
    /// Turns an error body into one line.
    pub parse_error: ErrorParser,
}

/// Timeouts, retry bounds and pacing. The defaults suit a CLI talking to a public cloud API.
#[derive(Clone, Debug)]
pub struct RetryPolicy {
    /// Attempts per request, the first one included (at least 1).
    pub max_attempts: u32,
    /// The first backoff; it doubles per retry, with jitter.
    pub base_delay: Duration,
    /// The longest backoff between two attempts (when the provider sends no `Retry-After`).
    pub max_delay: Duration,
    /// The longest `Retry-After` that is waited out; a longer one fails at once, with a hint.
    pub max_retry_after: Duration,
    /// Below this many remaining requests in the provider's rate-limit window, requests are spaced out (by up
    /// to `max_pace` each, more the fewer remain).
    pub low_remaining: u64,
    /// The longest pause added between requests when few remain.
    pub max_pace: Duration,
    /// Timeout for the whole of one attempt.
    pub timeout: Duration,
    /// Timeout for connecting.
    pub connect_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(20),
            max_retry_after: Duration::from_secs(90),
            low_remaining: 50,
            max_pace: Duration::from_secs(2),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// The pause before retry number `retry` (1 for the first retry): `base * 2^(retry-1)`, capped, then jittered
    /// into its upper half (so a retry never comes at once, and parallel clients spread out).
    pub fn backoff(&self, retry: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << retry.saturating_sub(1).min(16));
        let capped = exp.min(self.max_delay);
        let half = capped / 2;
        let jitter = half.mul_f64(random_unit());
        half + jitter
    }
}

/// Whether a request may be sent again after a failure that might have been applied.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// Sending it twice does no harm (GET, PUT, DELETE, idempotent POSTs): retry 429, 5xx, 408 and timeouts.
    Always,
    /// A create: retry only what surely was not applied (429, connection refused); otherwise fail at once with
    /// [`maybe_applied`] set, so the caller can look before it creates again.
    IfNotSent,
}

/// How many requests a client sent, for tests, benchmarks and `--verbose` summaries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RequestStats {
    /// Every HTTP attempt, retries included.
    pub total: u64,
    /// Attempts with a method other than GET or HEAD.
    pub mutating: u64,
    /// Attempts that were retries of an earlier one.
    pub retries: u64,
    /// 429 answers seen.
    pub rate_limited: u64,
    /// Milliseconds spent waiting before retries or pacing.
    pub waited_ms: u64,
}

/// Request counters shared by a client's clones (the JSON client here, the EC2 Query client).
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) total: AtomicU64,
    pub(crate) mutating: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) rate_limited: AtomicU64,
    pub(crate) waited_ms: AtomicU64,
}

impl Counters {
    /// The counts so far.
    pub(crate) fn snapshot(&self) -> RequestStats {
        RequestStats {
            total: self.total.load(Ordering::Relaxed),
            mutating: self.mutating.load(Ordering::Relaxed),
            retries: self.retries.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            waited_ms: self.waited_ms.load(Ordering::Relaxed),
        }
    }
}

/// The cause of a failed API call: the provider's own message and what is known about the failure.
#[derive(Clone, Debug)]
pub struct ApiFailure {
    /// The HTTP status, or `None` when no answer came (connection failure, timeout).
    pub status: Option<u16>,
    /// The provider's error code, when it sent one.
    pub code: Option<String>,
    /// The provider's message (or the transport error), one line.
    pub message: String,
    /// Whether the request may have taken effect although it failed (a create answered 5xx, or timed out).
    pub maybe_applied: bool,
}

impl fmt::Display for ApiFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiFailure {}

/// The HTTP status of a failed API call anywhere in an error's chain.
pub fn api_status(err: &anyhow::Error) -> Option<u16> {
    err.chain().find_map(|e| e.downcast_ref::<ApiFailure>()).and_then(|f| f.status)
}

/// The provider's error code (e.g. `not_found`) of a failed API call anywhere in an error's chain.
pub fn api_code(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|e| e.downcast_ref::<ApiFailure>()).and_then(|f| f.code.clone())
}

/// Whether a failed call may have been applied all the same (see [`Retry::IfNotSent`]).
pub fn maybe_applied(err: &anyhow::Error) -> bool {
    err.chain().find_map(|e| e.downcast_ref::<ApiFailure>()).is_some_and(|f| f.maybe_applied)
}

/// An answer with a status the caller accepts.
#[derive(Debug)]
pub struct Reply {
    /// The operation, `GET /v2/droplets`, for messages.
    pub operation: String,
    /// The HTTP status.
    pub status: StatusCode,
    /// The body as received.
    pub body: Vec<u8>,
}

impl Reply {
    /// Parses the body as JSON; a body that does not fit is an error naming the operation.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body).map_err(|e| {
            UserError::failed(format!("{} returned a body sfuctl cannot read", self.operation))
                .caused_by(anyhow::anyhow!("{e} (body starts: {})", snippet(&self.body)))
                .hint("the API answered in an unexpected format; check the API base URL, or report this with the output above")
                .into()
        })
    }
}

struct Inner {
    http: reqwest::Client,
    base: String,
    auth: Option<HeaderValue>,
    style: ApiStyle,
    policy: RetryPolicy,
    counters: Counters,
    /// No request starts before this moment (set when the rate limit runs low).
    not_before: Mutex<Option<Instant>>,
}

/// A JSON API client. Cheap to clone; clones share connections, counters and pacing.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("provider", &self.inner.style.title).field("base", &self.inner.base).finish_non_exhaustive()
    }
}

/// Installs the ring crypto provider for rustls once (reqwest is built with `rustls-no-provider`).
pub(crate) fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Client {
    /// A client for the API at `base_url` (paths are appended as given, e.g. `/v2/droplets`).
    ///
    /// Plain `http://` is accepted only for loopback addresses (fakes in tests): a bearer token never travels
    /// unencrypted over a network.
    pub fn new(base_url: &str, token: Option<Secret>, style: ApiStyle, policy: RetryPolicy) -> Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let url = Url::parse(&base).map_err(|e| {
            UserError::input(format!("`{base}` is not a valid {} API URL", style.title)).caused_by(e)
        })?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                return Err(UserError::input(format!("refusing to send the {} token over plain http to `{base}`", style.title))
                    .hint("use an https:// URL (plain http is allowed for 127.0.0.1 and localhost only)")
                    .into());
            }
            other => return Err(UserError::input(format!("`{base}`: unsupported URL scheme `{other}`")).into()),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UserError::input(format!("the {} API URL must not carry credentials", style.title)).into());
        }
        install_crypto();
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static("application/json"));
        let http = reqwest::Client::builder()
            .user_agent(concat!("sfuctl/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(policy.timeout)
            .connect_timeout(policy.connect_timeout)
            .build()
            .map_err(|e| UserError::failed("cannot set up the HTTP client").caused_by(e))?;
        let auth = match token {
            Some(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
                    .map_err(|_| UserError::input(format!("the {} token holds characters a header cannot carry", style.title)).hint(format!("check ${}", style.token_env)))?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let policy = RetryPolicy { max_attempts: policy.max_attempts.max(1), ..policy };
        Ok(Self {
            inner: Arc::new(Inner { http, base, auth, style, policy, counters: Counters::default(), not_before: Mutex::new(None) }),
        })
    }

    /// The base URL, without a trailing slash.
    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    /// The retry policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.inner.policy
    }

    /// The provider's name in messages.
    pub fn title(&self) -> &'static str {
        self.inner.style.title
    }

    /// The requests sent so far.
    pub fn stats(&self) -> RequestStats {
        self.inner.counters.snapshot()
    }

    /// Starts a request: `client.request(Method::GET, "/v2/droplets").query("tag_name", t).send().await`.
    pub fn request<'c>(&'c self, method: Method, path: &str) -> RequestBuilder<'c> {
        let retry = if method == Method::POST { Retry::IfNotSent } else { Retry::Always };
        RequestBuilder { client: self, method, path: path.to_string(), query: Vec::new(), body: None, retry, accept: Vec::new() }
    }

    /// `GET path` parsed as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.request(Method::GET, path).send().await?.json()
    }

    async fn pace(&self) {
        let until = *self.inner.not_before.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = until {
            let now = Instant::now();
            if until > now {
                self.wait(until - now).await;
            }
        }
    }

    async fn wait(&self, pause: Duration) {
        self.inner.counters.waited_ms.fetch_add(pause.as_millis() as u64, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }

    /// Reads the rate-limit headers (`ratelimit-*` on DigitalOcean, `x-ratelimit-*` on Linode) and spaces the
    /// next requests out when few remain.
    fn note_rate_limit(&self, headers: &HeaderMap) {
        let number = |names: &[&str]| names.iter().find_map(|n| headers.get(*n)?.to_str().ok()?.trim().parse::<u64>().ok());
        let Some(remaining) = number(&["ratelimit-remaining", "x-ratelimit-remaining"]) else { return };
        let policy = &self.inner.policy;
        // The pause grows linearly to `max_pace` as the window empties. It never waits for `ratelimit-reset`:
        // on DigitalOcean that is when the *oldest* counted request expires, up to an hour away, and a 429's own
        // Retry-After says better how long to wait.
        let pause = (remaining < policy.low_remaining).then(|| {
            let short = (policy.low_remaining - remaining) as f64 / policy.low_remaining as f64;
            policy.max_pace.mul_f64(short)
        });
        let mut guard = self.inner.not_before.lock().unwrap_or_else(|p| p.into_inner());
        *guard = pause.map(|p| Instant::now() + p);
    }

    async fn execute(&self, req: RequestBuilder<'_>) -> Result<Reply> {
        let inner = &self.inner;
        let operation = format!("{} {}", req.method, req.path);
        let mut url = Url::parse(&format!("{}{}", inner.base, req.path))
            .map_err(|e| UserError::failed(format!("{operation}: cannot build the request URL")).caused_by(e))?;
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let mutating = !matches!(req.method, Method::GET | Method::HEAD);
        let policy = &inner.policy;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.pace().await;
            let mut builder = inner.http.request(req.method.clone(), url.clone());
            if let Some(auth) = &inner.auth {
                builder = builder.header(reqwest::header::AUTHORIZATION, auth.clone());
            }
            if let Some(body) = &req.body {
                builder = builder.header(reqwest::header::CONTENT_TYPE, "application/json").body(body.clone());
            }
            inner.counters.total.fetch_add(1, Ordering::Relaxed);
            if mutating {
                inner.counters.mutating.fetch_add(1, Ordering::Relaxed);
            }
            if attempt > 1 {
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let last = attempt >= policy.max_attempts;
            let outcome = match builder.send().await {
                Ok(resp) => {
                    let status = resp.status();
                    let headers = resp.headers().clone();
                    // A 429 is paced by its Retry-After (or the backoff), not on top of it.
                    if status != StatusCode::TOO_MANY_REQUESTS {
                        self.note_rate_limit(&headers);
                    }
                    match resp.bytes().await {
                        Ok(body) => Ok((status, headers, body.to_vec())),
                        Err(e) => Err(e),
                    }
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok((status, headers, body)) => {
                    if status.is_success() || req.accept.contains(&status.as_u16()) {
                        return Ok(Reply { operation, status, body });
                    }
                    let code = status.as_u16();
                    if code == 429 {
                        inner.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        let after = retry_after(&headers);
                        let too_long = after.is_some_and(|a| a > policy.max_retry_after);
                        if !last && !too_long {
                            self.wait(after.unwrap_or_else(|| policy.backoff(attempt))).await;
                            continue;
                        }
                        return Err(self.status_error(&operation, status, &body, attempt, after, false));
                    }
                    let transient = code >= 500 || code == 408;
                    if transient && req.retry == Retry::Always && !last {
                        self.wait(retry_after(&headers).filter(|a| *a <= policy.max_delay).unwrap_or_else(|| policy.backoff(attempt))).await;
                        continue;
                    }
                    let maybe_applied = transient && req.retry == Retry::IfNotSent;
                    return Err(self.status_error(&operation, status, &body, attempt, None, maybe_applied));
                }
                Err(e) => {
                    // A refused connection never reached the server; anything later might have.
                    let not_sent = e.is_connect();
                    if (req.retry == Retry::Always || not_sent) && !last {
                        self.wait(policy.backoff(attempt)).await;
                        continue;
                    }
                    return Err(self.transport_error(&operation, e, attempt, req.retry == Retry::IfNotSent && !not_sent));
                }
            }
        }
    }

    fn status_error(
        &self,
        operation: &str,
        status: StatusCode,
        body: &[u8],
        attempts: u32,
        retry_after: Option<Duration>,
        maybe_applied: bool,
    ) -> anyhow::Error {
        let style = &self.inner.style;
        let code = status.as_u16();
        let parsed = (style.parse_error)(body);
        let message = match &parsed {
            Some(p) => p.message.clone(),
            None if body.iter().all(u8::is_ascii_whitespace) => format!("{} (empty body)", status_text(status)),
            None => format!("{} (body starts: {})", status_text(status), snippet(body)),
        };
        let failure = ApiFailure { status: Some(code), code: parsed.and_then(|p| p.code), message, maybe_applied };
        let tries = if attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
        let mut err = UserError::failed(format!("{operation} returned {code}{tries}"));
        let hint = match code {
            401 => Some(format!("check ${}: the {} API did not accept the token (expired, revoked or mistyped?)", style.token_env, style.title)),
            403 => Some(format!("the token in ${} lacks a scope this needs: give it read and write access (droplet, firewall, ssh_key, tag)", style.token_env)),
            429 => Some(match retry_after {
                Some(after) => format!("{}'s rate limit was hit; it asks to wait {}s: run again later", style.title, after.as_secs()),
                None => format!("{}'s rate limit was hit (other tools using the same token count too): wait a minute and run again", style.title),
            }),
            500..=599 => Some(format!("{} had a problem on its side; run again in a little while", style.title)),
            _ => None,
        };
        if let Some(hint) = hint {
            err = err.hint(hint);
        }
        err.caused_by(failure).into()
    }

    fn transport_error(&self, operation: &str, e: reqwest::Error, attempts: u32, maybe_applied: bool) -> anyhow::Error {
        let what = if e.is_timeout() { "timed out" } else if e.is_connect() { "could not connect" } else { "failed" };
        let message = chain_text(&e.without_url());
        let tries = if attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
        UserError::failed(format!("{operation} {what}{tries}"))
            .hint(format!("check the network and the {} API URL ({})", self.inner.style.title, self.inner.base))
            .caused_by(ApiFailure { status: None, code: None, message, maybe_applied })
            .into()
    }
}

/// A request being built; see [`Client::request`].
pub struct RequestBuilder<'c> {
    client: &'c Client,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    body: Option<Vec<u8>>,
    retry: Retry,
    accept: Vec<u16>,
}

impl RequestBuilder<'_> {
    /// Adds a query parameter (encoded).
    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_string(), value.to_string()));
        self
    }

    /// Sends `body` as JSON.
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        // Serializing our own request types cannot fail (no maps with non-string keys, no custom errors).
        self.body = Some(serde_json::to_vec(body).unwrap_or_default());
        self
    }

    /// Overrides whether the request may be resent after an ambiguous failure (POST defaults to
    /// [`Retry::IfNotSent`], every other method to [`Retry::Always`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Treats `status` as an answer rather than an error (e.g. 404 for "gone").
    pub fn accept(mut self, status: u16) -> Self {
        self.accept.push(status);
        self
    }

    /// Sends the request, retrying as the policy allows.
    pub async fn send(self) -> Result<Reply> {
        let client = self.client;
        client.execute(self).await
    }
}

/// `Retry-After` in seconds (the HTTP-date form is not used by the providers sfuctl talks to).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let raw = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    raw.parse::<u64>().ok().map(Duration::from_secs).or_else(|| raw.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0).map(Duration::from_secs_f64))
}

fn status_text(status: StatusCode) -> String {
    status.canonical_reason().map_or_else(|| format!("HTTP {}", status.as_u16()), str::to_string)
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut cut: String = one_line.chars().take(120).collect();
    if one_line.chars().count() > 120 {
        cut.push('…');
    }
    if cut.is_empty() { "(empty)".into() } else { format!("`{cut}`") }
}

/// An error and its sources as one line, without repeating a source its parent already quoted.
pub(crate) fn chain_text(e: &dyn std::error::Error) -> String {
    let mut parts = vec![e.to_string()];
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// A number in [0, 1) for jitter; falls back to the clock when the OS has no randomness to give.
fn random_unit() -> f64 {
    let bits = getrandom::u64().unwrap_or_else(|_| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.subsec_nanos() as u64));
    (bits >> 11) as f64 / (1u64 << 53) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    const STYLE: ApiStyle = ApiStyle { title: "DigitalOcean", token_env: "DIGITALOCEAN_TOKEN", parse_error: digitalocean_error };

    #[test]
    fn parses_both_error_shapes() {
        let d = digitalocean_error(br#"{"id":"unprocessable_entity","message":"ports must be a string","request_id":"x"}"#).unwrap();
        assert_eq!(d, ProviderMessage { code: Some("unprocessable_entity".into()), message: "ports must be a string".into() });
        assert!(digitalocean_error(b"<html>bad gateway</html>").is_none());
        let l = linode_error(br#"{"errors":[{"field":"label","reason":"Label too short"},{"reason":"Try again"}]}"#).unwrap();
        assert_eq!(l.message, "label: Label too short; Try again");
        assert!(linode_error(br#"{"errors":[]}"#).is_none());
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let p = RetryPolicy { base_delay: Duration::from_millis(100), max_delay: Duration::from_millis(1000), ..RetryPolicy::default() };
        for retry in 1..40 {
            let d = p.backoff(retry);
            let full = (Duration::from_millis(100) * 2u32.pow(retry.min(12) - 1)).min(Duration::from_millis(1000));
            assert!(d >= full / 2 && d <= full, "retry {retry}: {d:?} vs {full:?}");
        }
    }

    #[test]
    fn retry_after_reads_seconds() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"));
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn few_remaining_requests_space_the_next_ones_out() {
        let client = Client::new("http://127.0.0.1:9", None, STYLE, RetryPolicy::default()).unwrap();
        let pause = |remaining: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("ratelimit-remaining", HeaderValue::from_static(remaining));
            h.insert("ratelimit-reset", HeaderValue::from_static("4102444800"));
            client.note_rate_limit(&h);
            client.inner.not_before.lock().unwrap().map(|t| t.saturating_duration_since(Instant::now()))
        };
        assert_eq!(pause("4000"), None);
        let some = pause("25").unwrap();
        assert!(some > Duration::from_millis(900) && some <= Duration::from_secs(1), "{some:?}");
        assert!(pause("0").unwrap() <= Duration::from_secs(2), "never waits for a far-away reset");
    }

    #[test]
    fn the_token_stays_hidden() {
        let token = Secret::new("dop_v1_supersecret");
        assert_eq!(format!("{token:?} {token}"), "Secret(***) ***");
        let client = Client::new("https://api.digitalocean.com", Some(token), STYLE, RetryPolicy::default()).unwrap();
        assert!(!format!("{client:?}").contains("supersecret"));
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let err = Client::new("http://api.example.com", Some(Secret::new("t")), STYLE, RetryPolicy::default()).unwrap_err();
        assert!(crate::error::render(&err).contains("plain http"), "{}", crate::error::render(&err));
        assert!(Client::new("http://127.0.0.1:9/", None, STYLE, RetryPolicy::default()).is_ok());
        assert!(Client::new("http://localhost:9", None, STYLE, RetryPolicy::default()).is_ok());
        assert!(Client::new("https://user:pw@api.example.com", None, STYLE, RetryPolicy::default()).is_err());
    }

    #[test]
    fn a_failed_create_names_the_operation_and_may_have_applied() {
        let client = Client::new("http://127.0.0.1:9", None, STYLE, RetryPolicy::default()).unwrap();
        let body = br#"{"id":"server_error","message":"boom"}"#;
        let err = client.status_error("POST /v2/droplets", StatusCode::INTERNAL_SERVER_ERROR, body, 1, None, true);
        assert!(maybe_applied(&err));
        assert_eq!(api_status(&err), Some(500));
        let text = crate::error::render(&err);
        assert_eq!(text, "error: POST /v2/droplets returned 500\n  Caused by: boom\nhint: DigitalOcean had a problem on its side; run again in a little while\n");
    }
}
