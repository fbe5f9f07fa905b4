//! `args`: ARGS, reward-guided search at the token level (Khanov et al., "ARGS: Alignment as
//! Reward-Guided Search", 2024).
//!
//! Each step takes the top-k next tokens and scores each as
//!
//! ```text
//! score = log P(token | prefix) + w · h(prompt, prefix + token)
//! ```
//!
//! (the paper adds w·h to the logit; per step the two differ by a constant, so the choice is
//! the same), then picks the best (temperature 0) or samples from softmax(score / T).
//! Text-only heads score the k extensions without running them; heads that read the policy's
//! hidden state get the k candidates as rows of one forward pass, whose logits then serve
//! the chosen row's next step.

use deal_heads::Candidate;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::batch::cut_at_stop;
use crate::config::SearchConfig;
use crate::controller::{Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::{best, candidates};

/// See the module documentation.
pub struct Args;

impl Build for Args {
    const NAME: &'static str = "args";
    const DESCRIPTION: &'static str = "ARGS: top-k tokens scored by log P + w·h(prefix+token), greedy or sampled";
    const NEEDS_REWARD: bool = true;
    const PARAMS: &'static [&'static str] = &["k", "lambda", "temperature", "top_p", "seed"];

    fn rows(cfg: &SearchConfig) -> (usize, &'static str) {
        (cfg.k, "k")
    }

    fn search(cfg: &SearchConfig, s: &mut Session<'_>) -> Result<Final> {
        let reward = s.require_reward(Self::NAME)?;
        let mut rng = StdRng::seed_from_u64(cfg.seed);
        while !s.batch.rows[0].is_done() {
            let cands = candidates(s.batch.rows[0].next_dist()?, cfg.k, cfg.top_p);
            let values = if reward.needs_hidden() {
                s.batch.select(&vec![0; cands.len()])?;
                for (r, &(t, _)) in cands.iter().enumerate() {
                    s.batch.push(r, t)?;
                }
                s.batch.forward()?;
                let rows: Vec<usize> = (0..cands.len()).collect();
                s.values(reward, &rows)?
            } else {
                let texts = cands.iter().map(|&(t, _)| Self::extension(cfg, s, t)).collect::<Result<Vec<_>>>()?;
                s.batch.stats.candidates_scored += texts.len();
                reward.values(&texts)?
            };
            let scores: Vec<f64> = cands.iter().zip(&values).map(|(&(_, lp), v)| lp + cfg.lambda * v).collect();
            let pick = if cfg.temperature > 0.0 { draw(&scores, cfg.temperature as f64, &mut rng) } else { best(&scores).unwrap_or(0) };
            if reward.needs_hidden() {
                s.batch.select(&[pick])?;
            } else if s.batch.push(0, cands[pick].0)? {
                s.batch.forward()?;
            }
            s.commit(0)?;
        }
        Ok(Final { row: 0 })
    }
}


impl Args {
    /// The response of row 0 extended by `token`, as a candidate (ended if `token` ends it).
    fn extension(cfg: &SearchConfig, s: &Session<'_>, token: u32) -> Result<Candidate> {
        let codec = s.batch.backend().codec();
        let row = &s.batch.rows[0];
        let eog = codec.is_eog(token);
        let mut tokens = row.tokens.clone();
        if !eog {
            tokens.push(token);
        }
        let (text, stopped) = cut_at_stop(codec.decode(&tokens, true)?, &cfg.stop);
        let ended = eog || stopped || tokens.len() >= cfg.max_tokens;
        Ok(Candidate::new(s.prompt, text).partial(!ended).with_tokens(tokens))
    }
}

/// Sample an index from softmax(scores / temperature).
fn draw(scores: &[f64], temperature: f64, rng: &mut StdRng) -> usize {
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = scores.iter().map(|s| ((s - max) / temperature).exp()).collect();
    let total: f64 = w.iter().sum();
    let u: f64 = rng.gen::<f64>() * total;
    let mut acc = 0.0;
    for (i, x) in w.iter().enumerate() {
        acc += x;
        if u < acc {
            return i;
        }
    }
    w.len() - 1
}
