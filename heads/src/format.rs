//! `format`: regexes that must / must not match, and optionally "is valid JSON" with a JSON
//! Schema subset. The score is the fraction of checks passed. On a partial response a check
//! that is still open (a `must` pattern not matched yet, JSON that is a valid prefix but not
//! complete) counts half; one already failed (a `must_not` match, text that can no longer
//! become JSON) counts zero; a `must_not` pattern not matched so far counts as passed.

use std::sync::Arc;

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
    /// JSON Schema subset the JSON must satisfy; implies `json`.
    pub schema: Option<Value>,
}

/// See the module documentation.
pub struct Format {
    must: Vec<Regex>,
    must_not: Vec<Regex>,
    json: bool,
    schema: Option<Schema>,
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
        if self.json || self.schema.is_some() {
            let body = json_body(text);
            match serde_json::from_str::<Value>(body) {
                Ok(v) => {
                    out.push(Check::Pass);
                    if let Some(s) = &self.schema {
                        out.push(if s.matches(&v) { Check::Pass } else { Check::Fail });
                    }
                }
                Err(_) => {
                    let open = c.partial && json_prefix_ok(body);
                    let state = if open { Check::Undecided } else { Check::Fail };
                    out.push(state);
                    if self.schema.is_some() {
                        out.push(state);
                    }
                }
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
        "fraction of format checks passed: regexes that must / must not match, valid JSON, a JSON Schema subset";
    const PARAMS: &'static [ParamInfo] = &[
        ParamInfo { name: "must", ty: "string[]", default: "[]", doc: "regexes the response must match (Rust regex syntax)" },
        ParamInfo { name: "must_not", ty: "string[]", default: "[]", doc: "regexes the response must not match" },
        ParamInfo { name: "json", ty: "bool", default: "false", doc: "the response (optionally in a ``` fence) must be valid JSON" },
        ParamInfo {
            name: "schema",
            ty: "object",
            default: "none",
            doc: "JSON Schema subset the JSON must satisfy (type, enum, const, properties, required, additionalProperties, items, min/maxItems, min/maxLength, minimum, maximum, pattern); implies json",
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
        let schema = p.schema.as_ref().map(|s| Schema::compile(s, "schema")).transpose()?;
        if must.is_empty() && must_not.is_empty() && !p.json && schema.is_none() {
            return Err(bad_param(Self::NAME, "nothing to check: give `must`, `must_not`, `json` or `schema`"));
        }
        Ok(Self { must, must_not, json: p.json, schema })
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

/// Whether `s` can be extended into valid JSON (it is a prefix of some JSON text).
pub fn json_prefix_ok(s: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum E {
        Value,
        KeyOrEnd,
        Key,
        Colon,
        CommaOrEndObj,
        ValueOrEndArr,
        CommaOrEndArr,
        Done,
    }
    fn after(stack: &[u8]) -> E {
        match stack.last() {
            Some(b'{') => E::CommaOrEndObj,
            Some(_) => E::CommaOrEndArr,
            None => E::Done,
        }
    }
    /// End of the string starting at `i` (a quote): Some(Ok(index after it)), Some(Err) if
    /// invalid, None if the input ends inside it.
    fn string(b: &[u8], mut i: usize) -> Option<std::result::Result<usize, ()>> {
        i += 1;
        while i < b.len() {
            match b[i] {
                b'\\' => i += 2,
                b'"' => return Some(Ok(i + 1)),
                c if c < 0x20 => return Some(Err(())),
                _ => i += 1,
            }
        }
        None
    }
    let b = s.as_bytes();
    let mut i = 0;
    let mut stack: Vec<u8> = Vec::new();
    let mut e = E::Value;
    loop {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        if i == b.len() {
            return true;
        }
        let c = b[i];
        match e {
            E::Done => return false,
            E::Value | E::ValueOrEndArr => {
                if e == E::ValueOrEndArr && c == b']' {
                    stack.pop();
                    i += 1;
                    e = after(&stack);
                    continue;
                }
                match c {
                    b'{' => {
                        stack.push(b'{');
                        e = E::KeyOrEnd;
                        i += 1;
                    }
                    b'[' => {
                        stack.push(b'[');
                        e = E::ValueOrEndArr;
                        i += 1;
                    }
                    b'"' => match string(b, i) {
                        None => return true,
                        Some(Err(())) => return false,
                        Some(Ok(j)) => {
                            i = j;
                            e = after(&stack);
                        }
                    },
                    b'-' | b'0'..=b'9' => {
                        let start = i;
                        while i < b.len() && matches!(b[i], b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') {
                            i += 1;
                        }
                        let num = &s[start..i];
                        if i == b.len() {
                            return number_prefix_ok(num);
                        }
                        if !number_ok(num) {
                            return false;
                        }
                        e = after(&stack);
                    }
                    b't' | b'f' | b'n' => {
                        let lit: &[u8] = match c {
                            b't' => b"true",
                            b'f' => b"false",
                            _ => b"null",
                        };
                        let rest = &b[i..];
                        if rest.len() < lit.len() {
                            return lit.starts_with(rest);
                        }
                        if &rest[..lit.len()] != lit {
                            return false;
                        }
                        i += lit.len();
                        e = after(&stack);
                    }
                    _ => return false,
                }
            }
            E::KeyOrEnd | E::Key => {
                if e == E::KeyOrEnd && c == b'}' {
                    stack.pop();
                    i += 1;
                    e = after(&stack);
                } else if c == b'"' {
                    match string(b, i) {
                        None => return true,
                        Some(Err(())) => return false,
                        Some(Ok(j)) => {
                            i = j;
                            e = E::Colon;
                        }
                    }
                } else {
                    return false;
                }
            }
            E::Colon => {
                if c != b':' {
                    return false;
                }
                i += 1;
                e = E::Value;
            }
            E::CommaOrEndObj | E::CommaOrEndArr => {
                let close = if e == E::CommaOrEndObj { b'}' } else { b']' };
                if c == b',' {
                    e = if e == E::CommaOrEndObj { E::Key } else { E::Value };
                    i += 1;
                } else if c == close {
                    stack.pop();
                    i += 1;
                    e = after(&stack);
                } else {
                    return false;
                }
            }
        }
    }
}

fn number_ok(s: &str) -> bool {
    serde_json::from_str::<serde_json::Number>(s).is_ok()
}

fn number_prefix_ok(s: &str) -> bool {
    // a complete number, or one that a digit (or digits after `e`) can complete
    number_ok(s) || number_ok(&format!("{s}0")) || number_ok(&format!("{s}1")) || number_ok(&format!("{s}0e0"))
}

/// JSON types of the schema subset.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Ty {
    Object,
    Array,
    String,
    Number,
    Integer,
    Boolean,
    Null,
}

impl Ty {
    fn parse(s: &str, at: &str) -> Result<Ty> {
        Ok(match s {
            "object" => Ty::Object,
            "array" => Ty::Array,
            "string" => Ty::String,
            "number" => Ty::Number,
            "integer" => Ty::Integer,
            "boolean" => Ty::Boolean,
            "null" => Ty::Null,
            other => {
                return Err(bad_param(
                    Format::NAME,
                    format!("{at}: unknown type `{other}` (valid: object, array, string, number, integer, boolean, null)"),
                ))
            }
        })
    }

    fn matches(self, v: &Value) -> bool {
        match self {
            Ty::Object => v.is_object(),
            Ty::Array => v.is_array(),
            Ty::String => v.is_string(),
            Ty::Number => v.is_number(),
            Ty::Integer => v.as_f64().is_some_and(|x| x.fract() == 0.0),
            Ty::Boolean => v.is_boolean(),
            Ty::Null => v.is_null(),
        }
    }
}

/// A compiled schema of the supported subset.
#[derive(Debug, Clone, Default)]
pub struct Schema {
    types: Option<Vec<Ty>>,
    enumeration: Option<Vec<Value>>,
    constant: Option<Value>,
    properties: Vec<(String, Schema)>,
    required: Vec<String>,
    additional: Option<Box<Schema>>,
    no_additional: bool,
    items: Option<Box<Schema>>,
    min_items: Option<usize>,
    max_items: Option<usize>,
    min_length: Option<usize>,
    max_length: Option<usize>,
    minimum: Option<f64>,
    maximum: Option<f64>,
    pattern: Option<Regex>,
}

const SCHEMA_KEYWORDS: &str = "type, enum, const, properties, required, additionalProperties, items, minItems, maxItems, minLength, maxLength, minimum, maximum, pattern (and the annotations $schema, $id, title, description, default, examples)";

impl Schema {
    /// Compile `v` (at JSON path `at`, for errors). Unsupported keywords are errors.
    pub fn compile(v: &Value, at: &str) -> Result<Schema> {
        let err = |m: String| bad_param(Format::NAME, format!("{at}: {m}"));
        let obj = match v {
            Value::Bool(true) => return Ok(Schema::default()),
            Value::Object(o) => o,
            _ => return Err(err(format!("a schema must be an object, got {v}"))),
        };
        let mut s = Schema::default();
        let count = |k: &str, x: &Value| -> Result<usize> {
            x.as_u64().map(|n| n as usize).ok_or_else(|| err(format!("`{k}` must be a non-negative integer")))
        };
        let num = |k: &str, x: &Value| -> Result<f64> { x.as_f64().ok_or_else(|| err(format!("`{k}` must be a number"))) };
        for (k, x) in obj {
            match k.as_str() {
                "type" => {
                    let names: Vec<&str> = match x {
                        Value::String(t) => vec![t.as_str()],
                        Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                        _ => return Err(err("`type` must be a string or an array of strings".into())),
                    };
                    s.types = Some(names.iter().map(|t| Ty::parse(t, at)).collect::<Result<_>>()?);
                }
                "enum" => s.enumeration = Some(x.as_array().cloned().ok_or_else(|| err("`enum` must be an array".into()))?),
                "const" => s.constant = Some(x.clone()),
                "properties" => {
                    let props = x.as_object().ok_or_else(|| err("`properties` must be an object".into()))?;
                    for (name, sub) in props {
                        s.properties.push((name.clone(), Schema::compile(sub, &format!("{at}.properties.{name}"))?));
                    }
                }
                "required" => {
                    let list = x.as_array().ok_or_else(|| err("`required` must be an array of strings".into()))?;
                    s.required = list
                        .iter()
                        .map(|r| r.as_str().map(String::from).ok_or_else(|| err("`required` must be an array of strings".into())))
                        .collect::<Result<_>>()?;
                }
                "additionalProperties" => match x {
                    Value::Bool(b) => s.no_additional = !b,
                    other => s.additional = Some(Box::new(Schema::compile(other, &format!("{at}.additionalProperties"))?)),
                },
                "items" => s.items = Some(Box::new(Schema::compile(x, &format!("{at}.items"))?)),
                "minItems" => s.min_items = Some(count(k, x)?),
                "maxItems" => s.max_items = Some(count(k, x)?),
                "minLength" => s.min_length = Some(count(k, x)?),
                "maxLength" => s.max_length = Some(count(k, x)?),
                "minimum" => s.minimum = Some(num(k, x)?),
                "maximum" => s.maximum = Some(num(k, x)?),
                "pattern" => {
                    let p = x.as_str().ok_or_else(|| err("`pattern` must be a string".into()))?;
                    s.pattern = Some(Regex::new(p).map_err(|e| err(format!("`pattern` {p:?}: {e}")))?);
                }
                "$schema" | "$id" | "title" | "description" | "default" | "examples" => {}
                other => return Err(err(format!("unsupported schema keyword `{other}` (supported: {SCHEMA_KEYWORDS})"))),
            }
        }
        Ok(s)
    }

    /// Whether `v` satisfies the schema.
    pub fn matches(&self, v: &Value) -> bool {
        if let Some(types) = &self.types {
            if !types.iter().any(|t| t.matches(v)) {
                return false;
            }
        }
        if let Some(e) = &self.enumeration {
            if !e.contains(v) {
                return false;
            }
        }
        if let Some(c) = &self.constant {
            if c != v {
                return false;
            }
        }
        match v {
            Value::Object(o) => {
                if self.required.iter().any(|r| !o.contains_key(r)) {
                    return false;
                }
                for (k, x) in o {
                    match self.properties.iter().find(|(name, _)| name == k) {
                        Some((_, sub)) => {
                            if !sub.matches(x) {
                                return false;
                            }
                        }
                        None => {
                            if self.no_additional || self.additional.as_ref().is_some_and(|a| !a.matches(x)) {
                                return false;
                            }
                        }
                    }
                }
            }
            Value::Array(a) => {
                if self.min_items.is_some_and(|m| a.len() < m) || self.max_items.is_some_and(|m| a.len() > m) {
                    return false;
                }
                if let Some(items) = &self.items {
                    if !a.iter().all(|x| items.matches(x)) {
                        return false;
                    }
                }
            }
            Value::String(t) => {
                let n = t.chars().count();
                if self.min_length.is_some_and(|m| n < m) || self.max_length.is_some_and(|m| n > m) {
                    return false;
                }
                if self.pattern.as_ref().is_some_and(|p| !p.is_match(t)) {
                    return false;
                }
            }
            Value::Number(n) => {
                let Some(x) = n.as_f64() else { return false };
                if self.minimum.is_some_and(|m| x < m) || self.maximum.is_some_and(|m| x > m) {
                    return false;
                }
            }
            _ => {}
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_prefixes() {
        for ok in ["", "{", "{\"a\"", "{\"a\": [1, 2", "{\"a\": tr", "[1, -", "[1.5e", "\"abc", "{\"a\": {\"b\": null}}", "  [ ] "] {
            assert!(json_prefix_ok(ok), "{ok:?} should be a JSON prefix");
        }
        for bad in ["}", "{a", "{\"a\" 1", "[1,,", "[1] x", "{\"a\": tx", "[01", "{\"a\":1,}", "[1, ]"] {
            assert!(!json_prefix_ok(bad), "{bad:?} should not be a JSON prefix");
        }
    }
}
