//! `sfuctl render SPEC --out DIR`: every file each host would get, written to a local directory.

use std::net::IpAddr;
use std::path::{Path, PathBuf};


use anyhow::Result;
use clap::Args;
use serde_json::json;

use crate::output::Output;
use crate::commands::{base_dir, load_valid_spec};
use crate::error::{Exit, UserError, warn};
use crate::secret::Secret;
use crate::render::{PLACEHOLDER_ADDRESS, Renderer, host_targets};
use crate::provider::catalog::ProviderData;
use crate::spec::FileCheck;

/// Arguments of `render`.
#[derive(Debug, Args)]
pub struct RenderArgs {
    /// The deployment spec (YAML).
    pub spec: PathBuf,
    /// The directory to write into (created if missing; files in it are overwritten).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// The public address to announce, for cloud hosts whose address is not known before they exist
    /// [default: 198.51.100.1, a documentation address].
    #[arg(long, value_name = "IP")]
    pub address: Option<String>,
    /// Use templates from this directory where it has them; the embedded ones otherwise.
    #[arg(long, value_name = "DIR")]
    pub templates: Option<PathBuf>,
}

/// Runs `render`.
pub fn execute(args: &RenderArgs, output: Output) -> Result<Exit> {
    let loaded = load_valid_spec(&args.spec, FileCheck::Warn)?;
    let spec = &loaded.spec;
    let address = args.address.as_deref().unwrap_or(PLACEHOLDER_ADDRESS);
    if address.parse::<IpAddr>().is_err() {
        return Err(UserError::input(format!("--address `{address}` is not an IP address"))
            .hint("give the public IPv4 or IPv6 address the server should announce, e.g. `--address 203.0.113.5`")
            .into());
    }
    if !ProviderData::get(spec.provider.kind).creates_servers() && args.address.is_some() {
        return Err(UserError::input("--address applies to cloud hosts only")
            .hint("existing hosts (kind ssh) announce the `address` given for them in the spec")
            .into());
    }
    let renderer = Renderer::new(args.templates.as_deref())?;
    let secret_env = spec.sfu.secret_env();
    let (secret, from_env) = Secret::from_env_or_random(secret_env)?;
    if !from_env && spec.sfu.kind.descriptor().needs_secret {
        warn(format!("${secret_env} is unset: the {} config got a new random secret; export {secret_env} to keep it stable", spec.sfu.kind.as_str()));
    }

    let mut written = Vec::new();
    for host in host_targets(spec, address) {
        let rendered = renderer.render_host(spec, base_dir(&args.spec), &host, &secret)?;
        let host_dir = args.out.join(&host.name);
        for file in &rendered.files {
            let target = host_dir.join(file.path.trim_start_matches('/'));
            write_file(&target, &file.contents, file.mode)?;
            written.push((host.name.clone(), file.path.clone(), target));
        }
        if let Some(user_data) = &rendered.cloud_init {
            let target = host_dir.join("cloud-init/user-data");
            write_file(&target, user_data, 0o644)?;
            written.push((host.name.clone(), "(cloud-init user-data)".into(), target));
        }
    }
    match output {
        Output::Json => {
            let files: Vec<_> = written.iter().map(|(h, p, t)| json!({ "host": h, "path": p, "written": t })).collect();
            println!("{}", serde_json::to_string_pretty(&json!({ "files": files }))?);
        }
        Output::Text => {
            for (host, path, target) in &written {
                println!("{host}: {path} -> {}", target.display());
            }
            eprintln!("Wrote {} files into {}.", written.len(), args.out.display());
        }
    }
    Ok(Exit::Success)
}

fn write_file(target: &Path, contents: &str, mode: u32) -> Result<()> {
    let fail = |what: &str, path: &PathBuf, e: std::io::Error| UserError::failed(format!("cannot {what} `{}`", path.display())).caused_by(e);
    let dir = target.parent().map(Path::to_path_buf).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| fail("create directory", &dir, e))?;
    std::fs::write(target, contents).map_err(|e| fail("write", &target.to_path_buf(), e))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(target, std::fs::Permissions::from_mode(mode)).map_err(|e| fail("set the mode of", &target.to_path_buf(), e))?;
    }
    Ok(())
}
