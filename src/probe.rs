//! Probes sent from the machine running sfuctl to a host, across the real network: a STUN Binding request
//! (coturn answers with the address it saw us at) and a plain HTTP GET (Janus's `/janus/info`).
//!
//! Only an answer counts: silence is a failure, never "open|filtered".

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Result, anyhow, bail};

/// The STUN magic cookie (RFC 5389).
const MAGIC_COOKIE: u32 = 0x2112_A442;

/// Sends a STUN Binding request to `target` over UDP and waits up to `timeout` for the matching success
/// response. Returns the XOR-MAPPED-ADDRESS the server reported (where it saw the request come from).
pub fn stun_binding(target: SocketAddr, timeout: Duration) -> Result<SocketAddr> {
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(target)?;
    let mut transaction = [0u8; 12];
    getrandom::fill(&mut transaction).map_err(|e| anyhow!("no random bytes: {e}"))?;
    let mut request = Vec::with_capacity(20);
    request.extend_from_slice(&0x0001u16.to_be_bytes()); // Binding request
    request.extend_from_slice(&0u16.to_be_bytes()); // no attributes
    request.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
    request.extend_from_slice(&transaction);
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    // UDP may drop a datagram: resend every 250 ms until the deadline.
    while Instant::now() < deadline {
        socket.send(&request)?;
        let wait = (deadline - Instant::now()).min(Duration::from_millis(250)).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        match socket.recv(&mut buf) {
            Ok(n) => {
                if let Some(addr) = parse_binding_success(&buf[..n], &transaction)? {
                    return Ok(addr);
                }
            }
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!("nothing listens on udp {target} (ICMP port unreachable)"),
            Err(e) => return Err(e.into()),
        }
    }
    bail!("no STUN answer from udp {target} within {:.1}s", timeout.as_secs_f64())
}

/// Parses a STUN Binding success response for `transaction`; `None` for a datagram that is not one.
fn parse_binding_success(msg: &[u8], transaction: &[u8; 12]) -> Result<Option<SocketAddr>> {
    if msg.len() < 20 || msg[4..8] != MAGIC_COOKIE.to_be_bytes() || &msg[8..20] != transaction {
        return Ok(None);
    }
    let kind = u16::from_be_bytes([msg[0], msg[1]]);
    if kind == 0x0111 {
        bail!("the STUN server answered with a Binding error");
    }
    if kind != 0x0101 {
        return Ok(None);
    }
    let mut attrs = &msg[20..];
    while attrs.len() >= 4 {
        let ty = u16::from_be_bytes([attrs[0], attrs[1]]);
        let len = usize::from(u16::from_be_bytes([attrs[2], attrs[3]]));
        let value = attrs.get(4..4 + len).ok_or_else(|| anyhow!("truncated STUN attribute"))?;
        if ty == 0x0020 && value.len() >= 8 {
            let port = u16::from_be_bytes([value[2], value[3]]) ^ (MAGIC_COOKIE >> 16) as u16;
            let ip = match value[1] {
                0x01 => std::net::IpAddr::from((u32::from_be_bytes([value[4], value[5], value[6], value[7]]) ^ MAGIC_COOKIE).to_be_bytes()),
                0x02 if value.len() >= 20 => {
                    let mut key = [0u8; 16];
                    key[..4].copy_from_slice(&MAGIC_COOKIE.to_be_bytes());
                    key[4..].copy_from_slice(transaction);
                    let mut octets = [0u8; 16];
                    for i in 0..16 {
                        octets[i] = value[4 + i] ^ key[i];
                    }
                    std::net::IpAddr::from(octets)
                }
                _ => bail!("unknown address family in XOR-MAPPED-ADDRESS"),
            };
            return Ok(Some(SocketAddr::new(ip, port)));
        }
        attrs = &attrs[(4 + len + 3) / 4 * 4..];
    }
    bail!("the STUN answer has no XOR-MAPPED-ADDRESS")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_ipv4_xor_mapped_address() {
        let tx = [7u8; 12];
        let mut msg = vec![0x01, 0x01, 0x00, 0x0c];
        msg.extend_from_slice(&MAGIC_COOKIE.to_be_bytes());
        msg.extend_from_slice(&tx);
        // XOR-MAPPED-ADDRESS for 203.0.113.5:40000
        let port = 40000u16 ^ (MAGIC_COOKIE >> 16) as u16;
        let ip = u32::from_be_bytes([203, 0, 113, 5]) ^ MAGIC_COOKIE;
        msg.extend_from_slice(&[0x00, 0x20, 0x00, 0x08, 0x00, 0x01]);
        msg.extend_from_slice(&port.to_be_bytes());
        msg.extend_from_slice(&ip.to_be_bytes());
        assert_eq!(parse_binding_success(&msg, &tx).unwrap(), Some("203.0.113.5:40000".parse().unwrap()));
        assert_eq!(parse_binding_success(&msg, &[8u8; 12]).unwrap(), None, "another transaction is ignored");
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
