//! `blockwise`: controlled decoding by blockwise best-of-K (Mudgal et al., "Controlled
//! Decoding from Language Models", 2024).
//!
//! From the current prefix, K blocks of M tokens are sampled as K rows of one batch (the
//! prefix is shared, not copied), the block whose text scores best by h is kept (committed
//! and streamed), and the next round forks from it. One forward pass per block token for
//! all K rows.

use deal_backend::sampling::Sampler;

use crate::config::SearchConfig;
use crate::controller::{Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::{best, sample_rows, sampling};

/// See the module documentation.
pub struct Blockwise;

impl Build for Blockwise {
    const NAME: &'static str = "blockwise";
    const DESCRIPTION: &'static str = "blockwise best-of-K: sample K blocks of M tokens, keep the best by h, repeat";
    const NEEDS_REWARD: bool = true;
    const PARAMS: &'static [&'static str] = &["blocks", "block_len", "temperature", "top_p", "seed"];

    fn check(cfg: &SearchConfig) -> Result<()> {
        cfg.require_sampling(Self::NAME)?;
        Ok(())
    }

    fn rows(cfg: &SearchConfig) -> (usize, &'static str) {
        (cfg.blocks, "blocks")
    }

    fn search(cfg: &SearchConfig, s: &mut Session<'_>) -> Result<Final> {
        let reward = s.require_reward(Self::NAME)?;
        let mut sampler = Sampler::new(sampling(cfg))?;
        while !s.batch.rows[0].is_done() {
            s.batch.select(&vec![0; cfg.blocks])?;
            for _ in 0..cfg.block_len {
                sample_rows(s, &mut sampler)?;
                if s.batch.all_done() {
                    break;
                }
                s.batch.forward()?;
            }
            let rows: Vec<usize> = (0..s.batch.len()).collect();
            let values = s.values(reward, &rows)?;
            s.batch.select(&[best(&values).unwrap_or(0)])?;
            s.commit(0)?;
        }
        Ok(Final { row: 0 })
    }
}

