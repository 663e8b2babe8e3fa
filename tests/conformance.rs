//! The provider conformance suite: the same scenarios, written once, against every cloud fake.
//!
//! Each scenario drives the real engine (`engine::apply::converge`, `refresh`, `destroy`) with the real provider
//! against a stateful fake, and checks the outcome two ways: through the provider's own request counters
//! (`Provider::requests`) and through the fake's own inventory, read over its control API, never through the
//! provider under test. A [`FaultProxy`] sits between every provider and its fake, so 429s, throttles and lost
//! answers are injected the same way for fakes with a fault API (DigitalOcean) and without (moto).
//!
//! Scenarios, in order, on one deployment (`run_suite`):
//! 1. create with `count: 2`: servers run with public IPv4s from the fake's pool, the firewall holds exactly the
//!    manifest's rules, is applied and covers them, and the key, the firewall and every server went through the
//!    ledger, in that order;
//! 2. converge again: no mutating request, nothing reported changed, nothing saved, the fake unchanged;
//! 3. a rule change (an extra TCP port): the same firewall updated in place, then a fixed point again;
//! 4. scale down to 1 (refused first: nothing happens; then confirmed: the highest index goes), then up to 2
//!    (the same index is made anew, and the firewall is applied to it when converge returns);
//! 5. lost state: a refresh with no ledger data finds the same servers, firewall and key by tag and name;
//! 7. down leaves nothing: the fake holds nothing of the deployment, a refresh finds nothing, a second down
//!    sends nothing;
//!
//! and on a second deployment:
//! 6. 429 / throttling and 5xx on the list and create calls, and the key, firewall and one server created with
//!    their answers lost: converge still succeeds with exactly one of each, every fault was met; then down, with
//!    a server delete whose answer is lost and a firewall delete answered 5xx, still leaves nothing.
//!
//! Adding a provider: implement [`CloudFake`] for a harness around its fake (start the fake, put a
//! [`FaultProxy`] in front, build the provider against the proxy, read the fake's inventory) and add one
//! `#[tokio::test]` calling [`run_suite`] (the Linode harness is the shortest example).

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ipnet::IpNet;
use serde_json::Value;
use sfuctl::engine::apply::{Inputs, Ledger, Saved, converge};
use sfuctl::engine::{CloudReport, Current, Diff, Teardown, Timings, destroy, refresh};
use sfuctl::http::{RequestStats, RetryPolicy, Secret};
use sfuctl::provider::aws::Aws;
use sfuctl::provider::aws::config::{AwsConfig, Credentials};
use sfuctl::provider::catalog::{KeyHandling, ProviderData};
use sfuctl::provider::digitalocean::DigitalOcean;
use sfuctl::provider::linode::Linode;
use sfuctl::provider::vultr::Vultr;
use sfuctl::provider::{Owner, Provider, Server};
use sfuctl::render::Renderer;
use sfuctl::spec::Spec;

use crate::support::cloud_deployment::CloudEnv;
use crate::support::do_fake::{DoFake, pool};
use crate::support::linode_fake::LinodeFake;
use crate::support::fault_proxy::{Effect, Fault, FaultProxy, Match, Reply};
use crate::support::moto::Moto;
use crate::support::vultr_fake::VultrFake;

/// The login key every deployment registers (a valid ed25519 line: providers check the format).
const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl";
/// The extra TCP port of the rule-change scenario.
const EXTRA_PORT: u16 = 8443;

// ------------------------------------------------------------------------------------------------ the harness

/// A cloud fake the suite can drive: the provider under test pointed at it (through its [`FaultProxy`]), and an
/// independent reading of what the fake holds.
pub trait CloudFake: Sync {
    /// A short label for deployment names and messages (`do`, `aws`).
    fn label(&self) -> &'static str;

    /// The spec's `provider:` value as a YAML flow mapping with `count` (`{ kind: digitalocean, region: fra1,
    /// count: 2 }`).
    fn provider_yaml(&self, count: u32) -> String;

    /// A new provider (so fresh request counters) that talks to the fake through [`CloudFake::proxy`], with
    /// retries quick enough for tests.
    fn provider(&self) -> Arc<dyn Provider> {
        self.provider_with(quick())
    }

    /// A new provider with this retry policy (its timeouts included).
    fn provider_with(&self, policy: RetryPolicy) -> Arc<dyn Provider>;

    /// The proxy every provider request goes through.
    fn proxy(&self) -> &FaultProxy;

    /// The environment that points the `sfuctl` binary at this fake through [`CloudFake::proxy`] (credentials
    /// and the API URL variable).
    fn cli_env(&self) -> Vec<(&'static str, String)>;

    /// The public IPv4 addresses the fake hands out (its pool: addresses nothing is ever sent to).
    fn pool(&self) -> Vec<IpAddr>;

    /// What of deployment `name` the fake holds now, read through its own control API or an independent client.
    fn inventory(&self, name: &str) -> Inventory;

    /// How a call of the provider looks on the wire, for aiming faults at it.
    fn call(&self, call: Call, owner: &Owner) -> Match;

    /// The provider's "slow down" answer (429 with `Retry-After`; EC2: 503 `RequestLimitExceeded`).
    fn throttled(&self) -> Reply;

    /// The provider's server error answer.
    fn server_error(&self) -> Reply;

    /// Someone else's server, made in the fake out of band (name `example.com`, tags `["web"]`); returns its ID.
    fn plant_foreign(&self) -> String;

    /// Whether the fake still holds server `id` (not deleted or terminated).
    fn holds_server(&self, id: &str) -> bool;

    /// What [`Effect::Strip`] removes from the server list so that it ignores the owner filter (empty: the
    /// provider sends none and already gets every server).
    fn owner_filter(&self) -> &'static [&'static str];
}

/// Provider calls that faults are aimed at.
#[derive(Clone, Copy, Debug)]
pub enum Call {
    /// Listing the deployment's servers by the owner tag.
    ListServers,
    /// Creating one server.
    CreateServer,
    /// Registering the login key (providers with `ssh_key: register`).
    RegisterKey,
    /// Creating the firewall.
    CreateFirewall,
    /// Deleting one server.
    DeleteServer,
    /// Deleting the firewall.
    DeleteFirewall,
}

/// What a fake holds of one deployment, normalised across fakes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// Servers carrying the owner tag that are not deleted, by name.
    pub servers: Vec<HeldServer>,
    /// Firewalls named `sfuctl-<name>` or carrying the owner tag.
    pub firewalls: Vec<HeldFirewall>,
    /// Registered keys named `sfuctl-<name>`.
    pub keys: Vec<String>,
    /// Anything else the fake keeps for the deployment (DigitalOcean: the tag itself).
    pub other: Vec<String>,
}

/// A server as the fake holds it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HeldServer {
    /// Its name.
    pub name: String,
    /// The fake's ID of it.
    pub id: String,
    /// Its public IPv4, once it has one.
    pub ipv4: Option<IpAddr>,
}

/// A firewall as the fake holds it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldFirewall {
    /// The fake's ID.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Inbound rules as `proto ports from sources` (see [`rule_lines`]).
    pub inbound: Vec<String>,
}

impl Inventory {
    /// Everything held, one line each (empty: nothing is left).
    pub fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.servers.iter().map(|s| format!("server {} ({})", s.name, s.id)).collect();
        out.extend(self.firewalls.iter().map(|f| format!("firewall {} ({})", f.name, f.id)));
        out.extend(self.keys.iter().map(|k| format!("key {k}")));
        out.extend(self.other.iter().cloned());
        out
    }

    /// The one firewall (panics when there is none or more than one).
    pub fn firewall(&self) -> &HeldFirewall {
        assert_eq!(self.firewalls.len(), 1, "exactly one firewall: {self:#?}");
        &self.firewalls[0]
    }

    /// Server IDs by name.
    pub fn server_ids(&self) -> BTreeMap<String, String> {
        self.servers.iter().map(|s| (s.name.clone(), s.id.clone())).collect()
    }
}

/// Rules as sorted `proto ports from a, b` lines, merged by protocol and port range (a provider may hold IPv4
/// and IPv6 sources of one rule as two entries). `sources` may be CIDRs or bare addresses.
pub fn rule_lines(rules: impl IntoIterator<Item = (String, u16, u16, Vec<String>)>) -> Vec<String> {
    let mut merged: BTreeMap<(String, u16, u16), BTreeSet<IpNet>> = BTreeMap::new();
    for (proto, start, end, sources) in rules {
        let set = merged.entry((proto.to_lowercase(), start, end)).or_default();
        for s in sources {
            let net = s.parse::<IpNet>().or_else(|_| s.parse::<IpAddr>().map(IpNet::from)).unwrap_or_else(|_| panic!("`{s}` is not a CIDR"));
            set.insert(net);
        }
    }
    merged
        .into_iter()
        .map(|((proto, start, end), sources)| {
            let ports = if start == end { start.to_string() } else { format!("{start}-{end}") };
            let sources: Vec<String> = sources.iter().map(ToString::to_string).collect();
            format!("{proto} {ports} from {}", sources.join(", "))
        })
        .collect()
}

/// The inbound rules a spec's manifest asks for, as [`rule_lines`].
fn wanted_rules(spec: &Spec) -> Vec<String> {
    rule_lines(
        spec.manifest().cloud_rules().iter().map(|r| (r.protocol.to_string(), r.ports.start, r.ports.end, r.sources.iter().map(ToString::to_string).collect())),
    )
}

/// Retries fast enough that a fault costs milliseconds (a `Retry-After` is still honoured as sent).
fn quick() -> RetryPolicy {
    RetryPolicy { base_delay: Duration::from_millis(20), max_delay: Duration::from_millis(200), ..RetryPolicy::default() }
}

/// Seconds-scale bounds: the fakes answer at once, so anything slower is a failure.
fn timings() -> Timings {
    Timings { server: Duration::from_secs(30), firewall: Duration::from_secs(30), ssh: Duration::from_secs(5), busy: Duration::from_secs(30) }
}

/// A fake's environment for the binary with its URL replaced by the proxy's.
fn through_proxy(env: Vec<(&'static str, String)>, fake_url: &str, proxy: &FaultProxy) -> Vec<(&'static str, String)> {
    env.into_iter().map(|(k, v)| (k, v.replace(fake_url, &proxy.url()))).collect()
}

/// `127.0.0.1:PORT` of a `http://127.0.0.1:PORT` URL.
fn socket_of(url: &str) -> SocketAddr {
    url.trim_start_matches("http://").trim_end_matches('/').parse().unwrap_or_else(|e| panic!("`{url}`: {e}"))
}

fn addresses(n: usize) -> Vec<IpAddr> {
    pool(n).split(',').map(|a| a.parse().unwrap()).collect()
}

// ------------------------------------------------------------------------------------------------ a deployment

/// One deployment under test. Dropping it (a failed assertion included) runs `down` against the fake unless the
/// suite already took it down: nothing is left behind, whatever happened.
struct Deployment<'a> {
    fake: &'a dyn CloudFake,
    name: String,
    owner: Owner,
    down: bool,
}

/// What one converge did.
struct Converged {
    servers: Vec<Server>,
    report: CloudReport,
    saved: Vec<Saved>,
    stats: RequestStats,
}

impl<'a> Deployment<'a> {
    fn new(fake: &'a dyn CloudFake, scenario: &str) -> Self {
        // Unique per process and provider: tests run in parallel (each fake is its own process anyway).
        let name = format!("cf{}-{}-{scenario}", std::process::id(), fake.label());
        Self { fake, owner: Owner::new(&name), name, down: false }
    }

    fn spec(&self, count: u32, extra_tcp_port: Option<u16>) -> Spec {
        let tcp = extra_tcp_port.map(|p| format!("  tcp_ports: [{p}]\n")).unwrap_or_default();
        let yaml = format!(
            "name: {}\nprovider: {}\nssh: {{ allow_from: [203.0.113.7/32] }}\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n{tcp}",
            self.name,
            self.fake.provider_yaml(count)
        );
        Spec::parse(&yaml).unwrap_or_else(|e| panic!("{e:?}\n{yaml}"))
    }

    /// `converge` with a fresh provider and an empty ledger; `confirm` answers the question asked before anything is
/// created or destroyed.
    async fn converge(&self, spec: &Spec, confirm: impl FnOnce(&Diff) -> anyhow::Result<()>) -> anyhow::Result<Converged> {
        let provider = self.fake.provider();
        let saved = Arc::new(Mutex::new(Vec::new()));
        let ledger: Ledger = {
            let saved = Arc::clone(&saved);
            Arc::new(move |s| {
                saved.lock().unwrap().push(s);
                Ok(())
            })
        };
        let renderer = Renderer::new(None)?;
        let secret = Secret::new("conformance-secret-0123456789abcdef0123456789");
        let timings = timings();
        let inputs = Inputs { spec, base_dir: std::path::Path::new("."), renderer: &renderer, secret: &secret, public_key: Some(KEY.into()), timings: &timings, ledger, saved_ids: vec![] };
        let (servers, report) = converge(&provider, &inputs, confirm).await?;
        let saved = saved.lock().unwrap().clone();
        Ok(Converged { servers, report, saved, stats: provider.requests() })
    }

    /// A refresh from nothing but the spec's name and key, with a fresh provider.
    async fn refresh(&self) -> (Current, RequestStats) {
        let provider = self.fake.provider();
        let current = refresh(provider.as_ref(), provider_data(self.fake), &self.owner, Some(KEY)).await.unwrap_or_else(|e| panic!("refresh {}: {e:#}", self.name));
        (current, provider.requests())
    }

    /// `down`: refresh, then destroy what was found.
    async fn destroy(&self) -> (Teardown, RequestStats) {
        let (current, _) = self.refresh().await;
        let provider = self.fake.provider();
        let teardown = destroy(Arc::clone(&provider), &self.owner, &current, &timings()).await;
        (teardown, provider.requests())
    }

    fn inventory(&self) -> Inventory {
        self.fake.inventory(&self.name)
    }

    fn server_name(&self, i: u32) -> String {
        self.owner.server_name(i)
    }

    /// Whether the provider registers the login key (and so holds it, finds it and deletes it).
    fn registers_key(&self) -> bool {
        provider_data(self.fake).ssh_key == KeyHandling::Register
    }
}

impl Drop for Deployment<'_> {
    fn drop(&mut self) {
        if self.down {
            return;
        }
        self.fake.proxy().clear();
        let (fake, owner) = (self.fake, self.owner.clone());
        // Drop cannot await, and the test's runtime may be the current thread's: a runtime of its own, on a
        // thread of its own.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("cleanup runtime");
                rt.block_on(async {
                    let provider = fake.provider();
                    match refresh(provider.as_ref(), provider_data(fake), &owner, Some(KEY)).await {
                        Ok(current) => {
                            let t = destroy(Arc::clone(&provider), &owner, &current, &timings()).await;
                            eprintln!("cleanup of {}: deleted {:?}, failed {:?}", owner.name(), t.deleted, t.failed);
                        }
                        Err(e) => eprintln!("cleanup of {}: refresh failed: {e:#}", owner.name()),
                    }
                });
            });
        });
    }
}

/// The provider data of a fake's kind (parsed from its spec).
fn provider_data(fake: &dyn CloudFake) -> &'static ProviderData {
    let spec = Spec::parse(&format!("name: x\nprovider: {}\nsfu: {{ kind: janus, rtc_ports: 40000-41000 }}\n", fake.provider_yaml(1))).expect("spec");
    ProviderData::get(spec.provider.kind)
}

fn names(servers: &[Server]) -> Vec<String> {
    servers.iter().map(|s| s.name.clone()).collect()
}

fn saved_servers(saved: &[Saved]) -> BTreeMap<String, String> {
    saved.iter().filter_map(|s| if let Saved::Server(n, id) = s { Some((n.clone(), id.clone())) } else { None }).collect()
}

// ------------------------------------------------------------------------------------------------ the scenarios

/// Runs every scenario against `fake`; returns each scenario's time.
pub async fn run_suite(fake: &dyn CloudFake) -> Vec<(&'static str, Duration)> {
    let mut times = Vec::new();
    let mut timed = |label: &'static str, started: Instant| {
        let took = started.elapsed();
        eprintln!("[conformance {}] {label}: {took:.2?}", fake.label());
        times.push((label, took));
    };
    let dep = Deployment::new(fake, "life");

    let t = Instant::now();
    let created = create(&dep).await;
    timed("1 create", t);
    let t = Instant::now();
    converge_is_a_fixed_point(&dep, &dep.spec(2, None), &created).await;
    timed("2 converge with no change", t);
    let t = Instant::now();
    let changed = rule_change_in_place(&dep, &created).await;
    timed("3 rule change in place", t);
    let t = Instant::now();
    let scaled = scale_down_then_up(&dep, &changed).await;
    timed("4 scale down and up", t);
    let t = Instant::now();
    lost_state(&dep, &scaled).await;
    timed("5 lost state", t);
    let t = Instant::now();
    down_leaves_nothing(dep).await;
    timed("7 down leaves nothing", t);

    let t = Instant::now();
    faults(Deployment::new(fake, "flt")).await;
    timed("6 429/5xx on list and create (+ down)", t);

    let t = Instant::now();
    someone_elses_server(Deployment::new(fake, "own")).await;
    timed("8 someone else's server in the list", t);
    let t = Instant::now();
    two_runs_at_once(Deployment::new(fake, "dup")).await;
    timed("9 two runs at once", t);
    times
}

/// 8: the server list ignores its owner filter and returns someone else's server (`example.com`, tags `["web"]`):
/// create, a scale-down and down never touch it, and the fake still holds it.
async fn someone_elses_server(mut dep: Deployment<'_>) {
    let fake = dep.fake;
    let proxy = fake.proxy();
    let theirs = fake.plant_foreign();
    assert!(fake.holds_server(&theirs));
    if !fake.owner_filter().is_empty() {
        proxy.inject([Fault {
            label: "list ignores its filter".into(),
            matches: fake.call(Call::ListServers, &dep.owner),
            count: u32::MAX,
            effect: Effect::Strip(fake.owner_filter()),
            reply: fake.server_error(),
        }]);
    }
    let c = dep.converge(&dep.spec(2, None), nothing_deleted).await.unwrap_or_else(|e| panic!("create: {e:#}\n{}", proxy.log_text()));
    assert_eq!(names(&c.servers), [dep.server_name(1), dep.server_name(2)]);
    let (current, _) = dep.refresh().await;
    assert_eq!(names(&current.servers), [dep.server_name(1), dep.server_name(2)]);
    // Reported when the provider passed it on (DigitalOcean, AWS); Linode and Vultr check the tag themselves too.
    // (An unfiltered EC2 list also returns other deployments' and terminated instances: reported alike.)
    assert!(current.foreign.is_empty() || current.foreign.iter().any(|f| f.contains(&theirs) && f.contains("example.com")), "reported: {:?}", current.foreign);
    // Scale down: only sfuctl's server 2 is shown and deleted.
    let shown = Mutex::new(Vec::new());
    let c = dep
        .converge(&dep.spec(1, None), |diff| {
            *shown.lock().unwrap() = names(&diff.delete);
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("scale down: {e:#}"));
    assert_eq!(*shown.lock().unwrap(), [dep.server_name(2)]);
    assert_eq!(c.report.servers_deleted, [dep.server_name(2)]);
    let (teardown, _) = dep.destroy().await;
    assert!(teardown.failed.is_empty(), "{teardown:?}");
    assert!(!teardown.deleted.iter().any(|d| d.contains(&theirs)), "{teardown:?}");
    let touched: Vec<String> = proxy.log().into_iter().filter(|s| !s.line.starts_with("GET") && s.line.contains(&theirs)).map(|s| s.line).collect();
    assert_eq!(touched, Vec::<String>::new(), "no request changed someone else's server");
    assert!(fake.holds_server(&theirs), "the fake still holds someone else's server {theirs}");
    proxy.clear();
    assert_eq!(dep.inventory().lines(), Vec::<String>::new());
    dep.down = true;
}

/// 9: two runs of the same spec at once (two machines: no lock between them) end with exactly one server and one
/// firewall: each run keeps the lowest ID of a name and deletes the others.
async fn two_runs_at_once(mut dep: Deployment<'_>) {
    let spec = dep.spec(1, None);
    let (a, b) = tokio::join!(dep.converge(&spec, |_| Ok(())), dep.converge(&spec, |_| Ok(())));
    let outcomes = [a.map(|c| names(&c.servers)).map_err(|e| format!("{e:#}")), b.map(|c| names(&c.servers)).map_err(|e| format!("{e:#}"))];
    eprintln!("[conformance {}] two runs at once: {outcomes:?}", dep.fake.label());
    assert!(outcomes.iter().any(Result::is_ok), "at least one run succeeds: {outcomes:?}\n{}", dep.fake.proxy().log_text());
    // A third run (or the slower of the two) converges to exactly one of each.
    let c = dep.converge(&spec, |_| Ok(())).await.unwrap_or_else(|e| panic!("converge after two runs: {e:#}"));
    assert_eq!(names(&c.servers), [dep.server_name(1)]);
    let inv = dep.inventory();
    assert_eq!(inv.servers.len(), 1, "exactly `count` servers: {inv:#?}\n{}", dep.fake.proxy().log_text());
    assert_eq!(inv.firewalls.len(), 1, "exactly one firewall: {inv:#?}");
    let (teardown, _) = dep.destroy().await;
    assert!(teardown.failed.is_empty(), "{teardown:?}");
    assert_eq!(dep.inventory().lines(), Vec::<String>::new());
    dep.down = true;
}

/// 1: create with count 2.
async fn create(dep: &Deployment<'_>) -> Inventory {
    let spec = dep.spec(2, None);
    assert!(dep.inventory().lines().is_empty(), "a new deployment starts from nothing: {:?}", dep.inventory());
    let c = dep.converge(&spec, nothing_deleted).await.unwrap_or_else(|e| panic!("create: {e:#}"));

    assert_eq!(names(&c.servers), [dep.server_name(1), dep.server_name(2)]);
    let pool = dep.fake.pool();
    for s in &c.servers {
        assert!(s.is_up(), "converge returns running servers with an address: {s:?}");
        assert!(s.public_ipv4.is_some_and(|ip| pool.contains(&ip)), "{} has {:?}, not an address of the fake's pool {pool:?}", s.name, s.public_ipv4);
    }
    assert_ne!(c.servers[0].public_ipv4, c.servers[1].public_ipv4);
    assert!(c.report.key_created == dep.registers_key() && c.report.firewall == "created", "{:?}", c.report);
    assert_eq!(c.report.servers_created.iter().collect::<BTreeSet<_>>(), [dep.server_name(1), dep.server_name(2)].iter().collect());
    assert!(c.report.servers_deleted.is_empty());

    // Every ID went through the ledger, in the safe order: key, firewall, then servers.
    let kinds: Vec<&str> = c.saved.iter().map(|s| match s {
        Saved::Key(_) => "key",
        Saved::Firewall(_) => "firewall",
        Saved::Server(..) => "server",
        Saved::ServerGone(_) => "gone",
    }).collect();
    let expected: &[&str] = if dep.registers_key() { &["key", "firewall", "server", "server"] } else { &["firewall", "server", "server"] };
    assert_eq!(kinds, expected, "{:?}", c.saved);
    let returned: BTreeMap<String, String> = c.servers.iter().map(|s| (s.name.clone(), s.id.0.clone())).collect();
    assert_eq!(saved_servers(&c.saved), returned, "the ledger has the IDs converge returned");

    // The fake agrees: the same servers and addresses, the firewall with exactly the manifest's rules.
    let inv = dep.inventory();
    assert_eq!(inv.server_ids(), returned, "{inv:#?}");
    for s in &c.servers {
        let held = inv.servers.iter().find(|h| h.name == s.name).unwrap();
        assert_eq!(held.ipv4, s.public_ipv4, "the fake's address of {} is the one the provider reported", s.name);
    }
    let fw = inv.firewall();
    assert_eq!(fw.name, format!("sfuctl-{}", dep.name));
    assert!(c.saved.contains(&Saved::Firewall(fw.id.clone())), "the ledger has the firewall's ID {}: {:?}", fw.id, c.saved);
    assert_eq!(fw.inbound, wanted_rules(&spec), "the firewall holds the manifest's rules");
    let key_names: &[String] = if dep.registers_key() { &[format!("sfuctl-{}", dep.name)] } else { &[] };
    assert_eq!(inv.keys, key_names);

    firewall_applied(dep, &c.servers, "after create").await;
    let made = 3 + u64::from(dep.registers_key());
    assert!(c.stats.mutating >= made, "firewall, two servers (and the key where it is registered) at least: {:?}", c.stats);
    inv
}

/// When converge returns, the firewall's changes are applied and it covers every server (the provider's own
/// reading, right then: converge promises to wait for both).
async fn firewall_applied(dep: &Deployment<'_>, servers: &[Server], when: &str) {
    let (current, _) = dep.refresh().await;
    let fw = current.firewall.unwrap_or_else(|| panic!("{when}: the firewall is found"));
    assert!(fw.ready, "{when}: converge returned before the firewall was applied (status {}): {fw:?}", fw.status);
    for s in servers {
        let listed = current.servers.iter().find(|c| c.id == s.id).unwrap_or_else(|| panic!("{when}: {} is listed", s.name));
        assert!(fw.covers(listed), "{when}: the firewall does not cover {}: {fw:?}", s.name);
    }
}

/// The answer to `up`'s question when servers are only created: yes, after checking nothing would be deleted.
fn nothing_deleted(diff: &Diff) -> anyhow::Result<()> {
    assert!(diff.delete.is_empty(), "nothing to delete, yet asked to delete {:?}", diff.delete);
    assert!(diff.creates_or_destroys(), "asked, yet nothing is created or deleted: {diff:?}");
    Ok(())
}

/// 2: a second converge reads only, and changes nothing anywhere.
async fn converge_is_a_fixed_point(dep: &Deployment<'_>, spec: &Spec, before: &Inventory) {
    let c = dep.converge(spec, |diff| panic!("nothing to create or delete, yet asked about {diff:?}")).await.unwrap_or_else(|e| panic!("converge: {e:#}"));
    assert!(!c.report.changed(), "{:?}", c.report);
    assert_eq!(c.report.firewall, "unchanged");
    assert_eq!(c.stats.mutating, 0, "a converged deployment costs no mutating request: {:?}\n{}", c.stats, dep.fake.proxy().log_text());
    assert!(c.stats.total > 0, "it did read");
    assert!(c.saved.is_empty(), "nothing new to save: {:?}", c.saved);
    assert_eq!(names(&c.servers), before.servers.iter().map(|s| s.name.clone()).collect::<Vec<_>>());
    assert_eq!(&dep.inventory(), before, "the fake is unchanged");
}

/// 3: an extra TCP port updates the same firewall in place.
async fn rule_change_in_place(dep: &Deployment<'_>, before: &Inventory) -> Inventory {
    let spec = dep.spec(2, Some(EXTRA_PORT));
    let old = before.firewall().clone();
    assert!(!old.inbound.iter().any(|r| r.starts_with(&format!("tcp {EXTRA_PORT} "))), "{old:?}");
    let c = dep.converge(&spec, |diff| panic!("a rule change creates and deletes nothing, yet asked about {diff:?}")).await.unwrap_or_else(|e| panic!("rule change: {e:#}"));
    assert_eq!(c.report.firewall, "updated", "{:?}", c.report);
    assert!(c.report.servers_created.is_empty() && c.report.servers_deleted.is_empty() && !c.report.key_created, "{:?}", c.report);
    assert_eq!(c.saved, [Saved::Firewall(old.id.clone())], "the same firewall, saved again");
    assert!(c.stats.mutating >= 1);

    let inv = dep.inventory();
    let fw = inv.firewall();
    assert_eq!(fw.id, old.id, "updated in place, not replaced");
    assert_eq!(fw.inbound, wanted_rules(&spec));
    assert!(fw.inbound.iter().any(|r| r.starts_with(&format!("tcp {EXTRA_PORT} from "))), "{:?}", fw.inbound);
    assert_eq!(inv.servers, before.servers, "servers untouched by a rule change");
    firewall_applied(dep, &c.servers, "after a rule change").await;
    converge_is_a_fixed_point(dep, &spec, &inv).await;
    inv
}

/// 4: down to 1 (refused, then confirmed: the highest index goes), then up to 2 (made anew).
async fn scale_down_then_up(dep: &Deployment<'_>, before: &Inventory) -> Inventory {
    let ids = before.server_ids();
    let (one, two) = (dep.server_name(1), dep.server_name(2));

    let refused = dep.converge(&dep.spec(1, Some(EXTRA_PORT)), |_| Err(anyhow::anyhow!("not confirmed"))).await;
    assert!(refused.as_ref().is_err_and(|e| e.to_string().contains("not confirmed")), "{:?}", refused.map(|c| c.report));
    assert_eq!(&dep.inventory(), before, "nothing changes without confirmation");

    let shown = Mutex::new(Vec::new());
    let c = dep
        .converge(&dep.spec(1, Some(EXTRA_PORT)), |diff| {
            *shown.lock().unwrap() = names(&diff.delete);
            Ok(())
        })
        .await
        .unwrap_or_else(|e| panic!("scale down: {e:#}"));
    assert_eq!(*shown.lock().unwrap(), std::slice::from_ref(&two), "confirmation is asked for exactly the server that goes");
    assert_eq!(c.report.servers_deleted, std::slice::from_ref(&two));
    assert!(c.report.servers_created.is_empty() && c.report.firewall == "unchanged", "{:?}", c.report);
    assert_eq!(c.saved, [Saved::ServerGone(two.clone())]);
    assert_eq!(c.servers.iter().map(|s| (s.name.clone(), s.id.0.clone())).collect::<Vec<_>>(), [(one.clone(), ids[&one].clone())]);
    let inv = dep.inventory();
    assert_eq!(inv.server_ids(), BTreeMap::from([(one.clone(), ids[&one].clone())]), "only the highest index was deleted: {inv:#?}");
    assert_eq!(inv.firewalls, before.firewalls);

    let c = dep.converge(&dep.spec(2, Some(EXTRA_PORT)), nothing_deleted).await.unwrap_or_else(|e| panic!("scale up: {e:#}"));
    assert_eq!(c.report.servers_created, std::slice::from_ref(&two));
    assert!(c.report.servers_deleted.is_empty() && c.report.firewall == "unchanged" && !c.report.key_created, "{:?}", c.report);
    let new_two = c.servers.iter().find(|s| s.name == two).expect("server 2 is back").id.0.clone();
    assert_ne!(new_two, ids[&two], "server 2 is a new server");
    assert_eq!(c.saved, [Saved::Server(two.clone(), new_two.clone())]);
    let pool = dep.fake.pool();
    assert!(c.servers.iter().all(|s| s.is_up() && s.public_ipv4.is_some_and(|ip| pool.contains(&ip))), "{:?}", c.servers);
    firewall_applied(dep, &c.servers, "after scaling up").await;
    let inv = dep.inventory();
    assert_eq!(inv.server_ids(), BTreeMap::from([(one.clone(), ids[&one].clone()), (two, new_two)]), "{inv:#?}");
    assert_eq!(inv.firewalls, before.firewalls);
    inv
}

/// 5: with no local state at all, a refresh finds everything again by owner tag and name.
async fn lost_state(dep: &Deployment<'_>, inv: &Inventory) {
    let (current, stats) = dep.refresh().await;
    assert_eq!(stats.mutating, 0, "a refresh only reads");
    let found: BTreeMap<String, String> = current.servers.iter().map(|s| (s.name.clone(), s.id.0.clone())).collect();
    assert_eq!(found, inv.server_ids());
    assert_eq!(names(&current.servers), [dep.server_name(1), dep.server_name(2)], "sorted by index");
    let fw = current.firewall.as_ref().expect("the firewall is found by name");
    assert_eq!((fw.id.0.as_str(), fw.name.as_str()), (inv.firewall().id.as_str(), inv.firewall().name.as_str()));
    if dep.registers_key() {
        let key = current.key.as_ref().expect("the key is found by fingerprint");
        assert_eq!(key.name, format!("sfuctl-{}", dep.name));
    }
}

/// 7: down deletes everything; the fake holds nothing of the deployment; a second down sends nothing.
async fn down_leaves_nothing(mut dep: Deployment<'_>) {
    let (teardown, _) = dep.destroy().await;
    assert!(teardown.failed.is_empty(), "{teardown:?}");
    let expected = 2 + 1 + usize::from(dep.registers_key());
    assert_eq!(teardown.deleted.len(), expected, "two servers, the firewall and the key if registered: {teardown:?}");
    assert_eq!(dep.inventory().lines(), Vec::<String>::new(), "the fake still holds part of {}", dep.name);
    let (current, _) = dep.refresh().await;
    assert!(current.servers.is_empty() && current.firewall.is_none() && current.key.is_none(), "{current:?}");
    let (again, stats) = dep.destroy().await;
    assert!(again.deleted.is_empty() && again.failed.is_empty(), "{again:?}");
    // A provider may forget the owner once more (DigitalOcean's tag delete is a 404, taken as done); nothing else.
    assert!(stats.mutating <= 1, "a second down has nothing to delete: {stats:?}");
    dep.down = true;
}

/// 6: throttling and server errors on the list and create calls, and creates acted on with their answers lost
/// (key, firewall, server): converge still succeeds, with exactly one of each thing asked for. Then `down` with a
/// server delete whose answer is lost and a firewall delete answered 5xx still leaves nothing.
async fn faults(dep: Deployment<'_>) {
    let fake = dep.fake;
    let proxy = fake.proxy();
    let on = |call| fake.call(call, &dep.owner);
    let fault = |label: &str, call, effect, reply: Reply| Fault { label: label.into(), matches: on(call), count: 1, effect, reply };
    let mut up_faults = vec![
        Fault { count: 2, ..fault("list servers throttled", Call::ListServers, Effect::Refuse, fake.throttled()) },
        fault("list servers 5xx", Call::ListServers, Effect::Refuse, fake.server_error()),
        fault("firewall created, answer lost", Call::CreateFirewall, Effect::LoseAnswer, fake.server_error()),
        fault("server create throttled", Call::CreateServer, Effect::Refuse, fake.throttled()),
        fault("server created, answer lost", Call::CreateServer, Effect::LoseAnswer, fake.server_error()),
    ];
    if dep.registers_key() {
        up_faults.push(fault("key registered, answer lost", Call::RegisterKey, Effect::LoseAnswer, fake.server_error()));
    }
    proxy.inject(up_faults);
    let c = dep.converge(&dep.spec(2, None), nothing_deleted).await;
    let c = c.unwrap_or_else(|e| panic!("converge under faults failed: {e:#}\n{}", proxy.log_text()));
    assert_eq!(proxy.unspent(), Vec::<String>::new(), "every fault was met:\n{}", proxy.log_text());
    proxy.clear();

    assert_eq!(names(&c.servers), [dep.server_name(1), dep.server_name(2)]);
    assert!(c.servers.iter().all(Server::is_up));
    firewall_applied(&dep, &c.servers, "after converging under faults").await;
    assert!(c.report.key_created == dep.registers_key() && c.report.firewall == "created", "a create whose answer was lost still counts as made now: {:?}", c.report);
    let inv = dep.inventory();
    assert_eq!(
        inv.servers.iter().map(|s| s.name.clone()).collect::<Vec<_>>(),
        [dep.server_name(1), dep.server_name(2)],
        "no duplicate server: {inv:#?}\n{}",
        proxy.log_text()
    );
    assert_eq!(inv.firewall().inbound, wanted_rules(&dep.spec(2, None)));
    assert_eq!(inv.keys.len(), usize::from(dep.registers_key()), "{inv:#?}");
    let returned: BTreeMap<String, String> = c.servers.iter().map(|s| (s.name.clone(), s.id.0.clone())).collect();
    assert_eq!(inv.server_ids(), returned);
    assert_eq!(saved_servers(&c.saved), returned, "the server whose answer was lost is saved too");
    assert!(c.saved.contains(&Saved::Firewall(inv.firewall().id.clone())), "the firewall whose answer was lost is saved: {:?}", c.saved);
    assert!(c.stats.rate_limited >= 3, "three throttled answers seen: {:?}", c.stats);
    assert!(c.stats.retries >= 4, "{:?}", c.stats);
    converge_is_a_fixed_point(&dep, &dep.spec(2, None), &inv).await;

    proxy.inject([
        fault("server deleted, answer lost", Call::DeleteServer, Effect::LoseAnswer, fake.server_error()),
        fault("firewall delete 5xx", Call::DeleteFirewall, Effect::Refuse, fake.server_error()),
    ]);
    let log_before = proxy.log().len();
    down_leaves_nothing(dep).await;
    let log: Vec<String> = proxy.log()[log_before..].iter().map(|s| format!("{} -> {}", s.line, s.status)).collect();
    assert_eq!(proxy.unspent(), Vec::<String>::new(), "every fault was met: {log:#?}");
    proxy.clear();
}

// ------------------------------------------------------------------------------------------------ DigitalOcean

/// The DigitalOcean fake (`tests/fakes/digitalocean`) behind a fault proxy. Its own drop asserts that no request
/// broke the OpenAPI document.
struct DoHarness {
    proxy: FaultProxy,
    fake: DoFake,
}

impl DoHarness {
    /// A droplet boots in 0.5 s, a firewall change applies in `firewall_delay` seconds (on a new droplet: once
    /// it is active, and no sooner than that), so the engine's waits are exercised.
    fn start(firewall_delay: &str) -> Self {
        Self::start_with(&["--boot-delay", "0.5", "--firewall-delay", firewall_delay])
    }

    /// A fake with these flags after its address pool (a later `--address-pool` wins; `&[]`: droplets boot and
    /// firewalls apply at once, so a run's requests are the same every time).
    fn start_with(args: &[&str]) -> Self {
        let pool = pool(10);
        let fake = DoFake::start_with(&[&["--address-pool", pool.as_str()], args].concat());
        Self { proxy: FaultProxy::start(socket_of(&fake.url())), fake }
    }
}

impl CloudFake for DoHarness {
    fn label(&self) -> &'static str {
        "do"
    }

    fn provider_yaml(&self, count: u32) -> String {
        format!("{{ kind: digitalocean, region: fra1, size: s-1vcpu-1gb, count: {count} }}")
    }

    fn provider_with(&self, policy: RetryPolicy) -> Arc<dyn Provider> {
        Arc::new(DigitalOcean::new(&self.proxy.url(), Secret::new(self.fake.token()), policy).unwrap())
    }

    fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    fn cli_env(&self) -> Vec<(&'static str, String)> {
        through_proxy(self.fake.env(), &self.fake.url(), &self.proxy)
    }

    fn pool(&self) -> Vec<IpAddr> {
        addresses(10)
    }

    fn inventory(&self, name: &str) -> Inventory {
        let state = self.fake.get("/_fake/state");
        let (tag, prefix) = (format!("sfuctl:{name}"), format!("sfuctl-{name}"));
        let list = |key: &str| state[key].as_array().cloned().unwrap_or_default();
        let mut inv = Inventory::default();
        for d in list("droplets").iter().filter(|d| d["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag.as_str()))) {
            let ipv4 = d["networks"]["v4"].as_array().into_iter().flatten().find(|n| n["type"] == "public").and_then(|n| n["ip_address"].as_str()).map(|a| a.parse().unwrap());
            inv.servers.push(HeldServer { name: d["name"].as_str().unwrap().into(), id: d["id"].to_string(), ipv4 });
        }
        for f in list("firewalls").iter().filter(|f| f["name"] == prefix.as_str() || f["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag.as_str()))) {
            let inbound = rule_lines(f["inbound_rules"].as_array().into_iter().flatten().map(|r| {
                let (start, end) = port_range(r["ports"].as_str().unwrap_or_default());
                let sources = r["sources"]["addresses"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
                (r["protocol"].as_str().unwrap_or_default().to_string(), start, end, sources)
            }));
            inv.firewalls.push(HeldFirewall { id: f["id"].as_str().unwrap_or_default().into(), name: f["name"].as_str().unwrap_or_default().into(), inbound });
        }
        inv.keys = list("ssh_keys").iter().filter(|k| k["name"] == prefix.as_str()).map(|k| k["name"].as_str().unwrap().into()).collect();
        inv.other = list("tags").iter().filter(|t| *t == tag.as_str()).map(|t| format!("tag {t}")).collect();
        inv.servers.sort();
        inv
    }

    fn call(&self, call: Call, _owner: &Owner) -> Match {
        match call {
            Call::ListServers => Match::new("GET", "/v2/droplets").query(&["tag_name="]),
            Call::CreateServer => Match::new("POST", "/v2/droplets"),
            Call::RegisterKey => Match::new("POST", "/v2/account/keys"),
            Call::CreateFirewall => Match::new("POST", "/v2/firewalls"),
            Call::DeleteServer => Match::new("DELETE", "/v2/droplets/*"),
            Call::DeleteFirewall => Match::new("DELETE", "/v2/firewalls/*"),
        }
    }

    fn throttled(&self) -> Reply {
        Reply::json(429, r#"{"id":"too_many_requests","message":"API Rate limit exceeded."}"#).header("Retry-After", "1").header("ratelimit-remaining", "0")
    }

    fn server_error(&self) -> Reply {
        Reply::json(500, r#"{"id":"server_error","message":"Server was unable to give you a response."}"#)
    }

    fn plant_foreign(&self) -> String {
        let body = serde_json::json!({ "name": "example.com", "region": "fra1", "size": "s-1vcpu-1gb", "image": "ubuntu-24-04-x64", "tags": ["web"] });
        self.fake.oob("POST", "/v2/droplets", Some(&body))["droplet"]["id"].to_string()
    }

    fn holds_server(&self, id: &str) -> bool {
        self.fake.get("/_fake/state")["droplets"].as_array().into_iter().flatten().any(|d| d["id"].to_string().as_str() == id)
    }

    fn owner_filter(&self) -> &'static [&'static str] {
        &["tag_name"]
    }
}

/// `"22"` or `"40000-41000"`.
fn port_range(ports: &str) -> (u16, u16) {
    match ports.split_once('-') {
        Some((a, b)) => (a.parse().unwrap(), b.parse().unwrap()),
        None => {
            let p = ports.parse().unwrap_or(0);
            (p, p)
        }
    }
}

// ------------------------------------------------------------------------------------------------ AWS (moto)

/// moto (`tests/fakes/aws`) behind a fault proxy; its inventory is read with boto3, an independent client.
struct AwsHarness {
    proxy: FaultProxy,
    moto: Moto,
}

impl AwsHarness {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// moto with these launcher flags after the suite's (a later `--address-pool` wins).
    fn start_with(args: &[&str]) -> Self {
        let pool = pool(10);
        let moto = Moto::start(&[&["--address-pool", pool.as_str(), "--pool-exhausted-status", "400"], args].concat());
        Self { proxy: FaultProxy::start(socket_of(&moto.url())), moto }
    }
}

const EC2_ERROR: &str = r#"<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault-proxy</RequestID></Response>"#;

impl CloudFake for AwsHarness {
    fn label(&self) -> &'static str {
        "aws"
    }

    fn provider_yaml(&self, count: u32) -> String {
        format!("{{ kind: aws, region: us-east-1, count: {count} }}")
    }

    fn provider_with(&self, policy: RetryPolicy) -> Arc<dyn Provider> {
        let credentials = Credentials {
            access_key_id: self.moto.access_key().into(),
            secret_access_key: Secret::new(self.moto.secret_key()),
            session_token: None,
            source: "the conformance suite".into(),
        };
        Arc::new(Aws::new(AwsConfig { credentials, region: "us-east-1".into(), endpoint: self.proxy.url() }, policy).unwrap())
    }

    fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    fn cli_env(&self) -> Vec<(&'static str, String)> {
        through_proxy(self.moto.env(), &self.moto.url(), &self.proxy)
    }

    fn pool(&self) -> Vec<IpAddr> {
        addresses(10)
    }

    fn inventory(&self, name: &str) -> Inventory {
        let inv = self.moto.inventory();
        let prefix = format!("sfuctl-{name}");
        let ours = |v: &Value| v["tags"]["sfuctl"] == name;
        let mut out = Inventory::default();
        for i in inv["instances"].as_array().into_iter().flatten().filter(|i| ours(i) && i["state"] != "terminated") {
            out.servers.push(HeldServer {
                name: i["tags"]["Name"].as_str().unwrap_or_default().into(),
                id: i["id"].as_str().unwrap_or_default().into(),
                ipv4: i["ip"].as_str().map(|a| a.parse().unwrap()),
            });
        }
        for g in inv["groups"].as_array().into_iter().flatten().filter(|g| ours(g) || g["name"] == prefix.as_str()) {
            let inbound = rule_lines(g["ingress"].as_array().into_iter().flatten().map(|p| {
                let port = |k: &str| p[k].as_u64().unwrap_or(0) as u16;
                let mut sources: Vec<String> = p["IpRanges"].as_array().into_iter().flatten().filter_map(|r| r["CidrIp"].as_str().map(String::from)).collect();
                sources.extend(p["Ipv6Ranges"].as_array().into_iter().flatten().filter_map(|r| r["CidrIpv6"].as_str().map(String::from)));
                (p["IpProtocol"].as_str().unwrap_or_default().to_string(), port("FromPort"), port("ToPort"), sources)
            }));
            out.firewalls.push(HeldFirewall { id: g["id"].as_str().unwrap_or_default().into(), name: g["name"].as_str().unwrap_or_default().into(), inbound });
        }
        out.keys = inv["keys"].as_array().into_iter().flatten().filter(|k| ours(k) || k["name"] == prefix.as_str()).map(|k| k["name"].as_str().unwrap().into()).collect();
        out.servers.sort();
        out
    }

    fn call(&self, call: Call, _owner: &Owner) -> Match {
        match call {
            Call::ListServers => Match::new("POST", "/").body(&["Action=DescribeInstances&", "Filter.1.Name=tag%3Asfuctl"]),
            Call::CreateServer => Match::new("POST", "/").body(&["Action=RunInstances&"]),
            Call::RegisterKey => Match::new("POST", "/").body(&["Action=ImportKeyPair&"]),
            Call::CreateFirewall => Match::new("POST", "/").body(&["Action=CreateSecurityGroup&"]),
            Call::DeleteServer => Match::new("POST", "/").body(&["Action=TerminateInstances&"]),
            Call::DeleteFirewall => Match::new("POST", "/").body(&["Action=DeleteSecurityGroup&"]),
        }
    }

    fn throttled(&self) -> Reply {
        Reply::xml(503, &EC2_ERROR.replace("{code}", "RequestLimitExceeded").replace("{message}", "Request limit exceeded."))
    }

    fn server_error(&self) -> Reply {
        Reply::xml(500, &EC2_ERROR.replace("{code}", "InternalError").replace("{message}", "An internal error has occurred."))
    }

    fn plant_foreign(&self) -> String {
        self.moto.run_foreign_instance()
    }

    fn holds_server(&self, id: &str) -> bool {
        self.moto.inventory()["instances"].as_array().into_iter().flatten().any(|i| i["id"] == id && i["state"] != "terminated")
    }

    fn owner_filter(&self) -> &'static [&'static str] {
        // Every filter of DescribeInstances (the owner tag and the live states).
        &["Filter."]
    }
}

// ------------------------------------------------------------------------------------------------ the tests

#[tokio::test]
async fn digitalocean_conforms() {
    let fake = DoHarness::start("0.3");
    run_suite(&fake).await;
}

/// The same with a firewall that takes longer to apply to a new droplet than the droplet takes to boot (DO's
/// `pending_changes` can outlast the boot): a server added to an unchanged firewall must not be returned (and
/// deployed to) before the firewall covers it.
#[tokio::test]
async fn digitalocean_conforms_with_a_slow_firewall() {
    let fake = DoHarness::start("1.5");
    run_suite(&fake).await;
}

#[tokio::test]
async fn aws_conforms() {
    let fake = AwsHarness::start();
    run_suite(&fake).await;
}

// ------------------------------------------------------------------------------------------------ Linode

/// The Linode fake (`tests/fakes/linode`) behind a fault proxy. Its own drop asserts that no request broke the
/// OpenAPI document. Its create limit (10 per 30 s) is the real one; the suite creates far fewer.
struct LinodeHarness {
    proxy: FaultProxy,
    fake: LinodeFake,
}

impl LinodeHarness {
    /// An instance boots in 0.5 s (`provisioning`, then `booting`), so the engine's waits are exercised.
    fn start() -> Self {
        Self::start_with(&["--boot-delay", "0.5"])
    }

    /// A fake with these flags after its address pool (a later `--address-pool` wins).
    fn start_with(args: &[&str]) -> Self {
        let pool = pool(10);
        let fake = LinodeFake::start_with(&[&["--address-pool", pool.as_str()], args].concat());
        Self { proxy: FaultProxy::start(socket_of(&fake.url())), fake }
    }
}

impl CloudFake for LinodeHarness {
    fn label(&self) -> &'static str {
        "li"
    }

    fn provider_yaml(&self, count: u32) -> String {
        format!("{{ kind: linode, region: eu-central, size: g6-nanode-1, count: {count} }}")
    }

    fn provider_with(&self, policy: RetryPolicy) -> Arc<dyn Provider> {
        Arc::new(Linode::new(&format!("{}/v4", self.proxy.url()), Secret::new(self.fake.token()), policy).unwrap())
    }

    fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    fn cli_env(&self) -> Vec<(&'static str, String)> {
        through_proxy(self.fake.env(), &self.fake.url(), &self.proxy)
    }

    fn pool(&self) -> Vec<IpAddr> {
        addresses(10)
    }

    fn inventory(&self, name: &str) -> Inventory {
        let state = self.fake.get("/_fake/state");
        let (tag, label) = (format!("sfuctl:{name}"), format!("sfuctl-{name}"));
        let tagged = |v: &Value| v["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag.as_str()));
        let list = |key: &str| state[key].as_array().cloned().unwrap_or_default();
        let mut inv = Inventory::default();
        for i in list("instances").iter().filter(|i| tagged(i)) {
            let ipv4 = i["ipv4"].as_array().and_then(|a| a.first()).and_then(|a| a.as_str()).map(|a| a.parse().unwrap());
            inv.servers.push(HeldServer { name: i["label"].as_str().unwrap().into(), id: i["id"].to_string(), ipv4 });
        }
        for f in list("firewalls").iter().filter(|f| f["label"] == label.as_str() || tagged(f)) {
            let inbound = rule_lines(f["rules"]["inbound"].as_array().into_iter().flatten().flat_map(|r| {
                let mut sources: Vec<String> = r["addresses"]["ipv4"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)).collect();
                sources.extend(r["addresses"]["ipv6"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(String::from)));
                let protocol = r["protocol"].as_str().unwrap_or_default().to_string();
                // `ports` may be a comma list; left out, it means every port.
                let ports = r["ports"].as_str().unwrap_or("1-65535").to_string();
                ports.split(',').map(|p| port_range(p.trim())).map(|(a, b)| (protocol.clone(), a, b, sources.clone())).collect::<Vec<_>>()
            }));
            inv.firewalls.push(HeldFirewall { id: f["id"].to_string(), name: f["label"].as_str().unwrap_or_default().into(), inbound });
        }
        // `ssh_key: inline`: nothing is registered, but a key labelled like the deployment would be ours.
        inv.keys = list("ssh_keys").iter().filter(|k| k["label"] == label.as_str()).map(|k| k["label"].as_str().unwrap().into()).collect();
        inv.servers.sort();
        inv
    }

    fn call(&self, call: Call, _owner: &Owner) -> Match {
        match call {
            // The tag filter travels in the X-Filter header: the path is enough.
            Call::ListServers => Match::new("GET", "/v4/linode/instances"),
            Call::CreateServer => Match::new("POST", "/v4/linode/instances"),
            Call::RegisterKey => Match::new("POST", "/v4/profile/sshkeys"),
            Call::CreateFirewall => Match::new("POST", "/v4/networking/firewalls"),
            Call::DeleteServer => Match::new("DELETE", "/v4/linode/instances/*"),
            Call::DeleteFirewall => Match::new("DELETE", "/v4/networking/firewalls/*"),
        }
    }

    fn throttled(&self) -> Reply {
        Reply::json(429, r#"{"errors":[{"reason":"Too many requests"}]}"#).header("Retry-After", "1")
    }

    fn server_error(&self) -> Reply {
        Reply::json(500, r#"{"errors":[{"reason":"Internal Server Error"}]}"#)
    }

    fn plant_foreign(&self) -> String {
        let body = serde_json::json!({ "label": "example.com", "region": "eu-central", "type": "g6-nanode-1", "image": "linode/ubuntu24.04", "root_pass": "Someone-Elses-Pass-9271!", "tags": ["web"] });
        self.fake.oob("POST", "/v4/linode/instances", Some(&body))["id"].to_string()
    }

    fn holds_server(&self, id: &str) -> bool {
        self.fake.get("/_fake/state")["instances"].as_array().into_iter().flatten().any(|i| i["id"].to_string().as_str() == id)
    }

    fn owner_filter(&self) -> &'static [&'static str] {
        &["X-Filter"]
    }
}

#[tokio::test]
async fn linode_conforms() {
    let fake = LinodeHarness::start();
    run_suite(&fake).await;
}

// ------------------------------------------------------------------------------------------------ Vultr

/// The Vultr fake (`tests/fakes/vultr`) behind a fault proxy. Its own drop asserts that no request broke Vultr's
/// OpenAPI document or the rules it states in prose.
struct VultrHarness {
    proxy: FaultProxy,
    fake: VultrFake,
}

impl VultrHarness {
    /// An instance boots in 0.5 s and is locked (refusing deletes) for the second half of that.
    fn start() -> Self {
        Self::start_with(&["--boot-delay", "0.5"])
    }

    /// A fake with these flags after its address pool (a later `--address-pool` wins).
    fn start_with(args: &[&str]) -> Self {
        let pool = pool(10);
        let fake = VultrFake::start_with(&[&["--address-pool", pool.as_str()], args].concat());
        Self { proxy: FaultProxy::start(socket_of(&fake.url())), fake }
    }
}

impl CloudFake for VultrHarness {
    fn label(&self) -> &'static str {
        "vultr"
    }

    fn provider_yaml(&self, count: u32) -> String {
        format!("{{ kind: vultr, region: fra, size: vc2-1c-1gb, count: {count} }}")
    }

    fn provider_with(&self, policy: RetryPolicy) -> Arc<dyn Provider> {
        // Small pages, so the suite's lists follow cursors too.
        Arc::new(Vultr::new(&format!("{}/v2", self.proxy.url()), Secret::new(self.fake.api_key()), policy).unwrap().with_page_size(3))
    }

    fn proxy(&self) -> &FaultProxy {
        &self.proxy
    }

    fn cli_env(&self) -> Vec<(&'static str, String)> {
        through_proxy(self.fake.env(), &self.fake.url(), &self.proxy)
    }

    fn pool(&self) -> Vec<IpAddr> {
        addresses(10)
    }

    fn inventory(&self, name: &str) -> Inventory {
        let state = self.fake.get("/_fake/state");
        let (tag, marked) = (format!("sfuctl:{name}"), format!("sfuctl-{name}"));
        let list = |key: &str| state[key].as_array().cloned().unwrap_or_default();
        let mut inv = Inventory::default();
        for i in list("instances").iter().filter(|i| i["tags"].as_array().is_some_and(|t| t.iter().any(|t| t == tag.as_str()))) {
            let ipv4 = i["main_ip"].as_str().filter(|a| *a != "0.0.0.0").map(|a| a.parse().unwrap());
            inv.servers.push(HeldServer { name: i["label"].as_str().unwrap().into(), id: i["id"].as_str().unwrap().into(), ipv4 });
        }
        for g in list("firewall_groups").iter().filter(|g| g["description"] == marked.as_str()) {
            let inbound = rule_lines(g["rules"].as_array().into_iter().flatten().map(|r| {
                let port = r["port"].as_str().unwrap_or_default();
                let (start, end) = port.split_once(':').map_or_else(|| (port.parse().unwrap_or(0), port.parse().unwrap_or(0)), |(a, b)| (a.parse().unwrap(), b.parse().unwrap()));
                let source = format!("{}/{}", r["subnet"].as_str().unwrap_or_default(), r["subnet_size"]);
                (r["protocol"].as_str().unwrap_or_default().to_string(), start, end, vec![source])
            }));
            inv.firewalls.push(HeldFirewall { id: g["id"].as_str().unwrap_or_default().into(), name: marked.clone(), inbound });
        }
        inv.keys = list("ssh_keys").iter().filter(|k| k["name"] == marked.as_str()).map(|k| k["name"].as_str().unwrap().into()).collect();
        inv.servers.sort();
        inv
    }

    fn call(&self, call: Call, _owner: &Owner) -> Match {
        match call {
            // Every instance is listed (the tag filter is deprecated): the owner is not in the request.
            Call::ListServers => Match::new("GET", "/v2/instances"),
            Call::CreateServer => Match::new("POST", "/v2/instances"),
            Call::RegisterKey => Match::new("POST", "/v2/ssh-keys"),
            Call::CreateFirewall => Match::new("POST", "/v2/firewalls"),
            Call::DeleteServer => Match::new("DELETE", "/v2/instances/*"),
            Call::DeleteFirewall => Match::new("DELETE", "/v2/firewalls/*"),
        }
    }

    fn throttled(&self) -> Reply {
        Reply::json(429, r#"{"error":"rate limit exceeded","status":429}"#).header("Retry-After", "1")
    }

    fn server_error(&self) -> Reply {
        Reply::json(500, r#"{"error":"Internal server error.","status":500}"#)
    }

    fn plant_foreign(&self) -> String {
        let body = serde_json::json!({ "label": "example.com", "region": "fra", "plan": "vc2-1c-1gb", "os_id": 2284, "tags": ["web"] });
        self.fake.oob("POST", "/v2/instances", Some(&body))["instance"]["id"].as_str().unwrap().to_string()
    }

    fn holds_server(&self, id: &str) -> bool {
        self.fake.get("/_fake/state")["instances"].as_array().into_iter().flatten().any(|i| i["id"] == id)
    }

    fn owner_filter(&self) -> &'static [&'static str] {
        // Every instance is listed already (Vultr's tag filter is deprecated): nothing to strip.
        &[]
    }
}

#[tokio::test]
async fn vultr_conforms() {
    let fake = VultrHarness::start();
    run_suite(&fake).await;
}

// ------------------------------------------------------------------------------------------------ issue 14

// Faults at every step, interruptions, two runs at once and lost state reuse these harnesses (child modules see
// them as they are); docs/reliability.md says what each proves.
#[path = "concurrent_up.rs"]
mod concurrent_up;
#[path = "fault_matrix.rs"]
mod fault_matrix;
#[path = "interruptions.rs"]
mod interruptions;
#[path = "lost_state.rs"]
mod lost_state;
