//! `sfuctl completions SHELL` and `sfuctl man`: shell completions and manual pages, generated from the same clap
//! definitions as the command line itself, so they can never describe another version of it.

use std::path::PathBuf;

use anyhow::Result;
use clap::Args;
use clap_complete::Shell;

use crate::commands::print_stdout;
use crate::error::{Exit, UserError};

/// Arguments of `completions`.
#[derive(Debug, Args)]
#[command(after_help = "\
Install (then open a new shell):
  bash:       sfuctl completions bash > ~/.local/share/bash-completion/completions/sfuctl
  zsh:        sfuctl completions zsh > ~/.zfunc/_sfuctl
              and in ~/.zshrc: fpath+=~/.zfunc; autoload -U compinit; compinit
  fish:       sfuctl completions fish > ~/.config/fish/completions/sfuctl.fish
  powershell: sfuctl completions powershell >> $PROFILE")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Arguments of `man`.
#[derive(Debug, Args)]
#[command(after_help = "\
Install:
  sfuctl man --out ~/.local/share/man/man1 && man sfuctl")]
pub struct ManArgs {
    /// Write one page per command (sfuctl.1, sfuctl-up.1, ...) into this directory instead of printing
    /// sfuctl(1) to stdout. The directory is created if missing.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Prints the completion script for `args.shell` of the command line `cli` to stdout.
pub fn completions(args: &CompletionsArgs, mut cli: clap::Command) -> Result<Exit> {
    let name = cli.get_name().to_string();
    let mut script = Vec::new();
    clap_complete::generate(args.shell, &mut cli, name, &mut script);
    print_stdout(&script, "the completion script")
}

/// Prints sfuctl(1) to stdout, or writes every command's page into `args.out`.
pub fn man(args: &ManArgs, cli: clap::Command) -> Result<Exit> {
    match &args.out {
        None => {
            let mut page = Vec::new();
            clap_mangen::Man::new(cli).render(&mut page).map_err(|e| UserError::failed("cannot render the manual page").caused_by(e))?;
            return print_stdout(&page, "the manual page");
        }
        Some(dir) => {
            let fail = |e: std::io::Error| UserError::failed(format!("cannot write manual pages into `{}`", dir.display())).caused_by(e);
            std::fs::create_dir_all(dir).map_err(fail)?;
            clap_mangen::generate_to(cli, dir).map_err(fail)?;
            eprintln!("Wrote the manual pages into {}; `man sfuctl` finds them when that directory is on MANPATH (~/.local/share/man is).", dir.display());
        }
    }
    Ok(Exit::Success)
}
