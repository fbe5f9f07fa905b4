//! [`Scheduler`]: concurrent forward calls on one model merged into shared passes. It sits
//! above the model ([`Model::forward_many`] is a pass; the scheduler decides who shares it).
//!
//! Each search (a server request, a reward head's own scoring pass) runs on its own thread
//! and calls [`crate::Engine::forward`] on its own cache. Calls that arrive while a pass is running
//! queue up; when the pass ends, one of the waiting threads becomes the leader and runs
//! every queued call as **one** batch ([`Model::forward_many`]; it first waits up to 2 ms for
//! the callers of the previous pass, which are reading their logits, so that steps do not
//! split into convoys): the weight matrices are read once for the rows of every search, which on a memory-bound CPU makes several
//! concurrent searches cost little more than one. Calls are served in arrival order (a pass
//! takes everything that queued before it), so no search starves; a lone caller runs at once.
//! A pass that panics (a bug) is undone and its calls rerun one by one, so only the call
//! that causes the fault fails.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::model::{ForwardJob, ForwardOutput, LogitsFor, Model};
use crate::kv_cache::KvCache;
use crate::{Error, Result};

/// A queued call: pointers to the caller's cache and tokens. The caller blocks in
/// [`Scheduler::run`] until its result is posted, so both outlive every use by the leader, and
/// each cache belongs to exactly one caller (it came from a `&mut`).
struct Slot {
    id: u64,
    cache: *mut KvCache,
    tokens: *const [Vec<u32>],
    want: LogitsFor,
    rows: usize,
}

// SAFETY: see `Slot`: the pointees are only touched by the leader while their owner waits.
unsafe impl Send for Slot {}

#[derive(Default)]
struct State {
    queue: Vec<Slot>,
    results: HashMap<u64, Result<ForwardOutput>>,
    running: bool,
    next_id: u64,
    passes: u64,
    jobs: u64,
    /// Calls in the previous pass: the callers likely to come back for their next step.
    last_batch: usize,
    /// Rows in the previous pass.
    last_rows: usize,
}

/// From this many rows a pass is compute-bound on CPU: merging more saves little, so a leader
/// does not wait for more callers.
const GATHER_ROWS: usize = 8;

/// How long a leader waits for the callers of the previous pass to come back (they are
/// reading their logits between steps) before it runs with fewer.
const GATHER: Duration = Duration::from_millis(2);

/// Merges concurrent forward calls on one model; see the module documentation.
#[derive(Default)]
pub struct Scheduler {
    state: Mutex<State>,
    finished: Condvar,
}

/// Counters of a [`Scheduler`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchedulerStats {
    /// Passes run.
    pub passes: u64,
    /// Calls served; `jobs / passes` is the mean number of searches sharing a pass.
    pub jobs: u64,
}

impl Scheduler {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Run one call, merged with whatever else is queued.
    pub fn run(&self, model: &Model, cache: &mut KvCache, tokens: &[Vec<u32>], want: LogitsFor) -> Result<ForwardOutput> {
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        st.queue.push(Slot { id, cache: cache as *mut KvCache, tokens: tokens as *const [Vec<u32>], want, rows: tokens.len() });
        // a leader gathering callers is waiting for this one
        self.finished.notify_all();
        loop {
            if let Some(r) = st.results.remove(&id) {
                return r;
            }
            if st.running {
                st = self.finished.wait(st).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            // lead: wait briefly for the previous pass's callers, then run everything queued
            // as one batch
            st.running = true;
            let deadline = Instant::now() + GATHER;
            while st.queue.len() < st.last_batch && st.last_rows < GATHER_ROWS {
                let now = Instant::now();
                if now >= deadline {
                    break;
                }
                st = self.finished.wait_timeout(st, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
            }
            let batch = std::mem::take(&mut st.queue);
            st.last_batch = batch.len();
            st.last_rows = batch.iter().map(|s| s.rows).sum();
            drop(st);
            // SAFETY (here and below): see `Slot`; only this leader touches the caches now
            let before: Vec<Vec<usize>> = batch.iter().map(|s| unsafe { (*s.cache).row_lens() }).collect();
            let outs = catch_unwind(AssertUnwindSafe(|| {
                // SAFETY: every slot's owner is blocked in this function until its result is
                // posted below; the caches are distinct (each came from a `&mut`).
                let mut jobs: Vec<ForwardJob<'_>> = batch
                    .iter()
                    .map(|s| unsafe { ForwardJob { cache: &mut *s.cache, tokens: &*s.tokens, want: s.want } })
                    .collect();
                model.forward_many(&mut jobs)
            }));
            // a panicked pass (a bug) fails only the call that causes it: undo every cache's
            // reservations and rerun each call alone
            let results: Vec<Result<ForwardOutput>> = match outs {
                Ok(results) => results,
                Err(_) => batch
                    .iter()
                    .zip(&before)
                    .map(|(s, lens)| {
                        let solo = catch_unwind(AssertUnwindSafe(|| {
                            let cache = unsafe { &mut *s.cache };
                            cache.restore_lens(lens);
                            let mut job = [ForwardJob { cache, tokens: unsafe { &*s.tokens }, want: s.want }];
                            model.forward_many(&mut job).pop()
                        }));
                        match solo {
                            Ok(Some(r)) => r,
                            _ => {
                                unsafe { (*s.cache).restore_lens(lens) };
                                Err(Error::Internal("the forward pass panicked (a bug)".into()))
                            }
                        }
                    })
                    .collect(),
            };
            st = self.lock();
            st.passes += 1;
            st.jobs += batch.len() as u64;
            for (slot, r) in batch.iter().zip(results) {
                st.results.insert(slot.id, r);
            }
            st.running = false;
            self.finished.notify_all();
        }
    }

    /// Passes run and calls served so far.
    pub fn stats(&self) -> SchedulerStats {
        let st = self.lock();
        SchedulerStats { passes: st.passes, jobs: st.jobs }
    }
}
