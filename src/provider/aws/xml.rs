//! EC2's XML answers (Query API 2016-11-15), read with quick-xml's serde support.
//!
//! Parsing is namespace-agnostic (moto's `xmlns` lacks EC2's trailing slash, and error bodies have none on AWS),
//! unknown elements are ignored, and every field that may be absent is an `Option` or a defaulted list, so an odd
//! answer is an error message, never a panic.

use serde::Deserialize;
use serde::de::DeserializeOwned;

/// `<xSet><item>…</item>…</xSet>`: EC2's list shape. An empty `<xSet/>` is an empty list.
#[derive(Debug, Deserialize)]
#[serde(bound = "T: Deserialize<'de>")]
pub struct Items<T> {
    #[serde(default, rename = "item")]
    pub items: Vec<T>,
}

impl<T> Default for Items<T> {
    fn default() -> Self {
        Self { items: Vec::new() }
    }
}

/// Parses an answer body.
pub fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let text = std::str::from_utf8(body).map_err(|e| format!("the answer is not UTF-8: {e}"))?;
    quick_xml::de::from_str(text).map_err(|e| e.to_string())
}

/// An error body: `<Response><Errors><Error>…` (EC2) or `<ErrorResponse><Error>…` / `<ErrorResponse><Errors>…`
/// (the auth layer, IAM-style services).
#[derive(Debug, Default, Deserialize)]
pub struct ErrorBody {
    #[serde(rename = "Errors", default)]
    pub errors: Option<ErrorList>,
    #[serde(rename = "Error", default)]
    pub error: Option<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorList {
    #[serde(rename = "Error", default)]
    pub error: Vec<ErrorItem>,
}

#[derive(Debug, Default, Deserialize)]
pub struct ErrorItem {
    #[serde(rename = "Code")]
    pub code: Option<String>,
    #[serde(rename = "Message")]
    pub message: Option<String>,
}

impl ErrorBody {
    /// The first error's code and message, when the body has one.
    pub fn first(self) -> Option<(String, String)> {
        let item = self.errors.and_then(|l| l.error.into_iter().next()).or(self.error)?;
        let code = item.code.filter(|c| !c.trim().is_empty())?;
        Some((code.trim().to_string(), item.message.unwrap_or_default().split_whitespace().collect::<Vec<_>>().join(" ")))
    }
}

#[derive(Debug, Deserialize, Clone)]
pub struct Tag {
    pub key: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeInstances {
    #[serde(default)]
    pub reservation_set: Items<Reservation>,
    pub next_token: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    #[serde(default)]
    pub instances_set: Items<Instance>,
}

/// `RunInstancesResponse`: the reservation itself.
pub type RunInstances = Reservation;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Instance {
    pub instance_id: String,
    pub instance_state: Option<InstanceState>,
    pub ip_address: Option<String>,
    #[serde(default)]
    pub tag_set: Items<Tag>,
    #[serde(default)]
    pub network_interface_set: Items<NetworkInterface>,
    #[serde(default)]
    pub group_set: Items<GroupRef>,
}

#[derive(Debug, Deserialize)]
pub struct InstanceState {
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NetworkInterface {
    #[serde(default)]
    pub ipv6_addresses_set: Items<Ipv6Address>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Ipv6Address {
    pub ipv6_address: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct GroupRef {
    pub group_id: Option<String>,
    pub user_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeSecurityGroups {
    #[serde(default)]
    pub security_group_info: Items<SecurityGroup>,
    pub next_token: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct SecurityGroup {
    pub group_id: String,
    pub group_name: Option<String>,
    #[serde(default)]
    pub tag_set: Items<Tag>,
    #[serde(default)]
    pub ip_permissions: Items<IpPermission>,
    #[serde(default)]
    pub ip_permissions_egress: Items<IpPermission>,
}

impl<T: Clone> Clone for Items<T> {
    fn clone(&self) -> Self {
        Self { items: self.items.clone() }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct IpPermission {
    pub ip_protocol: Option<String>,
    pub from_port: Option<i64>,
    pub to_port: Option<i64>,
    #[serde(default)]
    pub ip_ranges: Items<IpRange>,
    #[serde(default)]
    pub ipv6_ranges: Items<Ipv6Range>,
    #[serde(default)]
    pub groups: Items<GroupRef>,
    #[serde(default)]
    pub prefix_list_ids: Items<PrefixListId>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct IpRange {
    pub cidr_ip: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct Ipv6Range {
    pub cidr_ipv6: Option<String>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct PrefixListId {
    pub prefix_list_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSecurityGroup {
    pub group_id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeKeyPairs {
    #[serde(default)]
    pub key_set: Items<KeyPair>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(rename_all = "camelCase")]
pub struct KeyPair {
    pub key_name: Option<String>,
    pub key_fingerprint: Option<String>,
    pub public_key: Option<String>,
    #[serde(default)]
    pub tag_set: Items<Tag>,
}

/// `DescribeInstanceTypeOfferings`: the instance types a region offers, a page at a time.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeInstanceTypeOfferings {
    #[serde(default)]
    pub instance_type_offering_set: Items<InstanceTypeOffering>,
    pub next_token: Option<String>,
}

/// One offered instance type.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceTypeOffering {
    pub instance_type: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DescribeImages {
    #[serde(default)]
    pub images_set: Items<Image>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Image {
    pub image_id: String,
    pub name: Option<String>,
    pub creation_date: Option<String>,
    pub image_state: Option<String>,
    pub image_owner_id: Option<String>,
    pub architecture: Option<String>,
}
