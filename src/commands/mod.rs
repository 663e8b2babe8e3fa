//! One module per command: its logic, kept apart from the clap types in `cli.rs`.

pub mod audit;
pub mod completions;
pub mod down;
pub mod init;
pub mod logs;
pub mod plan;
pub mod render;
pub mod ssh;
pub mod status;
pub mod up;
pub mod validate;

pub use audit::AuditArgs;
pub use completions::{CompletionsArgs, ManArgs};
pub use down::DownArgs;
pub use init::InitArgs;
pub use logs::LogsArgs;
pub use plan::PlanArgs;
pub use render::RenderArgs;
pub use ssh::SshArgs;
pub use status::StatusArgs;
pub use up::UpArgs;
pub use validate::SpecArgs;

use std::path::Path;

use anyhow::Result;

use std::time::Duration;

use crate::deploy::Timeouts;
use crate::invocation::Invocation;
use crate::error::{Exit, UserError, report, warn};
use crate::render::HostTarget;
use crate::spec::{Diagnostic, FileCheck, Findings, LoadedSpec, Spec};
use crate::validate::check_source;

/// Loads a spec and validates it: warnings and notes are printed to stderr, errors (every one of them, structural
/// and semantic) become one exit-2 error listing them all.
pub fn load_valid_spec(path: &Path, files: FileCheck) -> Result<LoadedSpec> {
    load_checked(path, files, true)
}

/// Loads a spec and validates it like [`load_valid_spec`], without printing its warnings: for `down`, which
/// removes a deployment, where advice about the spec (an SSH range, a small media range) is beside the point and
/// was shown by every command before it.
pub fn load_valid_spec_quietly(path: &Path, files: FileCheck) -> Result<LoadedSpec> {
    load_checked(path, files, false)
}

fn load_checked(path: &Path, files: FileCheck, show_warnings: bool) -> Result<LoadedSpec> {
    let source = Spec::read_source(path)?;
    let checked = check_source(&source, base_dir(path), files);
    if show_warnings {
        print_warnings(path, &checked.findings);
    }
    match checked.spec {
        Some(spec) if checked.findings.errors.is_empty() => Ok(LoadedSpec { spec, path: path.to_path_buf(), source }),
        _ => Err(invalid_spec(path, &checked.findings.errors).into()),
    }
}

/// The directory relative paths in a spec are resolved against: the spec's own.
pub fn base_dir(spec_path: &Path) -> &Path {
    spec_path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."))
}

/// Prints each warning as `warning: <file>:<line>:<column>: <field>: <message>` and each note as `note: …`, each
/// followed by its `hint:`.
pub fn print_warnings(path: &Path, findings: &Findings) {
    for (lead, list) in [("warning", &findings.warnings), ("note", &findings.notes)] {
        for d in list {
            if lead == "warning" {
                warn(d.at(path));
            } else {
                eprintln!("{lead}: {}", d.at(path));
            }
            if let Some(h) = &d.hint {
                eprintln!("hint: {h}");
            }
        }
    }
}

/// One error for all of a spec's problems, printed as compilers do: each problem as `error: <file>:<line>:<column>:
/// <field>: <message>` with its `hint:`, then a last line counting them.
pub fn invalid_spec(path: &Path, errors: &[Diagnostic]) -> UserError {
    let mut message = String::new();
    for e in errors {
        message.push_str(&e.at(path));
        if let Some(h) = &e.hint {
            message.push_str(&format!("\nhint: {h}"));
        }
        message.push_str("\nerror: ");
    }
    let count = match errors.len() {
        0 => "it cannot be read".to_string(),
        1 => "1 problem".to_string(),
        n => format!("{n} problems"),
    };
    message.push_str(&format!("invalid spec `{}`: {count}; nothing was created or changed", path.display()));
    UserError::input(message)
}

/// Asks for `yes` on the terminal before destroying something, like `terraform destroy`; `yes` (the `--yes`
/// flag) skips the question. Without a terminal and without `--yes`, refuses: exit 2, nothing changed.
pub fn confirm(yes: bool, what: &str) -> Result<()> {
    use std::io::IsTerminal;
    if yes {
        return Ok(());
    }
    eprintln!("{what}");
    if !std::io::stdin().is_terminal() {
        return Err(UserError::input("refusing to remove anything without confirmation: there is no terminal to ask")
            .hint("pass --yes to confirm in scripts")
            .into());
    }
    if !answered_yes("Only 'yes' will be accepted to confirm.\n  Enter a value: ")? {
        return Err(UserError::input("cancelled: nothing was removed").into());
    }
    Ok(())
}

/// Asks `prompt` on the terminal; true when the answer is `yes`. Ctrl-C from the moment the prompt is shown until
/// it is answered ends the run at once (exit 130), even where it otherwise stops at a safe point.
fn answered_yes(prompt: &str) -> Result<bool> {
    use std::io::{BufRead, Write};
    let mut answer = String::new();
    crate::interrupt::asking(|| {
        eprint!("{prompt}");
        std::io::stderr().flush().ok();
        std::io::stdin().lock().read_line(&mut answer)
    })?;
    Ok(answer.trim() == "yes")
}

/// Shows what `up` is about to create or destroy in the cloud (the plan's text) and asks for `yes` on the
/// terminal, like `terraform apply`; `yes` (the `--yes` flag) skips the question. Without a terminal and without
/// `--yes`, refuses: exit 2, nothing created or deleted.
pub fn confirm_cloud_changes(yes: bool, invocation: &Invocation, plan_text: &str) -> Result<()> {
    use std::io::IsTerminal;
    if yes {
        return Ok(());
    }
    eprint!("{plan_text}");
    if !std::io::stdin().is_terminal() {
        return Err(UserError::input("refusing to create or delete cloud resources without confirmation: there is no terminal to ask")
            .hint(format!("check the plan above (or `{}`), then run `{}`", invocation.command("plan", ""), invocation.command("up", "--yes")))
            .into());
    }
    if !answered_yes("\nDo you want to perform these actions? Only 'yes' will be accepted to confirm.\n  Enter a value: ")? {
        return Err(UserError::input("cancelled: nothing was created or deleted").into());
    }
    Ok(())
}

/// The timeouts from the command line (seconds), with the defaults for what is not given.
pub fn timeouts(connect: Option<u64>, health: Option<u64>) -> Timeouts {
    let default = Timeouts::default();
    Timeouts {
        connect: connect.map_or(default.connect, Duration::from_secs),
        health: health.map_or(default.health, Duration::from_secs),
        ..default
    }
}

/// Prints every host's error (each as `error:` / `Caused by:` / `hint:`) and returns exit 1 when any host failed.
pub fn report_failures<T>(results: &[(HostTarget, Result<T>)]) -> Result<Exit> {
    let mut failed = false;
    for (_, r) in results {
        if let Err(e) = r {
            report(e);
            failed = true;
        }
    }
    Ok(if failed { Exit::Failed } else { Exit::Success })
}

/// The one host a command acts on: the one named (by name or address), or the only one there is.
pub fn pick_host(spec: &Spec, hosts: &[HostTarget], wanted: Option<&str>, invocation: &Invocation) -> Result<HostTarget> {
    let names = || hosts.iter().map(|h| format!("{} ({})", h.name, h.address)).collect::<Vec<_>>().join(", ");
    if hosts.is_empty() {
        return Err(UserError::failed(format!("deployment `{}` has no hosts: nothing is deployed", spec.name)).hint(format!("run `{}` first", invocation.command("up", ""))).into());
    }
    match wanted {
        Some(w) => hosts.iter().find(|h| h.name == w || h.address == w).cloned().ok_or_else(|| {
            UserError::input(format!("deployment `{}` has no host `{w}`", spec.name)).hint(format!("name one of: {}", names())).into()
        }),
        None if hosts.len() == 1 => Ok(hosts[0].clone()),
        None => Err(UserError::input(format!("deployment `{}` has {} hosts: say which one", spec.name, hosts.len())).hint(format!("name one of: {}", names())).into()),
    }
}

/// Writes `bytes` to stdout; a reader that stopped early (`| head`) is not an error.
pub fn print_stdout(bytes: &[u8], what: &str) -> Result<Exit> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(UserError::failed(format!("cannot print {what}")).caused_by(e).into()),
        _ => Ok(Exit::Success),
    }
}
