//! Probes sent from the machine running sfuctl to a host, across the real network: a STUN Binding request
//! (coturn answers with the address it saw us at; written and read with `stun-types`) and a plain HTTP GET (Janus's
//! `/janus/info`); the audit's abuse probes: the TURN client of [`crate::turn_client`] (re-exported here) and an
//! HTTP POST of JSON (Janus's API).
//!
//! Also the audit's UDP range probe: a short-lived responder on the host ([`RESPONDER`]) binds the free ports of
//! the media range and answers datagrams with an HMAC of their content under a key only this run knows, and
//! [`udp_range`] sends a nonce-tagged datagram to every port from here. Only an answer counts: silence is a
//! failure, never "open|filtered".

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use std::net::IpAddr;

use anyhow::{Result, anyhow, bail};
use sha2::Sha256;
use stun_types::attribute::XorMappedAddress;
use stun_types::message::{BINDING, Message, MessageClass, MessageWrite, MessageWriteExt, MessageWriteVec, TransactionId};

pub use crate::turn_client::{Allocation, TurnClient, turn_rest_credential};

/// Sends a STUN Binding request to `target` over UDP and waits up to `timeout` for the matching success
/// response. Returns the XOR-MAPPED-ADDRESS the server reported (where it saw the request come from).
pub fn stun_binding(target: SocketAddr, timeout: Duration) -> Result<SocketAddr> {
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(target)?;
    let msg = Message::builder_request(BINDING, MessageWriteVec::new());
    let transaction = msg.transaction_id();
    let request = msg.finish();
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    // UDP may drop a datagram: resend every 250 ms until the deadline.
    while Instant::now() < deadline {
        match socket.send(&request) {
            Err(e) if e.kind() != std::io::ErrorKind::Interrupted => return Err(e.into()),
            _ => {}
        }
        let wait = (deadline - Instant::now()).min(Duration::from_millis(250)).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                if let Some(addr) = parse_binding_success(&buf[..n], transaction)? {
                    return Ok(addr);
                }
            }
            // A signal (SIGCHLD, SIGWINCH) interrupting the wait is no answer either: wait on.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!("nothing listens on udp {target} (ICMP port unreachable)"),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("no STUN answer from udp {target} within {:.1}s", timeout.as_secs_f64())
}

/// Parses a STUN Binding success response for `transaction`; `None` for a datagram that is not one.
fn parse_binding_success(datagram: &[u8], transaction: TransactionId) -> Result<Option<SocketAddr>> {
    let Ok(msg) = Message::from_bytes(datagram) else { return Ok(None) };
    if msg.transaction_id() != transaction || !msg.has_method(BINDING) {
        return Ok(None);
    }
    match msg.class() {
        MessageClass::Error => bail!("the STUN server answered with a Binding error"),
        MessageClass::Success => {
            let mapped = msg.attribute::<XorMappedAddress>().map_err(|_| anyhow!("the STUN answer has no XOR-MAPPED-ADDRESS"))?;
            Ok(Some(mapped.addr(transaction)))
        }
        _ => Ok(None),
    }
}

/// A plain HTTP/1.0 POST of a JSON body: returns the status code and the body.
pub fn http_post_json(target: SocketAddr, path: &str, body: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| anyhow!("cannot connect to tcp {target}: {e}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {target}\r\nUser-Agent: sfuctl\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).map_err(|e| anyhow!("cannot send to tcp {target}: {e}"))?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response).map_err(|e| anyhow!("no HTTP answer from tcp {target}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("not an HTTP answer from tcp {target}"))?;
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or_else(|| anyhow!("not an HTTP status line from tcp {target}"))?;
    Ok((status, body.to_string()))
}

/// A plain HTTP/1.0 GET: returns the status code and the body. For health probes, not a general client.
pub fn http_get(target: SocketAddr, path: &str, timeout: Duration) -> Result<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| anyhow!("cannot connect to tcp {target}: {e}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: {target}\r\nUser-Agent: sfuctl\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(|e| anyhow!("cannot send to tcp {target}: {e}"))?;
    let mut response = Vec::new();
    stream.take(1 << 20).read_to_end(&mut response).map_err(|e| anyhow!("no HTTP answer from tcp {target}: {e}"))?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n").ok_or_else(|| anyhow!("not an HTTP answer from tcp {target}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("not an HTTP status line from tcp {target}: {}", head.lines().next().unwrap_or("")))?;
    Ok((status, body.to_string()))
}

/// The UDP responder the audit runs on the host (Python 3, present on every common cloud image). It reads the key
/// as a hex line on stdin (so it never shows in `ps`), raises its open-file limit to the hard limit (a stock
/// login's soft limit of 1024 would stop it near port 1000), binds every free port of the range given as argv[1]
/// (`40000-41000` or one port) on the address argv[2], prints `ready <bound ranges>` (and ` next=<port>` when the
/// open-file limit ran out before the end of the range: the caller probes the rest in another window), answers
/// each probe with probe + HMAC-SHA256(key, probe)[:16], and exits when stdin closes or after argv[3] seconds.
pub const RESPONDER: &str = r#"import errno, hashlib, hmac, os, selectors, socket, sys, time
try:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = hard if hard != resource.RLIM_INFINITY else 1048576
    if want > soft: resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
except (ImportError, ValueError, OSError):
    pass
key = bytes.fromhex(sys.stdin.readline().strip())
span = sys.argv[1].split("-"); lo, hi = int(span[0]), int(span[-1]); addr = sys.argv[2]; limit = float(sys.argv[3])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
sel = selectors.DefaultSelector(); bound = []; nxt = None
out_of_files = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
for port in range(lo, hi + 1):
    try:
        s = socket.socket(family, socket.SOCK_DGRAM)
    except OSError as e:
        if e.errno in out_of_files: nxt = port; break
        raise
    try:
        s.bind((addr, port)); s.setblocking(False); sel.register(s, selectors.EVENT_READ, port)
    except OSError as e:
        s.close()
        if e.errno in out_of_files: nxt = port; break
        continue
    bound.append(port)
if nxt is not None and bound:
    # Keep a little room: the selector and the answers need descriptors too.
    for _ in range(min(16, len(bound))):
        p = bound.pop(); k = [k for k in sel.get_map().values() if k.data == p][0]; sel.unregister(k.fileobj); k.fileobj.close(); nxt = p
os.set_blocking(0, False); sel.register(sys.stdin, selectors.EVENT_READ, None)
ranges = []
for p in bound:
    if ranges and ranges[-1][1] == p - 1: ranges[-1][1] = p
    else: ranges.append([p, p])
print("ready " + ",".join("%d-%d" % (a, b) for a, b in ranges) + (" next=%d" % nxt if nxt is not None else ""), flush=True)
deadline = time.monotonic() + limit
while time.monotonic() < deadline:
    for k, _ in sel.select(max(0.0, deadline - time.monotonic())):
        if k.data is None:
            try:
                if not os.read(0, 4096): sys.exit(0)
            except BlockingIOError: pass
            continue
        try:
            d, a = k.fileobj.recvfrom(2048)
        except OSError:
            continue
        if d.startswith(b"SFUCTLP1") and len(d) == 26:
            k.fileobj.sendto(d + hmac.new(key, d, hashlib.sha256).digest()[:16], a)
"#;

/// The first bytes of every probe datagram.
const PROBE_MAGIC: &[u8; 8] = b"SFUCTLP1";

/// What a UDP range probe found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RangeResult {
    /// Ports probed.
    pub probed: Vec<u16>,
    /// Ports whose authenticated answer came back.
    pub reachable: Vec<u16>,
}

impl RangeResult {
    /// Probed ports with no authenticated answer.
    pub fn unreachable(&self) -> Vec<u16> {
        self.probed.iter().copied().filter(|p| self.reachable.binary_search(p).is_err()).collect()
    }
}

/// Parses the responder's `ready 40000-40499,40501-41000` line into ports.
pub fn parse_ready(line: &str) -> Vec<u16> {
    let ranges = line.trim_start_matches("ready").split_whitespace().find(|w| !w.starts_with("next=")).unwrap_or("");
    ranges.split(',').filter_map(|r| r.trim().parse::<crate::ports::PortRange>().ok()).flat_map(|r| r.start..=r.end).collect()
}

/// The port the responder stopped at when it ran out of open files (`next=40980`): the next window starts there.
pub fn parse_next(line: &str) -> Option<u16> {
    line.split_whitespace().find_map(|w| w.strip_prefix("next="))?.parse().ok()
}

/// Up to `n` ports spread evenly over `ports` (always the first and the last); all of them when `n` is `None`.
pub fn sample(ports: &[u16], n: Option<usize>) -> Vec<u16> {
    match n {
        Some(n) if n < ports.len() && n > 0 => {
            let step = (ports.len() - 1) as f64 / (n.max(2) - 1) as f64;
            let mut picked: Vec<u16> = (0..n.max(2)).map(|i| ports[((i as f64) * step).round() as usize]).collect();
            picked.dedup();
            picked
        }
        _ => ports.to_vec(),
    }
}

/// Sends one nonce-tagged datagram to each port of `target` from one socket, resending to the silent ones every
/// 200 ms, and keeps only answers that carry the right HMAC under `key` and come from that port. Stops when every
/// port has answered, or `timeout` has passed and no answer came in the last second (at most four times `timeout`).
pub fn udp_range(target: IpAddr, ports: &[u16], key: &[u8], timeout: Duration) -> Result<RangeResult> {
    use hmac::{Hmac, Mac};
    use std::collections::HashMap;
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let socket = UdpSocket::bind(bind)?;
    let mut sent: HashMap<u16, [u8; 26]> = HashMap::new();
    for &port in ports {
        let mut msg = [0u8; 26];
        msg[..8].copy_from_slice(PROBE_MAGIC);
        getrandom::fill(&mut msg[8..24]).map_err(|e| anyhow!("no random bytes: {e}"))?;
        msg[24..].copy_from_slice(&port.to_be_bytes());
        sent.insert(port, msg);
    }
    let mut reachable = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    // Keeps an answer when it is one: from the probed port, echoing our datagram, with the right HMAC.
    let mut accept = |n: usize, from: SocketAddr, buf: &[u8], sent: &mut HashMap<u16, [u8; 26]>| -> Result<()> {
        if n != 42 || from.ip() != target {
            return Ok(());
        }
        let Some(msg) = sent.get(&from.port()) else { return Ok(()) };
        let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|e| anyhow!("{e}"))?;
        mac.update(msg);
        let expected = mac.finalize().into_bytes();
        if buf[..26] == msg[..] && buf[26..42] == expected[..16] {
            sent.remove(&from.port());
            reachable.push(from.port());
        }
        Ok(())
    };
    let mut next_round = started;
    // Past the timeout, go on while answers still arrive (a busy host or a lossy path answers late, not never),
    // up to four times the timeout; a silent range still ends at the timeout.
    let mut last_answer = started;
    let mut answered = 0;
    let go_on = |sent: &HashMap<u16, [u8; 26]>, last_answer: Instant| {
        let elapsed = started.elapsed();
        !sent.is_empty() && (elapsed < timeout || (elapsed < timeout * 4 && last_answer.elapsed() < Duration::from_secs(1)))
    };
    while go_on(&sent, last_answer) {
        if reachable_count(&sent, ports.len()) > answered {
            answered = reachable_count(&sent, ports.len());
            last_answer = Instant::now();
        }
        if Instant::now() >= next_round {
            // Read answers between batches: sending all first would let them overflow our receive buffer.
            let round: Vec<(u16, [u8; 26])> = sent.iter().map(|(p, m)| (*p, *m)).collect();
            for batch in round.chunks(64) {
                for (port, msg) in batch {
                    // A full send buffer or an ICMP error from an earlier datagram is no answer: keep going.
                    let _ = socket.send_to(msg, SocketAddr::new(target, *port));
                }
                socket.set_nonblocking(true)?;
                loop {
                    match socket.recv_from(&mut buf) {
                        Ok((n, from)) => accept(n, from, &buf, &mut sent)?,
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::Interrupted) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                socket.set_nonblocking(false)?;
            }
            next_round = Instant::now() + Duration::from_millis(200);
        }
        if sent.is_empty() {
            break;
        }
        let wait = next_round.min(started + timeout * 4).saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv_from(&mut buf) {
            Ok((n, from)) => accept(n, from, &buf, &mut sent)?,
            Err(e) if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::Interrupted
            ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    reachable.sort_unstable();
    let mut probed = ports.to_vec();
    probed.sort_unstable();
    Ok(RangeResult { probed, reachable })
}

/// How many of `total` probed ports have answered, given those still waiting in `sent`.
fn reachable_count(sent: &std::collections::HashMap<u16, [u8; 26]>, total: usize) -> usize {
    total - sent.len()
}

/// Consecutive ports as ranges: `[40000, 40001, 40005]` → `["40000-40001", "40005"]`.
pub fn ranges(ports: &[u16]) -> Vec<String> {
    let mut out: Vec<(u16, u16)> = Vec::new();
    for &p in ports {
        match out.last_mut() {
            Some((_, end)) if u32::from(*end) + 1 == u32::from(p) => *end = p,
            _ => out.push((p, p)),
        }
    }
    out.into_iter().map(|(a, b)| crate::ports::PortRange { start: a, end: b }.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_xor_mapped_address_of_our_transaction_only() {
        let request = Message::builder_request(BINDING, MessageWriteVec::new()).finish();
        let request = Message::from_bytes(&request).unwrap();
        let seen: SocketAddr = "203.0.113.5:40000".parse().unwrap();
        let mut answer = Message::builder_success(&request, MessageWriteVec::new());
        answer.add_attribute(&XorMappedAddress::new(seen, request.transaction_id())).unwrap();
        let answer = answer.finish();
        assert_eq!(parse_binding_success(&answer, request.transaction_id()).unwrap(), Some(seen));
        let other = Message::builder_request(BINDING, MessageWriteVec::new()).transaction_id();
        assert_eq!(parse_binding_success(&answer, other).unwrap(), None, "another transaction is ignored");
        let error = Message::builder_error(&request, MessageWriteVec::new()).finish();
        assert!(parse_binding_success(&error, request.transaction_id()).is_err());
    }

    #[test]
    fn the_python_responder_answers_only_with_the_right_key() {
        // The real responder on loopback: bound ports answer with a valid HMAC; a wrong key proves nothing.
        let mut child = std::process::Command::new("python3")
            .args(["-c", RESPONDER, "47100-47109", "127.0.0.1", "20"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("python3 runs the responder");
        let key = [7u8; 32];
        use std::io::BufRead;
        writeln!(child.stdin.as_mut().unwrap(), "{}", crate::artifact::hex(&key)).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let bound = parse_ready(&line);
        assert_eq!(bound.len(), 10, "{line}");
        let localhost: IpAddr = "127.0.0.1".parse().unwrap();
        let mut ports = bound.clone();
        ports.push(47110); // not bound: must not count
        let got = udp_range(localhost, &ports, &key, Duration::from_millis(800)).unwrap();
        assert_eq!(got.reachable, bound);
        assert_eq!(got.unreachable(), vec![47110]);
        let forged = udp_range(localhost, &bound, &[8u8; 32], Duration::from_millis(300)).unwrap();
        assert!(forged.reachable.is_empty(), "answers under another key are not accepted");
        drop(child.stdin.take());
        child.wait().unwrap();
    }

    /// Runs the responder under `prlimit` with a hard open-file limit, returns its ready line.
    fn ready_line_under_limit(range: &str, nofile: u32) -> String {
        use std::io::BufRead;
        let mut child = std::process::Command::new("prlimit")
            .args([format!("--nofile={nofile}:{nofile}"), "python3".into(), "-c".into(), RESPONDER.into(), range.into(), "127.0.0.1".into(), "5".into()])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("prlimit (util-linux) runs python3");
        writeln!(child.stdin.as_mut().unwrap(), "{}", crate::artifact::hex(&[1u8; 32])).unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        drop(child.stdin.take());
        child.wait().unwrap();
        line
    }

    #[test]
    fn the_responder_says_where_to_go_on_when_open_files_run_out() {
        // 256 descriptors for 2000 ports: it binds what fits, keeps some room, and names the next port.
        let line = ready_line_under_limit("47200-49199", 256);
        let bound = parse_ready(&line);
        let next = parse_next(&line).unwrap_or_else(|| panic!("no next= in {line}"));
        assert!(bound.len() > 150 && bound.len() < 256, "{line}");
        assert_eq!(u32::from(next), u32::from(*bound.last().unwrap()) + 1, "{line}");
        // A single port is a range too (a mediasoup WebRtcServer on one port).
        let line = ready_line_under_limit("47300", 256);
        assert_eq!(parse_ready(&line), vec![47300], "{line}");
        assert_eq!(parse_next(&line), None);
    }

    #[test]
    fn ranges_and_samples() {
        assert_eq!(ranges(&[40000, 40001, 40002, 40005]), vec!["40000-40002", "40005"]);
        let all: Vec<u16> = (40000..=41000).collect();
        let s = sample(&all, Some(5));
        assert_eq!(s, vec![40000, 40250, 40500, 40750, 41000]);
        assert_eq!(sample(&all, None).len(), 1001);
        assert_eq!(parse_ready("ready 40000-40002,40005-40005\n"), vec![40000, 40001, 40002, 40005]);
        assert_eq!(parse_ready("ready 40000-40001 next=40002\n"), vec![40000, 40001]);
        assert_eq!(parse_next("ready 40000-40001 next=40002\n"), Some(40002));
    }

    #[test]
    fn silence_is_a_failure_not_a_pass() {
        // A local socket that never answers.
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = stun_binding(quiet.local_addr().unwrap(), Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("no STUN answer"), "{err}");
    }

    #[test]
    fn http_get_reads_status_and_body() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                seen.extend_from_slice(&buf[..n]);
            }
            s.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\r\n{\"janus\": \"server_info\"}").unwrap();
        });
        let (status, body) = http_get(addr, "/janus/info", Duration::from_secs(2)).unwrap();
        server.join().unwrap();
        assert_eq!(status, 200);
        assert!(body.contains("server_info"));
    }
}
