//! Ctrl-C during `up`: the first one asks the run to stop at the next safe point (between two API steps, or at
//! the next round of a wait), so every create already sent is answered and its ID saved; a second one stops at
//! once. [`check`] is the safe point: it turns a pending request into an [`Interrupted`] error (exit 130), which
//! `up` reports with what exists and how to continue.

use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Result;

use crate::error::{Exit, UserError};

static REQUESTED: AtomicBool = AtomicBool::new(false);
/// A question is on the terminal (nothing is in flight then): Ctrl-C ends the run at once.
static ASKING: AtomicBool = AtomicBool::new(false);

/// The error of a run stopped at a safe point; its text says where.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

/// Starts listening for Ctrl-C (SIGINT) on the current tokio runtime: the first asks for a stop at the next safe
/// point, the second exits at once with 130.
pub fn listen() {
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        // Store, then look (and `asking` does the same the other way round): at least one of the two sees the
        // other, so a Ctrl-C as the question appears never waits for its answer.
        REQUESTED.store(true, Ordering::SeqCst);
        if ASKING.load(Ordering::SeqCst) {
            eprintln!("\ninterrupted at the question: nothing was changed by it");
            std::process::exit(Exit::Interrupted as i32);
        }
        eprintln!("interrupted: stopping at the next safe point (press Ctrl-C again to stop at once)");
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("interrupted again: stopping now; what was created is tagged, run `sfuctl up` again or `sfuctl down`");
            std::process::exit(Exit::Interrupted as i32);
        }
    });
}

/// Runs `ask` (a blocking question on the terminal) so that Ctrl-C during it ends the run at once (exit 130), as
/// it would without [`listen`]: the question comes before the change it asks about.
pub fn asking<T>(ask: impl FnOnce() -> T) -> T {
    ASKING.store(true, Ordering::SeqCst);
    // A Ctrl-C that came just before the question would otherwise wait for its answer.
    if REQUESTED.load(Ordering::SeqCst) {
        eprintln!("\ninterrupted before the question: nothing was changed by it");
        std::process::exit(Exit::Interrupted as i32);
    }
    let answer = ask();
    ASKING.store(false, Ordering::SeqCst);
    answer
}

/// Whether Ctrl-C was pressed.
pub fn requested() -> bool {
    REQUESTED.load(Ordering::SeqCst)
}

/// A safe point: an [`Interrupted`] error (exit 130) naming `point` when Ctrl-C was pressed, else nothing.
pub fn check(point: &str) -> Result<()> {
    if requested() {
        return Err(UserError::interrupted(format!("interrupted by Ctrl-C: {point}")).caused_by(anyhow::Error::new(Interrupted(point.to_string()))).into());
    }
    Ok(())
}

/// Whether an error is (or was caused by) a stop at a safe point.
pub fn is_interrupted(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<Interrupted>())
}
