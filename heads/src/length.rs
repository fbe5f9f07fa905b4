//! `length`: closeness to a target length; partial candidates are only penalised for
//! overshooting.

use std::sync::Arc;

use serde::Deserialize;

use super::text::words;
use super::{bad_param, Candidate, Details, HeadContext, ParamInfo, RewardHead, Scale};
use deal_backend::Backend;

use crate::Result;

/// Params of the [`Length`] head.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Target length in `unit`s (> 0).
    pub target: f64,
    /// What is counted (default [`Unit::Words`]).
    #[serde(default)]
    pub unit: Unit,
    /// Distance from the target at which the score reaches 0 (> 0; default `target`).
    pub tolerance: Option<f64>,
}

/// What is counted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// Words: runs of letters and digits, inner apostrophes kept.
    #[default]
    Words,
    /// Policy tokens ([`Candidate::tokens`], or the policy's tokenizer when absent).
    Tokens,
    /// Unicode characters.
    Chars,
}

/// See the module documentation.
pub struct Length {
    target: f64,
    unit: Unit,
    tolerance: f64,
    policy: Option<Arc<dyn Backend>>,
}

impl Length {
    fn count(&self, c: &Candidate) -> Result<usize> {
        Ok(match self.unit {
            Unit::Words => words(&c.response).count(),
            Unit::Chars => c.response.chars().count(),
            Unit::Tokens => {
                if !c.tokens.is_empty() || c.response.is_empty() {
                    c.tokens.len()
                } else {
                    let e = self.policy.as_ref().ok_or_else(|| {
                        bad_param(Self::NAME, "unit `tokens` needs the candidates' token ids or a loaded policy to count them")
                    })?;
                    e.codec().encode(&c.response, false)?.len()
                }
            }
        })
    }
}

impl RewardHead for Length {
    const NAME: &'static str = "length";
    const DESCRIPTION: &'static str =
        "closeness to a target length (1 at the target, 0 at target ± tolerance); partial responses only lose for overshooting";
    const PARAMS: &'static [ParamInfo] = &[
        ParamInfo { name: "target", ty: "number", default: "required", doc: "target length (> 0)" },
        ParamInfo { name: "unit", ty: "\"words\"|\"tokens\"|\"chars\"", default: "words", doc: "what is counted" },
        ParamInfo { name: "tolerance", ty: "number", default: "target", doc: "distance from the target at which the score reaches 0" },
    ];
    const EXAMPLE: &'static str = r#"{"target": 30, "unit": "words", "tolerance": 15}"#;
    type Params = Params;

    fn build(p: Params, ctx: &Arc<HeadContext>) -> Result<Self> {
        if !(p.target.is_finite() && p.target > 0.0) {
            return Err(bad_param(Self::NAME, format!("`target` must be a number > 0, got {}", p.target)));
        }
        let tolerance = p.tolerance.unwrap_or(p.target);
        if !(tolerance.is_finite() && tolerance > 0.0) {
            return Err(bad_param(Self::NAME, format!("`tolerance` must be a number > 0, got {tolerance}")));
        }
        Ok(Self { target: p.target, unit: p.unit, tolerance, policy: ctx.policy().cloned() })
    }

    fn scale(&self) -> Scale {
        Scale::UNIT
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        Ok(self.score_with_details(cands)?.into_iter().map(|(s, _)| s).collect())
    }

    fn score_with_details(&self, cands: &[Candidate]) -> Result<Vec<(f32, Details)>> {
        cands
            .iter()
            .map(|c| {
                let n = self.count(c)? as f64;
                let over = n - self.target;
                let dist = if c.partial { over.max(0.0) } else { over.abs() };
                let s = (1.0 - dist / self.tolerance).max(0.0);
                Ok((s as f32, vec![("length", n as f32)]))
            })
            .collect()
    }
}
