//! The one HTTP transport for cloud provider APIs: a base URL, pluggable auth ([`Auth`]: a bearer token, or a
//! [`Signer`] such as AWS SigV4 called on every attempt), timeouts, bounded retries with capped exponential backoff
//! and jitter, pacing on the provider's rate-limit headers, and request counters.
//!
//! It knows nothing about any one provider. What differs between providers comes in an [`ApiStyle`]: the name
//! used in messages, a hook that reads the provider's error answers (its code and message, and whether an answer
//! means "slow down" or a passing problem), and one that gives the hint. [`BearerStyle`] is the style of the
//! bearer-token JSON APIs; each provider module brings its own error body parser, and EC2 its whole style.
//!
//! What is retried, and why:
//! - throttling always (the request was refused, nothing happened): a 429, or what the style calls throttling
//!   (EC2 answers `RequestLimitExceeded` with a 503), waiting `Retry-After` when the provider sends it;
//! - connection failures before the request was sent, always;
//! - 5xx, 408, timeouts (and what the style calls transient) only for requests marked [`Retry::Always`] (GET, PUT,
//!   DELETE and idempotent POSTs). A create POST ([`Retry::IfNotSent`]) may have been applied before the failure,
//!   so the error comes back at once, marked by [`maybe_applied`], and the provider looks up what exists before it
//!   creates again.
//!
//! A failed call becomes a [`UserError`] naming the operation (`POST /v2/firewalls returned 422`) whose cause is an
//! [`ApiFailure`] holding the provider's own message. Credentials never appear in an error, a `Debug` or a log.

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
use crate::log::{self, Area, Level};

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

/// A failed call as a provider's [`ApiStyle::hint`] sees it.
#[derive(Clone, Copy, Debug)]
pub struct Failure<'a> {
    /// The operation, as the error names it (`POST /v2/firewalls`, `EC2 RunInstances`).
    pub operation: &'a str,
    /// The API's base URL, without a trailing slash.
    pub base_url: &'a str,
    /// The HTTP status, or `None` when no answer came (connection failure, timeout).
    pub status: Option<StatusCode>,
    /// The provider's error code, when it sent one.
    pub code: Option<&'a str>,
    /// The `Retry-After` of a throttling answer that was not waited out.
    pub retry_after: Option<Duration>,
}

/// What differs between providers' APIs, as far as the transport cares: names in messages, how an error answer
/// reads and what it means for retrying, and the hint for a failure.
pub trait ApiStyle: Send + Sync + 'static {
    /// The provider's name in messages (`DigitalOcean`, `EC2`).
    fn title(&self) -> &str;

    /// What the base URL is called in messages (`DigitalOcean API URL`).
    fn url_name(&self) -> String {
        format!("{} API URL", self.title())
    }

    /// Where the credentials come from, for hints (`$DIGITALOCEAN_TOKEN`).
    fn credentials(&self) -> String {
        format!("the {} credentials", self.title())
    }

    /// The `Accept` header of every request.
    fn accept(&self) -> &'static str {
        "application/json"
    }

    /// The provider's code and message in an error answer; `None` when the body is not in its format (the
    /// message is then the status and the start of the body).
    fn parse_error(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<ProviderMessage>;

    /// Whether an error answer means "slow down": nothing was done, and the request may be sent again after a
    /// pause (`Retry-After`, or the backoff).
    fn throttled(&self, status: StatusCode, _code: Option<&str>) -> bool {
        status == StatusCode::TOO_MANY_REQUESTS
    }

    /// Whether an error answer is a passing problem, retried when the request allows it ([`Retry::Always`]).
    fn transient(&self, status: StatusCode, _code: Option<&str>) -> bool {
        status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT
    }

    /// The error's first line for an error answer (the attempts are appended): `POST /v2/firewalls returned 422`.
    fn headline(&self, operation: &str, status: StatusCode, _code: Option<&str>) -> String {
        format!("{operation} returned {}", status.as_u16())
    }

    /// What a person can do about a failure, when the style knows.
    fn hint(&self, failure: &Failure<'_>) -> Option<String>;
}

/// The style of a JSON API with a bearer token (DigitalOcean, Linode): hints name the token's variable.
#[derive(Clone, Copy, Debug)]
pub struct BearerStyle {
    /// The provider's name in messages (`DigitalOcean`).
    pub title: &'static str,
    /// The variable the token comes from, named in hints (`DIGITALOCEAN_TOKEN`).
    pub token_env: &'static str,
    /// What a token that lacks a scope needs, for the 403 hint (`give it read and write access (droplet, ...)`).
    pub scopes: &'static str,
    /// Turns an error body into one line.
    pub parse_error: ErrorParser,
}

impl ApiStyle for BearerStyle {
    fn title(&self) -> &str {
        self.title
    }

    fn credentials(&self) -> String {
        format!("${}", self.token_env)
    }

    fn parse_error(&self, _status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> Option<ProviderMessage> {
        (self.parse_error)(body)
    }

    fn hint(&self, failure: &Failure<'_>) -> Option<String> {
        let (title, token_env) = (self.title, self.token_env);
        let Some(status) = failure.status else {
            return Some(format!("check the network and the {title} API URL ({})", failure.base_url));
        };
        match status.as_u16() {
            401 => Some(format!("check ${token_env}: the {title} API did not accept the token (expired, revoked or mistyped?)")),
            403 => Some(format!("the token in ${token_env} lacks a scope this needs: {}", self.scopes)),
            429 => Some(match failure.retry_after {
                Some(after) => format!("{title}'s rate limit was hit; it asks to wait {}s: run again later", after.as_secs()),
                None => format!("{title}'s rate limit was hit (other tools using the same token count too): wait a minute and run again"),
            }),
            500..=599 => Some(format!("{title} had a problem on its side; run again in a little while")),
            _ => None,
        }
    }
}

/// Signs requests whose signature covers the time (AWS SigV4): called for every attempt, retries included.
pub trait Signer: Send + Sync {
    /// Whose signature it is, in messages (`AWS`, as in "signed AWS requests").
    fn issuer(&self) -> &str;

    /// Adds the signature's headers to one attempt of `request`, signed at `time`.
    fn sign(&self, request: &mut reqwest::Request, time: SystemTime) -> Result<()>;
}

/// How requests say who sends them.
#[derive(Clone)]
pub enum Auth {
    /// No credentials (fakes in tests).
    None,
    /// `Authorization: Bearer <token>`.
    Bearer(Secret),
    /// Headers from a signer, per attempt.
    Signed(Arc<dyn Signer>),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::None => f.write_str("None"),
            Auth::Bearer(token) => f.debug_tuple("Bearer").field(token).finish(),
            Auth::Signed(signer) => write!(f, "Signed({})", signer.issuer()),
        }
    }
}

/// [`Auth`] made ready to apply: the bearer header checked and marked sensitive once.
enum Authorizer {
    None,
    Header(HeaderValue),
    Signer(Arc<dyn Signer>),
}

impl Authorizer {
    fn apply(&self, request: &mut reqwest::Request) -> Result<()> {
        match self {
            Authorizer::None => Ok(()),
            Authorizer::Header(value) => {
                request.headers_mut().insert(reqwest::header::AUTHORIZATION, value.clone());
                Ok(())
            }
            Authorizer::Signer(signer) => signer.sign(request, SystemTime::now()),
        }
    }
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
    /// Attempts that may change something (by default every method but GET and HEAD).
    pub mutating: u64,
    /// Attempts that were retries of an earlier one.
    pub retries: u64,
    /// 429 answers seen.
    pub rate_limited: u64,
    /// Milliseconds spent waiting before retries or pacing.
    pub waited_ms: u64,
}

/// Request counters shared by a client's clones.
#[derive(Default)]
struct Counters {
    total: AtomicU64,
    mutating: AtomicU64,
    retries: AtomicU64,
    rate_limited: AtomicU64,
    waited_ms: AtomicU64,
}

impl Counters {
    /// The counts so far.
    fn snapshot(&self) -> RequestStats {
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
    /// Whether the request may have taken effect although it failed: a change answered 5xx or timed out, and was
    /// not (or no longer) sent again.
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
    auth: Authorizer,
    style: Box<dyn ApiStyle>,
    policy: RetryPolicy,
    counters: Counters,
    /// No request starts before this moment (set when the rate limit runs low).
    not_before: Mutex<Option<Instant>>,
}

/// An API client. Cheap to clone; clones share connections, counters and pacing.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client").field("provider", &self.inner.style.title()).field("base", &self.inner.base).finish_non_exhaustive()
    }
}

/// Installs the ring crypto provider for rustls once (reqwest is built with `rustls-no-provider`).
fn install_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider is already installed, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Client {
    /// A client for the API at `base_url` (paths are appended as given, e.g. `/v2/droplets`).
    ///
    /// Plain `http://` is accepted only for loopback addresses (fakes in tests): credentials never travel
    /// unencrypted over a network, and a URL must not carry any itself.
    pub fn new(base_url: &str, auth: Auth, style: impl ApiStyle, policy: RetryPolicy) -> Result<Self> {
        let base = base_url.trim().trim_end_matches('/').to_string();
        let url = Url::parse(&base).map_err(|e| UserError::input(format!("`{base}` is not a valid {}", style.url_name())).caused_by(e))?;
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let loopback = host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback());
        match url.scheme() {
            "https" => {}
            "http" if loopback => {}
            "http" => {
                let what = match &auth {
                    Auth::Signed(signer) => format!("signed {} requests", signer.issuer()),
                    Auth::None | Auth::Bearer(_) => format!("the {} token", style.title()),
                };
                return Err(UserError::input(format!("refusing to send {what} over plain http to `{base}`"))
                    .hint("use an https:// URL (plain http is allowed for 127.0.0.1 and localhost only)")
                    .into());
            }
            other => return Err(UserError::input(format!("`{base}`: unsupported URL scheme `{other}`")).into()),
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UserError::input(format!("the {} must not carry credentials", style.url_name())).into());
        }
        install_crypto();
        let mut headers = HeaderMap::new();
        headers.insert(reqwest::header::ACCEPT, HeaderValue::from_static(style.accept()));
        let http = reqwest::Client::builder()
            .user_agent(concat!("sfuctl/", env!("CARGO_PKG_VERSION")))
            .default_headers(headers)
            .timeout(policy.timeout)
            .connect_timeout(policy.connect_timeout)
            .build()
            .map_err(|e| UserError::failed("cannot set up the HTTP client").caused_by(e))?;
        let auth = match auth {
            Auth::None => Authorizer::None,
            Auth::Bearer(token) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", token.expose())).map_err(|_| {
                    UserError::input(format!("the {} token holds characters a header cannot carry", style.title())).hint(format!("check {}", style.credentials()))
                })?;
                value.set_sensitive(true);
                Authorizer::Header(value)
            }
            Auth::Signed(signer) => Authorizer::Signer(signer),
        };
        let policy = RetryPolicy { max_attempts: policy.max_attempts.max(1), ..policy };
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                auth,
                style: Box::new(style),
                policy,
                counters: Counters::default(),
                not_before: Mutex::new(None),
            }),
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
    pub fn title(&self) -> &str {
        self.inner.style.title()
    }

    /// The requests sent so far.
    pub fn stats(&self) -> RequestStats {
        self.inner.counters.snapshot()
    }

    /// Starts a request: `client.request(Method::GET, "/v2/droplets").query("tag_name", t).send().await`.
    pub fn request<'c>(&'c self, method: Method, path: &str) -> RequestBuilder<'c> {
        let retry = if method == Method::POST { Retry::IfNotSent } else { Retry::Always };
        RequestBuilder {
            client: self,
            method,
            path: path.to_string(),
            operation: None,
            query: Vec::new(),
            body: None,
            headers: Vec::new(),
            retry,
            mutating: None,
            accept: Vec::new(),
        }
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

    /// Waits `pause`, counting it in [`RequestStats::waited_ms`] (for callers' own retries too).
    pub async fn wait(&self, pause: Duration) {
        self.inner.counters.waited_ms.fetch_add(pause.as_millis() as u64, Ordering::Relaxed);
        tokio::time::sleep(pause).await;
    }

    /// Reads the rate-limit headers (`ratelimit-*` on DigitalOcean, `x-ratelimit-*` on Linode) and spaces the
    /// next requests out when few remain.
    fn note_rate_limit(&self, headers: &HeaderMap) {
        let number = |names: &[&str]| names.iter().find_map(|n| headers.get(*n)?.to_str().ok()?.trim().parse::<u64>().ok());
        let Some(remaining) = number(&["ratelimit-remaining", "x-ratelimit-remaining"]) else { return };
        let policy = &self.inner.policy;
        // "Few" is relative to the window: 9 left of Linode's 10 creates per 30 s is plenty (the engine paces
        // creates itself), 9 left of DigitalOcean's 5,000 per hour is not. The threshold is at most a fifth of
        // the window's limit when the provider says what that is.
        let low_remaining = number(&["ratelimit-limit", "x-ratelimit-limit"]).map_or(policy.low_remaining, |limit| policy.low_remaining.min(limit / 5));
        // The pause grows linearly to `max_pace` as the window empties. It never waits for `ratelimit-reset`:
        // on DigitalOcean that is when the *oldest* counted request expires, up to an hour away, and a 429's own
        // Retry-After says better how long to wait.
        let pause = (remaining < low_remaining).then(|| {
            let short = (low_remaining - remaining) as f64 / low_remaining as f64;
            policy.max_pace.mul_f64(short)
        });
        let mut guard = self.inner.not_before.lock().unwrap_or_else(|p| p.into_inner());
        *guard = pause.map(|p| Instant::now() + p);
    }

    async fn execute(&self, req: RequestBuilder<'_>) -> Result<Reply> {
        let inner = &self.inner;
        let operation = req.operation.unwrap_or_else(|| format!("{} {}", req.method, req.path));
        let mut url = Url::parse(&format!("{}{}", inner.base, req.path))
            .map_err(|e| UserError::failed(format!("{operation}: cannot build the request URL")).caused_by(e))?;
        if !req.query.is_empty() {
            url.query_pairs_mut().extend_pairs(req.query.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        }
        let mutating = req.mutating.unwrap_or(!matches!(req.method, Method::GET | Method::HEAD));
        let shown = logged_target(&url);
        if let Some((content_type, body)) = &req.body {
            log::log(Area::Http, Level::Debug, || format!("{} {shown} body: {}", req.method, log::body(content_type, body)));
        }
        let policy = &inner.policy;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            self.pace().await;
            let mut builder = inner.http.request(req.method.clone(), url.clone());
            if let Some((content_type, body)) = &req.body {
                builder = builder.header(reqwest::header::CONTENT_TYPE, *content_type).body(body.clone());
            }
            for (name, value) in &req.headers {
                builder = builder.header(*name, value.as_str());
            }
            let mut request = builder.build().map_err(|e| UserError::failed(format!("{operation}: cannot build the request")).caused_by(e))?;
            // Per attempt: a signature covers the time it was made.
            inner.auth.apply(&mut request)?;
            inner.counters.total.fetch_add(1, Ordering::Relaxed);
            if mutating {
                inner.counters.mutating.fetch_add(1, Ordering::Relaxed);
            }
            if attempt > 1 {
                inner.counters.retries.fetch_add(1, Ordering::Relaxed);
            }
            let last = attempt >= policy.max_attempts;
            let sent_at = Instant::now();
            let outcome = match inner.http.execute(request).await {
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
            log::log(Area::Http, Level::Info, || {
                let took = sent_at.elapsed().as_millis();
                let retry = if attempt > 1 { format!(" (attempt {attempt})") } else { String::new() };
                match &outcome {
                    Ok((status, _, _)) => format!("{} {shown} -> {} ({took} ms){retry}", req.method, status.as_u16()),
                    Err(e) => {
                        let what = if e.is_timeout() { "timed out" } else if e.is_connect() { "could not connect" } else { "failed" };
                        format!("{} {shown} -> {what} ({took} ms){retry}", req.method)
                    }
                }
            });
            match outcome {
                Ok((status, headers, body)) => {
                    if status.is_success() || req.accept.contains(&status.as_u16()) {
                        return Ok(Reply { operation, status, body });
                    }
                    let parsed = inner.style.parse_error(status, &headers, &body);
                    let code = parsed.as_ref().and_then(|p| p.code.as_deref());
                    if inner.style.throttled(status, code) {
                        inner.counters.rate_limited.fetch_add(1, Ordering::Relaxed);
                        let after = retry_after(&headers);
                        let too_long = after.is_some_and(|a| a > policy.max_retry_after);
                        if !last && !too_long {
                            self.wait(after.unwrap_or_else(|| policy.backoff(attempt))).await;
                            continue;
                        }
                        return Err(self.status_error(&operation, status, parsed, &body, attempt, after, false));
                    }
                    let transient = inner.style.transient(status, code);
                    if transient && req.retry == Retry::Always && !last {
                        self.wait(retry_after(&headers).filter(|a| *a <= policy.max_delay).unwrap_or_else(|| policy.backoff(attempt))).await;
                        continue;
                    }
                    // Given up on a change that may have been made all the same: say so (see [`maybe_applied`]).
                    let maybe_applied = transient && mutating;
                    return Err(self.status_error(&operation, status, parsed, &body, attempt, None, maybe_applied));
                }
                Err(e) => {
                    // A refused connection never reached the server; anything later might have.
                    let not_sent = e.is_connect();
                    if (req.retry == Retry::Always || not_sent) && !last {
                        self.wait(policy.backoff(attempt)).await;
                        continue;
                    }
                    return Err(self.transport_error(&operation, e, attempt, mutating && !not_sent));
                }
            }
        }
    }

    /// The error of an answer with a status the caller does not accept, worded by the provider's style.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn status_error(
        &self,
        operation: &str,
        status: StatusCode,
        parsed: Option<ProviderMessage>,
        body: &[u8],
        attempts: u32,
        retry_after: Option<Duration>,
        maybe_applied: bool,
    ) -> anyhow::Error {
        let style = &self.inner.style;
        let message = match &parsed {
            Some(p) => p.message.clone(),
            None if body.iter().all(u8::is_ascii_whitespace) => format!("{} (empty body)", status_text(status)),
            None => format!("{} (body starts: {})", status_text(status), snippet(body)),
        };
        let code = parsed.and_then(|p| p.code);
        let tries = if attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
        let headline = format!("{}{tries}", style.headline(operation, status, code.as_deref()));
        // Credentials the API does not accept are bad input (exit 2), like credentials that are missing.
        let mut err = if status == StatusCode::UNAUTHORIZED { UserError::input(headline) } else { UserError::failed(headline) };
        let failure = Failure { operation, base_url: &self.inner.base, status: Some(status), code: code.as_deref(), retry_after };
        if let Some(hint) = style.hint(&failure) {
            err = err.hint(hint);
        }
        err.caused_by(ApiFailure { status: Some(status.as_u16()), code, message, maybe_applied }).into()
    }

    fn transport_error(&self, operation: &str, e: reqwest::Error, attempts: u32, maybe_applied: bool) -> anyhow::Error {
        let what = if e.is_timeout() { "timed out" } else if e.is_connect() { "could not connect" } else { "failed" };
        let message = chain_text(&e.without_url());
        let tries = if attempts > 1 { format!(" (after {attempts} attempts)") } else { String::new() };
        let mut err = UserError::failed(format!("{operation} {what}{tries}"));
        let failure = Failure { operation, base_url: &self.inner.base, status: None, code: None, retry_after: None };
        if let Some(hint) = self.inner.style.hint(&failure) {
            err = err.hint(hint);
        }
        err.caused_by(ApiFailure { status: None, code: None, message, maybe_applied }).into()
    }
}

/// The path and query of a request for the log, with the values of secret-named query parameters redacted (the
/// base URL is the same for every request of a client and is left out).
fn logged_target(url: &Url) -> String {
    if url.query().is_none() {
        return url.path().to_string();
    }
    let pairs: Vec<String> = url
        .query_pairs()
        .map(|(k, v)| if log::secret_field(&k) { format!("{k}=[redacted]") } else { format!("{k}={v}") })
        .collect();
    format!("{}?{}", url.path(), pairs.join("&"))
}

/// A request being built; see [`Client::request`].
pub struct RequestBuilder<'c> {
    client: &'c Client,
    method: Method,
    path: String,
    operation: Option<String>,
    query: Vec<(String, String)>,
    body: Option<(&'static str, Vec<u8>)>,
    headers: Vec<(&'static str, String)>,
    retry: Retry,
    mutating: Option<bool>,
    accept: Vec<u16>,
}

impl RequestBuilder<'_> {
    /// Adds a header (e.g. Linode's `X-Filter`). Not for credentials: those come from [`Auth`].
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Adds a query parameter (encoded).
    pub fn query(mut self, key: &str, value: impl ToString) -> Self {
        self.query.push((key.to_string(), value.to_string()));
        self
    }

    /// Sends `body` as JSON.
    pub fn json<B: Serialize + ?Sized>(mut self, body: &B) -> Self {
        // Serializing our own request types cannot fail (no maps with non-string keys, no custom errors).
        self.body = Some(("application/json", serde_json::to_vec(body).unwrap_or_default()));
        self
    }

    /// Sends `body` as it is, with its content type (e.g. a form).
    pub fn body(mut self, content_type: &'static str, body: Vec<u8>) -> Self {
        self.body = Some((content_type, body));
        self
    }

    /// Names the operation in errors (`EC2 RunInstances`); the default is the method and path.
    pub fn operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    /// Overrides whether the request may be resent after an ambiguous failure (POST defaults to
    /// [`Retry::IfNotSent`], every other method to [`Retry::Always`]).
    pub fn retry(mut self, retry: Retry) -> Self {
        self.retry = retry;
        self
    }

    /// Overrides whether the request counts as mutating in [`RequestStats`] (the default: every method but GET
    /// and HEAD; an RPC-style API decides by its action).
    pub fn mutating(mut self, mutating: bool) -> Self {
        self.mutating = Some(mutating);
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

    /// `{"message": "..."}`, enough of a provider's error body for these tests.
    fn message_only(body: &[u8]) -> Option<ProviderMessage> {
        let value: serde_json::Value = serde_json::from_slice(body).ok()?;
        Some(ProviderMessage { code: value["id"].as_str().map(str::to_string), message: value["message"].as_str()?.to_string() })
    }

    const STYLE: BearerStyle = BearerStyle {
        title: "DigitalOcean",
        token_env: "DIGITALOCEAN_TOKEN",
        scopes: "give it read and write access (droplet, firewall, ssh_key, tag)",
        parse_error: message_only,
    };

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
        let client = Client::new("http://127.0.0.1:9", Auth::None, STYLE, RetryPolicy::default()).unwrap();
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
    fn a_small_window_is_low_only_near_its_end() {
        // Linode's create window: 10 per 30 s. 9 left is plenty; 0 left spaces the next request out.
        let client = Client::new("http://127.0.0.1:9", Auth::None, STYLE, RetryPolicy::default()).unwrap();
        let pause = |remaining: &'static str| {
            let mut h = HeaderMap::new();
            h.insert("x-ratelimit-limit", HeaderValue::from_static("10"));
            h.insert("x-ratelimit-remaining", HeaderValue::from_static(remaining));
            client.note_rate_limit(&h);
            client.inner.not_before.lock().unwrap().map(|t| t.saturating_duration_since(Instant::now()))
        };
        assert_eq!(pause("9"), None);
        assert_eq!(pause("2"), None);
        assert!(pause("0").is_some_and(|p| p > Duration::from_secs(1)));
    }

    #[test]
    fn the_token_stays_hidden() {
        let token = Secret::new("dop_v1_supersecret");
        assert_eq!(format!("{token:?} {token}"), "Secret(***) ***");
        let client = Client::new("https://api.digitalocean.com", Auth::Bearer(token.clone()), STYLE, RetryPolicy::default()).unwrap();
        assert!(!format!("{client:?}").contains("supersecret"));
        assert_eq!(format!("{:?}", Auth::Bearer(token)), "Bearer(Secret(***))");
    }

    #[test]
    fn plain_http_only_on_loopback() {
        let err = Client::new("http://api.example.com", Auth::Bearer(Secret::new("t")), STYLE, RetryPolicy::default()).unwrap_err();
        assert!(crate::error::render(&err).contains("plain http"), "{}", crate::error::render(&err));
        assert!(Client::new("http://127.0.0.1:9/", Auth::None, STYLE, RetryPolicy::default()).is_ok());
        assert!(Client::new("http://localhost:9", Auth::None, STYLE, RetryPolicy::default()).is_ok());
        assert!(Client::new("https://user:pw@api.example.com", Auth::None, STYLE, RetryPolicy::default()).is_err());
    }

    #[test]
    fn a_failed_create_names_the_operation_and_may_have_applied() {
        let client = Client::new("http://127.0.0.1:9", Auth::None, STYLE, RetryPolicy::default()).unwrap();
        let body = br#"{"id":"server_error","message":"boom"}"#;
        let parsed = STYLE.parse_error(StatusCode::INTERNAL_SERVER_ERROR, &HeaderMap::new(), body);
        let err = client.status_error("POST /v2/droplets", StatusCode::INTERNAL_SERVER_ERROR, parsed, body, 1, None, true);
        assert!(maybe_applied(&err));
        assert_eq!(api_status(&err), Some(500));
        let text = crate::error::render(&err);
        assert_eq!(text, "error: POST /v2/droplets returned 500\n  Caused by: boom\nhint: DigitalOcean had a problem on its side; run again in a little while\n");
    }

    /// A signer that numbers its signatures, and a style that reads `{"id": "SlowDown"}` as throttling.
    struct Numbered(AtomicU64);

    impl Signer for Numbered {
        fn issuer(&self) -> &str {
            "test"
        }

        fn sign(&self, request: &mut reqwest::Request, _time: SystemTime) -> Result<()> {
            let n = self.0.fetch_add(1, Ordering::Relaxed) + 1;
            request.headers_mut().insert("x-signature", HeaderValue::from(n));
            Ok(())
        }
    }

    struct SlowDown;

    impl ApiStyle for SlowDown {
        fn title(&self) -> &str {
            "Test"
        }

        fn parse_error(&self, _status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> Option<ProviderMessage> {
            message_only(body)
        }

        fn throttled(&self, status: StatusCode, code: Option<&str>) -> bool {
            status == StatusCode::TOO_MANY_REQUESTS || code == Some("SlowDown")
        }

        fn hint(&self, _failure: &Failure<'_>) -> Option<String> {
            None
        }
    }

    /// A loopback server answering `replies` in turn, recording each request's head.
    async fn scripted(replies: Vec<(u16, &'static str)>) -> (String, Arc<Mutex<Vec<String>>>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        tokio::spawn(async move {
            for (status, body) in replies {
                let Ok((mut conn, _)) = listener.accept().await else { return };
                let mut raw = Vec::new();
                let mut buf = [0u8; 4096];
                while !String::from_utf8_lossy(&raw).contains("\r\n\r\n") {
                    let n = conn.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    raw.extend_from_slice(&buf[..n]);
                }
                seen.lock().unwrap().push(String::from_utf8_lossy(&raw).to_lowercase());
                let reply = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
                let _ = conn.write_all(reply.as_bytes()).await;
                let _ = conn.shutdown().await;
            }
        });
        (url, heads)
    }

    #[tokio::test]
    async fn each_attempt_is_signed_anew_and_the_style_decides_what_is_throttling() {
        let (url, heads) = scripted(vec![(400, r#"{"id":"SlowDown","message":"later"}"#), (200, "{}")]).await;
        let policy = RetryPolicy { base_delay: Duration::from_millis(5), max_delay: Duration::from_millis(10), ..RetryPolicy::default() };
        let client = Client::new(&url, Auth::Signed(Arc::new(Numbered(AtomicU64::new(0)))), SlowDown, policy).unwrap();
        client.request(Method::POST, "/").body("text/plain", b"x".to_vec()).mutating(false).send().await.unwrap();
        let heads = heads.lock().unwrap().clone();
        assert!(heads[0].contains("x-signature: 1") && heads[1].contains("x-signature: 2"), "{heads:?}");
        let stats = client.stats();
        assert_eq!((stats.total, stats.retries, stats.rate_limited, stats.mutating), (2, 1, 1, 0), "{stats:?}");

        // Any other 400 is the caller's answer at once.
        let (url, _) = scripted(vec![(400, r#"{"id":"Bad","message":"no such thing"}"#)]).await;
        let client = Client::new(&url, Auth::None, SlowDown, RetryPolicy::default()).unwrap();
        let err = client.request(Method::GET, "/x").operation("Test GetX").send().await.unwrap_err();
        assert_eq!(crate::error::render(&err), "error: Test GetX returned 400\n  Caused by: no such thing\n");
        assert_eq!(client.stats().total, 1);
    }
}
