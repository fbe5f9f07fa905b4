//! Per-request weight vectors over reward heads ([`crate::heads`]).
//!
//! A request brings a [`RewardSpec`] (JSON via serde, or `sentiment=1 length=0.5` from a
//! REPL); [`RewardSpec::build`] validates it at the edge into a typed [`WeightedReward`]:
//! unknown head, unknown or ill-typed param, non-finite weight, floor outside [0, 1] are
//! [`RewardError`]s that name the problem and list the valid choices. The search then calls
//! [`WeightedReward::score`] on batches of candidates and gets one [`Breakdown`] each.
//!
//! Scores are combined on the normalised scale every head reports (see [`crate::Scale`]):
//!
//! - `linear` (default): total = Σ wᵢ·sᵢ.
//! - `logsigmoid`: total = Σ |wᵢ|·log σ(±(sᵢ − refᵢ)/τ) (sign of wᵢ; refᵢ default 0.5, τ default
//!   0.1): a candidate must be good in every objective, after Wang et al., "Transforming and
//!   Combining Rewards for Aligning Large Language Models" (2024).
//! - floors (`min`): a candidate whose normalised score is below a floor ranks below every
//!   candidate that meets all floors (MAP-style targets); among those that miss, a smaller
//!   total shortfall ranks first. [`Breakdown::value`] encodes this order as one number.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::{Candidate, DynHead, HeadContext, Registry, Scale};
use crate::{Error, Result};

/// Default reference point of `logsigmoid` on the normalised scale.
pub const DEFAULT_REF: f64 = 0.5;
/// Default temperature τ of `logsigmoid`.
pub const DEFAULT_TEMPERATURE: f64 = 0.1;

/// Problems with a reward specification or a head.
#[derive(Debug, thiserror::Error)]
pub enum RewardError {
    /// A head name that no registered head has.
    #[error("unknown reward head `{name}` (available: {})", .valid.join(", "))]
    UnknownHead {
        /// The head name that was asked for.
        name: String,
        /// Names of the registered heads.
        valid: Vec<String>,
    },
    /// A param key the head does not declare.
    #[error("head `{head}` has no parameter `{param}` (valid: {})", if .valid.is_empty() { "none".to_string() } else { .valid.join(", ") })]
    UnknownParam {
        /// The head the param was given to.
        head: String,
        /// The param name the head does not declare.
        param: String,
        /// The params the head declares.
        valid: Vec<String>,
    },
    /// A head's params are invalid, or the head cannot run as configured (no policy loaded,
    /// reward server unreachable, ...).
    #[error("head `{head}`: {message}")]
    BadParam {
        /// The head concerned.
        head: String,
        /// What is wrong, in words.
        message: String,
    },
    /// A weight that is not a finite number.
    #[error("weight of `{head}` is {value}; weights must be finite numbers (negative = less of it)")]
    BadWeight {
        /// The head the weight belongs to.
        head: String,
        /// The weight given (NaN or infinite).
        value: f64,
    },
    /// A floor (`min`) or `logsigmoid` reference point (`ref`) outside [0, 1].
    #[error("`{field}.{head}` is {value}; {field} values are normalised scores in [0, 1]")]
    BadLevel {
        /// Which map it came from: `"min"` or `"ref"`.
        field: &'static str,
        /// The head it was given for.
        head: String,
        /// The value given.
        value: f64,
    },
    /// A `logsigmoid` temperature (the value given) that is not a finite number > 0.
    #[error("`temperature` is {0}; it must be a finite number > 0")]
    BadTemperature(f64),
    /// A search needs a heuristic, but every head's weight is zero.
    #[error("the search needs a heuristic but no head has a non-zero weight (heads: {})", .valid.join(", "))]
    NoHeuristic {
        /// Names of the registered heads.
        valid: Vec<String>,
    },
    /// A spec that does not parse (bad JSON, unknown field, malformed `name=weight` pair).
    #[error("reward spec: {0}")]
    Spec(String),
    /// A head failed while scoring or loading its models.
    #[error("head `{head}`: {source}")]
    Head {
        /// The head that failed.
        head: String,
        /// The underlying error.
        source: Box<Error>,
    },
    /// A head returned a different number of scores than it was given candidates.
    #[error("head `{head}` returned {got} scores for {want} candidates")]
    WrongCount {
        /// The head at fault.
        head: String,
        /// Number of scores returned.
        got: usize,
        /// Number of candidates given.
        want: usize,
    },
    /// A head returned a NaN or infinite raw score.
    #[error("head `{head}` returned a non-finite score ({value}) for candidate {index}")]
    NotFinite {
        /// The head at fault.
        head: String,
        /// The score returned (NaN or infinite).
        value: f32,
        /// Index of the candidate in the batch.
        index: usize,
    },
}

/// How weighted head scores are combined.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Combine {
    /// Σ wᵢ·sᵢ.
    #[default]
    Linear,
    /// Σ |wᵢ|·log σ(±(sᵢ − refᵢ)/τ).
    Logsigmoid,
}

/// A request's reward specification, as it arrives (JSON). Validate with
/// [`RewardSpec::build`].
///
/// ```json
/// {"weights": {"sentiment": 1.0, "length": 0.5},
///  "heads": {"keywords": {"words": ["dog", "park"]}, "length": {"target": 30}},
///  "combine": "linear", "min": {"keywords": 1.0}}
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RewardSpec {
    /// Weight per head; negative means "less of this".
    pub weights: BTreeMap<String, f64>,
    /// Params per head (a head listed here or in `min` without a weight is scored with
    /// weight 0: reported, and its floor enforced).
    pub heads: BTreeMap<String, serde_json::Value>,
    /// How weighted head scores are combined (default `linear`).
    pub combine: Combine,
    /// Floors on normalised scores in [0, 1].
    pub min: BTreeMap<String, f64>,
    /// `logsigmoid` reference points per head, normalised, default 0.5.
    #[serde(rename = "ref")]
    pub reference: BTreeMap<String, f64>,
    /// `logsigmoid` temperature τ, default 0.1.
    pub temperature: Option<f64>,
}

impl RewardSpec {
    /// Parse from JSON text. Unknown fields are errors that list the valid ones.
    pub fn from_json(text: &str) -> Result<Self> {
        serde_json::from_str(text).map_err(|e| RewardError::Spec(e.to_string()).into())
    }

    /// Parse from a JSON value.
    pub fn from_value(v: serde_json::Value) -> Result<Self> {
        serde_json::from_value(v).map_err(|e| RewardError::Spec(e.to_string()).into())
    }

    /// Set weights from `name=value` pairs separated by spaces or commas
    /// (`"sentiment=1 length=0.5"`, as a chat REPL's `/weights` takes them).
    pub fn set_weights_from_args(&mut self, args: &str) -> Result<()> {
        for pair in args.split(|c: char| c.is_whitespace() || c == ',').filter(|s| !s.is_empty()) {
            let (name, value) = pair
                .split_once('=')
                .ok_or_else(|| RewardError::Spec(format!("`{pair}`: expected name=weight, e.g. sentiment=1")))?;
            let value: f64 = value
                .trim()
                .parse()
                .map_err(|_| RewardError::Spec(format!("`{pair}`: weight `{value}` is not a number")))?;
            self.weights.insert(name.trim().to_string(), value);
        }
        Ok(())
    }

    /// Names of every head the spec mentions (weights, params, floors, refs), sorted.
    pub fn head_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self
            .weights
            .keys()
            .chain(self.heads.keys())
            .chain(self.min.keys())
            .chain(self.reference.keys())
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        names
    }

    /// Check what needs no head to be built: head names, weights, floors, refs, and each
    /// head's params against its declared list and types. Semantic param checks (a positive
    /// target, a compilable regex) happen in [`RewardSpec::build`].
    pub fn validate(&self, registry: &Registry) -> Result<()> {
        self.check_numbers(registry)?;
        for name in self.head_names() {
            let kind = registry.get(&name)?;
            kind.check_params(self.heads.get(&name).unwrap_or(&serde_json::Value::Null))?;
        }
        Ok(())
    }

    fn check_numbers(&self, registry: &Registry) -> Result<()> {
        for name in self.head_names() {
            registry.get(&name)?;
        }
        for (head, &value) in &self.weights {
            if !value.is_finite() {
                return Err(RewardError::BadWeight { head: head.clone(), value }.into());
            }
        }
        for (field, map) in [("min", &self.min), ("ref", &self.reference)] {
            for (head, &value) in map {
                if !(0.0..=1.0).contains(&value) {
                    return Err(RewardError::BadLevel { field, head: head.clone(), value }.into());
                }
            }
        }
        if let Some(t) = self.temperature {
            if !(t.is_finite() && t > 0.0) {
                return Err(RewardError::BadTemperature(t).into());
            }
        }
        Ok(())
    }

    /// Validate and build with the heads of `registry`.
    pub fn build(&self, registry: &Registry, ctx: &Arc<HeadContext>) -> Result<WeightedReward> {
        self.check_numbers(registry)?;
        let mut terms = Vec::new();
        for name in self.head_names() {
            let kind = registry.get(&name)?;
            let head = kind.build(self.heads.get(&name).unwrap_or(&serde_json::Value::Null), ctx)?;
            terms.push(Term {
                name: kind.name,
                weight: self.weights.get(&name).copied().unwrap_or(0.0),
                floor: self.min.get(&name).copied(),
                reference: self.reference.get(&name).copied().unwrap_or(DEFAULT_REF),
                scale: head.scale(),
                head,
            });
        }
        Ok(WeightedReward {
            terms,
            combine: self.combine,
            temperature: self.temperature.unwrap_or(DEFAULT_TEMPERATURE),
            registry_names: registry.names().iter().map(|s| s.to_string()).collect(),
        })
    }
}

/// One head of a [`WeightedReward`].
#[derive(Clone)]
pub struct Term {
    /// The head's registered name.
    pub name: &'static str,
    /// The built head.
    pub head: Arc<dyn DynHead>,
    /// Weight of the head; negative means "less of this", 0 = reported (and floored) only.
    pub weight: f64,
    /// Floor on the normalised score.
    pub floor: Option<f64>,
    /// `logsigmoid` reference point (normalised).
    pub reference: f64,
    /// How the head's raw scores map to [0, 1].
    pub scale: Scale,
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term")
            .field("name", &self.name)
            .field("weight", &self.weight)
            .field("floor", &self.floor)
            .field("scale", &self.scale)
            .finish()
    }
}

/// A validated weight vector over built heads.
#[derive(Debug, Clone)]
pub struct WeightedReward {
    terms: Vec<Term>,
    combine: Combine,
    temperature: f64,
    registry_names: Vec<String>,
}

/// One head's part of a [`Breakdown`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeadBreakdown {
    /// The head's name.
    pub head: String,
    /// The head's own units.
    pub raw: f32,
    /// On the common scale [0, 1], higher = more of what the head rewards.
    pub normalized: f32,
    /// The head's weight in the request.
    pub weight: f64,
    /// This head's term in the total.
    pub contribution: f64,
    /// The floor on the normalised score, if the request set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Extra numbers the head reports (e.g. keyword `hard` coverage).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub details: BTreeMap<String, f32>,
}

/// The score of one candidate, per head and combined.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breakdown {
    /// The combined score (Σ of contributions).
    pub total: f64,
    /// Whether every floor is met.
    pub feasible: bool,
    /// Σ over floors of (floor − normalised score) where missed.
    pub shortfall: f64,
    /// Ranking value: `total` when feasible; otherwise below every feasible candidate's
    /// total, ordered by shortfall first.
    pub value: f64,
    /// One part per head of the spec, in name order.
    pub heads: Vec<HeadBreakdown>,
}

impl WeightedReward {
    /// The heads with their weights, floors and scales, in name order.
    pub fn terms(&self) -> &[Term] {
        &self.terms
    }

    /// How weighted head scores are combined.
    pub fn combine(&self) -> Combine {
        self.combine
    }

    /// Whether some head has a non-zero weight.
    pub fn has_heuristic(&self) -> bool {
        self.terms.iter().any(|t| t.weight != 0.0)
    }

    /// Error unless some head has a non-zero weight.
    pub fn require_heuristic(&self) -> Result<()> {
        if self.has_heuristic() {
            Ok(())
        } else {
            Err(RewardError::NoHeuristic { valid: self.registry_names.clone() }.into())
        }
    }

    /// Whether some head reads the policy's hidden state.
    pub fn needs_hidden(&self) -> bool {
        self.terms.iter().any(|t| t.head.reads_hidden())
    }

    /// Load lazily loaded models of every head now.
    pub fn prepare(&self) -> Result<()> {
        for t in &self.terms {
            t.head.prepare().map_err(|e| wrap(t.name, e))?;
        }
        Ok(())
    }

    /// Bound on |total| over all candidates (used to place infeasible candidates).
    fn bound(&self) -> f64 {
        let per = match self.combine {
            Combine::Linear => 1.0,
            // |log σ(x)| ≤ |x| + log 2 and |x| ≤ 1/τ on the unit scale
            Combine::Logsigmoid => 1.0 / self.temperature + std::f64::consts::LN_2,
        };
        1.0 + self.terms.iter().map(|t| t.weight.abs() * per).sum::<f64>()
    }

    fn contribution(&self, t: &Term, s: f64) -> f64 {
        match self.combine {
            Combine::Linear => t.weight * s,
            Combine::Logsigmoid => {
                if t.weight == 0.0 {
                    return 0.0;
                }
                let x = t.weight.signum() * (s - t.reference) / self.temperature;
                t.weight.abs() * log_sigmoid(x)
            }
        }
    }

    /// Score a batch: every head scores all candidates at once.
    pub fn score(&self, cands: &[Candidate]) -> Result<Vec<Breakdown>> {
        let mut per_head = Vec::with_capacity(self.terms.len());
        for t in &self.terms {
            let scores = if cands.is_empty() { Vec::new() } else { t.head.score_with_details(cands).map_err(|e| wrap(t.name, e))? };
            if scores.len() != cands.len() {
                return Err(RewardError::WrongCount { head: t.name.into(), got: scores.len(), want: cands.len() }.into());
            }
            if let Some((index, (value, _))) = scores.iter().enumerate().find(|(_, (v, _))| !v.is_finite()) {
                return Err(RewardError::NotFinite { head: t.name.into(), value: *value, index }.into());
            }
            per_head.push(scores);
        }
        let bound = self.bound();
        let mut out = Vec::with_capacity(cands.len());
        for i in 0..cands.len() {
            let mut heads = Vec::with_capacity(self.terms.len());
            let (mut total, mut shortfall) = (0.0, 0.0);
            for (t, scores) in self.terms.iter().zip(&per_head) {
                let (raw, details) = &scores[i];
                let normalized = t.scale.normalize(*raw);
                let contribution = self.contribution(t, normalized as f64);
                total += contribution;
                if let Some(f) = t.floor {
                    shortfall += (f - normalized as f64).max(0.0);
                }
                heads.push(HeadBreakdown {
                    head: t.name.to_string(),
                    raw: *raw,
                    normalized,
                    weight: t.weight,
                    contribution,
                    min: t.floor,
                    details: details.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
                });
            }
            let feasible = shortfall <= 0.0;
            let value = if feasible { total } else { total - 2.0 * bound * (1.0 + shortfall) };
            out.push(Breakdown { total, feasible, shortfall, value, heads });
        }
        Ok(out)
    }

    /// Ranking values only (see [`Breakdown::value`]).
    pub fn values(&self, cands: &[Candidate]) -> Result<Vec<f64>> {
        Ok(self.score(cands)?.into_iter().map(|b| b.value).collect())
    }
}

/// Indices of `breakdowns`, best first (by [`Breakdown::value`]; ties keep input order).
pub fn rank(breakdowns: &[Breakdown]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..breakdowns.len()).collect();
    idx.sort_by(|&a, &b| breakdowns[b].value.total_cmp(&breakdowns[a].value));
    idx
}

/// log σ(x), stable for large |x|.
pub fn log_sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        -(-x).exp().ln_1p()
    } else {
        x - x.exp().ln_1p()
    }
}

fn wrap(head: &str, e: Error) -> Error {
    match e {
        Error::Reward(_) => e,
        other => RewardError::Head { head: head.into(), source: Box::new(other) }.into(),
    }
}
