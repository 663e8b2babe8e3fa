//! Errors as the user sees them: `error:` / `Caused by:` / `hint:`, and the exit code each kind maps to.
//!
//! Code everywhere returns `anyhow::Result`. Where an error needs a particular exit code or a hint, it carries a
//! [`UserError`] somewhere in its chain (as the error itself or as a context layer); [`report`] finds it.
//! Nothing here ever prints a backtrace: this machine exports `RUST_BACKTRACE=1`, and a backtrace helps no user.

use std::fmt;
use std::process::ExitCode;

/// Exit codes, part of the user contract (README "Exit codes").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Everything worked.
    Success = 0,
    /// An operation failed: an API call, SSH, a remote command, a health check.
    Failed = 1,
    /// Bad input (usage, invalid spec, missing credentials or files): nothing was created or changed.
    BadInput = 2,
    /// An audit check failed, or `plan --detailed-exitcode` found changes.
    CheckFailed = 3,
    /// Stopped by Ctrl-C (SIGINT) at a safe point: 128 + the signal's number, as shells report it.
    Interrupted = 130,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> Self {
        ExitCode::from(exit as u8)
    }
}

/// An error with an exit code and an optional hint, meant to be read by a person.
///
/// Build one with [`UserError::input`] (exit 2) or [`UserError::failed`] (exit 1), add a hint with
/// [`UserError::hint`], and return it through `anyhow` (`Err(UserError::input("…").into())`, or
/// `.map_err(|e| UserError::failed("…").caused_by(e))` to keep the lower error as the cause).
#[derive(Debug)]
pub struct UserError {
    /// What went wrong, naming the thing (field, host, resource) it went wrong with.
    pub message: String,
    /// How to fix it, when we can tell.
    pub hint: Option<String>,
    /// The exit code this error maps to.
    pub exit: Exit,
    source: Option<anyhow::Error>,
}

impl UserError {
    /// Bad input: exit code 2. Use only before anything was created or changed.
    pub fn input(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None, exit: Exit::BadInput, source: None }
    }

    /// A failed operation: exit code 1.
    pub fn failed(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None, exit: Exit::Failed, source: None }
    }

    /// Stopped by Ctrl-C at a safe point: exit code 130.
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None, exit: Exit::Interrupted, source: None }
    }

    /// Adds the line printed after `hint:`.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Keeps `cause` as the `Caused by:` chain of this error.
    pub fn caused_by(mut self, cause: impl Into<anyhow::Error>) -> Self {
        self.source = Some(cause.into());
        self
    }
}

/// The first hint anywhere in an error's chain.
pub fn hint_of(err: &anyhow::Error) -> Option<String> {
    err.chain().find_map(|c| c.downcast_ref::<UserError>().and_then(|u| u.hint.clone()))
}

impl fmt::Display for UserError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for UserError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_ref().map(|e| e.as_ref() as &(dyn std::error::Error + 'static))
    }
}

/// Shorthand: `Err(input_error("…"))?` style early returns for bad input.
pub fn input_error(message: impl Into<String>) -> anyhow::Error {
    UserError::input(message).into()
}

/// The exit code an error maps to: the first [`UserError`] in its chain decides, except that an operation that
/// failed because of bad input (credentials the API refused, under "cannot list the servers") is bad input;
/// anything else is exit 1.
pub fn exit_of(err: &anyhow::Error) -> Exit {
    let mut codes = err.chain().filter_map(|e| e.downcast_ref::<UserError>()).map(|u| u.exit);
    match codes.next() {
        Some(Exit::Failed) if codes.any(|c| matches!(c, Exit::BadInput)) => Exit::BadInput,
        Some(first) => first,
        None => Exit::Failed,
    }
}

/// Formats an error the way [`report`] prints it, without colour. Useful in tests.
pub fn render(err: &anyhow::Error) -> String {
    let mut out = format!("error: {err}\n");
    let mut hints: Vec<String> = Vec::new();
    for (i, cause) in err.chain().enumerate() {
        if i > 0 {
            // A context layer repeats nothing new when its text is the same as the previous one: skip it.
            let text = cause.to_string();
            if !out.ends_with(&format!("{text}\n")) {
                for (n, line) in text.lines().enumerate() {
                    let lead = if n == 0 { "  Caused by: " } else { "             " };
                    out.push_str(&format!("{lead}{line}\n"));
                }
            }
        }
        if let Some(h) = cause.downcast_ref::<UserError>().and_then(|u| u.hint.clone())
            && !hints.contains(&h)
        {
            hints.push(h);
        }
    }
    // The innermost hint first: it speaks to the cause, the outer ones to what to do about it here.
    for h in hints.iter().rev() {
        out.push_str(&format!("hint: {h}\n"));
    }
    out
}

/// Prints an error to stderr as `error:` / `Caused by:` / `hint:` and returns the exit code it maps to.
pub fn report(err: &anyhow::Error) -> Exit {
    eprint!("{}", render(err));
    exit_of(err)
}

/// Prints a warning to stderr. Warnings never change the exit code.
pub fn warn(message: impl fmt::Display) {
    eprintln!("warning: {message}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn input_error_exits_2_with_hint_and_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "No such file or directory");
        let err: anyhow::Error = UserError::input("cannot read spec `x.yaml`").hint("check the path").caused_by(io).into();
        assert_eq!(exit_of(&err), Exit::BadInput);
        assert_eq!(
            render(&err),
            "error: cannot read spec `x.yaml`\n  Caused by: No such file or directory\nhint: check the path\n"
        );
    }

    #[test]
    fn context_layers_keep_the_inner_exit_code() {
        let err = Err::<(), _>(input_error("bad field")).context("while planning").unwrap_err();
        assert_eq!(exit_of(&err), Exit::BadInput);
        assert!(render(&err).starts_with("error: while planning\n  Caused by: bad field\n"));
    }

    #[test]
    fn a_hint_under_a_context_layer_is_printed_once() {
        let err = Err::<(), _>(anyhow::Error::from(UserError::failed("inner").hint("do this"))).context("outer").unwrap_err();
        assert_eq!(render(&err), "error: outer\n  Caused by: inner\nhint: do this\n");
    }

    #[test]
    fn plain_errors_exit_1() {
        assert_eq!(exit_of(&anyhow::anyhow!("boom")), Exit::Failed);
    }
}
