//! `repetition`: repeated n-gram penalty. The raw score is the fraction of the response's
//! n-grams that already occurred earlier in it (0 = no repeats, → 1 for a loop); it
//! normalises as 1 − raw, so higher = less repetitive.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;

use super::text::words;
use super::{bad_param, Candidate, Details, HeadContext, ParamInfo, RewardHead, Scale};
use crate::Result;

/// Params of the [`Repetition`] head.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// N-gram size, in 1..=16 (default 3).
    #[serde(default = "default_n")]
    pub n: usize,
    /// What the n-grams are made of (default [`Unit::Words`]).
    #[serde(default)]
    pub unit: Unit,
}

fn default_n() -> usize {
    3
}

/// What the n-grams are made of.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Lower-cased words.
    #[default]
    Words,
    /// Policy token ids ([`Candidate::tokens`]).
    Tokens,
}

/// See the module documentation.
pub struct Repetition {
    n: usize,
    unit: Unit,
}

/// (repeated n-grams, total n-grams) of a sequence.
pub fn repeated_ngrams<T: std::hash::Hash + Eq>(seq: &[T], n: usize) -> (usize, usize) {
    if seq.len() < n {
        return (0, 0);
    }
    let mut seen = HashSet::with_capacity(seq.len());
    let mut repeated = 0;
    for w in seq.windows(n) {
        if !seen.insert(w) {
            repeated += 1;
        }
    }
    (repeated, seq.len() - n + 1)
}

impl RewardHead for Repetition {
    const NAME: &'static str = "repetition";
    const DESCRIPTION: &'static str =
        "fraction of n-grams repeating an earlier one (loops); normalised 1 − fraction, higher = less repetitive";
    const PARAMS: &'static [ParamInfo] = &[
        ParamInfo { name: "n", ty: "integer", default: "3", doc: "n-gram size (1..=16)" },
        ParamInfo { name: "unit", ty: "\"words\"|\"tokens\"", default: "words", doc: "n-grams of lower-cased words or of policy tokens" },
    ];
    const EXAMPLE: &'static str = r#"{"n": 3, "unit": "words"}"#;
    type Params = Params;

    fn build(p: Params, _ctx: &Arc<HeadContext>) -> Result<Self> {
        if !(1..=16).contains(&p.n) {
            return Err(bad_param(Self::NAME, format!("`n` must be in 1..=16, got {}", p.n)));
        }
        Ok(Self { n: p.n, unit: p.unit })
    }

    fn scale(&self) -> Scale {
        Scale::Range { lo: 1.0, hi: 0.0 }
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        Ok(self.score_with_details(cands)?.into_iter().map(|(s, _)| s).collect())
    }

    fn score_with_details(&self, cands: &[Candidate]) -> Result<Vec<(f32, Details)>> {
        cands
            .iter()
            .map(|c| {
                let (rep, total) = match self.unit {
                    Unit::Words => {
                        let w: Vec<String> = words(&c.response).map(str::to_lowercase).collect();
                        repeated_ngrams(&w, self.n)
                    }
                    Unit::Tokens => {
                        if c.tokens.is_empty() && !c.response.is_empty() {
                            return Err(bad_param(Self::NAME, "unit `tokens` needs the candidates' token ids"));
                        }
                        repeated_ngrams(&c.tokens, self.n)
                    }
                };
                let frac = if total == 0 { 0.0 } else { rep as f32 / total as f32 };
                Ok((frac, vec![("repeated", rep as f32), ("ngrams", total as f32)]))
            })
            .collect()
    }
}
