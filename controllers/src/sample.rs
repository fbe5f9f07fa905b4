//! `sample`: temperature / top-p sampling with a seed; the sampling baseline.

use deal_backend::sampling::Sampler;

use crate::config::SearchConfig;
use crate::controller::{Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::{decode_single, sampling};

/// See the module documentation.
pub struct Sample;

impl Build for Sample {
    const NAME: &'static str = "sample";
    const DESCRIPTION: &'static str = "temperature / top-p sampling, seeded (baseline)";
    const NEEDS_REWARD: bool = false;
    const PARAMS: &'static [&'static str] = &["temperature", "top_p", "seed"];

    fn check(cfg: &SearchConfig) -> Result<()> {
        cfg.require_sampling(Self::NAME)?;
        Ok(())
    }

    fn search(cfg: &SearchConfig, s: &mut Session<'_>) -> Result<Final> {
        let mut sampler = Sampler::new(sampling(cfg))?;
        decode_single(s, |dist| Ok(dist.sample(&mut sampler, &[])?))?;
        Ok(Final { row: 0 })
    }
}

