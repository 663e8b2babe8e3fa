//! SSH faults during an upload (issue 14): a TCP relay between sfuctl and a real OpenSSH sshd (a namespace host)
//! cuts the first connection after some megabytes of the upload have passed. The upload is sent again on a new
//! login to the same host key, the file on the host has the sha256 of the local file (checked by the host before
//! the rename, and read back here), and no temporary file of the cut upload is left.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sfuctl::remote::{SshTarget, connect_async};
use sha2::{Digest, Sha256};

use crate::support::netns::TestHost;

/// A relay on a loopback port to `upstream`; the first connection is cut once `cut_after` bytes went upstream.
struct CuttingRelay {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
}

impl CuttingRelay {
    fn start(upstream: SocketAddr, cut_after: usize) -> CuttingRelay {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&connections);
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let n = count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect_timeout(&upstream, Duration::from_secs(5)) else { continue };
                let limit = if n == 0 { Some(cut_after) } else { None };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || pump(client, server, limit));
                std::thread::spawn(move || pump(s2, c2, None));
            }
        });
        CuttingRelay { addr, connections }
    }
}

/// Copies `from` to `to`; with a limit, shuts both connections down (both ways) once that many bytes passed.
fn pump(mut from: TcpStream, mut to: TcpStream, limit: Option<usize>) {
    let mut buf = [0u8; 16 * 1024];
    let mut passed = 0;
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        passed += n;
        if limit.is_some_and(|l| passed >= l) {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_dropped_mid_upload_is_made_again_and_the_file_verified() {
    let host = TestHost::start("upload-cut");
    let upstream: SocketAddr = format!("{}:{}", host.address(), host.port()).parse().unwrap();
    // 8 MB to send; the first connection is cut after 2 MB went upstream (handshake and login are a few kB).
    let relay = CuttingRelay::start(upstream, 2 * 1024 * 1024);
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("artifact.bin");
    let data: Vec<u8> = (0..8 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&local, &data).unwrap();
    let want = Sha256::digest(&data).iter().map(|b| format!("{b:02x}")).collect::<String>();

    let mut target = SshTarget::new("127.0.0.1", relay.addr.port(), "root");
    target.private_key = Some(host.client_key());
    target.connect_timeout = Duration::from_secs(10);
    target.io_timeout = Duration::from_secs(30);
    let (remote, fingerprint) = connect_async(target).await.unwrap();
    assert_eq!(fingerprint, host.host_key_fingerprint());

    let remote_path = "/opt/sfuctl/upload-cut/artifact.bin";
    let outcome = remote.upload(local.clone(), remote_path, 0o755).await.unwrap_or_else(|e| panic!("{}", sfuctl::error::render(&e)));
    assert_eq!(relay.connections.load(Ordering::SeqCst), 2, "the first connection was cut and a second one made");
    assert_eq!(outcome.bytes_sent, data.len() as u64, "the whole file was sent again: {outcome:?}");
    assert_eq!(outcome.sha256, want);

    // Read back on the host, through the new session: the content and the mode, and nothing left of the cut upload.
    let got = remote.exec_checked(format!("sha256sum {remote_path} | cut -c1-64; stat -c %a {remote_path}; ls -a /opt/sfuctl/upload-cut")).await.unwrap().stdout;
    let lines: Vec<&str> = got.lines().collect();
    assert_eq!(lines[0], want, "the host has the local file's sha256");
    assert_eq!(lines[1], "755");
    assert!(!got.contains("sfuctl-tmp"), "no temporary file of the cut upload is left: {got}");

    // The same file again: recognised by its sha256, nothing sent.
    let again = remote.upload(local, remote_path, 0o755).await.unwrap();
    assert!(again.skipped && again.bytes_sent == 0, "{again:?}");
}
