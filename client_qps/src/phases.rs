//! Named stretches of one run, marked from outside while it goes (`--phases-from-stdin`): each
//! line read starts a phase of that name, so a script that restarts servers during the run gets
//! QPS, latency and errors for each stretch of it, from the same connections and clients.

use std::io::BufRead;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

pub struct Phases {
    /// Each phase's name and when it was marked, in order.
    marks: Mutex<Vec<(String, Instant)>>,
    current: AtomicUsize,
}

/// One phase's place in the measured run.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Index of the phase, as `current` gave it.
    pub index: usize,
    pub name: String,
    pub wall: Duration,
}

impl Phases {
    /// A run whose first phase is `first`.
    pub fn new(first: &str) -> Arc<Phases> {
        Arc::new(Phases {
            marks: Mutex::new(vec![(first.to_string(), Instant::now())]),
            current: AtomicUsize::new(0),
        })
    }

    /// Ends the current phase and starts `name`.
    pub fn mark(&self, name: &str) {
        let mut marks = self.marks.lock();
        marks.push((name.to_string(), Instant::now()));
        self.current.store(marks.len() - 1, Ordering::SeqCst);
    }

    /// The phase a request that ends now belongs to.
    pub fn current(&self) -> usize {
        self.current.load(Ordering::SeqCst)
    }

    /// Marks a phase for each non-empty line of `input`, on a thread of its own, until it ends.
    pub fn follow(self: &Arc<Self>, input: impl BufRead + Send + 'static) {
        let phases = self.clone();
        std::thread::spawn(move || {
            for line in input.lines() {
                let Ok(line) = line else { break };
                let name = line.trim();
                if !name.is_empty() {
                    phases.mark(name);
                }
            }
        });
    }

    /// Each phase's share of the measured run from `started` to `ended`. Phases marked before
    /// the run began (during the warm-up) or after it ended have none and are left out.
    pub fn spans(&self, started: Instant, ended: Instant) -> Vec<Span> {
        let marks = self.marks.lock();
        let mut spans = Vec::with_capacity(marks.len());
        for (index, (name, at)) in marks.iter().enumerate() {
            let from = (*at).clamp(started, ended);
            let to = marks
                .get(index + 1)
                .map_or(ended, |next| next.1.clamp(started, ended));
            if to > from {
                spans.push(Span {
                    index,
                    name: name.clone(),
                    wall: to - from,
                });
            }
        }
        spans
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_start_phases_and_only_the_measured_run_counts() {
        let phases = Phases::new("start");
        assert_eq!(phases.current(), 0);
        phases.mark("during warm-up");
        let started = Instant::now();
        std::thread::sleep(Duration::from_millis(30));
        phases.follow(std::io::Cursor::new("restart r1\n\n  restart r2  \n"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while phases.current() < 3 {
            assert!(Instant::now() < deadline, "the lines were not read");
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(30));
        let ended = Instant::now();
        phases.mark("after the end");
        let spans = phases.spans(started, ended);
        let names: Vec<(usize, &str)> = spans.iter().map(|s| (s.index, s.name.as_str())).collect();
        // "restart r1" may have lasted no time at all, the next line following at once.
        assert!(
            names == [(1, "during warm-up"), (2, "restart r1"), (3, "restart r2")]
                || names == [(1, "during warm-up"), (3, "restart r2")],
            "{names:?}"
        );
        assert!(spans[0].wall >= Duration::from_millis(30));
        assert!(spans.last().unwrap().wall >= Duration::from_millis(30));
        let total: Duration = spans.iter().map(|s| s.wall).sum();
        assert_eq!(total, ended - started, "the spans tile the run");
    }
}
