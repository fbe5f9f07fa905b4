//! `sample`: temperature / top-p sampling with a seed; the sampling baseline.

use deal_runtime::sampling::Sampler;

use crate::config::SearchConfig;
use crate::controller::{Controller, Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::{decode_single, sampling};

/// See the module documentation.
pub struct Sample {
    cfg: SearchConfig,
}

impl Build for Sample {
    const NAME: &'static str = "sample";
    const DESCRIPTION: &'static str = "temperature / top-p sampling, seeded (baseline)";
    const NEEDS_REWARD: bool = false;

    fn build(cfg: SearchConfig) -> Result<Self> {
        cfg.require_sampling(Self::NAME)?;
        Ok(Self { cfg })
    }
}

impl Controller for Sample {
    fn name(&self) -> &'static str {
        Self::NAME
    }

    fn config(&self) -> &SearchConfig {
        &self.cfg
    }

    fn search(&self, s: &mut Session<'_>) -> Result<Final> {
        let mut sampler = Sampler::new(sampling(&self.cfg))?;
        decode_single(s, |logits| Ok(sampler.sample(logits, &[])?))?;
        Ok(Final { row: 0 })
    }
}
