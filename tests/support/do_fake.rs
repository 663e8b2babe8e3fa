//! The stateful DigitalOcean fake (`tests/fakes/digitalocean/server.py`), one per test on its own loopback port.
//! The other cloud fakes share its command line and control API (`/_fake/...`): [`DoFake::launch`] starts any of
//! them (see `vultr_fake.rs`).
//!
//! [`DoFake::start`] runs it from the test bed's venv, waits for its port file and returns a guard. Dropping the
//! guard asserts that the fake saw no request the official OpenAPI document rejects (unless the test is already
//! panicking), then kills the process. A missing venv panics with a pointer to `scripts/testbed/fake-deps`:
//! these tests never skip.
//!
//! The control API (`/_fake/...`) is spoken with a few lines of blocking HTTP/1.1 over a `TcpStream`, so the
//! guard also works from `Drop` and from sync code.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The test bed's Python with the fake's packages.
pub const PYTHON: &str = "/opt/sfuctl-testbed/venv/bin/python";

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A running fake. Dropping it checks for OpenAPI violations and stops it.
pub struct DoFake {
    child: Child,
    port: u16,
    token: String,
    dir: tempfile::TempDir,
    /// The cloud it fakes, for messages.
    title: &'static str,
}

impl DoFake {
    /// Starts a fake with an address pool of ten 10.200.250.x addresses and no delays.
    pub fn start() -> DoFake {
        Self::start_with(&["--address-pool", &pool(10)])
    }

    /// Starts a fake with extra flags (e.g. `--address-pool`, `--boot-delay`).
    pub fn start_with(args: &[&str]) -> DoFake {
        Self::launch("DigitalOcean", "tests/fakes/digitalocean/server.py", "--token", args)
    }

    /// Starts the fake of `title` (`script` relative to the repository, taking its credential as `key_flag T`),
    /// with extra flags. Every cloud fake takes `--port 0 --port-file F --exit-with-parent`.
    pub fn launch(title: &'static str, script: &str, key_flag: &str, args: &[&str]) -> DoFake {
        let python = Path::new(PYTHON);
        assert!(python.exists(), "{PYTHON} is missing: run `scripts/testbed/fake-deps` (as root) to install the {title} fake's packages");
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let dir = tempfile::Builder::new().prefix("sfuctl-fake-").tempdir().expect("temp dir");
        let port_file = dir.path().join("port");
        let log = std::fs::File::create(dir.path().join("fake.log")).expect("fake log");
        let token = format!("test-token-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed));
        let child = Command::new(python)
            .arg(repo.join(script))
            .args(["--port", "0", "--port-file"])
            .arg(&port_file)
            .args([key_flag, &token, "--exit-with-parent"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {PYTHON}: {e}; run `scripts/testbed/fake-deps`"));
        let mut fake = DoFake { child, port: 0, token, dir, title };
        let started = Instant::now();
        loop {
            if let Some(port) = std::fs::read_to_string(&port_file).ok().and_then(|s| s.trim().parse().ok()) {
                fake.port = port;
                break;
            }
            if let Ok(Some(status)) = fake.child.try_wait() {
                panic!("the {title} fake exited ({status}) before it listened:\n{}", fake.log());
            }
            assert!(started.elapsed() < Duration::from_secs(30), "the {title} fake did not listen within 30 s:\n{}", fake.log());
            std::thread::sleep(Duration::from_millis(20));
        }
        fake
    }

    /// The API base URL (without `/v2`).
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The only token the fake accepts.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// What the fake printed (its start line, and any traceback).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fake.log")).unwrap_or_default()
    }

    /// `GET` a control path (`/_fake/state`), as JSON.
    pub fn get(&self, path: &str) -> Value {
        self.call("GET", path, None, &[])
    }

    /// `POST` JSON to a control path (`/_fake/faults`), as JSON.
    pub fn post(&self, path: &str, body: &Value) -> Value {
        self.call("POST", path, Some(body), &[])
    }

    /// An out-of-band API call, as someone else (the console, another tool) would make it: with the token, marked
    /// `X-Fake-Oob: 1` in the request log.
    pub fn oob(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let auth = format!("Bearer {}", self.token);
        self.call(method, path, body, &[("Authorization", &auth), ("X-Fake-Oob", "1")])
    }

    /// Injects faults (`{"method","path_regex","status","count","retry_after"}`).
    pub fn fault(&self, fault: Value) {
        self.post("/_fake/faults", &fault);
    }

    /// The requests the client made (out-of-band ones left out).
    pub fn requests(&self) -> Vec<Value> {
        let all = self.get("/_fake/requests");
        all["requests"].as_array().cloned().unwrap_or_default().into_iter().filter(|r| r["oob"] != Value::Bool(true)).collect()
    }

    /// The client's requests as `METHOD /path -> status` lines.
    pub fn request_lines(&self) -> Vec<String> {
        self.requests().iter().map(|r| format!("{} {} -> {}", r["method"].as_str().unwrap_or("?"), r["path"].as_str().unwrap_or("?"), r["status"])).collect()
    }

    /// Every request the OpenAPI document rejected so far.
    pub fn violations(&self) -> Vec<Value> {
        self.get("/_fake/violations")["violations"].as_array().cloned().unwrap_or_default()
    }

    /// Panics, listing them, when the fake saw any request the OpenAPI document rejects.
    pub fn assert_no_violations(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "{} request(s) violate {}'s OpenAPI document:\n{}",
            violations.len(),
            self.title,
            violations
                .iter()
                .map(|v| format!("  {} {}: {}", v["method"].as_str().unwrap_or("?"), v["path"].as_str().unwrap_or("?"), v["validation_error"]))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>, headers: &[(&str, &str)]) -> Value {
        let body = body.map(|b| serde_json::to_vec(b).expect("json")).unwrap_or_default();
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).unwrap_or_else(|e| panic!("fake on port {}: {e}\n{}", self.port, self.log()));
        stream.set_read_timeout(Some(Duration::from_secs(10))).expect("timeout");
        let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nConnection: close\r\nContent-Length: {}\r\n", self.port, body.len());
        if !body.is_empty() {
            head.push_str("Content-Type: application/json\r\n");
        }
        for (k, v) in headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        stream.write_all(head.as_bytes()).and_then(|()| stream.write_all(&body)).expect("write to the fake");
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).expect("read from the fake");
        let text = String::from_utf8_lossy(&raw);
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        let status = head.split_whitespace().nth(1).unwrap_or("?");
        assert!(status.starts_with('2'), "{method} {path} on the fake returned {status}: {body}");
        if body.trim().is_empty() { Value::Null } else { serde_json::from_str(body).unwrap_or_else(|e| panic!("{method} {path}: {e}: {body}")) }
    }
}

impl Drop for DoFake {
    fn drop(&mut self) {
        let check = if std::thread::panicking() { None } else { Some(self.violations()) };
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(violations) = check {
            assert!(violations.is_empty(), "{} OpenAPI violations: {}", self.title, serde_json::to_string_pretty(&violations).unwrap_or_default());
        }
    }
}

/// A comma list of `n` public IPv4s for `--address-pool`, from 10.200.250.0/24 (no traffic goes to them).
pub fn pool(n: usize) -> String {
    (0..n).map(|i| format!("10.200.250.{}", i + 2)).collect::<Vec<_>>().join(",")
}
