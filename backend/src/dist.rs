//! [`TokenDist`]: one row's next-token distribution, as a backend gives it.
//!
//! A local engine gives the full logits over the vocabulary (a view into the logits of the
//! forward pass that produced them, shared, so forking or keeping a row never copies a
//! vocabulary-sized vector). A remote OpenAI-compatible engine gives only the top-N
//! log-probabilities; tokens outside them have probability unknown and are treated as
//! impossible. Controllers only ask questions both can answer: the top k, the argmax, the
//! log-probability of a token, a draw.

use std::sync::Arc;

use crate::sampling::{argmax, logsumexp, top_k, Sampler};
use crate::Result;

/// A next-token distribution; see the module documentation.
#[derive(Debug, Clone)]
pub enum TokenDist {
    /// Full logits: `pass[start..start + len]` of a pass's flat logits.
    Logits {
        /// The flat logits of the whole pass (rows × vocabulary).
        pass: Arc<Vec<f32>>,
        /// Where this row's logits start.
        start: usize,
        /// Vocabulary size.
        len: usize,
    },
    /// Only the most likely tokens, as `(token, log-probability)`, best first.
    TopN(Arc<Vec<(u32, f32)>>),
    /// The model's distribution after processing (penalties, logit bias, a grammar mask):
    /// every question is answered from the processed one, and [`TokenDist::model`] keeps
    /// the model's own for reporting logprobs.
    Processed(Arc<(TokenDist, TokenDist)>),
}

impl TokenDist {
    /// Full logits of a single row.
    pub fn from_logits(v: Vec<f32>) -> Self {
        let len = v.len();
        TokenDist::Logits { pass: Arc::new(v), start: 0, len }
    }

    /// Row `row` of a pass's flat `rows × vocab` logits.
    pub fn row_of(pass: &Arc<Vec<f32>>, row: usize, vocab: usize) -> Self {
        TokenDist::Logits { pass: pass.clone(), start: row * vocab, len: vocab }
    }

    /// A top-N distribution from `(token, log-probability)` pairs (sorted here, best first;
    /// ties: lower id first).
    pub fn top_n(mut v: Vec<(u32, f32)>) -> Self {
        v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        TokenDist::TopN(Arc::new(v))
    }

    /// `processed`, standing in for the model's `model` (see [`TokenDist::Processed`]).
    pub fn processed(processed: TokenDist, model: &TokenDist) -> Self {
        TokenDist::Processed(Arc::new((processed, model.model().clone())))
    }

    /// The model's own distribution (before any processing).
    pub fn model(&self) -> &TokenDist {
        match self {
            TokenDist::Processed(p) => &p.1,
            d => d,
        }
    }

    /// The distribution questions are answered from (the processed one, if any).
    fn effective(&self) -> &TokenDist {
        match self {
            TokenDist::Processed(p) => &p.0,
            d => d,
        }
    }

    /// The full logits, when the backend gave them.
    pub fn logits(&self) -> Option<&[f32]> {
        match self.effective() {
            TokenDist::Logits { pass, start, len } => Some(&pass[*start..*start + *len]),
            _ => None,
        }
    }

    /// The `(token, log-probability)` list of a top-N distribution (`None` for full logits).
    pub fn listed(&self) -> Option<&[(u32, f32)]> {
        match self.effective() {
            TokenDist::TopN(v) => Some(v),
            _ => None,
        }
    }

    /// How many tokens the distribution knows (the vocabulary, or N).
    pub fn known(&self) -> usize {
        match self.effective() {
            TokenDist::Logits { len, .. } => *len,
            TokenDist::TopN(v) => v.len(),
            TokenDist::Processed(_) => 0,
        }
    }

    /// The most likely token (first on ties).
    pub fn argmax(&self) -> u32 {
        match self.effective() {
            TokenDist::TopN(v) => v.first().map_or(0, |&(t, _)| t),
            _ => argmax(self.logits().unwrap_or_default()),
        }
    }

    /// The `k` most likely tokens as `(token, log-probability)`, best first (fewer when a
    /// top-N distribution knows fewer).
    /// Tokens a processing step ruled out (log-probability −∞) are never among them.
    pub fn top_k(&self, k: usize) -> Vec<(u32, f64)> {
        let out: Vec<(u32, f64)> = match self.effective() {
            TokenDist::TopN(v) => v.iter().take(k).map(|&(t, lp)| (t, lp as f64)).collect(),
            _ => {
                let logits = self.logits().unwrap_or_default();
                let lse = logsumexp(logits);
                top_k(logits, k).into_iter().map(|(t, l)| (t, (l - lse) as f64)).collect()
            }
        };
        out.into_iter().filter(|&(_, lp)| lp > f64::NEG_INFINITY).collect()
    }

    /// Log-probability of `token` (−∞ outside the vocabulary, or outside a top-N list).
    pub fn logprob(&self, token: u32) -> f64 {
        match self.effective() {
            TokenDist::TopN(v) => v.iter().find(|&&(t, _)| t == token).map_or(f64::NEG_INFINITY, |&(_, lp)| lp as f64),
            _ => {
                let logits = self.logits().unwrap_or_default();
                logits.get(token as usize).map_or(f64::NEG_INFINITY, |&l| (l - logsumexp(logits)) as f64)
            }
        }
    }

    /// What [`TokenLogprob`] reports for `token` drawn from this distribution: its
    /// log-probability and the `top` most likely alternatives (one log-sum-exp for both).
    pub fn token_logprob(&self, token: u32, top: usize) -> TokenLogprob {
        match self.effective() {
            TokenDist::TopN(v) => TokenLogprob {
                token,
                logprob: v.iter().find(|&&(t, _)| t == token).map_or(f32::NEG_INFINITY, |&(_, lp)| lp),
                top: v.iter().take(top).copied().collect(),
            },
            _ => {
                let logits = self.logits().unwrap_or_default();
                let lse = logsumexp(logits);
                let logprob = logits.get(token as usize).map_or(f32::NEG_INFINITY, |&l| l - lse);
                let top = if top == 0 { Vec::new() } else { top_k(logits, top).into_iter().map(|(t, l)| (t, l - lse)).collect() };
                TokenLogprob { token, logprob, top }
            }
        }
    }

    /// Draw a token with `sampler` (`history` feeds its repetition penalty). A top-N
    /// distribution is renormalised over the tokens it knows.
    pub fn sample(&self, sampler: &mut Sampler, history: &[u32]) -> Result<u32> {
        match self.effective() {
            TokenDist::Logits { .. } | TokenDist::Processed(_) => sampler.sample(self.logits().unwrap_or_default(), history),
            TokenDist::TopN(v) => {
                if v.is_empty() {
                    return Err(crate::Error::invalid("cannot sample from an empty distribution"));
                }
                let lps: Vec<f32> = v.iter().map(|&(_, lp)| lp).collect();
                let i = sampler.sample(&lps, &[])? as usize;
                Ok(v[i.min(v.len() - 1)].0)
            }
        }
    }
}

/// The model's log-probability of one token it produced or was given (what OpenAI's
/// `logprobs` report): the token, its log-probability, and the most likely alternatives at
/// that position, best first. Values are the model's, before any penalty, bias or grammar
/// mask, and never search scores.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprob {
    /// The token.
    pub token: u32,
    /// Its log-probability under the model (−∞ where a top-N engine did not list it).
    pub logprob: f32,
    /// The most likely tokens at that position as `(token, log-probability)`, best first.
    pub top: Vec<(u32, f32)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_and_top_n_agree_on_what_both_know() {
        let logits = vec![0.0f32, 2.0, 1.0, -1.0];
        let dense = TokenDist::from_logits(logits.clone());
        let lse = logsumexp(&logits);
        let sparse = TokenDist::top_n(logits.iter().enumerate().map(|(i, &l)| (i as u32, l - lse)).collect());
        assert_eq!(dense.argmax(), 1);
        assert_eq!(sparse.argmax(), 1);
        let (a, b) = (dense.top_k(3), sparse.top_k(3));
        assert_eq!(a.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 2, 0]);
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(x.0, y.0);
            assert!((x.1 - y.1).abs() < 1e-6);
        }
        assert!((dense.logprob(3) - sparse.logprob(3)).abs() < 1e-6);
        assert_eq!(TokenDist::top_n(vec![(7, -0.1)]).logprob(3), f64::NEG_INFINITY);
    }

    #[test]
    fn top_n_draws_only_known_tokens() {
        let d = TokenDist::top_n(vec![(5, -0.7), (9, -0.7)]);
        let mut s = Sampler::new(crate::sampling::SamplingParams { temperature: 1.0, seed: 3, ..Default::default() }).unwrap();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..64 {
            seen.insert(d.sample(&mut s, &[]).unwrap());
        }
        assert_eq!(seen, [5u32, 9].into_iter().collect());
    }

    #[test]
    fn token_logprob_matches_logprob_and_top_k() {
        let d = TokenDist::from_logits(vec![0.5f32, 3.0, -1.0, 2.0]);
        let r = d.token_logprob(3, 2);
        assert!((r.logprob as f64 - d.logprob(3)).abs() < 1e-6);
        assert_eq!(r.top.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3]);
        assert!((r.top[0].1 as f64 - d.logprob(1)).abs() < 1e-6);
        assert!(d.token_logprob(2, 0).top.is_empty());
        let sparse = TokenDist::top_n(vec![(4, -0.2), (8, -1.9)]);
        let r = sparse.token_logprob(8, 5);
        assert_eq!((r.logprob, r.top.len()), (-1.9, 2));
        assert_eq!(sparse.token_logprob(1, 1).logprob, f32::NEG_INFINITY);
    }

    #[test]
    fn row_views_share_one_pass() {
        let pass = Arc::new(vec![0.0f32, 1.0, 5.0, 2.0]);
        let (r0, r1) = (TokenDist::row_of(&pass, 0, 2), TokenDist::row_of(&pass, 1, 2));
        assert_eq!((r0.argmax(), r1.argmax()), (1, 0));
        assert_eq!(Arc::strong_count(&pass), 3);
    }
}
