//! A fault-injecting HTTP proxy in front of a cloud fake, so one mechanism serves every fake, including those
//! without a fault API of their own (moto).
//!
//! [`FaultProxy::start`] listens on a loopback port and forwards each request to the fake unchanged (the `Host`
//! header included, so a SigV4 signature over the proxy's address stays valid). A [`Fault`] answers the first
//! `count` requests that match its method and substrings itself, with a given status, headers and body:
//! - [`Effect::Refuse`]: the request never reaches the fake (a 429, a throttle, a 5xx from the front end);
//! - [`Effect::LoseAnswer`]: the fake handles the request, then its answer is replaced (a create that happened
//!   whose answer was lost: the case that tempts a client into creating twice);
//! - [`Effect::Reset`]: the connection is reset (TCP RST) before any answer, the request never forwarded;
//! - [`Effect::Stall`]: the fake handles the request, but no answer comes before the client's timeout;
//! - [`Effect::Hold`]: the request waits in the proxy until the test [`FaultProxy::release`]s it (forwarded or
//!   dropped), so a test can kill the client between a create request and its answer.
//!
//! [`Match::at`] aims a fault at the n-th request the proxy receives ([`FaultProxy::arrivals`] counts them), so a
//! test can replay a recorded run with a fault at every step.
//!
//! One request per connection: every answer carries `Connection: close`, so HTTP/1.1 framing needs no parsing
//! beyond the request's `Content-Length`. Blocking threads, so the proxy works under any test runtime.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// What a matching request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// Answered by the proxy; the fake never sees the request.
    Refuse,
    /// Forwarded to the fake (which acts on it); its answer is dropped and the fault's answer sent instead.
    LoseAnswer,
    /// Forwarded without its filter (an API, mock or proxy that ignores it), and the fake's answer returned: query
    /// parameters and form-body parameters whose name starts with one of these, and headers of one of these names,
    /// are removed. The fault's reply is not used.
    Strip(&'static [&'static str]),
    /// Answered by a TCP reset (no status line at all); the fake never sees the request.
    Reset,
    /// Forwarded to the fake (which acts on it); the answer is held back this long and then the connection is
    /// closed unanswered: longer than the client's timeout, this is a request that timed out after it was made.
    Stall(Duration),
    /// Held in the proxy until [`FaultProxy::release`]; see [`FaultProxy::wait_held`].
    Hold,
}

/// Which requests a fault hits: the method, the exact path (without the query), and substrings that must all
/// occur in the query and in the body.
#[derive(Clone, Debug, Default)]
pub struct Match {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, exactly (`/v2/droplets` does not match `/v2/droplets/7`); a trailing `*` makes it a prefix
    /// (`/v2/droplets/*`).
    pub path: String,
    /// Substrings of the query string, all required.
    pub query: Vec<String>,
    /// Substrings of the body, all required.
    pub body: Vec<String>,
    /// Only the request with this arrival number (0 for the first request the proxy received).
    pub nth: Option<u64>,
}

impl Match {
    /// `method path`, any query and body.
    pub fn new(method: &str, path: &str) -> Self {
        Self { method: method.into(), path: path.into(), ..Self::default() }
    }

    /// The `n`-th request the proxy receives (counting from 0 at its start), whatever it is.
    pub fn at(n: u64) -> Self {
        Self { method: "*".into(), path: "*".into(), nth: Some(n), ..Self::default() }
    }

    /// Also requires these substrings in the query string.
    pub fn query(mut self, parts: &[&str]) -> Self {
        self.query.extend(parts.iter().map(|s| s.to_string()));
        self
    }

    /// Also requires these substrings in the body (EC2's Query API: every call is `POST /` with `Action=...`).
    pub fn body(mut self, parts: &[&str]) -> Self {
        self.body.extend(parts.iter().map(|s| s.to_string()));
        self
    }

    fn hits(&self, req: &Request) -> bool {
        let (path, query) = req.target.split_once('?').unwrap_or((&req.target, ""));
        self.nth.is_none_or(|n| n == req.seq)
            && (self.method == "*" || req.method.eq_ignore_ascii_case(&self.method))
            && self.path.strip_suffix('*').map_or(path == self.path, |prefix| path.starts_with(prefix))
            && self.query.iter().all(|q| query.contains(q.as_str()))
            && self.body.iter().all(|b| req.body_text().contains(b.as_str()))
    }
}

/// An answer the proxy sends instead of the fake's.
#[derive(Clone, Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Extra headers (`Retry-After`).
    pub headers: Vec<(String, String)>,
    /// `Content-Type` of the body.
    pub content_type: String,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A JSON answer.
    pub fn json(status: u16, body: &str) -> Self {
        Self { status, headers: vec![], content_type: "application/json".into(), body: body.into() }
    }

    /// An XML answer (EC2's error document).
    pub fn xml(status: u16, body: &str) -> Self {
        Self { status, headers: vec![], content_type: "text/xml;charset=UTF-8".into(), body: body.into() }
    }

    /// The same answer with one more header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One injected fault.
#[derive(Clone, Debug)]
pub struct Fault {
    /// For messages: what the fault stands for (`list servers 429`).
    pub label: String,
    /// Which requests it hits.
    pub matches: Match,
    /// How many it hits.
    pub count: u32,
    /// Refused, or acted on with the answer lost.
    pub effect: Effect,
    /// What the client gets.
    pub reply: Reply,
}

#[derive(Debug)]
struct Armed {
    fault: Fault,
    hits: u32,
}

/// A request as the proxy saw it, for the log.
#[derive(Clone, Debug)]
pub struct Seen {
    /// `METHOD target`, plus ` Action=X` for EC2's Query API.
    pub line: String,
    /// The fault that answered it, if any.
    pub fault: Option<String>,
    /// The status the client got (0: no answer).
    pub status: u16,
}

/// What the test decided about a held request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Send it on to the fake (which acts on it); the answer goes to the client if it still listens.
    Forward,
    /// Close the connection; the fake never sees the request.
    Drop,
}

#[derive(Default)]
struct Holding {
    /// Requests held since the last release.
    held: u64,
    /// Requests still waiting for the decision.
    waiting: u64,
    /// The decision for every held request, once made.
    release: Option<Release>,
}

#[derive(Default)]
struct Shared {
    faults: Mutex<Vec<Armed>>,
    log: Mutex<Vec<Seen>>,
    stop: AtomicBool,
    arrivals: AtomicU64,
    holding: Mutex<Holding>,
    held_changed: Condvar,
}

/// A running proxy. Dropping it stops it.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free loopback port that forwards to `upstream` (`127.0.0.1:PORT`).
    pub fn start(upstream: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the fault proxy");
        let addr = listener.local_addr().expect("proxy address");
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                for conn in listener.incoming() {
                    if s.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let s = Arc::clone(&s);
                    std::thread::spawn(move || serve(conn, upstream, &s));
                }
            })
            .expect("spawn the fault proxy");
        FaultProxy { addr, shared, thread: Some(thread) }
    }

    /// The base URL clients use instead of the fake's.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Arms faults; the first armed fault that matches a request (and has hits left) answers it.
    pub fn inject(&self, faults: impl IntoIterator<Item = Fault>) {
        self.shared.faults.lock().unwrap().extend(faults.into_iter().map(|fault| Armed { fault, hits: 0 }));
    }

    /// Disarms every fault.
    pub fn clear(&self) {
        self.shared.faults.lock().unwrap().clear();
    }

    /// Faults that have hits left, as `label: hits/count`.
    pub fn unspent(&self) -> Vec<String> {
        self.shared.faults.lock().unwrap().iter().filter(|a| a.hits < a.fault.count).map(|a| format!("{}: {}/{}", a.fault.label, a.hits, a.fault.count)).collect()
    }

    /// How many requests arrived so far (the next one's number for [`Match::at`]).
    pub fn arrivals(&self) -> u64 {
        self.shared.arrivals.load(Ordering::SeqCst)
    }

    /// Waits until a request is held by an [`Effect::Hold`] fault; false when none was within `timeout`.
    pub fn wait_held(&self, timeout: Duration) -> bool {
        let holding = self.shared.holding.lock().unwrap();
        let (holding, _) = self.shared.held_changed.wait_timeout_while(holding, timeout, |h| h.held == 0).unwrap();
        holding.held > 0
    }

    /// Lets every held request go on as `release` says, waits until each took the decision (up to 10 s), then
    /// starts afresh: the next request an [`Effect::Hold`] catches is held again.
    pub fn release(&self, release: Release) {
        let mut holding = self.shared.holding.lock().unwrap();
        holding.release = Some(release);
        self.shared.held_changed.notify_all();
        let (mut holding, _) = self.shared.held_changed.wait_timeout_while(holding, Duration::from_secs(10), |h| h.waiting > 0).unwrap();
        *holding = Holding::default();
    }

    /// Every request so far, in order.
    pub fn log(&self) -> Vec<Seen> {
        self.shared.log.lock().unwrap().clone()
    }

    /// The log as text, one `line -> status [fault]` per request (for failure messages).
    pub fn log_text(&self) -> String {
        self.log()
            .iter()
            .map(|s| format!("  {} -> {}{}", s.line, s.status, s.fault.as_deref().map(|f| format!(" [fault: {f}]")).unwrap_or_default()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        // A request still held would keep its thread waiting forever.
        self.release(Release::Drop);
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

struct Request {
    /// Its arrival number (see [`Match::at`]).
    seq: u64,
    method: String,
    target: String,
    /// Header lines, as received, without the final CRLF.
    headers: Vec<String>,
    body: Vec<u8>,
}

impl Request {
    fn body_text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.body)
    }

    fn line(&self) -> String {
        let body = self.body_text();
        let action = body.split('&').find_map(|kv| kv.strip_prefix("Action=")).map(|a| format!(" Action={a}")).unwrap_or_default();
        format!("{} {}{action}", self.method, self.target)
    }

    /// The same request without the parameters and headers `parts` names (see [`Effect::Strip`]).
    fn stripped(&self, parts: &[&str]) -> Request {
        let keep = |kv: &&str| !parts.iter().any(|p| kv.starts_with(p));
        let target = match self.target.split_once('?') {
            Some((path, query)) => {
                let query: Vec<&str> = query.split('&').filter(keep).collect();
                if query.is_empty() { path.to_string() } else { format!("{path}?{}", query.join("&")) }
            }
            None => self.target.clone(),
        };
        let text = self.body_text();
        let body = if text.contains('=') && !text.trim_start().starts_with('{') { text.split('&').filter(keep).collect::<Vec<_>>().join("&").into_bytes() } else { self.body.clone() };
        let headers = self
            .headers
            .iter()
            .filter(|h| {
                let name = h.split(':').next().unwrap_or_default().trim();
                !parts.iter().any(|p| name.eq_ignore_ascii_case(p))
            })
            .map(|h| {
                let name = h.split(':').next().unwrap_or_default().trim();
                if name.eq_ignore_ascii_case("content-length") { format!("Content-Length: {}", body.len()) } else { h.clone() }
            })
            .collect();
        Request { seq: self.seq, method: self.method.clone(), target, headers, body }
    }

    /// The request as sent upstream: the same head with `Connection: close`.
    fn encode(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for h in &self.headers {
            let name = h.split(':').next().unwrap_or_default().trim();
            if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive") {
                head.push_str(h);
                head.push_str("\r\n");
            }
        }
        head.push_str("Connection: close\r\n\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }
}

fn read_request(conn: &TcpStream) -> std::io::Result<Option<Request>> {
    let mut reader = BufReader::new(conn);
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut parts = first.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default().to_string(), parts.next().unwrap_or_default().to_string());
    let mut headers = Vec::new();
    let mut length = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.trim().eq_ignore_ascii_case("content-length") {
                length = value.trim().parse().unwrap_or(0);
            }
            assert!(!name.trim().eq_ignore_ascii_case("transfer-encoding"), "the fault proxy takes no chunked request bodies: {line}");
        }
        headers.push(line);
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    Ok(Some(Request { seq: 0, method, target, headers, body }))
}

/// Forwards one request and returns the upstream's whole answer (it closes the connection after it).
fn forward(req: &Request, upstream: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut up = TcpStream::connect_timeout(&upstream, Duration::from_secs(10))?;
    up.set_read_timeout(Some(Duration::from_secs(60)))?;
    up.write_all(&req.encode())?;
    let mut raw = Vec::new();
    up.read_to_end(&mut raw)?;
    Ok(raw)
}

/// The upstream answer with `Connection: close` in place of any connection header.
fn closing(raw: &[u8]) -> (u16, Vec<u8>) {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").map_or(raw.len(), |p| p + 4);
    let head = String::from_utf8_lossy(&raw[..split]);
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let mut out = String::new();
    for line in head.split("\r\n").filter(|l| !l.is_empty()) {
        let name = line.split(':').next().unwrap_or_default().trim();
        if !name.eq_ignore_ascii_case("connection") && !name.eq_ignore_ascii_case("keep-alive") {
            out.push_str(line);
            out.push_str("\r\n");
        }
    }
    out.push_str("Connection: close\r\n\r\n");
    let mut bytes = out.into_bytes();
    bytes.extend_from_slice(&raw[split..]);
    (status, bytes)
}

fn encode_reply(reply: &Reply) -> Vec<u8> {
    let reason = match reply.status {
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Fault",
    };
    let mut head = format!(
        "HTTP/1.1 {} {reason}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n",
        reply.status,
        reply.content_type,
        reply.body.len()
    );
    for (k, v) in &reply.headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(reply.body.as_bytes());
    out
}

fn serve(mut conn: TcpStream, upstream: SocketAddr, shared: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(30)));
    let Ok(Some(mut req)) = read_request(&conn) else { return };
    req.seq = shared.arrivals.fetch_add(1, Ordering::SeqCst);
    let fault = {
        let mut faults = shared.faults.lock().unwrap();
        faults.iter_mut().find(|a| a.hits < a.fault.count && a.fault.matches.hits(&req)).map(|a| {
            a.hits += 1;
            a.fault.clone()
        })
    };
    let log = |status: u16| shared.log.lock().unwrap().push(Seen { line: req.line(), fault: fault.as_ref().map(|f| f.label.clone()), status });
    match fault.as_ref().map(|f| f.effect) {
        Some(Effect::Reset) => {
            log(0);
            reset(conn);
            return;
        }
        Some(Effect::Stall(for_how_long)) => {
            let _ = forward(&req, upstream);
            log(0);
            std::thread::sleep(for_how_long);
            return;
        }
        Some(Effect::Hold) => {
            let release = {
                let mut holding = shared.holding.lock().unwrap();
                holding.held += 1;
                holding.waiting += 1;
                shared.held_changed.notify_all();
                let mut holding = shared.held_changed.wait_while(holding, |h| h.release.is_none()).unwrap();
                holding.waiting -= 1;
                shared.held_changed.notify_all();
                holding.release
            };
            if release == Some(Release::Forward)
                && let Ok(raw) = forward(&req, upstream)
            {
                let (status, answer) = closing(&raw);
                log(status);
                let _ = conn.write_all(&answer);
                return;
            }
            log(0);
            return;
        }
        _ => {}
    }
    let (status, answer) = match &fault {
        Some(f) if f.effect == Effect::Refuse => (f.reply.status, encode_reply(&f.reply)),
        Some(Fault { effect: Effect::Strip(parts), .. }) => match forward(&req.stripped(parts), upstream) {
            Ok(raw) => closing(&raw),
            Err(e) => (502, encode_reply(&Reply::json(502, &format!("{{\"proxy_error\":\"{e}\"}}")))),
        },
        Some(f) => {
            // The fake acts on it; the client never learns.
            let _ = forward(&req, upstream);
            (f.reply.status, encode_reply(&f.reply))
        }
        None => match forward(&req, upstream) {
            Ok(raw) => closing(&raw),
            Err(e) => (502, encode_reply(&Reply::json(502, &format!("{{\"proxy_error\":\"{e}\"}}")))),
        },
    };
    log(status);
    let _ = conn.write_all(&answer);
    let _ = conn.flush();
}

/// Closes a connection with a TCP reset rather than an orderly close: `SO_LINGER` with a zero timeout.
fn reset(conn: TcpStream) {
    use std::os::fd::AsRawFd;
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: a valid socket descriptor owned by `conn`, and a `linger` of the size passed.
    unsafe {
        libc::setsockopt(conn.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&raw const linger).cast(), std::mem::size_of::<libc::linger>() as libc::socklen_t);
    }
    drop(conn);
}
