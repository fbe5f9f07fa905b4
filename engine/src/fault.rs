//! Test-only fault injection (cargo feature `fault-injection`, never in a release build's
//! default features): [`arm`] a token id, and every forward pass whose input holds it panics,
//! as a bug inside a pass would. The server's fault tests use it to prove that a fault stays
//! with the request that hit it, even when that request shared a merged pass with others.

use std::sync::atomic::{AtomicU32, Ordering};

static ARMED: AtomicU32 = AtomicU32::new(u32::MAX);

/// Make every pass that feeds `token` panic.
pub fn arm(token: u32) {
    ARMED.store(token, Ordering::SeqCst);
}

/// Stop injecting.
pub fn disarm() {
    ARMED.store(u32::MAX, Ordering::SeqCst);
}

/// Panic if the armed token is among `tokens` (called at the start of a pass).
pub(crate) fn check<'a>(mut tokens: impl Iterator<Item = &'a [Vec<u32>]>) {
    let armed = ARMED.load(Ordering::SeqCst);
    if armed != u32::MAX && tokens.any(|rows| rows.iter().flatten().any(|&t| t == armed)) {
        panic!("injected fault: token {armed} in a forward pass");
    }
}
