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

use deal_runtime::model::LogitsFor;
use deal_runtime::sampling::argmax;

use crate::batch::{common_prefix, Finish, Logits};
use crate::config::{Commit, SearchConfig};
use crate::controller::{Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::{best, candidates, order_desc, token_logprob};

/// See the module documentation.
pub struct Deal;

impl Build for Deal {
    const NAME: &'static str = "deal";
    const DESCRIPTION: &'static str = "DeAL lookahead search: b beams x top-k candidates, l-token greedy lookahead, log P + λ·h";
    const NEEDS_REWARD: bool = true;

    fn search(cfg: &SearchConfig, s: &mut Session<'_>) -> Result<Final> {
        let reward = s.require_reward(Self::NAME)?;
        let hidden = reward.needs_hidden();
        let (lead, min_prob) = match cfg.commit {
            Commit::Lead { margin, min_prob } => (Some(margin), min_prob),
            Commit::Token => (None, 0.0),
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
                for (t, lp) in candidates(row.next_logits()?, cfg.k, cfg.top_p) {
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
            s.batch.forward(LogitsFor::Last)?;
            let mut cands: Vec<Cand> = s
                .batch
                .rows
                .iter()
                .map(|row| Cand {
                    base: row.tokens.len(),
                    finish: row.finish,
                    logits: row.logits.clone(),
                    lookahead_lp: Vec::new(),
                    step_logits: Vec::new(),
                })
                .collect();
            for j in 0..cfg.lookahead {
                for (r, cand) in cands.iter_mut().enumerate() {
                    if s.batch.rows[r].is_done() {
                        continue;
                    }
                    let logits = s.batch.rows[r].next_logits()?;
                    let t = argmax(logits);
                    if lead.is_some() {
                        cand.lookahead_lp.push(token_logprob(logits, t));
                        cand.step_logits.push(s.batch.rows[r].logits.clone());
                    }
                    s.batch.push(r, t)?;
                }
                let last = j + 1 == cfg.lookahead;
                if !last {
                    s.batch.forward(LogitsFor::Last)?;
                } else if hidden {
                    s.batch.forward(if lead.is_some() { LogitsFor::Last } else { LogitsFor::None })?;
                }
            }
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
                    s.stream.commit(&s.batch.rows[0].tokens)?;
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
                if row.logits.is_none() {
                    row.logits = cands[r].logits.take();
                }
            }
            let agreed = common_prefix(&s.batch.rows);
            let committed = s.batch.rows[0].tokens[..agreed].to_vec();
            s.stream.commit(&committed)?;
        }
        let all: Vec<usize> = (0..s.batch.len()).collect();
        let values = if cfg.lambda == 0.0 { vec![0.0; all.len()] } else { s.values(reward, &all)? };
        let scores: Vec<f64> = all.iter().map(|&r| s.batch.rows[r].logprob + cfg.lambda * values[r]).collect();
        Ok(Final { row: best(&scores).unwrap_or(0) })
    }
}

/// One candidate of a step: a row of the batch after its candidate token.
struct Cand {
    /// Response length after the candidate token.
    base: usize,
    /// Whether the candidate ended the row (EOS, stop string, length); `None` = live.
    finish: Option<Finish>,
    /// Next-token logits after the candidate token (from the first lookahead pass).
    logits: Option<Logits>,
    /// Log-probabilities of the lookahead tokens (kept only under `Commit::Lead`).
    lookahead_lp: Vec<f64>,
    /// The logits each lookahead token was chosen from (kept only under `Commit::Lead`); the
    /// first are those after the candidate.
    step_logits: Vec<Option<Logits>>,
}


impl Deal {
    /// Make candidate row `w` the only beam, keeping its lookahead tokens that are in the
    /// cache (the last one, never fed, is dropped unless the row ended there), or, with
    /// `min_prob` > 0, only the leading ones chosen with at least that probability.
    fn accept_lookahead(s: &mut Session<'_>, w: usize, cand: &Cand, min_prob: f64) -> Result<()> {
        s.batch.select(&[w])?;
        let row = &s.batch.rows[0];
        let (len, fed, finish) = (row.tokens.len(), row.fed(), row.finish);
        let confident = if min_prob > 0.0 {
            let floor = min_prob.ln();
            cand.lookahead_lp.iter().take_while(|&&lp| lp >= floor).count()
        } else {
            usize::MAX
        };
        let keep = if confident < len - cand.base { cand.base + confident } else if fed < len { fed } else { len };
        if keep < len {
            s.batch.truncate(0, keep)?;
        }
        let kept = s.batch.rows[0].tokens.len() - cand.base;
        let row = &mut s.batch.rows[0];
        row.logprob += cand.lookahead_lp.iter().take(kept).sum::<f64>();
        if keep == len {
            row.finish = finish;
        }
        if row.logits.is_none() {
            // the logits the next token would be chosen from: after the candidate, or after
            // the last kept lookahead token
            row.logits = cand.step_logits.get(kept).cloned().flatten();
        }
        Ok(())
    }
}
