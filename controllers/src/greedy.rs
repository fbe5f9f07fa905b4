//! `greedy`: the most likely token at every step; the baseline every search is measured
//! against, run through the same batch path as the searches.

use crate::config::SearchConfig;
use crate::controller::{Final, Session};
use crate::error::Result;
use crate::registry::Build;
use crate::util::decode_single;

/// Tokens a remote engine generates per call when it decodes greedily for us (text streams
/// to the client after each block).
const REMOTE_BLOCK: usize = 64;

/// See the module documentation.
pub struct Greedy;

impl Build for Greedy {
    const NAME: &'static str = "greedy";
    const DESCRIPTION: &'static str = "most likely token each step (baseline)";
    const NEEDS_REWARD: bool = false;

    fn search(_cfg: &SearchConfig, s: &mut Session<'_>) -> Result<Final> {
        if s.batch.cheap_steps() {
            decode_single(s, |dist| Ok(dist.argmax()))?;
        } else {
            // steps are round trips: the engine continues greedily a block at a time
            while s.batch.extend_greedy(REMOTE_BLOCK)? {
                s.commit(0)?;
            }
            s.commit(0)?;
        }
        Ok(Final { row: 0 })
    }
}

