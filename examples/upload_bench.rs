//! Times sfuctl's upload path (fresh connection, host key pinned, checksummed atomic upload) for
//! `scripts/bench/upload`. Prints the wall time in seconds on stdout; details go to stderr.
//!
//! Usage: `upload_bench --address A --key KEY --pin SHA256:… LOCAL REMOTE_PATH [--port P] [--user U]`

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sfuctl::remote::{Remote, SshTarget};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut target = SshTarget::new("", 22, "root");
    target.connect_timeout = Duration::from_secs(10);
    let mut positional = Vec::new();
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--address" => target.address = value(),
            "--port" => target.port = value().parse().expect("--port takes a number"),
            "--user" => target.user = value(),
            "--key" => target.private_key = Some(PathBuf::from(value())),
            "--pin" => target.expected_host_key = Some(value()),
            _ => positional.push(arg),
        }
    }
    let [local, remote_path] = positional.as_slice() else {
        eprintln!("usage: upload_bench --address A --key KEY [--pin SHA256:…] LOCAL REMOTE_PATH");
        return ExitCode::from(2);
    };

    let started = Instant::now();
    let result = Remote::connect(&target).and_then(|(remote, _)| {
        let connected = started.elapsed();
        let outcome = remote.upload(local.as_ref(), remote_path, 0o644)?;
        eprintln!(
            "connect {:.3} s, upload {:.3} s, {} bytes sent, skipped={}",
            connected.as_secs_f64(),
            (started.elapsed() - connected).as_secs_f64(),
            outcome.bytes_sent,
            outcome.skipped
        );
        Ok(())
    });
    match result {
        Ok(()) => {
            println!("{:.4}", started.elapsed().as_secs_f64());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}", sfuctl::error::render(&e));
            ExitCode::FAILURE
        }
    }
}
