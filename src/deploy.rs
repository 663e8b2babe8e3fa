//! The deploy path every provider shares: given hosts with addresses, reach each over SSH (host key pinned),
//! upload the artifact and the rendered files (only what changed, atomically, sha256-checked), install the host
//! firewall, start or restart the service once, and wait until it is healthy. Also what `status` and `down` do
//! on a host. Hosts are handled concurrently.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::artifact::{Artifact, Placement};
use crate::error::UserError;
use crate::health;
use crate::nft_summary::FirewallSummary;
use crate::install::{self, InstallPlan, Installed};
use crate::invocation::Invocation;
use crate::plan::{Action, Change};
use crate::ports::{Manifest, Protocol};
use crate::remote::{RemoteHandle, SshTarget, connect_async, key_needs_passphrase, shell_quote as q};
use crate::secret::Secret;
use crate::render::{HostFiles, HostTarget, Layout, Renderer, nft_table, run_as, service_name, ssh_user};
use crate::service::{HostFacts, Manager, PROBE_SCRIPT, ServiceScripts};
use crate::spec::{Spec, resolve_path};
use crate::state::{HostRecord, StateFile};
use crate::wait::{self, Check};

/// Settings for reaching and waiting on hosts.
#[derive(Clone, Debug)]
pub struct Timeouts {
    /// TCP connect + SSH handshake + authentication.
    pub connect: Duration,
    /// How long the service may take to become healthy.
    pub health: Duration,
    /// How long cloud-init may take on a new server (package installs included).
    pub cloud_init: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self { connect: Duration::from_secs(10), health: Duration::from_secs(60), cloud_init: Duration::from_secs(900) }
    }
}

/// One deployment, ready to act on its hosts. Cheap to share between host tasks.
pub struct Deployment {
    /// The spec.
    pub spec: Spec,
    /// The spec's directory (relative paths in the spec are resolved against it).
    pub base_dir: PathBuf,
    /// The spec's path as the user typed it, for the commands hints name.
    pub invocation: Invocation,
    /// Where the files live on each host.
    pub layout: Layout,
    /// The port manifest.
    pub manifest: Manifest,
    /// The local state (pinned host keys, what was deployed), saved after every change.
    pub state: Mutex<StateFile>,
    /// Timeouts.
    pub timeouts: Timeouts,
    key: Option<PathBuf>,
    passphrase: Option<String>,
}

/// A host reached over SSH, with what sfuctl learnt about it. Cheap to clone (the connection is shared).
#[derive(Clone, Debug)]
pub struct Session {
    /// The host.
    pub host: HostTarget,
    /// The SSH connection.
    pub remote: RemoteHandle,
    /// Login user, root or sudo, service manager, nft.
    pub facts: HostFacts,
}

impl Deployment {
    /// Prepares a deployment: resolves the SSH key (asking for its passphrase when it has one and a terminal is
    /// there) and loads the state. `invocation` is how the user named the spec (hints repeat it).
    pub fn new(spec: Spec, invocation: Invocation, base_dir: &Path, timeouts: Timeouts) -> Result<Arc<Self>> {
        let key = match &spec.ssh.private_key {
            Some(raw) => Some(resolve_path(raw, base_dir)),
            // The default key when it exists; ssh-agent otherwise.
            None => Some(resolve_path("~/.ssh/id_ed25519", base_dir)).filter(|p| p.is_file()),
        };
        let passphrase = match &key {
            Some(path) if key_needs_passphrase(path)? => Some(passphrase_for(path)?),
            _ => None,
        };
        let state = StateFile::load(&spec.name)?;
        Ok(Arc::new(Self {
            layout: Layout::of(&spec),
            manifest: spec.manifest(),
            base_dir: base_dir.to_path_buf(),
            invocation,
            spec,
            state: Mutex::new(state),
            timeouts,
            key,
            passphrase,
        }))
    }

    /// The SSH private key file sfuctl logs in with (`None`: ssh-agent).
    pub fn private_key(&self) -> Option<&Path> {
        self.key.as_deref()
    }

    /// Whether the deployment's servers are made by sfuctl (a cloud), not given to it.
    fn creates_servers(&self) -> bool {
        crate::provider::catalog::ProviderData::get(self.spec.provider.kind).creates_servers()
    }

    /// Runs `f` on the state (callers save it themselves, right after a change).
    pub fn with_state<T>(&self, f: impl FnOnce(&mut StateFile) -> T) -> T {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut state)
    }

    /// Connects to a host: the host key must match the spec's pin or the state's; on first contact it is pinned
    /// in the state (and printed) before anything else happens.
    pub async fn connect(&self, host: &HostTarget) -> Result<Session> {
        let pinned_by_spec = self
            .spec
            .provider
            .hosts
            .iter()
            .find(|h| h.name == host.name)
            .and_then(|h| h.host_key.clone())
            .or_else(|| self.spec.ssh.host_key.clone());
        // A server sfuctl made is pinned by its provider ID (an address may be handed to a new server after
        // `down`); a host you gave sfuctl by its address.
        let pin = self.with_state(|s| if self.creates_servers() { s.state.server_id(&host.name).map(|id| crate::state::server_pin(id)) } else { None }).unwrap_or_else(|| host.address.clone());
        let pinned_in_state = self.with_state(|s| s.state.host_keys.get(&pin).cloned());
        let mut target = SshTarget::new(host.address.clone(), self.spec.ssh.port(), ssh_user(&self.spec));
        target.private_key = self.key.clone();
        target.passphrase = self.passphrase.clone();
        target.expected_host_key = pinned_by_spec.clone().or(pinned_in_state.clone());
        target.connect_timeout = self.timeouts.connect;
        let (remote, fingerprint) = connect_retrying(target, self.timeouts.connect).await.map_err(|e| {
            let mut err = UserError::failed(format!("cannot connect to host `{}`", host.name));
            if pinned_by_spec.is_none() && pinned_in_state.is_some() && format!("{e:#}").contains("CHANGED") {
                let path = self.with_state(|s| s.path().display().to_string());
                err = err.hint(format!("sfuctl pinned this host's key at first contact: after checking the new key on the host (`ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`), remove `{pin}` from `host_keys` in {path}, or pin the new key with `ssh.host_key`"));
            }
            err.caused_by(e)
        })?;
        if pinned_by_spec.is_none() && pinned_in_state.is_none() {
            eprintln!("{}: first contact, pinned host key {fingerprint}", host.name);
            self.with_state(|s| {
                s.state.host_keys.insert(pin.clone(), fingerprint.clone());
                s.save()
            })?;
        }
        let facts = HostFacts::parse(&remote.exec_checked(PROBE_SCRIPT).await?.stdout);
        if !facts.root {
            return Err(UserError::failed(format!("`{}` on host `{}` is not root and has no passwordless sudo", facts.user, host.name))
                .hint("sfuctl installs a service and a firewall: log in as root (ssh.user) or give the user passwordless sudo")
                .into());
        }
        Ok(Session { host: host.clone(), remote, facts })
    }
}

/// Connects, calling again while the host refuses or drops the connection for up to `within`: a fresh server's
/// sshd restarts while cloud-init configures it, and a rebooting one comes back a moment later. Anything else
/// (a wrong key, a changed host key, a timeout) fails at once.
async fn connect_retrying(target: SshTarget, within: Duration) -> Result<(RemoteHandle, String)> {
    let started = std::time::Instant::now();
    loop {
        match connect_async(target.clone()).await {
            Ok(done) => return Ok(done),
            Err(e) => {
                let text = format!("{e:#}");
                let passing = ["Connection refused", "Connection reset", "connection refused", "banner exchange", "Failed getting banner"].iter().any(|t| text.contains(t));
                if !passing || started.elapsed() + Duration::from_millis(500) >= within {
                    return Err(e);
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// Runs `script` as root on the host, failing with its stderr when it fails.
pub async fn run_as_root(session: &Session, script: &str) -> Result<String> {
    Ok(session.remote.exec_checked(session.facts.as_root(script)).await?.stdout)
}

fn passphrase_for(key: &Path) -> Result<String> {
    if let Ok(p) = std::env::var("SFUCTL_SSH_PASSPHRASE") {
        return Ok(p);
    }
    use std::io::IsTerminal;
    if std::io::stdin().is_terminal() {
        return rpassword::prompt_password(format!("Passphrase for {}: ", key.display()))
            .map_err(|e| UserError::input("cannot read the passphrase").caused_by(e).into());
    }
    Err(UserError::input(format!("the SSH key `{}` is protected by a passphrase and there is no terminal to ask for it", key.display()))
        .hint("load it into ssh-agent (`ssh-add`) and leave ssh.private_key unset, or set SFUCTL_SSH_PASSPHRASE")
        .into())
}

/// What `up` did on one host.
#[derive(Clone, Debug, Serialize)]
pub struct HostOutcome {
    /// The host's name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// systemd or supervisor.
    pub manager: Manager,
    /// Artifact bytes sent (0 when unchanged).
    pub artifact_bytes: u64,
    /// Bytes of rendered files sent.
    pub file_bytes: u64,
    /// The paths that changed on the host.
    pub changed: Vec<String>,
    /// `loaded`, `unchanged`, `removed` or `off`.
    pub host_firewall: &'static str,
    /// `started`, `restarted` or `unchanged`.
    pub service: &'static str,
    /// What the health check saw.
    pub health: Vec<String>,
    /// What was installed now (packages, masked units, Node.js, npm dependencies).
    pub installed: Installed,
    /// Seconds spent in each phase on this host.
    pub seconds: Phases,
    /// The SSH session, kept for the audit that ends `up`.
    #[serde(skip)]
    pub session: Option<Session>,
}

/// Seconds per phase of `up` on one host (for `--output json`, benchmarks and `-v`).
#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct Phases {
    /// SSH connect, handshake, login and the host probe.
    pub connect: f64,
    /// Waiting for cloud-init to finish.
    pub cloud_init: f64,
    /// The first round trip: preparing directories, installing what is missing, inspecting what the host has.
    pub install: f64,
    /// Uploading the artifact and the files, and `npm ci`.
    pub upload: f64,
    /// The host firewall, (re)starting the service and waiting until it is healthy.
    pub start: f64,
}

impl HostOutcome {
    /// Whether `up` changed anything on this host.
    pub fn changed_anything(&self) -> bool {
        !self.installed.is_empty() || !self.changed.is_empty() || matches!(self.host_firewall, "loaded" | "removed") || self.service != "unchanged"
    }
}

/// `up` on one host.
pub async fn up_host(dep: &Deployment, host: &HostTarget, artifact: Option<&Artifact>, secret: &Secret, renderer: &Renderer) -> Result<HostOutcome> {
    let files = renderer.render_host(&dep.spec, &dep.base_dir, host, secret)?;
    let mut seconds = Phases::default();
    let mut clock = std::time::Instant::now();
    let mut lap = |slot: &mut f64| {
        *slot = clock.elapsed().as_secs_f64();
        clock = std::time::Instant::now();
    };
    let session = dep.connect(host).await?;
    lap(&mut seconds.connect);
    // A new server (or a fresh one you were given) may still be installing packages and users: deploying now would
    // race it, apt's lock included. Done at once where cloud-init is finished or absent.
    wait_for_cloud_init(&session, dep.timeouts.cloud_init, &dep.invocation).await?;
    lap(&mut seconds.cloud_init);
    let plan = InstallPlan::for_spec(&dep.spec, &dep.layout.node);
    let (mut installed, seen) = prepare(dep, &session, &plan, &files, artifact).await?;
    lap(&mut seconds.install);
    let uploaded = upload(dep, &session, &plan, &files, artifact, &seen).await?;
    installed.npm = uploaded.npm;
    lap(&mut seconds.upload);
    let (host_firewall, service, health) = start(dep, &session, &plan, &uploaded.changed, &seen).await?;
    lap(&mut seconds.start);
    dep.with_state(|s| {
        s.state.hosts.insert(
            host.name.clone(),
            HostRecord {
                address: host.address.clone(),
                service_manager: Some(session.facts.manager.as_str().into()),
                artifact_sha256: artifact.map(|a| a.sha256.clone()),
            },
        );
        s.save()
    })?;
    Ok(HostOutcome {
        name: host.name.clone(),
        address: host.address.clone(),
        manager: session.facts.manager,
        artifact_bytes: uploaded.artifact_bytes,
        file_bytes: uploaded.file_bytes,
        changed: uploaded.changed,
        host_firewall,
        service,
        health,
        installed,
        seconds,
        session: Some(session),
    })
}

/// `up`'s first round trip: the deployment's directories and users, what a fresh host needs installed, and
/// everything the unchanged case needs to know (the files' sha256, the firewall table, the service's state).
async fn prepare(dep: &Deployment, session: &Session, plan: &InstallPlan, files: &HostFiles, artifact: Option<&Artifact>) -> Result<(Installed, HostInspection)> {
    let l = &dep.layout;
    let login = &session.facts.user;
    let service_user = run_as(&dep.spec);
    let mut prep = format!("set -e\nmkdir -p {} {} {}\n", q(&l.root), q(&l.app), q(&l.config));
    if session.facts.sudo {
        // Uploads run as the login user: let it own the deployment's directory.
        prep.push_str(&format!("chown {} {} {} {}\n", q(login), q(&l.root), q(&l.app), q(&l.config)));
    }
    if &service_user != login && service_user != "root" {
        prep.push_str(&format!(
            "id -u {u} >/dev/null 2>&1 || useradd --system --no-create-home --home-dir {root} --shell /usr/sbin/nologin {u}\n",
            u = q(&service_user),
            root = q(&l.root)
        ));
    }
    // The one directory the service may write (pid files, coturn's database), owned by its user and group.
    prep.push_str(&format!("mkdir -p {run}\nchown {u}:\"$(id -gn {u})\" {run}\n", run = q(&l.run), u = q(&service_user)));
    // What the server needs on a fresh host, each step idempotent and quiet when there is nothing to do.
    if !plan.packages.names.is_empty() || !plan.packages.mask_units.is_empty() {
        prep.push_str(&format!("(\n{})\n", install::packages_script(&plan.packages)));
    }
    if let Some(node) = &plan.node {
        prep.push_str(&format!("(\n{})\n", install::node_script(node)));
    }
    let scripts = ServiceScripts { manager: session.facts.manager, name: &service_name(&dep.spec), layout: l, run_as: &service_user };
    let stored_artifact = artifact_path(l, artifact);
    let managed: Vec<&str> = files.files.iter().map(|f| f.path.as_str()).chain(stored_artifact.as_deref()).collect();
    let script = format!("{prep}{}{}", inspect_script(&managed, l, &nft_table(&dep.spec)), scripts.status());
    let out = run_as_root(session, &script).await.with_context(|| format!("cannot prepare {} on host `{}`", l.root, session.host.name))?;
    Ok((Installed::parse(&out), HostInspection::parse(&out)))
}

/// What [`upload`] did.
struct Uploaded {
    artifact_bytes: u64,
    file_bytes: u64,
    /// The paths that changed (`app/node_modules` when `npm ci` ran).
    changed: Vec<String>,
    /// Whether `npm ci` ran.
    npm: bool,
}

/// Sends the artifact and the files the host lacks, installs the app's npm dependencies when its lock changed,
/// and gives the service's group read access to what changed.
async fn upload(dep: &Deployment, session: &Session, plan: &InstallPlan, files: &HostFiles, artifact: Option<&Artifact>, seen: &HostInspection) -> Result<Uploaded> {
    let l = &dep.layout;
    let mut out = Uploaded { artifact_bytes: 0, file_bytes: 0, changed: Vec::new(), npm: false };
    if let Some(artifact) = artifact {
        let (sent, artifact_changed) = upload_artifact(session, l, artifact, seen).await?;
        out.artifact_bytes = sent;
        if artifact_changed {
            out.changed.push(l.app.clone());
        }
    }
    let (file_bytes, changed_files) = upload_files(session, files, seen).await?;
    out.file_bytes = file_bytes;
    out.changed.extend(changed_files);
    if plan.npm && artifact.is_some() {
        // As the login user, who owns app/; with the service's environment (npm_config_registry, MEDIASOUP_WORKER_BIN).
        let node_bin = plan.path_prefix().unwrap_or_default();
        let npm = install::npm_script(&l.app, &node_bin, &crate::render::env_files(&dep.spec), &format!("{}/.npm-lock.sha256", l.root));
        let ran = session.remote.exec_checked(format!("sh -c {}", q(&npm))).await.with_context(|| format!("`npm ci` failed on host `{}`", session.host.name))?;
        if Installed::parse(&ran.stdout).npm {
            out.npm = true;
            out.changed.push(format!("{}/node_modules", l.app));
        }
    }
    let service_user = run_as(&dep.spec);
    if !out.changed.is_empty() && service_user != session.facts.user && service_user != "root" {
        // The service reads its config through its group; the login user keeps ownership for the next upload.
        run_as_root(session, &format!("g=$(id -gn {u}) && chgrp -R \"$g\" {root} && chmod -R g+rX {root}", u = q(&service_user), root = q(&l.root))).await?;
    }
    Ok(out)
}

/// The host firewall, then the service: (re)started once when anything but the ruleset changed, or started when
/// it is not running, after checking its program is there; then the health check.
async fn start(dep: &Deployment, session: &Session, plan: &InstallPlan, changed: &[String], seen: &HostInspection) -> Result<(&'static str, &'static str, Vec<String>)> {
    let l = &dep.layout;
    let host_firewall = converge_host_firewall(dep, session, changed.contains(&l.nftables), seen.table_present).await?;
    let service_user = run_as(&dep.spec);
    let scripts = ServiceScripts { manager: session.facts.manager, name: &service_name(&dep.spec), layout: l, run_as: &service_user };
    let restart = changed.iter().any(|p| p != &l.nftables);
    let running = seen.service.state == "active";
    if restart || !running {
        check_program(dep, session, plan).await?;
    }
    let service = if restart {
        run_as_root(session, &scripts.install_and_start(true)).await?;
        if running { "restarted" } else { "started" }
    } else if !running {
        run_as_root(session, &scripts.install_and_start(false)).await?;
        "started"
    } else {
        "unchanged"
    };
    let health = wait_healthy(dep, session, &scripts).await?;
    Ok((host_firewall, service, health))
}

/// Before the service starts: the program its command runs is there (else a clear error, not a crash loop).
async fn check_program(dep: &Deployment, session: &Session, plan: &InstallPlan) -> Result<()> {
    let command = crate::render::start_command(&dep.spec, &dep.base_dir);
    let Some(program) = install::program_of(&command) else { return Ok(()) };
    let out = run_as_root(session, &install::program_check_script(&program, &dep.layout.app, plan.path_prefix().as_deref())).await?;
    if out.lines().any(|l| l.starts_with("missing=")) {
        return Err(UserError::failed(format!("`{program}` is not on host `{}`: the service (`{command}`) would fail to start", session.host.name))
            .hint(if dep.spec.sfu.kind.descriptor().install.packages.is_empty() {
                format!("upload it as `sfu.artifact`, or install it with `sfu.packages` (e.g. `packages: [{}]`)", program.trim_start_matches("./"))
            } else {
                "leave `sfu.artifact` and `sfu.command` unset to get the distribution's package, or upload the server as `sfu.artifact`".to_string()
            })
            .into());
    }
    Ok(())
}

/// Waits until cloud-init has finished on a new server (`cloud-init status`, polled with progress, bounded). A
/// host without cloud-init passes at once; cloud-init's own failure is an error with its long status.
async fn wait_for_cloud_init(session: &Session, timeout: Duration, invocation: &Invocation) -> Result<()> {
    // result.json is written once per boot when cloud-init has finished: reading it takes a millisecond, where
    // `cloud-init status` (a Python start) takes half a second on a busy host. With errors, ask cloud-init itself.
    let probe = "if grep -Eqs '\"errors\": *\\[ *\\]' /run/cloud-init/result.json; then echo 'status: done'; \
                 elif command -v cloud-init >/dev/null 2>&1; then cloud-init status 2>&1; else echo absent; fi";
    wait::until(&format!("cloud-init to finish on {}", session.host.name), timeout, Duration::from_secs(1), || async move {
        let out = run_as_root(session, probe).await?;
        if out.lines().any(|l| l.trim() == "absent") {
            return Ok(Check::Done(()));
        }
        let status = out.lines().find_map(|l| l.trim().strip_prefix("status:")).map(str::trim).unwrap_or("unknown").to_string();
        match status.as_str() {
            // "degraded done" (recoverable warnings) counts as done.
            "done" | "disabled" | "degraded" | "degraded done" => Ok(Check::Done(())),
            "error" => {
                let long = run_as_root(session, "cloud-init status --long 2>&1 | tail -n 20").await.unwrap_or_default();
                Err(UserError::failed(format!("cloud-init failed on {}", session.host.name))
                    .caused_by(anyhow::anyhow!("{}", long.trim()))
                    .hint(format!("see /var/log/cloud-init-output.log on the host (`{}` continues once cloud-init has run cleanly)", invocation.command("up", "")))
                    .into())
            }
            other => Ok(Check::NotYet(format!("cloud-init is {other}"))),
        }
    })
    .await
}

/// Uploads the artifact (skipped when the host has the same sha256) and unpacks it when it is an archive.
/// Returns the bytes sent and whether the app directory changed.
async fn upload_artifact(session: &Session, l: &Layout, artifact: &Artifact, seen: &HostInspection) -> Result<(u64, bool)> {
    let marker = q(&l.artifact_marker);
    let sha = &artifact.sha256;
    let path = artifact_path(l, Some(artifact)).expect("an artifact has a path");
    if seen.sha256.get(&path) == Some(sha) && seen.marker.as_deref() == Some(sha.as_str()) {
        return Ok((0, false));
    }
    let sent = if seen.sha256.get(&path) == Some(sha) {
        0
    } else {
        let mode = if matches!(artifact.placement, Placement::File { .. }) { 0o755 } else { 0o644 };
        session.remote.upload(artifact.upload.clone(), path.clone(), mode).await?.bytes_sent
    };
    match &artifact.placement {
        Placement::File { .. } => {
            session.remote.exec_checked(format!("echo {sha} > {marker}")).await?;
            Ok((sent, true))
        }
        Placement::Archive { gzip } => {
            let stored = path;
            let unpack = format!(
                "set -e\nif [ \"$(cat {marker} 2>/dev/null)\" != {sha} ]; then\n  rm -rf {new}\n  mkdir -p {new}\n  tar -x{z}f {stored} -C {new}\n  if [ -d {app}/node_modules ] && [ ! -e {new}/node_modules ]; then mv {app}/node_modules {new}/; fi\n  rm -rf {app}\n  mv {new} {app}\n  echo {sha} > {marker}\n  echo unpacked\nfi\n",
                new = q(&format!("{}.new", l.app)),
                app = q(&l.app),
                z = if *gzip { "z" } else { "" },
                stored = q(&stored),
            );
            let unpacked = session.remote.exec_checked(unpack).await?.stdout.contains("unpacked");
            Ok((sent, unpacked))
        }
    }
}

/// Uploads every rendered file the host does not already have. Returns the bytes sent and the changed paths.
async fn upload_files(session: &Session, files: &HostFiles, seen: &HostInspection) -> Result<(u64, Vec<String>)> {
    let mut sent = 0;
    let mut changed = Vec::new();
    for file in &files.files {
        if seen.sha256.get(&file.path) == Some(&crate::artifact::hex(&Sha256::digest(file.contents.as_bytes()))) {
            continue;
        }
        let out = session.remote.upload_bytes(file.contents.clone().into_bytes(), file.path.clone(), file.mode as i32).await?;
        sent += out.bytes_sent;
        if !out.skipped {
            changed.push(file.path.clone());
        }
    }
    Ok((sent, changed))
}

/// Loads the host firewall when its ruleset changed or its table is missing; removes sfuctl's table when the
/// spec turned the host firewall off.
async fn converge_host_firewall(dep: &Deployment, session: &Session, ruleset_changed: bool, present: bool) -> Result<&'static str> {
    let table = nft_table(&dep.spec);
    if !session.facts.nft {
        if dep.spec.host_firewall {
            return Err(UserError::failed(format!("host `{}` has no `nft`, so sfuctl cannot install its host firewall", session.host.name))
                .hint("install nftables on the host (`apt-get install nftables`), or set `host_firewall: false` in the spec")
                .into());
        }
        return Ok("off");
    }
    if dep.spec.host_firewall {
        if ruleset_changed || !present {
            run_as_root(session, &format!("nft -f {}", q(&dep.layout.nftables)))
                .await
                .with_context(|| format!("cannot load the host firewall on `{}`", session.host.name))?;
            return Ok("loaded");
        }
        Ok("unchanged")
    } else if present {
        run_as_root(session, &format!("nft delete table inet {table}")).await?;
        Ok("removed")
    } else {
        Ok("off")
    }
}

/// Where the artifact is stored on the host: the file itself, or the archive that is unpacked into `app/`.
fn artifact_path(l: &Layout, artifact: Option<&Artifact>) -> Option<String> {
    artifact.map(|a| match &a.placement {
        Placement::File { name } => format!("{}/{name}", l.app),
        Placement::Archive { gzip } => format!("{}/artifact.tar{}", l.root, if *gzip { ".gz" } else { "" }),
    })
}

/// Prints `sha <hex> <path>` for each managed file that exists, the artifact marker and whether sfuctl's
/// nftables table is loaded; read by [`HostInspection::parse`].
fn inspect_script(paths: &[&str], l: &Layout, table: &str) -> String {
    let quoted: Vec<String> = paths.iter().map(|p| q(p)).collect();
    format!(
        "for f in {}; do if [ -f \"$f\" ]; then echo \"sha $(sha256sum \"$f\" | cut -d' ' -f1) $f\"; fi; done\necho \"marker $(cat {} 2>/dev/null)\"\nif command -v nft >/dev/null 2>&1 && nft list table inet {table} >/dev/null 2>&1; then echo table=present; fi\n",
        quoted.join(" "),
        q(&l.artifact_marker)
    )
}

/// What one inspection round trip found on a host.
struct HostInspection {
    sha256: std::collections::HashMap<String, String>,
    marker: Option<String>,
    table_present: bool,
    service: ServiceState,
}

impl HostInspection {
    fn parse(out: &str) -> Self {
        let mut sha256 = std::collections::HashMap::new();
        let mut marker = None;
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("sha ") {
                if let Some((hash, path)) = rest.split_once(' ') {
                    sha256.insert(path.to_string(), hash.to_string());
                }
            } else if let Some(m) = line.strip_prefix("marker ") {
                marker = Some(m.trim().to_string()).filter(|m| !m.is_empty());
            }
        }
        Self { sha256, marker, table_present: out.lines().any(|l| l == "table=present"), service: ServiceState::parse(out) }
    }
}

/// The service's state on a host.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ServiceState {
    /// `active`, `activating`, `inactive`, `failed`, …, or `not deployed` when the deployment's directory is gone.
    pub state: String,
    /// When it (last) started, Unix seconds.
    pub since: Option<u64>,
    /// Its main process.
    pub pid: Option<u32>,
    /// How often it was restarted after failing (systemd's NRestarts, or the supervisor's count).
    pub restarts: Option<u32>,
    /// How its main process last ended, when known: `status 127` (it exited), `signal 9 (KILL)`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// systemd's result for the unit when it is not `success` (`exit-code`, `start-limit-hit`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    /// One phrase for people, the same in `status` and the audit: `active`, `crash-looping: restarted 4 times,
    /// last exit status 127`, `not deployed`.
    pub summary: String,
}

impl ServiceState {
    /// Reads what [`ServiceScripts::status`] prints.
    pub fn parse(out: &str) -> Self {
        let get = |key: &str| out.lines().find_map(|l| l.strip_prefix(&format!("{key}="))).map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
        let deployed = get("deployed").as_deref() != Some("no");
        let mut state = get("state").unwrap_or_else(|| "unknown".into());
        if !deployed && state != "active" {
            state = "not deployed".into();
        }
        let restarts = get("systemd.NRestarts").or_else(|| get("restarts")).and_then(|v| v.parse().ok());
        // systemd: ExecMainCode is the CLD_* code of the last main process (1 exited, 2 killed, 3 dumped), 0 while
        // it runs. The supervisor: the shell's status, above 128 for a signal.
        let last_exit = match (get("systemd.ExecMainCode").and_then(|v| v.parse::<u8>().ok()), get("systemd.ExecMainStatus").and_then(|v| v.parse::<i32>().ok())) {
            (Some(1), Some(status)) => Some(format!("status {status}")),
            (Some(2 | 3), Some(signal)) => Some(signal_text(signal)),
            (Some(_), _) => None,
            (None, _) => get("last_exit").and_then(|v| v.parse::<i32>().ok()).map(|s| if s > 128 { signal_text(s - 128) } else { format!("status {s}") }),
        };
        let result = get("systemd.Result").filter(|r| r != "success");
        let mut s = Self { state, since: get("since").and_then(|v| v.parse().ok()), pid: get("pid").and_then(|v| v.parse().ok()).filter(|&p| p != 0), restarts, last_exit, result, summary: String::new() };
        s.summary = s.describe();
        s
    }

    /// Whether the server runs.
    pub fn running(&self) -> bool {
        self.state == "active"
    }

    fn describe(&self) -> String {
        let restarts = self.restarts.unwrap_or(0);
        let exit = self.last_exit.as_ref().map(|e| if e.starts_with("signal") { format!("by {e}") } else { e.clone() });
        let history = match (restarts, &exit) {
            (0, None) => String::new(),
            (0, Some(exit)) => format!("last exit {exit}"),
            (n, None) => format!("restarted {n} time{}", if n == 1 { "" } else { "s" }),
            (n, Some(exit)) => format!("restarted {n} time{}, last exit {exit}", if n == 1 { "" } else { "s" }),
        };
        let result = self.result.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
        match self.state.as_str() {
            "active" if history.is_empty() => "active".into(),
            "active" => format!("active, {history}"),
            // Not running, restarted before: it keeps failing and being started again.
            "activating" if restarts > 0 => format!("crash-looping: {history}"),
            state if history.is_empty() => format!("{state}{result}"),
            state => format!("{state}: {history}{result}"),
        }
    }
}

/// A signal number as `signal 9 (KILL)` (read after "last exit by").
fn signal_text(signal: i32) -> String {
    let name = match signal {
        1 => "HUP",
        2 => "INT",
        6 => "ABRT",
        9 => "KILL",
        11 => "SEGV",
        13 => "PIPE",
        15 => "TERM",
        _ => return format!("signal {signal}"),
    };
    format!("signal {signal} ({name})")
}

async fn service_state(session: &Session, scripts: &ServiceScripts<'_>) -> Result<ServiceState> {
    Ok(ServiceState::parse(&run_as_root(session, &scripts.status()).await?))
}

/// Waits until the service runs, has bound its ports and answers its kind's probe. On timeout, the error carries
/// the last lines of the service's log.
async fn wait_healthy(dep: &Deployment, session: &Session, scripts: &ServiceScripts<'_>) -> Result<Vec<String>> {
    let address: IpAddr = session.host.address.parse().map_err(|_| UserError::failed(format!("`{}` is not an IP address", session.host.address)))?;
    let spec = dep.spec.clone();
    let result = wait::until(&format!("{} on `{}` to be healthy", scripts.name, session.host.name), dep.timeouts.health, Duration::from_millis(300), || {
        let spec = spec.clone();
        async move {
            let out = run_as_root(session, &format!("{}{}\n{}", scripts.status(), health::SOCKETS_SCRIPT, health::kind_probe_script(&spec))).await?;
            let state = ServiceState::parse(&out);
            if state.state != "active" {
                return Ok(Check::NotYet(format!("service {}", state.state)));
            }
            let missing = health::missing_ports(&dep.manifest, &health::bound_ports(&out));
            if !missing.is_empty() {
                return Ok(Check::NotYet(format!("not bound yet: {}", missing.join(", "))));
            }
            let seen = match out.lines().find_map(|l| l.strip_prefix("probe: ")) {
                Some(line) if line.starts_with("ok ") => Some(line[3..].to_string()),
                Some(line) if line.starts_with("fail ") => return Ok(Check::NotYet(line[5..].to_string())),
                // No python3 on the host: probe from here instead (this also needs the network to let it through).
                Some(_) => match tokio::task::spawn_blocking(move || health::kind_probe(&spec, address, Duration::from_secs(1))).await? {
                    Ok(seen) => seen,
                    Err(e) => return Ok(Check::NotYet(format!("{e:#}"))),
                },
                None => None,
            };
            let mut health = vec![format!("service active ({})", scripts.manager.as_str())];
            let expected = health::expected_ports(&dep.manifest);
            if !expected.is_empty() {
                health.push(format!("bound: {}", expected.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")));
            }
            health.extend(seen);
            Ok(Check::Done(health))
        }
    })
    .await;
    match result {
        Ok(health) => Ok(health),
        Err(err) => {
            let log = session.remote.exec(session.facts.as_root(&scripts.logs(20))).await.map(|o| o.stdout).unwrap_or_default();
            Err(UserError::failed(format!("the service on host `{}` did not become healthy", session.host.name))
                .caused_by(err.context(format!("last lines of its log:\n{}", log.trim_end())))
                .hint(format!("see the whole log with `{}` (on the host: {})", dep.invocation.command("logs", &session.host.name), scripts.log_location()))
                .into())
        }
    }
}

/// What `status` shows for one host.
#[derive(Clone, Debug, Serialize)]
pub struct HostStatus {
    /// The host's name.
    pub name: String,
    /// Its address.
    pub address: String,
    /// systemd or supervisor.
    pub manager: Manager,
    /// The service's state.
    pub service: ServiceState,
    /// The deployed artifact's sha256, when there is one.
    pub artifact_sha256: Option<String>,
    /// The manifest's single ports that are bound on the host.
    pub ports_bound: Vec<String>,
    /// The manifest's single ports that are not.
    pub ports_missing: Vec<String>,
    /// Whether sfuctl's host firewall table is loaded.
    pub host_firewall: bool,
    /// What that table lets in, as loaded on the host.
    pub firewall: FirewallSummary,
    /// The table's name (`sfuctl_<name>`).
    pub firewall_table: String,
}

/// `status` on one host.
pub async fn status_host(dep: &Deployment, host: &HostTarget) -> Result<HostStatus> {
    let session = dep.connect(host).await?;
    let scripts = ServiceScripts { manager: session.facts.manager, name: &service_name(&dep.spec), layout: &dep.layout, run_as: "" };
    // One round trip: the service, the sockets, the artifact marker and sfuctl's nftables table (listed whole).
    let table = nft_table(&dep.spec);
    let list_table = format!("command -v nft >/dev/null 2>&1 && nft list table inet {table} 2>/dev/null | sed 's/^/nft: /'\n");
    let out = run_as_root(&session, &format!("{}{}{}\n{list_table}", inspect_script(&[], &dep.layout, &table), scripts.status(), health::SOCKETS_SCRIPT)).await?;
    let listing: String = out.lines().filter_map(|l| l.strip_prefix("nft: ")).map(|l| format!("{l}\n")).collect();
    let seen = HostInspection::parse(&out);
    let bound = health::bound_ports(&out);
    let (ports_bound, ports_missing): (Vec<_>, Vec<_>) =
        health::expected_ports(&dep.manifest).into_iter().partition(|p| bound.contains(p));
    let show = |v: Vec<(Protocol, u16)>| v.into_iter().map(|(p, n)| format!("{p} {n}")).collect();
    Ok(HostStatus {
        name: host.name.clone(),
        address: host.address.clone(),
        manager: session.facts.manager,
        service: seen.service,
        artifact_sha256: seen.marker,
        ports_bound: show(ports_bound),
        ports_missing: show(ports_missing),
        host_firewall: seen.table_present,
        firewall: FirewallSummary::parse(&listing),
        firewall_table: table,
    })
}

/// What `up` would change on a host that sfuctl deployed to before, found with one read-only round trip (the
/// same inspection `up` makes): the files that differ, the artifact, the host firewall table, the service. An
/// empty list means the host matches the spec.
pub async fn preview_host(dep: &Deployment, host: &HostTarget, artifact: Option<&Artifact>, secret: &Secret, renderer: &Renderer) -> Result<Vec<Change>> {
    let files = renderer.render_host(&dep.spec, &dep.base_dir, host, secret)?;
    let session = dep.connect(host).await?;
    let l = &dep.layout;
    let scripts = ServiceScripts { manager: session.facts.manager, name: &service_name(&dep.spec), layout: l, run_as: "" };
    let stored_artifact = artifact_path(l, artifact);
    let managed: Vec<&str> = files.files.iter().map(|f| f.path.as_str()).chain(stored_artifact.as_deref()).collect();
    let seen = HostInspection::parse(&run_as_root(&session, &format!("{}{}", inspect_script(&managed, l, &nft_table(&dep.spec)), scripts.status())).await?);
    let mut details: Vec<String> = files
        .files
        .iter()
        .filter(|f| seen.sha256.get(&f.path).map(String::as_str) != Some(crate::artifact::hex(&Sha256::digest(f.contents.as_bytes())).as_str()))
        .map(|f| format!("file      {} ({})", f.path, if seen.sha256.contains_key(&f.path) { "differs" } else { "missing" }))
        .collect();
    if let Some(a) = artifact
        && seen.marker.as_deref() != Some(a.sha256.as_str())
    {
        details.push(format!("artifact  into {} (sha256 {}…)", l.app, &a.sha256[..12]));
    }
    let mut out = Vec::new();
    let host_name = Some(host.name.clone());
    if dep.spec.host_firewall != seen.table_present {
        let action = if dep.spec.host_firewall { Action::Create } else { Action::Delete };
        out.push(Change { action, kind: "host_firewall", name: nft_table(&dep.spec), host: host_name.clone(), details: vec![] });
    }
    if seen.service.state != "active" {
        details.push(format!("service is {}: it is started", seen.service.state));
    }
    if !details.is_empty() {
        details.insert(0, format!("{} server, announcing {}", dep.spec.sfu.kind.as_str(), host.address));
        out.push(Change { action: Action::Update, kind: "service", name: service_name(&dep.spec), host: host_name, details });
    }
    Ok(out)
}

/// What `down` did on one host.
#[derive(Clone, Debug, Serialize)]
pub struct HostRemoval {
    /// The host's name.
    pub name: String,
    /// What was removed (empty: the host was already clean).
    pub removed: Vec<String>,
}

/// `down` on one host: stops and removes the service, sfuctl's nftables table and `/opt/sfuctl/<name>`; touches
/// nothing else. A clean host is fine.
pub async fn down_host(dep: &Deployment, host: &HostTarget) -> Result<HostRemoval> {
    let session = dep.connect(host).await?;
    let l = &dep.layout;
    let name = service_name(&dep.spec);
    let mut removed = Vec::new();
    // Either manager may have been used by an earlier `up` (a host can gain systemd): stop both.
    for manager in [Manager::Systemd, Manager::Supervisor] {
        let scripts = ServiceScripts { manager, name: &name, layout: l, run_as: "" };
        if manager == Manager::Systemd && session.facts.manager != Manager::Systemd {
            continue;
        }
        if !matches!(service_state(&session, &scripts).await?.state.as_str(), "inactive" | "not deployed") || (manager == Manager::Systemd && unit_linked(&session, &name).await?) {
            removed.push(format!("service {name} ({})", manager.as_str()));
        }
        run_as_root(&session, &scripts.stop_and_remove()).await?;
    }
    let table = nft_table(&dep.spec);
    if session.facts.nft && run_as_root(&session, &format!("nft list table inet {table} >/dev/null 2>&1 && echo present || true")).await?.contains("present") {
        run_as_root(&session, &format!("nft delete table inet {table}")).await?;
        removed.push(format!("nftables table inet {table}"));
    }
    let sysctl = format!("/etc/sysctl.d/60-sfuctl-{}.conf", dep.spec.name);
    let gone = run_as_root(
        &session,
        &format!(
            "for p in {root} {sysctl}; do if [ -e \"$p\" ]; then rm -rf \"$p\"; echo \"$p\"; fi; done",
            root = q(&l.root),
            sysctl = q(&sysctl)
        ),
    )
    .await?;
    removed.extend(gone.lines().map(str::to_string));
    dep.with_state(|s| {
        s.state.hosts.remove(&host.name);
        s.save()
    })?;
    Ok(HostRemoval { name: host.name.clone(), removed })
}

async fn unit_linked(session: &Session, name: &str) -> Result<bool> {
    Ok(session.remote.exec(format!("test -e /etc/systemd/system/{name}.service && echo yes")).await?.stdout.contains("yes"))
}

/// Runs `f` on every host concurrently, keeping the given order in the results.
pub async fn for_each_host<T, F, Fut>(dep: &Arc<Deployment>, hosts: &[HostTarget], f: F) -> Vec<(HostTarget, Result<T>)>
where
    T: Send + 'static,
    F: Fn(Arc<Deployment>, HostTarget) -> Fut,
    Fut: std::future::Future<Output = Result<T>> + Send + 'static,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (i, host) in hosts.iter().cloned().enumerate() {
        let fut = f(Arc::clone(dep), host);
        tasks.spawn(async move { (i, fut.await) });
    }
    let mut results: Vec<Option<Result<T>>> = hosts.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        if let Ok((i, r)) = joined {
            results[i] = Some(r);
        }
    }
    hosts
        .iter()
        .cloned()
        .zip(results)
        .map(|(h, r)| {
            let r = r.unwrap_or_else(|| Err(anyhow::anyhow!("the task for host `{}` stopped unexpectedly", h.name)));
            (h, r)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::ServiceState;

    #[test]
    fn a_crash_loop_reads_the_same_from_systemd_and_the_supervisor() {
        let systemd = ServiceState::parse("state=activating\npid=\nsystemd.SubState=auto-restart\nsystemd.NRestarts=4\nsystemd.ExecMainCode=1\nsystemd.ExecMainStatus=127\nsystemd.Result=exit-code\n");
        assert_eq!(systemd.summary, "crash-looping: restarted 4 times, last exit status 127");
        assert!(!systemd.running());
        let supervisor = ServiceState::parse("state=activating\nrestarts=4\nlast_exit=127\n");
        assert_eq!(supervisor.summary, systemd.summary);
        let killed = ServiceState::parse("state=active\npid=12\nrestarts=1\nlast_exit=137\n");
        assert_eq!((killed.summary.as_str(), killed.running()), ("active, restarted 1 time, last exit by signal 9 (KILL)", true));
    }

    #[test]
    fn plain_states_and_a_removed_deployment() {
        assert_eq!(ServiceState::parse("state=active\nsystemd.NRestarts=0\nsystemd.ExecMainCode=0\nsystemd.ExecMainStatus=0\nsystemd.Result=success\n").summary, "active");
        assert_eq!(ServiceState::parse("deployed=no\nstate=inactive\nsystemd.NRestarts=0\n").summary, "not deployed");
        let failed = ServiceState::parse("state=failed\nsystemd.NRestarts=5\nsystemd.ExecMainCode=1\nsystemd.ExecMainStatus=3\nsystemd.Result=start-limit-hit\n");
        assert_eq!(failed.summary, "failed: restarted 5 times, last exit status 3 (start-limit-hit)");
        assert_eq!(ServiceState::parse("state=inactive\n").summary, "inactive");
    }
}
