//! Small helpers the controllers share: candidate lists, ranking, one-row decoding.

use deal_backend::sampling::{Sampler, SamplingParams};
use deal_backend::TokenDist;

use crate::controller::Session;
use crate::error::Result;

/// The `k` most likely tokens as `(token, log-probability)`, best first, cut to the smallest
/// prefix whose probability reaches `top_p` (at least one).
pub fn candidates(dist: &TokenDist, k: usize, top_p: f32) -> Vec<(u32, f64)> {
    let mut out = dist.top_k(k);
    if top_p < 1.0 {
        let mut acc = 0.0;
        let keep = out.iter().position(|&(_, lp)| {
            acc += lp.exp();
            acc >= top_p as f64
        });
        out.truncate(keep.map_or(out.len(), |i| i + 1));
    }
    out
}

/// Indices of `scores`, best first; ties keep the lower index first.
pub fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    idx
}

/// Index of the best score (the first on ties); `None` if empty.
pub fn best(scores: &[f64]) -> Option<usize> {
    order_desc(scores).first().copied()
}

/// Decode one row token by token with `pick`, committing each token as it is chosen.
pub fn decode_single(s: &mut Session<'_>, mut pick: impl FnMut(&TokenDist) -> Result<u32>) -> Result<()> {
    loop {
        let token = pick(s.batch.rows[0].next_dist()?)?;
        let live = s.batch.push(0, token)?;
        s.commit(0)?;
        if !live {
            return Ok(());
        }
        s.batch.forward()?;
    }
}

/// Draw every live row's next token with `sampler` (rows in order, so a seed fixes all).
pub fn sample_rows(s: &mut Session<'_>, sampler: &mut Sampler) -> Result<()> {
    for r in 0..s.batch.len() {
        if s.batch.rows[r].is_done() {
            continue;
        }
        let token = s.batch.rows[r].next_dist()?.sample(sampler, &[])?;
        s.batch.push(r, token)?;
    }
    Ok(())
}

/// Sampling parameters of the sampling controllers.
pub fn sampling(cfg: &crate::SearchConfig) -> SamplingParams {
    SamplingParams {
        temperature: cfg.temperature,
        top_p: cfg.top_p,
        seed: cfg.seed,
        ..Default::default()
    }
}
