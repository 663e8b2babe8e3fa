//! Times sfuctl's UDP range probe (`probe::udp_range`) for `scripts/bench/udp-probe`. It starts nothing: the
//! responder (`probe::RESPONDER`) must already run on the target with the same key.
//!
//! Usage:
//!   `probe_bench --key HEX --target IP --range A-B [--timeout-ms N]`   probe every port of A-B once and print
//!                                                                     `{"probed":N,"reachable":N,"seconds":F}`
//!   `probe_bench --print-responder`                                   print `probe::RESPONDER` (the Python text)
//!
//! Only the `udp_range` call is timed (monotonic clock). The default timeout is the audit's, 1.5 s.

use std::net::IpAddr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use sfuctl::ports::PortRange;
use sfuctl::probe;

const USAGE: &str = "usage: probe_bench --key HEX --target IP --range A-B [--timeout-ms N]\n       probe_bench --print-responder";

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    let s = s.trim();
    if !s.len().is_multiple_of(2) || s.is_empty() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut key, mut target, mut range) = (None, None, None);
    let mut timeout = Duration::from_millis(1500);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--print-responder" => {
                print!("{}", probe::RESPONDER);
                return ExitCode::SUCCESS;
            }
            "--key" => key = Some(hex_decode(&value()).expect("--key takes an even number of hex digits")),
            "--target" => target = Some(value().parse::<IpAddr>().expect("--target takes an IP address")),
            "--range" => range = Some(value().parse::<PortRange>().expect("--range takes A-B")),
            "--timeout-ms" => timeout = Duration::from_millis(value().parse().expect("--timeout-ms takes a number")),
            _ => {
                eprintln!("unknown argument {arg}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let (Some(key), Some(target), Some(range)) = (key, target, range) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let ports: Vec<u16> = (range.start..=range.end).collect();

    let started = Instant::now();
    let result = probe::udp_range(target, &ports, &key, timeout);
    let seconds = started.elapsed().as_secs_f64();
    match result {
        Ok(r) => {
            println!("{{\"probed\":{},\"reachable\":{},\"seconds\":{:.4}}}", r.probed.len(), r.reachable.len(), seconds);
            if !r.unreachable().is_empty() {
                eprintln!("unreachable: {}", probe::ranges(&r.unreachable()).join(","));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprint!("{}", sfuctl::error::render(&e));
            ExitCode::FAILURE
        }
    }
}
