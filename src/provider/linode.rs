//! Linode / Akamai (API v4): instances tagged `sfuctl:<name>` and labelled `sfuctl-<name>-<n>`, one Cloud
//! Firewall `sfuctl-<name>` given to each instance in its create request, the login key passed inline.
//!
//! Quirks handled here, each with its reason:
//! - Request paths leave the version out (`/linode/instances`): the base URL carries it (`https://api.linode.com`
//!   + `/v4`, see `providers/linode.yaml`), so `LINODE_API_VERSION=v4beta` works as with the terraform provider.
//! - The firewall is created first and named by `firewall_id` in each instance create: a Linode has at most one
//!   firewall, and an account's default firewall would otherwise take the instance (and block the SSH deploy).
//! - Firewall rules: protocols in upper case, `ports` always explicit (`"40000-41000"`, never left out, which
//!   would mean all ports), IPv4 and IPv6 addresses in one rule, `inbound_policy: DROP`, `outbound_policy:
//!   ACCEPT` with no outbound rules. An update replaces the rules in place (`PUT .../rules`); the firewall, its
//!   ID and its devices stay.
//! - Firewall tags attach nothing on Linode: [`Firewall::tags`] stays empty and coverage comes from the
//!   firewall's devices, so the engine and the audit never take the owner tag for an attachment.
//! - `root_pass` is required with an image: a strong random one is made per instance, sent once in the create
//!   body and never kept, printed or logged (sfuctl logs in with the key).
//! - `metadata.user_data` is base64 and needs the region's `Metadata` capability: the region is read once per
//!   run (`GET /regions/{id}`) before the first create, and a region without it is a clear error.
//! - Instance lists are filtered by tag with the `X-Filter` header and paginated by `page`/`pages`.
//! - A Linode's `ipv4[]` holds public and private addresses alike; its private ones are always in
//!   192.168.128.0/17, so the public IPv4 is the first address outside that range.
//! - Errors are `{"errors":[{"field","reason"}]}`; a 400 that names a field gets a hint naming the spec field
//!   it came from (`type` -> `provider.size`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use anyhow::Result;
use base64::Engine as _;
use ipnet::{IpNet, Ipv4Net};
use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    Firewall, FirewallId, FirewallRequest, FirewallRule, NameTaken, Owner, Provider, ProviderFuture, Server, ServerId,
    ServerRequest, ServerStatus, SshKey, SshKeyId, unknown_choice,
};
use crate::error::UserError;
use crate::http::{self, ApiStyle, Auth, BearerStyle, Client, Failure, ProviderMessage, RequestStats, RetryPolicy, Secret};
use crate::ports::{PortRange, Protocol};
use crate::provider::catalog::ProviderData;
use crate::spec::ProviderKind;

/// The bearer-token parts of Linode's style (hints for 401, 403, 429, 5xx).
const BEARER: BearerStyle = BearerStyle {
    title: "Linode",
    token_env: "LINODE_TOKEN",
    scopes: "give it read/write access to Linodes and Firewalls (linodes:read_write, firewall:read_write)",
    parse_error: error_message,
};

/// How Linode's API differs from others, for the HTTP client: its error body, and hints that name the spec
/// field a rejected request field came from.
#[derive(Clone, Copy, Debug)]
pub struct LinodeStyle;

impl ApiStyle for LinodeStyle {
    fn title(&self) -> &str {
        BEARER.title
    }

    fn credentials(&self) -> String {
        BEARER.credentials()
    }

    fn parse_error(&self, _status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> Option<ProviderMessage> {
        error_message(body)
    }

    fn hint(&self, failure: &Failure<'_>) -> Option<String> {
        match (failure.status.map(|s| s.as_u16()), failure.code) {
            (Some(400), Some(field)) => field_hint(field),
            _ => BEARER.hint(failure),
        }
    }
}

/// Linode's error body: `{"errors": [{"field": "...", "reason": "..."}]}`, joined as `field: reason; reason`. The
/// code is the first error's field (`type`, `rules.inbound[0].ports`), so hints can name the spec field.
pub fn error_message(body: &[u8]) -> Option<ProviderMessage> {
    #[derive(Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(Deserialize)]
    struct Item {
        field: Option<String>,
        reason: Option<String>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let mut code = None;
    let parts: Vec<String> = body
        .errors
        .into_iter()
        .filter_map(|e| {
            let reason = e.reason.filter(|r| !r.trim().is_empty())?;
            Some(match e.field.filter(|f| !f.is_empty()) {
                Some(field) => {
                    code.get_or_insert_with(|| field.clone());
                    format!("{field}: {reason}")
                }
                None => reason,
            })
        })
        .collect();
    (!parts.is_empty()).then(|| ProviderMessage { code, message: parts.join("; ") })
}

/// Which part of the spec a field of a rejected Linode request came from.
fn field_hint(field: &str) -> Option<String> {
    let root = field.split(['.', '[']).next().unwrap_or(field);
    Some(
        match root {
            "type" => "the instance type comes from `provider.size` in the spec (e.g. `g6-standard-2`; `GET /v4/linode/types` lists them)",
            "region" => "the region comes from `provider.region` in the spec (e.g. `eu-central`; `GET /v4/regions` lists them)",
            "image" => "the image comes from `provider.image` in the spec (default `linode/ubuntu24.04`; it must support cloud-init)",
            "metadata" => "the cloud-init user data needs a region with the `Metadata` capability and an image with `cloud-init`: check `provider.region` and `provider.image`",
            "authorized_keys" => "the login key comes from `ssh.public_key` (or the private key's `.pub`): it must be one OpenSSH public key line",
            "label" | "tags" => "labels and tags come from the spec's `name` (`sfuctl-<name>`, `sfuctl:<name>`): a label must be unique on the account",
            "rules" => "the firewall rules come from the port manifest (`sfu` ports, `ssh.allow_from`): `sfuctl plan` shows them",
            "firewall_id" => "the deployment's firewall is gone: run `sfuctl up` again to make it",
            "root_pass" => "sfuctl generates the root password; report this with the output above",
            _ => return None,
        }
        .to_string(),
    )
}

/// The most items Linode returns per page (`page_size` 25-500).
pub const MAX_PAGE_SIZE: u32 = 500;

/// Lists stop after this many pages, whatever `pages` says (a guard against a looping API).
const MAX_PAGES: u32 = 500;

/// Linode's private IPv4 range: addresses in it are never public.
const PRIVATE_V4: Ipv4Net = match Ipv4Net::new(Ipv4Addr::new(192, 168, 128, 0), 17) {
    Ok(net) => net,
    Err(_) => panic!("a valid prefix"),
};

/// The Linode provider.
#[derive(Clone, Debug)]
pub struct Linode {
    client: Client,
    page_size: Option<u32>,
    /// Whether each region read so far has the `Metadata` capability (read once per run, before the first create).
    metadata: Arc<tokio::sync::Mutex<HashMap<String, bool>>>,
}

/// The registration's constructor (see [`super::catalog::REGISTRY`]).
pub fn connect(_spec: &crate::spec::Spec) -> Result<Arc<dyn Provider>> {
    Ok(Arc::new(Linode::from_env(RetryPolicy::default())?))
}

impl Linode {
    /// From the environment: the token from `LINODE_TOKEN`, the API from `LINODE_URL` (default
    /// `https://api.linode.com`) plus `/v4` (or `LINODE_API_VERSION`).
    pub fn from_env(policy: RetryPolicy) -> Result<Self> {
        let data = ProviderData::get(ProviderKind::Linode);
        let token = data
            .credentials
            .env
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
            .ok_or_else(|| UserError::input("no Linode token is set").hint("export LINODE_TOKEN=<a personal access token with Linodes and Firewalls read/write>"))?;
        let api = data.api.as_ref().expect("providers/linode.yaml has an api section");
        Self::new(&api.base_url(), Secret::new(token.trim()), policy)
    }

    /// For the API at `base_url`, version path included (`https://api.linode.com/v4`), with `token`.
    pub fn new(base_url: &str, token: Secret, policy: RetryPolicy) -> Result<Self> {
        Ok(Self {
            client: Client::new(base_url, Auth::Bearer(token), LinodeStyle, policy)?,
            page_size: Some(MAX_PAGE_SIZE),
            metadata: Arc::default(),
        })
    }

    /// Items asked for per page of a list (25-500); `None` sends no `page_size` and takes the API's default.
    pub fn with_page_size(mut self, page_size: Option<u32>) -> Self {
        self.page_size = page_size.map(|n| n.clamp(25, MAX_PAGE_SIZE));
        self
    }

    /// The HTTP client (its request counters, its base URL).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every item of a paginated list, following `page` up to `pages`; `filter` goes as the `X-Filter` header.
    async fn list_all<T: DeserializeOwned>(&self, path: &str, filter: Option<&Value>) -> Result<Vec<T>> {
        let mut items = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut req = self.client.request(Method::GET, path).query("page", page);
            if let Some(size) = self.page_size {
                req = req.query("page_size", size);
            }
            if let Some(filter) = filter {
                req = req.header("X-Filter", filter.to_string());
            }
            let body: Page<T> = req.send().await?.json()?;
            let empty = body.data.is_empty();
            items.extend(body.data);
            if empty || body.page.unwrap_or(page) >= body.pages.unwrap_or(1) {
                break;
            }
        }
        Ok(items)
    }

    /// Lists the instances carrying the owner's tag.
    pub async fn list_servers(&self, owner: &Owner) -> Result<Vec<Server>> {
        let tag = owner.tag();
        let instances: Vec<Instance> = self
            .list_all("/linode/instances", Some(&json!({ "tags": tag })))
            .await
            .map_err(failed(format!("cannot list the Linode instances tagged `{tag}`")))?;
        // The filter already matched; checking again costs nothing and keeps a looser filter from leaking in.
        Ok(instances.into_iter().filter(|i| i.tags.as_ref().is_some_and(|t| t.contains(&tag))).map(Instance::into_server).collect())
    }

    /// One instance; `None` when it is gone.
    pub async fn get_server(&self, id: &ServerId) -> Result<Option<Server>> {
        let lid = numeric_id(&id.0, "instance")?;
        let reply = self
            .client
            .request(Method::GET, &format!("/linode/instances/{lid}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot read Linode instance {lid}")))?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        Ok(Some(reply.json::<Instance>()?.into_server()))
    }

    /// Creates an instance and returns it as the API first shows it (`provisioning`, its IPv4 already assigned).
    /// A create whose answer was lost comes back as an error marked `maybe_applied`; the engine looks by name
    /// before it creates again.
    pub async fn create_server(&self, req: &ServerRequest) -> Result<Server> {
        let what = || format!("cannot create Linode instance `{}`", req.name);
        if req.user_data.is_some() {
            self.check_metadata(&req.region).await?;
        }
        let root_pass = root_password()?;
        let body = create_instance_body(req, &root_pass).map_err(failed(what()))?;
        let reply = match self.client.request(Method::POST, "/linode/instances").json(&body).send().await {
            Ok(reply) => reply,
            // Labels are unique on an account: someone (another run, most likely) holds this one.
            Err(e) if http::api_status(&e) == Some(400) && http::api_code(&e).as_deref() == Some("label") => {
                return Err(UserError::failed(format!("{}: {e:#}", what())).caused_by(anyhow::Error::new(NameTaken(req.name.clone()))).into());
            }
            Err(e) => return Err(failed(what())(e)),
        };
        Ok(reply.json::<Instance>().map_err(failed(what()))?.into_server())
    }

    /// Fails clearly when `region` lacks the `Metadata` capability that cloud-init user data needs.
    async fn check_metadata(&self, region: &str) -> Result<()> {
        let mut known = self.metadata.lock().await;
        let has = match known.get(region) {
            Some(has) => *has,
            None => {
                let what = || format!("cannot read the Linode region `{region}`");
                let path = format!("/regions/{}", path_segment(region, "region")?);
                let reply = self.client.request(Method::GET, &path).accept(404).send().await.map_err(failed(what()))?;
                if reply.status.as_u16() == 404 {
                    return Err(UserError::input(format!("Linode has no region `{region}`"))
                        .hint("set `provider.region` to a Linode region, e.g. `eu-central` (`GET /v4/regions` lists them)")
                        .into());
                }
                let region_body: RegionBody = reply.json().map_err(failed(what()))?;
                let has = region_body.capabilities.unwrap_or_default().iter().any(|c| c == "Metadata");
                known.insert(region.to_string(), has);
                has
            }
        };
        if has {
            Ok(())
        } else {
            Err(UserError::input(format!("the Linode region `{region}` lacks the `Metadata` capability, so it cannot take cloud-init user data"))
                .hint("choose a region that lists `Metadata` among its capabilities (`GET /v4/regions`), e.g. `eu-central` or `us-east`, in `provider.region`")
                .into())
        }
    }

    /// Deletes an instance; one already gone is success.
    pub async fn delete_server(&self, id: &ServerId) -> Result<()> {
        let lid = numeric_id(&id.0, "instance")?;
        self.client
            .request(Method::DELETE, &format!("/linode/instances/{lid}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot delete Linode instance {lid}")))?;
        Ok(())
    }

    /// The firewall labelled `sfuctl-<name>` (labels are unique on an account), with its devices.
    pub async fn list_firewalls(&self, owner: &Owner) -> Result<Vec<Firewall>> {
        let label = owner.firewall_name();
        let what = || format!("cannot list the Linode Cloud Firewalls (looking for `{label}`)");
        let all: Vec<LinodeFirewall> = self.list_all("/networking/firewalls", None).await.map_err(failed(what()))?;
        let mut out = Vec::new();
        for fw in all.into_iter().filter(|f| f.label == label && f.status.as_deref() != Some("deleted")) {
            let devices = self.devices(fw.id).await.map_err(failed(what()))?;
            out.push(fw.into_firewall(devices));
        }
        Ok(out)
    }

    /// One firewall, with its devices; `None` when it is gone.
    pub async fn get_firewall(&self, id: &FirewallId) -> Result<Option<Firewall>> {
        let fid = numeric_id(&id.0, "firewall")?;
        let what = || format!("cannot read Linode Cloud Firewall {fid}");
        let reply = self.client.request(Method::GET, &format!("/networking/firewalls/{fid}")).accept(404).send().await.map_err(failed(what()))?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        let fw: LinodeFirewall = reply.json().map_err(failed(what()))?;
        let devices = self.devices(fid).await.map_err(failed(what()))?;
        Ok(Some(fw.into_firewall(devices)))
    }

    /// The instances a firewall is assigned to.
    async fn devices(&self, fid: u64) -> Result<Vec<ServerId>> {
        let devices: Vec<Device> = self.list_all(&format!("/networking/firewalls/{fid}/devices"), None).await?;
        Ok(devices
            .into_iter()
            .filter_map(|d| d.entity)
            .filter(|e| e.kind.as_deref().is_none_or(|k| k == "linode"))
            .filter_map(|e| e.id)
            .map(|id| ServerId(id.to_string()))
            .collect())
    }

    /// Creates the firewall (tagged with the owner tag, assigned to `req.server_ids`), or brings `existing` in
    /// line in place: its rules replaced with `PUT .../rules`, missing devices added. Sends nothing when
    /// `existing` already matches.
    pub async fn put_firewall(&self, req: &FirewallRequest, existing: Option<&Firewall>) -> Result<Firewall> {
        let server_ids = req.server_ids.iter().map(|id| numeric_id(&id.0, "instance")).collect::<Result<Vec<u64>>>()?;
        let Some(existing) = existing else {
            let what = || format!("cannot create Linode Cloud Firewall `{}`", req.name);
            let mut body = json!({ "label": req.name, "rules": rules_body(req), "tags": [req.owner.tag()] });
            if !server_ids.is_empty() {
                body["devices"] = json!({ "linodes": server_ids });
            }
            return match self.client.request(Method::POST, "/networking/firewalls").json(&body).send().await {
                Ok(reply) => {
                    let fw: LinodeFirewall = reply.json().map_err(failed(what()))?;
                    let devices = server_ids.iter().map(|id| ServerId(id.to_string())).collect();
                    Ok(fw.into_firewall(devices))
                }
                // The label is taken, most likely by our own create whose answer was lost: take it over.
                Err(e) if http::maybe_applied(&e) || (http::api_status(&e) == Some(400) && http::api_code(&e).as_deref() == Some("label")) => {
                    match self.list_firewalls(&req.owner).await?.into_iter().find(|f| f.name == req.name) {
                        Some(found) => Box::pin(self.put_firewall(req, Some(&found))).await,
                        None => Err(failed(what())(e)),
                    }
                }
                Err(e) => Err(failed(what())(e)),
            };
        };
        let fid = numeric_id(&existing.id.0, "firewall")?;
        let what = || format!("cannot update Linode Cloud Firewall `{}` ({fid})", existing.name);
        let rules_match = existing.diff_rules(&req.rules).is_empty() && existing.outbound_ok;
        let missing: Vec<u64> = server_ids.iter().copied().filter(|id| !existing.server_ids.contains(&ServerId(id.to_string()))).collect();
        if rules_match && missing.is_empty() {
            return Ok(existing.clone());
        }
        let mut updated = existing.clone();
        if !rules_match {
            let reply = self
                .client
                .request(Method::PUT, &format!("/networking/firewalls/{fid}/rules"))
                .json(&rules_body(req))
                .send()
                .await
                .map_err(failed(what()))?;
            let rules: LinodeRules = reply.json().map_err(failed(what()))?;
            let fresh = LinodeFirewall { id: fid, label: existing.name.clone(), status: Some(existing.status.clone()), rules: Some(rules) };
            updated = fresh.into_firewall(existing.server_ids.clone());
        }
        for id in missing {
            // Assigned meanwhile (a parallel run) is as good as assigned now.
            self.client
                .request(Method::POST, &format!("/networking/firewalls/{fid}/devices"))
                .json(&json!({ "id": id, "type": "linode" }))
                .send()
                .await
                .map_err(failed(what()))?;
            updated.server_ids.push(ServerId(id.to_string()));
        }
        Ok(updated)
    }

    /// Deletes a firewall; one already gone is success.
    pub async fn delete_firewall(&self, id: &FirewallId) -> Result<()> {
        let fid = numeric_id(&id.0, "firewall")?;
        self.client
            .request(Method::DELETE, &format!("/networking/firewalls/{fid}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot delete Linode Cloud Firewall {fid}")))?;
        Ok(())
    }

    /// `GET /v4/regions`, `GET /v4/linode/types` and `GET /v4/images`: the spec's region, type and image must be
    /// ones Linode lists; otherwise bad input listing what it does.
    pub async fn check_choices(&self, req: &ServerRequest) -> Result<()> {
        let checks = [("provider.region", &req.region, "/regions"), ("provider.size", &req.size, "/linode/types"), ("provider.image", &req.image, "/images")];
        for (field, value, path) in checks {
            if value.is_empty() {
                continue;
            }
            let listed_by = format!("GET /v4{path}");
            let items: Vec<Choice> = self.list_all(path, None).await.map_err(failed(format!("cannot list what Linode offers ({listed_by})")))?;
            let ids: Vec<String> = items.into_iter().filter(|c| c.status.as_deref().is_none_or(|s| s == "ok" || s == "available")).map(|c| c.id).collect();
            if !ids.contains(value) {
                return Err(unknown_choice("Linode", field, value, &ids, &listed_by));
            }
        }
        Ok(())
    }
}

impl Provider for Linode {
    fn check_choices<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, ()> {
        Box::pin(Linode::check_choices(self, req))
    }

    fn name(&self) -> &'static str {
        BEARER.title
    }

    fn requests(&self) -> RequestStats {
        self.client.stats()
    }

    fn list_servers<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Server>> {
        Box::pin(Linode::list_servers(self, owner))
    }

    fn get_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, Option<Server>> {
        Box::pin(Linode::get_server(self, id))
    }

    fn create_server<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, Server> {
        Box::pin(Linode::create_server(self, req))
    }

    fn delete_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, ()> {
        Box::pin(Linode::delete_server(self, id))
    }

    fn list_firewalls<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Firewall>> {
        Box::pin(Linode::list_firewalls(self, owner))
    }

    fn get_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, Option<Firewall>> {
        Box::pin(Linode::get_firewall(self, id))
    }

    fn put_firewall<'a>(&'a self, req: &'a FirewallRequest, existing: Option<&'a Firewall>) -> ProviderFuture<'a, Firewall> {
        Box::pin(Linode::put_firewall(self, req, existing))
    }

    fn delete_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, ()> {
        Box::pin(Linode::delete_firewall(self, id))
    }

    /// `ssh_key: inline`: the key goes in each create request's `authorized_keys`; nothing is registered.
    fn find_ssh_key<'a>(&'a self, _public_key: &'a str) -> ProviderFuture<'a, Option<SshKey>> {
        Box::pin(async { Ok(None) })
    }

    /// Never called for Linode (`ssh_key: inline` in `providers/linode.yaml`); refuses rather than registers.
    fn ensure_ssh_key<'a>(&'a self, _name: &'a str, _public_key: &'a str) -> ProviderFuture<'a, (SshKey, bool)> {
        Box::pin(async { Err(UserError::failed("sfuctl passes the SSH key to Linode instances inline (authorized_keys); it registers no key").into()) })
    }

    /// Nothing was registered, so there is nothing to delete.
    fn delete_ssh_key<'a>(&'a self, _id: &'a SshKeyId) -> ProviderFuture<'a, ()> {
        Box::pin(async { Ok(()) })
    }
}

/// Wraps a lower error in a message naming what failed, keeping its chain (and hints) below.
fn failed(what: String) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
    move |e| UserError::failed(what).caused_by(e).into()
}

/// A Linode ID (instances and firewalls are numbered), checked before it reaches a URL.
fn numeric_id(raw: &str, what: &str) -> Result<u64> {
    raw.trim().parse().map_err(|_| UserError::failed(format!("`{raw}` is not a Linode {what} id (a number)")).into())
}

/// A region ID as one path segment (`eu-central`): letters, digits and `-` only.
fn path_segment<'a>(raw: &'a str, what: &str) -> Result<&'a str> {
    let ok = !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    if ok { Ok(raw) } else { Err(UserError::input(format!("`{raw}` is not a Linode {what}")).into()) }
}

/// A strong random root password: 40 characters from 64 (240 bits), with at least one upper-case letter, one
/// lower-case letter, one digit and one symbol, as Linode's strength check wants. Never printed or kept.
pub fn root_password() -> Result<Secret> {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz23456789-_.~!#%+=@^";
    loop {
        let mut bytes = [0u8; 40];
        getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("cannot get random bytes from the OS: {e}"))?;
        // 256 is not a multiple of the alphabet's length: drop the bytes that would bias it.
        let limit = 256 - 256 % ALPHABET.len();
        let pass: String = bytes.iter().filter(|b| usize::from(**b) < limit).map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char).collect();
        let classes = [
            pass.bytes().any(|b| b.is_ascii_uppercase()),
            pass.bytes().any(|b| b.is_ascii_lowercase()),
            pass.bytes().any(|b| b.is_ascii_digit()),
            pass.bytes().any(|b| !b.is_ascii_alphanumeric()),
        ];
        if pass.len() >= 32 && classes.iter().all(|c| *c) {
            return Ok(Secret::new(pass));
        }
    }
}

/// The key line Linode should get: `type base64 [comment]` (options such as `no-pty` dropped).
fn key_line(public_key: &str) -> Result<String> {
    let bad = || -> anyhow::Error {
        UserError::input("the SSH public key is not an OpenSSH public key line")
            .hint("use the contents of a `.pub` file, e.g. `ssh-ed25519 AAAA… you@host`")
            .into()
    };
    let line = public_key.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).ok_or_else(bad)?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let start = words.iter().position(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-")).ok_or_else(bad)?;
    if words.len() < start + 2 {
        return Err(bad());
    }
    Ok(words[start..].join(" "))
}

fn create_instance_body(req: &ServerRequest, root_pass: &Secret) -> Result<Value> {
    if req.image.trim().is_empty() {
        return Err(UserError::input("no Linode image is set").hint("set `provider.image` (e.g. `linode/ubuntu24.04`)").into());
    }
    let mut body = json!({
        "label": req.name,
        "region": req.region,
        "type": req.size,
        "image": req.image,
        "root_pass": root_pass.expose(),
        "tags": req.tags,
        "booted": true,
    });
    if let Some(key) = &req.public_key {
        body["authorized_keys"] = json!([key_line(key)?]);
    }
    if let Some(fw) = &req.firewall_id {
        body["firewall_id"] = json!(numeric_id(&fw.0, "firewall")?);
    }
    if let Some(data) = &req.user_data {
        if data.len() > 65_535 {
            return Err(UserError::failed(format!("the cloud-init user data is {} bytes; Linode takes at most 65,535 before encoding", data.len())).into());
        }
        body["metadata"] = json!({ "user_data": base64::engine::general_purpose::STANDARD.encode(data) });
    }
    Ok(body)
}

/// The rules of `req` as Linode wants them: inbound from the manifest, everything else dropped, outbound open.
fn rules_body(req: &FirewallRequest) -> Value {
    let inbound: Vec<Value> = req
        .rules
        .iter()
        .map(|r| {
            let (v4, v6): (Vec<String>, Vec<String>) = {
                let v4 = r.sources.iter().filter(|s| s.addr().is_ipv4()).map(ToString::to_string).collect();
                let v6 = r.sources.iter().filter(|s| s.addr().is_ipv6()).map(ToString::to_string).collect();
                (v4, v6)
            };
            // Neither list may be empty: leave a family out instead.
            let mut addresses = serde_json::Map::new();
            if !v4.is_empty() {
                addresses.insert("ipv4".into(), json!(v4));
            }
            if !v6.is_empty() {
                addresses.insert("ipv6".into(), json!(v6));
            }
            json!({
                "protocol": r.protocol.to_string().to_ascii_uppercase(),
                // Explicit always: a rule without `ports` would open every port.
                "ports": r.ports.to_string(),
                "addresses": addresses,
                "action": "ACCEPT",
            })
        })
        .collect();
    json!({ "inbound": inbound, "inbound_policy": "DROP", "outbound": [], "outbound_policy": "ACCEPT" })
}

// ---------------------------------------------------------------------------------------------------------------
// What the API returns. Every field that might be missing or null is an Option, so odd data is never a panic.

#[derive(Deserialize)]
struct Page<T> {
    data: Vec<T>,
    page: Option<u32>,
    pages: Option<u32>,
}

#[derive(Deserialize)]
struct RegionBody {
    capabilities: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Instance {
    id: u64,
    label: String,
    status: Option<String>,
    ipv4: Option<Vec<String>>,
    ipv6: Option<String>,
    tags: Option<Vec<String>>,
    region: Option<String>,
}

impl Instance {
    fn into_server(self) -> Server {
        let public_ipv4 = self
            .ipv4
            .unwrap_or_default()
            .iter()
            .filter_map(|a| a.split('/').next()?.trim().parse::<Ipv4Addr>().ok())
            .find(|a| !PRIVATE_V4.contains(a))
            .map(IpAddr::V4);
        let public_ipv6 = self.ipv6.as_deref().and_then(|a| a.split('/').next()?.trim().parse::<IpAddr>().ok()).filter(IpAddr::is_ipv6);
        let status = match self.status.as_deref() {
            Some("provisioning" | "booting") => ServerStatus::Pending,
            Some("running") => ServerStatus::Running,
            Some("offline" | "stopped" | "shutting_down") => ServerStatus::Off,
            Some("deleting") => ServerStatus::Gone,
            Some(other) => ServerStatus::Other(other.to_string()),
            None => ServerStatus::Other("unknown".into()),
        };
        Server { id: ServerId(self.id.to_string()), name: self.label, status, public_ipv4, public_ipv6, tags: self.tags.unwrap_or_default(), region: self.region }
    }
}

#[derive(Deserialize)]
struct LinodeFirewall {
    id: u64,
    label: String,
    status: Option<String>,
    rules: Option<LinodeRules>,
}

#[derive(Deserialize, Default)]
struct LinodeRules {
    inbound: Option<Vec<LinodeRule>>,
    outbound: Option<Vec<LinodeRule>>,
    inbound_policy: Option<String>,
    outbound_policy: Option<String>,
}

#[derive(Deserialize)]
struct LinodeRule {
    protocol: Option<String>,
    ports: Option<String>,
    addresses: Option<Addresses>,
    action: Option<String>,
}

#[derive(Deserialize, Default)]
struct Addresses {
    ipv4: Option<Vec<String>>,
    ipv6: Option<Vec<String>>,
}

#[derive(Deserialize)]
struct Device {
    entity: Option<Entity>,
}

#[derive(Deserialize)]
struct Entity {
    id: Option<u64>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

/// Linode's `ports` string as ranges: `"22"`, `"40000-41000"`, `"22-24, 80, 443"`; missing or empty is every
/// port. `None` when any piece does not parse.
pub fn parse_ports(raw: Option<&str>) -> Option<Vec<PortRange>> {
    let raw = raw.map(str::trim).unwrap_or_default();
    if raw.is_empty() {
        return Some(vec![FirewallRule::ALL_PORTS]);
    }
    raw.split(',').map(|piece| piece.trim().parse::<PortRange>().ok().filter(|r| r.start >= 1 && !r.is_empty())).collect()
}

fn parse_net(raw: &str) -> Option<IpNet> {
    let raw = raw.trim();
    raw.parse::<IpNet>().ok().or_else(|| raw.parse::<IpAddr>().ok().map(IpNet::from))
}

impl LinodeRule {
    fn describe(&self) -> String {
        let addrs = self.addresses.as_ref().map(|a| a.ipv4.iter().chain(a.ipv6.iter()).flatten().cloned().collect::<Vec<_>>().join(", ")).unwrap_or_default();
        format!(
            "{} {} {} from {}",
            self.action.as_deref().unwrap_or("?"),
            self.protocol.as_deref().unwrap_or("?"),
            self.ports.as_deref().unwrap_or("(all ports)"),
            if addrs.is_empty() { "nothing" } else { &addrs }
        )
    }
}

impl LinodeFirewall {
    fn into_firewall(self, server_ids: Vec<ServerId>) -> Firewall {
        let rules_in = self.rules.unwrap_or_default();
        let mut rules = Vec::new();
        let mut other = Vec::new();
        let inbound_policy = rules_in.inbound_policy.clone().unwrap_or_default();
        if !inbound_policy.eq_ignore_ascii_case("DROP") {
            other.push(format!("inbound policy {} (everything not matched is let in)", if inbound_policy.is_empty() { "unset" } else { &inbound_policy }));
        }
        for r in rules_in.inbound.unwrap_or_default() {
            let protocol = match r.protocol.as_deref().map(str::to_ascii_uppercase).as_deref() {
                Some("TCP") => Some(Protocol::Tcp),
                Some("UDP") => Some(Protocol::Udp),
                _ => None,
            };
            let accept = r.action.as_deref().is_some_and(|a| a.eq_ignore_ascii_case("ACCEPT"));
            let addrs = r.addresses.as_ref();
            let nets: Option<Vec<IpNet>> = addrs.map(|a| a.ipv4.iter().chain(a.ipv6.iter()).flatten().map(|s| parse_net(s)).collect()).unwrap_or(Some(Vec::new()));
            match (protocol, parse_ports(r.ports.as_deref()), nets) {
                (Some(p), Some(ranges), Some(nets)) if accept && !nets.is_empty() => {
                    rules.extend(ranges.into_iter().map(|ports| FirewallRule::new(p, ports, nets.clone())));
                }
                _ => other.push(r.describe()),
            }
        }
        rules.sort();
        rules.dedup();
        let outbound_open = rules_in.outbound_policy.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("ACCEPT"));
        let outbound_drops = rules_in.outbound.unwrap_or_default().iter().any(|r| !r.action.as_deref().is_some_and(|a| a.eq_ignore_ascii_case("ACCEPT")));
        let status = self.status.unwrap_or_else(|| "unknown".into());
        Firewall {
            id: FirewallId(self.id.to_string()),
            name: self.label,
            rules,
            other_inbound: other,
            // Linode applies rule changes as it answers; a disabled firewall filters nothing.
            ready: status == "enabled",
            status,
            server_ids,
            // Linode firewall tags are labels only: they attach nothing (see the module notes).
            tags: Vec::new(),
            outbound_ok: outbound_open && !outbound_drops,
        }
    }
}

/// A region, instance type or image of Linode's lists: its id, and its status where it has one (`ok`,
/// `available`).
#[derive(Debug, Deserialize)]
struct Choice {
    id: String,
    #[serde(default)]
    status: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl";

    fn spec() -> Spec {
        Spec::parse("name: demo\nprovider: { kind: linode, region: eu-central }\nssh: { allow_from: [203.0.113.7/32] }\nsfu:\n  kind: janus\n  rtc_ports: 40000-41000\n").unwrap()
    }

    #[test]
    fn parses_the_error_body_and_keeps_the_field_as_code() {
        let l = error_message(br#"{"errors":[{"field":"type","reason":"A valid plan type by that ID was not found"},{"reason":"Try again"}]}"#).unwrap();
        assert_eq!(l, ProviderMessage { code: Some("type".into()), message: "type: A valid plan type by that ID was not found; Try again".into() });
        assert_eq!(error_message(br#"{"errors":[{"reason":"Invalid Token"}]}"#).unwrap().code, None);
        assert!(error_message(br#"{"errors":[]}"#).is_none());
        assert!(error_message(b"<html>bad gateway</html>").is_none());
    }

    #[test]
    fn a_400_with_a_field_names_the_spec_field() {
        let failure = |status: u16, code: Option<&'static str>| Failure {
            operation: "POST /linode/instances",
            base_url: "https://api.linode.com/v4",
            status: Some(StatusCode::from_u16(status).unwrap()),
            code,
            retry_after: None,
        };
        assert!(LinodeStyle.hint(&failure(400, Some("type"))).unwrap().contains("provider.size"));
        assert!(LinodeStyle.hint(&failure(400, Some("region"))).unwrap().contains("provider.region"));
        assert!(LinodeStyle.hint(&failure(400, Some("image"))).unwrap().contains("provider.image"));
        assert!(LinodeStyle.hint(&failure(400, Some("rules.inbound[0].ports"))).unwrap().contains("port manifest"));
        assert!(LinodeStyle.hint(&failure(401, None)).unwrap().contains("$LINODE_TOKEN"));
        assert_eq!(LinodeStyle.hint(&failure(400, Some("interfaces"))), None);
    }

    #[test]
    fn root_passwords_are_long_random_and_never_shown() {
        let a = root_password().unwrap();
        let b = root_password().unwrap();
        assert_ne!(a.expose(), b.expose());
        assert!(a.expose().len() >= 32);
        assert_eq!(format!("{a} {a:?}"), "*** Secret(***)");
    }

    #[test]
    fn create_body_carries_key_firewall_and_base64_user_data() {
        let mut req = ServerRequest::for_spec(&spec(), 1, vec![], Some("#cloud-config\n".into())).unwrap();
        req.public_key = Some(format!("no-pty {KEY}\n"));
        req.firewall_id = Some(FirewallId("42".into()));
        let pass = Secret::new("x");
        let body = create_instance_body(&req, &pass).unwrap();
        assert_eq!(body["label"], "sfuctl-demo-1");
        assert_eq!((body["region"].as_str(), body["type"].as_str(), body["image"].as_str()), (Some("eu-central"), Some("g6-standard-2"), Some("linode/ubuntu24.04")));
        assert_eq!(body["authorized_keys"], json!([KEY]));
        assert_eq!(body["firewall_id"], json!(42));
        assert_eq!(body["tags"], json!(["sfuctl:demo"]));
        assert_eq!(body["metadata"]["user_data"], "I2Nsb3VkLWNvbmZpZwo=");
    }

    #[test]
    fn rules_are_explicit_upper_case_and_split_by_family() {
        let req = FirewallRequest::for_manifest(&Owner::new("demo"), &spec().manifest());
        let body = rules_body(&req);
        assert_eq!((body["inbound_policy"].as_str(), body["outbound_policy"].as_str()), (Some("DROP"), Some("ACCEPT")));
        let inbound = body["inbound"].as_array().unwrap();
        assert_eq!(inbound[0], json!({ "protocol": "TCP", "ports": "22", "addresses": { "ipv4": ["203.0.113.7/32"] }, "action": "ACCEPT" }));
        assert_eq!(inbound[1]["protocol"], "UDP");
        assert_eq!(inbound[1]["ports"], "40000-41000");
        assert_eq!(inbound[1]["addresses"], json!({ "ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"] }));
    }

    #[test]
    fn firewall_reads_back_comma_ports_policies_and_odd_rules() {
        let fw: LinodeFirewall = serde_json::from_value(json!({
            "id": 7, "label": "sfuctl-demo", "status": "enabled", "tags": ["sfuctl:demo"],
            "rules": {
                "inbound_policy": "DROP", "outbound_policy": "ACCEPT", "outbound": [],
                "inbound": [
                    {"protocol": "TCP", "ports": "22, 80-81", "addresses": {"ipv4": ["203.0.113.7/32"]}, "action": "ACCEPT"},
                    {"protocol": "UDP", "ports": "40000-41000", "addresses": {"ipv4": ["0.0.0.0/0"], "ipv6": ["::/0"]}, "action": "ACCEPT"},
                    {"protocol": "ICMP", "addresses": {"ipv4": ["0.0.0.0/0"]}, "action": "ACCEPT"}
                ]
            }
        }))
        .unwrap();
        let fw = fw.into_firewall(vec![ServerId("9".into())]);
        assert!(fw.ready && fw.outbound_ok);
        assert!(fw.tags.is_empty(), "Linode firewall tags attach nothing");
        let rules: Vec<String> = fw.rules.iter().map(ToString::to_string).collect();
        assert_eq!(rules, ["udp 40000-41000 from 0.0.0.0/0, ::/0", "tcp 22 from 203.0.113.7/32", "tcp 80-81 from 203.0.113.7/32"]);
        assert_eq!(fw.other_inbound, ["ACCEPT ICMP (all ports) from 0.0.0.0/0"]);

        let open: LinodeFirewall = serde_json::from_value(json!({"id": 8, "label": "x", "status": "disabled", "rules": {"inbound_policy": "ACCEPT", "outbound_policy": "DROP"}})).unwrap();
        let open = open.into_firewall(vec![]);
        assert!(!open.ready && !open.outbound_ok);
        assert_eq!(open.other_inbound, ["inbound policy ACCEPT (everything not matched is let in)"]);
        assert!(!open.diff(&[]).is_empty(), "an open inbound policy is a difference to fix");
    }

    #[test]
    fn instance_takes_its_public_addresses() {
        let i: Instance = serde_json::from_value(json!({
            "id": 5, "label": "sfuctl-demo-1", "status": "running", "tags": ["sfuctl:demo"], "region": "eu-central",
            "ipv4": ["192.168.130.4", "203.0.113.5"], "ipv6": "2001:db8:1::f03c:91ff:fe00:1/128"
        }))
        .unwrap();
        let s = i.into_server();
        assert!(s.is_up());
        assert_eq!(s.public_ipv4, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(s.public_ipv6, Some("2001:db8:1::f03c:91ff:fe00:1".parse().unwrap()));
        for (status, want) in [("provisioning", ServerStatus::Pending), ("booting", ServerStatus::Pending), ("offline", ServerStatus::Off)] {
            let i: Instance = serde_json::from_value(json!({"id": 1, "label": "x", "status": status, "ipv4": null, "ipv6": null})).unwrap();
            assert_eq!(i.into_server().status, want);
        }
    }

    #[test]
    fn ports_and_ids_are_checked() {
        assert_eq!(parse_ports(None), Some(vec![FirewallRule::ALL_PORTS]));
        assert_eq!(parse_ports(Some("1-65535")), Some(vec![FirewallRule::ALL_PORTS]));
        assert_eq!(parse_ports(Some("22-24, 80")).map(|v| v.len()), Some(2));
        assert_eq!(parse_ports(Some("22, x")), None);
        assert!(numeric_id("12", "instance").is_ok());
        assert!(numeric_id("../x", "instance").is_err());
        assert!(path_segment("eu-central", "region").is_ok());
        assert!(path_segment("eu/../x", "region").is_err());
    }
}
