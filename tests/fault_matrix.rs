//! Faults at every API step of `up` and `down`, for every cloud (issue 14).
//!
//! For each cloud fake (behind its [`FaultProxy`], see `conformance.rs`), a clean `up` (converge, `count: 1`) and
//! `down` (refresh, destroy) are recorded first: how many requests each sends. Then, for every step k of each,
//! the proxy answers the k-th request with a fault ([`FaultKind`]: 429 with and without `Retry-After`, 500, 503,
//! a reset connection, a timeout after the request reached the fake). After every case:
//! - the faulted `up` either succeeded or failed with a clear message (exit code 1, `error:` and `hint:`);
//! - a re-run of `up` succeeds, and the run after it sends no mutating request and reports no change;
//! - the fake holds exactly one server (by owner tag and name), one firewall and the key where one is registered:
//!   no duplicate;
//! - the faulted `down` either removed everything or named what it could not; a re-run of `down` then leaves the
//!   fake holding nothing of the deployment.
//!
//! Then each kind of fault on every server create (a cloud that stays down): `up` fails clearly after a bounded
//! number of requests, and recovers once the cloud is back ([`persistent_faults`]).
//!
//! Budget (2 CI cores): DigitalOcean gets every fault at every step; Linode and Vultr two faults per step,
//! rotating through the six so that every fault meets every third step; AWS (moto answers slowest) one per step,
//! so every fault meets every sixth step. The figures are printed at the end and
//! recorded in docs/reliability.md.

use std::time::{Duration, Instant};

use sfuctl::error::{Exit, exit_of, render};
use sfuctl::http::RetryPolicy;

use std::net::IpAddr;
use std::sync::Arc;

use sfuctl::provider::{Owner, Provider};

use super::{AwsHarness, Call, CloudFake, Deployment, DoHarness, Inventory, KEY, LinodeHarness, VultrHarness, provider_data, quick, timings};
use crate::support::fault_proxy::{Effect, Fault, FaultProxy, Match, Reply};

/// The client's timeout per attempt in these runs, and how long a stalled answer is held back (longer).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
const STALL: Duration = Duration::from_secs(3);

/// One kind of fault, injected at one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultKind {
    /// 429 with `Retry-After: 1`.
    ThrottledRetryAfter,
    /// 429 without `Retry-After` (the client backs off on its own).
    Throttled,
    /// 500 with the provider's error body.
    ServerError,
    /// 503 with the provider's error body.
    Unavailable,
    /// The connection reset before any answer; the request never reached the fake.
    Reset,
    /// The request reached the fake (and was acted on), but no answer came before the client's timeout.
    Timeout,
}

impl FaultKind {
    /// Every kind, in a fixed order (the rotation of [`Selection::Rotating`] follows it).
    pub const ALL: [FaultKind; 6] = [Self::ThrottledRetryAfter, Self::Throttled, Self::ServerError, Self::Unavailable, Self::Reset, Self::Timeout];

    fn label(self) -> &'static str {
        match self {
            Self::ThrottledRetryAfter => "429 Retry-After: 1",
            Self::Throttled => "429",
            Self::ServerError => "500",
            Self::Unavailable => "503",
            Self::Reset => "connection reset",
            Self::Timeout => "timeout",
        }
    }

    /// The fault for the request numbered `n`, answered in `fake`'s own error format.
    fn at(self, fake: &dyn CloudFake, n: u64) -> Fault {
        let error = fake.server_error();
        let throttled = fake.throttled();
        let with_status = |status: u16, like: &Reply| Reply { status, headers: vec![], ..like.clone() };
        let (effect, reply) = match self {
            Self::ThrottledRetryAfter => (Effect::Refuse, with_status(429, &throttled).header("Retry-After", "1")),
            Self::Throttled => (Effect::Refuse, with_status(429, &throttled)),
            Self::ServerError => (Effect::Refuse, with_status(500, &error)),
            Self::Unavailable => (Effect::Refuse, with_status(503, &error)),
            Self::Reset => (Effect::Reset, error),
            Self::Timeout => (Effect::Stall(STALL), error),
        };
        Fault { label: format!("{} at request {n}", self.label()), matches: Match::at(n), count: 1, effect, reply }
    }
}

/// Which faults each step gets.
#[derive(Clone, Copy, Debug)]
pub enum Selection {
    /// All six at every step.
    Every,
    /// Two per step: kinds `k % 6` and `(k + 3) % 6` at step k.
    Rotating,
    /// One per step: kind `k % 6` at step k (moto answers slowest).
    OnePerStep,
}

impl Selection {
    fn at_step(self, k: usize) -> Vec<FaultKind> {
        match self {
            Self::Every => FaultKind::ALL.to_vec(),
            Self::Rotating => vec![FaultKind::ALL[k % 6], FaultKind::ALL[(k + 3) % 6]],
            Self::OnePerStep => vec![FaultKind::ALL[k % 6]],
        }
    }
}

/// What one provider's matrix did.
#[derive(Debug, Default)]
pub struct Figures {
    /// Requests of a clean `up` and a clean `down`.
    pub up_steps: usize,
    /// See `up_steps`.
    pub down_steps: usize,
    /// Faults injected (armed) and met (a request hit them).
    pub injected: usize,
    /// See `injected`.
    pub met: usize,
    /// Faulted `up` runs that still succeeded, and those that failed with a clear message.
    pub up_ok: usize,
    /// See `up_ok`.
    pub up_failed: usize,
    /// Faulted `down` runs that still removed everything, and those that reported what was left.
    pub down_ok: usize,
    /// See `down_ok`.
    pub down_failed: usize,
    /// Duplicates and leftovers found (the goal: 0; any is also a failed assertion).
    pub duplicates: usize,
    /// See `duplicates`.
    pub leftovers: usize,
    /// Runs against a server create that always fails (each fault kind once), and the most create requests one
    /// of them sent (every run fails clearly, but one whose creates time out after reaching the fake, which made
    /// the server: that one finds and takes it).
    pub persistent: usize,
    /// See `persistent`.
    pub most_attempts: usize,
}

fn policy() -> RetryPolicy {
    RetryPolicy { timeout: CLIENT_TIMEOUT, ..quick() }
}

/// A harness whose providers time out after [`CLIENT_TIMEOUT`] (so a stalled answer is a timeout); the rest is
/// the harness's own.
struct TimingOut<'a>(&'a dyn CloudFake);

impl CloudFake for TimingOut<'_> {
    fn label(&self) -> &'static str {
        self.0.label()
    }
    fn provider_yaml(&self, count: u32) -> String {
        self.0.provider_yaml(count)
    }
    fn provider(&self) -> Arc<dyn Provider> {
        self.0.provider_with(policy())
    }
    fn provider_with(&self, policy: RetryPolicy) -> Arc<dyn Provider> {
        self.0.provider_with(policy)
    }
    fn proxy(&self) -> &FaultProxy {
        self.0.proxy()
    }
    fn cli_env(&self) -> Vec<(&'static str, String)> {
        self.0.cli_env()
    }
    fn pool(&self) -> Vec<IpAddr> {
        self.0.pool()
    }
    fn inventory(&self, name: &str) -> Inventory {
        self.0.inventory(name)
    }
    fn call(&self, call: Call, owner: &Owner) -> Match {
        self.0.call(call, owner)
    }
    fn throttled(&self) -> Reply {
        self.0.throttled()
    }
    fn server_error(&self) -> Reply {
        self.0.server_error()
    }
    fn plant_foreign(&self) -> String {
        self.0.plant_foreign()
    }
    fn holds_server(&self, id: &str) -> bool {
        self.0.holds_server(id)
    }
    fn owner_filter(&self) -> &'static [&'static str] {
        self.0.owner_filter()
    }
}

/// `down` as the command does it (refresh, then destroy), with the matrix's policy; an error is returned, not
/// panicked on, and failed deletes are errors too.
async fn down(dep: &Deployment<'_>) -> Result<Vec<String>, String> {
    let provider = dep.fake.provider();
    let current = sfuctl::engine::refresh(provider.as_ref(), provider_data(dep.fake), &dep.owner, Some(KEY)).await.map_err(|e| render(&e))?;
    let teardown = sfuctl::engine::destroy(provider, &dep.owner, &current, &timings()).await;
    if teardown.failed.is_empty() { Ok(teardown.deleted) } else { Err(teardown.failed.join("\n")) }
}

/// A failed run's message as the user sees it: exit 1, `error:`, and a `hint:` saying what to do.
fn assert_clear(what: &str, e: &anyhow::Error) {
    let text = render(e);
    assert_eq!(exit_of(e), Exit::Failed, "{what}: exit 1 for a failed operation:\n{text}");
    assert!(text.starts_with("error: "), "{what}: `error:` first:\n{text}");
    assert!(text.contains("\nhint: "), "{what}: a hint says what to do:\n{text}");
}

/// Runs the matrix against `fake`; panics at the first case that breaks a promise.
pub async fn run_matrix(fake: &dyn CloudFake, selection: Selection) -> Figures {
    let started = Instant::now();
    let fake = &TimingOut(fake);
    let mut dep = Deployment::new(fake, "fm");
    let proxy = fake.proxy();
    let spec = dep.spec(1, None);
    let name = dep.server_name(1);
    let keys = usize::from(dep.registers_key());

    let base = proxy.arrivals();
    dep.converge(&spec, |_| Ok(())).await.unwrap_or_else(|e| panic!("a clean up: {e:#}"));
    let up_steps = (proxy.arrivals() - base) as usize;
    let base = proxy.arrivals();
    down(&dep).await.unwrap_or_else(|e| panic!("a clean down: {e}"));
    let down_steps = (proxy.arrivals() - base) as usize;
    let mut fig = Figures { up_steps, down_steps, ..Figures::default() };
    eprintln!("[faults {}] a clean up sends {up_steps} requests, a clean down {down_steps}", fake.label());

    for k in 0..up_steps.max(down_steps) {
        for kind in selection.at_step(k) {
            let case = format!("{} at step {k}", kind.label());
            // up with the fault at step k
            if k < up_steps {
                let fault = kind.at(fake, proxy.arrivals() + k as u64);
                let log_from = proxy.log().len();
                proxy.inject([fault]);
                fig.injected += 1;
                let first = dep.converge(&spec, |_| Ok(())).await;
                fig.met += usize::from(proxy.unspent().is_empty());
                proxy.clear();
                let log = || proxy.log()[log_from..].iter().map(|s| format!("  {} -> {}{}", s.line, s.status, s.fault.as_deref().map(|f| format!(" [{f}]")).unwrap_or_default())).collect::<Vec<_>>().join("\n");
                match first {
                    Ok(_) => fig.up_ok += 1,
                    Err(e) => {
                        assert_clear(&format!("up, {case}"), &e);
                        eprintln!("[faults {}] up failed clearly, {case}: {}", fake.label(), render(&e).lines().next().unwrap_or_default());
                        fig.up_failed += 1;
                    }
                }
                dep.converge(&spec, |_| Ok(())).await.unwrap_or_else(|e| panic!("up after {case}: {e:#}\n{}", log()));
                let again = dep.converge(&spec, |_| Ok(())).await.unwrap_or_else(|e| panic!("the run after, {case}: {e:#}"));
                assert_eq!(again.stats.mutating, 0, "{case}: the run after the re-run changes nothing: {:?}\n{}", again.report, log());
                assert!(!again.report.changed(), "{case}: {:?}", again.report);
            } else {
                dep.converge(&spec, |_| Ok(())).await.unwrap_or_else(|e| panic!("a clean up before {case} in down: {e:#}"));
            }
            let inv = dep.inventory();
            let names: Vec<&str> = inv.servers.iter().map(|s| s.name.as_str()).collect();
            fig.duplicates += names.len().saturating_sub(1) + inv.firewalls.len().saturating_sub(1) + inv.keys.len().saturating_sub(keys);
            assert_eq!(names, [name.as_str()], "{case}: exactly one server, no duplicate: {inv:#?}\n{}", proxy.log_text());
            assert_eq!(inv.firewalls.len(), 1, "{case}: exactly one firewall: {inv:#?}");
            assert_eq!(inv.keys.len(), keys, "{case}: the key: {inv:#?}");

            // down with the fault at step k
            if k < down_steps {
                proxy.inject([kind.at(fake, proxy.arrivals() + k as u64)]);
                fig.injected += 1;
                let first = down(&dep).await;
                fig.met += usize::from(proxy.unspent().is_empty());
                proxy.clear();
                match first {
                    Ok(_) => fig.down_ok += 1,
                    Err(text) => {
                        assert!(!text.trim().is_empty(), "{case}: down says what it could not delete");
                        fig.down_failed += 1;
                    }
                }
            }
            down(&dep).await.unwrap_or_else(|e| panic!("down after {case}: {e}\n{}", proxy.log_text()));
            let left = dep.inventory().lines();
            fig.leftovers += left.len();
            assert_eq!(left, Vec::<String>::new(), "{case}: down leaves nothing");
        }
    }
    persistent_faults(&dep, &mut fig).await;
    dep.down = true;
    eprintln!(
        "[faults {}] {} up steps, {} down steps; {} faults injected, {} met; up {} ok / {} failed clearly; down {} ok / {} reported; {} duplicates, {} left over; {:.1?}",
        fake.label(), fig.up_steps, fig.down_steps, fig.injected, fig.met, fig.up_ok, fig.up_failed, fig.down_ok, fig.down_failed, fig.duplicates, fig.leftovers, started.elapsed()
    );
    eprintln!("[faults {}] a create that always fails: {} runs, at most {} create requests each", fake.label(), fig.persistent, fig.most_attempts);
    fig
}

/// Retries are bounded: each fault on every server create (a cloud that stays down) ends `up` with exit 1, `error:`
/// and `hint:`, after at most 15 create requests (5 attempts of a throttled request, 3 creates after a possibly
/// applied one); creates that time out after the fake acted on them are the exception: the server they made is
/// found and taken, still with no duplicate. With the cloud back, a re-run converges to one server; `down` leaves
/// nothing.
async fn persistent_faults(dep: &Deployment<'_>, fig: &mut Figures) {
    let (fake, proxy) = (dep.fake, dep.fake.proxy());
    let spec = dep.spec(1, None);
    for kind in FaultKind::ALL {
        let case = format!("{} on every server create", kind.label());
        let fault = Fault { matches: fake.call(Call::CreateServer, &dep.owner), count: u32::MAX, label: case.clone(), ..kind.at(fake, 0) };
        let from = proxy.log().len();
        proxy.inject([fault]);
        let run = dep.converge(&spec, |_| Ok(())).await;
        proxy.clear();
        let attempts = proxy.log()[from..].iter().filter(|s| s.fault.as_deref() == Some(case.as_str())).count();
        assert!((1..=15).contains(&attempts), "{case}: bounded retries, {attempts} creates sent");
        match run {
            Err(e) => {
                assert_clear(&case, &e);
                eprintln!("[faults {}] {case}: failed clearly after {attempts} creates: {}", fake.label(), render(&e).lines().next().unwrap_or_default());
            }
            // A timed-out create reached the fake, which made the server: looking before creating again finds it.
            Ok(_) if kind == FaultKind::Timeout => eprintln!("[faults {}] {case}: the server made by a timed-out create was found and taken", fake.label()),
            Ok(_) => panic!("{case}: up cannot succeed while every create is refused"),
        }
        fig.persistent += 1;
        fig.most_attempts = fig.most_attempts.max(attempts);
        dep.converge(&spec, |_| Ok(())).await.unwrap_or_else(|e| panic!("up after {case}: {e:#}"));
        let names: Vec<String> = dep.inventory().servers.iter().map(|s| s.name.clone()).collect();
        assert_eq!(names, [dep.server_name(1)], "{case}: one server, no duplicate");
        down(dep).await.unwrap_or_else(|e| panic!("down after {case}: {e}"));
        assert_eq!(dep.inventory().lines(), Vec::<String>::new(), "{case}: down leaves nothing");
    }
}

#[tokio::test]
async fn digitalocean_survives_every_fault_at_every_step() {
    let fake = DoHarness::start_with(&[]);
    let fig = run_matrix(&fake, Selection::Every).await;
    assert!(fig.met * 10 >= fig.injected * 9, "most injected faults met a request: {fig:?}");
}

#[tokio::test]
async fn linode_survives_rotating_faults_at_every_step() {
    let fake = LinodeHarness::start_with(&[]);
    run_matrix(&fake, Selection::Rotating).await;
}

#[tokio::test]
async fn vultr_survives_rotating_faults_at_every_step() {
    let fake = VultrHarness::start_with(&[]);
    run_matrix(&fake, Selection::Rotating).await;
}

#[tokio::test]
async fn aws_survives_rotating_faults_at_every_step() {
    let fake = AwsHarness::start();
    run_matrix(&fake, Selection::OnePerStep).await;
}
