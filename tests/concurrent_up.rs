//! Two `up` of the same spec at once from two state directories (two machines: no lock between them), on every
//! cloud: both runs succeed, and the fake ends with exactly `count` servers, one firewall and the key where one is
//! registered (issue 14). Each run is the real engine with a provider and a ledger of its own, as two `sfuctl`
//! processes with two state directories would be; several rounds, since who wins a race differs from round to round.

use std::time::Instant;

use super::{AwsHarness, CloudFake, Deployment, DoHarness, LinodeHarness, VultrHarness, names};

/// Rounds per cloud, each from nothing and back to nothing.
const ROUNDS: usize = 4;

/// Runs `ROUNDS` rounds of two `up` at once with `count` servers, each followed by `down`.
async fn two_ups_at_once(fake: &dyn CloudFake, count: u32) {
    let started = Instant::now();
    for round in 0..ROUNDS {
        let mut dep = Deployment::new(fake, &format!("race{round}"));
        let spec = dep.spec(count, None);
        let (a, b) = tokio::join!(dep.converge(&spec, |_| Ok(())), dep.converge(&spec, |_| Ok(())));
        let wanted: Vec<String> = (1..=count).map(|i| dep.server_name(i)).collect();
        for (run, outcome) in [("first", a), ("second", b)] {
            let c = outcome.unwrap_or_else(|e| panic!("round {round}: the {run} run failed: {e:#}\n{}", fake.proxy().log_text()));
            assert_eq!(names(&c.servers), wanted, "round {round}: the {run} run returns the deployment's servers");
        }
        let inv = dep.inventory();
        assert_eq!(inv.servers.iter().map(|s| s.name.clone()).collect::<Vec<_>>(), wanted, "round {round}: exactly `count` servers: {inv:#?}");
        assert_eq!(inv.firewalls.len(), 1, "round {round}: exactly one firewall: {inv:#?}");
        assert_eq!(inv.keys.len(), usize::from(dep.registers_key()), "round {round}: {inv:#?}");
        let again = dep.converge(&spec, |_| Ok(())).await.unwrap_or_else(|e| panic!("round {round}: a third run: {e:#}"));
        assert_eq!(again.stats.mutating, 0, "round {round}: settled: {:?}", again.report);
        let (teardown, _) = dep.destroy().await;
        assert!(teardown.failed.is_empty(), "{teardown:?}");
        assert_eq!(dep.inventory().lines(), Vec::<String>::new());
        dep.down = true;
    }
    eprintln!("[race {}] {ROUNDS} rounds of two runs at once with count {count}: {:.1?}", fake.label(), started.elapsed());
}

#[tokio::test]
async fn two_ups_at_once_on_digitalocean() {
    two_ups_at_once(&DoHarness::start_with(&["--boot-delay", "0.5"]), 2).await;
}

#[tokio::test]
async fn two_ups_at_once_on_linode() {
    two_ups_at_once(&LinodeHarness::start_with(&["--boot-delay", "0.5"]), 2).await;
}

#[tokio::test]
async fn two_ups_at_once_on_vultr() {
    two_ups_at_once(&VultrHarness::start_with(&["--boot-delay", "0.5"]), 2).await;
}

#[tokio::test]
async fn two_ups_at_once_on_aws() {
    two_ups_at_once(&AwsHarness::start(), 2).await;
}
