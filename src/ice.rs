//! An ICE connectivity check from this machine to a candidate a media server announced (RFC 8445 §7.2): the SDP
//! offer that makes a server start an ICE agent for us (one audio m-line, our own ice-ufrag/ice-pwd, a DTLS
//! fingerprint, `setup:actpass`), what we need from its answer (its ice-ufrag, ice-pwd and candidates), and the
//! STUN Binding request the server's own media socket must answer: USERNAME `<server ufrag>:<our ufrag>`,
//! PRIORITY, ICE-CONTROLLING, MESSAGE-INTEGRITY keyed with the server's ice-pwd, FINGERPRINT. Only a success
//! answer whose MESSAGE-INTEGRITY verifies with that ice-pwd proves the server's ICE agent answered: a bare STUN
//! responder (or anything else on the port) cannot know the password.
//!
//! STUN messages are written and checked with the `stun-types` crate; PRIORITY and ICE-CONTROLLING (RFC 8445
//! §16.1), which it does not define, are written as raw attributes.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine as _;
use stun_types::attribute::{AttributeType, ErrorCode, RawAttribute, Username, XorMappedAddress};
use stun_types::message::{BINDING, IntegrityAlgorithm, Message, MessageClass, MessageIntegrityCredentials, MessageWrite, MessageWriteExt, MessageWriteVec, ShortTermCredentials, TransactionId};

/// PRIORITY (RFC 8445 §16.1).
const PRIORITY: AttributeType = AttributeType::new(0x0024);
/// ICE-CONTROLLING (RFC 8445 §16.1).
const ICE_CONTROLLING: AttributeType = AttributeType::new(0x802A);
/// The priority of a peer-reflexive candidate of ours (type preference 110, local preference 65535, component 1):
/// what a browser sends in its checks.
const PEER_REFLEXIVE_PRIORITY: u32 = (110 << 24) | (65535 << 8) | 255;

/// One side's ICE credentials (`a=ice-ufrag`, `a=ice-pwd`).
#[derive(Clone, PartialEq, Eq)]
pub struct IceCredentials {
    /// The username fragment.
    pub ufrag: String,
    /// The password: the key of MESSAGE-INTEGRITY in checks sent to this side.
    pub pwd: String,
}

impl std::fmt::Debug for IceCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IceCredentials").field("ufrag", &self.ufrag).field("pwd", &"<hidden>").finish()
    }
}

impl IceCredentials {
    /// Fresh random credentials: an 8-character ufrag and a 24-character password (RFC 8839 asks for at least 4
    /// and 22 ice-chars; base64's alphabet is exactly the ice-chars).
    pub fn random() -> Result<Self> {
        let mut bytes = [0u8; 24];
        getrandom::fill(&mut bytes).map_err(|e| anyhow!("no random bytes: {e}"))?;
        let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
        Ok(Self { ufrag: b64.encode(&bytes[..6]), pwd: b64.encode(&bytes[6..]) })
    }
}

/// An SDP offer with one audio m-line (Opus), `local`'s ICE credentials, a random DTLS fingerprint and
/// `setup:actpass`, and no candidates: the server learns ours from the checks we send (peer-reflexive).
pub fn audio_offer(local: &IceCredentials) -> Result<String> {
    let mut random = [0u8; 40];
    getrandom::fill(&mut random).map_err(|e| anyhow!("no random bytes: {e}"))?;
    let fingerprint: Vec<String> = random[..32].iter().map(|b| format!("{b:02X}")).collect();
    let session_id = u64::from_be_bytes(random[32..40].try_into().expect("8 bytes")) >> 2;
    let lines = [
        "v=0".to_string(),
        format!("o=- {session_id} 2 IN IP4 127.0.0.1"),
        "s=sfuctl-audit".into(),
        "t=0 0".into(),
        "a=group:BUNDLE 0".into(),
        "m=audio 9 UDP/TLS/RTP/SAVPF 111".into(),
        "c=IN IP4 0.0.0.0".into(),
        "a=rtcp:9 IN IP4 0.0.0.0".into(),
        format!("a=ice-ufrag:{}", local.ufrag),
        format!("a=ice-pwd:{}", local.pwd),
        format!("a=fingerprint:sha-256 {}", fingerprint.join(":")),
        "a=setup:actpass".into(),
        "a=mid:0".into(),
        "a=sendrecv".into(),
        "a=rtcp-mux".into(),
        "a=rtpmap:111 opus/48000/2".into(),
    ];
    Ok(lines.join("\r\n") + "\r\n")
}

/// A candidate from an SDP `a=candidate:` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// `udp` or `tcp`, lower case.
    pub transport: String,
    /// The ICE component (1 is RTP, with rtcp-mux the only one).
    pub component: u32,
    /// Where to send checks.
    pub address: SocketAddr,
    /// `host`, `srflx`, `prflx` or `relay`.
    pub kind: String,
}

impl std::fmt::Display for Candidate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {} ({})", self.transport, self.address, self.kind)
    }
}

/// What an SDP answer says about the answerer's ICE agent.
#[derive(Clone, Debug)]
pub struct IceAnswer {
    /// Its credentials.
    pub credentials: IceCredentials,
    /// Its candidates, in the answer's order.
    pub candidates: Vec<Candidate>,
}

/// Reads the first ice-ufrag and ice-pwd (session or media level) and every candidate of an SDP answer.
pub fn parse_answer(sdp: &str) -> Result<IceAnswer> {
    let mut ufrag = None;
    let mut pwd = None;
    let mut candidates = Vec::new();
    for line in sdp.lines().map(str::trim) {
        if let Some(v) = line.strip_prefix("a=ice-ufrag:") {
            ufrag.get_or_insert_with(|| v.to_string());
        } else if let Some(v) = line.strip_prefix("a=ice-pwd:") {
            pwd.get_or_insert_with(|| v.to_string());
        } else if let Some(c) = line.strip_prefix("a=candidate:").and_then(parse_candidate) {
            candidates.push(c);
        }
    }
    let (Some(ufrag), Some(pwd)) = (ufrag, pwd) else { bail!("the SDP answer has no a=ice-ufrag / a=ice-pwd") };
    Ok(IceAnswer { credentials: IceCredentials { ufrag, pwd }, candidates })
}

/// `<foundation> <component> <transport> <priority> <address> <port> typ <type> ...`; `None` for what is not one
/// (an mDNS `.local` name, a malformed line).
fn parse_candidate(value: &str) -> Option<Candidate> {
    let f: Vec<&str> = value.split_whitespace().collect();
    if f.len() < 8 || f[6] != "typ" {
        return None;
    }
    let ip: IpAddr = f[4].parse().ok()?;
    Some(Candidate { transport: f[2].to_ascii_lowercase(), component: f[1].parse().ok()?, address: SocketAddr::new(ip, f[5].parse().ok()?), kind: f[7].to_string() })
}

/// How a candidate answered a connectivity check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckOutcome {
    /// A Binding success whose MESSAGE-INTEGRITY verified with the server's ice-pwd; it saw us at `mapped`.
    Answered {
        /// The XOR-MAPPED-ADDRESS: where the server saw the check come from.
        mapped: SocketAddr,
    },
    /// A Binding success whose MESSAGE-INTEGRITY is missing or does not verify: not the server's ICE agent.
    BadIntegrity,
    /// A Binding error (401 for unknown credentials, 487 for a role conflict, ...).
    Error(u16),
    /// Nothing answered within the timeout.
    Silent,
    /// ICMP port unreachable: nothing listens on that port.
    Refused,
}

/// The Binding request of a connectivity check from `local` to the agent of `remote`, as the controlling agent.
pub fn binding_request(local: &IceCredentials, remote: &IceCredentials) -> Result<(Vec<u8>, TransactionId)> {
    let mut tie_breaker = [0u8; 8];
    getrandom::fill(&mut tie_breaker).map_err(|e| anyhow!("no random bytes: {e}"))?;
    let mut msg = Message::builder_request(BINDING, MessageWriteVec::new());
    let transaction = msg.transaction_id();
    let username = Username::new(&format!("{}:{}", remote.ufrag, local.ufrag)).context("the ICE username")?;
    msg.add_attribute(&username).context("USERNAME")?;
    msg.add_attribute(&RawAttribute::new(PRIORITY, &PEER_REFLEXIVE_PRIORITY.to_be_bytes())).context("PRIORITY")?;
    msg.add_attribute(&RawAttribute::new(ICE_CONTROLLING, &tie_breaker)).context("ICE-CONTROLLING")?;
    msg.add_message_integrity(&credentials_of(remote), IntegrityAlgorithm::Sha1).context("MESSAGE-INTEGRITY")?;
    msg.add_fingerprint().context("FINGERPRINT")?;
    Ok((msg.finish(), transaction))
}

fn credentials_of(remote: &IceCredentials) -> MessageIntegrityCredentials {
    ShortTermCredentials::new(remote.pwd.clone()).into()
}

/// Reads a datagram as the answer to `transaction`; `None` when it is not one (another transaction, not STUN).
pub fn read_answer(datagram: &[u8], transaction: TransactionId, remote: &IceCredentials) -> Option<CheckOutcome> {
    let msg = Message::from_bytes(datagram).ok()?;
    if msg.transaction_id() != transaction || !msg.has_method(BINDING) {
        return None;
    }
    match msg.class() {
        MessageClass::Success => {
            if msg.validate_integrity(&credentials_of(remote)).is_err() {
                return Some(CheckOutcome::BadIntegrity);
            }
            let mapped = msg.attribute::<XorMappedAddress>().ok()?.addr(transaction);
            Some(CheckOutcome::Answered { mapped })
        }
        MessageClass::Error => Some(CheckOutcome::Error(msg.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0))),
        _ => None,
    }
}

/// Sends a connectivity check from a fresh UDP socket to `target`, resending every 250 ms until an answer or
/// `timeout`.
pub fn connectivity_check(target: SocketAddr, local: &IceCredentials, remote: &IceCredentials, timeout: Duration) -> Result<CheckOutcome> {
    let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
    let socket = UdpSocket::bind(bind)?;
    socket.connect(target)?;
    let (request, transaction) = binding_request(local, remote)?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 1500];
    while Instant::now() < deadline {
        // A full send buffer or an ICMP error from an earlier datagram is no answer: keep going.
        let _ = socket.send(&request);
        let wait = (deadline - Instant::now()).min(Duration::from_millis(250)).max(Duration::from_millis(1));
        socket.set_read_timeout(Some(wait))?;
        loop {
            match socket.recv(&mut buf) {
                Ok(n) => match read_answer(&buf[..n], transaction, remote) {
                    Some(outcome) => return Ok(outcome),
                    // The server's own checks towards us (it learnt our address): not the answer, read on.
                    None => continue,
                },
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => break,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => return Ok(CheckOutcome::Refused),
                Err(e) => return Err(e.into()),
            }
        }
    }
    Ok(CheckOutcome::Silent)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn creds(ufrag: &str, pwd: &str) -> IceCredentials {
        IceCredentials { ufrag: ufrag.into(), pwd: pwd.into() }
    }

    #[test]
    fn random_credentials_are_ice_chars_of_the_right_length() {
        let c = IceCredentials::random().unwrap();
        assert_eq!((c.ufrag.len(), c.pwd.len()), (8, 24));
        assert!(c.ufrag.chars().chain(c.pwd.chars()).all(|ch| ch.is_ascii_alphanumeric() || ch == '+' || ch == '/'), "{c:?}");
        assert_ne!(c, IceCredentials::random().unwrap());
        assert!(!format!("{c:?}").contains(&c.pwd), "the password never prints");
    }

    #[test]
    fn the_offer_carries_what_an_answerer_needs() {
        let local = creds("abcd1234", "0123456789abcdefghijklmn");
        let sdp = audio_offer(&local).unwrap();
        for want in ["m=audio 9 UDP/TLS/RTP/SAVPF 111\r\n", "a=ice-ufrag:abcd1234\r\n", "a=ice-pwd:0123456789abcdefghijklmn\r\n", "a=setup:actpass\r\n", "a=rtcp-mux\r\n", "a=mid:0\r\n"] {
            assert!(sdp.contains(want), "{want:?} in {sdp}");
        }
        let fp = sdp.lines().find_map(|l| l.strip_prefix("a=fingerprint:sha-256 ")).unwrap();
        assert_eq!(fp.split(':').count(), 32, "{fp}");
        assert_eq!(sdp.matches("m=").count(), 1);
    }

    #[test]
    fn reads_credentials_and_candidates_from_an_answer() {
        let sdp = "v=0\r\no=- 1 1 IN IP4 203.0.113.5\r\ns=Janus\r\nt=0 0\r\nm=audio 9 UDP/TLS/RTP/SAVPF 111\r\na=ice-ufrag:Xy1z\r\na=ice-pwd:JanusPasswordOf22Chars\r\n\
                   a=candidate:1 1 udp 2015363327 203.0.113.5 20034 typ host\r\na=candidate:2 1 tcp 1015022079 203.0.113.5 9 typ host tcptype active\r\n\
                   a=candidate:3 1 udp 2015363327 abcd.local 20035 typ host\r\na=end-of-candidates\r\n";
        let a = parse_answer(sdp).unwrap();
        assert_eq!(a.credentials, creds("Xy1z", "JanusPasswordOf22Chars"));
        assert_eq!(a.candidates.len(), 2, "the mDNS name is skipped: {:?}", a.candidates);
        assert_eq!(a.candidates[0], Candidate { transport: "udp".into(), component: 1, address: "203.0.113.5:20034".parse().unwrap(), kind: "host".into() });
        assert_eq!(a.candidates[1].to_string(), "tcp 203.0.113.5:9 (host)");
        assert!(parse_answer("v=0\r\na=candidate:1 1 udp 1 1.2.3.4 5 typ host\r\n").unwrap_err().to_string().contains("no a=ice-ufrag"));
    }

    /// The answer an ICE agent holding `remote`'s password gives to `request`.
    fn answer_as_agent(request: &[u8], remote: &IceCredentials, from: SocketAddr, key: &str) -> Vec<u8> {
        let req = Message::from_bytes(request).unwrap();
        req.validate_integrity(&credentials_of(remote)).expect("the request is signed with the remote's ice-pwd");
        let username = req.attribute::<Username>().unwrap();
        assert_eq!(username.username(), format!("{}:local123", remote.ufrag));
        assert!(req.has_attribute(PRIORITY) && req.has_attribute(ICE_CONTROLLING));
        let mut answer = Message::builder_success(&req, MessageWriteVec::new());
        answer.add_attribute(&XorMappedAddress::new(from, req.transaction_id())).unwrap();
        answer.add_message_integrity(&ShortTermCredentials::new(key.to_string()).into(), IntegrityAlgorithm::Sha1).unwrap();
        answer.add_fingerprint().unwrap();
        answer.finish()
    }

    #[test]
    fn only_an_answer_signed_with_the_servers_password_counts() {
        let local = creds("local123", "localpasswordlocalpassword");
        let remote = creds("remote99", "remotepasswordremotepass");
        let from: SocketAddr = "198.51.100.7:5000".parse().unwrap();
        let (request, tx) = binding_request(&local, &remote).unwrap();
        let good = answer_as_agent(&request, &remote, from, &remote.pwd);
        assert_eq!(read_answer(&good, tx, &remote), Some(CheckOutcome::Answered { mapped: from }));
        let forged = answer_as_agent(&request, &remote, from, "someone-else-s-password");
        assert_eq!(read_answer(&forged, tx, &remote), Some(CheckOutcome::BadIntegrity));
        let (_, other_tx) = binding_request(&local, &remote).unwrap();
        assert_eq!(read_answer(&good, other_tx, &remote), None, "another transaction's answer is not ours");
        assert_eq!(read_answer(b"not stun at all, just bytes", tx, &remote), None);
    }

    #[test]
    fn a_check_against_a_local_agent_and_against_silence() {
        // A one-shot agent on loopback that answers as the server would.
        let remote = creds("remote99", "remotepasswordremotepass");
        let agent = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = agent.local_addr().unwrap();
        let r = remote.clone();
        let server = std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            let (n, from) = agent.recv_from(&mut buf).unwrap();
            agent.send_to(&answer_as_agent(&buf[..n], &r, from, &r.pwd), from).unwrap();
        });
        let local = creds("local123", "localpasswordlocalpassword");
        let outcome = connectivity_check(target, &local, &remote, Duration::from_secs(5)).unwrap();
        server.join().unwrap();
        assert!(matches!(outcome, CheckOutcome::Answered { mapped } if mapped.ip() == target.ip()), "{outcome:?}");
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(connectivity_check(quiet.local_addr().unwrap(), &local, &remote, Duration::from_millis(300)).unwrap(), CheckOutcome::Silent);
    }
}
