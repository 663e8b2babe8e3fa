//! The EC2 Query API over the shared transport (`http::Client`): form-encoded POSTs signed with SigV4 (the
//! `aws-sigv4` crate) on every attempt, and EC2's error XML turned into messages that carry the AWS code and a hint.
//!
//! Every call is retried on throttling (`RequestLimitExceeded`, HTTP 503), on 5xx and on transport failures.
//! That is safe for every action the provider sends: RunInstances carries a ClientToken, and the provider reads
//! `InvalidGroup.Duplicate`, `InvalidKeyPair.Duplicate`, `InvalidPermission.Duplicate`/`NotFound` and the
//! `*.NotFound` of deletes as "already done".

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};

use super::config::Credentials;
use crate::error::UserError;
use crate::http::{ApiStyle, Auth, Client, Failure, ProviderMessage, RequestStats, Retry, RetryPolicy, Signer};

/// The EC2 API version every request names.
pub const VERSION: &str = "2016-11-15";

/// Codes that mean "slow down": nothing was done, try again later.
const THROTTLED: &[&str] = &["RequestLimitExceeded", "Throttling", "ThrottlingException", "RequestThrottled", "TooManyRequestsException"];
/// Codes of a passing problem on AWS's side.
const TRANSIENT: &[&str] = &["InternalError", "InternalFailure", "Unavailable", "ServiceUnavailable"];

/// A request's parameters, in order: `Action` and `Version` come first, then what [`Params::set`] adds.
#[derive(Clone, Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// No parameters yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key=value`.
    pub fn set(&mut self, key: impl Into<String>, value: impl ToString) -> &mut Self {
        self.0.push((key.into(), value.to_string()));
        self
    }

    /// Adds `Filter.N.Name=name` and `Filter.N.Value.M` for every value, N being the next free filter number.
    pub fn filter(&mut self, name: &str, values: &[&str]) -> &mut Self {
        let n = self.0.iter().filter(|(k, _)| k.starts_with("Filter.") && k.ends_with(".Name")).count() + 1;
        self.set(format!("Filter.{n}.Name"), name);
        for (m, v) in values.iter().enumerate() {
            self.set(format!("Filter.{n}.Value.{}", m + 1), v);
        }
        self
    }

    /// Sets `key=value`, replacing an earlier value of `key`.
    pub fn replace(&mut self, key: &str, value: impl ToString) -> &mut Self {
        self.0.retain(|(k, _)| k != key);
        self.set(key, value)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The form body of `action` with these parameters.
    pub fn body(&self, action: &str) -> String {
        let pairs = [("Action", action), ("Version", VERSION)].into_iter().chain(self.0.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        pairs.map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect::<Vec<_>>().join("&")
    }
}

/// Form-encodes exactly as botocore does (Python's `quote_plus`: `A-Z a-z 0-9 - _ . ~` stay, a space becomes
/// `+`, every other byte `%XX`). EC2 checks the signature over the bytes sent, whatever the encoding; moto
/// re-encodes the parsed parameters botocore's way first, so any other spelling (`*` kept, `%20`) fails there.
pub fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else if b == b' ' {
            out.push('+');
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Whether an action changes anything (everything but `Describe*`), for the request counters.
pub fn is_mutating(action: &str) -> bool {
    !action.starts_with("Describe")
}



/// EC2's side of the shared transport: its error XML, its throttling codes and its hints.
struct Ec2Style {
    /// Where the credentials came from, for hints.
    source: String,
}

impl ApiStyle for Ec2Style {
    fn title(&self) -> &str {
        "EC2"
    }

    fn url_name(&self) -> String {
        "EC2 endpoint URL".into()
    }

    // reqwest's own default; EC2 answers XML whatever is asked.
    fn accept(&self) -> &'static str {
        "*/*"
    }

    // Every answer gets a code (`HTTP 500` when the body is no EC2 error XML), and the message carries it.
    fn parse_error(&self, status: StatusCode, _headers: &HeaderMap, body: &[u8]) -> Option<ProviderMessage> {
        let (code, message) = error_of(status, body);
        let message = if message.is_empty() { code.clone() } else { format!("{code}: {message}") };
        Some(ProviderMessage { code: Some(code), message })
    }

    // EC2 throttles with 400 or 503 and a code, not with 429.
    fn throttled(&self, _status: StatusCode, code: Option<&str>) -> bool {
        code.is_some_and(|c| THROTTLED.contains(&c))
    }

    fn transient(&self, status: StatusCode, code: Option<&str>) -> bool {
        status.is_server_error() || code.is_some_and(|c| TRANSIENT.contains(&c))
    }

    fn headline(&self, operation: &str, status: StatusCode, code: Option<&str>) -> String {
        format!("{operation} returned {} {}", status.as_u16(), code.unwrap_or_default())
    }

    fn hint(&self, failure: &Failure<'_>) -> Option<String> {
        let Some(status) = failure.status else {
            return Some(format!("check the network and the EC2 endpoint ({})", failure.base_url));
        };
        let action = failure.operation.strip_prefix("EC2 ").unwrap_or(failure.operation);
        hint_for(action, status, failure.code.unwrap_or_default(), &self.source)
    }
}

/// SigV4 for EC2, which the transport applies to every attempt (the signature covers the time).
struct SigV4 {
    credentials: Credentials,
    region: String,
}

impl Signer for SigV4 {
    fn issuer(&self) -> &str {
        "AWS"
    }

    fn sign(&self, request: &mut reqwest::Request, time: SystemTime) -> Result<()> {
        let url = request.url();
        let host = match url.port() {
            Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
            None => url.host_str().unwrap_or_default().to_string(),
        };
        let content_type = request.headers().get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or(FORM);
        let body = std::str::from_utf8(request.body().and_then(reqwest::Body::as_bytes).unwrap_or_default())
            .map_err(|e| UserError::failed("cannot sign the AWS request").caused_by(e))?;
        let headers = sign_request(&self.credentials, &self.region, "ec2", request.method().as_str(), url.as_str(), &host, content_type, body, time)?;
        request.headers_mut().extend(headers);
        Ok(())
    }
}

/// A signed EC2 Query client over the shared transport. Cheap to clone; clones share connections and counters.
#[derive(Clone)]
pub struct Query {
    client: Client,
    region: String,
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Query").field("endpoint", &self.client.base_url()).field("region", &self.region).finish_non_exhaustive()
    }
}

impl Query {
    /// A client for `endpoint` (a bare `scheme://host[:port]`) in `region`. Plain `http://` only for loopback
    /// (moto in tests).
    pub fn new(endpoint: &str, region: &str, credentials: Credentials, policy: RetryPolicy) -> Result<Self> {
        let style = Ec2Style { source: credentials.source.clone() };
        let signer = SigV4 { credentials, region: region.to_string() };
        let client = Client::new(endpoint, Auth::Signed(Arc::new(signer)), style, policy)?;
        // Requests go to the root: a path or query would sit in every signed URL.
        let raw = client.base_url();
        let url = Url::parse(raw).map_err(|e| UserError::input(format!("`{raw}` is not a valid EC2 endpoint URL")).caused_by(e))?;
        if url.path() != "/" || url.query().is_some() || url.fragment().is_some() {
            return Err(UserError::input(format!("`{raw}`: an EC2 endpoint is a bare scheme://host[:port]")).into());
        }
        Ok(Self { client, region: region.to_string() })
    }

    /// The region requests are signed for.
    pub fn region(&self) -> &str {
        &self.region
    }

    /// The retry policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        self.client.policy()
    }

    /// The requests sent so far.
    pub fn stats(&self) -> RequestStats {
        self.client.stats()
    }

    /// Calls `action` (a form-encoded POST to the endpoint's root); returns the answer body of a 200.
    ///
    /// Every action is sent again after throttling, 5xx and transport failures ([`Retry::Always`], see the
    /// module's doc); only `Describe*` counts as not mutating.
    pub async fn call(&self, action: &str, params: &Params) -> Result<Vec<u8>> {
        let reply = self
            .client
            .request(Method::POST, "/")
            .operation(format!("EC2 {action}"))
            .body(FORM, params.body(action).into_bytes())
            .retry(Retry::Always)
            .mutating(is_mutating(action))
            .send()
            .await?;
        Ok(reply.body)
    }

    /// Waits `pause`, counting it.
    pub async fn wait(&self, pause: Duration) {
        self.client.wait(pause).await;
    }
}

const FORM: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// SigV4 headers for one request (signed: `content-type`, `host`, `x-amz-date`, and the session token if any).
#[allow(clippy::too_many_arguments)]
pub fn sign_request(
    credentials: &Credentials,
    region: &str,
    service: &str,
    method: &str,
    url: &str,
    host: &str,
    content_type: &str,
    body: &str,
    time: SystemTime,
) -> Result<HeaderMap> {
    let identity = aws_credential_types::Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.expose().to_string(),
        credentials.session_token.as_ref().map(|t| t.expose().to_string()),
        None,
        "sfuctl",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| UserError::failed("cannot sign the AWS request").caused_by(anyhow::anyhow!("{e}")))?
        .into();
    let headers = [("content-type", content_type), ("host", host)];
    let request = SignableRequest::new(method, url, headers.into_iter(), SignableBody::Bytes(body.as_bytes()))
        .map_err(|e| UserError::failed("cannot sign the AWS request").caused_by(anyhow::anyhow!("{e}")))?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| UserError::failed("cannot sign the AWS request").caused_by(anyhow::anyhow!("{e}")))?
        .into_parts();
    let mut out = HeaderMap::new();
    out.insert(reqwest::header::CONTENT_TYPE, HeaderValue::from_str(content_type)?);
    for (name, value) in instructions.headers() {
        let mut value = HeaderValue::from_str(value).map_err(|_| UserError::input("the AWS credentials hold characters a header cannot carry"))?;
        if name.eq_ignore_ascii_case("authorization") || name.eq_ignore_ascii_case("x-amz-security-token") {
            value.set_sensitive(true);
        }
        out.insert(HeaderName::from_bytes(name.as_bytes())?, value);
    }
    Ok(out)
}

/// The AWS code and message of an error answer; bodies that are not EC2 error XML (moto's HTML 500s, a proxy's
/// page) become `HTTP <status>` and the start of the body.
pub fn error_of(status: StatusCode, body: &[u8]) -> (String, String) {
    if let Some(found) = super::xml::parse::<super::xml::ErrorBody>(body).ok().and_then(super::xml::ErrorBody::first) {
        return found;
    }
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let cut: String = one_line.chars().take(120).collect();
    let reason = status.canonical_reason().unwrap_or("error");
    (format!("HTTP {}", status.as_u16()), if cut.is_empty() { format!("{reason} (empty body)") } else { format!("{reason} (body starts: `{cut}`)") })
}

fn hint_for(action: &str, status: StatusCode, code: &str, source: &str) -> Option<String> {
    Some(match code {
        "AuthFailure" | "SignatureDoesNotMatch" | "InvalidClientTokenId" | "IncompleteSignature" | "MissingAuthenticationToken" | "UnrecognizedClientException" => {
            format!("AWS did not accept the credentials from {source}: check the access key id and secret (and AWS_SESSION_TOKEN for temporary keys), and that this machine's clock is right (SigV4 allows 5 minutes of skew)")
        }
        "RequestExpired" | "RequestTimeTooSkewed" => "the request's time is too far from AWS's: set this machine's clock right (e.g. enable NTP)".into(),
        "ExpiredToken" | "ExpiredTokenException" => format!("the temporary credentials from {source} have expired: get new ones"),
        "UnauthorizedOperation" | "AccessDenied" | "AccessDeniedException" => {
            format!("the IAM user or role of these credentials may not call ec2:{action}: grant it (sfuctl needs ec2:Describe*, RunInstances, TerminateInstances, CreateTags, ImportKeyPair, DeleteKeyPair, CreateSecurityGroup, DeleteSecurityGroup, Authorize/RevokeSecurityGroupIngress, AuthorizeSecurityGroupEgress)")
        }
        "OptInRequired" => "the account is not subscribed to EC2 in this region (or the region is not enabled): enable it in the AWS console".into(),
        "InsufficientInstanceCapacity" => "AWS has no capacity for this instance type here right now: try another `provider.size` or region, or run again later".into(),
        "InstanceLimitExceeded" | "VcpuLimitExceeded" => "the account's instance (vCPU) quota in this region is used up: request a quota increase or delete instances".into(),
        "VPCIdNotSpecified" | "MissingInput" | "InvalidVpcID.NotFound" => "sfuctl uses the region's default VPC, and there is none: create one with `aws ec2 create-default-vpc`".into(),
        c if c.starts_with("InvalidAMIID") => "check `provider.image`: the AMI must exist in this region and be visible to the account".into(),
        "InvalidInstanceType" | "Unsupported" => "check `provider.size`: the instance type must be offered in this region".into(),
        c if THROTTLED.contains(&c) => "EC2's request rate limit was hit (other tools on the same account count too): wait a minute and run again".into(),
        _ if status.is_server_error() => "AWS had a problem on its side; run again in a little while".into(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn creds(secret: &str) -> Credentials {
        Credentials { access_key_id: "AKIDEXAMPLE".into(), secret_access_key: Secret::new(secret), session_token: None, source: "test".into() }
    }

    /// AWS's published SigV4 example (IAM ListUsers, "Create a signed AWS API request" in the IAM user guide):
    /// the signature must come out exactly.
    #[test]
    fn signs_the_published_example() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160); // 2015-08-30T12:36:00Z
        let headers = sign_request(
            &creds("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            "us-east-1",
            "iam",
            "GET",
            "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08",
            "iam.amazonaws.com",
            "application/x-www-form-urlencoded; charset=utf-8",
            "",
            time,
        )
        .unwrap();
        let auth = headers["authorization"].to_str().unwrap();
        assert_eq!(
            auth,
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
        );
        assert_eq!(headers["x-amz-date"], "20150830T123600Z");
        assert!(headers["authorization"].is_sensitive());
    }

    #[test]
    fn the_session_token_is_sent_and_signed() {
        let mut c = creds("s");
        c.session_token = Some(Secret::new("the-token"));
        let h = sign_request(&c, "us-east-1", "ec2", "POST", "https://ec2.us-east-1.amazonaws.com/", "ec2.us-east-1.amazonaws.com", FORM, "Action=DescribeRegions", SystemTime::now()).unwrap();
        assert_eq!(h["x-amz-security-token"], "the-token");
        assert!(h["x-amz-security-token"].is_sensitive());
        assert!(h["authorization"].to_str().unwrap().contains("x-amz-security-token"));
    }

    #[test]
    fn params_encode_as_a_form_with_numbered_filters() {
        let mut p = Params::new();
        p.filter("tag:sfuctl", &["demo"]).filter("instance-state-name", &["pending", "running"]).set("UserData", "a+b/c=").set("Name", "x-*_.~ é");
        assert_eq!(
            p.body("DescribeInstances"),
            "Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag%3Asfuctl&Filter.1.Value.1=demo&Filter.2.Name=instance-state-name&Filter.2.Value.1=pending&Filter.2.Value.2=running&UserData=a%2Bb%2Fc%3D&Name=x-%2A_.~+%C3%A9"
        );
        assert!(is_mutating("RunInstances") && !is_mutating("DescribeInstances"));
    }

    #[test]
    fn error_bodies_of_every_shape_give_code_and_message() {
        let ec2 = br#"<?xml version="1.0" encoding="UTF-8"?><Response><Errors><Error><Code>InvalidGroup.NotFound</Code><Message>The security group 'sg-1' does not exist</Message></Error></Errors><RequestID>r</RequestID></Response>"#;
        assert_eq!(error_of(StatusCode::BAD_REQUEST, ec2), ("InvalidGroup.NotFound".into(), "The security group 'sg-1' does not exist".into()));
        let moto = br#"<Response xmlns="http://ec2.amazonaws.com/doc/2016-11-15"><Errors><Error><Code>X</Code><Message>y</Message></Error></Errors></Response>"#;
        assert_eq!(error_of(StatusCode::BAD_REQUEST, moto).0, "X");
        let auth = br#"<ErrorResponse><Errors><Error><Code>AuthFailure</Code><Message>AWS was not able to validate the provided access credentials</Message><Type>Sender</Type></Error></Errors></ErrorResponse>"#;
        assert_eq!(error_of(StatusCode::UNAUTHORIZED, auth).0, "AuthFailure");
        let iam = br#"<ErrorResponse><Error><Type>Sender</Type><Code>SignatureDoesNotMatch</Code><Message>bad</Message></Error></ErrorResponse>"#;
        assert_eq!(error_of(StatusCode::FORBIDDEN, iam).0, "SignatureDoesNotMatch");
        let html = b"<!doctype html><html><title>500 Internal Server Error</title></html>";
        let (code, message) = error_of(StatusCode::INTERNAL_SERVER_ERROR, html);
        assert_eq!(code, "HTTP 500");
        assert!(message.contains("Internal Server Error"), "{message}");
    }

    /// The error the transport makes of an EC2 error answer to `action`.
    fn api_error(action: &str, status: StatusCode, code: &str, message: &str, attempts: u32, source: &str) -> anyhow::Error {
        let credentials = Credentials { source: source.into(), ..creds("s") };
        let q = Query::new("http://127.0.0.1:9", "us-east-1", credentials, RetryPolicy::default()).unwrap();
        let body = format!("<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors></Response>");
        let parsed = Ec2Style { source: source.into() }.parse_error(status, &HeaderMap::new(), body.as_bytes());
        q.client.status_error(&format!("EC2 {action}"), status, parsed, body.as_bytes(), attempts, None, false)
    }

    #[test]
    fn every_attempt_is_signed_for_the_url_and_form_it_carries() {
        let signer = SigV4 { credentials: creds("s"), region: "us-east-1".into() };
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let body = "Action=DescribeRegions&Version=2016-11-15";
        let mut request = reqwest::Request::new(Method::POST, Url::parse("http://127.0.0.1:5000/").unwrap());
        request.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(FORM));
        *request.body_mut() = Some(body.into());
        signer.sign(&mut request, time).unwrap();
        let direct = sign_request(&signer.credentials, "us-east-1", "ec2", "POST", "http://127.0.0.1:5000/", "127.0.0.1:5000", FORM, body, time).unwrap();
        assert_eq!(request.headers()["authorization"], direct["authorization"]);
        assert_eq!(request.headers()["x-amz-date"], "20150830T123600Z");
    }

    #[test]
    fn auth_and_permission_errors_carry_the_code_and_a_hint() {
        let err = api_error("DescribeInstances", StatusCode::UNAUTHORIZED, "AuthFailure", "AWS was not able to validate the provided access credentials", 1, "$AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY");
        let text = crate::error::render(&err);
        assert!(text.starts_with("error: EC2 DescribeInstances returned 401 AuthFailure\n  Caused by: AuthFailure: AWS was not able"), "{text}");
        assert!(text.contains("hint: AWS did not accept the credentials") && text.contains("clock"), "{text}");
        assert_eq!(crate::http::api_code(&err).as_deref(), Some("AuthFailure"));
        let err = api_error("RunInstances", StatusCode::FORBIDDEN, "UnauthorizedOperation", "You are not authorized", 1, "x");
        assert!(crate::error::render(&err).contains("may not call ec2:RunInstances"));
        let err = api_error("RunInstances", StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded", "Request limit exceeded.", 5, "x");
        let text = crate::error::render(&err);
        assert!(text.contains("(after 5 attempts)") && text.contains("rate limit"), "{text}");
    }

    #[test]
    fn plain_http_only_on_loopback_and_no_secret_in_debug() {
        assert!(Query::new("http://127.0.0.1:5000", "us-east-1", creds("s3cr3t"), RetryPolicy::default()).is_ok());
        assert!(Query::new("http://ec2.example.com", "us-east-1", creds("s"), RetryPolicy::default()).is_err());
        assert!(Query::new("https://ec2.us-east-1.amazonaws.com/x", "us-east-1", creds("s"), RetryPolicy::default()).is_err());
        let q = Query::new("https://ec2.us-east-1.amazonaws.com", "us-east-1", creds("s3cr3t"), RetryPolicy::default()).unwrap();
        assert!(!format!("{q:?}").contains("s3cr3t"));
    }
}
