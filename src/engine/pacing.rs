//! Create pacing: at most `max` creates in any `per_seconds` window (Linode: 10 per 30 s), kept by the engine
//! so a large `count` waits its turn instead of failing on the provider's limit.

use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::provider::catalog::Pacing;

/// One admitted create, to be reported [`Gate::finished`] once its answer came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slot(u64);

/// A sliding-window gate shared by concurrent create tasks.
///
/// A create counts in the window from the moment it is admitted, and once its answer came, from that moment
/// instead: the provider counts a create when it receives it, somewhere between the two, so a window measured
/// from the answer never starts before the provider's does. (Measured from the admission only, the 11th create
/// of a 10-per-30-s window could reach the provider a few milliseconds before the 1st one's 30 s are over.)
#[derive(Debug)]
pub struct Gate {
    pacing: Option<Pacing>,
    slots: Mutex<(u64, Vec<(u64, Instant)>)>,
}

impl Gate {
    /// A gate for the provider's pacing; `None` lets everything through at once.
    pub fn new(pacing: Option<Pacing>) -> Self {
        Self { pacing, slots: Mutex::new((0, Vec::new())) }
    }

    /// Waits until one more create fits in the window, and counts it.
    pub async fn admit(&self) -> Slot {
        let Some(p) = self.pacing.filter(|p| p.max > 0) else { return Slot(0) };
        let window = Duration::from_secs(p.per_seconds);
        loop {
            let mut guard = self.slots.lock().await;
            let (next, slots) = &mut *guard;
            let now = Instant::now();
            slots.retain(|(_, t)| now.duration_since(*t) < window);
            if (slots.len() as u32) < p.max {
                *next += 1;
                slots.push((*next, now));
                return Slot(*next);
            }
            let free_at = slots.iter().map(|(_, t)| *t).min().expect("a full window has a first start") + window;
            drop(guard);
            tokio::time::sleep_until(free_at).await;
        }
    }

    /// The create of `slot` was answered: it counts from now.
    pub async fn finished(&self, slot: Slot) {
        let mut guard = self.slots.lock().await;
        if let Some(entry) = guard.1.iter_mut().find(|(id, _)| *id == slot.0) {
            entry.1 = Instant::now();
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
    async fn a_window_counts_from_the_answer() {
        let gate = Gate::new(Some(Pacing { max: 1, per_seconds: 30 }));
        let started = Instant::now();
        let slot = gate.admit().await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        gate.finished(slot).await;
        gate.admit().await;
        assert!(started.elapsed() >= Duration::from_secs(32), "{:?}", started.elapsed());
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
