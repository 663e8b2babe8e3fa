//! DigitalOcean (API v2): droplets tagged `sfuctl:<name>`, one firewall `sfuctl-<name>` attached by that tag,
//! and the deployment's SSH key found by its MD5 fingerprint.
//!
//! Quirks handled here, each with its reason:
//! - A firewall attached by tag covers every droplet that carries the tag from its first boot, so there is no
//!   window where a new droplet runs unprotected (the firewall/new-droplet races of community.digitalocean#202).
//!   The tag must exist before a firewall can name it (poseidon/typhoon#709), so it is created first.
//! - Inbound rules always carry explicit port strings (`"40000-41000"`, `"1-65535"`), never `"0"` or `"all"`:
//!   the API has accepted and rejected each of those at different times (droplet_kit#249, doorkeeper#17).
//! - A firewall without outbound rules blocks all egress, so explicit allow-all rules for tcp, udp and icmp are
//!   always sent. The OpenAPI document requires `ports` on every rule, ICMP included: ICMP gets `"0"`.
//! - `PUT /v2/firewalls/{id}` replaces everything: an update re-sends the tags and droplet ids it found.
//! - `GET /v2/account/keys` is limited to 10 requests a minute: a key is looked up by its fingerprint.
//! - `user_data` is plain text (not base64), at most 64 KiB.

use std::collections::BTreeSet;
use std::net::IpAddr;

use anyhow::Result;
use base64::Engine as _;
use ipnet::IpNet;
use md5::{Digest, Md5};
use reqwest::Method;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::{
    Firewall, FirewallId, FirewallRequest, FirewallRule, Owner, Provider, ProviderFuture, Server, ServerId, ServerRequest,
    ServerStatus, SshKey, SshKeyId, unknown_choice,
};
use crate::error::UserError;
use crate::http::{self, Auth, BearerStyle, Client, ProviderMessage, RequestStats, Retry, RetryPolicy, Secret};
use crate::ports::{PortRange, Protocol};
use crate::provider::catalog::ProviderData;
use crate::spec::ProviderKind;

/// How DigitalOcean's API differs from others, for the HTTP client.
pub const STYLE: BearerStyle = BearerStyle {
    title: "DigitalOcean",
    token_env: "DIGITALOCEAN_TOKEN",
    scopes: "give it read and write access (droplet, firewall, ssh_key, tag)",
    parse_error: error_message,
};

/// DigitalOcean's error body: `{"id": "...", "message": "...", "request_id": "..."}`.
fn error_message(body: &[u8]) -> Option<ProviderMessage> {
    #[derive(serde::Deserialize)]
    struct Body {
        id: Option<String>,
        message: Option<String>,
    }
    let body: Body = serde_json::from_slice(body).ok()?;
    let message = body.message.filter(|m| !m.trim().is_empty()).or_else(|| body.id.clone())?;
    Some(ProviderMessage { code: body.id, message })
}

/// The most items DigitalOcean returns per page.
pub const MAX_PAGE_SIZE: u32 = 200;

/// Lists stop after this many pages, whatever the links say (a guard against a looping API).
const MAX_PAGES: u32 = 500;

/// The DigitalOcean provider.
#[derive(Clone, Debug)]
pub struct DigitalOcean {
    client: Client,
    page_size: u32,
}

/// The registration's constructor (see [`super::catalog::REGISTRY`]).
pub fn connect(_spec: &crate::spec::Spec) -> Result<std::sync::Arc<dyn Provider>> {
    Ok(std::sync::Arc::new(DigitalOcean::from_env(RetryPolicy::default())?))
}

impl DigitalOcean {
    /// From the environment: the token from `DIGITALOCEAN_TOKEN` (or `DIGITALOCEAN_ACCESS_TOKEN`), the API from
    /// `DIGITALOCEAN_API_URL` or `https://api.digitalocean.com`.
    pub fn from_env(policy: RetryPolicy) -> Result<Self> {
        let data = ProviderData::get(ProviderKind::Digitalocean);
        let token = data
            .credentials
            .env
            .iter()
            .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
            .ok_or_else(|| {
                UserError::input("no DigitalOcean token is set")
                    .hint("export DIGITALOCEAN_TOKEN=<a personal access token with read and write scopes>")
            })?;
        let api = data.api.as_ref().expect("providers/digitalocean.yaml has an api section");
        let url = api.url_env.iter().find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty())).unwrap_or_else(|| api.url.clone());
        Self::new(&url, Secret::new(token.trim()), policy)
    }

    /// For the API at `base_url` (without `/v2`) with `token`.
    pub fn new(base_url: &str, token: Secret, policy: RetryPolicy) -> Result<Self> {
        Ok(Self { client: Client::new(base_url, Auth::Bearer(token), STYLE, policy)?, page_size: MAX_PAGE_SIZE })
    }

    /// Items asked for per page of a list (1-200; the default is 200, the fewest requests).
    pub fn with_page_size(mut self, page_size: u32) -> Self {
        self.page_size = page_size.clamp(1, MAX_PAGE_SIZE);
        self
    }

    /// The HTTP client (its request counters, its base URL).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Every item under `key` of a paginated list, following `links.pages.next`.
    async fn list_all<T: DeserializeOwned>(&self, path: &str, key: &str, filter: Option<(&str, &str)>) -> Result<Vec<T>> {
        let mut items = Vec::new();
        for page in 1..=MAX_PAGES {
            let mut req = self.client.request(Method::GET, path).query("page", page).query("per_page", self.page_size);
            if let Some((k, v)) = filter {
                req = req.query(k, v);
            }
            let reply = req.send().await?;
            let body: ListPage = reply.json()?;
            let Some(list) = body.items.get(key) else {
                return Err(UserError::failed(format!("{} returned a body sfuctl cannot read", reply.operation))
                    .caused_by(anyhow::anyhow!("it has no `{key}` list"))
                    .into());
            };
            let list: Vec<T> = Vec::<T>::deserialize(list).map_err(|e| {
                UserError::failed(format!("{} returned a body sfuctl cannot read", reply.operation)).caused_by(anyhow::anyhow!("`{key}`: {e}"))
            })?;
            let empty = list.is_empty();
            items.extend(list);
            let next = body.links.and_then(|l| l.pages).and_then(|p| p.next).is_some();
            if !next || empty {
                break;
            }
        }
        Ok(items)
    }

    /// Lists droplets carrying the owner's tag.
    pub async fn list_servers(&self, owner: &Owner) -> Result<Vec<Server>> {
        let tag = owner.tag();
        let droplets: Vec<Droplet> = self
            .list_all("/v2/droplets", "droplets", Some(("tag_name", &tag)))
            .await
            .map_err(failed(format!("cannot list the droplets tagged `{tag}` on DigitalOcean")))?;
        Ok(droplets.into_iter().map(Droplet::into_server).collect())
    }

    /// One droplet; `None` when it is gone.
    pub async fn get_server(&self, id: &ServerId) -> Result<Option<Server>> {
        let droplet = droplet_id(id)?;
        let reply = self
            .client
            .request(Method::GET, &format!("/v2/droplets/{droplet}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot read droplet {droplet} on DigitalOcean")))?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        Ok(Some(reply.json::<DropletBody>()?.droplet.into_server()))
    }

    /// Creates a droplet and returns it as the API first shows it (`Pending`, no addresses yet). A create whose
    /// answer was lost comes back as an error marked `maybe_applied`; the engine looks before it creates again.
    pub async fn create_server(&self, req: &ServerRequest) -> Result<Server> {
        let what = || format!("cannot create droplet `{}` on DigitalOcean", req.name);
        let body = create_droplet_body(req).map_err(failed(what()))?;
        let reply = self.client.request(Method::POST, "/v2/droplets").json(&body).send().await.map_err(failed(what()))?;
        Ok(reply.json::<DropletBody>().map_err(failed(what()))?.droplet.into_server())
    }

    /// Deletes a droplet; one already gone is success.
    pub async fn delete_server(&self, id: &ServerId) -> Result<()> {
        let droplet = droplet_id(id)?;
        self.client
            .request(Method::DELETE, &format!("/v2/droplets/{droplet}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot delete droplet {droplet} on DigitalOcean")))?;
        Ok(())
    }

    /// The firewall named `sfuctl-<name>` (DigitalOcean firewalls carry no tags of their own).
    pub async fn list_firewalls(&self, owner: &Owner) -> Result<Vec<Firewall>> {
        let name = owner.firewall_name();
        let all: Vec<DoFirewall> =
            self.list_all("/v2/firewalls", "firewalls", None).await.map_err(failed(format!("cannot list the firewalls on DigitalOcean (looking for `{name}`)")))?;
        Ok(all.into_iter().filter(|f| f.name == name).map(DoFirewall::into_firewall).collect())
    }

    /// One firewall; `None` when it is gone.
    pub async fn get_firewall(&self, id: &FirewallId) -> Result<Option<Firewall>> {
        let fw = firewall_id(id)?;
        let reply = self
            .client
            .request(Method::GET, &format!("/v2/firewalls/{fw}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot read firewall {fw} on DigitalOcean")))?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        Ok(Some(reply.json::<FirewallBody>()?.firewall.into_firewall()))
    }

    /// Creates the firewall attached to the owner tag, or updates `existing` in place (keeping its tags and
    /// droplets). Sends nothing when `existing` already matches.
    pub async fn put_firewall(&self, req: &FirewallRequest, existing: Option<&Firewall>) -> Result<Firewall> {
        let tag = req.owner.tag();
        let Some(existing) = existing else {
            let what = || format!("cannot create firewall `{}` on DigitalOcean", req.name);
            self.ensure_tag(&tag).await.map_err(failed(what()))?;
            let body = firewall_body(req, std::slice::from_ref(&tag), &numeric_ids(&req.server_ids)?);
            return match self.client.request(Method::POST, "/v2/firewalls").json(&body).send().await {
                Ok(reply) => Ok(reply.json::<FirewallBody>().map_err(failed(what()))?.firewall.into_firewall()),
                // 409: the name is taken, most likely by our own create whose answer was lost. Take it over.
                Err(e) if http::api_status(&e) == Some(409) || http::maybe_applied(&e) => {
                    let found = self.list_firewalls(&req.owner).await?.into_iter().find(|f| f.name == req.name);
                    match found {
                        Some(found) => Box::pin(self.put_firewall(req, Some(&found))).await,
                        None => Err(failed(what())(e)),
                    }
                }
                Err(e) => Err(failed(what())(e)),
            };
        };
        let attached_by_tag = existing.tags.contains(&tag);
        let servers_attached = req.server_ids.iter().all(|id| existing.server_ids.contains(id));
        if existing.name == req.name && existing.diff_rules(&req.rules).is_empty() && existing.outbound_ok && attached_by_tag && servers_attached {
            return Ok(existing.clone());
        }
        let what = || format!("cannot update firewall `{}` ({}) on DigitalOcean", existing.name, existing.id);
        if !attached_by_tag {
            self.ensure_tag(&tag).await.map_err(failed(what()))?;
        }
        // PUT is a full replace: whatever is attached now stays attached.
        let tags: Vec<String> = existing.tags.iter().cloned().chain(std::iter::once(tag)).collect::<BTreeSet<_>>().into_iter().collect();
        let ids: BTreeSet<u64> = numeric_ids(&existing.server_ids)?.into_iter().chain(numeric_ids(&req.server_ids)?).collect();
        let body = firewall_body(req, &tags, &ids.into_iter().collect::<Vec<_>>());
        let fw = firewall_id(&existing.id)?;
        let reply = self.client.request(Method::PUT, &format!("/v2/firewalls/{fw}")).json(&body).send().await.map_err(failed(what()))?;
        Ok(reply.json::<FirewallBody>().map_err(failed(what()))?.firewall.into_firewall())
    }

    /// Deletes a firewall; one already gone is success.
    pub async fn delete_firewall(&self, id: &FirewallId) -> Result<()> {
        let fw = firewall_id(id)?;
        self.client
            .request(Method::DELETE, &format!("/v2/firewalls/{fw}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot delete firewall {fw} on DigitalOcean")))?;
        Ok(())
    }

    /// Creates a tag (idempotent on DigitalOcean: an existing tag answers 201 as well).
    async fn ensure_tag(&self, tag: &str) -> Result<()> {
        self.client.request(Method::POST, "/v2/tags").json(&json!({ "name": tag })).retry(Retry::Always).send().await?;
        Ok(())
    }

    /// Finds the key by its fingerprint, or registers it under `name`.
    pub async fn ensure_ssh_key(&self, name: &str, public_key: &str) -> Result<(SshKey, bool)> {
        let (line, fingerprint) = md5_fingerprint(public_key)?;
        let what = || format!("cannot register the SSH key `{name}` ({fingerprint}) on DigitalOcean");
        if let Some(key) = self.get_key(&fingerprint).await.map_err(failed(what()))? {
            return Ok((key, false));
        }
        let body = json!({ "name": name, "public_key": line });
        match self.client.request(Method::POST, "/v2/account/keys").json(&body).send().await {
            Ok(reply) => Ok((reply.json::<KeyBody>().map_err(failed(what()))?.ssh_key.into_key(), true)),
            // 422 "already in use": registered meanwhile (by a parallel run); a lost answer: maybe by us.
            Err(e) if http::api_status(&e) == Some(422) || http::maybe_applied(&e) => {
                match self.get_key(&fingerprint).await.map_err(failed(what()))? {
                    Some(key) => Ok((key, http::maybe_applied(&e))),
                    None => Err(failed(what())(e)),
                }
            }
            Err(e) => Err(failed(what())(e)),
        }
    }

    /// Finds a registered key by the fingerprint of `public_key`, without registering it.
    pub async fn find_ssh_key(&self, public_key: &str) -> Result<Option<SshKey>> {
        let (_, fingerprint) = md5_fingerprint(public_key)?;
        self.get_key(&fingerprint).await.map_err(failed(format!("cannot look up the SSH key {fingerprint} on DigitalOcean")))
    }

    async fn get_key(&self, fingerprint: &str) -> Result<Option<SshKey>> {
        let reply = self.client.request(Method::GET, &format!("/v2/account/keys/{fingerprint}")).accept(404).send().await?;
        if reply.status.as_u16() == 404 {
            return Ok(None);
        }
        Ok(Some(reply.json::<KeyBody>()?.ssh_key.into_key()))
    }

    /// Deletes a registered key; one already gone is success.
    pub async fn delete_ssh_key(&self, id: &SshKeyId) -> Result<()> {
        let key = key_ident(id)?;
        self.client
            .request(Method::DELETE, &format!("/v2/account/keys/{key}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot delete SSH key {key} on DigitalOcean")))?;
        Ok(())
    }

    /// Deletes the owner tag once no droplet carries it (deleting it earlier would untag live droplets and hide
    /// them from sfuctl).
    pub async fn forget_owner(&self, owner: &Owner) -> Result<()> {
        let tag = owner.tag();
        // Counted on sfuctl's side: a list that ignored its filter must not keep the tag alive forever.
        let left: Vec<Server> = self.list_servers(owner).await?.into_iter().filter(|s| s.tags.contains(&tag)).collect();
        if !left.is_empty() {
            return Err(UserError::failed(format!("not deleting the tag `{tag}` on DigitalOcean: {} droplet(s) still carry it", left.len())).into());
        }
        self.client
            .request(Method::DELETE, &format!("/v2/tags/{tag}"))
            .accept(404)
            .send()
            .await
            .map_err(failed(format!("cannot delete the tag `{tag}` on DigitalOcean")))?;
        Ok(())
    }

    /// `GET /v2/regions`, `GET /v2/sizes` and `GET /v2/images`: the spec's region must be open for new droplets,
    /// its size offered there and its image (slug or ID) one the account may use; otherwise bad input listing what
    /// is.
    pub async fn check_choices(&self, req: &ServerRequest) -> Result<()> {
        let regions: Vec<Choice> =
            self.list_all("/v2/regions", "regions", None).await.map_err(failed("cannot list the regions on DigitalOcean (GET /v2/regions)".into()))?;
        let open: Vec<String> = regions.into_iter().filter(|r| r.available).map(|r| r.slug).collect();
        if !open.contains(&req.region) {
            return Err(unknown_choice(STYLE.title, "provider.region", &req.region, &open, "GET /v2/regions"));
        }
        let sizes: Vec<Choice> = self.list_all("/v2/sizes", "sizes", None).await.map_err(failed("cannot list the sizes on DigitalOcean (GET /v2/sizes)".into()))?;
        let here: Vec<String> = sizes.into_iter().filter(|s| s.available && s.regions.contains(&req.region)).map(|s| s.slug).collect();
        if !here.contains(&req.size) {
            return Err(unknown_choice(STYLE.title, "provider.size", &req.size, &here, &format!("GET /v2/sizes, in {}", req.region)));
        }
        if req.image.is_empty() {
            return Ok(());
        }
        // Every image the account may use: public distributions and applications, and its own snapshots (by ID).
        let images: Vec<ImageChoice> = self.list_all("/v2/images", "images", None).await.map_err(failed("cannot list the images on DigitalOcean (GET /v2/images)".into()))?;
        if images.iter().any(|i| i.slug.as_deref() == Some(req.image.as_str()) || i.id.to_string() == req.image) {
            return Ok(());
        }
        let slugs: Vec<String> = images.into_iter().filter_map(|i| i.slug).collect();
        Err(unknown_choice(STYLE.title, "provider.image", &req.image, &slugs, "GET /v2/images"))
    }
}

impl Provider for DigitalOcean {
    fn check_choices<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, ()> {
        Box::pin(DigitalOcean::check_choices(self, req))
    }

    fn name(&self) -> &'static str {
        STYLE.title
    }

    fn requests(&self) -> RequestStats {
        self.client.stats()
    }

    fn list_servers<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Server>> {
        Box::pin(DigitalOcean::list_servers(self, owner))
    }

    fn get_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, Option<Server>> {
        Box::pin(DigitalOcean::get_server(self, id))
    }

    fn create_server<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, Server> {
        Box::pin(DigitalOcean::create_server(self, req))
    }

    fn delete_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, ()> {
        Box::pin(DigitalOcean::delete_server(self, id))
    }

    fn list_firewalls<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Firewall>> {
        Box::pin(DigitalOcean::list_firewalls(self, owner))
    }

    fn get_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, Option<Firewall>> {
        Box::pin(DigitalOcean::get_firewall(self, id))
    }

    fn put_firewall<'a>(&'a self, req: &'a FirewallRequest, existing: Option<&'a Firewall>) -> ProviderFuture<'a, Firewall> {
        Box::pin(DigitalOcean::put_firewall(self, req, existing))
    }

    fn delete_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, ()> {
        Box::pin(DigitalOcean::delete_firewall(self, id))
    }

    fn find_ssh_key<'a>(&'a self, public_key: &'a str) -> ProviderFuture<'a, Option<SshKey>> {
        Box::pin(DigitalOcean::find_ssh_key(self, public_key))
    }

    fn ensure_ssh_key<'a>(&'a self, name: &'a str, public_key: &'a str) -> ProviderFuture<'a, (SshKey, bool)> {
        Box::pin(DigitalOcean::ensure_ssh_key(self, name, public_key))
    }

    fn delete_ssh_key<'a>(&'a self, id: &'a SshKeyId) -> ProviderFuture<'a, ()> {
        Box::pin(DigitalOcean::delete_ssh_key(self, id))
    }

    fn forget_owner<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, ()> {
        Box::pin(DigitalOcean::forget_owner(self, owner))
    }
}

/// Wraps a lower error in a message naming what failed, keeping its chain (and hints) below.
fn failed(what: String) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
    move |e| UserError::failed(what).caused_by(e).into()
}

fn droplet_id(id: &ServerId) -> Result<u64> {
    id.0.trim().parse().map_err(|_| UserError::failed(format!("`{id}` is not a DigitalOcean droplet id (a number)")).into())
}

fn numeric_ids(ids: &[ServerId]) -> Result<Vec<u64>> {
    ids.iter().map(droplet_id).collect()
}

fn firewall_id(id: &FirewallId) -> Result<&str> {
    let s = id.0.as_str();
    let uuid = s.len() == 36 && s.chars().enumerate().all(|(i, c)| if [8, 13, 18, 23].contains(&i) { c == '-' } else { c.is_ascii_hexdigit() });
    if uuid { Ok(s) } else { Err(UserError::failed(format!("`{s}` is not a DigitalOcean firewall id (a UUID)")).into()) }
}

fn key_ident(id: &SshKeyId) -> Result<&str> {
    let s = id.0.as_str();
    let ok = !s.is_empty() && s.chars().all(|c| c.is_ascii_hexdigit() || c == ':');
    if ok { Ok(s) } else { Err(UserError::failed(format!("`{s}` is not a DigitalOcean SSH key id or fingerprint")).into()) }
}

/// The key line DigitalOcean should get (`type base64 [comment]`, options dropped) and its fingerprint: the MD5
/// of the decoded key blob in colon-hex, as `ssh-keygen -l -E md5` prints it.
pub fn md5_fingerprint(public_key: &str) -> Result<(String, String)> {
    let bad = |why: &str| -> anyhow::Error {
        UserError::input(format!("the SSH public key is not an OpenSSH public key line: {why}"))
            .hint("use the contents of a `.pub` file, e.g. `ssh-ed25519 AAAA… you@host`")
            .into()
    };
    let line = public_key.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).ok_or_else(|| bad("it is empty"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let start = words
        .iter()
        .position(|w| w.starts_with("ssh-") || w.starts_with("ecdsa-") || w.starts_with("sk-"))
        .ok_or_else(|| bad("no key type such as `ssh-ed25519`"))?;
    let kind = words[start];
    let data = words.get(start + 1).ok_or_else(|| bad("no key data after the key type"))?;
    let blob = base64::engine::general_purpose::STANDARD.decode(data).map_err(|_| bad("the key data is not base64"))?;
    let declared = blob.get(..4).map(|n| u32::from_be_bytes([n[0], n[1], n[2], n[3]]) as usize);
    let inner_kind = declared.and_then(|n| blob.get(4..4 + n)).map(String::from_utf8_lossy);
    if inner_kind.as_deref() != Some(kind) {
        return Err(bad("the key data does not match its type"));
    }
    let digest = Md5::digest(&blob);
    let fingerprint = digest.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
    Ok((words[start..].join(" "), fingerprint))
}

fn create_droplet_body(req: &ServerRequest) -> Result<Value> {
    if let Some(data) = &req.user_data
        && data.len() > 64 * 1024
    {
        return Err(UserError::failed(format!("the cloud-init user data is {} bytes; DigitalOcean takes at most 64 KiB", data.len())).into());
    }
    // SSH keys and images go as numbers when they are ids, as strings when they are fingerprints or slugs.
    let number_or_text = |s: &str| s.parse::<u64>().map_or_else(|_| json!(s), |n| json!(n));
    let mut body = json!({
        "name": req.name,
        "region": req.region,
        "size": req.size,
        "image": number_or_text(&req.image),
        "ssh_keys": req.ssh_key_ids.iter().map(|k| number_or_text(&k.0)).collect::<Vec<_>>(),
        "tags": req.tags,
        "ipv6": req.ipv6,
    });
    if let Some(data) = &req.user_data {
        body["user_data"] = json!(data);
    }
    Ok(body)
}

/// Outbound allow-all: tcp and udp on every port, icmp (whose `ports` the document requires; `"0"` is what the
/// API reads back for ICMP).
fn outbound_rules() -> Value {
    let everywhere = json!({ "addresses": ["0.0.0.0/0", "::/0"] });
    json!([
        { "protocol": "tcp", "ports": "1-65535", "destinations": everywhere },
        { "protocol": "udp", "ports": "1-65535", "destinations": everywhere },
        { "protocol": "icmp", "ports": "0", "destinations": everywhere },
    ])
}

fn firewall_body(req: &FirewallRequest, tags: &[String], droplet_ids: &[u64]) -> Value {
    let inbound: Vec<Value> = req
        .rules
        .iter()
        .map(|r| {
            json!({
                "protocol": r.protocol.to_string(),
                // Explicit always: PortRange prints `443` or `40000-41000`, never "0" or "all".
                "ports": r.ports.to_string(),
                "sources": { "addresses": r.sources.iter().map(ToString::to_string).collect::<Vec<_>>() },
            })
        })
        .collect();
    json!({
        "name": req.name,
        "inbound_rules": inbound,
        "outbound_rules": outbound_rules(),
        "tags": tags,
        "droplet_ids": droplet_ids,
    })
}

// ---------------------------------------------------------------------------------------------------------------
// What the API returns. Every field that might be missing or null is an Option, so odd data is never a panic.

#[derive(Deserialize)]
struct ListPage {
    links: Option<Links>,
    #[serde(flatten)]
    items: serde_json::Map<String, Value>,
}

#[derive(Deserialize)]
struct Links {
    pages: Option<Pages>,
}

#[derive(Deserialize)]
struct Pages {
    next: Option<String>,
}

#[derive(Deserialize)]
struct DropletBody {
    droplet: Droplet,
}

#[derive(Deserialize)]
struct Droplet {
    id: u64,
    name: String,
    status: Option<String>,
    networks: Option<Networks>,
    tags: Option<Vec<String>>,
    region: Option<Region>,
}

#[derive(Deserialize)]
struct Networks {
    v4: Option<Vec<Network>>,
    v6: Option<Vec<Network>>,
}

#[derive(Deserialize)]
struct Network {
    ip_address: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

#[derive(Deserialize)]
struct Region {
    slug: Option<String>,
}

impl Droplet {
    fn into_server(self) -> Server {
        let public = |nets: Option<Vec<Network>>| -> Option<IpAddr> {
            nets.unwrap_or_default()
                .into_iter()
                .filter(|n| n.kind.as_deref() == Some("public"))
                .find_map(|n| n.ip_address?.trim().parse::<IpAddr>().ok())
        };
        let (v4, v6) = self.networks.map_or((None, None), |n| (n.v4, n.v6));
        let status = match self.status.as_deref() {
            Some("new") => ServerStatus::Pending,
            Some("active") => ServerStatus::Running,
            Some("off") => ServerStatus::Off,
            Some("archive") => ServerStatus::Gone,
            Some(other) => ServerStatus::Other(other.to_string()),
            None => ServerStatus::Other("unknown".into()),
        };
        Server {
            id: ServerId(self.id.to_string()),
            name: self.name,
            status,
            public_ipv4: public(v4).filter(IpAddr::is_ipv4),
            public_ipv6: public(v6).filter(IpAddr::is_ipv6),
            tags: self.tags.unwrap_or_default(),
            region: self.region.and_then(|r| r.slug),
        }
    }
}

#[derive(Deserialize)]
struct FirewallBody {
    firewall: DoFirewall,
}

#[derive(Deserialize)]
struct DoFirewall {
    id: String,
    name: String,
    status: Option<String>,
    inbound_rules: Option<Vec<DoRule>>,
    outbound_rules: Option<Vec<DoRule>>,
    droplet_ids: Option<Vec<u64>>,
    tags: Option<Vec<String>>,
    pending_changes: Option<Vec<Value>>,
}

#[derive(Deserialize)]
struct DoRule {
    protocol: Option<String>,
    ports: Option<String>,
    sources: Option<Target>,
    destinations: Option<Target>,
}

#[derive(Deserialize, Default)]
struct Target {
    addresses: Option<Vec<String>>,
    droplet_ids: Option<Vec<u64>>,
    tags: Option<Vec<String>>,
    load_balancer_uids: Option<Vec<String>>,
    kubernetes_ids: Option<Vec<String>>,
}

impl Target {
    /// The addresses as CIDRs, or `None` when anything else is in it (tags, droplets, unparsable addresses).
    fn only_addresses(&self) -> Option<Vec<IpNet>> {
        let others = self.droplet_ids.as_ref().is_some_and(|v| !v.is_empty())
            || self.tags.as_ref().is_some_and(|v| !v.is_empty())
            || self.load_balancer_uids.as_ref().is_some_and(|v| !v.is_empty())
            || self.kubernetes_ids.as_ref().is_some_and(|v| !v.is_empty());
        if others {
            return None;
        }
        self.addresses.as_deref().unwrap_or_default().iter().map(|a| parse_net(a)).collect()
    }

    fn describe(&self) -> String {
        let mut parts = Vec::new();
        let list = |name: &str, v: Vec<String>, parts: &mut Vec<String>| {
            if !v.is_empty() {
                parts.push(format!("{name} {}", v.join(", ")));
            }
        };
        list("addresses", self.addresses.clone().unwrap_or_default(), &mut parts);
        list("droplets", self.droplet_ids.clone().unwrap_or_default().iter().map(u64::to_string).collect(), &mut parts);
        list("tags", self.tags.clone().unwrap_or_default(), &mut parts);
        list("load balancers", self.load_balancer_uids.clone().unwrap_or_default(), &mut parts);
        list("kubernetes", self.kubernetes_ids.clone().unwrap_or_default(), &mut parts);
        if parts.is_empty() { "nothing".into() } else { parts.join("; ") }
    }
}

fn parse_net(raw: &str) -> Option<IpNet> {
    let raw = raw.trim();
    raw.parse::<IpNet>().ok().or_else(|| raw.parse::<IpAddr>().ok().map(IpNet::from))
}

/// DigitalOcean's port string as a range: `"0"`, `"all"`, `""` and missing all mean every port.
pub fn parse_ports(raw: Option<&str>) -> Option<PortRange> {
    match raw.map(str::trim) {
        None | Some("" | "0" | "all") => Some(FirewallRule::ALL_PORTS),
        Some(s) => s.parse::<PortRange>().ok().filter(|r| r.start >= 1 && !r.is_empty()),
    }
}

fn protocol(raw: Option<&str>) -> Option<Protocol> {
    match raw.map(|p| p.trim().to_ascii_lowercase()).as_deref() {
        Some("tcp") => Some(Protocol::Tcp),
        Some("udp") => Some(Protocol::Udp),
        _ => None,
    }
}

impl DoFirewall {
    fn into_firewall(self) -> Firewall {
        let mut rules = Vec::new();
        let mut other = Vec::new();
        for r in self.inbound_rules.unwrap_or_default() {
            let sources = r.sources.unwrap_or_default();
            match (protocol(r.protocol.as_deref()), parse_ports(r.ports.as_deref()), sources.only_addresses()) {
                (Some(p), Some(ports), Some(nets)) if !nets.is_empty() => rules.push(FirewallRule::new(p, ports, nets)),
                _ => other.push(format!(
                    "{} {} from {}",
                    r.protocol.as_deref().unwrap_or("?"),
                    r.ports.as_deref().unwrap_or("(no ports)"),
                    sources.describe()
                )),
            }
        }
        rules.sort();
        rules.dedup();
        // Outbound is fine when tcp, udp and icmp each reach 0.0.0.0/0 and ::/0 on every port.
        let mut reach = BTreeSet::new();
        for r in self.outbound_rules.unwrap_or_default() {
            let proto = r.protocol.as_deref().map(str::to_ascii_lowercase).unwrap_or_default();
            let all_ports = proto == "icmp" || parse_ports(r.ports.as_deref()) == Some(FirewallRule::ALL_PORTS);
            let Some(nets) = r.destinations.unwrap_or_default().only_addresses() else { continue };
            if all_ports {
                for net in nets.iter().filter(|n| n.prefix_len() == 0) {
                    reach.insert((proto.clone(), net.addr().is_ipv4()));
                }
            }
        }
        let outbound_ok = ["tcp", "udp", "icmp"].iter().all(|p| reach.contains(&(p.to_string(), true)) && reach.contains(&(p.to_string(), false)));
        let status = self.status.unwrap_or_else(|| "unknown".into());
        let ready = status == "succeeded" && self.pending_changes.as_ref().is_none_or(Vec::is_empty);
        Firewall {
            id: FirewallId(self.id),
            name: self.name,
            rules,
            other_inbound: other,
            ready,
            status,
            server_ids: self.droplet_ids.unwrap_or_default().into_iter().map(|id| ServerId(id.to_string())).collect(),
            tags: self.tags.unwrap_or_default(),
            outbound_ok,
        }
    }
}

#[derive(Deserialize)]
struct KeyBody {
    ssh_key: DoKey,
}

#[derive(Deserialize)]
struct DoKey {
    id: u64,
    fingerprint: Option<String>,
    name: Option<String>,
}

impl DoKey {
    fn into_key(self) -> SshKey {
        SshKey { id: SshKeyId(self.id.to_string()), fingerprint: self.fingerprint.unwrap_or_default(), name: self.name.unwrap_or_default() }
    }
}

/// An image of `GET /v2/images`: its ID and, for public images, its slug.
#[derive(Debug, Deserialize)]
struct ImageChoice {
    id: u64,
    #[serde(default)]
    slug: Option<String>,
}

/// A region or size of `GET /v2/regions` / `GET /v2/sizes`: its slug, whether new droplets may use it, and (sizes)
/// the regions that offer it.
#[derive(Debug, Deserialize)]
struct Choice {
    slug: String,
    #[serde(default)]
    available: bool,
    #[serde(default)]
    regions: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    // `ssh-keygen -l -E md5` of this key prints MD5:6f:da:2d:83:ce:03:2a:35:30:16:fb:38:1d:95:ac:72.
    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm test@sfuctl";

    #[test]
    fn parses_the_error_body() {
        let d = error_message(br#"{"id":"unprocessable_entity","message":"ports must be a string","request_id":"x"}"#).unwrap();
        assert_eq!(d, ProviderMessage { code: Some("unprocessable_entity".into()), message: "ports must be a string".into() });
        assert!(error_message(b"<html>bad gateway</html>").is_none());
    }

    #[test]
    fn fingerprint_is_md5_of_the_blob() {
        let (line, fp) = md5_fingerprint(&format!("no-pty {KEY}\n")).unwrap();
        assert_eq!(line, KEY);
        assert_eq!(fp, "6f:da:2d:83:ce:03:2a:35:30:16:fb:38:1d:95:ac:72");
        assert!(md5_fingerprint("ssh-rsa AAAAC3NzaC1lZDI1NTE5AAAAIMiUZBmwUBMwwQNNV+aldxkNLIDCr5Wa8Hu4X5NRP8Xm").is_err(), "type mismatch");
        assert!(md5_fingerprint("ssh-ed25519 not-base64!").is_err());
        assert!(md5_fingerprint("").is_err());
    }

    #[test]
    fn ports_normalise() {
        let all = Some(FirewallRule::ALL_PORTS);
        for raw in [None, Some(""), Some("0"), Some("all"), Some("1-65535")] {
            assert_eq!(parse_ports(raw), all, "{raw:?}");
        }
        assert_eq!(parse_ports(Some("40000-41000")), Some(PortRange { start: 40000, end: 41000 }));
        assert_eq!(parse_ports(Some("8-3")), None);
        assert_eq!(parse_ports(Some("ssh")), None);
    }

    #[test]
    fn firewall_reads_nulls_and_odd_rules_without_panicking() {
        let fw: DoFirewall = serde_json::from_value(json!({
            "id": "bb4b2611-3d72-467b-8602-280330ecd65c", "name": "sfuctl-demo", "status": "succeeded",
            "inbound_rules": [
                {"protocol": "tcp", "ports": "22", "sources": {"addresses": ["203.0.113.7"]}},
                {"protocol": "udp", "ports": "40000-41000", "sources": {"addresses": ["::/0", "0.0.0.0/0"]}},
                {"protocol": "icmp", "ports": "0", "sources": {"addresses": ["0.0.0.0/0"]}},
                {"protocol": "tcp", "ports": "80", "sources": {"tags": ["web"]}}
            ],
            "outbound_rules": [
                {"protocol": "tcp", "ports": "0", "destinations": {"addresses": ["0.0.0.0/0", "::/0"]}},
                {"protocol": "udp", "ports": "all", "destinations": {"addresses": ["0.0.0.0/0", "::/0"]}},
                {"protocol": "icmp", "destinations": {"addresses": ["0.0.0.0/0", "::/0"]}}
            ],
            "droplet_ids": null, "tags": null, "pending_changes": []
        }))
        .unwrap();
        let fw = fw.into_firewall();
        assert!(fw.ready && fw.outbound_ok);
        let rules: Vec<String> = fw.rules.iter().map(ToString::to_string).collect();
        assert_eq!(rules, ["udp 40000-41000 from 0.0.0.0/0, ::/0", "tcp 22 from 203.0.113.7/32"]);
        assert_eq!(fw.other_inbound, ["icmp 0 from addresses 0.0.0.0/0", "tcp 80 from tags web"]);
        let waiting: DoFirewall = serde_json::from_value(json!({"id": "x", "name": "n", "status": "succeeded", "pending_changes": [{"droplet_id": 1}]})).unwrap();
        let waiting = waiting.into_firewall();
        assert!(!waiting.ready && !waiting.outbound_ok);
    }

    #[test]
    fn droplet_takes_public_addresses_only() {
        let d: Droplet = serde_json::from_value(json!({
            "id": 7, "name": "sfuctl-demo-1", "status": "active", "tags": ["sfuctl:demo"], "region": {"slug": "fra1"},
            "networks": {"v4": [{"ip_address": "10.10.0.5", "type": "private"}, {"ip_address": "203.0.113.5", "type": "public"}],
                         "v6": [{"ip_address": "2001:db8::2", "type": "public"}]}
        }))
        .unwrap();
        let s = d.into_server();
        assert!(s.is_up());
        assert_eq!(s.public_ipv4, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(s.public_ipv6, Some("2001:db8::2".parse().unwrap()));
        let new: Droplet = serde_json::from_value(json!({"id": 8, "name": "x", "status": "new", "networks": {"v4": null}})).unwrap();
        let new = new.into_server();
        assert_eq!((new.status, new.public_ipv4), (ServerStatus::Pending, None));
    }

    #[test]
    fn ids_are_checked_before_they_reach_a_url() {
        assert!(droplet_id(&ServerId("12".into())).is_ok());
        assert!(droplet_id(&ServerId("../x".into())).is_err());
        assert!(firewall_id(&FirewallId("bb4b2611-3d72-467b-8602-280330ecd65c".into())).is_ok());
        assert!(firewall_id(&FirewallId("bb4b2611/3d72".into())).is_err());
        assert!(key_ident(&SshKeyId("9d:2a".into())).is_ok());
        assert!(key_ident(&SshKeyId("a/b".into())).is_err());
    }
}
