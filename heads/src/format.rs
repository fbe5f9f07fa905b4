//! `format`: regexes that must / must not match, and optionally "is valid JSON" with a JSON
//! Schema, both checked by llguidance (the grammar engine of structured outputs) at the byte
//! level. The score is the fraction of checks passed. On a partial response a check
//! that is still open (a `must` pattern not matched yet, JSON that is a valid prefix but not
//! complete) counts half; one already failed (a `must_not` match, text that can no longer
//! become JSON) counts zero; a `must_not` pattern not matched so far counts as passed.

use std::sync::Arc;

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::{bad_param, Candidate, Details, HeadContext, ParamInfo, RewardHead, Scale};
use crate::Result;

/// Params of the [`Format`] head.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Regexes the response must match (Rust `regex` syntax).
    #[serde(default)]
    pub must: Vec<String>,
    /// Regexes the response must not match.
    #[serde(default)]
    pub must_not: Vec<String>,
    /// Whether the response (optionally in a ``` fence) must be valid JSON.
    #[serde(default)]
    pub json: bool,
    /// JSON Schema the JSON must satisfy; implies `json`.
    pub schema: Option<Value>,
}

/// See the module documentation.
pub struct Format {
    must: Vec<Regex>,
    must_not: Vec<Regex>,
    /// Any JSON (`json`, or implied by `schema`).
    json: Option<JsonCheck>,
    /// The schema, when given.
    schema: Option<JsonCheck>,
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Check {
    Pass,
    Undecided,
    Fail,
}

impl Check {
    fn credit(self) -> f32 {
        match self {
            Check::Pass => 1.0,
            Check::Undecided => 0.5,
            Check::Fail => 0.0,
        }
    }
}

impl Format {
    fn checks(&self, c: &Candidate) -> Vec<Check> {
        let text = c.response.as_str();
        let mut out = Vec::with_capacity(self.must.len() + self.must_not.len() + 2);
        for re in &self.must {
            out.push(match (re.is_match(text), c.partial) {
                (true, _) => Check::Pass,
                (false, true) => Check::Undecided,
                (false, false) => Check::Fail,
            });
        }
        for re in &self.must_not {
            out.push(if re.is_match(text) { Check::Fail } else { Check::Pass });
        }
        if let Some(j) = &self.json {
            let body = json_body(text);
            out.push(j.check(body, c.partial));
            if let Some(s) = &self.schema {
                out.push(s.check(body, c.partial));
            }
        }
        out
    }
}

/// The JSON text inside a response: trimmed, without a surrounding ``` / ```json fence.
fn json_body(text: &str) -> &str {
    let t = text.trim();
    if let Some(rest) = t.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        let rest = rest.strip_suffix("```").unwrap_or(rest);
        return rest.trim();
    }
    t
}

impl RewardHead for Format {
    const NAME: &'static str = "format";
    const DESCRIPTION: &'static str =
        "fraction of format checks passed: regexes that must / must not match, valid JSON, a JSON Schema";
    const PARAMS: &'static [ParamInfo] = &[
        ParamInfo { name: "must", ty: "string[]", default: "[]", doc: "regexes the response must match (Rust regex syntax)" },
        ParamInfo { name: "must_not", ty: "string[]", default: "[]", doc: "regexes the response must not match" },
        ParamInfo { name: "json", ty: "bool", default: "false", doc: "the response (optionally in a ``` fence) must be valid JSON" },
        ParamInfo {
            name: "schema",
            ty: "object",
            default: "none",
            doc: "JSON Schema the JSON must satisfy (checked by llguidance, the engine of structured outputs); implies json",
        },
    ];
    const EXAMPLE: &'static str = r#"{"must": ["^\\s*\\{"], "must_not": ["(?i)as an ai"], "json": true, "schema": {"type": "object", "required": ["name"]}}"#;
    type Params = Params;

    fn build(p: Params, _ctx: &Arc<HeadContext>) -> Result<Self> {
        let compile = |list: &[String], field: &str| -> Result<Vec<Regex>> {
            list.iter()
                .map(|s| Regex::new(s).map_err(|e| bad_param(Self::NAME, format!("`{field}` pattern {s:?}: {e}"))))
                .collect()
        };
        let must = compile(&p.must, "must")?;
        let must_not = compile(&p.must_not, "must_not")?;
        if must.is_empty() && must_not.is_empty() && !p.json && p.schema.is_none() {
            return Err(bad_param(Self::NAME, "nothing to check: give `must`, `must_not`, `json` or `schema`"));
        }
        let schema = p
            .schema
            .as_ref()
            .map(|s| JsonCheck::compile(Some(s)).map_err(|e| bad_param(Self::NAME, format!("`schema`: {e}"))))
            .transpose()?;
        let json = if p.json || schema.is_some() {
            Some(JsonCheck::compile(None).map_err(|e| bad_param(Self::NAME, format!("JSON grammar: {e}")))?)
        } else {
            None
        };
        Ok(Self { must, must_not, json, schema })
    }

    fn scale(&self) -> Scale {
        Scale::UNIT
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        Ok(self.score_with_details(cands)?.into_iter().map(|(s, _)| s).collect())
    }

    fn score_with_details(&self, cands: &[Candidate]) -> Result<Vec<(f32, Details)>> {
        Ok(cands
            .iter()
            .map(|c| {
                let checks = self.checks(c);
                let n = checks.len() as f32;
                let s = checks.iter().map(|c| c.credit()).sum::<f32>() / n;
                let passed = checks.iter().filter(|&&c| c == Check::Pass).count() as f32;
                let failed = checks.iter().filter(|&&c| c == Check::Fail).count() as f32;
                (s, vec![("passed", passed), ("failed", failed), ("checks", n)])
            })
            .collect())
    }
}

/// Byte-level llguidance matching for the JSON checks: every byte is a token of a 256-token
/// vocabulary (toktrie's single-byte environment), so a candidate's text is checked as text,
/// whatever the model's tokenizer. The same grammar engine constrains structured outputs
/// (`deal_controllers::grammar`).
struct JsonCheck {
    /// The compiled grammar's parser before any byte (cloned per candidate).
    template: std::sync::Mutex<Matcher>,
}

/// The parser factory over single bytes, built once.
fn byte_factory() -> std::result::Result<&'static ParserFactory, String> {
    static F: std::sync::OnceLock<std::result::Result<ParserFactory, String>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let env: toktrie::TokEnv = Arc::new(toktrie::ApproximateTokEnv::single_byte());
        let mut f = ParserFactory::new_simple(&env).map_err(|e| e.to_string())?;
        f.quiet();
        Ok(f)
    })
    .as_ref()
    .map_err(Clone::clone)
}

impl JsonCheck {
    /// Any JSON value (`None`) or JSON valid against `schema` (full JSON Schema as llguidance
    /// compiles it).
    fn compile(schema: Option<&Value>) -> std::result::Result<Self, String> {
        let schema = schema.cloned().unwrap_or_else(|| serde_json::json!({}));
        if !schema.is_object() {
            return Err(format!("a schema must be an object, got {schema}"));
        }
        let parser = byte_factory()?.create_parser(TopLevelGrammar::from_json_schema(schema)).map_err(|e| e.to_string())?;
        let mut m = Matcher::new(Ok(parser));
        if let Some(e) = m.get_error() {
            return Err(e);
        }
        m.compute_mask().map_err(|e| e.to_string())?;
        Ok(Self { template: std::sync::Mutex::new(m) })
    }

    /// Pass: `body` is a complete match. Undecided: a partial response whose text so far can
    /// still become one. Fail: otherwise.
    fn check(&self, body: &str, partial: bool) -> Check {
        let mut m = self.template.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let bytes: Vec<u32> = body.bytes().map(u32::from).collect();
        match m.try_consume_tokens(&bytes) {
            Ok(n) if n == bytes.len() => {
                if m.is_accepting().unwrap_or(false) {
                    Check::Pass
                } else if partial {
                    Check::Undecided
                } else {
                    Check::Fail
                }
            }
            _ => Check::Fail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_prefixes() {
        let j = JsonCheck::compile(None).unwrap();
        for ok in ["{", "{\"a\"", "{\"a\": [1, 2", "{\"a\": tr", "[1, -", "[1.5e", "\"abc", "[ "] {
            assert_eq!(j.check(ok, true), Check::Undecided, "{ok:?} should be a JSON prefix");
            assert_eq!(j.check(ok, false), Check::Fail, "{ok:?} is not complete JSON");
        }
        for done in ["{\"a\": {\"b\": null}}", "[ ]", "1.5", "\"x\""] {
            assert_eq!(j.check(done, false), Check::Pass, "{done:?} is JSON");
        }
        for bad in ["}", "{a", "{\"a\" 1", "[1,,", "[1] x", "{\"a\": tx", "[01", "{\"a\":1,}", "[1, ]"] {
            assert_eq!(j.check(bad, true), Check::Fail, "{bad:?} should not be a JSON prefix");
        }
    }
}
