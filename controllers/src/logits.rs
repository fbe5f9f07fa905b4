//! [`LogitsProcessor`]: what changes a row's next-token distribution before any controller
//! reads it: OpenAI's `frequency_penalty` and `presence_penalty` over the row's own
//! generated tokens, and `logit_bias`, in that order (OpenAI's and vLLM's definitions:
//! `logit[t] -= count(t)·frequency + [count(t) > 0]·presence`, then `logit[t] += bias[t]`).
//!
//! Every controller sees the processed distribution: DeAL's candidates and lookaheads,
//! ARGS's top-k, every sample. The model's own distribution stays with it
//! ([`TokenDist::model`]) for the logprobs a response reports. On a top-N distribution (a
//! remote engine) only the listed tokens can move.

use std::collections::HashMap;

use deal_backend::TokenDist;

use crate::config::SearchConfig;

/// See the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogitsProcessor {
    frequency: f32,
    presence: f32,
    bias: Vec<(u32, f32)>,
}

impl LogitsProcessor {
    /// The processing `cfg` asks for, or `None` when it changes nothing.
    pub fn from_config(cfg: &SearchConfig) -> Option<Self> {
        let p = Self {
            frequency: cfg.frequency_penalty,
            presence: cfg.presence_penalty,
            bias: cfg.logit_bias.iter().map(|(&t, &b)| (t, b)).filter(|&(_, b)| b != 0.0).collect(),
        };
        (p.frequency != 0.0 || p.presence != 0.0 || !p.bias.is_empty()).then_some(p)
    }

    /// How much to add to each token's logit after `generated`.
    fn deltas(&self, generated: &[u32]) -> HashMap<u32, f32> {
        let mut d: HashMap<u32, f32> = HashMap::new();
        if self.frequency != 0.0 || self.presence != 0.0 {
            let mut counts: HashMap<u32, u32> = HashMap::new();
            for &t in generated {
                *counts.entry(t).or_default() += 1;
            }
            for (t, c) in counts {
                d.insert(t, -(c as f32) * self.frequency - self.presence);
            }
        }
        for &(t, b) in &self.bias {
            *d.entry(t).or_default() += b;
        }
        d
    }

    /// `dist` after this processing, for a row that has generated `generated`.
    pub fn apply(&self, dist: &TokenDist, generated: &[u32]) -> TokenDist {
        let deltas = self.deltas(generated);
        if deltas.is_empty() {
            return dist.clone();
        }
        // from the model's own distribution: processing twice never counts a penalty twice
        let base = dist.model();
        let processed = match base.listed() {
            Some(listed) => TokenDist::top_n(listed.iter().map(|&(t, lp)| (t, lp + deltas.get(&t).copied().unwrap_or(0.0))).collect()),
            None => {
                let mut logits = base.logits().unwrap_or_default().to_vec();
                for (&t, &d) in &deltas {
                    if let Some(l) = logits.get_mut(t as usize) {
                        *l += d;
                    }
                }
                TokenDist::from_logits(logits)
            }
        };
        TokenDist::processed(processed, dist)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(frequency: f32, presence: f32, bias: &[(u32, f32)]) -> SearchConfig {
        SearchConfig { frequency_penalty: frequency, presence_penalty: presence, logit_bias: bias.iter().copied().collect(), ..Default::default() }
    }

    #[test]
    fn nothing_to_do_is_no_processor() {
        assert!(LogitsProcessor::from_config(&SearchConfig::default()).is_none());
        assert!(LogitsProcessor::from_config(&cfg(0.0, 0.0, &[(3, 0.0)])).is_none());
    }

    #[test]
    fn penalties_count_the_rows_tokens_and_bias_adds() {
        let p = LogitsProcessor::from_config(&cfg(0.5, 0.25, &[(0, 3.0)])).unwrap();
        let d = TokenDist::from_logits(vec![0.0, 2.0, 1.0, -1.0]);
        let out = p.apply(&d, &[1, 1, 2]);
        let l = out.logits().unwrap();
        assert_eq!(l, &[3.0, 2.0 - 1.0 - 0.25, 1.0 - 0.5 - 0.25, -1.0]);
        // the model's distribution is kept for reporting
        assert_eq!(out.model().logits().unwrap(), &[0.0, 2.0, 1.0, -1.0]);
        assert_eq!(out.argmax(), 0);
        assert_eq!(d.argmax(), 1);
        // processing a processed distribution starts again from the model's
        let again = p.apply(&out, &[]);
        assert_eq!(again.logits().unwrap(), &[3.0, 2.0, 1.0, -1.0]);
    }

    #[test]
    fn a_ban_is_never_a_candidate_and_top_n_moves_listed_tokens_only() {
        let p = LogitsProcessor::from_config(&cfg(0.0, 0.0, &[(1, f32::NEG_INFINITY), (7, 5.0)])).unwrap();
        let d = TokenDist::from_logits(vec![0.0, 9.0, 1.0]);
        let out = p.apply(&d, &[]);
        assert_eq!(out.top_k(3).iter().map(|x| x.0).collect::<Vec<_>>(), vec![2, 0]);
        let sparse = TokenDist::top_n(vec![(1, -0.1), (2, -2.5)]);
        let out = p.apply(&sparse, &[]);
        assert_eq!(out.argmax(), 2);
        assert_eq!(out.listed().unwrap().len(), 2);
    }
}
