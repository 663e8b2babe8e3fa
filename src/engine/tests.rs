//! The engine driven by an in-memory provider: create, converge, scale down, lost answers, pacing and busy
//! deletes, without any network.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::apply::{Inputs, Ledger, Saved, converge, create_server};
use super::fake::Fake;
use super::teardown::{delete_firewall, delete_server, destroy};
use super::{Current, Timings, refresh};
use crate::http::RetryPolicy;
use crate::owner::Owner;
use crate::provider::catalog::ProviderData;
use crate::provider::{FirewallId, Provider, ServerRequest};
use crate::render::Renderer;
use crate::secret::Secret;
use crate::spec::Spec;

fn spec(count: u32) -> Spec {
    Spec::parse(&format!(
        "name: demo\nprovider: {{ kind: digitalocean, region: fra1, count: {count} }}\nssh: {{ allow_from: [203.0.113.7/32] }}\nsfu: {{ kind: janus, rtc_ports: 40000-41000 }}\n"
    ))
    .unwrap()
}

fn quick() -> Timings {
    Timings { server: Duration::from_secs(5), firewall: Duration::from_secs(5), ssh: Duration::from_secs(5), busy: Duration::from_secs(5) }
}

struct Run {
    saved: Arc<Mutex<Vec<Saved>>>,
}

impl Run {
    fn new() -> Self {
        Self { saved: Arc::new(Mutex::new(Vec::new())) }
    }

    fn ledger(&self) -> Ledger {
        let saved = Arc::clone(&self.saved);
        Arc::new(move |s| {
            saved.lock().unwrap().push(s);
            Ok(())
        })
    }

    async fn converge(&self, provider: &Arc<dyn Provider>, spec: &Spec, confirm_ok: bool) -> anyhow::Result<(Vec<crate::provider::Server>, super::CloudReport)> {
        let renderer = Renderer::new(None).unwrap();
        let secret = Secret::new(String::from("s3cret-s3cret-s3cret-s3cret-s3cret"));
        let timings = quick();
        let inputs = Inputs {
            spec,
            base_dir: std::path::Path::new("."),
            renderer: &renderer,
            secret: &secret,
            public_key: Some("ssh-ed25519 AAAA test".into()),
            timings: &timings,
            ledger: self.ledger(),
            saved_ids: vec![],
        };
        converge(provider, &inputs, |_| if confirm_ok { Ok(()) } else { Err(anyhow::anyhow!("not confirmed")) }).await
    }
}

fn mutating(calls: &[String]) -> Vec<String> {
    calls.iter().filter(|c| !c.starts_with("list_") && !c.starts_with("get_")).cloned().collect()
}

#[tokio::test]
async fn creates_everything_then_converges_with_no_change() {
    let fake = Arc::new(Fake { boot_after: 2, ..Fake::default() });
    let provider: Arc<dyn Provider> = fake.clone();
    let run = Run::new();
    let (servers, report) = run.converge(&provider, &spec(2), true).await.unwrap();
    assert_eq!(servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["sfuctl-demo-1", "sfuctl-demo-2"]);
    assert!(servers.iter().all(|s| s.is_up()), "the engine waited until they ran with an address");
    assert!(report.key_created && report.firewall == "created" && report.servers_created.len() == 2);
    let order = mutating(&fake.calls());
    assert_eq!(order[..2], ["ensure_ssh_key".to_string(), "put_firewall".to_string()], "key and firewall before any server: {order:?}");
    let saved = run.saved.lock().unwrap().clone();
    assert_eq!(saved.iter().filter(|s| matches!(s, Saved::Server(..))).count(), 2, "every ID saved: {saved:?}");

    let before = fake.calls().len();
    let (_, report) = Run::new().converge(&provider, &spec(2), true).await.unwrap();
    assert!(!report.changed(), "{report:?}");
    assert!(mutating(&fake.calls()[before..]).is_empty(), "a converged run only reads");
}

#[tokio::test]
async fn creating_asks_first_and_a_converged_run_never_asks() {
    let fake = Arc::new(Fake::default());
    let provider: Arc<dyn Provider> = fake.clone();
    let refused = Run::new().converge(&provider, &spec(1), false).await.unwrap_err();
    assert!(refused.to_string().contains("not confirmed"));
    assert!(mutating(&fake.calls()).is_empty(), "nothing is created without confirmation: {:?}", fake.calls());
    Run::new().converge(&provider, &spec(1), true).await.unwrap();
    let (servers, report) = Run::new().converge(&provider, &spec(1), false).await.expect("a converged run is not asked");
    assert_eq!(servers.len(), 1);
    assert!(!report.changed(), "{report:?}");
}

#[tokio::test]
async fn scaling_down_asks_first_and_deletes_the_highest_index() {
    let fake = Arc::new(Fake::default());
    let provider: Arc<dyn Provider> = fake.clone();
    Run::new().converge(&provider, &spec(3), true).await.unwrap();
    let refused = Run::new().converge(&provider, &spec(1), false).await.unwrap_err();
    assert!(refused.to_string().contains("not confirmed"));
    assert_eq!(fake.state.lock().unwrap().servers.len(), 3, "nothing deleted without confirmation");
    let (servers, report) = Run::new().converge(&provider, &spec(1), true).await.unwrap();
    assert_eq!(report.servers_deleted, ["sfuctl-demo-2", "sfuctl-demo-3"]);
    assert_eq!(servers.len(), 1);
}

#[tokio::test]
async fn a_lost_create_answer_is_looked_up_not_doubled() {
    let owner = Owner::new("demo");
    let req = ServerRequest::for_spec(&spec(1), 1, vec![], None).unwrap();
    let policy = RetryPolicy { base_delay: Duration::from_millis(1), ..RetryPolicy::default() };

    // The create happened but its answer was lost: found by name, not created again.
    let fake = Fake::default();
    fake.state.lock().unwrap().lost_creates.insert("sfuctl-demo-1".into(), vec![true]);
    let server = create_server(&fake, &owner, &req, &policy).await.unwrap();
    assert_eq!(server.name, "sfuctl-demo-1");
    assert_eq!(fake.state.lock().unwrap().servers.len(), 1);
    assert_eq!(mutating(&fake.calls()), ["create_server sfuctl-demo-1"]);

    // It did not happen: looked for, then created once more.
    let fake = Fake::default();
    fake.state.lock().unwrap().lost_creates.insert("sfuctl-demo-1".into(), vec![false]);
    create_server(&fake, &owner, &req, &policy).await.unwrap();
    assert_eq!(fake.state.lock().unwrap().servers.len(), 1);
    assert_eq!(fake.calls(), ["create_server sfuctl-demo-1", "list_servers", "create_server sfuctl-demo-1"]);

    // Lost every time: bounded, and the error says the create may have happened.
    let fake = Fake::default();
    fake.state.lock().unwrap().lost_creates.insert("sfuctl-demo-1".into(), vec![false; 10]);
    let err = create_server(&fake, &owner, &req, &policy).await.unwrap_err();
    assert!(crate::http::maybe_applied(&err));
    assert_eq!(fake.calls().iter().filter(|c| c.starts_with("create")).count(), 3);
}

#[tokio::test]
async fn a_name_taken_by_another_run_is_taken_over_and_one_taken_by_someone_else_is_an_error() {
    let owner = Owner::new("demo");
    let req = ServerRequest::for_spec(&spec(1), 1, vec![], None).unwrap();
    let policy = RetryPolicy { base_delay: Duration::from_millis(1), ..RetryPolicy::default() };

    // Another run created sfuctl-demo-1 a moment ago (tagged, sfuctl's name): taken over, not doubled.
    let fake = Fake::default();
    fake.state.lock().unwrap().unique_names = true;
    let theirs = create_server(&fake, &owner, &req, &policy).await.unwrap();
    let server = create_server(&fake, &owner, &req, &policy).await.unwrap();
    assert_eq!(server.id, theirs.id);
    assert_eq!(fake.state.lock().unwrap().servers.len(), 1);

    // Someone else's server holds the name (no owner tag): never taken over; a clear error after 3 creates.
    let fake = Fake::default();
    fake.state.lock().unwrap().unique_names = true;
    let mut foreign = ServerRequest::for_spec(&spec(1), 1, vec![], None).unwrap();
    foreign.tags = vec!["web".into()];
    create_server(&fake, &owner, &foreign, &policy).await.unwrap();
    let err = create_server(&fake, &owner, &req, &policy).await.unwrap_err();
    let text = crate::error::render(&err);
    assert!(text.contains("that sfuctl does not own") && text.contains("hint: rename or delete that server"), "{text}");
    assert_eq!(fake.calls().iter().filter(|c| c.starts_with("create")).count(), 1 + 3);
}

#[tokio::test]
async fn a_busy_firewall_is_deleted_once_it_is_free_and_a_stuck_one_fails_with_a_hint() {
    let fake = Fake::default();
    fake.state.lock().unwrap().busy_deletes = 2;
    delete_firewall(&fake, &FirewallId("fw".into()), "sfuctl-demo", Duration::from_secs(5)).await.unwrap();
    assert_eq!(fake.calls(), ["delete_firewall"; 3]);

    let fake = Fake::default();
    fake.state.lock().unwrap().busy_deletes = u32::MAX;
    let err = delete_firewall(&fake, &FirewallId("fw".into()), "sfuctl-demo", Duration::from_millis(100)).await.unwrap_err();
    let text = crate::error::render(&err);
    assert!(text.contains("cannot delete firewall sfuctl-demo") && text.contains("still in use") && text.contains("run `sfuctl down` again"), "{text}");
}

#[tokio::test]
async fn a_locked_server_delete_is_waited_out_by_down_and_by_a_scale_down() {
    let fake = Arc::new(Fake::default());
    let provider: Arc<dyn Provider> = fake.clone();
    Run::new().converge(&provider, &spec(2), true).await.unwrap();
    // Scale down: server 2's delete is refused twice, then done.
    fake.state.lock().unwrap().locked_deletes = 2;
    let (servers, report) = Run::new().converge(&provider, &spec(1), true).await.unwrap();
    assert_eq!((servers.len(), report.servers_deleted.as_slice()), (1, ["sfuctl-demo-2".to_string()].as_slice()));
    assert_eq!(fake.calls().iter().filter(|c| c.starts_with("delete_server")).count(), 3);
    // down: the remaining server is locked once more, then goes; nothing fails.
    let owner = Owner::new("demo");
    let current = refresh(provider.as_ref(), ProviderData::get(spec(1).provider.kind), &owner, Some("ssh-ed25519 AAAA test")).await.unwrap();
    fake.state.lock().unwrap().locked_deletes = 1;
    let teardown = destroy(Arc::clone(&provider), &owner, &current, &quick()).await;
    assert!(teardown.failed.is_empty(), "{teardown:?}");
    assert!(fake.state.lock().unwrap().servers.is_empty());
    // One that stays locked fails with a hint, after the busy timeout.
    Run::new().converge(&provider, &spec(1), true).await.unwrap();
    let current = refresh(provider.as_ref(), ProviderData::get(spec(1).provider.kind), &owner, Some("ssh-ed25519 AAAA test")).await.unwrap();
    fake.state.lock().unwrap().locked_deletes = u32::MAX;
    let err = delete_server(provider.as_ref(), &current.servers[0].id, &current.servers[0].name, Duration::from_millis(100)).await.unwrap_err();
    let text = crate::error::render(&err);
    assert!(text.contains("cannot delete server sfuctl-demo-1") && text.contains("currently locked") && text.contains("run `sfuctl down` again"), "{text}");
}

#[tokio::test]
async fn down_removes_servers_firewall_and_our_key_and_leaves_nothing() {
    let fake = Arc::new(Fake::default());
    let provider: Arc<dyn Provider> = fake.clone();
    let s = spec(2);
    Run::new().converge(&provider, &s, true).await.unwrap();
    let owner = Owner::new("demo");
    let current = refresh(provider.as_ref(), ProviderData::get(s.provider.kind), &owner, Some("ssh-ed25519 AAAA test")).await.unwrap();
    fake.state.lock().unwrap().busy_deletes = 1;
    let teardown = destroy(Arc::clone(&provider), &owner, &current, &quick()).await;
    assert!(teardown.failed.is_empty(), "{teardown:?}");
    assert_eq!(teardown.deleted.len(), 4, "{teardown:?}");
    {
        let state = fake.state.lock().unwrap();
        assert!(state.servers.is_empty() && state.firewall.is_none() && state.keys.is_empty());
    }
    let after = refresh(provider.as_ref(), ProviderData::get(s.provider.kind), &owner, Some("k")).await.unwrap();
    assert!(matches!(after, Current { ref servers, firewall: None, key: None, ref extra_firewalls, .. } if extra_firewalls.is_empty() && servers.is_empty()));
}

#[tokio::test]
async fn a_partial_failure_keeps_what_was_made_and_the_next_run_finishes() {
    let fake = Arc::new(Fake::default());
    let provider: Arc<dyn Provider> = fake.clone();
    // Server 2's create is lost three times over: up fails, server 1 exists and is saved.
    fake.state.lock().unwrap().lost_creates.insert("sfuctl-demo-2".into(), vec![false; 3]);
    let run = Run::new();
    let err = run.converge(&provider, &spec(2), true).await.unwrap_err();
    assert!(format!("{err:#}").contains("run `up` again to continue"), "{err:#}");
    let saved = run.saved.lock().unwrap().clone();
    assert!(saved.iter().any(|s| matches!(s, Saved::Firewall(_))), "{saved:?}");
    assert!(saved.contains(&Saved::Server("sfuctl-demo-1".into(), "1".into())), "{saved:?}");
    let (servers, report) = Run::new().converge(&provider, &spec(2), true).await.unwrap();
    assert_eq!(servers.len(), 2);
    assert!(!report.key_created && report.firewall == "unchanged", "{report:?}");
}

fn planted(id: &str, name: &str, tags: &[&str]) -> crate::provider::Server {
    use crate::provider::{Server, ServerId, ServerStatus};
    Server {
        id: ServerId(id.into()),
        name: name.into(),
        status: ServerStatus::Running,
        public_ipv4: Some([198, 51, 100, 9].into()),
        public_ipv6: None,
        tags: tags.iter().map(|t| t.to_string()).collect(),
        region: None,
    }
}

#[tokio::test]
async fn servers_that_fail_the_ownership_check_are_reported_and_never_deleted() {
    let fake = Arc::new(Fake::default());
    let provider: Arc<dyn Provider> = fake.clone();
    Run::new().converge(&provider, &spec(2), true).await.unwrap();
    {
        let mut state = fake.state.lock().unwrap();
        state.unfiltered = true;
        // Someone else's droplet, returned by a list that ignored its filter; one tagged like ours but named
        // otherwise; one named like ours without the tag.
        state.servers.insert("3164444".into(), planted("3164444", "example.com", &["web"]));
        state.servers.insert("900".into(), planted("900", "mail", &["sfuctl:demo"]));
        state.servers.insert("901".into(), planted("901", "sfuctl-demo-3", &["prod"]));
    }
    let owner = Owner::new("demo");
    let data = ProviderData::get(spec(1).provider.kind);
    let current = refresh(provider.as_ref(), data, &owner, None).await.unwrap();
    assert_eq!(current.servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["sfuctl-demo-1", "sfuctl-demo-2"]);
    assert_eq!(current.foreign.len(), 3, "{:?}", current.foreign);
    assert!(current.foreign.iter().any(|f| f.starts_with("server example.com (3164444): it does not carry the tag sfuctl:demo")), "{:?}", current.foreign);
    // A scale-down deletes only sfuctl's server 2.
    let (_, report) = Run::new().converge(&provider, &spec(1), true).await.unwrap();
    assert_eq!(report.servers_deleted, ["sfuctl-demo-2"]);
    // down deletes only sfuctl-demo-1.
    let current = refresh(provider.as_ref(), data, &owner, None).await.unwrap();
    let teardown = destroy(Arc::clone(&provider), &owner, &current, &quick()).await;
    assert!(teardown.failed.is_empty(), "{teardown:?}");
    let left: Vec<String> = fake.state.lock().unwrap().servers.keys().cloned().collect();
    assert_eq!(left, ["3164444", "900", "901"], "nothing that failed the check was deleted");
    assert!(!fake.calls().iter().any(|c| c.contains("3164444") || c.contains(" 900") || c.contains(" 901")), "{:?}", fake.calls());
    // A tagged server whose ID sfuctl saved is its own, whatever its name.
    let current = super::refresh::refresh_with(provider.as_ref(), data, &owner, None, &["900".into()]).await.unwrap();
    assert_eq!(current.servers.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(), ["mail"]);
}

#[tokio::test]
async fn duplicates_of_one_name_keep_the_lowest_id_on_every_run() {
    let fake = Arc::new(Fake::default());
    let provider: Arc<dyn Provider> = fake.clone();
    Run::new().converge(&provider, &spec(1), true).await.unwrap();
    let first = fake.state.lock().unwrap().servers.keys().next().cloned().unwrap();
    // Another machine created the same name at the same time (IDs 10 and 9: 9 sorts before 10 as a number).
    fake.state.lock().unwrap().servers.insert("10".into(), planted("10", "sfuctl-demo-1", &["sfuctl:demo"]));
    fake.state.lock().unwrap().servers.insert("9".into(), planted("9", "sfuctl-demo-1", &["sfuctl:demo"]));
    let owner = Owner::new("demo");
    let dups = super::refresh::duplicates(&owner, &fake.state.lock().unwrap().servers.values().cloned().collect::<Vec<_>>());
    let mut ids: Vec<String> = dups.iter().map(|s| s.id.0.clone()).collect();
    ids.sort();
    assert_eq!(ids, ["10", "9"], "the lowest ID ({first}) is kept");
    // up deletes the duplicates without asking, and keeps exactly one.
    let (servers, report) = Run::new().converge(&provider, &spec(1), false).await.unwrap();
    assert_eq!(servers.iter().map(|s| s.id.0.as_str()).collect::<Vec<_>>(), [first.as_str()]);
    assert_eq!(report.servers_deleted.len(), 2, "{report:?}");
    assert_eq!(fake.state.lock().unwrap().servers.keys().cloned().collect::<Vec<_>>(), [first]);
}
