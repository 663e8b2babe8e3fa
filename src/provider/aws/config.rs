//! Where the AWS provider's credentials, region and endpoint come from: the standard chain, read by hand (no
//! aws-config crate), so `sfuctl` behaves like the AWS CLI for the cases it supports.
//!
//! - Credentials: `AWS_ACCESS_KEY_ID` + `AWS_SECRET_ACCESS_KEY` (+ `AWS_SESSION_TOKEN`); else the profile
//!   `AWS_PROFILE` (default `default`) from `~/.aws/credentials` (`AWS_SHARED_CREDENTIALS_FILE`), then from
//!   `~/.aws/config` (`AWS_CONFIG_FILE`). Static keys only: SSO, roles and `credential_process` get a hint.
//! - Region: the spec's `provider.region`, else `AWS_REGION`, `AWS_DEFAULT_REGION`, else `region` of the profile
//!   in `~/.aws/config`.
//! - Endpoint: `AWS_ENDPOINT_URL_EC2`, else `AWS_ENDPOINT_URL`, else `https://ec2.<region>.amazonaws.com`
//!   (`providers/aws.yaml`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Result;

use crate::error::UserError;
use crate::provider::catalog::ProviderData;
use crate::secret::Secret;
use crate::spec::ProviderKind;

/// Static AWS credentials. `Debug` never shows the secret or the token.
#[derive(Clone, Debug)]
pub struct Credentials {
    /// The access key id (not secret: it names the key, and appears in every signed request).
    pub access_key_id: String,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
    /// Where they came from, for hints: `$AWS_ACCESS_KEY_ID` or `profile `x` in ~/.aws/credentials`.
    pub source: String,
}

/// Everything the provider needs to reach EC2.
#[derive(Clone, Debug)]
pub struct AwsConfig {
    /// The credentials.
    pub credentials: Credentials,
    /// The region (`eu-central-1`).
    pub region: String,
    /// The EC2 endpoint, without a trailing slash.
    pub endpoint: String,
}

/// The environment and home directory the chain reads (a seam for tests).
pub struct Env<'a> {
    /// Reads a variable; empty values count as unset.
    pub var: &'a dyn Fn(&str) -> Option<String>,
    /// The home directory (`~`).
    pub home: Option<PathBuf>,
}

impl Env<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.var)(name).map(|v| v.trim().to_string()).filter(|v| !v.is_empty())
    }

    fn file(&self, var: &str, default: &str) -> Option<PathBuf> {
        self.get(var).map(PathBuf::from).or_else(|| self.home.as_ref().map(|h| h.join(default)))
    }
}

/// Reads the process environment and `$HOME`.
pub fn from_process(spec_region: Option<&str>) -> Result<AwsConfig> {
    let var = |name: &str| std::env::var(name).ok();
    let env = Env { var: &var, home: std::env::var_os("HOME").map(PathBuf::from) };
    resolve(&env, spec_region)
}

/// The whole chain: credentials, region, endpoint.
pub fn resolve(env: &Env<'_>, spec_region: Option<&str>) -> Result<AwsConfig> {
    let profile = env.get("AWS_PROFILE").unwrap_or_else(|| "default".into());
    let config_file = env.file("AWS_CONFIG_FILE", ".aws/config");
    let config = config_file.as_deref().map(|p| read_ini(p, true)).transpose()?.unwrap_or_default();
    let credentials = credentials(env, &profile, &config)?;
    let region = spec_region
        .map(str::to_string)
        .or_else(|| env.get("AWS_REGION"))
        .or_else(|| env.get("AWS_DEFAULT_REGION"))
        .or_else(|| config.get(&profile).and_then(|s| s.get("region")).cloned().filter(|r| !r.is_empty()))
        .ok_or_else(|| {
            UserError::input("no AWS region is set")
                .hint("add `region:` under `provider:` in the spec (e.g. `region: eu-central-1`), or export AWS_REGION")
        })?;
    if region.is_empty() || !region.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-') {
        return Err(UserError::input(format!("`{region}` is not an AWS region name")).hint("e.g. `eu-central-1`").into());
    }
    let data = ProviderData::get(ProviderKind::Aws);
    let api = data.api.as_ref().expect("providers/aws.yaml has an api section");
    let endpoint = api
        .url_env
        .iter()
        .find_map(|name| env.get(name))
        .unwrap_or_else(|| api.url.replace("{region}", &region))
        .trim_end_matches('/')
        .to_string();
    Ok(AwsConfig { credentials, region, endpoint })
}

fn credentials(env: &Env<'_>, profile: &str, config: &Ini) -> Result<Credentials> {
    if let Some(access_key_id) = env.get("AWS_ACCESS_KEY_ID") {
        let secret = env.get("AWS_SECRET_ACCESS_KEY").ok_or_else(|| {
            UserError::input("AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not")
                .hint("export AWS_SECRET_ACCESS_KEY=<the secret of that access key> (and AWS_SESSION_TOKEN for temporary credentials)")
        })?;
        return Ok(Credentials {
            access_key_id,
            secret_access_key: Secret::new(secret),
            session_token: env.get("AWS_SESSION_TOKEN").map(Secret::new),
            source: "$AWS_ACCESS_KEY_ID / $AWS_SECRET_ACCESS_KEY".into(),
        });
    }
    let cred_path = env.file("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials");
    let from_creds = cred_path.as_deref().map(|p| read_ini(p, false)).transpose()?.unwrap_or_default();
    let shown = |p: &Option<PathBuf>, fallback: &str| p.as_ref().map_or_else(|| fallback.to_string(), |p| p.display().to_string());
    for (section, file) in [(from_creds.get(profile), shown(&cred_path, "~/.aws/credentials")), (config.get(profile), "~/.aws/config".into())] {
        let Some(section) = section else { continue };
        let key = section.get("aws_access_key_id").filter(|v| !v.is_empty());
        let secret = section.get("aws_secret_access_key").filter(|v| !v.is_empty());
        match (key, secret) {
            (Some(key), Some(secret)) => {
                return Ok(Credentials {
                    access_key_id: key.clone(),
                    secret_access_key: Secret::new(secret.clone()),
                    session_token: section.get("aws_session_token").filter(|v| !v.is_empty()).map(|t| Secret::new(t.clone())),
                    source: format!("profile `{profile}` in {file}"),
                });
            }
            (Some(_), None) => {
                return Err(UserError::input(format!("profile `{profile}` in {file} has aws_access_key_id but no aws_secret_access_key"))
                    .hint("add `aws_secret_access_key = …` to the profile")
                    .into());
            }
            _ => {}
        }
    }
    let indirect = ["sso_session", "sso_start_url", "role_arn", "credential_process", "web_identity_token_file"];
    if let Some(kind) = config.get(profile).and_then(|s| indirect.iter().find(|k| s.contains_key(**k))) {
        return Err(UserError::input(format!("profile `{profile}` gets its credentials through `{kind}`, which sfuctl does not follow"))
            .hint(format!("export static or temporary keys first: eval \"$(aws configure export-credentials --profile {profile} --format env)\""))
            .into());
    }
    Err(UserError::input(format!("no AWS credentials found (AWS_ACCESS_KEY_ID is unset and profile `{profile}` has no keys)"))
        .hint("export AWS_ACCESS_KEY_ID=… and AWS_SECRET_ACCESS_KEY=…, or set AWS_PROFILE to a profile in ~/.aws/credentials")
        .into())
}

/// Sections of an INI file: profile name -> key -> value. In `~/.aws/config` sections are `[profile NAME]`
/// (and `[default]`); in `~/.aws/credentials` they are `[NAME]`.
type Ini = BTreeMap<String, BTreeMap<String, String>>;

fn read_ini(path: &Path, config_style: bool) -> Result<Ini> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(parse_ini(&text, config_style)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ini::new()),
        Err(e) => Err(UserError::input(format!("cannot read `{}`", path.display())).caused_by(e).into()),
    }
}

/// A lenient INI reader: `[section]`, `key = value`, `#` and `;` comments; nested (indented) keys are skipped.
pub fn parse_ini(text: &str, config_style: bool) -> Ini {
    let mut out = Ini::new();
    let mut current: Option<String> = None;
    for raw in text.lines() {
        if raw.starts_with([' ', '\t']) {
            continue;
        }
        let line = raw.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            let name = if config_style { name.strip_prefix("profile ").map(str::trim).unwrap_or(name) } else { name };
            current = Some(name.to_string());
            out.entry(name.to_string()).or_default();
            continue;
        }
        if let (Some(section), Some((k, v))) = (&current, line.split_once('=')) {
            out.entry(section.clone()).or_default().insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Exit, exit_of, render};

    fn with<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| vars.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
    }

    #[test]
    fn environment_keys_win_and_the_secret_is_never_shown() {
        let var = with(&[("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"), ("AWS_SECRET_ACCESS_KEY", "s3cr3t-value"), ("AWS_SESSION_TOKEN", "tok-value"), ("AWS_REGION", "eu-west-1")]);
        let c = resolve(&Env { var: &var, home: None }, None).unwrap();
        assert_eq!((c.credentials.access_key_id.as_str(), c.region.as_str()), ("AKIDEXAMPLE", "eu-west-1"));
        assert_eq!(c.endpoint, "https://ec2.eu-west-1.amazonaws.com");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-value") && !shown.contains("tok-value"), "{shown}");
        // The spec's region wins over the environment; the endpoint override wins over the region's.
        let var = with(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S"), ("AWS_REGION", "eu-west-1"), ("AWS_ENDPOINT_URL", "http://127.0.0.1:5000/")]);
        let c = resolve(&Env { var: &var, home: None }, Some("us-east-1")).unwrap();
        assert_eq!((c.region.as_str(), c.endpoint.as_str()), ("us-east-1", "http://127.0.0.1:5000"));
        let var = with(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S"), ("AWS_ENDPOINT_URL", "http://a"), ("AWS_ENDPOINT_URL_EC2", "http://b")]);
        assert_eq!(resolve(&Env { var: &var, home: None }, Some("us-east-1")).unwrap().endpoint, "http://b");
    }

    #[test]
    fn profiles_come_from_the_credentials_then_the_config_file() {
        let home = tempfile::tempdir().unwrap();
        std::fs::create_dir(home.path().join(".aws")).unwrap();
        std::fs::write(
            home.path().join(".aws/credentials"),
            "# keys\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key = sd\n\n[work]\naws_access_key_id=AKIDWORK\naws_secret_access_key=sw\naws_session_token = tw\n",
        )
        .unwrap();
        std::fs::write(
            home.path().join(".aws/config"),
            "[default]\nregion = eu-central-1\n[profile work]\nregion = ap-south-1\ns3 =\n  max_concurrent_requests = 4\n[profile cfg]\naws_access_key_id = AKIDCFG\naws_secret_access_key = sc\n[profile sso]\nsso_session = corp\n",
        )
        .unwrap();
        let home = Some(home.path().to_path_buf());
        let none = with(&[]);
        let c = resolve(&Env { var: &none, home: home.clone() }, None).unwrap();
        assert_eq!((c.credentials.access_key_id.as_str(), c.region.as_str()), ("AKIDDEFAULT", "eu-central-1"));
        let work = with(&[("AWS_PROFILE", "work")]);
        let c = resolve(&Env { var: &work, home: home.clone() }, None).unwrap();
        assert_eq!((c.credentials.access_key_id.as_str(), c.region.as_str()), ("AKIDWORK", "ap-south-1"));
        assert_eq!(c.credentials.session_token.as_ref().map(Secret::expose), Some("tw"));
        assert!(c.credentials.source.contains("profile `work`"));
        let cfg = with(&[("AWS_PROFILE", "cfg"), ("AWS_REGION", "us-west-2")]);
        assert_eq!(resolve(&Env { var: &cfg, home: home.clone() }, None).unwrap().credentials.access_key_id, "AKIDCFG");
        let sso = with(&[("AWS_PROFILE", "sso"), ("AWS_REGION", "us-west-2")]);
        let err = resolve(&Env { var: &sso, home: home.clone() }, None).unwrap_err();
        assert_eq!(exit_of(&err), Exit::BadInput);
        assert!(render(&err).contains("export-credentials --profile sso"), "{}", render(&err));
        let missing = with(&[("AWS_PROFILE", "nope"), ("AWS_REGION", "us-west-2")]);
        assert!(render(&resolve(&Env { var: &missing, home }, None).unwrap_err()).contains("profile `nope` has no keys"));
    }

    #[test]
    fn missing_secret_or_region_is_bad_input_with_a_hint() {
        let var = with(&[("AWS_ACCESS_KEY_ID", "A")]);
        let err = resolve(&Env { var: &var, home: None }, Some("us-east-1")).unwrap_err();
        assert_eq!(exit_of(&err), Exit::BadInput);
        assert!(render(&err).contains("hint: export AWS_SECRET_ACCESS_KEY"), "{}", render(&err));
        let var = with(&[("AWS_ACCESS_KEY_ID", "A"), ("AWS_SECRET_ACCESS_KEY", "S")]);
        let err = resolve(&Env { var: &var, home: None }, None).unwrap_err();
        assert_eq!(exit_of(&err), Exit::BadInput);
        assert!(render(&err).contains("no AWS region") && render(&err).contains("AWS_REGION"), "{}", render(&err));
        assert!(resolve(&Env { var: &var, home: None }, Some("evil.example.com/")).is_err(), "a region goes into a host name");
    }
}
