//! Waiting for something to become true, with a timeout, growing intervals and progress on stderr.
//!
//! Every wait in sfuctl goes through [`until`]: no loop without a timeout (docker-machine's wart), and the
//! user always sees what is being waited for.

use std::future::Future;
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::error::UserError;

/// The outcome of one check.
pub enum Check<T> {
    /// Done, with the value waited for.
    Done(T),
    /// Not yet, with what was seen (shown on timeout and in the progress line).
    NotYet(String),
}

/// Calls `check` until it is done or `timeout` passes. Intervals start at `interval` and grow by half each time
/// up to four times `interval`. An error from `check` ends the wait at once.
pub async fn until<T, F, Fut>(what: &str, timeout: Duration, interval: Duration, mut check: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Check<T>>>,
{
    let started = Instant::now();
    // Without a terminal (CI, pipes) the spinner is hidden: say once what is being waited for, and how it ended.
    let plain = !std::io::IsTerminal::is_terminal(&std::io::stderr());
    let mut announced = false;
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    bar.set_message(format!("waiting for {what}"));
    let mut pause = interval;
    loop {
        // Every round is a safe point for Ctrl-C.
        if let Err(e) = crate::interrupt::check(&format!("while waiting for {what}")) {
            bar.finish_and_clear();
            return Err(e);
        }
        match check().await? {
            Check::Done(value) => {
                bar.finish_and_clear();
                if announced {
                    eprintln!("done waiting for {what} after {:.1}s", started.elapsed().as_secs_f64());
                }
                return Ok(value);
            }
            Check::NotYet(seen) => {
                let elapsed = started.elapsed();
                if elapsed >= timeout {
                    bar.finish_and_clear();
                    return Err(UserError::failed(format!("timed out after {}s waiting for {what}", timeout.as_secs()))
                        .caused_by(anyhow::anyhow!("last seen: {seen}"))
                        .into());
                }
                if plain && !announced {
                    eprintln!("waiting for {what} (up to {}s): {seen}", timeout.as_secs());
                    announced = true;
                }
                bar.set_message(format!("waiting for {what} ({}s): {seen}", elapsed.as_secs()));
                bar.tick();
                tokio::time::sleep(pause.min(timeout - elapsed)).await;
                pause = (pause * 3 / 2).min(interval * 4);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn returns_the_value_once_done() {
        let mut n = 0;
        let v = until("three tries", Duration::from_secs(5), Duration::from_millis(1), || {
            n += 1;
            let done = n >= 3;
            async move { Ok(if done { Check::Done(n) } else { Check::NotYet(format!("try {n}")) }) }
        })
        .await
        .unwrap();
        assert_eq!(v, 3);
    }

    #[tokio::test]
    async fn times_out_with_what_it_saw() {
        let started = Instant::now();
        let err = until("never", Duration::from_millis(200), Duration::from_millis(20), || async {
            Ok(Check::<()>::NotYet("still no".into()))
        })
        .await
        .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(2));
        let text = crate::error::render(&err);
        assert!(text.contains("timed out after 0s waiting for never") && text.contains("last seen: still no"), "{text}");
    }
}
