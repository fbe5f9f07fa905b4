//! `keywords`: coverage of required words, matching inflections.

use std::collections::HashSet;
use std::sync::Arc;

use serde::Deserialize;

use super::text::{lemma, lemmas, words};
use super::{bad_param, Candidate, Details, HeadContext, ParamInfo, RewardHead, Scale};
use crate::Result;

/// Params of the [`Keywords`] head.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Required words or phrases, case-insensitive (at least one).
    pub words: Vec<String>,
    /// Which coverage is the score (default [`Mode::Soft`]).
    #[serde(default)]
    pub mode: Mode,
    /// Match inflected forms (lemma table + Snowball stemmer); default `true`.
    #[serde(default = "yes")]
    pub inflections: bool,
}

fn yes() -> bool {
    true
}

/// Which coverage is the score.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Fraction of required words present.
    #[default]
    Soft,
    /// 1 if every required word is present, else 0.
    Hard,
}

/// See the module documentation.
pub struct Keywords {
    /// Each required entry as a sequence of keys (one key per word; phrases have several).
    required: Vec<Vec<String>>,
    mode: Mode,
    inflections: bool,
}

impl Keywords {
    fn keys(&self, text: &str) -> Vec<String> {
        if self.inflections {
            lemmas(text)
        } else {
            words(text).map(str::to_lowercase).collect()
        }
    }

    fn covered(&self, text: &str) -> usize {
        let keys = self.keys(text);
        let set: HashSet<&str> = keys.iter().map(String::as_str).collect();
        self.required
            .iter()
            .filter(|req| match req.len() {
                1 => set.contains(req[0].as_str()),
                n => keys.windows(n).any(|w| w.iter().zip(req.iter()).all(|(a, b)| a == b)),
            })
            .count()
    }
}

impl RewardHead for Keywords {
    const NAME: &'static str = "keywords";
    const DESCRIPTION: &'static str =
        "coverage of required words or phrases, inflections matched (dog/dogs, run/ran); higher = more covered";
    const PARAMS: &'static [ParamInfo] = &[
        ParamInfo { name: "words", ty: "string[]", default: "required", doc: "required words or phrases (case-insensitive)" },
        ParamInfo { name: "mode", ty: "\"soft\"|\"hard\"", default: "soft", doc: "soft: fraction covered; hard: 1 only if all are covered" },
        ParamInfo { name: "inflections", ty: "bool", default: "true", doc: "match inflected forms (lemma table + Snowball stemmer)" },
    ];
    const EXAMPLE: &'static str = r#"{"words": ["dog", "park"], "mode": "soft", "inflections": true}"#;
    type Params = Params;

    fn build(p: Params, _ctx: &Arc<HeadContext>) -> Result<Self> {
        if p.words.is_empty() {
            return Err(bad_param(Self::NAME, "`words` must list at least one word"));
        }
        let mut required = Vec::new();
        for w in &p.words {
            let key: Vec<String> = if p.inflections { words(w).map(lemma).collect() } else { words(w).map(str::to_lowercase).collect() };
            if key.is_empty() {
                return Err(bad_param(Self::NAME, format!("`{w}` has no letters or digits to match")));
            }
            required.push(key);
        }
        Ok(Self { required, mode: p.mode, inflections: p.inflections })
    }

    fn scale(&self) -> Scale {
        Scale::UNIT
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        Ok(self.score_with_details(cands)?.into_iter().map(|(s, _)| s).collect())
    }

    fn score_with_details(&self, cands: &[Candidate]) -> Result<Vec<(f32, Details)>> {
        let total = self.required.len();
        Ok(cands
            .iter()
            .map(|c| {
                let covered = self.covered(&c.response);
                let soft = covered as f32 / total as f32;
                let hard = if covered == total { 1.0 } else { 0.0 };
                let score = match self.mode {
                    Mode::Soft => soft,
                    Mode::Hard => hard,
                };
                (score, vec![("covered", covered as f32), ("total", total as f32), ("soft", soft), ("hard", hard)])
            })
            .collect())
    }
}
