//! The cancellation flag of the request running on this thread, so that every loop that can
//! run long checks it without each layer passing a flag down: a prefill's chunks, a judge's
//! scoring chunks, a wait for a head's model to load.
//!
//! A request driver runs a search inside [`scope`] with the request's flag; code below asks
//! [`cancelled`] (or [`check`], which returns [`Error::Cancelled`]) between units of work.
//! Outside any scope nothing is ever cancelled. Scopes nest (the innermost flag counts) and
//! are restored on exit, also when the closure panics.
//!
//! Searches run one request per thread (a server worker, the CLI's own thread), which is
//! what makes a thread-scoped flag the request's flag.

use std::cell::Cell;
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, Result};

thread_local! {
    static CURRENT: Cell<*const AtomicBool> = const { Cell::new(ptr::null()) };
}

/// Restores the previous scope's flag when dropped.
struct Restore(*const AtomicBool);

impl Drop for Restore {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.0));
    }
}

/// Run `f` with `flag` as this thread's cancellation flag.
pub fn scope<R>(flag: &AtomicBool, f: impl FnOnce() -> R) -> R {
    let prev = CURRENT.with(|c| c.replace(flag as *const AtomicBool));
    let _restore = Restore(prev);
    f()
}

/// Whether the flag of the innermost [`scope`] on this thread is set.
pub fn cancelled() -> bool {
    CURRENT.with(|c| {
        let p = c.get();
        // SAFETY: a non-null pointer was set by `scope` from a reference that outlives the
        // closure it runs, and `Restore` resets it before `scope` returns or unwinds
        !p.is_null() && unsafe { (*p).load(Ordering::Relaxed) }
    })
}

/// `Err(Error::Cancelled)` once [`cancelled`].
pub fn check() -> Result<()> {
    if cancelled() {
        Err(Error::Cancelled)
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_nest_restore_and_survive_panics() {
        assert!(!cancelled(), "outside a scope nothing is cancelled");
        let outer = AtomicBool::new(true);
        let inner = AtomicBool::new(false);
        scope(&outer, || {
            assert!(cancelled());
            assert!(matches!(check(), Err(Error::Cancelled)));
            scope(&inner, || assert!(!cancelled(), "the innermost flag counts"));
            assert!(cancelled(), "the outer flag is back after the inner scope");
            let r = std::panic::catch_unwind(|| scope(&inner, || panic!("boom")));
            assert!(r.is_err());
            assert!(cancelled(), "a panic inside a scope restores the outer flag");
        });
        assert!(!cancelled());
        // another thread does not see this thread's flag
        scope(&outer, || std::thread::scope(|s| s.spawn(|| assert!(!cancelled())).join().unwrap()));
    }
}
