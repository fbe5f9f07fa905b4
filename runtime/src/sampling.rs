//! Choosing the next token from logits: greedy, temperature, top-k, top-p, min-p, repetition
//! penalty, with a seeded RNG (same seed, same logits → same tokens).
//!
//! Filters run in llama.cpp's order: repetition penalty, top-k, top-p, min-p, temperature,
//! then a draw. Also home to small logit utilities the search controllers share
//! ([`log_softmax`], [`top_k`]).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::{Error, Result};

/// Sampling settings. `temperature == 0` means greedy (filters then don't matter).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    /// Logits are divided by this before the draw (0 = greedy).
    pub temperature: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` × the top probability (0 = off).
    pub min_p: f32,
    /// Divide positive (multiply negative) logits of recently seen tokens (1 = off).
    pub repetition_penalty: f32,
    /// How many recent tokens the repetition penalty looks at.
    pub repeat_last_n: usize,
    /// Seed of the RNG (same seed, same logits → same tokens).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self { temperature: 0.0, top_k: 0, top_p: 1.0, min_p: 0.0, repetition_penalty: 1.0, repeat_last_n: 64, seed: 0 }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self::default()
    }

    /// Check every field is in range; the error names the field and the accepted range.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(m));
        if !self.temperature.is_finite() || self.temperature < 0.0 {
            return bad(format!("temperature must be a finite number >= 0, got {}", self.temperature));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if !(0.0..=1.0).contains(&self.min_p) {
            return bad(format!("min_p must be in [0, 1], got {}", self.min_p));
        }
        if !self.repetition_penalty.is_finite() || self.repetition_penalty <= 0.0 {
            return bad(format!("repetition_penalty must be a finite number > 0, got {}", self.repetition_penalty));
        }
        Ok(())
    }

    /// Whether the temperature is 0 (argmax, no draw).
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }
}

/// A stateful sampler (owns the RNG).
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    /// A sampler seeded with `params.seed`; errors when a field is out of range.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = StdRng::seed_from_u64(params.seed);
        Ok(Self { params, rng })
    }

    /// The settings it samples with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Pick a token from one row of logits; `history` feeds the repetition penalty.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::invalid("cannot sample from empty logits"));
        }
        let p = &self.params;
        let mut logits = logits.to_vec();
        if p.repetition_penalty != 1.0 {
            apply_repetition_penalty(&mut logits, history, p.repetition_penalty, p.repeat_last_n);
        }
        if p.is_greedy() {
            return Ok(argmax(&logits));
        }
        let k = if p.top_k == 0 { logits.len() } else { p.top_k.min(logits.len()) };
        let mut cands = top_k(&logits, k);
        // probabilities at temperature 1 for the top-p / min-p filters (llama.cpp's order)
        let probs = softmax_of(&cands);
        if p.top_p < 1.0 {
            let mut acc = 0.0;
            let mut keep = cands.len();
            for (i, pr) in probs.iter().enumerate() {
                acc += pr;
                if acc >= p.top_p {
                    keep = i + 1;
                    break;
                }
            }
            cands.truncate(keep.max(1));
        }
        if p.min_p > 0.0 {
            let top = probs[0];
            let keep = probs.iter().take(cands.len()).take_while(|&&pr| pr >= p.min_p * top).count();
            cands.truncate(keep.max(1));
        }
        for c in cands.iter_mut() {
            c.1 /= p.temperature;
        }
        let probs = softmax_of(&cands);
        let u: f32 = self.rng.gen();
        let mut acc = 0.0;
        for (i, pr) in probs.iter().enumerate() {
            acc += pr;
            if u < acc {
                return Ok(cands[i].0);
            }
        }
        Ok(cands[cands.len() - 1].0)
    }
}

/// Index of the largest logit (first on ties, like llama.cpp's greedy sampler).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// The `k` largest logits as `(token, logit)`, sorted from largest.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    let mut idx: Vec<u32> = (0..logits.len() as u32).collect();
    let cmp = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, cmp);
        idx.truncate(k);
    }
    idx.sort_unstable_by(cmp);
    idx.into_iter().map(|i| (i, logits[i as usize])).collect()
}

/// Numerically stable log-softmax of one row.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let lse = max + sum.ln();
    logits.iter().map(|&l| l - lse).collect()
}

fn softmax_of(cands: &[(u32, f32)]) -> Vec<f32> {
    let max = cands.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = cands.iter().map(|c| (c.1 - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// llama.cpp's repetition penalty over the last `last_n` tokens.
pub fn apply_repetition_penalty(logits: &mut [f32], history: &[u32], penalty: f32, last_n: usize) {
    let start = history.len().saturating_sub(last_n);
    let mut seen = std::collections::HashSet::new();
    for &t in &history[start..] {
        if seen.insert(t) {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = if *l > 0.0 { *l / penalty } else { *l * penalty };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_picks_argmax() {
        let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
        assert_eq!(s.sample(&[0.1, 3.0, 2.0], &[]).unwrap(), 1);
    }

    #[test]
    fn top_k_sorted_and_truncated() {
        let t = top_k(&[0.5, 3.0, -1.0, 2.0], 2);
        assert_eq!(t, vec![(1, 3.0), (3, 2.0)]);
    }

    #[test]
    fn repetition_penalty_changes_greedy_choice() {
        let p = SamplingParams { repetition_penalty: 2.0, ..SamplingParams::greedy() };
        let mut s = Sampler::new(p).unwrap();
        // token 1 (3.0) was just seen: 3.0 / 2 = 1.5 < 2.0
        assert_eq!(s.sample(&[0.0, 3.0, 2.0], &[1]).unwrap(), 2);
    }

    #[test]
    fn same_seed_same_draws_and_top_k_one_is_greedy() {
        let logits: Vec<f32> = (0..50).map(|i| ((i * 37) % 11) as f32 / 3.0).collect();
        let p = SamplingParams { temperature: 1.0, seed: 42, ..Default::default() };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone()).unwrap();
            (0..20).map(|_| s.sample(&logits, &[]).unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(draw(&p), draw(&p));
        let other = draw(&SamplingParams { seed: 43, ..p.clone() });
        assert_ne!(draw(&p), other);
        let k1 = draw(&SamplingParams { top_k: 1, ..p.clone() });
        assert!(k1.iter().all(|&t| t == argmax(&logits)));
    }

    #[test]
    fn top_p_and_min_p_restrict_support() {
        // probabilities ~ [0.88, 0.12, ~0]: top_p 0.5 and min_p 0.5 both leave only token 0
        let logits = [4.0, 2.0, -10.0];
        for p in [
            SamplingParams { temperature: 1.0, top_p: 0.5, ..Default::default() },
            SamplingParams { temperature: 1.0, min_p: 0.5, ..Default::default() },
        ] {
            let mut s = Sampler::new(p).unwrap();
            assert!((0..200).all(|_| s.sample(&logits, &[]).unwrap() == 0));
        }
        // without filters, token 1 appears
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, seed: 1, ..Default::default() }).unwrap();
        assert!((0..200).any(|_| s.sample(&logits, &[]).unwrap() == 1));
    }

    #[test]
    fn invalid_params_are_rejected_with_names() {
        let e = Sampler::new(SamplingParams { temperature: f32::NAN, ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("temperature"));
        let e = Sampler::new(SamplingParams { top_p: 0.0, ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("top_p"));
    }

    #[test]
    fn log_softmax_normalises() {
        let l = log_softmax(&[1.0, 2.0, 3.0]);
        let s: f32 = l.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-5);
    }
}
