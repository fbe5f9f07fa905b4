//! [`SearchConfig`]: one typed config for every controller, validated at the edge.
//!
//! Every controller reads the fields it needs (the letters are the papers'): `k` candidates
//! per beam, `beams` b, `lookahead` l and `lambda` λ (DeAL; λ is ARGS's w too), `n` samples
//! (best-of-N, early pruning), `blocks` K of `block_len` M tokens (blockwise), plus the
//! shared `max_tokens`, `stop`, `temperature`, `top_p` and `seed`. [`SearchConfig::validate`]
//! checks ranges common to all; each controller checks what only it needs when it is built.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::{ControlError, Result};

/// How many tokens DeAL commits per step. In JSON, `{"mode": "lead", "margin": 2}`, or the
/// mode alone for the rules whose fields all have defaults (`"token"`, `"pipeline"`).
///
/// The default is `pipeline` with its automatic row budget: the paper rule's choices, fewer
/// passes (it runs as `token` where it cannot pipeline: a remote engine, a head that reads
/// hidden states).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "lowercase", remote = "Commit")]
pub enum Commit {
    /// One token per step (the paper): the beams grow by one token, lookaheads are undone.
    Token,
    /// Like `Token`, but when the best candidate's score leads the runner-up's by at least
    /// `margin` (log-probability units plus λ·reward), the search commits to it: its
    /// lookahead (the tokens already in the cache) is accepted and the other beams are
    /// dropped, saving up to l steps. With `min_prob` > 0 only the lookahead's leading tokens
    /// the model chose with at least that probability are accepted: the search then branches
    /// again at the first uncertain token instead of skipping past it.
    Lead {
        /// Lead of the best candidate's score over the runner-up's at which the search
        /// commits (log-probability units plus λ·reward); finite and >= 0.
        margin: f64,
        /// Lookahead tokens are accepted while each had at least this probability, in [0, 1]
        /// (0 = accept the whole lookahead).
        #[serde(default)]
        min_prob: f64,
    },
    /// The paper's rule (the same choices as `Token`), pipelined: the most likely
    /// candidate's lookahead is reused as the next steps' (a beam's greedy *spine*), and the
    /// next steps' other candidates are rolled out speculatively in the same passes, on the
    /// guess that the spine's token wins. About one pass per committed token while the
    /// guesses hold, at the price of wider passes. See `controllers/src/pipeline.rs`.
    Pipeline {
        /// Most rows in a pass (at least 1 + k·beams; at most [`MAX_ROWS`]): 1 + b·(1 +
        /// (k−1)·l) keeps l steps in flight, fewer trade passes for narrower ones. Unset:
        /// [`auto_pipeline_rows`] (l steps in flight, up to [`AUTO_PIPELINE_ROWS_MAX`]).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rows: Option<usize>,
    },
}

impl Default for Commit {
    fn default() -> Self {
        Commit::Pipeline { rows: None }
    }
}

impl Serialize for Commit {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        Commit::serialize(self, s)
    }
}

impl<'de> Deserialize<'de> for Commit {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        // the mode alone ("pipeline") stands for {"mode": "pipeline"}
        let v = serde_json::Value::deserialize(d)?;
        let v = match v {
            serde_json::Value::String(mode) => serde_json::json!({ "mode": mode }),
            v => v,
        };
        Commit::deserialize(v).map_err(serde::de::Error::custom)
    }
}

/// Widest row budget [`Commit::Pipeline`] picks by itself. Rows that wait for a decision
/// cost nothing (the engine leaves rows without a token out of a pass), and on this 2-core
/// CPU a pass of r fed rows costs about 0.85 + 0.1·r single-row passes up to ~16
/// (`deal bench decode`): fewer, wider passes win up to there (`deal bench search`,
/// docs/controllers.md).
pub const AUTO_PIPELINE_ROWS_MAX: usize = 16;

/// The row budget of [`Commit::Pipeline`] without `rows`: the anchor plus every beam's spine
/// and (k−1)·l speculative candidates (l steps in flight: about one pass per committed token
/// while the guesses hold), at most [`AUTO_PIPELINE_ROWS_MAX`].
pub fn auto_pipeline_rows(k: usize, beams: usize, lookahead: usize) -> usize {
    let in_flight = 1 + beams.saturating_mul(1 + k.saturating_sub(1).saturating_mul(lookahead));
    in_flight.min(AUTO_PIPELINE_ROWS_MAX)
}

/// The default λ: how many nats of log-probability a head's whole [0, 1] range is worth
/// at weight 1. Chosen with `deal bench steer` on the default model (docs/alignment.md):
/// at 12 a keywords weight of 1 raises hard coverage from 0.05 (greedy) to 0.75 and a
/// sentiment weight of 1 the mean VADER compound from 0.35 to 0.91, with the texts'
/// perplexity under the model ×1.13 and ×0.94 greedy's; λ = 1 (the old default) moved
/// coverage only to 0.15.
pub const DEFAULT_LAMBDA: f64 = 12.0;

/// What the size of a weight means, for help texts and `GET /v1/heads`.
pub const WEIGHT_MEANING: &str = "Each head scores a text in [0, 1]. DeAL ranks candidates by log P + λ·Σ weight·score \
(ARGS adds λ·Σ weight·score to the top-k logits; best-of-N, blockwise and early pruning rank by Σ weight·score alone). \
With the default λ = 12, a weight of 1 makes a head's whole range worth 12 nats of log-probability: enough to pick a \
far less likely continuation that satisfies it, while fluent text still wins among those that do. Weights are relative \
(2 steers twice as hard as 1, negative asks for less); params.lambda scales them all.";

/// DeAL's default candidates per beam (k), beams (b) and lookahead (l): the fast end of the
/// measured frontier. With the pipelined commit rule (the default) they cost 2.6-3x greedy's
/// time per token on the default model and raise keyword hard coverage from 0.05 to 0.80
/// (`deal bench search --prompts 20 --max-tokens 16`, docs/controllers.md); the former
/// defaults (k=4, b=2, l=4) cost 7.0-7.7x for 0.75: a second beam and a longer lookahead buy
/// little on these prompts and cost every pass more rows.
pub const DEFAULT_K: usize = 5;
/// See [`DEFAULT_K`].
pub const DEFAULT_BEAMS: usize = 1;
/// See [`DEFAULT_K`].
pub const DEFAULT_LOOKAHEAD: usize = 2;

/// Settings of one search. `Default` gives a small, fast search (k=[`DEFAULT_K`],
/// b=[`DEFAULT_BEAMS`], l=[`DEFAULT_LOOKAHEAD`], λ=[`DEFAULT_LAMBDA`], the pipelined commit
/// rule).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchConfig {
    /// Most tokens in the response.
    pub max_tokens: usize,
    /// The response ends before any of these strings.
    pub stop: Vec<String>,
    /// Seed of every random draw (same seed → same output).
    pub seed: u64,
    /// Sampling temperature of `sample`, `blockwise`, `best_of_n`, `early_prune`; ARGS samples
    /// from softmax(score / temperature) when > 0 and is greedy at 0.
    pub temperature: f32,
    /// Nucleus filter (1 = off) on sampled tokens and on DeAL/ARGS candidates.
    pub top_p: f32,
    /// k: candidate tokens per beam (DeAL) or per step (ARGS).
    pub k: usize,
    /// b: beams kept by DeAL.
    pub beams: usize,
    /// l: greedy lookahead tokens rolled out per DeAL candidate (at most [`MAX_LOOKAHEAD`];
    /// a rollout stops early where every row has ended).
    pub lookahead: usize,
    /// λ (DeAL) / w (ARGS): weight of the reward against log-probability / logits.
    pub lambda: f64,
    /// DeAL's commit rule.
    pub commit: Commit,
    /// N: samples of `best_of_n` and `early_prune`.
    pub n: usize,
    /// K: blocks sampled per round by `blockwise`.
    pub blocks: usize,
    /// M: tokens per block of `blockwise`.
    pub block_len: usize,
    /// `early_prune`: tokens between checkpoints.
    pub prune_every: usize,
    /// `early_prune`: fraction of the rows dropped at each checkpoint, in [0, 1).
    pub prune_fraction: f64,
    /// OpenAI's `frequency_penalty`, in [-2, 2]: subtracted from a token's logit once per
    /// time the row has generated it (see [`crate::logits`]).
    pub frequency_penalty: f32,
    /// OpenAI's `presence_penalty`, in [-2, 2]: subtracted from the logit of every token
    /// the row has generated.
    pub presence_penalty: f32,
    /// OpenAI's `logit_bias`: token id → value in [-100, 100] added to its logit (-100
    /// bans it; `-inf` too).
    pub logit_bias: BTreeMap<u32, f32>,
}

impl Default for SearchConfig {
    fn default() -> Self {
        Self {
            max_tokens: 64,
            stop: Vec::new(),
            seed: 0,
            temperature: 0.7,
            top_p: 1.0,
            k: DEFAULT_K,
            beams: DEFAULT_BEAMS,
            lookahead: DEFAULT_LOOKAHEAD,
            lambda: DEFAULT_LAMBDA,
            commit: Commit::default(),
            n: 8,
            blocks: 4,
            block_len: 4,
            prune_every: 8,
            prune_fraction: 0.5,
            frequency_penalty: 0.0,
            presence_penalty: 0.0,
            logit_bias: BTreeMap::new(),
        }
    }
}

/// Largest number of rows a config may ask for in one batch (`k * beams`, `n`, `blocks`).
pub const MAX_ROWS: usize = 256;
/// Largest `lookahead` (a lookahead past `max_tokens` stops where the response does).
pub const MAX_LOOKAHEAD: usize = 64;
/// Largest `block_len`.
pub const MAX_BLOCK_LEN: usize = 256;

impl SearchConfig {
    /// Parse from JSON (unknown fields are errors that name them).
    pub fn from_json(text: &str) -> Result<Self> {
        let cfg: Self = serde_json::from_str(text).map_err(|e| ControlError::config("(json)", e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Check every field's range; the error names the field and what is accepted.
    pub fn validate(&self) -> Result<()> {
        let at_least_1 = |field: &'static str, v: usize| {
            if v == 0 {
                Err(ControlError::config(field, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        at_least_1("max_tokens", self.max_tokens)?;
        at_least_1("k", self.k)?;
        at_least_1("beams", self.beams)?;
        at_least_1("n", self.n)?;
        at_least_1("blocks", self.blocks)?;
        at_least_1("block_len", self.block_len)?;
        at_least_1("prune_every", self.prune_every)?;
        for (field, rows) in [("k * beams", self.k.saturating_mul(self.beams)), ("n", self.n), ("blocks", self.blocks)] {
            if rows > MAX_ROWS {
                return Err(ControlError::config(field, format!("asks for {rows} rows; at most {MAX_ROWS}")));
            }
        }
        if self.lookahead > MAX_LOOKAHEAD {
            return Err(ControlError::config("lookahead", format!("is {}; at most {MAX_LOOKAHEAD}", self.lookahead)));
        }
        if self.block_len > MAX_BLOCK_LEN {
            return Err(ControlError::config("block_len", format!("is {}; at most {MAX_BLOCK_LEN}", self.block_len)));
        }
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(ControlError::config("temperature", format!("must be a finite number >= 0, got {}", self.temperature)));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(ControlError::config("top_p", format!("must be in (0, 1], got {}", self.top_p)));
        }
        if !self.lambda.is_finite() {
            return Err(ControlError::config("lambda", format!("must be a finite number, got {}", self.lambda)));
        }
        if !(0.0..1.0).contains(&self.prune_fraction) {
            return Err(ControlError::config("prune_fraction", format!("must be in [0, 1), got {}", self.prune_fraction)));
        }
        for (field, v) in [("frequency_penalty", self.frequency_penalty), ("presence_penalty", self.presence_penalty)] {
            if !(-2.0..=2.0).contains(&v) {
                return Err(ControlError::config(field, format!("must be in [-2, 2], got {v}")));
            }
        }
        if let Some((t, b)) = self.logit_bias.iter().find(|(_, &b)| !(b == f32::NEG_INFINITY || (-100.0..=100.0).contains(&b))) {
            return Err(ControlError::config("logit_bias", format!("token {t}: the bias must be in [-100, 100], got {b}")));
        }
        if let Commit::Lead { margin, min_prob } = self.commit {
            if !(margin.is_finite() && margin >= 0.0) {
                return Err(ControlError::config("commit.margin", format!("must be a finite number >= 0, got {margin}")));
            }
            if !(0.0..=1.0).contains(&min_prob) {
                return Err(ControlError::config("commit.min_prob", format!("must be in [0, 1], got {min_prob}")));
            }
        }
        if let Commit::Pipeline { rows: Some(rows) } = self.commit {
            if !(1..=MAX_ROWS).contains(&rows) {
                return Err(ControlError::config("commit.rows", format!("must be in [1, {MAX_ROWS}], got {rows}")));
            }
        }
        Ok(())
    }

    /// For controllers that sample: the temperature must be > 0.
    pub(crate) fn require_sampling(&self, controller: &str) -> Result<()> {
        if self.temperature <= 0.0 {
            return Err(ControlError::config("temperature", format!("must be > 0 for `{controller}` (it samples)")));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_commit_rule_reads_as_its_mode_alone_or_in_full() {
        let cfg = SearchConfig::from_json(r#"{"commit": "pipeline"}"#).unwrap();
        assert_eq!(cfg.commit, Commit::Pipeline { rows: None });
        let cfg = SearchConfig::from_json(r#"{"commit": {"mode": "lead", "margin": 2}}"#).unwrap();
        assert_eq!(cfg.commit, Commit::Lead { margin: 2.0, min_prob: 0.0 });
        let e = SearchConfig::from_json(r#"{"commit": "lead"}"#).unwrap_err().to_string();
        assert!(e.contains("margin"), "{e}");
        assert!(SearchConfig::from_json(r#"{"commit": "fast"}"#).is_err());
        // written in full, so it reads back the same
        let v = serde_json::to_value(Commit::Pipeline { rows: Some(11) }).unwrap();
        assert_eq!(v, serde_json::json!({"mode": "pipeline", "rows": 11}));
        assert_eq!(serde_json::from_value::<Commit>(v).unwrap(), Commit::Pipeline { rows: Some(11) });
        let v = serde_json::to_value(Commit::Pipeline { rows: None }).unwrap();
        assert_eq!(v, serde_json::json!({"mode": "pipeline"}));
        assert_eq!(serde_json::from_value::<Commit>(v).unwrap(), Commit::Pipeline { rows: None });
    }
}
