//! `sfuctl init`: a commented starter spec for one provider and server kind, with the user's SSH key and address
//! where they can be found on this machine (no network), and a `<REPLACE-ME: …>` placeholder where they cannot,
//! which `validate` refuses until it is filled in.

use std::io::{BufRead, IsTerminal, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use anyhow::Result;
use clap::Args;

use crate::error::{Exit, UserError};
use crate::provider::catalog::{self, ProviderData};
use crate::spec::{ProviderKind, SfuKind, name_problem};
use crate::validate::PLACEHOLDER;

/// Arguments of `init`.
#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  sfuctl init                                      (asks on a terminal)
  sfuctl init --provider digitalocean --kind janus --out janus.yaml
  sfuctl init --provider ssh --kind coturn --name turn")]
pub struct InitArgs {
    /// Where the hosts come from: digitalocean, linode, aws, vultr, or ssh (servers you already have).
    #[arg(long, value_name = "PROVIDER", value_parser = clap::builder::PossibleValuesParser::new(provider_names()))]
    pub provider: Option<String>,
    /// The media server: mediasoup, janus, livekit, coturn or custom.
    #[arg(long, value_name = "KIND", value_parser = clap::builder::PossibleValuesParser::new(SfuKind::ALL.map(SfuKind::as_str)))]
    pub kind: Option<String>,
    /// The deployment's name ([a-z0-9-]) [default: my-<kind>].
    #[arg(long)]
    pub name: Option<String>,
    /// The file to write [default: <name>.yaml].
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Overwrite FILE if it exists.
    #[arg(long)]
    pub force: bool,
}

/// Every provider kind's name, in the catalog's order.
fn provider_names() -> Vec<&'static str> {
    catalog::REGISTRY.iter().map(|r| r.kind.as_str()).collect()
}

/// Runs `init`.
pub fn execute(args: &InitArgs) -> Result<Exit> {
    let interactive = std::io::stdin().is_terminal();
    let provider_name = match &args.provider {
        Some(p) => p.clone(),
        None if interactive => ask("Provider", &provider_names(), "digitalocean")?,
        None => return Err(missing("--provider", &provider_names()).into()),
    };
    let kind_names = SfuKind::ALL.map(SfuKind::as_str);
    let kind_name = match &args.kind {
        Some(k) => k.clone(),
        None if interactive => ask("Server kind", &kind_names, "janus")?,
        None => return Err(missing("--kind", &kind_names).into()),
    };
    let provider = catalog::REGISTRY.iter().map(|r| r.kind).find(|k| k.as_str() == provider_name).ok_or_else(|| missing("--provider", &provider_names()))?;
    let kind = SfuKind::ALL.into_iter().find(|k| k.as_str() == kind_name).ok_or_else(|| missing("--kind", &kind_names))?;
    let default_name = format!("my-{}", kind.as_str());
    let name = match &args.name {
        Some(n) => n.clone(),
        None if interactive && args.provider.is_none() => ask_text("Deployment name", &default_name)?,
        None => default_name,
    };
    if let Some(problem) = name_problem(&name) {
        return Err(UserError::input(format!("--name `{name}` {problem}")).hint("e.g. `--name clearcomms`").into());
    }
    let out = args.out.clone().unwrap_or_else(|| PathBuf::from(format!("{name}.yaml")));
    if out.exists() && !args.force {
        return Err(UserError::input(format!("`{}` exists: init does not overwrite it", out.display())).hint("choose another file with --out, or pass --force to replace it").into());
    }
    let found = Found::on_this_machine();
    let text = starter_spec(&name, provider, kind, &found);
    std::fs::write(&out, &text).map_err(|e| UserError::failed(format!("cannot write `{}`", out.display())).caused_by(e))?;
    report(&out, &text, &found);
    Ok(Exit::Success)
}

fn missing(flag: &str, choices: &[&str]) -> UserError {
    UserError::input(format!("{flag} is needed: there is no terminal to ask")).hint(format!("pass {flag} with one of: {}", choices.join(", ")))
}

/// Asks for one of `choices` on the terminal (stderr), `default` on an empty answer; asks again on anything else.
fn ask(question: &str, choices: &[&str], default: &str) -> Result<String> {
    loop {
        let answer = ask_text(&format!("{question} ({})", choices.join(", ")), default)?;
        if choices.contains(&answer.as_str()) {
            return Ok(answer);
        }
        eprintln!("`{answer}` is not one of: {}", choices.join(", "));
    }
}

/// Asks for a line on the terminal (stderr), `default` on an empty answer.
fn ask_text(question: &str, default: &str) -> Result<String> {
    eprint!("{question} [{default}]: ");
    std::io::stderr().flush().ok();
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer)? == 0 {
        return Err(UserError::input("cancelled: no spec was written").into());
    }
    let answer = answer.trim();
    Ok(if answer.is_empty() { default.to_string() } else { answer.to_string() })
}

/// What this machine tells about the user without asking anyone: the SSH key and the address they came from.
struct Found {
    /// The first of `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa` whose `.pub` exists, as written in the spec, and
    /// whether its private half is there too (else login goes through ssh-agent).
    key: Option<(String, bool)>,
    /// The public address in `SSH_CONNECTION` / `SSH_CLIENT` (where the user's SSH session to this machine comes
    /// from), when it is a public one.
    address: Option<IpAddr>,
}

impl Found {
    fn on_this_machine() -> Self {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let key = home.as_deref().and_then(|home| {
            ["id_ed25519", "id_ecdsa", "id_rsa"]
                .into_iter()
                .find(|k| home.join(".ssh").join(format!("{k}.pub")).is_file())
                .map(|k| (format!("~/.ssh/{k}"), home.join(".ssh").join(k).is_file()))
        });
        let address = ["SSH_CONNECTION", "SSH_CLIENT"]
            .into_iter()
            .filter_map(|var| std::env::var(var).ok())
            .find_map(|v| v.split_whitespace().next().and_then(|ip| ip.parse::<IpAddr>().ok()))
            .filter(is_public);
        Self { key, address }
    }
}

/// Whether an address can be someone's public address (not private, loopback, link-local, shared or multicast).
fn is_public(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let shared = v4.octets()[0] == 100 && (64..128).contains(&v4.octets()[1]);
            !(v4.is_private() || v4.is_loopback() || v4.is_link_local() || v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() || shared)
        }
        IpAddr::V6(v6) => {
            let unique_local = (v6.segments()[0] & 0xfe00) == 0xfc00;
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || v6.is_unspecified() || v6.is_multicast() || unique_local || link_local)
        }
    }
}

fn placeholder(what: &str) -> String {
    format!("\"{PLACEHOLDER}: {what}>\"")
}

/// The spec's text: every section commented, the kind's own ports at their defaults, placeholders where needed.
fn starter_spec(name: &str, provider: ProviderKind, kind: SfuKind, found: &Found) -> String {
    let data = ProviderData::get(provider);
    let descriptor = kind.descriptor();
    let mut y = format!("# A {} deployment on {}, written by `sfuctl init`.\n", descriptor.title, data.title);
    y.push_str("{next steps}\n");
    y.push_str("# Every field is described in README.md, \"Spec reference\".\n");
    y.push_str(&format!("name: {name}\n\nprovider:\n  kind: {}\n", provider.as_str()));
    if data.creates_servers() {
        if !data.credentials.env.is_empty() {
            y.push_str(&format!("  # Credentials come from the environment: {}.\n", data.credentials.env.iter().map(|v| format!("${v}")).collect::<Vec<_>>().join(" or ")));
        }
        if !data.example_region.is_empty() {
            y.push_str(&format!("  region: {}\n", data.example_region));
        }
        if let Some(size) = &data.defaults.size {
            y.push_str(&format!("  # size: {size}  # the default machine size\n"));
        }
        y.push_str("  # count: 1  # identical hosts\n");
    } else {
        y.push_str("  # The servers you already have; sfuctl creates none. Each one's public IP is what the server announces.\n");
        y.push_str(&format!("  hosts:\n    - name: media-1\n      address: {}\n", placeholder("the server's public IP address, e.g. 203.0.113.10")));
        y.push_str("  # host_key: \"SHA256:...\"  # pin it (ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub on the host); else pinned at first contact\n");
    }

    y.push_str("\nssh:\n");
    if !data.creates_servers() {
        y.push_str(&format!("  user: {}  # root, or a user with passwordless sudo\n", data.defaults.ssh_user));
    }
    match &found.key {
        Some((key, true)) => y.push_str(&format!("  private_key: {key}  # found on this machine; its .pub is what cloud hosts get\n")),
        Some((key, false)) => y.push_str(&format!("  # Only the public half is here: sfuctl logs in through ssh-agent (`ssh-add -l` lists its keys).\n  public_key: {key}.pub\n")),
        None => y.push_str(&format!("  # No key found in ~/.ssh: make one with `ssh-keygen -t ed25519`, or name yours.\n  private_key: {}\n", placeholder("your SSH private key, e.g. ~/.ssh/id_ed25519"))),
    }
    y.push_str("  # Who may reach SSH (cloud and host firewall). sfuctl connects from this machine: its address must be here.\n");
    match found.address {
        Some(ip) => {
            let bits = if ip.is_ipv4() { 32 } else { 128 };
            y.push_str(&format!("  # {ip} is where your SSH session to this machine comes from ($SSH_CONNECTION); add this machine's own\n  # public address too if sfuctl runs here and it differs.\n  allow_from: [{ip}/{bits}]\n"));
        }
        None => y.push_str(&format!("  allow_from: [{}]\n", placeholder("your public IPv4 address/32, e.g. 203.0.113.7/32"))),
    }

    y.push_str(&format!("\nsfu:\n  kind: {}\n", kind.as_str()));
    match &descriptor.command {
        None => {
            y.push_str("  # How to start your server, run by /bin/sh in /opt/sfuctl/<name>/app; it reads its addresses and ports\n  # from the environment (SFU_ANNOUNCED_IP, SFU_LISTEN_IP, SFU_RTC_MIN_PORT, SFU_RTC_MAX_PORT).\n");
            y.push_str(&format!("  command: {}\n", placeholder("how to start your server, e.g. ./my-sfu")));
            y.push_str("  # artifact: ./my-sfu  # a file or directory uploaded to the host\n");
        }
        Some(_) if descriptor.install.packages.is_empty() => {
            let what = if descriptor.install.node.is_some() { "your app's directory (package.json and lock file), e.g. ./app" } else { "the server's binary, e.g. ./livekit-server" };
            y.push_str(&format!("  # Uploaded to every host: {} does not install it from the distribution.\n", descriptor.title));
            y.push_str(&format!("  artifact: {}\n", placeholder(what)));
        }
        Some(_) => y.push_str(&format!("  # {} is installed from the distribution's packages on a fresh host.\n", descriptor.title)),
    }
    y.push_str("  # The UDP media range: the cloud firewall, the host firewall and the server's config all get exactly this.\n");
    y.push_str("  rtc_ports: 40000-40999\n");
    for port in &descriptor.own_ports {
        let purposes: Vec<&str> = port.rules.iter().map(|r| r.purpose.as_str()).collect();
        y.push_str(&format!("  {}: {}  # {}\n", port.field.path().trim_start_matches("sfu."), port.default, purposes.join(", ")));
    }
    if descriptor.own_ports.is_empty() {
        y.push_str("  # tcp_ports: [443]  # your server's signaling port(s)\n");
    }
    y.push_str("  # participants: 100  # warns when rtc_ports is too small for this many\n");
    if descriptor.needs_secret {
        y.push_str("  # The shared secret comes from $SFUCTL_SECRET, never from this file: export SFUCTL_SECRET=$(openssl rand -hex 32)\n");
    }
    y.push_str("\n# sfuctl's own nftables table on every host (policy drop; SSH from allow_from, the media ports from anywhere).\nhost_firewall: true\n");
    let next = if placeholders_in(&y) > 0 {
        format!("# Fill in every {PLACEHOLDER}: …> (`sfuctl validate` names any left), then `sfuctl plan` and `sfuctl up`.")
    } else {
        "# Next: `sfuctl validate`, `sfuctl plan`, then `sfuctl up`.".to_string()
    };
    y.replacen("{next steps}", &next, 1)
}

/// How many placeholders the spec's text still holds (outside comments).
fn placeholders_in(text: &str) -> usize {
    text.lines().filter(|l| l.split('#').next().is_some_and(|code| code.contains(PLACEHOLDER))).count()
}

/// Tells what was written and what is left to fill in.
fn report(out: &Path, text: &str, found: &Found) {
    let left = placeholders_in(text);
    println!("Wrote {}.", out.display());
    if found.key.is_none() {
        eprintln!("No SSH key pair in ~/.ssh (id_ed25519, id_ecdsa, id_rsa): ssh.private_key is a placeholder.");
    }
    if found.address.is_none() {
        eprintln!("Your public address is not known here without asking a third party: ssh.allow_from is a placeholder.");
    }
    if left > 0 {
        println!("Next: fill in the {left} {PLACEHOLDER}: …> placeholder(s), then `sfuctl validate {0}` and `sfuctl plan {0}`.", out.display());
    } else {
        println!("Next: `sfuctl validate {0}`, then `sfuctl plan {0}`.", out.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_addresses_are_told_from_private_ones() {
        for ip in ["203.0.113.7", "8.8.8.8", "2001:db8::1"] {
            assert!(is_public(&ip.parse().unwrap()), "{ip}");
        }
        for ip in ["10.1.2.3", "192.168.1.1", "172.16.0.1", "127.0.0.1", "100.64.0.1", "169.254.1.1", "::1", "fd00::1", "fe80::1"] {
            assert!(!is_public(&ip.parse().unwrap()), "{ip}");
        }
    }
}
