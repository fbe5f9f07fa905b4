//! [`Alignment`]: everything a request says about steering, in one typed value: which
//! controller, its [`SearchConfig`], and the [`RewardSpec`] (weights, head params, floors).
//! The server parses it from the request's `alignment` object and the chat REPL builds it
//! from `/weights` and `/controller`; both validate it here, before any search starts.
//!
//! JSON shape (every field optional):
//!
//! ```json
//! {"controller": "deal",
//!  "weights": {"sentiment": 1.0, "length": 0.5},
//!  "heads": {"length": {"target": 25}},
//!  "params": {"k": 4, "l": 4, "beams": 2, "lambda": 1.0},
//!  "min": {"sentiment": 0.2}, "combine": "linear", "ref": {}, "temperature": 0.1,
//!  "grammar": {"lark": "start: \"yes\" | \"no\""}}
//! ```
//!
//! `grammar` is a hard constraint on the output: `{"lark": ...}`, `{"regex": ...}` or
//! `{"json_schema": {...}}` (OpenAI's `response_format` does the JSON cases too).
//!
//! `params` takes [`SearchConfig`]'s field names plus the papers' letters as aliases
//! (`l` = `lookahead`, `b` = `beams`, `w` = `lambda`, `N` = `n`, `K` = `blocks`,
//! `M` = `block_len`). Without `controller`, `deal` is used when a weight is set.

use deal_controllers::grammar::GrammarSpec;
use deal_controllers::SearchConfig;
use deal_heads::reward::RewardSpec;
use serde_json::{Map, Value};

use crate::Registries;

/// A validated alignment setting.
#[derive(Debug, Clone, PartialEq)]
pub struct Alignment {
    /// Registry name of the controller.
    pub controller: String,
    /// Search settings the controller is built from.
    pub config: SearchConfig,
    /// The reward: head weights, head parameters, floors and how scores combine.
    pub reward: RewardSpec,
    /// A hard constraint on the output (compiled by [`crate::Driver::grammar`]).
    pub grammar: Option<GrammarSpec>,
}

/// What was wrong with an alignment setting: the offending field (dotted path from the
/// `alignment` object) and a message for the user.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct AlignmentError {
    /// Dotted path of the offending field from the request, e.g. `alignment.params.k`.
    pub param: String,
    /// What is wrong with it, written for the user.
    pub message: String,
}

fn bad(param: impl Into<String>, message: impl Into<String>) -> AlignmentError {
    AlignmentError { param: param.into(), message: message.into() }
}

/// The canonical [`SearchConfig`] field for a `params` key (the papers' letters are aliases).
pub fn param_name(key: &str) -> &str {
    match key {
        "l" => "lookahead",
        "b" => "beams",
        "w" => "lambda",
        "N" => "n",
        "K" => "blocks",
        "M" => "block_len",
        other => other,
    }
}

const REWARD_KEYS: [&str; 6] = ["weights", "heads", "min", "combine", "ref", "temperature"];

impl Default for Alignment {
    fn default() -> Self {
        Self { controller: "deal".into(), config: SearchConfig::default(), reward: RewardSpec::default(), grammar: None }
    }
}

impl Alignment {
    /// Parse an `alignment` object and validate it against `registries`.
    pub fn from_value(v: &Value, registries: &Registries) -> Result<Self, AlignmentError> {
        let obj = v.as_object().ok_or_else(|| bad("alignment", "`alignment` must be a JSON object"))?;
        let mut a = Alignment::default();
        let mut reward = Map::new();
        for (key, value) in obj {
            match key.as_str() {
                "controller" => {
                    a.controller = value
                        .as_str()
                        .ok_or_else(|| bad("alignment.controller", "`controller` must be a string"))?
                        .to_string();
                }
                "params" => {
                    let params = value.as_object().ok_or_else(|| bad("alignment.params", "`params` must be an object"))?;
                    for (k, v) in params {
                        a.set_param(k, v.clone())?;
                    }
                }
                "grammar" => a.grammar = Some(parse_grammar(value)?),
                k if REWARD_KEYS.contains(&k) => {
                    reward.insert(key.clone(), value.clone());
                }
                other => {
                    return Err(bad(
                        format!("alignment.{other}"),
                        format!(
                            "unknown alignment field `{other}` (valid: controller, params, grammar, {})",
                            REWARD_KEYS.join(", ")
                        ),
                    ))
                }
            }
        }
        a.reward = RewardSpec::from_value(Value::Object(reward)).map_err(|e| bad("alignment", e.to_string()))?;
        a.validate(registries)?;
        Ok(a)
    }

    /// Set one search parameter (`k`, `l`/`lookahead`, `lambda`...) from a JSON value; the
    /// error names the field and says what it takes.
    pub fn set_param(&mut self, key: &str, value: Value) -> Result<(), AlignmentError> {
        let name = param_name(key);
        let param = format!("alignment.params.{key}");
        let mut cfg = serde_json::to_value(&self.config).map_err(|e| bad(&param, e.to_string()))?;
        let fields = cfg.as_object_mut().ok_or_else(|| bad(&param, "config is not an object"))?;
        if !fields.contains_key(name) {
            let mut valid: Vec<&str> = fields.keys().map(String::as_str).collect();
            valid.sort_unstable();
            return Err(bad(param, format!("unknown search parameter `{key}` (valid: {})", valid.join(", "))));
        }
        // (a commit rule may be given by its mode alone: `Commit` reads "token" as {"mode": "token"})
        fields.insert(name.to_string(), value);
        self.config = serde_json::from_value(cfg).map_err(|e| {
            let msg = e.to_string();
            let msg = msg.split(" at line").next().unwrap_or(&msg).to_string();
            bad(&param, format!("`{key}`: {msg}"))
        })?;
        Ok(())
    }

    /// Set a parameter from text (`"4"`, `"0.5"`, `"token"`, `{"mode": "lead", "margin": 2}`),
    /// as the chat REPL's `/controller deal k=4 l=4` gives them.
    pub fn set_param_text(&mut self, key: &str, text: &str) -> Result<(), AlignmentError> {
        let value = serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()));
        self.set_param(key, value)
    }

    /// Check the controller exists, its config suits it, the reward spec names real heads
    /// with valid params, and a controller that searches by reward has a non-zero weight.
    pub fn validate(&self, registries: &Registries) -> Result<(), AlignmentError> {
        let controllers = &registries.controllers;
        let kind = controllers.get(&self.controller).ok_or_else(|| {
            bad(
                "alignment.controller",
                format!("unknown controller `{}` (available: {})", self.controller, controllers.names().join(", ")),
            )
        })?;
        controllers.build(&self.controller, &self.config).map_err(|e| {
            let field = match &e {
                deal_controllers::ControlError::BadConfig { field, .. } => format!("alignment.params.{field}"),
                _ => "alignment.params".into(),
            };
            bad(field, e.to_string())
        })?;
        self.reward.validate(&registries.heads).map_err(|e| bad(reward_param(&e), e.to_string()))?;
        if kind.needs_reward && !self.reward.weights.values().any(|&w| w != 0.0) {
            return Err(bad(
                "alignment.weights",
                format!(
                    "controller `{}` searches by reward: give `weights` a non-zero weight (heads: {})",
                    self.controller,
                    registries.heads.names().join(", ")
                ),
            ));
        }
        Ok(())
    }

    /// Whether a reward is set (any head named).
    pub fn has_reward(&self) -> bool {
        !self.reward.head_names().is_empty()
    }
}

/// `alignment.grammar`: `{"lark": "..."}`, `{"regex": "..."}` or `{"json_schema": {...}}`.
fn parse_grammar(v: &Value) -> Result<GrammarSpec, AlignmentError> {
    let msg = "`grammar` must be one of {\"lark\": \"...\"}, {\"regex\": \"...\"}, {\"json_schema\": {...}}";
    let o = v.as_object().filter(|o| o.len() == 1).ok_or_else(|| bad("alignment.grammar", msg))?;
    let (kind, body) = o.iter().next().ok_or_else(|| bad("alignment.grammar", msg))?;
    match (kind.as_str(), body) {
        ("lark", Value::String(g)) => Ok(GrammarSpec::Lark(g.clone())),
        ("regex", Value::String(r)) => Ok(GrammarSpec::Regex(r.clone())),
        ("json_schema", s @ Value::Object(_)) => Ok(GrammarSpec::JsonSchema { schema: s.clone(), strict: false }),
        _ => Err(bad("alignment.grammar", msg)),
    }
}

/// The alignment field a reward error is about.
fn reward_param(e: &deal_heads::Error) -> String {
    use deal_heads::reward::RewardError as R;
    match e {
        deal_heads::Error::Reward(r) => match r {
            R::UnknownHead { .. } | R::BadWeight { .. } | R::NoHeuristic { .. } => "alignment.weights".into(),
            R::UnknownParam { head, .. } | R::BadParam { head, .. } => format!("alignment.heads.{head}"),
            R::BadLevel { field, head, .. } => format!("alignment.{field}.{head}"),
            R::BadTemperature(_) => "alignment.temperature".into(),
            _ => "alignment".into(),
        },
        _ => "alignment".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parses_the_issue_example_with_aliases() {
        let a = Alignment::from_value(&json!({
            "controller": "deal", "weights": {"sentiment": 1.0, "length": 0.5},
            "heads": {"length": {"target": 25}}, "params": {"k": 3, "l": 2, "beams": 2, "lambda": 1.5},
            "min": {"sentiment": 0.2}
        }), &Registries::builtin())
        .unwrap();
        assert_eq!((a.config.k, a.config.lookahead, a.config.beams, a.config.lambda), (3, 2, 2, 1.5));
        assert_eq!(a.reward.weights["length"], 0.5);
        assert_eq!(a.reward.min["sentiment"], 0.2);
    }

    #[test]
    fn errors_name_the_field() {
        let r = Registries::builtin();
        let e = |v: Value| Alignment::from_value(&v, &r).unwrap_err();
        assert_eq!(e(json!({"controller": "nope", "weights": {"length": 1}})).param, "alignment.controller");
        assert_eq!(e(json!({"weights": {"nope": 1}})).param, "alignment.weights");
        assert_eq!(e(json!({"weights": {"length": 1}, "params": {"k": "four"}})).param, "alignment.params.k");
        assert_eq!(e(json!({"weights": {"length": 1}, "params": {"k": 0}})).param, "alignment.params.k");
        assert_eq!(e(json!({"weights": {"length": 1}, "params": {"zz": 1}})).param, "alignment.params.zz");
        assert_eq!(e(json!({"weights": {"length": 1}, "heads": {"length": {"bogus": 1}}})).param, "alignment.heads.length");
        assert_eq!(e(json!({"weights": {}})).param, "alignment.weights");
        assert_eq!(e(json!({"wieghts": {}})).param, "alignment.wieghts");
        assert_eq!(e(json!([1])).param, "alignment");
        assert!(e(json!({"weights": {"length": 1}, "params": {"k": 1e300}})).message.contains('k'));
    }

    #[test]
    fn text_params_from_the_repl() {
        let mut a = Alignment::default();
        a.set_param_text("k", "5").unwrap();
        a.set_param_text("lambda", "2.5").unwrap();
        a.set_param_text("commit", "token").unwrap();
        assert_eq!(a.config.commit, deal_controllers::Commit::Token);
        let e = a.set_param_text("commit", "lead").unwrap_err();
        assert!(e.to_string().contains("margin"), "{e}");
        a.set_param_text("commit", r#"{"mode": "lead", "margin": 2}"#).unwrap();
        assert_eq!(a.config.k, 5);
        assert_eq!(a.config.lambda, 2.5);
        assert_eq!(a.config.commit, deal_controllers::Commit::Lead { margin: 2.0, min_prob: 0.0 });
        assert!(a.set_param_text("k", "many").is_err());
        assert_eq!(a.config.k, 5, "a failed set leaves the config unchanged");
    }
}
