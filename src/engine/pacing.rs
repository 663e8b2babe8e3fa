//! Create pacing: at most `max` creates in any `per_seconds` window (Linode: 10 per 30 s), kept by the engine
//! so a large `count` waits its turn instead of failing on the provider's limit.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::provider::catalog::Pacing;

/// A sliding-window gate shared by concurrent create tasks.
#[derive(Debug)]
pub struct Gate {
    pacing: Option<Pacing>,
    starts: Mutex<VecDeque<Instant>>,
}

impl Gate {
    /// A gate for the provider's pacing; `None` lets everything through at once.
    pub fn new(pacing: Option<Pacing>) -> Self {
        Self { pacing, starts: Mutex::new(VecDeque::new()) }
    }

    /// Waits until one more create fits in the window, and counts it.
    pub async fn admit(&self) {
        let Some(p) = self.pacing.filter(|p| p.max > 0) else { return };
        let window = Duration::from_secs(p.per_seconds);
        loop {
            let mut starts = self.starts.lock().await;
            let now = Instant::now();
            while starts.front().is_some_and(|t| now.duration_since(*t) >= window) {
                starts.pop_front();
            }
            if (starts.len() as u32) < p.max {
                starts.push_back(now);
                return;
            }
            let free_at = *starts.front().expect("a full window has a first start") + window;
            drop(starts);
            tokio::time::sleep_until(free_at).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn twelve_creates_at_ten_per_thirty_seconds_take_one_window() {
        let gate = std::sync::Arc::new(Gate::new(Some(Pacing { max: 10, per_seconds: 30 })));
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..12 {
            let gate = std::sync::Arc::clone(&gate);
            tasks.spawn(async move {
                gate.admit().await;
                Instant::now()
            });
        }
        let mut times: Vec<Duration> = Vec::new();
        while let Some(t) = tasks.join_next().await {
            times.push(t.unwrap().duration_since(started));
        }
        times.sort();
        assert!(times[..10].iter().all(|t| *t < Duration::from_secs(1)), "{times:?}");
        assert!(times[10..].iter().all(|t| *t >= Duration::from_secs(30) && *t < Duration::from_secs(31)), "{times:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_pacing_admits_everything_at_once() {
        let gate = Gate::new(None);
        let started = Instant::now();
        for _ in 0..100 {
            gate.admit().await;
        }
        assert!(started.elapsed() < Duration::from_millis(1));
    }
}
