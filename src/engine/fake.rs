//! An in-memory [`Provider`] for the engine's unit tests: servers that come up after a number of reads,
//! a firewall that is busy for a number of deletes, scripted create failures, and a log of every call.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Mutex;

use anyhow::Result;

use crate::error::UserError;
use crate::http::{ApiFailure, RequestStats};
use crate::owner::Owner;
use crate::provider::{
    Busy, Firewall, FirewallId, FirewallRequest, Provider, ProviderFuture, Server, ServerId, ServerRequest, ServerStatus, SshKey, SshKeyId,
};

/// What the fake holds and how it misbehaves.
#[derive(Default)]
pub struct State {
    /// Servers by ID.
    pub servers: BTreeMap<String, Server>,
    /// Reads left before a new server shows up running with an address.
    pub boot_reads: BTreeMap<String, u32>,
    /// The firewall, when it exists.
    pub firewall: Option<Firewall>,
    /// Registered keys.
    pub keys: Vec<SshKey>,
    /// Per server name, creates that fail with a lost answer after (`true`) or before (`false`) making it.
    pub lost_creates: BTreeMap<String, Vec<bool>>,
    /// Deletes of the firewall that answer busy first.
    pub busy_deletes: u32,
    /// Deletes of servers that answer busy first (a server still locked after create), counted across servers.
    pub locked_deletes: u32,
    /// Every call, as `method name`.
    pub calls: Vec<String>,
    /// The list of servers ignores its tag filter (a mock, a proxy or an API fault): every server is listed.
    pub unfiltered: bool,
    /// Server names are unique (Linode labels): a create of a name that exists is refused as
    /// [`crate::provider::NameTaken`].
    pub unique_names: bool,
    next_id: u32,
}

/// The fake provider.
#[derive(Default)]
pub struct Fake {
    /// Its state, for the test to arrange and inspect.
    pub state: Mutex<State>,
    /// Reads a new server takes to come up.
    pub boot_after: u32,
}

impl Fake {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// The calls made so far.
    pub fn calls(&self) -> Vec<String> {
        self.with(|s| s.calls.clone())
    }

    fn read(&self, s: &mut State) {
        let ids: Vec<String> = s.boot_reads.keys().cloned().collect();
        for id in ids {
            let left = s.boot_reads.get_mut(&id).unwrap();
            if *left == 0 {
                s.boot_reads.remove(&id);
                if let Some(server) = s.servers.get_mut(&id) {
                    server.status = ServerStatus::Running;
                    server.public_ipv4 = Some(IpAddr::from([192, 0, 2, id.parse::<u8>().unwrap_or(9)]));
                }
            } else {
                *left -= 1;
            }
        }
    }
}

fn ok<'a, T: Send + 'a>(value: T) -> ProviderFuture<'a, T> {
    Box::pin(async move { Ok(value) })
}

fn lost() -> anyhow::Error {
    UserError::failed("POST /servers returned 500").caused_by(ApiFailure { status: Some(500), code: None, message: "lost".into(), maybe_applied: true }).into()
}

impl Provider for Fake {
    fn name(&self) -> &'static str {
        "Fake"
    }

    fn requests(&self) -> RequestStats {
        self.with(|s| RequestStats { total: s.calls.len() as u64, ..RequestStats::default() })
    }

    fn list_servers<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Server>> {
        ok(self.with(|s| {
            s.calls.push("list_servers".into());
            self.read(s);
            s.servers.values().filter(|v| s.unfiltered || v.tags.contains(&owner.tag())).cloned().collect()
        }))
    }

    fn get_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, Option<Server>> {
        ok(self.with(|s| {
            s.calls.push(format!("get_server {id}"));
            s.servers.get(&id.0).cloned()
        }))
    }

    fn create_server<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, Server> {
        let result: Result<Server> = self.with(|s| {
            s.calls.push(format!("create_server {}", req.name));
            let failure = s.lost_creates.get_mut(&req.name).filter(|l| !l.is_empty()).map(|l| l.remove(0));
            if failure == Some(false) {
                return Err(lost());
            }
            if s.unique_names && s.servers.values().any(|v| v.name == req.name) {
                return Err(UserError::failed("POST /servers returned 400: label must be unique").caused_by(anyhow::Error::new(crate::provider::NameTaken(req.name.clone()))).into());
            }
            s.next_id += 1;
            let id = s.next_id.to_string();
            let server = Server {
                id: ServerId(id.clone()),
                name: req.name.clone(),
                status: ServerStatus::Pending,
                public_ipv4: None,
                public_ipv6: None,
                tags: req.tags.clone(),
                region: Some(req.region.clone()),
            };
            s.servers.insert(id.clone(), server.clone());
            s.boot_reads.insert(id, self.boot_after);
            if failure == Some(true) { Err(lost()) } else { Ok(server) }
        });
        Box::pin(async move { result })
    }

    fn delete_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, ()> {
        let result = self.with(|s| {
            s.calls.push(format!("delete_server {id}"));
            if s.locked_deletes > 0 {
                s.locked_deletes -= 1;
                return Err(anyhow::Error::new(Busy("Server is currently locked".into())));
            }
            s.servers.remove(&id.0);
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn list_firewalls<'a>(&'a self, _owner: &'a Owner) -> ProviderFuture<'a, Vec<Firewall>> {
        ok(self.with(|s| {
            s.calls.push("list_firewalls".into());
            s.firewall.iter().cloned().collect()
        }))
    }

    fn get_firewall<'a>(&'a self, _id: &'a FirewallId) -> ProviderFuture<'a, Option<Firewall>> {
        ok(self.with(|s| s.firewall.clone()))
    }

    fn put_firewall<'a>(&'a self, req: &'a FirewallRequest, _existing: Option<&'a Firewall>) -> ProviderFuture<'a, Firewall> {
        ok(self.with(|s| {
            s.calls.push("put_firewall".into());
            let fw = Firewall {
                id: FirewallId("fw".into()),
                name: req.name.clone(),
                rules: req.rules.clone(),
                other_inbound: vec![],
                ready: true,
                status: "succeeded".into(),
                server_ids: vec![],
                tags: vec![req.owner.tag()],
                outbound_ok: true,
            };
            s.firewall = Some(fw.clone());
            fw
        }))
    }

    fn delete_firewall<'a>(&'a self, _id: &'a FirewallId) -> ProviderFuture<'a, ()> {
        let result: Result<()> = self.with(|s| {
            s.calls.push("delete_firewall".into());
            if s.busy_deletes > 0 {
                s.busy_deletes -= 1;
                return Err(anyhow::Error::new(Busy("still in use".into())));
            }
            s.firewall = None;
            Ok(())
        });
        Box::pin(async move { result })
    }

    fn find_ssh_key<'a>(&'a self, _public_key: &'a str) -> ProviderFuture<'a, Option<SshKey>> {
        ok(self.with(|s| s.keys.first().cloned()))
    }

    fn ensure_ssh_key<'a>(&'a self, name: &'a str, _public_key: &'a str) -> ProviderFuture<'a, (SshKey, bool)> {
        ok(self.with(|s| {
            s.calls.push("ensure_ssh_key".into());
            let key = SshKey { id: SshKeyId("k".into()), fingerprint: "aa:bb".into(), name: name.into() };
            s.keys.push(key.clone());
            (key, true)
        }))
    }

    fn delete_ssh_key<'a>(&'a self, _id: &'a SshKeyId) -> ProviderFuture<'a, ()> {
        self.with(|s| {
            s.calls.push("delete_ssh_key".into());
            s.keys.clear();
        });
        ok(())
    }
}
