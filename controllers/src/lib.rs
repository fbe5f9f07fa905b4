#![warn(missing_docs)]
//! # deal-controllers
//!
//! Decoding-time search over any [`deal_backend::Backend`] (the local engine, a remote
//! OpenAI-compatible server), steered by a per-request [`WeightedReward`]
//! (`deal_heads::reward`). Every controller batches all its rows through one pass per step
//! (on the local engine: one forward pass over a forked KV cache).
//!
//! - [`greedy`], [`sample`]: baselines through the same path;
//! - [`deal`]: DeAL lookahead search (Huang et al. 2024): b beams × top-k candidates, each
//!   rolled out l greedy tokens in lockstep, ranked by log P + λ·h; [`pipeline`] runs the
//!   same choices with the next steps' lookaheads speculated in the same passes;
//! - [`args`]: ARGS (Khanov et al. 2024): logit + w·h over the top-k next tokens;
//! - [`blockwise`]: controlled decoding, blockwise best-of-K (Mudgal et al. 2024);
//! - [`best_of_n`]: N samples, the best final text by h;
//! - [`early_prune`]: speculative rejection (Sun et al. 2024): N samples pruned by partial h.
//!
//! Shared parts: [`SearchConfig`] (typed, validated), [`logits::LogitsProcessor`] (penalties
//! and logit bias, applied before any controller reads a distribution), [`grammar`]
//! (structured outputs: llguidance token masks on every row), [`controller::run`] (prefill, stream,
//! cancel, breakdown, stats), [`batch::Batch`] (rows + backend state + stop/EOS + text),
//! [`Registry`] (name → controller, passed in by the program). Adding a built-in controller is
//! one file plus one line below; a program adds its own with [`Registry::register`].
//!
//! [`WeightedReward`]: deal_heads::reward::WeightedReward

pub mod batch;
pub mod config;
pub mod controller;
pub mod error;
pub mod grammar;
pub mod logits;
pub mod pipeline;
pub mod registry;
pub mod stats;
pub mod stream;
mod util;

pub use config::{Commit, SearchConfig};
pub use controller::{run, Controller, Outcome, Request};
pub use registry::Registry;
pub use error::{ControlError, Result};
pub use stats::SearchStats;
pub use stream::Piece;

/// The built-in controllers: `module => Type`, one line each; the module is its file.
macro_rules! controllers {
    ($($module:ident => $ty:ident),* $(,)?) => {
        $(pub mod $module;)*
        fn builtin_kinds() -> Vec<registry::Kind> {
            vec![$(registry::Kind::of::<$module::$ty>()),*]
        }
    };
}

controllers! {
    greedy => Greedy,
    sample => Sample,
    deal => Deal,
    args => Args,
    blockwise => Blockwise,
    best_of_n => BestOfN,
    early_prune => EarlyPrune,
}
