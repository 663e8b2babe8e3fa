//! Vultr (API v2): instances tagged `sfuctl:<name>`, one firewall group described `sfuctl-<name>` given to each
//! instance at launch, and the deployment's SSH key registered as `sfuctl-<name>`, found again by its key material.
//!
//! Quirks handled here, each with its reason (sources in shared/cloud-apis-vultr.md):
//! - Firewall groups have only a description and SSH keys only a name (no tags): ownership is the exact
//!   `sfuctl-<name>` there; only instances carry tags.
//! - The `tag` list filter is deprecated and cannot be combined with another filter ("Only one filter per request
//!   is allowed."), and there is no `tags` filter: lists are read whole (cursor paging, `meta.links.next` is the
//!   empty string on the last page, `per_page` at most 500) and filtered here.
//! - Rules are one per IP family and source: `ip_type` `v4`/`v6`, `subnet` + `subnet_size`, a lower-case
//!   `protocol`, and `port` as a string with a colon range (`"40000:41000"`). Rule ids are integers; a rule is
//!   never edited, only added or deleted by id. A group holds at most `max_rule_count` rules. Outbound is not
//!   filtered by a firewall group.
//! - `main_ip` is `"0.0.0.0"` (and `v6_main_ip` empty) until the address is assigned, not absent.
//! - `user_data` is base64. `POST /instances` needs exactly one image source: `os_id`, looked up by name in
//!   `GET /os` (ids change between releases) unless the spec names an id.
//! - An early delete fails with a 500 "Server is currently locked" (or "not currently active"): that passes by
//!   itself, so it is not retried here but returned as [`Busy`] for the engine to wait out. 404 is gone.
//! - Errors are `{"error": "...", "status": N}`, with no error code.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use anyhow::Result;
use base64::Engine as _;
use ipnet::IpNet;
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    Busy, Firewall, FirewallId, FirewallRequest, FirewallRule, Owner, Provider, ProviderFuture, Server, ServerId, ServerRequest,
    ServerStatus, SshKey, SshKeyId, unknown_choice,
};
use crate::error::UserError;
use crate::http::{self, ApiStyle, Auth, Client, Failure, ProviderMessage, RequestStats, RetryPolicy, Secret};
use crate::ports::{PortRange, Protocol};
use crate::provider::catalog::ProviderData;
use crate::spec::ProviderKind;

/// The OS image used when the spec names none (looked up by this name, as Terraform users do).
pub const DEFAULT_OS: &str = "Ubuntu 24.04 LTS x64";

/// The most items Vultr returns per page.
pub const MAX_PAGE_SIZE: u32 = 500;

/// Lists stop after this many pages, whatever the cursor says (a guard against a looping API).
const MAX_PAGES: u32 = 500;

/// The code sfuctl gives Vultr's passing refusals of a delete (Vultr sends no error codes): the transport does
/// not retry them, the provider returns them as [`Busy`].
const PASSING: &str = "sfuctl:passing";

/// How Vultr's API differs from others, for the HTTP client.
#[derive(Clone, Copy, Debug)]
pub struct VultrStyle;

impl ApiStyle for VultrStyle {
    fn title(&self) -> &str {
        "Vultr"
    }

    fn credentials(&self) -> String {
        "$VULTR_API_KEY".into()
    }

    fn parse_error(&self, _status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> Option<ProviderMessage> {
        error_message(body)
    }

    fn transient(&self, status: StatusCode, code: Option<&str>) -> bool {
        code != Some(PASSING) && (status.is_server_error() || status == StatusCode::REQUEST_TIMEOUT)
    }

    fn hint(&self, failure: &Failure<'_>) -> Option<String> {
        let Some(status) = failure.status else {
            return Some(format!("check the network and the Vultr API URL ({}; $VULTR_API_ENDPOINT overrides it)", failure.base_url));
        };
        match status.as_u16() {
            401 => Some(
                "check $VULTR_API_KEY: Vultr did not accept the API key (mistyped, deleted, or restricted to other source IPs under Account > API > Access Control)"
                    .into(),
            ),
            403 => Some("the API key in $VULTR_API_KEY may not do this: use a key of a user with the Manage Servers and Manage Firewall permissions".into()),
            429 => Some(match failure.retry_after {
                Some(after) => format!("Vultr's rate limit (30 requests/s per IP) was hit; it asks to wait {}s: run again later", after.as_secs()),
                None => "Vultr's rate limit (30 requests/s per IP, other tools on this machine count too) was hit: run again in a moment".into(),
            }),
            500..=599 if failure.code == Some(PASSING) => Some("the instance is still being set up; Vultr refuses to delete it until then".into()),
            500..=599 => Some("Vultr had a problem on its side; run again in a little while".into()),
            _ => None,
        }
    }
}

/// Vultr's error body: `{"error": "...", "status": 400}`. A delete refused while the instance is still being set
/// up gets the code [`PASSING`].
fn error_message(body: &[u8]) -> Option<ProviderMessage> {
    #[derive(Deserialize)]
    struct Body {
        error: Option<String>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let message = body.error.map(|m| m.trim().to_string()).filter(|m| !m.is_empty())?;
    let lower = message.to_ascii_lowercase();
    let passing = lower.contains("currently locked") || lower.contains("not currently active");
    Some(ProviderMessage { code: passing.then(|| PASSING.to_string()), message })
}

/// The Vultr provider.
#[derive(Clone, Debug)]
pub struct Vultr {
    client: Client,
    page_size: u32,
    /// `GET /os`, read once per run.
    os_list: Arc<Mutex<Option<Vec<OsImage>>>>,
}

/// The registration's constructor (see [`super::catalog::REGISTRY`]).
pub fn connect(_spec: &crate::spec::Spec) -> Result<Arc<dyn Provider>> {
    Ok(Arc::new(Vultr::from_env(RetryPolicy::default())?))
}

impl Vultr {
    /// From the environment: the key from `VULTR_API_KEY`, the API from `VULTR_API_ENDPOINT` or
    /// `https://api.vultr.com/v2` (the whole prefix: paths are `/instances`, ...).
    pub fn from_env(policy: RetryPolicy) -> Result<Self> {
        let data = ProviderData::get(ProviderKind::Vultr);
        let key = data
            .credentials
            .env
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
            .ok_or_else(|| UserError::input("no Vultr API key is set").hint("export VULTR_API_KEY=<a key from Account > API in the Vultr portal>"))?;
        let api = data.api.as_ref().expect("providers/vultr.yaml has an api section");
        let url = api.url_env.iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty())).unwrap_or_else(|| api.url.clone());
        Self::new(&url, Secret::new(key.trim()), policy)
    }

    /// For the API at `base_url` (the whole prefix, `https://api.vultr.com/v2`) with `key`.
    pub fn new(base_url: &str, key: Secret, policy: RetryPolicy) -> Result<Self> {
        Ok(Self { client: Client::new(base_url, Auth::Bearer(key), VultrStyle, policy)?, page_size: MAX_PAGE_SIZE, os_list: Arc::default() })
    }

    /// Items asked for per page of a list (1-500; the default is 500, the fewest requests).
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// The HTTP client (its request counters, its base URL).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every item under `key` of a list, following the cursor in `meta.links.next` until it is empty.
    async fn list_all<T: DeserializeOwned>(&self, path: &str, key: &str, filter: Option<(&str, &str)>) -> Result<Vec<T>> {
        let mut items = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut req = self.client.request(Method::GET, path).query("per_page", self.page_size);
            if let Some((k, v)) = filter {
                req = req.query(k, v);
            }
            if let Some(c) = &cursor {
                req = req.query("cursor", c);
            }
            let reply = req.send().await?;
            let body: Value = reply.json()?;
            let unreadable = |why: String| -> anyhow::Error {
                UserError::failed(format!("{} returned a body sfuctl cannot read", reply.operation)).caused_by(anyhow::anyhow!(why)).into()
            };
            let list = body.get(key).ok_or_else(|| unreadable(format!("it has no `{key}` list")))?;
            let list: Vec<T> = Vec::<T>::deserialize(list).map_err(|e| unreadable(format!("`{key}`: {e}")))?;
            let empty = list.is_empty();
            items.extend(list);
            let next = body.pointer("/meta/links/next").and_then(Value::as_str).unwrap_or_default();
            if next.is_empty() || empty {
                break;
            }
            cursor = Some(next.to_string());
        }
        Ok(items)
    }

    /// Instances carrying the owner's tag (every instance is listed: Vultr has no usable tag filter).
    pub async fn list_servers(&self, owner: &Owner) -> Result<Vec<Server>> {
        let tag = owner.tag();
        let all: Vec<Instance> =
            self.list_all("/instances", "instances", None).await.map_err(failed(format!("cannot list the instances on Vultr (looking for tag `{tag}`)")))?;
        Ok(all.into_iter().filter(|i| i.tags.as_ref().is_some_and(|t| t.contains(&tag))).map(Instance::into_server).collect())
    }

    /// One instance; `None` when it is gone.
    pub async fn get_server(&self, id: &ServerId) -> Result<Option<Server>> {
        let iid = uuid(&id.0, "instance")?;
        let reply = self
            .client
            .request(Method::GET, &format!("/instances/{iid}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot read instance {iid} on Vultr")))?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        Ok(Some(reply.json::<InstanceBody>()?.instance.into_server()))
    }

    /// Creates an instance and returns it as the API first shows it (`Pending`, `main_ip` `0.0.0.0`). A create
    /// whose answer was lost comes back marked `maybe_applied`; the engine looks before it creates again.
    pub async fn create_server(&self, req: &ServerRequest) -> Result<Server> {
        let what = || format!("cannot create instance `{}` on Vultr", req.name);
        let os_id = self.os_id(&req.image).await.map_err(|e| match crate::error::exit_of(&e) {
            crate::error::Exit::BadInput => e,
            _ => failed(what())(e),
        })?;
        let body = create_instance_body(req, os_id);
        match self.client.request(Method::POST, "/instances").json(&body).send().await {
            Ok(reply) => Ok(reply.json::<InstanceBody>().map_err(failed(what()))?.instance.into_server()),
            Err(e) => {
                let mut err = UserError::failed(what());
                if let Some(hint) = field_hint(&e, req) {
                    err = err.hint(hint);
                }
                Err(err.caused_by(e).into())
            }
        }
    }

    /// Deletes an instance; one already gone is success. Refused while it is still being set up: [`Busy`].
    pub async fn delete_server(&self, id: &ServerId) -> Result<()> {
        let iid = uuid(&id.0, "instance")?;
        match self.client.request(Method::DELETE, &format!("/instances/{iid}")).accept(404).send().await {
            Ok(_) => Ok(()),
            Err(e) if http::api_code(&e).as_deref() == Some(PASSING) => {
                let message = e.chain().find_map(|c| c.downcast_ref::<http::ApiFailure>()).map(|f| f.message.clone()).unwrap_or_default();
                Err(anyhow::Error::new(Busy(format!("instance {iid}: {message}"))))
            }
            Err(e) => Err(failed(format!("cannot delete instance {iid} on Vultr"))(e)),
        }
    }

    /// The `os_id` for a spec's image: a number as it is, a name looked up in `GET /os` (empty: [`DEFAULT_OS`]).
    async fn os_id(&self, image: &str) -> Result<u64> {
        let image = image.trim();
        if let Ok(id) = image.parse::<u64>() {
            return Ok(id);
        }
        let name = if image.is_empty() { DEFAULT_OS } else { image };
        let cached = self.os_list.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let list = match cached {
            Some(list) => list,
            None => {
                let list: Vec<OsImage> = self.list_all("/os", "os", None).await.map_err(failed("cannot list the OS images on Vultr (GET /os)".into()))?;
                *self.os_list.lock().unwrap_or_else(|p| p.into_inner()) = Some(list.clone());
                list
            }
        };
        if let Some(os) = list.iter().find(|o| o.name.eq_ignore_ascii_case(name)) {
            return Ok(os.id);
        }
        let ubuntu: Vec<&str> = list.iter().filter(|o| o.family.as_deref() == Some("ubuntu")).map(|o| o.name.as_str()).collect();
        Err(UserError::input(format!("Vultr has no OS image named `{name}`"))
            .hint(format!("set `provider.image` to an os_id or one of the names GET /os lists, e.g. {}", ubuntu.join(", ")))
            .into())
    }

    /// The firewall groups described exactly `sfuctl-<name>` (groups carry no tags).
    pub async fn list_firewalls(&self, owner: &Owner) -> Result<Vec<Firewall>> {
        let name = owner.firewall_name();
        let what = || format!("cannot list the firewall groups on Vultr (looking for `{name}`)");
        let all: Vec<Group> = self.list_all("/firewalls", "firewall_groups", None).await.map_err(failed(what()))?;
        let mut out = Vec::new();
        for group in all.into_iter().filter(|g| g.description.as_deref() == Some(name.as_str())) {
            // A group deleted since the list (another run settling duplicates) is simply not there any more.
            out.extend(self.load_firewall(group).await.map_err(failed(what()))?);
        }
        Ok(out)
    }

    /// One firewall group; `None` when it is gone.
    pub async fn get_firewall(&self, id: &FirewallId) -> Result<Option<Firewall>> {
        let gid = uuid(&id.0, "firewall group")?;
        let what = || format!("cannot read firewall group {gid} on Vultr");
        let reply = self.client.request(Method::GET, &format!("/firewalls/{gid}")).accept(404).send().await.map_err(failed(what()))?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        let group = reply.json::<GroupBody>().map_err(failed(what()))?.firewall_group;
        self.load_firewall(group).await.map_err(failed(what()))
    }

    /// A group with its rules and the instances linked to it (a single `firewall_group_id` filter is allowed);
    /// `None` when the group is gone by the time its rules are read (a 404).
    async fn load_firewall(&self, group: Group) -> Result<Option<Firewall>> {
        let gid = uuid(&group.id, "firewall group")?;
        let rules: Vec<Rule> = match self.list_all(&format!("/firewalls/{gid}/rules"), "firewall_rules", None).await {
            Ok(rules) => rules,
            Err(e) if http::api_status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(e),
        };
        let linked: Vec<Instance> = self.list_all("/instances", "instances", Some(("firewall_group_id", gid))).await?;
        Ok(Some(group.into_firewall(&rules, linked.into_iter().map(|i| ServerId(i.id)).collect())))
    }

    /// Creates the group `sfuctl-<name>` with the request's rules, or brings `existing`'s rules in line in place
    /// (missing ones added, extra ones deleted by id). Sends nothing when `existing` already matches.
    pub async fn put_firewall(&self, req: &FirewallRequest, existing: Option<&Firewall>) -> Result<Firewall> {
        if let Some(fw) = existing
            && fw.name == req.name
            && fw.diff_rules(&req.rules).is_empty()
        {
            return Ok(fw.clone());
        }
        let group = match existing {
            Some(fw) => {
                let what = || format!("cannot update firewall group `{}` ({}) on Vultr", fw.name, fw.id);
                let gid = uuid(&fw.id.0, "firewall group")?;
                if fw.name != req.name {
                    self.client
                        .request(Method::PUT, &format!("/firewalls/{gid}"))
                        .json(&json!({ "description": req.name }))
                        .send()
                        .await
                        .map_err(failed(what()))?;
                }
                let reply = self.client.request(Method::GET, &format!("/firewalls/{gid}")).send().await.map_err(failed(what()))?;
                reply.json::<GroupBody>().map_err(failed(what()))?.firewall_group
            }
            None => self.create_group(req).await?,
        };
        let what = || format!("cannot set the rules of firewall group `{}` ({}) on Vultr", req.name, group.id);
        self.sync_rules(&group, req).await.map_err(failed(what()))?;
        let gid = uuid(&group.id, "firewall group")?;
        let reply = self.client.request(Method::GET, &format!("/firewalls/{gid}")).send().await.map_err(failed(what()))?;
        let group = reply.json::<GroupBody>().map_err(failed(what()))?.firewall_group;
        let gone = UserError::failed(format!("firewall group `{}` ({}) disappeared while sfuctl set its rules", req.name, group.id))
            .hint("another run may have deleted it as a duplicate: run `sfuctl up` again");
        self.load_firewall(group).await.map_err(failed(what()))?.ok_or_else(|| gone.into())
    }

    /// `POST /firewalls`; a create whose answer was lost is looked for by its description before anything else.
    async fn create_group(&self, req: &FirewallRequest) -> Result<Group> {
        let what = || format!("cannot create firewall group `{}` on Vultr", req.name);
        match self.client.request(Method::POST, "/firewalls").json(&json!({ "description": req.name })).send().await {
            Ok(reply) => Ok(reply.json::<GroupBody>().map_err(failed(what()))?.firewall_group),
            Err(e) if http::maybe_applied(&e) => {
                let all: Vec<Group> = self.list_all("/firewalls", "firewall_groups", None).await.map_err(failed(what()))?;
                match all.into_iter().find(|g| g.description.as_deref() == Some(req.name.as_str())) {
                    Some(found) => Ok(found),
                    None => Err(failed(what())(e)),
                }
            }
            Err(e) => Err(failed(what())(e)),
        }
    }

    /// Adds the missing rules and deletes the extra ones (by id); within `max_rule_count` at every step.
    async fn sync_rules(&self, group: &Group, req: &FirewallRequest) -> Result<()> {
        let gid = uuid(&group.id, "firewall group")?;
        let path = format!("/firewalls/{gid}/rules");
        let have: Vec<Rule> = self.list_all(&path, "firewall_rules", None).await?;
        let want: BTreeSet<RuleKey> = req.rules.iter().flat_map(RuleKey::of).collect();
        let extra: Vec<&Rule> = have.iter().filter(|r| r.key().is_none_or(|k| !want.contains(&k))).collect();
        let held: BTreeSet<RuleKey> = have.iter().filter_map(Rule::key).collect();
        let missing: Vec<&RuleKey> = want.iter().filter(|k| !held.contains(k)).collect();
        let limit = group.max_rule_count.unwrap_or(50) as usize;
        if want.len() > limit {
            return Err(UserError::failed(format!(
                "the manifest needs {} firewall rules (one per IP family and source) but the group holds at most {limit}",
                want.len()
            ))
            .hint("list fewer sources in `ssh.allow_from`, or merge port ranges in the spec")
            .into());
        }
        // Add first where there is room (no moment with a rule missing), else delete first.
        let add_first = have.len() + missing.len() <= limit;
        if !add_first {
            self.delete_rules(&path, &extra).await?;
        }
        for key in &missing {
            self.add_rule(&path, key).await?;
        }
        if add_first {
            self.delete_rules(&path, &extra).await?;
        }
        Ok(())
    }

    async fn delete_rules(&self, path: &str, rules: &[&Rule]) -> Result<()> {
        for rule in rules {
            self.client.request(Method::DELETE, &format!("{path}/{}", rule.id)).accept(404).send().await?;
        }
        Ok(())
    }

    /// Adds one rule. A create whose answer was lost is checked by reading the rules back, then sent once more.
    async fn add_rule(&self, path: &str, key: &RuleKey) -> Result<()> {
        match self.client.request(Method::POST, path).json(&key.body()).send().await {
            Ok(_) => Ok(()),
            Err(e) if http::maybe_applied(&e) => {
                let have: Vec<Rule> = self.list_all(path, "firewall_rules", None).await?;
                if have.iter().any(|r| r.key().as_ref() == Some(key)) {
                    return Ok(());
                }
                self.client.request(Method::POST, path).json(&key.body()).send().await?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a firewall group; one already gone is success.
    pub async fn delete_firewall(&self, id: &FirewallId) -> Result<()> {
        let gid = uuid(&id.0, "firewall group")?;
        self.client
            .request(Method::DELETE, &format!("/firewalls/{gid}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot delete firewall group {gid} on Vultr")))?;
        Ok(())
    }

    /// Finds the key by its key material among the registered keys, or registers it under `name`.
    pub async fn ensure_ssh_key(&self, name: &str, public_key: &str) -> Result<(SshKey, bool)> {
        let key = KeyLine::parse(public_key)?;
        let what = || format!("cannot register the SSH key `{name}` ({}) on Vultr", key.fingerprint);
        if let Some(found) = self.find_key(&key).await.map_err(failed(what()))? {
            return Ok((found, false));
        }
        let body = json!({ "name": name, "ssh_key": key.line });
        match self.client.request(Method::POST, "/ssh-keys").json(&body).send().await {
            Ok(reply) => Ok((reply.json::<KeyBody>().map_err(failed(what()))?.ssh_key.into_key(), true)),
            Err(e) if http::maybe_applied(&e) => match self.find_key(&key).await.map_err(failed(what()))? {
                Some(found) => Ok((found, true)),
                None => Err(failed(what())(e)),
            },
            Err(e) => Err(failed(what())(e)),
        }
    }

    /// Finds a registered key with the material of `public_key`, without registering it.
    pub async fn find_ssh_key(&self, public_key: &str) -> Result<Option<SshKey>> {
        let key = KeyLine::parse(public_key)?;
        self.find_key(&key).await.map_err(failed(format!("cannot look up the SSH key {} on Vultr", key.fingerprint)))
    }

    async fn find_key(&self, key: &KeyLine) -> Result<Option<SshKey>> {
        let all: Vec<VKey> = self.list_all("/ssh-keys", "ssh_keys", None).await?;
        // Several keys may hold the same material (names need not be unique): prefer one sfuctl named, then the
        // lowest ID, so two runs that registered it at once agree on which to keep.
        let mut matching: Vec<VKey> = all.into_iter().filter(|k| k.ssh_key.as_deref().and_then(|l| KeyLine::parse(l).ok()).is_some_and(|l| l.blob == key.blob)).collect();
        matching.sort_by(|a, b| (!a.name.as_deref().unwrap_or_default().starts_with("sfuctl-"), &a.id).cmp(&(!b.name.as_deref().unwrap_or_default().starts_with("sfuctl-"), &b.id)));
        Ok(matching.into_iter().next().map(|k| SshKey { fingerprint: key.fingerprint.clone(), ..k.into_key() }))
    }

    /// Deletes a registered key; one already gone is success.
    pub async fn delete_ssh_key(&self, id: &SshKeyId) -> Result<()> {
        let kid = uuid(&id.0, "SSH key")?;
        self.client
            .request(Method::DELETE, &format!("/ssh-keys/{kid}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot delete SSH key {kid} on Vultr")))?;
        Ok(())
    }

    /// `GET /regions`, `GET /plans` and `GET /os`: the spec's region, plan (offered in that region) and OS must be
    /// ones Vultr lists; otherwise bad input listing what it does.
    pub async fn check_choices(&self, req: &ServerRequest) -> Result<()> {
        let regions: Vec<Choice> = self.list_all("/regions", "regions", None).await.map_err(failed("cannot list the regions on Vultr (GET /regions)".into()))?;
        let ids: Vec<String> = regions.into_iter().map(|r| r.id).collect();
        if !ids.contains(&req.region) {
            return Err(unknown_choice("Vultr", "provider.region", &req.region, &ids, "GET /regions"));
        }
        let plans: Vec<Choice> = self.list_all("/plans", "plans", None).await.map_err(failed("cannot list the plans on Vultr (GET /plans)".into()))?;
        let here: Vec<String> = plans.into_iter().filter(|p| p.locations.contains(&req.region)).map(|p| p.id).collect();
        if !here.contains(&req.size) {
            return Err(unknown_choice("Vultr", "provider.size", &req.size, &here, &format!("GET /plans, in {}", req.region)));
        }
        self.os_id(&req.image).await.map(|_| ())
    }
}

impl Provider for Vultr {
    fn check_choices<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, ()> {
        Box::pin(Vultr::check_choices(self, req))
    }

    fn name(&self) -> &'static str {
        "Vultr"
    }

    fn requests(&self) -> RequestStats {
        self.client.stats()
    }

    fn list_servers<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Server>> {
        Box::pin(Vultr::list_servers(self, owner))
    }

    fn get_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, Option<Server>> {
        Box::pin(Vultr::get_server(self, id))
    }

    fn create_server<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, Server> {
        Box::pin(Vultr::create_server(self, req))
    }

    fn delete_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, ()> {
        Box::pin(Vultr::delete_server(self, id))
    }

    fn list_firewalls<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Firewall>> {
        Box::pin(Vultr::list_firewalls(self, owner))
    }

    fn get_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, Option<Firewall>> {
        Box::pin(Vultr::get_firewall(self, id))
    }

    fn put_firewall<'a>(&'a self, req: &'a FirewallRequest, existing: Option<&'a Firewall>) -> ProviderFuture<'a, Firewall> {
        Box::pin(Vultr::put_firewall(self, req, existing))
    }

    fn delete_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, ()> {
        Box::pin(Vultr::delete_firewall(self, id))
    }

    fn find_ssh_key<'a>(&'a self, public_key: &'a str) -> ProviderFuture<'a, Option<SshKey>> {
        Box::pin(Vultr::find_ssh_key(self, public_key))
    }

    fn ensure_ssh_key<'a>(&'a self, name: &'a str, public_key: &'a str) -> ProviderFuture<'a, (SshKey, bool)> {
        Box::pin(Vultr::ensure_ssh_key(self, name, public_key))
    }

    fn delete_ssh_key<'a>(&'a self, id: &'a SshKeyId) -> ProviderFuture<'a, ()> {
        Box::pin(Vultr::delete_ssh_key(self, id))
    }
}

/// Wraps a lower error in a message naming what failed, keeping its chain (and hints) below.
fn failed(what: String) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
    move |e| UserError::failed(what).caused_by(e).into()
}

/// A 400 on create whose message points at the region, the plan or the image: which spec field to fix.
fn field_hint(err: &anyhow::Error, req: &ServerRequest) -> Option<String> {
    if http::api_status(err) != Some(400) {
        return None;
    }
    let message = err.chain().find_map(|c| c.downcast_ref::<http::ApiFailure>())?.message.to_ascii_lowercase();
    if message.contains("region") || message.contains("location") {
        Some(format!("check `provider.region` (`{}`): Vultr region ids are like `ewr`, `fra`, `ams` (GET /regions lists them)", req.region))
    } else if message.contains("plan") {
        Some(format!("check `provider.size` (`{}`): a Vultr plan id like `vc2-2c-4gb`, offered in `{}` (GET /regions/{}/availability)", req.size, req.region, req.region))
    } else if message.contains("os") || message.contains("operating system") || message.contains("image") {
        Some("check `provider.image`: an os_id or an OS name that GET /os lists".into())
    } else {
        None
    }
}

/// Checks an ID before it goes into a URL path: Vultr's instance, group and key ids are UUIDs.
fn uuid<'a>(id: &'a str, what: &str) -> Result<&'a str> {
    let ok = id.len() == 36 && id.chars().enumerate().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
    if ok { Ok(id) } else { Err(UserError::failed(format!("`{id}` is not a Vultr {what} id (a UUID)")).into()) }
}

fn create_instance_body(req: &ServerRequest, os_id: u64) -> Value {
    let mut body = json!({
        "region": req.region,
        "plan": req.size,
        "os_id": os_id,
        "label": req.name,
        "hostname": req.name,
        "tags": req.tags,
        "sshkey_id": req.ssh_key_ids.iter().map(|k| k.0.clone()).collect::<Vec<_>>(),
        "enable_ipv6": req.ipv6,
        "backups": "disabled",
        "activation_email": false,
    });
    if let Some(fw) = &req.firewall_id {
        body["firewall_group_id"] = json!(fw.0);
    }
    if let Some(data) = &req.user_data {
        body["user_data"] = json!(base64::engine::general_purpose::STANDARD.encode(data));
    }
    body
}

/// An OpenSSH public key line, as Vultr should get it and as sfuctl compares it.
struct KeyLine {
    /// `type base64 [comment]`, options dropped.
    line: String,
    /// The base64 key blob: what two registrations of one key share.
    blob: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    fingerprint: String,
}

impl KeyLine {
    fn parse(public_key: &str) -> Result<Self> {
        // The same checks as DigitalOcean's (type, base64, the blob's own type), and the same normalised line.
        let (line, _) = super::digitalocean::md5_fingerprint(public_key)?;
        let blob = line.split_whitespace().nth(1).unwrap_or_default().to_string();
        let raw = base64::engine::general_purpose::STANDARD.decode(&blob).unwrap_or_default();
        let fingerprint = format!("SHA256:{}", base64::engine::general_purpose::STANDARD_NO_PAD.encode(Sha256::digest(&raw)));
        Ok(Self { line, blob, fingerprint })
    }
}

// ---------------------------------------------------------------------------------------------------------------
// What the API returns. Every field that might be missing or null is an Option, so odd data is never a panic.

#[derive(Deserialize)]
struct InstanceBody {
    instance: Instance,
}

#[derive(Deserialize)]
struct Instance {
    id: String,
    label: Option<String>,
    status: Option<String>,
    power_status: Option<String>,
    main_ip: Option<String>,
    v6_main_ip: Option<String>,
    features: Option<Vec<String>>,
    tags: Option<Vec<String>>,
    region: Option<String>,
}

impl Instance {
    fn into_server(self) -> Server {
        // "0.0.0.0" and "" mean "not assigned yet".
        let address = |raw: Option<&str>| raw.and_then(|a| a.trim().parse::<IpAddr>().ok()).filter(|a| !a.is_unspecified());
        let ipv4 = address(self.main_ip.as_deref()).filter(IpAddr::is_ipv4);
        let ipv6 = address(self.v6_main_ip.as_deref()).filter(IpAddr::is_ipv6);
        let wants_v6 = self.features.as_ref().is_some_and(|f| f.iter().any(|x| x == "ipv6"));
        let status = match (self.status.as_deref(), self.power_status.as_deref()) {
            (Some("pending"), _) => ServerStatus::Pending,
            (Some("active"), Some("stopped")) => ServerStatus::Off,
            // Up only once its addresses are assigned: IPv4, and IPv6 when it was asked for.
            (Some("active"), _) if wants_v6 && ipv6.is_none() => ServerStatus::Pending,
            (Some("active"), _) => ServerStatus::Running,
            (Some(other), _) => ServerStatus::Other(other.to_string()),
            (None, _) => ServerStatus::Other("unknown".into()),
        };
        Server {
            id: ServerId(self.id),
            name: self.label.unwrap_or_default(),
            status,
            public_ipv4: ipv4,
            public_ipv6: ipv6,
            tags: self.tags.unwrap_or_default(),
            region: self.region,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
struct OsImage {
    id: u64,
    name: String,
    family: Option<String>,
}

#[derive(Deserialize)]
struct GroupBody {
    firewall_group: Group,
}

#[derive(Deserialize)]
struct Group {
    id: String,
    description: Option<String>,
    max_rule_count: Option<u32>,
}

#[derive(Deserialize)]
struct Rule {
    id: u64,
    ip_type: Option<String>,
    protocol: Option<String>,
    port: Option<String>,
    subnet: Option<String>,
    subnet_size: Option<u8>,
    source: Option<String>,
}

/// One Vultr rule as sfuctl writes it: protocol, ports, one source CIDR.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct RuleKey {
    protocol: Protocol,
    ports: PortRange,
    source: IpNet,
}

impl RuleKey {
    /// A normalised rule as Vultr rules: one per source.
    fn of(rule: &FirewallRule) -> Vec<RuleKey> {
        rule.sources.iter().map(|s| RuleKey { protocol: rule.protocol, ports: rule.ports, source: s.trunc() }).collect()
    }

    fn body(&self) -> Value {
        let ports = if self.ports.start == self.ports.end { self.ports.start.to_string() } else { format!("{}:{}", self.ports.start, self.ports.end) };
        json!({
            "ip_type": if self.source.addr().is_ipv4() { "v4" } else { "v6" },
            "protocol": self.protocol.to_string().to_ascii_lowercase(),
            "subnet": self.source.network().to_string(),
            "subnet_size": self.source.prefix_len(),
            "port": ports,
            "notes": "sfuctl",
        })
    }
}

impl Rule {
    /// The rule as sfuctl writes them; `None` for what sfuctl never writes (ICMP, Cloudflare or load-balancer
    /// sources, odd data).
    fn key(&self) -> Option<RuleKey> {
        let protocol = match self.protocol.as_deref().map(str::to_ascii_lowercase).as_deref() {
            Some("tcp") => Protocol::Tcp,
            Some("udp") => Protocol::Udp,
            _ => return None,
        };
        if self.source.as_deref().is_some_and(|s| !s.is_empty()) {
            return None;
        }
        let ports = parse_ports(self.port.as_deref())?;
        let addr: IpAddr = self.subnet.as_deref()?.trim().parse().ok()?;
        let family_ok = match self.ip_type.as_deref() {
            Some("v4") => addr.is_ipv4(),
            Some("v6") => addr.is_ipv6(),
            _ => true,
        };
        let source = IpNet::new(addr, self.subnet_size?).ok().filter(|_| family_ok)?;
        Some(RuleKey { protocol, ports, source: source.trunc() })
    }

    fn describe(&self) -> String {
        let port = self.port.as_deref().filter(|p| !p.is_empty()).map(|p| format!(" {p}")).unwrap_or_default();
        let source = match self.source.as_deref().filter(|s| !s.is_empty()) {
            Some(s) => s.to_string(),
            None => format!("{}/{}", self.subnet.as_deref().unwrap_or("?"), self.subnet_size.map_or("?".into(), |n| n.to_string())),
        };
        format!("{}{port} from {source}", self.protocol.as_deref().unwrap_or("?"))
    }
}

/// Vultr's port string: `"443"`, `"40000:41000"`; empty means every port.
pub fn parse_ports(raw: Option<&str>) -> Option<PortRange> {
    let raw = raw.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Some(FirewallRule::ALL_PORTS);
    }
    let (a, b) = raw.split_once(':').unwrap_or((raw, raw));
    let range = PortRange { start: a.trim().parse().ok()?, end: b.trim().parse().ok()? };
    (range.start >= 1 && range.start <= range.end).then_some(range)
}

impl Group {
    fn into_firewall(self, rules: &[Rule], linked: Vec<ServerId>) -> Firewall {
        // One sfuctl rule per protocol and ports, with the sources of every Vultr rule that has them.
        let mut merged: BTreeMap<(Protocol, PortRange), Vec<IpNet>> = BTreeMap::new();
        let mut other = Vec::new();
        for r in rules {
            match r.key() {
                Some(k) => merged.entry((k.protocol, k.ports)).or_default().push(k.source),
                None => other.push(r.describe()),
            }
        }
        let mut rules: Vec<FirewallRule> = merged.into_iter().map(|((p, ports), sources)| FirewallRule::new(p, ports, sources)).collect();
        rules.sort();
        Firewall {
            id: FirewallId(self.id),
            name: self.description.unwrap_or_default(),
            rules,
            other_inbound: other,
            // A group's rules apply as they are written: there is no pending state.
            ready: true,
            status: "active".into(),
            server_ids: linked,
            tags: Vec::new(),
            // A firewall group does not filter outbound traffic.
            outbound_ok: true,
        }
    }
}

#[derive(Deserialize)]
struct KeyBody {
    ssh_key: VKey,
}

#[derive(Deserialize)]
struct VKey {
    id: String,
    name: Option<String>,
    ssh_key: Option<String>,
}

impl VKey {
    fn into_key(self) -> SshKey {
        let fingerprint = self.ssh_key.as_deref().and_then(|l| KeyLine::parse(l).ok()).map(|k| k.fingerprint).unwrap_or_default();
        SshKey { id: SshKeyId(self.id), fingerprint, name: self.name.unwrap_or_default() }
    }
}

/// A region or plan of `GET /regions` / `GET /plans`: its id and (plans) the regions that offer it.
#[derive(Debug, Deserialize)]
struct Choice {
    id: String,
    #[serde(default)]
    locations: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl";

    #[test]
    fn error_bodies_and_passing_refusals() {
        let m = error_message(br#"{"error":"Invalid region: 'xyz'.","status":400}"#).unwrap();
        assert_eq!(m, ProviderMessage { code: None, message: "Invalid region: 'xyz'.".into() });
        let locked = error_message(br#"{"error":"Unable to destroy server: Unable to remove VM: Server is currently locked","status":500}"#).unwrap();
        assert_eq!(locked.code.as_deref(), Some(PASSING));
        let pending = error_message(br#"{"error":"Unable to destroy server: This subscription is not currently active, you cannot destroy it.","status":500}"#).unwrap();
        assert_eq!(pending.code.as_deref(), Some(PASSING));
        assert!(!VultrStyle.transient(StatusCode::INTERNAL_SERVER_ERROR, Some(PASSING)), "a locked delete is the engine's to wait out");
        assert!(VultrStyle.transient(StatusCode::INTERNAL_SERVER_ERROR, None));
        assert!(error_message(b"<html>bad gateway</html>").is_none());
    }

    #[test]
    fn rules_go_out_one_per_source_with_colon_ranges() {
        let rule = FirewallRule::new(Protocol::Udp, PortRange { start: 40000, end: 41000 }, crate::ports::anywhere());
        let bodies: Vec<Value> = RuleKey::of(&rule).iter().map(RuleKey::body).collect();
        assert_eq!(bodies.len(), 2);
        assert_eq!(bodies[0]["port"], "40000:41000");
        assert_eq!(bodies[0]["protocol"], "udp");
        let families: BTreeSet<(String, String, u64)> = bodies
            .iter()
            .map(|b| (b["ip_type"].as_str().unwrap().into(), b["subnet"].as_str().unwrap().into(), b["subnet_size"].as_u64().unwrap()))
            .collect();
        assert_eq!(families, BTreeSet::from([("v4".into(), "0.0.0.0".into(), 0), ("v6".into(), "::".into(), 0)]));
        let ssh = FirewallRule::new(Protocol::Tcp, PortRange { start: 22, end: 22 }, ["203.0.113.7/32".parse().unwrap()]);
        assert_eq!(RuleKey::of(&ssh)[0].body()["port"], "22");
    }

    #[test]
    fn a_group_reads_back_merged_and_odd_rules_apart() {
        let rules: Vec<Rule> = serde_json::from_value(json!([
            {"id": 1, "ip_type": "v4", "protocol": "udp", "port": "40000:41000", "subnet": "0.0.0.0", "subnet_size": 0, "source": ""},
            {"id": 2, "ip_type": "v6", "protocol": "udp", "port": "40000:41000", "subnet": "::", "subnet_size": 0, "source": ""},
            {"id": 3, "ip_type": "v4", "protocol": "tcp", "port": "22", "subnet": "203.0.113.7", "subnet_size": 32, "source": ""},
            {"id": 4, "ip_type": "v4", "protocol": "icmp", "port": "", "subnet": "0.0.0.0", "subnet_size": 0, "source": ""},
            {"id": 5, "ip_type": "v4", "protocol": "tcp", "port": "443", "subnet": "", "subnet_size": 0, "source": "cloudflare"},
            {"id": 6, "ip_type": "v4", "protocol": "tcp", "port": null, "subnet": null, "subnet_size": null, "source": null}
        ]))
        .unwrap();
        let group = Group { id: "g".into(), description: Some("sfuctl-demo".into()), max_rule_count: Some(50) };
        let fw = group.into_firewall(&rules, vec![]);
        let lines: Vec<String> = fw.rules.iter().map(ToString::to_string).collect();
        assert_eq!(lines, ["udp 40000-41000 from 0.0.0.0/0, ::/0", "tcp 22 from 203.0.113.7/32"]);
        assert_eq!(fw.other_inbound, ["icmp from 0.0.0.0/0", "tcp 443 from cloudflare", "tcp from ?/?"]);
        assert!(fw.ready && fw.outbound_ok);
    }

    #[test]
    fn an_instance_is_up_once_its_addresses_are_assigned() {
        let inst = |v: Value| serde_json::from_value::<Instance>(v).unwrap().into_server();
        let pending = inst(json!({"id": "i", "label": "sfuctl-demo-1", "status": "pending", "main_ip": "0.0.0.0", "v6_main_ip": "", "tags": ["sfuctl:demo"]}));
        assert_eq!((pending.status.clone(), pending.public_ipv4), (ServerStatus::Pending, None));
        let no_ip = inst(json!({"id": "i", "label": "x", "status": "active", "main_ip": "0.0.0.0"}));
        assert!(!no_ip.is_up());
        let up = inst(json!({"id": "i", "label": "x", "status": "active", "power_status": "running", "main_ip": "203.0.113.5", "v6_main_ip": "", "features": []}));
        assert!(up.is_up());
        let v6_missing = inst(json!({"id": "i", "label": "x", "status": "active", "main_ip": "203.0.113.5", "v6_main_ip": "", "features": ["ipv6"]}));
        assert_eq!(v6_missing.status, ServerStatus::Pending);
        let v6 = inst(json!({"id": "i", "label": "x", "status": "active", "main_ip": "203.0.113.5", "v6_main_ip": "2001:db8:1::2", "features": ["ipv6"]}));
        assert!(v6.is_up() && v6.public_ipv6.is_some());
    }

    #[test]
    fn the_create_body_has_one_image_source_and_base64_user_data() {
        let req = ServerRequest {
            name: "sfuctl-demo-1".into(),
            region: "fra".into(),
            size: "vc2-2c-4gb".into(),
            image: String::new(),
            ssh_key_ids: vec![SshKeyId("k".into())],
            public_key: None,
            tags: vec!["sfuctl:demo".into()],
            user_data: Some("#cloud-config\n".into()),
            ipv6: false,
            firewall_id: Some(FirewallId("g".into())),
        };
        let body = create_instance_body(&req, 2284);
        assert_eq!(body["os_id"], 2284);
        assert_eq!(body["user_data"], "I2Nsb3VkLWNvbmZpZwo=");
        assert_eq!((body["label"].as_str(), body["hostname"].as_str()), (Some("sfuctl-demo-1"), Some("sfuctl-demo-1")));
        assert_eq!(body["sshkey_id"], json!(["k"]));
        assert_eq!(body["firewall_group_id"], "g");
        assert_eq!(body["tags"], json!(["sfuctl:demo"]));
    }

    #[test]
    fn ports_and_keys_and_ids() {
        assert_eq!(parse_ports(Some("40000:41000")), Some(PortRange { start: 40000, end: 41000 }));
        assert_eq!(parse_ports(Some("443")), Some(PortRange { start: 443, end: 443 }));
        assert_eq!(parse_ports(Some("")), Some(FirewallRule::ALL_PORTS));
        assert_eq!(parse_ports(Some("9:3")), None);
        let k = KeyLine::parse(&format!("no-pty {KEY}\n")).unwrap();
        assert_eq!(k.line, KEY);
        assert!(k.fingerprint.starts_with("SHA256:") && !k.fingerprint.ends_with('='));
        assert!(uuid("cb676a46-66fd-4dfb-b839-443f2e6c0b60", "instance").is_ok());
        assert!(uuid("../instances", "instance").is_err());
    }
}
