//! Choosing the next token from logits: greedy, temperature, top-k, top-p, min-p, repetition
//! penalty, with a seeded RNG (same seed, same logits → same tokens).
//!
//! Filters run in llama.cpp's order: repetition penalty, top-k, top-p, min-p, temperature,
//! then a draw. Also home to small logit utilities the search controllers share
//! ([`log_softmax`], [`top_k`]).

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::math::exp_nonpositive;
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
    ///
    /// Tokens are considered from the most likely down, but sorted only as far as the
    /// filters and the draw reach (usually a few dozen of a 262k vocabulary): a full sort
    /// per token cost more than the forward pass of a small model.
    pub fn sample(&mut self, logits: &[f32], history: &[u32]) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::invalid("cannot sample from empty logits"));
        }
        let p = &self.params;
        let penalised;
        let logits = if p.repetition_penalty != 1.0 && !history.is_empty() {
            let mut l = logits.to_vec();
            apply_repetition_penalty(&mut l, history, p.repetition_penalty, p.repeat_last_n);
            penalised = l;
            &penalised[..]
        } else {
            logits
        };
        if p.is_greedy() {
            return Ok(argmax(logits));
        }
        let n = logits.len();
        let k = if p.top_k == 0 { n } else { p.top_k.min(n) };
        let mut order = Descending::new(logits);
        let top = logits[order.nth(0) as usize];
        // probabilities at temperature 1 over the top-k, for the top-p / min-p filters
        // (llama.cpp's order)
        let mut keep = k;
        if p.top_p < 1.0 {
            let z1: f64 = if k == n {
                sum_exp(logits, top, 1.0)
            } else {
                order.prefix(k).iter().map(|&t| exp_nonpositive(logits[t as usize] - top) as f64).sum()
            };
            let mut acc = 0.0;
            let mut i = 0;
            while i < k {
                acc += exp_nonpositive(logits[order.nth(i) as usize] - top) as f64 / z1;
                i += 1;
                if acc >= p.top_p as f64 {
                    keep = i;
                    break;
                }
            }
        }
        if p.min_p > 0.0 {
            // p >= min_p · p_top  ⇔  logit >= top + ln(min_p): a prefix of the order
            let floor = top + p.min_p.ln();
            let count = logits.iter().filter(|&&l| l >= floor).count();
            keep = keep.min(count.max(1));
        }
        // the draw at temperature T over the kept prefix
        let inv_t = 1.0 / p.temperature;
        let weight = |l: f32| exp_nonpositive((l - top) * inv_t) as f64;
        let z: f64 = if keep == n {
            sum_exp(logits, top, inv_t)
        } else {
            order.prefix(keep).iter().map(|&tok| weight(logits[tok as usize])).sum()
        };
        let target = self.rng.gen::<f64>() * z;
        let mut acc = 0.0;
        for i in 0..keep {
            let tok = order.nth(i);
            acc += weight(logits[tok as usize]);
            if target < acc {
                return Ok(tok);
            }
        }
        Ok(order.nth(keep - 1))
    }
}

/// Σ e^((l - top)·scale) over all logits (`top` is their maximum): 16 f32 lanes of
/// vectorised exponentials, lane sums in f64. The AVX-512 build of the same code gives the
/// same bits (each lane's arithmetic is unchanged, only wider).
fn sum_exp(logits: &[f32], top: f32, scale: f32) -> f64 {
    #[cfg(target_arch = "x86_64")]
    if crate::math::has_avx512f() {
        // SAFETY: the CPU has AVX-512F (checked just above).
        return unsafe { sum_exp_avx512(logits, top, scale) };
    }
    sum_exp_lanes(logits, top, scale)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn sum_exp_avx512(logits: &[f32], top: f32, scale: f32) -> f64 {
    sum_exp_lanes(logits, top, scale)
}

#[inline(always)]
fn sum_exp_lanes(logits: &[f32], top: f32, scale: f32) -> f64 {
    let mut total = 0f64;
    for chunk in logits.chunks(4096) {
        let mut lanes = [0f32; 16];
        let blocks = chunk.chunks_exact(16);
        let tail: f64 = blocks.remainder().iter().map(|&l| exp_nonpositive((l - top) * scale) as f64).sum();
        for b in blocks {
            for i in 0..16 {
                lanes[i] += exp_nonpositive((b[i] - top) * scale);
            }
        }
        total += lanes.iter().map(|&x| x as f64).sum::<f64>() + tail;
    }
    total
}

/// Token ids in descending logit order (ties: lower id first), sorted lazily: only as far as
/// asked, in growing chunks.
struct Descending<'a> {
    logits: &'a [f32],
    idx: Vec<u32>,
    sorted: usize,
}

impl<'a> Descending<'a> {
    fn new(logits: &'a [f32]) -> Self {
        Self { logits, idx: (0..logits.len() as u32).collect(), sorted: 0 }
    }

    /// The `i`-th most likely token (`i` < vocabulary size).
    fn nth(&mut self, i: usize) -> u32 {
        if i >= self.sorted {
            let want = (i + 1).max(self.sorted * 4).max(64);
            self.prefix(want);
        }
        self.idx[i]
    }

    /// The `m` most likely tokens, best first.
    fn prefix(&mut self, m: usize) -> &[u32] {
        let m = m.min(self.idx.len());
        if m > self.sorted {
            let logits = self.logits;
            let cmp = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b));
            let rest = &mut self.idx[self.sorted..];
            let want = m - self.sorted;
            if want < rest.len() {
                rest.select_nth_unstable_by(want - 1, cmp);
            }
            rest[..want].sort_unstable_by(cmp);
            self.sorted = m;
        }
        &self.idx[..m]
    }
}

/// Index of the largest logit (first on ties, like llama.cpp's greedy sampler; NaN never
/// wins). Two vectorisable passes: the maximum over 16 lanes, then its first position.
pub fn argmax(logits: &[f32]) -> u32 {
    const LANES: usize = 16;
    let mut lanes = [f32::NEG_INFINITY; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for (m, &x) in lanes.iter_mut().zip(c) {
            *m = if x > *m { x } else { *m };
        }
    }
    let mut max = lanes.iter().copied().fold(f32::NEG_INFINITY, |a, b| if b > a { b } else { a });
    for &x in tail {
        max = if x > max { x } else { max };
    }
    logits.iter().position(|&x| x == max).unwrap_or(0) as u32
}

/// The `k` largest logits as `(token, logit)`, sorted from largest.
pub fn top_k(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    let k = k.min(logits.len());
    if k == 0 {
        return Vec::new();
    }
    if k <= 64 {
        // one pass keeping the best k in order: most logits fail the first comparison
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
        for (i, &l) in logits.iter().enumerate() {
            if best.len() == k && l.total_cmp(&best[k - 1].1) != std::cmp::Ordering::Greater {
                continue;
            }
            // after every kept logit >= l (those equal have lower ids, so they rank first)
            let at = best.partition_point(|&(_, b)| b.total_cmp(&l) != std::cmp::Ordering::Less);
            best.insert(at, (i as u32, l));
            best.truncate(k);
        }
        return best;
    }
    Descending::new(logits).prefix(k).iter().map(|&i| (i, logits[i as usize])).collect()
}

/// log Σ exp(logits), numerically stable.
pub fn logsumexp(logits: &[f32]) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln()
}

/// Numerically stable log-softmax of one row.
pub fn log_softmax(logits: &[f32]) -> Vec<f32> {
    let lse = logsumexp(logits);
    logits.iter().map(|&l| l - lse).collect()
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
    fn argmax_first_of_ties_and_ignores_nan() {
        let mut l = vec![0.0f32; 100];
        l[37] = 5.0;
        l[70] = 5.0;
        l[3] = f32::NAN;
        assert_eq!(argmax(&l), 37);
        assert_eq!(argmax(&[1.0, 2.0, 2.0]), 1);
        assert_eq!(argmax(&[-3.0; 40]), 0);
    }

    #[test]
    fn small_top_k_matches_a_full_sort_ties_and_nan_included() {
        let mut logits: Vec<f32> = (0..3000).map(|i| ((i * 7919) % 211) as f32 / 13.0).collect();
        logits[5] = f32::NAN;
        logits[17] = f32::INFINITY;
        logits[2999] = f32::NEG_INFINITY;
        let mut full: Vec<u32> = (0..3000).collect();
        full.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b)));
        for k in [1usize, 2, 4, 8, 64] {
            let got: Vec<u32> = top_k(&logits, k).into_iter().map(|(t, _)| t).collect();
            assert_eq!(got, &full[..k], "k = {k}");
        }
        let got: Vec<u32> = top_k(&logits, 65).into_iter().map(|(t, _)| t).collect();
        assert_eq!(got, &full[..65], "k = 65 (the selection path)");
    }

    #[test]
    fn lazy_order_matches_a_full_sort() {
        let logits: Vec<f32> = (0..5000).map(|i| ((i * 7919) % 997) as f32 / 97.0).collect();
        let mut full: Vec<u32> = (0..5000).collect();
        full.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]).then(a.cmp(b)));
        let mut d = Descending::new(&logits);
        for i in [0usize, 1, 63, 64, 300, 4999] {
            assert_eq!(d.nth(i), full[i], "position {i}");
        }
        assert_eq!(d.prefix(5000), &full[..]);
    }

    #[test]
    fn draws_follow_the_distribution() {
        // probabilities 0.5 / 0.25 / 0.125 / 0.125 at temperature 1, over a large vocabulary
        // of negligible tokens: the lazy order must reach the tail ranks
        let mut logits = vec![-60.0f32; 10_000];
        let (a, b, c, d) = (9000u32, 12u32, 4000u32, 7777u32);
        logits[a as usize] = 3.0 * std::f32::consts::LN_2;
        logits[b as usize] = 2.0 * std::f32::consts::LN_2;
        logits[c as usize] = std::f32::consts::LN_2;
        logits[d as usize] = std::f32::consts::LN_2;
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, seed: 7, ..Default::default() }).unwrap();
        let mut counts = std::collections::HashMap::new();
        for _ in 0..4000 {
            *counts.entry(s.sample(&logits, &[]).unwrap()).or_insert(0usize) += 1;
        }
        let frac = |t: u32| *counts.get(&t).unwrap_or(&0) as f64 / 4000.0;
        assert!((frac(a) - 0.5).abs() < 0.04, "{counts:?}");
        assert!((frac(b) - 0.25).abs() < 0.04, "{counts:?}");
        assert!((frac(c) - 0.125).abs() < 0.03 && (frac(d) - 0.125).abs() < 0.03, "{counts:?}");
        // top_p 0.7 keeps the two best; top_k 1 is greedy
        let mut s = Sampler::new(SamplingParams { temperature: 1.0, top_p: 0.7, seed: 7, ..Default::default() }).unwrap();
        assert!((0..500).all(|_| [a, b].contains(&s.sample(&logits, &[]).unwrap())));
        let mut s = Sampler::new(SamplingParams { temperature: 5.0, top_k: 1, ..Default::default() }).unwrap();
        assert_eq!(s.sample(&logits, &[]).unwrap(), a);
    }

    #[test]
    fn log_softmax_normalises() {
        let l = log_softmax(&[1.0, 2.0, 3.0]);
        let s: f32 = l.iter().map(|x| x.exp()).sum();
        assert!((s - 1.0).abs() < 1e-5);
    }
}
