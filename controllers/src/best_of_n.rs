//! `best_of_n`: N samples as N rows of one batch (the prompt shared, not copied), the best
//! final text by h wins. Nothing is streamed until the end.

use deal_backend::sampling::Sampler;

use crate::config::SearchConfig;
use crate::controller::{Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::{best, sample_rows, sampling};

/// See the module documentation.
pub struct BestOfN;

impl Build for BestOfN {
    const NAME: &'static str = "best_of_n";
    const DESCRIPTION: &'static str = "N samples in one batch, the best final text by h";
    const NEEDS_REWARD: bool = true;
    const PARAMS: &'static [&'static str] = &["n", "temperature", "top_p", "seed"];

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
        loop {
            sample_rows(s, &mut sampler)?;
            if s.batch.all_done() {
                break;
            }
            s.batch.forward()?;
        }
        let rows: Vec<usize> = (0..s.batch.len()).collect();
        let values = s.values(reward, &rows)?;
        Ok(Final { row: best(&values).unwrap_or(0) })
    }
}

