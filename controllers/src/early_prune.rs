//! `early_prune`: best-of-N with early rejection (speculative rejection, Sun et al., "Fast
//! Best-of-N Decoding via Speculative Rejection", 2024).
//!
//! N rows are sampled in one batch; every `prune_every` tokens the rows are scored by h on
//! their partial text and the lowest-scoring `prune_fraction` of them is dropped (at least
//! one row survives), so later passes run fewer rows. The best final text by h wins.

use deal_backend::sampling::Sampler;

use crate::config::SearchConfig;
use crate::controller::{Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::{best, order_desc, sample_rows, sampling};

/// See the module documentation.
pub struct EarlyPrune;

impl Build for EarlyPrune {
    const NAME: &'static str = "early_prune";
    const DESCRIPTION: &'static str = "speculative rejection: N samples, drop the worst fraction by partial h at checkpoints";
    const NEEDS_REWARD: bool = true;
    const PARAMS: &'static [&'static str] = &["n", "prune_every", "prune_fraction", "temperature", "top_p", "seed"];

    fn check(cfg: &SearchConfig) -> Result<()> {
        cfg.require_sampling(Self::NAME)?;
        Ok(())
    }

    fn rows(cfg: &SearchConfig) -> (usize, &'static str) {
        (cfg.n, "n")
    }

    fn search(cfg: &SearchConfig, s: &mut Session<'_>) -> Result<Final> {
        let reward = s.require_reward(Self::NAME)?;
        let mut sampler = Sampler::new(sampling(cfg))?;
        s.batch.select(&vec![0; cfg.n])?;
        let mut step = 0;
        loop {
            sample_rows(s, &mut sampler)?;
            if s.batch.all_done() {
                break;
            }
            s.batch.forward()?;
            step += 1;
            let rows = s.batch.len();
            let keep = ((rows as f64 * (1.0 - cfg.prune_fraction)).ceil() as usize).clamp(1, rows);
            if step % cfg.prune_every == 0 && keep < rows {
                let all: Vec<usize> = (0..rows).collect();
                let values = s.values(reward, &all)?;
                let mut kept: Vec<usize> = order_desc(&values).into_iter().take(keep).collect();
                kept.sort_unstable();
                s.batch.select(&kept)?;
            }
        }
        let rows: Vec<usize> = (0..s.batch.len()).collect();
        let values = s.values(reward, &rows)?;
        Ok(Final { row: best(&values).unwrap_or(0) })
    }
}

