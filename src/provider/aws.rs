//! AWS EC2 (Query API 2016-11-15, SigV4-signed, XML answers): instances tagged `sfuctl=<name>`, one security group
//! `sfuctl-<name>` in the region's default VPC attached at launch, and the key pair `sfuctl-<name>`.
//!
//! Conventions (the owner tag `sfuctl:<name>` of the engine, spelled the AWS way):
//! - Every resource sfuctl makes carries the tag `Key=sfuctl, Value=<name>`; instances also `Name=sfuctl-<name>-<n>`
//!   and the group `Name=sfuctl-<name>`. Normalised records show AWS tags as `key:value`, so the owner tag reads
//!   `sfuctl:<name>` as on every provider.
//! - Servers are the instances with that tag in states pending, running, stopping or stopped. `shutting-down` is
//!   [`ServerStatus::Gone`] when read by id; `terminated` (listed for about an hour) is gone: `get_server` says None.
//! - The firewall is the group named exactly `sfuctl-<name>` that carries the owner tag. A group covers the
//!   instances it is attached to: [`Firewall::server_ids`] lists them, [`Firewall::tags`] is empty.
//!
//! Quirks handled here, each with its reason:
//! - RunInstances carries a ClientToken derived from the whole request (security group and key included), so a
//!   retry after a lost answer returns the same instance. A token whose instance was since terminated (scaling
//!   down then up again with the same group) replays that dead instance: the next token generation is used.
//! - A new group answers `InvalidGroup.NotFound` for a moment, a new instance `InvalidInstanceID.NotFound`
//!   (eventual consistency): both are retried briefly.
//! - `InvalidPermission.Duplicate` on authorize and `InvalidPermission.NotFound` on revoke mean "already so". A
//!   batch that fails that way is replayed one rule at a time, because EC2 rejects the whole batch.
//! - DeleteSecurityGroup answers `DependencyViolation` until the terminated instance's network interface is
//!   released (minutes): that comes back as `Busy`, and the engine calls again, bounded.
//! - Port ranges are checked before they are sent (EC2 rejects an inverted range; moto accepts it).
//! - A new security group allows all IPv4 egress; sfuctl adds IPv6 egress (`::/0`) as well.

pub mod config;
pub mod query;
pub mod xml;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

use anyhow::Result;
use base64::Engine as _;
use ipnet::IpNet;
use sha2::{Digest, Sha256};

use self::config::AwsConfig;
use self::query::{Params, Query};
use super::{
    Busy,
    Firewall, FirewallId, FirewallRequest, FirewallRule, Owner, Provider, ProviderFuture, Server, ServerId, ServerRequest, ServerStatus,
    SshKey, SshKeyId, unknown_choice,
};
use crate::error::UserError;
use crate::http::{RequestStats, RetryPolicy, api_code};
use crate::ports::{PortRange, Protocol};
use crate::spec::Spec;

/// Canonical's AWS account: the owner of the official Ubuntu AMIs.
pub const CANONICAL: &str = "099720109477";
/// The tag key of the owner tag; its value is the deployment's name.
pub const TAG_KEY: &str = "sfuctl";
/// Instance states that still count as a server of the deployment.
const LIVE_STATES: [&str; 4] = ["pending", "running", "stopping", "stopped"];
/// Lists stop after this many pages, whatever NextToken says.
const MAX_PAGES: u32 = 100;
/// ClientToken generations tried when earlier ones replay a terminated instance.
const TOKEN_GENERATIONS: u32 = 20;
/// EC2 takes at most 16 KiB of user data (before base64).
const MAX_USER_DATA: usize = 16 * 1024;

/// The AWS provider.
#[derive(Debug)]
pub struct Aws {
    query: Query,
    region: String,
    /// The newest Canonical AMI per architecture, looked up once per run.
    images: tokio::sync::Mutex<BTreeMap<&'static str, String>>,
    /// Attempts at a read that answers `*.NotFound` right after a create (eventual consistency).
    consistency_attempts: u32,
}

/// The registration's constructor (see [`super::catalog::REGISTRY`]).
pub fn connect(spec: &Spec) -> Result<std::sync::Arc<dyn Provider>> {
    Ok(std::sync::Arc::new(Aws::from_spec(spec, RetryPolicy::default())?))
}

impl Aws {
    /// For a spec: credentials, region and endpoint from the standard chain (see [`config`]).
    pub fn from_spec(spec: &Spec, policy: RetryPolicy) -> Result<Self> {
        Self::new(config::from_process(spec.provider.region.as_deref())?, policy)
    }

    /// For a resolved configuration.
    pub fn new(config: AwsConfig, policy: RetryPolicy) -> Result<Self> {
        let query = Query::new(&config.endpoint, &config.region, config.credentials, policy)?;
        Ok(Self {
            query,
            region: config.region,
            images: tokio::sync::Mutex::new(BTreeMap::new()),
            consistency_attempts: 4,
        })
    }

    /// The region in use.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The signed Query client (its counters).
    pub fn query(&self) -> &Query {
        &self.query
    }

    async fn parsed<T: serde::de::DeserializeOwned>(&self, action: &str, params: &Params) -> Result<T> {
        let body = self.query.call(action, params).await?;
        xml::parse(&body).map_err(|e| {
            let text = String::from_utf8_lossy(&body);
            let start: String = text.split_whitespace().collect::<Vec<_>>().join(" ").chars().take(160).collect();
            UserError::failed(format!("EC2 {action} returned an answer sfuctl cannot read"))
                .caused_by(anyhow::anyhow!("{e} (body starts: `{start}`)"))
                .hint("the endpoint answered in an unexpected format; check AWS_ENDPOINT_URL, or report this with the output above")
                .into()
        })
    }

    /// Calls `action`, retrying `*.NotFound` answers a few times (a resource made a moment ago).
    async fn call_consistent(&self, action: &str, params: &Params, not_found: &str) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.query.call(action, params).await {
                Err(e) if api_code(&e).as_deref() == Some(not_found) && attempt < self.consistency_attempts => {
                    self.query.wait(self.query.policy().backoff(attempt)).await;
                }
                other => return other,
            }
        }
    }

    /// Every instance DescribeInstances returns for `params`, across pages.
    async fn describe_instances(&self, mut params: Params) -> Result<Vec<xml::Instance>> {
        let paged = params.get("InstanceId.1").is_none();
        if paged {
            params.set("MaxResults", 1000);
        }
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: xml::DescribeInstances = self.parsed("DescribeInstances", &params).await?;
            out.extend(page.reservation_set.items.into_iter().flat_map(|r| r.instances_set.items));
            match page.next_token.filter(|t| paged && !t.is_empty()) {
                Some(token) => {
                    params.replace("NextToken", token);
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Instances of the owner that are not terminated or shutting down.
    pub async fn list_servers(&self, owner: &Owner) -> Result<Vec<Server>> {
        let mut params = Params::new();
        params.filter(&format!("tag:{TAG_KEY}"), &[owner.name()]).filter("instance-state-name", &LIVE_STATES);
        let instances = self
            .describe_instances(params)
            .await
            .map_err(failed(format!("cannot list the instances tagged {TAG_KEY}={} on AWS ({})", owner.name(), self.region)))?;
        Ok(instances.into_iter().map(|i| self.server(i)).collect())
    }

    /// One instance; `None` once it is terminated or unknown.
    pub async fn get_server(&self, id: &ServerId) -> Result<Option<Server>> {
        let mut params = Params::new();
        params.set("InstanceId.1", &id.0);
        let what = || format!("cannot read instance {id} on AWS");
        let body = match self.call_consistent("DescribeInstances", &params, "InvalidInstanceID.NotFound").await {
            Ok(body) => body,
            Err(e) if matches!(api_code(&e).as_deref(), Some("InvalidInstanceID.NotFound" | "InvalidInstanceID.Malformed")) => return Ok(None),
            Err(e) => return Err(failed(what())(e)),
        };
        let page: xml::DescribeInstances = xml::parse(&body).map_err(|e| UserError::failed(what()).caused_by(anyhow::anyhow!(e)))?;
        let found = page.reservation_set.items.into_iter().flat_map(|r| r.instances_set.items).find(|i| i.instance_id == id.0);
        Ok(found.filter(|i| state_of(i) != Some("terminated")).map(|i| self.server(i)))
    }

    /// Launches one instance (see the ClientToken note above) and returns it as RunInstances shows it.
    pub async fn create_server(&self, req: &ServerRequest) -> Result<Server> {
        if !req.region.is_empty() && req.region != self.region {
            return Err(UserError::input(format!("instance `{}` is asked for in region `{}`, but sfuctl talks to AWS in `{}`", req.name, req.region, self.region)).into());
        }
        let what = || format!("cannot create instance `{}` on AWS ({})", req.name, self.region);
        let params = self.run_params(req).await.map_err(failed(what()))?;
        let base = client_token(&params);
        for generation in 0..TOKEN_GENERATIONS {
            let mut attempt = params.clone();
            attempt.set("ClientToken", token_generation(&base, generation));
            let reservation: xml::RunInstances = self.parsed("RunInstances", &attempt).await.map_err(failed(what()))?;
            let instance = reservation
                .instances_set
                .items
                .into_iter()
                .next()
                .ok_or_else(|| UserError::failed(what()).caused_by(anyhow::anyhow!("RunInstances returned no instance")))?;
            let server = self.server(instance);
            // A replayed token of an instance deleted since: take the next generation.
            if server.status != ServerStatus::Gone {
                return Ok(server);
            }
        }
        Err(UserError::failed(what())
            .caused_by(anyhow::anyhow!("{TOKEN_GENERATIONS} ClientTokens in a row returned terminated instances"))
            .hint("run `sfuctl down` and `sfuctl up` again: a new security group gives new tokens")
            .into())
    }

    async fn run_params(&self, req: &ServerRequest) -> Result<Params> {
        let firewall = req.firewall_id.as_ref().ok_or_else(|| UserError::failed("an EC2 instance needs its security group at launch, and none was given"))?;
        let key = match req.ssh_key_ids.as_slice() {
            [] => None,
            [one] => Some(one),
            _ => return Err(UserError::input("EC2 takes one key pair per instance; more than one was given").into()),
        };
        let image = self.image_for(req).await?;
        let mut p = Params::new();
        p.set("ImageId", image).set("InstanceType", &req.size).set("MinCount", 1).set("MaxCount", 1);
        if let Some(key) = key {
            p.set("KeyName", &key.0);
        }
        if req.ipv6 {
            // An IPv6 address needs the network interface spelled out; the group then goes inside it.
            p.set("NetworkInterface.1.DeviceIndex", 0)
                .set("NetworkInterface.1.AssociatePublicIpAddress", true)
                .set("NetworkInterface.1.Ipv6AddressCount", 1)
                .set("NetworkInterface.1.SecurityGroupId.1", &firewall.0);
        } else {
            p.set("SecurityGroupId.1", &firewall.0);
        }
        if let Some(data) = &req.user_data {
            if data.len() > MAX_USER_DATA {
                return Err(UserError::failed(format!("the cloud-init user data is {} bytes; EC2 takes at most 16 KiB", data.len())).into());
            }
            p.set("UserData", base64::engine::general_purpose::STANDARD.encode(data));
        }
        p.set("MetadataOptions.HttpTokens", "required");
        p.set("TagSpecification.1.ResourceType", "instance");
        let mut tags: Vec<(String, String)> = req.tags.iter().map(|t| split_tag(t)).collect();
        tags.push(("Name".into(), req.name.clone()));
        for (i, (k, v)) in tags.iter().enumerate() {
            p.set(format!("TagSpecification.1.Tag.{}.Key", i + 1), k).set(format!("TagSpecification.1.Tag.{}.Value", i + 1), v);
        }
        Ok(p)
    }

    /// The spec's image, or the newest Canonical Ubuntu 24.04 AMI for the instance type's architecture.
    async fn image_for(&self, req: &ServerRequest) -> Result<String> {
        if !req.image.trim().is_empty() {
            return Ok(req.image.trim().to_string());
        }
        let arch = architecture(&req.size);
        let mut cache = self.images.lock().await;
        if let Some(found) = cache.get(arch) {
            return Ok(found.clone());
        }
        let mut p = Params::new();
        p.set("Owner.1", CANONICAL)
            .filter("name", &[&format!("ubuntu/images/hvm-ssd*/ubuntu-noble-24.04-{arch}-server-*")])
            .filter("state", &["available"]);
        let images: xml::DescribeImages = self.parsed("DescribeImages", &p).await?;
        let image = newest_image(images.images_set.items, arch).ok_or_else(|| {
            UserError::failed(format!("no Canonical Ubuntu 24.04 {arch} AMI is visible in {}", self.region))
                .hint("set `provider.image` to an AMI id (e.g. from https://cloud-images.ubuntu.com/locator/ec2/)")
        })?;
        cache.insert(arch, image.clone());
        Ok(image)
    }

    /// `DescribeInstanceTypeOfferings` in the region: the spec's instance type must be one the region offers;
    /// otherwise bad input listing those it does. (The region is the endpoint's; an image is an AMI id checked by
    /// `RunInstances` itself.)
    pub async fn check_choices(&self, req: &ServerRequest) -> Result<()> {
        let mut params = Params::new();
        params.set("LocationType", "region").set("MaxResults", 1000);
        let mut offered = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: xml::DescribeInstanceTypeOfferings = self.parsed("DescribeInstanceTypeOfferings", &params).await?;
            offered.extend(page.instance_type_offering_set.items.into_iter().map(|o| o.instance_type));
            match page.next_token.filter(|t| !t.is_empty()) {
                Some(token) => {
                    params.replace("NextToken", token);
                }
                None => break,
            }
        }
        if offered.contains(&req.size) {
            return Ok(());
        }
        Err(unknown_choice("AWS", "provider.size", &req.size, &offered, &format!("DescribeInstanceTypeOfferings in {}", self.region)))
    }

    /// Terminates an instance; one already gone is success.
    pub async fn delete_server(&self, id: &ServerId) -> Result<()> {
        let mut p = Params::new();
        p.set("InstanceId.1", &id.0);
        match self.query.call("TerminateInstances", &p).await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e).as_deref() == Some("InvalidInstanceID.NotFound") => Ok(()),
            Err(e) => Err(failed(format!("cannot terminate instance {id} on AWS"))(e)),
        }
    }

    async fn describe_groups(&self, params: Params) -> Result<Vec<xml::SecurityGroup>> {
        let mut params = params;
        let paged = params.get("GroupId.1").is_none();
        if paged {
            params.set("MaxResults", 1000);
        }
        let mut out = Vec::new();
        for _ in 0..MAX_PAGES {
            let page: xml::DescribeSecurityGroups = self.parsed("DescribeSecurityGroups", &params).await?;
            out.extend(page.security_group_info.items);
            match page.next_token.filter(|t| paged && !t.is_empty()) {
                Some(token) => {
                    params.replace("NextToken", token);
                }
                None => break,
            }
        }
        Ok(out)
    }

    /// Groups named exactly `name` (any tags).
    async fn groups_named(&self, name: &str) -> Result<Vec<xml::SecurityGroup>> {
        let mut p = Params::new();
        p.filter("group-name", &[name]);
        Ok(self.describe_groups(p).await?.into_iter().filter(|g| g.group_name.as_deref() == Some(name)).collect())
    }

    /// One group by id, `None` when it is gone.
    async fn group(&self, id: &FirewallId) -> Result<Option<xml::SecurityGroup>> {
        let mut p = Params::new();
        p.set("GroupId.1", &id.0);
        match self.call_consistent("DescribeSecurityGroups", &p, "InvalidGroup.NotFound").await {
            Ok(body) => {
                let page: xml::DescribeSecurityGroups = xml::parse(&body).map_err(|e| UserError::failed(format!("EC2 DescribeSecurityGroups returned an answer sfuctl cannot read: {e}")))?;
                Ok(page.security_group_info.items.into_iter().find(|g| g.group_id == id.0))
            }
            Err(e) if matches!(api_code(&e).as_deref(), Some("InvalidGroup.NotFound" | "InvalidGroupId.Malformed")) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The group as a [`Firewall`], with the live instances it is attached to.
    async fn firewall(&self, group: xml::SecurityGroup) -> Result<Firewall> {
        let mut p = Params::new();
        p.filter("instance.group-id", &[&group.group_id]).filter("instance-state-name", &LIVE_STATES);
        let attached = self.describe_instances(p).await?;
        let mut fw = normalise_group(&group);
        fw.server_ids = attached.into_iter().map(|i| ServerId(i.instance_id)).collect();
        fw.server_ids.sort();
        Ok(fw)
    }

    /// The group `sfuctl-<name>` that carries the owner tag.
    pub async fn list_firewalls(&self, owner: &Owner) -> Result<Vec<Firewall>> {
        let name = owner.firewall_name();
        let what = || format!("cannot list the security groups named `{name}` on AWS ({})", self.region);
        let groups = self.groups_named(&name).await.map_err(failed(what()))?;
        let mut out = Vec::new();
        for g in groups.into_iter().filter(|g| owned_by(&g.tag_set.items, owner)) {
            out.push(self.firewall(g).await.map_err(failed(what()))?);
        }
        Ok(out)
    }

    /// One security group; `None` when it is gone.
    pub async fn get_firewall(&self, id: &FirewallId) -> Result<Option<Firewall>> {
        let what = || format!("cannot read security group {id} on AWS");
        match self.group(id).await.map_err(failed(what()))? {
            Some(g) => Ok(Some(self.firewall(g).await.map_err(failed(what()))?)),
            None => Ok(None),
        }
    }

    /// Creates the group (tagged, default VPC) or brings `existing` in line: authorizes what is missing, revokes
    /// what the manifest no longer has (rules sfuctl cannot represent included), adds allow-all egress if
    /// missing. Sends nothing when `existing` already matches.
    pub async fn put_firewall(&self, req: &FirewallRequest, existing: Option<&Firewall>) -> Result<Firewall> {
        for rule in &req.rules {
            check_rule(rule)?;
        }
        if let Some(fw) = existing
            && fw.name == req.name
            && fw.diff_rules(&req.rules).is_empty()
            && fw.outbound_ok
        {
            return Ok(fw.clone());
        }
        let (group, what) = match existing {
            Some(fw) => {
                let what = format!("cannot update security group `{}` ({}) on AWS", fw.name, fw.id);
                let group = self.group(&fw.id).await.map_err(failed(what.clone()))?;
                let group = group.ok_or_else(|| UserError::failed(what.clone()).caused_by(anyhow::anyhow!("it no longer exists; run `up` again")))?;
                (group, what)
            }
            None => {
                let what = format!("cannot create security group `{}` on AWS ({})", req.name, self.region);
                (self.create_group(req).await.map_err(failed(what.clone()))?, what)
            }
        };
        let id = FirewallId(group.group_id.clone());
        let plan = RulePlan::new(&group, &req.rules);
        self.permissions("AuthorizeSecurityGroupIngress", &id, &plan.authorize, "InvalidPermission.Duplicate").await.map_err(failed(what.clone()))?;
        self.permissions("RevokeSecurityGroupIngress", &id, &plan.revoke, "InvalidPermission.NotFound").await.map_err(failed(what.clone()))?;
        self.permissions("AuthorizeSecurityGroupEgress", &id, &plan.egress, "InvalidPermission.Duplicate").await.map_err(failed(what.clone()))?;
        let group = self.group(&id).await.map_err(failed(what.clone()))?;
        let group = group.ok_or_else(|| UserError::failed(what.clone()).caused_by(anyhow::anyhow!("it disappeared right after the change")))?;
        self.firewall(group).await.map_err(failed(what))
    }

    /// CreateSecurityGroup, or takes over a group of that name that is ours (a create whose answer was lost).
    /// Returns the group as it is right after creation (no ingress, IPv4 allow-all egress).
    async fn create_group(&self, req: &FirewallRequest) -> Result<xml::SecurityGroup> {
        let mut p = Params::new();
        p.set("GroupName", &req.name)
            .set("GroupDescription", format!("sfuctl deployment {}: media host firewall", req.owner.name()))
            .set("TagSpecification.1.ResourceType", "security-group")
            .set("TagSpecification.1.Tag.1.Key", TAG_KEY)
            .set("TagSpecification.1.Tag.1.Value", req.owner.name())
            .set("TagSpecification.1.Tag.2.Key", "Name")
            .set("TagSpecification.1.Tag.2.Value", &req.name);
        match self.parsed::<xml::CreateSecurityGroup>("CreateSecurityGroup", &p).await {
            Ok(created) => Ok(xml::SecurityGroup {
                group_id: created.group_id,
                group_name: Some(req.name.clone()),
                tag_set: xml::Items { items: vec![xml::Tag { key: Some(TAG_KEY.into()), value: Some(req.owner.name().into()) }] },
                ip_permissions: xml::Items::default(),
                ip_permissions_egress: xml::Items { items: vec![all_traffic(&["0.0.0.0/0"], &[])] },
            }),
            Err(e) if api_code(&e).as_deref() == Some("InvalidGroup.Duplicate") => {
                let found = self.groups_named(&req.name).await?.into_iter().next();
                match found {
                    Some(g) if owned_by(&g.tag_set.items, &req.owner) => Ok(g),
                    Some(g) => Err(UserError::failed(format!("a security group named `{}` ({}) exists and is not sfuctl's", req.name, g.group_id))
                        .caused_by(e)
                        .hint(format!("it lacks the tag {TAG_KEY}={}: delete or rename it, or tag it if it is this deployment's", req.owner.name()))
                        .into()),
                    None => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// Sends `entries` in one `action` call; when EC2 refuses the batch with `benign` (a duplicate or missing
    /// rule), sends them one by one, each `benign` answer counting as done. A new group's `NotFound` is retried.
    async fn permissions(&self, action: &str, group: &FirewallId, entries: &[RawRule], benign: &str) -> Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let batch = permission_params(group, entries);
        match self.call_consistent(action, &batch, "InvalidGroup.NotFound").await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e).as_deref() == Some(benign) => {
                if entries.len() == 1 {
                    return Ok(());
                }
                for entry in entries {
                    match self.query.call(action, &permission_params(group, std::slice::from_ref(entry))).await {
                        Ok(_) => {}
                        Err(e) if api_code(&e).as_deref() == Some(benign) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes a security group; one already gone is success. While an instance or its network interface still
    /// uses it EC2 answers `DependencyViolation`, returned as [`Busy`]: the engine calls again later.
    pub async fn delete_firewall(&self, id: &FirewallId) -> Result<()> {
        let mut p = Params::new();
        p.set("GroupId", &id.0);
        match self.query.call("DeleteSecurityGroup", &p).await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e).as_deref() == Some("InvalidGroup.NotFound") => Ok(()),
            Err(e) if api_code(&e).as_deref() == Some("DependencyViolation") => {
                Err(anyhow::Error::new(Busy(format!("security group {id} is still in use: {:#}", e.root_cause()))))
            }
            Err(e) => Err(e),
        }
    }

    /// Every key pair, with its public key when EC2 gives it.
    async fn key_pairs(&self) -> Result<Vec<xml::KeyPair>> {
        let mut p = Params::new();
        p.set("IncludePublicKey", true);
        Ok(self.parsed::<xml::DescribeKeyPairs>("DescribeKeyPairs", &p).await?.key_set.items)
    }

    async fn find_key(&self, key: &KeyMaterial) -> Result<Option<SshKey>> {
        Ok(self.key_pairs().await?.into_iter().find(|k| key.matches(k)).map(into_key))
    }

    /// Finds the key pair whose key is `public_key` (by its public key or any fingerprint form EC2 uses).
    pub async fn find_ssh_key(&self, public_key: &str) -> Result<Option<SshKey>> {
        let key = KeyMaterial::parse(public_key)?;
        self.find_key(&key).await.map_err(failed(format!("cannot look up the SSH key {} on AWS", key.sha256)))
    }

    /// Finds the key pair, or imports it as `name` tagged with the owner. A key pair of that name with another
    /// key that sfuctl imported (the deployment's key was changed) is replaced; anyone else's is an error.
    pub async fn ensure_ssh_key(&self, name: &str, public_key: &str) -> Result<(SshKey, bool)> {
        let key = KeyMaterial::parse(public_key)?;
        let what = || format!("cannot import the SSH key `{name}` ({}) on AWS", key.sha256);
        if let Some(found) = self.find_key(&key).await.map_err(failed(what()))? {
            return Ok((found, false));
        }
        let owner = name.strip_prefix("sfuctl-").unwrap_or(name);
        let mut p = Params::new();
        p.set("KeyName", name)
            .set("PublicKeyMaterial", base64::engine::general_purpose::STANDARD.encode(&key.line))
            .set("TagSpecification.1.ResourceType", "key-pair")
            .set("TagSpecification.1.Tag.1.Key", TAG_KEY)
            .set("TagSpecification.1.Tag.1.Value", owner);
        match self.parsed::<xml::KeyPair>("ImportKeyPair", &p).await {
            Ok(k) => Ok((SshKey { id: SshKeyId(name.to_string()), fingerprint: k.key_fingerprint.unwrap_or_default(), name: name.to_string() }, true)),
            Err(e) if api_code(&e).as_deref() == Some("InvalidKeyPair.Duplicate") => {
                // Our own import whose answer was lost, or an older key of this deployment under the same name.
                if let Some(found) = self.find_key(&key).await.map_err(failed(what()))? {
                    return Ok((found, true));
                }
                let pairs = self.key_pairs().await.map_err(failed(what()))?;
                let ours = pairs.iter().any(|k| k.key_name.as_deref() == Some(name) && k.tag_set.items.iter().any(|t| t.key.as_deref() == Some(TAG_KEY)));
                if !ours {
                    return Err(UserError::failed(what())
                        .caused_by(e)
                        .hint(format!("a key pair named `{name}` holds another key and sfuctl did not import it: delete it, or set `ssh.public_key` to its key"))
                        .into());
                }
                self.delete_ssh_key(&SshKeyId(name.to_string())).await?;
                let k: xml::KeyPair = self.parsed("ImportKeyPair", &p).await.map_err(failed(what()))?;
                Ok((SshKey { id: SshKeyId(name.to_string()), fingerprint: k.key_fingerprint.unwrap_or_default(), name: name.to_string() }, true))
            }
            Err(e) => Err(failed(what())(e)),
        }
    }

    /// Deletes a key pair by name; a missing one is success.
    pub async fn delete_ssh_key(&self, id: &SshKeyId) -> Result<()> {
        let mut p = Params::new();
        p.set("KeyName", &id.0);
        match self.query.call("DeleteKeyPair", &p).await {
            Ok(_) => Ok(()),
            Err(e) if api_code(&e).as_deref() == Some("InvalidKeyPair.NotFound") => Ok(()),
            Err(e) => Err(failed(format!("cannot delete key pair `{id}` on AWS"))(e)),
        }
    }

    fn server(&self, i: xml::Instance) -> Server {
        let status = match state_of(&i) {
            Some("pending") => ServerStatus::Pending,
            Some("running") => ServerStatus::Running,
            Some("stopping" | "stopped") => ServerStatus::Off,
            Some("shutting-down" | "terminated") => ServerStatus::Gone,
            Some(other) => ServerStatus::Other(other.to_string()),
            None => ServerStatus::Other("unknown".into()),
        };
        let tags: Vec<String> = i.tag_set.items.iter().filter_map(|t| Some(format!("{}:{}", t.key.as_deref()?, t.value.as_deref().unwrap_or("")))).collect();
        let name = i.tag_set.items.iter().find(|t| t.key.as_deref() == Some("Name")).and_then(|t| t.value.clone()).unwrap_or_else(|| i.instance_id.clone());
        let v6 = i.network_interface_set.items.iter().flat_map(|n| n.ipv6_addresses_set.items.iter()).find_map(|a| a.ipv6_address.as_deref()?.trim().parse::<IpAddr>().ok());
        Server {
            id: ServerId(i.instance_id.clone()),
            name,
            status,
            public_ipv4: i.ip_address.as_deref().and_then(|a| a.trim().parse::<IpAddr>().ok()).filter(IpAddr::is_ipv4),
            public_ipv6: v6.filter(IpAddr::is_ipv6),
            tags,
            region: Some(self.region.clone()),
        }
    }
}

impl Provider for Aws {
    fn check_choices<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, ()> {
        Box::pin(Aws::check_choices(self, req))
    }

    fn name(&self) -> &'static str {
        "AWS"
    }

    fn requests(&self) -> RequestStats {
        self.query.stats()
    }

    fn list_servers<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Server>> {
        Box::pin(Aws::list_servers(self, owner))
    }

    fn get_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, Option<Server>> {
        Box::pin(Aws::get_server(self, id))
    }

    fn create_server<'a>(&'a self, req: &'a ServerRequest) -> ProviderFuture<'a, Server> {
        Box::pin(Aws::create_server(self, req))
    }

    fn delete_server<'a>(&'a self, id: &'a ServerId) -> ProviderFuture<'a, ()> {
        Box::pin(Aws::delete_server(self, id))
    }

    fn list_firewalls<'a>(&'a self, owner: &'a Owner) -> ProviderFuture<'a, Vec<Firewall>> {
        Box::pin(Aws::list_firewalls(self, owner))
    }

    fn get_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, Option<Firewall>> {
        Box::pin(Aws::get_firewall(self, id))
    }

    fn put_firewall<'a>(&'a self, req: &'a FirewallRequest, existing: Option<&'a Firewall>) -> ProviderFuture<'a, Firewall> {
        Box::pin(Aws::put_firewall(self, req, existing))
    }

    fn delete_firewall<'a>(&'a self, id: &'a FirewallId) -> ProviderFuture<'a, ()> {
        Box::pin(Aws::delete_firewall(self, id))
    }

    fn find_ssh_key<'a>(&'a self, public_key: &'a str) -> ProviderFuture<'a, Option<SshKey>> {
        Box::pin(Aws::find_ssh_key(self, public_key))
    }

    fn ensure_ssh_key<'a>(&'a self, name: &'a str, public_key: &'a str) -> ProviderFuture<'a, (SshKey, bool)> {
        Box::pin(Aws::ensure_ssh_key(self, name, public_key))
    }

    fn delete_ssh_key<'a>(&'a self, id: &'a SshKeyId) -> ProviderFuture<'a, ()> {
        Box::pin(Aws::delete_ssh_key(self, id))
    }
}

/// Wraps a lower error in a message naming what failed, keeping its chain (and hints) below.
fn failed(what: String) -> impl FnOnce(anyhow::Error) -> anyhow::Error {
    move |e| UserError::failed(what).caused_by(e).into()
}

fn state_of(i: &xml::Instance) -> Option<&str> {
    i.instance_state.as_ref()?.name.as_deref()
}

/// `sfuctl:demo` -> (`sfuctl`, `demo`); a tag without `:` is a key with an empty value.
fn split_tag(tag: &str) -> (String, String) {
    match tag.split_once(':') {
        Some((k, v)) => (k.to_string(), v.to_string()),
        None => (tag.to_string(), String::new()),
    }
}

fn owned_by(tags: &[xml::Tag], owner: &Owner) -> bool {
    tags.iter().any(|t| t.key.as_deref() == Some(TAG_KEY) && t.value.as_deref() == Some(owner.name()))
}

/// `arm64` for Graviton instance types (`c7g.large`, `m6gd.xlarge`, `t4g.small`, `a1.medium`), else `amd64`.
pub fn architecture(size: &str) -> &'static str {
    let family = size.split('.').next().unwrap_or_default();
    let after_generation = family.trim_start_matches(|c: char| c.is_ascii_alphabetic()).trim_start_matches(|c: char| c.is_ascii_digit());
    if family == "a1" || after_generation.starts_with('g') { "arm64" } else { "amd64" }
}

/// The newest available Canonical image whose name is the Ubuntu 24.04 server image for `arch`.
fn newest_image(images: Vec<xml::Image>, arch: &str) -> Option<String> {
    let infix = format!("/ubuntu-noble-24.04-{arch}-server-");
    images
        .into_iter()
        .filter(|i| i.image_owner_id.as_deref().is_none_or(|o| o == CANONICAL))
        .filter(|i| i.image_state.as_deref().is_none_or(|s| s == "available"))
        .filter(|i| i.name.as_deref().is_some_and(|n| n.starts_with("ubuntu/images/") && n.contains(&infix)))
        .max_by(|a, b| a.creation_date.cmp(&b.creation_date).then_with(|| a.name.cmp(&b.name)))
        .map(|i| i.image_id)
}

/// A stable digest of a RunInstances request: the same request always gets the same token.
fn client_token(params: &Params) -> String {
    let digest = Sha256::digest(params.body("RunInstances").as_bytes());
    digest.iter().take(20).map(|b| format!("{b:02x}")).collect()
}

/// `sfuctl-<40 hex>` for generation 0, `sfuctl-<40 hex>-g<n>` after (at most 64 ASCII characters).
fn token_generation(base: &str, generation: u32) -> String {
    if generation == 0 { format!("sfuctl-{base}") } else { format!("sfuctl-{base}-g{generation}") }
}

/// A rule sfuctl can send: a real port range, not inverted (EC2 rejects those; moto accepts them).
fn check_rule(rule: &FirewallRule) -> Result<()> {
    if rule.ports.start == 0 || rule.ports.start > rule.ports.end {
        return Err(UserError::input(format!("`{}` is not a port range EC2 accepts (it must be within 1-65535, low to high)", rule.ports)).into());
    }
    if rule.sources.is_empty() {
        return Err(UserError::input(format!("the rule {} {} has no source", rule.protocol, rule.ports)).into());
    }
    Ok(())
}

/// One EC2 permission entry with a single source, as read or as to be sent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct RawRule {
    protocol: String,
    from: Option<i64>,
    to: Option<i64>,
    source: Source,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Source {
    Cidr(IpNet),
    /// A CIDR EC2 returned that does not parse; kept verbatim so it can be revoked.
    Text(String, bool),
    Group { group_id: String, user_id: Option<String> },
    PrefixList(String),
}

impl RawRule {
    fn of(protocol: Protocol, ports: PortRange, net: IpNet) -> Self {
        Self { protocol: protocol.to_string(), from: Some(ports.start.into()), to: Some(ports.end.into()), source: Source::Cidr(net) }
    }

    /// Every entry of a permission, one per source.
    fn entries(p: &xml::IpPermission) -> Vec<RawRule> {
        let base = |source| RawRule { protocol: p.ip_protocol.clone().unwrap_or_default(), from: p.from_port, to: p.to_port, source };
        let mut out = Vec::new();
        for r in &p.ip_ranges.items {
            let raw = r.cidr_ip.clone().unwrap_or_default();
            out.push(base(raw.trim().parse::<IpNet>().map_or(Source::Text(raw, false), Source::Cidr)));
        }
        for r in &p.ipv6_ranges.items {
            let raw = r.cidr_ipv6.clone().unwrap_or_default();
            out.push(base(raw.trim().parse::<IpNet>().map_or(Source::Text(raw, true), Source::Cidr)));
        }
        for g in &p.groups.items {
            out.push(base(Source::Group { group_id: g.group_id.clone().unwrap_or_default(), user_id: g.user_id.clone() }));
        }
        for l in &p.prefix_list_ids.items {
            out.push(base(Source::PrefixList(l.prefix_list_id.clone().unwrap_or_default())));
        }
        out
    }

    /// As a normalised rule part (protocol, ports, CIDR), when sfuctl can represent it.
    fn normalised(&self) -> Option<(Protocol, PortRange, IpNet)> {
        let protocol = match self.protocol.to_ascii_lowercase().as_str() {
            "tcp" | "6" => Protocol::Tcp,
            "udp" | "17" => Protocol::Udp,
            _ => return None,
        };
        let (from, to) = (u16::try_from(self.from?).ok()?, u16::try_from(self.to?).ok()?);
        let ports = match (from, to) {
            (0, 65535) => FirewallRule::ALL_PORTS,
            (f, t) if f >= 1 && f <= t => PortRange { start: f, end: t },
            _ => return None,
        };
        match &self.source {
            Source::Cidr(net) => Some((protocol, ports, *net)),
            _ => None,
        }
    }

    fn describe(&self) -> String {
        let ports = match (self.from, self.to) {
            (Some(f), Some(t)) if f == t => f.to_string(),
            (Some(f), Some(t)) => format!("{f}-{t}"),
            _ => "all".into(),
        };
        let protocol = if self.protocol == "-1" { "all" } else { self.protocol.as_str() };
        let source = match &self.source {
            Source::Cidr(n) => n.to_string(),
            Source::Text(t, _) => t.clone(),
            Source::Group { group_id, .. } => format!("security group {group_id}"),
            Source::PrefixList(id) => format!("prefix list {id}"),
        };
        format!("{protocol} {ports} from {source}")
    }
}

fn all_traffic(v4: &[&str], v6: &[&str]) -> xml::IpPermission {
    xml::IpPermission {
        ip_protocol: Some("-1".into()),
        from_port: None,
        to_port: None,
        ip_ranges: xml::Items { items: v4.iter().map(|c| xml::IpRange { cidr_ip: Some(c.to_string()) }).collect() },
        ipv6_ranges: xml::Items { items: v6.iter().map(|c| xml::Ipv6Range { cidr_ipv6: Some(c.to_string()) }).collect() },
        groups: xml::Items::default(),
        prefix_list_ids: xml::Items::default(),
    }
}

/// `IpPermissions.N.*` for entries, one permission per entry.
fn permission_params(group: &FirewallId, entries: &[RawRule]) -> Params {
    let mut p = Params::new();
    p.set("GroupId", &group.0);
    for (i, e) in entries.iter().enumerate() {
        let n = format!("IpPermissions.{}", i + 1);
        p.set(format!("{n}.IpProtocol"), &e.protocol);
        if e.protocol != "-1" {
            if let Some(from) = e.from {
                p.set(format!("{n}.FromPort"), from);
            }
            if let Some(to) = e.to {
                p.set(format!("{n}.ToPort"), to);
            }
        }
        match &e.source {
            Source::Cidr(IpNet::V4(net)) => {
                p.set(format!("{n}.IpRanges.1.CidrIp"), net);
            }
            Source::Cidr(IpNet::V6(net)) => {
                p.set(format!("{n}.Ipv6Ranges.1.CidrIpv6"), net);
            }
            Source::Text(text, false) => {
                p.set(format!("{n}.IpRanges.1.CidrIp"), text);
            }
            Source::Text(text, true) => {
                p.set(format!("{n}.Ipv6Ranges.1.CidrIpv6"), text);
            }
            Source::Group { group_id, user_id } => {
                p.set(format!("{n}.Groups.1.GroupId"), group_id);
                if let Some(user) = user_id {
                    p.set(format!("{n}.Groups.1.UserId"), user);
                }
            }
            Source::PrefixList(id) => {
                p.set(format!("{n}.PrefixListIds.1.PrefixListId"), id);
            }
        }
        if matches!(e.source, Source::Cidr(_)) && e.protocol != "-1" {
            let ranges = if matches!(e.source, Source::Cidr(IpNet::V4(_))) { "IpRanges" } else { "Ipv6Ranges" };
            p.set(format!("{n}.{ranges}.1.Description"), "sfuctl");
        }
    }
    p
}

/// What a group needs to match the wanted rules.
#[derive(Debug, Default, PartialEq, Eq)]
struct RulePlan {
    authorize: Vec<RawRule>,
    revoke: Vec<RawRule>,
    egress: Vec<RawRule>,
}

impl RulePlan {
    fn new(group: &xml::SecurityGroup, wanted: &[FirewallRule]) -> Self {
        let want: BTreeSet<(Protocol, PortRange, IpNet)> = wanted.iter().flat_map(|r| r.sources.iter().map(|s| (r.protocol, r.ports, *s))).collect();
        let have: Vec<RawRule> = group.ip_permissions.items.iter().flat_map(RawRule::entries).collect();
        let kept: BTreeSet<(Protocol, PortRange, IpNet)> = have.iter().filter_map(RawRule::normalised).filter(|n| want.contains(n)).collect();
        let revoke = have.into_iter().filter(|r| r.normalised().is_none_or(|n| !want.contains(&n))).collect();
        let authorize = want.difference(&kept).map(|(p, ports, net)| RawRule::of(*p, *ports, *net)).collect();
        let egress_have: BTreeSet<IpNet> = group
            .ip_permissions_egress
            .items
            .iter()
            .filter(|p| p.ip_protocol.as_deref() == Some("-1"))
            .flat_map(RawRule::entries)
            .filter_map(|r| match r.source {
                Source::Cidr(n) => Some(n),
                _ => None,
            })
            .collect();
        let egress = anywhere()
            .into_iter()
            .filter(|n| !egress_have.contains(n))
            .map(|n| RawRule { protocol: "-1".into(), from: None, to: None, source: Source::Cidr(n) })
            .collect();
        Self { authorize, revoke, egress }
    }
}

fn anywhere() -> [IpNet; 2] {
    ["0.0.0.0/0".parse().expect("valid"), "::/0".parse().expect("valid")]
}

/// A security group as a [`Firewall`] (without its attached instances).
fn normalise_group(group: &xml::SecurityGroup) -> Firewall {
    let mut merged: BTreeMap<(Protocol, PortRange), Vec<IpNet>> = BTreeMap::new();
    let mut other = Vec::new();
    for entry in group.ip_permissions.items.iter().flat_map(RawRule::entries) {
        match entry.normalised() {
            Some((p, ports, net)) => merged.entry((p, ports)).or_default().push(net),
            None => other.push(entry.describe()),
        }
    }
    let mut rules: Vec<FirewallRule> = merged.into_iter().map(|((p, ports), nets)| FirewallRule::new(p, ports, nets)).collect();
    rules.sort();
    let outbound_ok = RulePlan::new(&xml::SecurityGroup { ip_permissions: xml::Items::default(), ..group.clone() }, &[]).egress.is_empty();
    Firewall {
        id: FirewallId(group.group_id.clone()),
        name: group.group_name.clone().unwrap_or_default(),
        rules,
        other_inbound: other,
        ready: true,
        status: "applied".into(),
        server_ids: Vec::new(),
        tags: Vec::new(),
        outbound_ok,
    }
}

/// An OpenSSH public key and every fingerprint form EC2 reports for it.
struct KeyMaterial {
    /// `type base64` (no options, no comment).
    line: String,
    blob: String,
    /// `SHA256:…` as `ssh-keygen -l` prints it, for messages.
    sha256: String,
    fingerprints: Vec<String>,
}

impl KeyMaterial {
    fn parse(public_key: &str) -> Result<Self> {
        let (line, md5) = super::digitalocean::md5_fingerprint(public_key)?;
        let mut words = line.split_whitespace();
        let (kind, blob) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
        let raw = base64::engine::general_purpose::STANDARD.decode(blob).unwrap_or_default();
        let digest = Sha256::digest(&raw);
        let b64 = base64::engine::general_purpose::STANDARD.encode(digest);
        let colon = digest.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":");
        let unpadded = b64.trim_end_matches('=').to_string();
        Ok(Self {
            line: format!("{kind} {blob}"),
            blob: blob.to_string(),
            sha256: format!("SHA256:{unpadded}"),
            // RSA imports: MD5 of the blob; ed25519: base64 SHA-256 (AWS), colon-hex SHA-256 (moto).
            fingerprints: vec![md5, b64, unpadded, colon],
        })
    }

    fn matches(&self, pair: &xml::KeyPair) -> bool {
        let by_key = pair.public_key.as_deref().is_some_and(|k| k.split_whitespace().nth(1) == Some(self.blob.as_str()));
        let by_fingerprint = pair.key_fingerprint.as_deref().is_some_and(|f| self.fingerprints.iter().any(|x| x.eq_ignore_ascii_case(f.trim())));
        by_key || by_fingerprint
    }
}

fn into_key(k: xml::KeyPair) -> SshKey {
    let name = k.key_name.unwrap_or_default();
    SshKey { id: SshKeyId(name.clone()), fingerprint: k.key_fingerprint.unwrap_or_default(), name }
}

#[cfg(test)]
mod tests;
