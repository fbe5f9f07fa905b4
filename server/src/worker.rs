//! The engine worker: validated jobs arrive over a bounded crossbeam queue (full → the
//! handler answers 429) and are run by a few worker threads. Each thread runs one search at
//! a time; concurrent searches take turns at the model's forward pass in arrival order
//! (the engine's scheduler), so a short request is not stuck behind a long one. Each job is
//! run by the one request driver ([`deal_driver::Driver::run`]). Results go
//! back to the async handler as [`Event`]s; a handler that goes away (client disconnected)
//! sets the job's cancel flag and the search stops before its next forward pass.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use deal_driver::Driver;
use tokio::sync::mpsc::UnboundedSender;

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::request::GenerationRequest;

/// One request's work.
pub struct Job {
    /// The validated request.
    pub request: GenerationRequest,
    /// Set when the client goes away; the search stops within one forward pass.
    pub cancel: Arc<AtomicBool>,
    /// Where the worker sends the job's [`Event`]s.
    pub events: UnboundedSender<Event>,
    /// When the job was queued (for the queue-wait histogram).
    pub enqueued: Instant,
}

/// What the worker reports back, in order: the driver's events (text pieces of each choice
/// as they are committed, then one `Done` per choice), or one error that ends the job.
pub type Event = Result<deal_driver::Event, ApiError>;

/// Handle to the worker threads.
#[derive(Clone)]
pub struct Worker {
    tx: Sender<Job>,
    capacity: usize,
    active: Arc<AtomicUsize>,
}

impl Worker {
    /// Start `threads` worker threads over a queue of `capacity` jobs.
    pub fn spawn(driver: Driver, metrics: Arc<Metrics>, threads: usize, capacity: usize) -> Self {
        let (tx, rx) = crossbeam_channel::bounded::<Job>(capacity);
        let active = Arc::new(AtomicUsize::new(0));
        for i in 0..threads.max(1) {
            let (rx, driver, metrics, active) = (rx.clone(), driver.clone(), metrics.clone(), active.clone());
            std::thread::Builder::new()
                .name(format!("deal-worker-{i}"))
                .spawn(move || work(rx, &driver, &metrics, &active))
                .expect("spawning a worker thread");
        }
        Self { tx, capacity, active }
    }

    /// Queue a job, or answer 429 when the queue is full.
    pub fn submit(&self, job: Job) -> Result<(), ApiError> {
        match self.tx.try_send(job) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(ApiError::queue_full(self.capacity)),
            Err(TrySendError::Disconnected(_)) => Err(ApiError::unavailable("the engine worker has stopped")),
        }
    }

    /// Whether the queue is full (a new job would get 429).
    pub fn is_full(&self) -> bool {
        self.tx.len() >= self.capacity
    }

    /// Jobs waiting in the queue.
    pub fn queued(&self) -> usize {
        self.tx.len()
    }

    /// Searches running now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }
}

fn work(rx: Receiver<Job>, driver: &Driver, metrics: &Metrics, active: &AtomicUsize) {
    while let Ok(job) = rx.recv() {
        if job.cancel.load(Ordering::Relaxed) {
            metrics.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        metrics.queue_wait.observe(job.enqueued.elapsed().as_secs_f64());
        active.fetch_add(1, Ordering::Relaxed);
        // a panic inside a search (a bug) must not take the worker thread down with it
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(&job, driver, metrics)));
        active.fetch_sub(1, Ordering::Relaxed);
        let failure = match result {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(ApiError::internal("the search failed unexpectedly (a bug); the server is still running")),
        };
        if let Some(e) = failure {
            let _ = job.events.send(Err(e));
        }
    }
}

fn run(job: &Job, driver: &Driver, metrics: &Metrics) -> Result<(), ApiError> {
    let (events, cancel) = (&job.events, &job.cancel);
    let mut on_event = |ev: deal_driver::Event| {
        if let deal_driver::Event::Done { outcome, .. } = &ev {
            metrics.record_search(&outcome.stats);
        }
        events.send(Ok(ev)).is_ok()
    };
    let outcomes = driver.run(&job.request.job, Some(cancel), &mut on_event)?;
    if cancel.load(Ordering::Relaxed) {
        if let Some(o) = outcomes.last() {
            metrics.record_search(&o.stats);
        }
        metrics.cancelled.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}
