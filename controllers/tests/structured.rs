//! Structured outputs on the real default model: JSON schemas compiled by llguidance for
//! the model's tokenizer are hard constraints inside every search. Every output of greedy,
//! `deal` and `best_of_n` parses and validates against its schema (checked by an
//! independent JSON Schema validator), and a weighted head still changes which valid output
//! wins.

mod common;

use std::sync::OnceLock;

use common::{engine, keywords};
use deal_controllers::grammar::{Grammar, GrammarCompiler, GrammarSpec};
use deal_controllers::{Outcome, Request, SearchConfig};
use deal_heads::reward::WeightedReward;
use serde_json::{json, Value};

fn compiler() -> &'static GrammarCompiler {
    static C: OnceLock<GrammarCompiler> = OnceLock::new();
    C.get_or_init(|| GrammarCompiler::new(engine().tokenizer()).expect("grammar compiler"))
}

fn schema(s: Value) -> Grammar {
    compiler().compile(&GrammarSpec::JsonSchema { schema: s, strict: true }).expect("schema compiles")
}

fn run(name: &str, prompt: &str, g: &Grammar, r: Option<&WeightedReward>, cfg: &SearchConfig) -> Outcome {
    let mut req = Request::new(engine(), prompt).with_grammar(g);
    req.reward = r;
    deal_controllers::Registry::builtin().search(name, cfg, &req, &mut |_| true).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Ten schemas: nested objects, enums, arrays, numbers, integers with ranges, booleans,
/// required fields, optional fields, string lengths.
fn schemas() -> Vec<(&'static str, Value)> {
    vec![
        ("Describe a person as JSON.\n", json!({"type": "object", "properties": {"name": {"type": "string", "maxLength": 20}, "age": {"type": "integer", "minimum": 0, "maximum": 120}}, "required": ["name", "age"]})),
        ("A colour as JSON.\n", json!({"type": "object", "properties": {"colour": {"enum": ["red", "green", "blue"]}}, "required": ["colour"]})),
        ("Three numbers as JSON.\n", json!({"type": "object", "properties": {"values": {"type": "array", "items": {"type": "number"}, "minItems": 1, "maxItems": 3}}, "required": ["values"]})),
        ("An address as JSON.\n", json!({"type": "object", "properties": {"address": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 16}, "zip": {"type": "string", "pattern": "^[0-9]{5}$"}}, "required": ["city", "zip"]}}, "required": ["address"]})),
        ("A yes/no answer as JSON.\n", json!({"type": "object", "properties": {"answer": {"type": "boolean"}, "confidence": {"type": "number", "minimum": 0, "maximum": 1}}, "required": ["answer", "confidence"]})),
        ("A shopping list as JSON.\n", json!({"type": "object", "properties": {"items": {"type": "array", "items": {"type": "object", "properties": {"item": {"type": "string", "maxLength": 12}, "qty": {"type": "integer", "minimum": 1, "maximum": 9}}, "required": ["item", "qty"]}, "maxItems": 2}}, "required": ["items"]})),
        ("A weather report as JSON.\n", json!({"type": "object", "properties": {"sky": {"enum": ["sunny", "cloudy", "rainy"]}, "temperature": {"type": "integer", "minimum": -30, "maximum": 45}, "wind": {"type": "object", "properties": {"speed": {"type": "integer", "minimum": 0, "maximum": 200}}, "required": ["speed"]}}, "required": ["sky", "temperature", "wind"]})),
        ("A book as JSON.\n", json!({"type": "object", "properties": {"title": {"type": "string", "minLength": 1, "maxLength": 24}, "tags": {"type": "array", "items": {"enum": ["fiction", "history", "science"]}, "maxItems": 2}, "pages": {"type": "integer", "minimum": 1, "maximum": 2000}}, "required": ["title", "pages"]})),
        ("A point as JSON.\n", json!({"type": "object", "properties": {"x": {"type": "integer", "minimum": -100, "maximum": 100}, "y": {"type": "number", "minimum": 0, "maximum": 10}, "label": {"type": ["string", "null"], "maxLength": 8}}, "required": ["x", "y", "label"]})),
        ("A status as JSON.\n", json!({"type": "object", "properties": {"ok": {"type": "boolean"}, "code": {"type": "integer", "enum": [200, 404, 500]}, "detail": {"type": "object", "properties": {"retry": {"type": "boolean"}}, "required": ["retry"]}}, "required": ["ok", "code", "detail"]})),
    ]
}

fn check(name: &str, schema: &Value, out: &Outcome) {
    let v: Value = serde_json::from_str(&out.text).unwrap_or_else(|e| panic!("{name}: {e}: {:?} ({:?})", out.text, out.finish));
    let validator = jsonschema::validator_for(schema).expect("valid schema");
    let errors: Vec<String> = validator.iter_errors(&v).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{name}: {} does not validate: {errors:?}", out.text);
    // strict mode: no properties beyond the schema's
    if let (Some(obj), Some(props)) = (v.as_object(), schema["properties"].as_object()) {
        assert!(obj.keys().all(|k| props.contains_key(k)), "{name}: extra property in {}", out.text);
    }
}

#[test]
fn every_output_validates_for_greedy_deal_and_best_of_n() {
    let cfg = SearchConfig { max_tokens: 80, lambda: 10.0, k: 3, beams: 2, lookahead: 3, n: 3, seed: 3, ..Default::default() };
    let r = keywords(&["blue", "rain"]);
    for (prompt, s) in schemas() {
        let g = schema(s.clone());
        for name in ["greedy", "deal", "best_of_n"] {
            let reward = (name != "greedy").then_some(&r);
            let out = run(name, prompt, &g, reward, &cfg);
            check(&format!("{name} on {prompt:?}"), &s, &out);
            assert!(g.accepts(&out.tokens), "{name}: the grammar accepts its own output");
        }
    }
}

#[test]
fn a_weighted_head_picks_among_valid_outputs() {
    let s = json!({"type": "object", "properties": {"mood": {"enum": ["happy", "sad", "angry", "calm"]}}, "required": ["mood"]});
    let g = schema(s.clone());
    let prompt = "Today's mood as JSON.\n";
    let cfg = SearchConfig { max_tokens: 24, lambda: 10.0, k: 4, beams: 2, lookahead: 4, ..Default::default() };
    let greedy = run("greedy", prompt, &g, None, &cfg);
    check("greedy", &s, &greedy);
    let chosen = |o: &Outcome| serde_json::from_str::<Value>(&o.text).unwrap()["mood"].as_str().unwrap().to_string();
    let mut seen = std::collections::HashSet::new();
    for mood in ["happy", "sad", "angry", "calm"] {
        let r = keywords(&[mood]);
        for name in ["deal", "best_of_n"] {
            let c = SearchConfig { n: 8, temperature: 1.0, ..cfg.clone() };
            let out = run(name, prompt, &g, Some(&r), &c);
            check(name, &s, &out);
            assert_eq!(chosen(&out), mood, "{name}: weight on `{mood}` should pick it: {}", out.text);
            seen.insert(chosen(&out));
        }
    }
    assert!(seen.len() == 4 && seen.iter().any(|m| *m != chosen(&greedy)), "the head changed the winner");
}

#[test]
fn regex_lark_and_json_object_constrain_too_and_bad_grammars_are_errors() {
    let cfg = SearchConfig { max_tokens: 16, ..Default::default() };
    let g = compiler().compile(&GrammarSpec::Regex("[0-9]{3}-[0-9]{4}".into())).unwrap();
    let out = run("greedy", "Phone number:", &g, None, &cfg);
    assert!(out.text.len() == 8 && out.text.chars().nth(3) == Some('-') && out.text.replace('-', "").chars().all(|c| c.is_ascii_digit()), "{:?}", out.text);
    let g = compiler().compile(&GrammarSpec::Lark("start: \"yes\" | \"no\"".into())).unwrap();
    let out = run("deal", "Is the sky blue? Answer:", &g, Some(&keywords(&["no"])), &SearchConfig { lambda: 10.0, ..cfg.clone() });
    assert_eq!(out.text, "no");
    let g = compiler().compile(&GrammarSpec::JsonObject).unwrap();
    let out = run("greedy", "A JSON object:\n", &g, None, &SearchConfig { max_tokens: 64, ..cfg });
    assert!(out.text.starts_with('{'), "{:?}", out.text);
    for bad in [GrammarSpec::Lark("start: missing_rule".into()), GrammarSpec::JsonSchema { schema: json!("nope"), strict: false }, GrammarSpec::Regex("(".into())] {
        assert!(compiler().compile(&bad).is_err(), "{bad:?} compiled");
    }
}
