//! Perplexity of a text under the model, by llama.cpp's `llama-perplexity` protocol, so the
//! two engines' figures compare directly: the text is tokenized once (BOS first when the
//! model wants one) and cut into non-overlapping chunks of `ctx` tokens; each chunk runs on
//! a fresh cache with its first token replaced by BOS, and only the second half of each chunk
//! is scored (every scored token sees at least `ctx / 2` tokens of context). The estimate is
//! `exp(mean NLL)` with the standard error `ppl · sqrt(var(NLL) / (n - 1))`, as llama.cpp
//! prints it. This is the quality check of every kernel and weight-format change.

use crate::model::LogitsFor;
use crate::{Engine, Error, Result};

/// Tokens fed per pass while a chunk runs (the prefill's chunk size).
const PASS: usize = crate::engine::PREFILL_CHUNK;

/// The result of [`perplexity`].
#[derive(Debug, Clone, PartialEq)]
pub struct Perplexity {
    /// exp(mean negative log-likelihood) over every scored token.
    pub ppl: f64,
    /// Its standard error.
    pub stderr: f64,
    /// Chunks run.
    pub chunks: usize,
    /// Tokens scored (`chunks · (ctx − 1 − ctx/2)`).
    pub scored: usize,
    /// The running estimate after each chunk (what llama.cpp prints as `[i]ppl`).
    pub running: Vec<f64>,
}

/// Tokens of `text` for [`perplexity`]: BOS first when the model wants one.
pub fn tokenize(engine: &Engine, text: &str) -> Result<Vec<u32>> {
    engine.tokenizer().encode(text, engine.tokenizer().add_bos())
}

/// Perplexity of `tokens` in chunks of `ctx` (at most `max_chunks` of them);
/// `on_chunk(done, total, running_ppl)` after each chunk.
pub fn perplexity(
    engine: &Engine,
    tokens: &[u32],
    ctx: usize,
    max_chunks: Option<usize>,
    on_chunk: &mut dyn FnMut(usize, usize, f64),
) -> Result<Perplexity> {
    if ctx < 16 {
        return Err(Error::invalid(format!("context {ctx}: at least 16 tokens")));
    }
    if ctx > engine.model().config().context_length {
        return Err(Error::invalid(format!("context {ctx}: the model's is {}", engine.model().config().context_length)));
    }
    let available = tokens.len() / ctx;
    if available == 0 || tokens.len() < 2 * ctx {
        return Err(Error::invalid(format!(
            "the text has {} tokens; it needs at least {} (2 chunks of {ctx}, as llama-perplexity requires)",
            tokens.len(),
            2 * ctx
        )));
    }
    let chunks = max_chunks.map_or(available, |m| m.clamp(1, available));
    let bos = engine.tokenizer().bos_id();
    let first = ctx / 2;
    let (mut nll, mut nll2, mut count) = (0f64, 0f64, 0usize);
    let mut running = Vec::with_capacity(chunks);
    for c in 0..chunks {
        deal_backend::cancel::check()?;
        let mut chunk = tokens[c * ctx..(c + 1) * ctx].to_vec();
        if let Some(b) = bos.filter(|_| engine.tokenizer().add_bos()) {
            chunk[0] = b;
        }
        let mut cache = engine.model().new_cache(1)?;
        // the unscored first half: no logits
        for part in chunk[..first].chunks(PASS) {
            engine.forward(&mut cache, &[part.to_vec()], LogitsFor::None)?;
        }
        // the scored half: logits at positions first .. ctx-2 predict tokens first+1 .. ctx-1
        let mut pos = first;
        for part in chunk[first..ctx - 1].chunks(PASS) {
            let out = engine.forward(&mut cache, &[part.to_vec()], LogitsFor::All)?;
            let logits = out.logits.ok_or_else(|| Error::invalid("the forward pass returned no logits"))?;
            let rows = logits.get(0)?.to_vec2::<f32>()?;
            for (j, row) in rows.iter().enumerate() {
                let target = chunk[pos + j + 1] as usize;
                let lp = log_softmax_at(row, target).ok_or_else(|| Error::invalid(format!("token {target} is outside the vocabulary")))?;
                nll -= lp;
                nll2 += lp * lp;
                count += 1;
            }
            pos += part.len();
        }
        let p = (nll / count as f64).exp();
        running.push(p);
        on_chunk(c + 1, chunks, p);
    }
    let (ppl, stderr) = estimate(nll, nll2, count);
    Ok(Perplexity { ppl, stderr, chunks, scored: count, running })
}

/// log softmax(`logits`)[`target`], summed in f64 (llama.cpp's `log_softmax`).
fn log_softmax_at(logits: &[f32], target: usize) -> Option<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|&l| ((l - max) as f64).exp()).sum();
    Some((*logits.get(target)? - max) as f64 - sum.ln())
}

/// (exp(mean), its standard error) from Σ nll, Σ nll², n, as llama-perplexity computes them.
fn estimate(nll: f64, nll2: f64, n: usize) -> (f64, f64) {
    let n_f = n as f64;
    let mean = nll / n_f;
    let ppl = mean.exp();
    let var = nll2 / n_f - mean * mean;
    let stderr = if var > 0.0 && n > 1 { (var / (n_f - 1.0)).sqrt() * ppl } else { 0.0 };
    (ppl, stderr)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_matches_the_definition() {
        let l = [1.0f32, 2.0, 3.0];
        let z: f64 = l.iter().map(|&x| (x as f64).exp()).sum();
        for t in 0..3 {
            assert!((log_softmax_at(&l, t).unwrap() - ((l[t] as f64) - z.ln())).abs() < 1e-9);
        }
        assert!(log_softmax_at(&l, 3).is_none());
    }

    #[test]
    fn estimate_is_exp_of_the_mean_with_its_standard_error() {
        // NLLs 1, 2, 3: mean 2, population variance 2/3, stderr sqrt((2/3)/2)·e²
        let (ppl, se) = estimate(6.0, 14.0, 3);
        assert!((ppl - 2f64.exp()).abs() < 1e-12);
        assert!((se - (1.0f64 / 3.0).sqrt() * 2f64.exp()).abs() < 1e-9);
        // identical NLLs: no spread
        assert_eq!(estimate(4.0, 8.0, 2).1, 0.0);
    }
}
