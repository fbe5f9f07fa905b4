//! [`Turns`]: a first-come, first-served lock. Concurrent searches (server requests, a reward
//! head's own forward pass) take turns at the model's forward pass in arrival order, so a
//! long search cannot starve a short one and the CPU kernels never run two passes at once.

use std::sync::{Condvar, Mutex, MutexGuard};

/// A FIFO ticket lock.
#[derive(Debug, Default)]
pub struct Turns {
    state: Mutex<Tickets>,
    ready: Condvar,
}

#[derive(Debug, Default)]
struct Tickets {
    next: u64,
    serving: u64,
}

/// Holds the turn until dropped.
#[must_use = "the turn ends when the guard is dropped"]
pub struct Turn<'a> {
    turns: &'a Turns,
}

impl Turns {
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, Tickets> {
        // a panic while holding the small state lock cannot leave it inconsistent
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wait for this caller's turn (callers are served in the order they arrived).
    pub fn take(&self) -> Turn<'_> {
        let mut s = self.state();
        let ticket = s.next;
        s.next += 1;
        while s.serving != ticket {
            s = self.ready.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        Turn { turns: self }
    }

    /// Callers waiting for a turn (the holder included).
    pub fn waiting(&self) -> u64 {
        let s = self.state();
        s.next - s.serving
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        let mut s = self.turns.state();
        s.serving += 1;
        drop(s);
        self.turns.ready.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn turns_are_served_in_arrival_order() {
        let turns = Arc::new(Turns::new());
        let order = Arc::new(Mutex::new(Vec::new()));
        let first = turns.take();
        let mut handles = Vec::new();
        for i in 0..4 {
            let (t, o) = (turns.clone(), order.clone());
            handles.push(std::thread::spawn(move || {
                let _turn = t.take();
                o.lock().unwrap().push(i);
            }));
            // wait until thread i holds its ticket before starting the next one
            while turns.waiting() < i as u64 + 2 {
                std::thread::yield_now();
            }
        }
        drop(first);
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
        assert_eq!(turns.waiting(), 0);
    }
}
