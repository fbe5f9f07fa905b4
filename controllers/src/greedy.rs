//! `greedy`: the most likely token at every step; the baseline every search is measured
//! against, run through the same batch path as the searches.

use deal_runtime::sampling::argmax;

use crate::config::SearchConfig;
use crate::controller::{Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::decode_single;

/// See the module documentation.
pub struct Greedy;

impl Build for Greedy {
    const NAME: &'static str = "greedy";
    const DESCRIPTION: &'static str = "most likely token each step (baseline)";
    const NEEDS_REWARD: bool = false;

    fn search(_cfg: &SearchConfig, s: &mut Session<'_>) -> Result<Final> {
        decode_single(s, |logits| Ok(argmax(logits)))?;
        Ok(Final { row: 0 })
    }
}

