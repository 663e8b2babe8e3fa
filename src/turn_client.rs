//! A minimal TURN client over UDP (RFC 8656 with long-term credentials, RFC 6156 for IPv6 relays), enough for the
//! audit to try the abuses a relay must refuse: Allocate (with or without a credential, IPv4 or IPv6 relay),
//! CreatePermission towards a peer, Refresh to give the allocation back. Messages are written and read with the
//! `stun-types` and `turn-types` crates (MESSAGE-INTEGRITY with the long-term key, XOR addresses of both families).

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use stun_types::AddressFamily;
use stun_types::attribute::{ErrorCode, Nonce, Realm, Username};
use stun_types::message::{IntegrityAlgorithm, LongTermKeyCredentials, Message, MessageClass, MessageIntegrityCredentials, MessageWrite, MessageWriteExt, MessageWriteVec, Method, TransactionId};
use turn_types::attribute::{Lifetime, RequestedAddressFamily, RequestedTransport, XorPeerAddress, XorRelayedAddress};
use turn_types::message::{ALLOCATE, CREATE_PERMISSION, REFRESH};

/// The TURN REST API credential for `user` valid for an hour: `<expiry>:<user>` and base64(HMAC-SHA1(secret,
/// username)), as coturn's `use-auth-secret` checks it.
pub fn turn_rest_credential(secret: &str, user: &str) -> (String, String) {
    use base64::Engine as _;
    use hmac::{Hmac, Mac};
    let expiry = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0) + 3600;
    let username = format!("{expiry}:{user}");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()).expect("HMAC takes a key of any length");
    mac.update(username.as_bytes());
    (username.clone(), base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// What an Allocate got.
#[derive(Debug, PartialEq, Eq)]
pub enum Allocation {
    /// The relayed transport address (XOR-RELAYED-ADDRESS).
    Relayed(SocketAddr),
    /// Refused with this error code.
    Refused(u16),
}

/// A TURN server's answer to a request: success with the message, or an error code (401, 403, ...).
#[derive(Debug)]
enum Answer {
    Success(Vec<u8>, TransactionId),
    Error(u16, Vec<u8>),
}

/// A TURN client with one socket (one 5-tuple: one allocation at a time).
pub struct TurnClient {
    socket: UdpSocket,
    timeout: Duration,
    /// The long-term credential (username, password), if any.
    credential: Option<(String, String)>,
    /// The realm and nonce of the server's last 401/438: known after the first challenge.
    challenge: Option<(String, String)>,
}

impl std::fmt::Debug for TurnClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnClient").field("server", &self.socket.peer_addr().ok()).field("authenticated", &self.credential.is_some()).finish()
    }
}

impl TurnClient {
    /// A client for the TURN server at `target`, with a long-term credential or none.
    pub fn new(target: SocketAddr, credential: Option<(&str, &str)>, timeout: Duration) -> Result<Self> {
        let bind: SocketAddr = if target.is_ipv4() { "0.0.0.0:0".parse()? } else { "[::]:0".parse()? };
        let socket = UdpSocket::bind(bind)?;
        socket.connect(target)?;
        Ok(Self { socket, timeout, credential: credential.map(|(u, p)| (u.to_string(), p.to_string())), challenge: None })
    }

    /// Sends one request (with `attributes` written for its transaction; signed once the server's realm and nonce
    /// are known) and waits for its answer, resending every 250 ms.
    fn request(&mut self, method: Method, attributes: &dyn Fn(&mut MessageWriteVec, TransactionId) -> Result<()>) -> Result<Answer> {
        let mut msg = Message::builder_request(method, MessageWriteVec::new());
        let transaction = msg.transaction_id();
        attributes(&mut msg, transaction)?;
        if let (Some((user, password)), Some((realm, nonce))) = (&self.credential, &self.challenge) {
            msg.add_attribute(&Username::new(user).context("USERNAME")?)?;
            msg.add_attribute(&Realm::new(realm).context("REALM")?)?;
            msg.add_attribute(&Nonce::new(nonce).context("NONCE")?)?;
            let key: MessageIntegrityCredentials = LongTermKeyCredentials::new(user.clone(), password.clone(), realm.clone()).into();
            msg.add_message_integrity(&key, IntegrityAlgorithm::Sha1).context("MESSAGE-INTEGRITY")?;
        }
        let request = msg.finish();
        let deadline = Instant::now() + self.timeout;
        let mut buf = [0u8; 1500];
        while Instant::now() < deadline {
            // A full send buffer or an ICMP error from an earlier datagram is no answer: keep going.
            let _ = self.socket.send(&request);
            let wait = (deadline - Instant::now()).min(Duration::from_millis(250)).max(Duration::from_millis(1));
            self.socket.set_read_timeout(Some(wait))?;
            match self.socket.recv(&mut buf) {
                Ok(n) => {
                    let Ok(answer) = Message::from_bytes(&buf[..n]) else { continue };
                    if answer.transaction_id() != transaction {
                        continue;
                    }
                    match answer.class() {
                        MessageClass::Success => return Ok(Answer::Success(buf[..n].to_vec(), transaction)),
                        MessageClass::Error => return Ok(Answer::Error(answer.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0), buf[..n].to_vec())),
                        _ => continue,
                    }
                }
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut | std::io::ErrorKind::Interrupted) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => bail!("nothing listens on udp {} (ICMP port unreachable)", self.socket.peer_addr()?),
                Err(e) => return Err(e.into()),
            }
        }
        bail!("no TURN answer from udp {} within {:.1}s", self.socket.peer_addr()?, self.timeout.as_secs_f64())
    }

    /// Sends a request; on a 401 (or a stale nonce, 438) with a credential, takes the realm and nonce and sends it
    /// again signed (once).
    fn signed(&mut self, method: Method, attributes: &dyn Fn(&mut MessageWriteVec, TransactionId) -> Result<()>) -> Result<Answer> {
        let answer = self.request(method, attributes)?;
        let Answer::Error(code @ (401 | 438), raw) = &answer else { return Ok(answer) };
        if self.credential.is_none() || (*code == 401 && self.challenge.is_some()) {
            return Ok(answer);
        }
        let msg = Message::from_bytes(raw).map_err(|e| anyhow!("an unreadable TURN answer: {e}"))?;
        let (Ok(realm), Ok(nonce)) = (msg.attribute::<Realm>(), msg.attribute::<Nonce>()) else { return Ok(answer) };
        self.challenge = Some((realm.realm().to_string(), nonce.nonce().to_string()));
        self.request(method, attributes)
    }

    /// Asks for a UDP relay of the server's default family (IPv4).
    pub fn allocate(&mut self) -> Result<Allocation> {
        self.allocate_with(None)
    }

    /// Asks for a UDP relay with an IPv6 address (REQUESTED-ADDRESS-FAMILY, RFC 6156), whatever family this client
    /// reaches the server over: only such a relay can reach IPv6 peers.
    pub fn allocate_ipv6(&mut self) -> Result<Allocation> {
        self.allocate_with(Some(AddressFamily::IPV6))
    }

    fn allocate_with(&mut self, family: Option<AddressFamily>) -> Result<Allocation> {
        let answer = self.signed(ALLOCATE, &|msg, _| {
            msg.add_attribute(&RequestedTransport::new(RequestedTransport::UDP))?;
            if let Some(family) = family {
                msg.add_attribute(&RequestedAddressFamily::new(family))?;
            }
            Ok(())
        })?;
        match answer {
            Answer::Error(code, _) => Ok(Allocation::Refused(code)),
            Answer::Success(raw, transaction) => {
                let msg = Message::from_bytes(&raw).map_err(|e| anyhow!("an unreadable Allocate answer: {e}"))?;
                let relayed = msg.attribute::<XorRelayedAddress>().map_err(|_| anyhow!("the Allocate answer has no XOR-RELAYED-ADDRESS"))?;
                Ok(Allocation::Relayed(relayed.addr(transaction)))
            }
        }
    }

    /// Asks for a permission towards `peer` (IPv4 or IPv6): `None` when granted, else the error code.
    pub fn create_permission(&mut self, peer: SocketAddr) -> Result<Option<u16>> {
        let answer = self.signed(CREATE_PERMISSION, &|msg, transaction| {
            msg.add_attribute(&XorPeerAddress::new(peer, transaction))?;
            Ok(())
        })?;
        Ok(match answer {
            Answer::Success(..) => None,
            Answer::Error(code, _) => Some(code),
        })
    }

    /// Gives the allocation back (Refresh with a lifetime of 0).
    pub fn release(&mut self) {
        let _ = self.signed(REFRESH, &|msg, _| {
            msg.add_attribute(&Lifetime::new(0))?;
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_turn_rest_credential_is_coturn_s() {
        use base64::Engine as _;
        use hmac::{Hmac, Mac};
        let (user, password) = turn_rest_credential("s3cret", "sfuctl-audit");
        let (expiry, name) = user.split_once(':').unwrap();
        assert_eq!(name, "sfuctl-audit");
        assert!(expiry.parse::<u64>().unwrap() > 1_700_000_000);
        let mut mac = Hmac::<sha1::Sha1>::new_from_slice(b"s3cret").unwrap();
        mac.update(user.as_bytes());
        assert_eq!(base64::engine::general_purpose::STANDARD.decode(password).unwrap(), mac.finalize().into_bytes().to_vec());
    }

    /// A one-request TURN server on loopback: challenges an unsigned request with 401, then checks the signed one
    /// (its integrity under the long-term key, its XOR-PEER-ADDRESS) and answers `code`.
    fn fake_server(peer: SocketAddr, code: Option<u16>) -> SocketAddr {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = socket.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            for round in 0..2 {
                let (n, from) = socket.recv_from(&mut buf).unwrap();
                let req = Message::from_bytes(&buf[..n]).unwrap();
                let mut answer = if round == 0 {
                    assert!(!req.has_attribute(<stun_types::attribute::MessageIntegrity as stun_types::attribute::AttributeStaticType>::TYPE), "the first request is unsigned");
                    let mut a = Message::builder_error(&req, MessageWriteVec::new());
                    a.add_attribute(&ErrorCode::new(401, "Unauthorized").unwrap()).unwrap();
                    a.add_attribute(&Realm::new("example.org").unwrap()).unwrap();
                    a.add_attribute(&Nonce::new("abcdef0123").unwrap()).unwrap();
                    a
                } else {
                    let key: MessageIntegrityCredentials = LongTermKeyCredentials::new("user".into(), "pass".into(), "example.org".into()).into();
                    req.validate_integrity(&key).expect("signed with the long-term key");
                    assert_eq!(req.attribute::<XorPeerAddress>().unwrap().addr(req.transaction_id()), peer);
                    match code {
                        None => Message::builder_success(&req, MessageWriteVec::new()),
                        Some(c) => {
                            let mut a = Message::builder_error(&req, MessageWriteVec::new());
                            a.add_attribute(&ErrorCode::new(c, "Forbidden").unwrap()).unwrap();
                            a
                        }
                    }
                };
                answer.add_fingerprint().unwrap();
                socket.send_to(&answer.finish(), from).unwrap();
            }
        });
        addr
    }

    #[test]
    fn a_permission_request_is_signed_after_the_challenge_for_peers_of_both_families() {
        for (peer, code) in [("[2001:db8::7]:3478", Some(403)), ("198.51.100.7:40000", None)] {
            let peer: SocketAddr = peer.parse().unwrap();
            let server = fake_server(peer, code);
            let mut client = TurnClient::new(server, Some(("user", "pass")), Duration::from_secs(3)).unwrap();
            assert_eq!(client.create_permission(peer).unwrap(), code, "{peer}");
        }
    }

    #[test]
    fn silence_is_a_failure() {
        let quiet = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut client = TurnClient::new(quiet.local_addr().unwrap(), None, Duration::from_millis(300)).unwrap();
        assert!(client.allocate().unwrap_err().to_string().contains("no TURN answer"));
    }
}
