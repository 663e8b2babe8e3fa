//! A probed port range at a glance: which sub-ranges answered, which were silent, which the server itself holds.
//! The audit's text shows it as one line (`40000-40999 [#########.....] 50% silent: 40500-40999`); its JSON keeps
//! the numbers.

use serde::Serialize;

/// How wide the bar is, in characters.
pub const BAR_WIDTH: usize = 40;

/// What probing one range found, as sub-ranges.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RangeMap {
    /// The range's first port.
    pub start: u16,
    /// The range's last port.
    pub end: u16,
    /// How many ports were probed.
    pub probed: usize,
    /// How many of them answered.
    pub answered: usize,
    /// Probed ports that stayed silent, as `[first, last]` sub-ranges.
    pub silent: Vec<[u16; 2]>,
    /// Ports not probed because a socket on the host (the server's own) holds them, as `[first, last]`.
    pub held: Vec<[u16; 2]>,
    /// The probed ports, as runs (for the bar: a sample leaves cells unprobed).
    #[serde(skip)]
    probed_spans: Vec<[u16; 2]>,
}

/// What one cell of the bar (or one port) shows, strongest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Mark {
    Unprobed,
    Answered,
    Held,
    Silent,
}

impl RangeMap {
    /// The map of `start..=end`, from the probed ports, those that answered and those held by the host (all
    /// sorted or not: order does not matter).
    pub fn new(start: u16, end: u16, probed: &[u16], answered: &[u16], held: &[u16]) -> Self {
        let answered_set: std::collections::BTreeSet<u16> = answered.iter().copied().collect();
        let mut silent: Vec<u16> = probed.iter().copied().filter(|p| !answered_set.contains(p)).collect();
        silent.sort_unstable();
        let mut held = held.to_vec();
        held.sort_unstable();
        let mut probed_sorted = probed.to_vec();
        probed_sorted.sort_unstable();
        Self {
            start,
            end,
            probed: probed.len(),
            answered: probed.iter().filter(|p| answered_set.contains(p)).count(),
            silent: spans(&silent),
            held: spans(&held),
            probed_spans: spans(&probed_sorted),
        }
    }

    /// How many ports the range has.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        usize::from(self.end - self.start) + 1
    }

    /// The share of probed ports that stayed silent, in whole percent (rounded up, so one silent port never
    /// shows as 0%).
    pub fn silent_percent(&self) -> usize {
        let silent = self.probed - self.answered;
        if self.probed == 0 { 0 } else { (silent * 100).div_ceil(self.probed) }
    }

    fn mark(&self, port: u16) -> Mark {
        let within = |spans: &[[u16; 2]]| spans.iter().any(|[a, b]| (*a..=*b).contains(&port));
        if within(&self.silent) {
            Mark::Silent
        } else if within(&self.held) {
            Mark::Held
        } else if within(&self.probed_spans) {
            Mark::Answered
        } else {
            Mark::Unprobed
        }
    }

    /// The bar: one character per cell of the range (per port when the range is shorter than the bar): `#`
    /// answered, `.` silent, `o` held by the host, a space not probed (a sample). A cell with any silent port
    /// shows `.`, so a drop is never hidden by the scale.
    pub fn bar(&self) -> String {
        let len = self.len();
        let cells = len.min(BAR_WIDTH);
        (0..cells)
            .map(|c| {
                let first = self.start as usize + c * len / cells;
                let last = self.start as usize + (c + 1) * len / cells - 1;
                match (first..=last).map(|p| self.mark(p as u16)).max().unwrap_or(Mark::Unprobed) {
                    Mark::Silent => '.',
                    Mark::Held => 'o',
                    Mark::Answered => '#',
                    Mark::Unprobed => ' ',
                }
            })
            .collect()
    }

    /// How many ports the host itself holds.
    pub fn held_count(&self) -> usize {
        self.held.iter().map(|[a, b]| usize::from(b - a) + 1).sum()
    }

    /// The one-line map: `40000-40999 [####....] 50% silent: 40500-40999; held by the server: 40010`.
    pub fn line(&self) -> String {
        let range = if self.start == self.end { self.start.to_string() } else { format!("{}-{}", self.start, self.end) };
        let mut out = format!("{range} [{}] {}% silent", self.bar(), self.silent_percent());
        if !self.silent.is_empty() {
            out.push_str(&format!(": {}", show(&self.silent)));
        }
        if !self.held.is_empty() {
            out.push_str(&format!("; held by the server: {}", show(&self.held)));
        }
        out
    }
}

/// Sorted ports as `[first, last]` runs.
fn spans(ports: &[u16]) -> Vec<[u16; 2]> {
    let mut out: Vec<[u16; 2]> = Vec::new();
    for &p in ports {
        match out.last_mut() {
            Some([_, end]) if u32::from(*end) + 1 == u32::from(p) => *end = p,
            Some([_, end]) if *end == p => {}
            _ => out.push([p, p]),
        }
    }
    out
}

/// Runs as `40500-40620, 40900`, at most eight of them (then `…and N more`).
fn show(spans: &[[u16; 2]]) -> String {
    let mut parts: Vec<String> = spans.iter().take(8).map(|[a, b]| if a == b { a.to_string() } else { format!("{a}-{b}") }).collect();
    if spans.len() > 8 {
        parts.push(format!("…and {} more", spans.len() - 8));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(a: u16, b: u16) -> Vec<u16> {
        (a..=b).collect()
    }

    #[test]
    fn a_whole_range_that_answered_is_all_hashes() {
        let m = RangeMap::new(40000, 40999, &all(40000, 40999), &all(40000, 40999), &[]);
        assert_eq!(m.line(), format!("40000-40999 [{}] 0% silent", "#".repeat(40)));
        assert_eq!((m.probed, m.answered, m.silent.len()), (1000, 1000, 0));
    }

    #[test]
    fn a_dropped_part_is_marked_where_it_is() {
        let answered: Vec<u16> = all(40000, 40999).into_iter().filter(|p| !(40500..=40620).contains(p)).collect();
        let m = RangeMap::new(40000, 40999, &all(40000, 40999), &answered, &[]);
        assert_eq!(m.line(), format!("40000-40999 [{}{}{}] 13% silent: 40500-40620", "#".repeat(20), ".".repeat(5), "#".repeat(15)));
        assert_eq!(m.silent, vec![[40500, 40620]]);
    }

    #[test]
    fn one_silent_port_shows_in_its_cell_and_as_at_least_one_percent() {
        let answered: Vec<u16> = all(40000, 40999).into_iter().filter(|p| *p != 40999).collect();
        let m = RangeMap::new(40000, 40999, &all(40000, 40999), &answered, &[]);
        assert!(m.bar().ends_with("#."), "{}", m.bar());
        assert_eq!(m.silent_percent(), 1);
    }

    #[test]
    fn short_ranges_get_one_character_per_port_and_held_ports_show() {
        let m = RangeMap::new(44444, 44444, &[], &[], &[44444]);
        assert_eq!(m.line(), "44444 [o] 0% silent; held by the server: 44444");
        let m = RangeMap::new(50000, 50004, &[50000, 50001, 50003, 50004], &[50000, 50001, 50004], &[50002]);
        assert_eq!(m.line(), "50000-50004 [##o.#] 25% silent: 50003; held by the server: 50002");
    }

    #[test]
    fn every_silent_run_is_listed_up_to_eight() {
        let probed = all(1000, 1099);
        let answered: Vec<u16> = probed.iter().copied().filter(|p| p % 10 != 0).collect();
        let m = RangeMap::new(1000, 1099, &probed, &answered, &[]);
        assert!(m.line().ends_with(": 1000, 1010, 1020, 1030, 1040, 1050, 1060, 1070, …and 2 more"), "{}", m.line());
    }
}
