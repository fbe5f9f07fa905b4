//! `deal`: DeAL lookahead search (Huang et al., "DeAL: Decoding-time Alignment for Large
//! Language Models", 2024), batched.
//!
//! Each step keeps b beams. Every live beam proposes its top-k next tokens (optionally cut by
//! top-p); all b·k candidates become rows of one batch (the cache rows are selected from
//! the beams: the prompt is a shared prefix, never copied) and are rolled out l greedy
//! tokens in lockstep, one forward pass per lookahead token for all rows together. Each
//! candidate is scored
//!
//! ```text
//! score = log P(prefix + candidate) + λ · h(prompt, prefix + candidate + lookahead)
//! ```
//!
//! and the top b survive; their lookaheads are cut back off the cache (no data moves) and the
//! logits after the candidate token, kept from the first pass, seed the next step. A
//! finished beam (EOS, stop string, `max_tokens`) stays a candidate with its score. The
//! answer is the beam with the best log P + λ·h(final text). With λ = 0 this is exactly beam
//! search on log-probability (the lookahead still runs, and must not change anything).
//!
//! Streaming: tokens every beam agrees on can no longer change and are committed at once.
//!
//! [`Commit::Lead`]: when the best candidate's score leads the runner-up's by at least
//! `margin`, the search commits to it: the candidate and its lookahead tokens that are
//! already in the cache (all but the last, which was never fed) become the single beam, and
//! the other beams are dropped. A step then commits up to l tokens for the same l passes.
//!
//! [`Commit::Pipeline`]: the same choices as the paper's rule with about one pass per
//! committed token ([`crate::pipeline`]).
//!
//! On a backend whose steps are round trips (a remote server), the candidates' lookaheads
//! are one call per step ([`crate::batch::Batch::rollout`]): the server's prefix cache shares
//! the prompt, and its greedy continuation is the lookahead.

use deal_heads::reward::WeightedReward;

use crate::batch::{common_prefix, Trace};
use crate::config::{Commit, SearchConfig};
use crate::controller::{Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::{best, candidates, order_desc};

/// See the module documentation.
pub struct Deal;

impl Build for Deal {
    const NAME: &'static str = "deal";
    const DESCRIPTION: &'static str = "DeAL lookahead search: b beams x top-k candidates, l-token greedy lookahead, log P + λ·h";
    const NEEDS_REWARD: bool = true;
    const PARAMS: &'static [&'static str] = &["k", "beams", "lookahead", "lambda", "commit", "top_p"];

    fn rows(cfg: &SearchConfig) -> (usize, &'static str) {
        match cfg.commit {
            // an automatic budget grows with k (and b, l): name the field the user sets
            Commit::Pipeline { rows } => (crate::pipeline::budget(rows, cfg), if rows.is_some() { "commit.rows" } else { "k" }),
            _ => (cfg.k * cfg.beams, "k"),
        }
    }

    fn search(cfg: &SearchConfig, s: &mut Session<'_>) -> Result<Final> {
        let reward = s.require_reward(Self::NAME)?;
        let hidden = reward.needs_hidden();
        let (lead, min_prob) = match cfg.commit {
            Commit::Lead { margin, min_prob } => (Some(margin), min_prob),
            Commit::Pipeline { rows } if s.batch.cheap_steps() && !hidden && cfg.lookahead > 0 => {
                return crate::pipeline::search(cfg, rows, s, reward);
            }
            // the same choices, step by step
            Commit::Token | Commit::Pipeline { .. } => (None, 0.0),
        };
        while !s.batch.all_done() {
            // 1. expand every live beam into its top-k candidates (finished beams carry over)
            let mut parents = Vec::new();
            let mut proposals = Vec::new();
            for (i, row) in s.batch.rows.iter().enumerate() {
                if row.is_done() {
                    parents.push(i);
                    proposals.push(None);
                    continue;
                }
                for (t, lp) in candidates(row.next_dist()?, cfg.k, cfg.top_p) {
                    parents.push(i);
                    proposals.push(Some((t, lp)));
                }
            }
            s.batch.select(&parents)?;
            let n = parents.len();
            for (r, p) in proposals.iter().enumerate() {
                if let Some((t, lp)) = *p {
                    s.batch.rows[r].logprob += lp;
                    s.batch.push(r, t)?;
                }
            }
            // 2. feed the candidates, then roll every live one out l greedy tokens in lockstep
            let mut cands: Vec<Trace> = s.batch.rollout(cfg.lookahead, lead.is_some(), hidden)?;
            // 3. score: log P(prefix + candidate) + λ·h(lookahead text)
            let all: Vec<usize> = (0..n).collect();
            let values = if cfg.lambda == 0.0 { vec![0.0; n] } else { s.values(reward, &all)? };
            let scores: Vec<f64> = (0..n).map(|r| s.batch.rows[r].logprob + cfg.lambda * values[r]).collect();
            let order = order_desc(&scores);
            // 4a. a clear winner: accept its lookahead
            if let Some(margin) = lead {
                let w = order[0];
                if n > 1 && cands[w].finish.is_none() && scores[w] - scores[order[1]] >= margin {
                    Self::accept_lookahead(s, w, &cands[w], min_prob)?;
                    s.commit(0)?;
                    continue;
                }
            }
            // 4b. keep the top b, undo their lookaheads
            for (r, cand) in cands.iter().enumerate() {
                s.batch.truncate(r, cand.base)?;
            }
            let keep: Vec<usize> = order.into_iter().take(cfg.beams).collect();
            s.batch.select(&keep)?;
            for (i, &r) in keep.iter().enumerate() {
                let row = &mut s.batch.rows[i];
                row.finish = cands[r].finish;
                if row.dist.is_none() {
                    row.dist = cands[r].first.take();
                }
            }
            let agreed = common_prefix(&s.batch.rows);
            s.commit_prefix(0, agreed)?;
        }
        Self::best_beam(cfg, s, reward)
    }
}

impl Deal {
    /// The answer among the finished beams (every row of the batch): the best log P + λ·h of
    /// its final text.
    pub(crate) fn best_beam(cfg: &SearchConfig, s: &mut Session<'_>, reward: &WeightedReward) -> Result<Final> {
        let all: Vec<usize> = (0..s.batch.len()).collect();
        let values = if cfg.lambda == 0.0 { vec![0.0; all.len()] } else { s.values(reward, &all)? };
        let scores: Vec<f64> = all.iter().map(|&r| s.batch.rows[r].logprob + cfg.lambda * values[r]).collect();
        Ok(Final { row: best(&scores).unwrap_or(0) })
    }

    /// Make candidate row `w` the only beam, keeping its lookahead tokens that are in the
    /// cache (the last one, never fed, is dropped unless the row ended there), or, with
    /// `min_prob` > 0, only the leading ones chosen with at least that probability.
    fn accept_lookahead(s: &mut Session<'_>, w: usize, cand: &Trace, min_prob: f64) -> Result<()> {
        s.batch.select(&[w])?;
        let row = &s.batch.rows[0];
        let (len, fed, finish) = (row.tokens.len(), row.fed(), row.finish);
        let confident = if min_prob > 0.0 {
            let floor = min_prob.ln();
            cand.logprobs.iter().take_while(|&&lp| lp >= floor).count()
        } else {
            usize::MAX
        };
        let keep = if confident < len - cand.base { cand.base + confident } else if fed < len { fed } else { len };
        if keep < len {
            s.batch.truncate(0, keep)?;
        }
        let kept = s.batch.rows[0].tokens.len() - cand.base;
        let row = &mut s.batch.rows[0];
        row.logprob += cand.logprobs.iter().take(kept).sum::<f64>();
        if keep == len {
            row.finish = finish;
        }
        if row.dist.is_none() {
            // the distribution the next token would be chosen from: after the candidate, or
            // after the last kept lookahead token
            row.dist = cand.dists.get(kept).cloned().flatten();
        }
        Ok(())
    }
}
