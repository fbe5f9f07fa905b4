//! [`SearchStats`]: what a search cost.

use serde::Serialize;

/// Counters of one search.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SearchStats {
    /// Prompt tokens prefilled (once, whatever the number of rows).
    pub prompt_tokens: usize,
    /// Decode forward passes (each runs every row of the batch at once).
    pub forward_passes: usize,
    /// Σ over passes of the rows that brought tokens.
    pub rows_evaluated: usize,
    /// Tokens produced in any row (candidates, lookaheads, discarded samples included).
    pub tokens_generated: usize,
    /// Tokens in the returned response.
    pub tokens_committed: usize,
    /// Candidates scored by the reward.
    pub candidates_scored: usize,
    /// Wall time of the whole search (prefill included), seconds.
    pub wall_secs: f64,
    /// Wall time of the prefill, seconds.
    pub prefill_secs: f64,
}

impl SearchStats {
    /// Decode wall time per committed token (prefill excluded).
    pub fn secs_per_token(&self) -> f64 {
        (self.wall_secs - self.prefill_secs) / self.tokens_committed.max(1) as f64
    }
}
