//! Reward heads that need no model, the registry, request validation, calibration and
//! combination (linear, logsigmoid, floors), and the `http` head against a real local server.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::Arc;

use deal_heads::{self, Candidate, DynHead, HeadContext, ParamInfo, Registry, RewardHead, Scale};
use deal_heads::reward::{rank, Combine, RewardError, RewardSpec};
use deal_heads::Error;
use serde::Deserialize;
use serde_json::json;

fn ctx() -> Arc<HeadContext> {
    HeadContext::new()
}

fn head(name: &str, params: serde_json::Value) -> Arc<dyn DynHead> {
    Registry::with_builtin().get(name).unwrap().build(&params, &ctx()).unwrap_or_else(|e| panic!("build {name}: {e}"))
}

fn build_err(name: &str, params: serde_json::Value) -> String {
    match Registry::with_builtin().get(name).unwrap().build(&params, &ctx()) {
        Ok(_) => panic!("{name} with {params} should be rejected"),
        Err(e) => e.to_string(),
    }
}

fn scores(h: &dyn DynHead, texts: &[&str]) -> Vec<f32> {
    let cands: Vec<Candidate> = texts.iter().map(|t| Candidate::new("prompt", *t)).collect();
    h.score(&cands).unwrap()
}

fn spec(v: serde_json::Value) -> RewardSpec {
    RewardSpec::from_value(v).unwrap()
}

#[test]
fn registry_lists_every_builtin_head_and_declared_params_are_the_accepted_ones() {
    let r = Registry::with_builtin();
    assert_eq!(
        r.names(),
        ["keywords", "length", "format", "sentiment", "lexicon", "repetition", "relevance", "judge", "probe", "http"]
    );
    for k in r.kinds() {
        assert!(!k.description.is_empty(), "{}", k.name);
        let ex: serde_json::Value = serde_json::from_str(k.example).unwrap_or_else(|e| panic!("{} example: {e}", k.name));
        k.check_params(&ex).unwrap_or_else(|e| panic!("{} example rejected: {e}", k.name));
        let declared: Vec<&str> = k.params.iter().map(|p| p.name).collect();
        for key in ex.as_object().unwrap().keys() {
            assert!(declared.contains(&key.as_str()), "{}: example uses undeclared `{key}`", k.name);
        }
        // every declared param is a field of the typed Params: with a wrong-typed value the
        // error is about the value, never "unknown field"
        for p in k.params {
            if let Err(e) = k.check_params(&json!({ p.name: {"wrong": [true]} })) {
                assert!(!e.to_string().contains("unknown field"), "{}.{} is declared but not accepted: {e}", k.name, p.name);
            }
        }
    }
}

#[test]
fn keywords_match_inflections_and_report_hard_coverage() {
    let h = head("keywords", json!({"words": ["dog", "park", "run"]}));
    let s = scores(&*h, &["The dogs ran to the parks.", "My dog's favourite park", "A cat sat on a mat.", "RUNNING DOG"]);
    assert_eq!(s, [1.0, 2.0 / 3.0, 0.0, 2.0 / 3.0]);

    let d = h.score_with_details(&[Candidate::new("", "dogs running in a park")]).unwrap();
    let details: BTreeMap<&str, f32> = d[0].1.iter().copied().collect();
    assert_eq!((details["covered"], details["total"], details["hard"]), (3.0, 3.0, 1.0));

    let hard = head("keywords", json!({"words": ["dog", "park"], "mode": "hard"}));
    assert_eq!(scores(&*hard, &["dogs in parks", "dogs everywhere"]), [1.0, 0.0]);

    let exact = head("keywords", json!({"words": ["dog"], "inflections": false}));
    assert_eq!(scores(&*exact, &["dogs", "a Dog!"]), [0.0, 1.0]);

    let phrase = head("keywords", json!({"words": ["New York", "ice cream"]}));
    assert_eq!(scores(&*phrase, &["new york ice creams", "new big york; cream of ice"]), [1.0, 0.0]);

    assert!(build_err("keywords", json!({"words": []})).contains("at least one"));
    assert!(build_err("keywords", json!({})).contains("missing field `words`"));
}

#[test]
fn length_scores_closeness_and_partials_only_lose_for_overshooting() {
    let h = head("length", json!({"target": 5, "tolerance": 5}));
    let c = |t: &str, partial: bool| Candidate::new("p", t).partial(partial);
    let five = "one two three four five";
    let ten = "one two three four five six seven eight nine ten";
    let s = h.score(&[c(five, false), c(ten, false), c("one two", false), c("one two", true), c("a b c d e f g", true)]).unwrap();
    assert_eq!(s[0], 1.0);
    assert_eq!(s[1], 0.0);
    assert!((s[2] - 0.4).abs() < 1e-6);
    assert_eq!(s[3], 1.0, "a short partial is not penalised");
    assert!((s[4] - 0.6).abs() < 1e-6, "an overshooting partial is");

    let chars = head("length", json!({"target": 10, "unit": "chars"}));
    assert_eq!(scores(&*chars, &["0123456789", "01234"]), [1.0, 0.5]);
    let toks = head("length", json!({"target": 4, "unit": "tokens"}));
    assert_eq!(toks.score(&[Candidate::new("", "whatever").with_tokens(vec![1, 2, 3, 4])]).unwrap(), [1.0]);
    let err = toks.score(&[Candidate::new("", "no ids here")]).unwrap_err().to_string();
    assert!(err.contains("token ids"), "{err}");

    assert!(build_err("length", json!({"target": 0})).contains("target"));
    assert!(build_err("length", json!({"target": 5, "unit": "pages"})).contains("unknown variant `pages`"));
}

#[test]
fn format_checks_regexes_json_and_schema_and_treats_partials_fairly() {
    let h = head("format", json!({"must": ["^Answer:"], "must_not": ["(?i)as an ai"]}));
    assert_eq!(scores(&*h, &["Answer: 42", "Answer: as an AI I cannot", "42"]), [1.0, 0.5, 0.5]);
    let partial = |t: &str| Candidate::new("", t).partial(true);
    // a must pattern not matched yet is undecided on a partial (half credit); a must_not hit is final
    assert_eq!(h.score(&[partial("Ans"), partial("Answer: as an ai")]).unwrap(), [0.75, 0.5]);

    let js = head(
        "format",
        json!({"schema": {"type": "object", "required": ["name", "age"],
                          "properties": {"name": {"type": "string", "minLength": 1},
                                         "age": {"type": "integer", "minimum": 0}},
                          "additionalProperties": false}}),
    );
    let s = scores(
        &*js,
        &[
            r#"{"name": "Ada", "age": 36}"#,
            "```json\n{\"name\": \"Ada\", \"age\": 36}\n```",
            r#"{"name": "Ada", "age": -1}"#,
            r#"{"name": "Ada", "age": 36, "x": 1}"#,
            r#"{"name": "Ada""#,
            "Sure! Here it is",
        ],
    );
    assert_eq!(s, [1.0, 1.0, 0.5, 0.5, 0.0, 0.0]);
    // the same unfinished JSON is still open when partial; prose that cannot become JSON is not
    assert_eq!(js.score(&[partial(r#"{"name": "Ada""#), partial("Sure! Here it is")]).unwrap(), [0.5, 0.0]);

    let plain = head("format", json!({"json": true}));
    assert_eq!(scores(&*plain, &["[1, 2, 3]", "[1, 2, 3", "{'a': 1}"]), [1.0, 0.0, 0.0]);

    let e = build_err("format", json!({"must": ["(unclosed"]}));
    assert!(e.contains("(unclosed"), "{e}");
    let e = build_err("format", json!({"schema": {"type": "no-such-type"}}));
    assert!(e.contains("`schema`") && e.contains("no-such-type"), "{e}");
    // full JSON Schema now (llguidance), e.g. anyOf and $ref
    let any = head("format", json!({"schema": {"anyOf": [{"type": "integer"}, {"$ref": "#/$defs/s"}], "$defs": {"s": {"type": "string", "maxLength": 3}}}}));
    assert_eq!(scores(&*any, &["12", "\"abc\"", "\"abcd\"", "true"]), [1.0, 1.0, 0.5, 0.5]);
    assert!(build_err("format", json!({})).contains("nothing to check"));
}

#[test]
fn sentiment_matches_the_reference_vader_implementation() {
    // polarity scores from vaderSentiment 3.3.2 (fixtures/gen_vader_ref.py): negation, "but",
    // boosters, ALL CAPS, "least", "kind of", special cases, emojis, emoticons, punctuation
    let fixture: Vec<serde_json::Value> =
        serde_json::from_str(include_str!("fixtures/vader_ref.json")).unwrap();
    let h = head("sentiment", json!({}));
    let cands: Vec<Candidate> = fixture.iter().map(|r| Candidate::new("", r["text"].as_str().unwrap())).collect();
    let got = h.score_with_details(&cands).unwrap();
    for (r, (compound, details)) in fixture.iter().zip(&got) {
        let want = r["compound"].as_f64().unwrap();
        // the reference rounds compound to 4 decimals and pos/neu/neg to 3
        assert!((*compound as f64 - want).abs() <= 5.1e-5, "{:?}: {compound} vs reference {want}", r["text"]);
        for (k, v) in details {
            let want = r[*k].as_f64().unwrap();
            assert!((*v as f64 - want).abs() <= 5.1e-4, "{:?} {k}: {v} vs reference {want}", r["text"]);
        }
    }
    let positive = got[16].0;
    let negative = got[17].0;
    assert!(positive > 0.9 && negative < -0.7);
    assert_eq!(h.scale(), Scale::Range { lo: -1.0, hi: 1.0 });
    let both = head("sentiment", json!({"scope": "prompt_and_response"}));
    let c = Candidate::new("I hate mondays. ", "Anyway.");
    assert!(both.score(std::slice::from_ref(&c)).unwrap()[0] < -0.4 && h.score(&[c]).unwrap()[0] == 0.0);
}

#[test]
fn lexicon_counts_listed_terms_on_word_boundaries() {
    let h = head("lexicon", json!({}));
    let s = scores(
        &*h,
        &[
            "What the fuck is this shit?",
            "The class assignment was passed to the assistant.",
            "You stupid idiots, shut up!",
            "Scunthorpe is a town; cocktails at the Dickens pub.",
        ],
    );
    assert_eq!(s, [2.0, 0.0, 3.0, 0.0]);
    assert_eq!(h.scale().normalize(0.0), 1.0);
    assert!((h.scale().normalize(1.0) - 2.0 / 3.0).abs() < 1e-6);
    assert_eq!(h.scale().normalize(7.0), 0.0);

    let own = head("lexicon", json!({"words": ["broccoli", "tax*"], "cap": 1}));
    assert_eq!(scores(&*own, &["Broccolis and taxes, damn.", "syntax"]), [2.0, 0.0]);
    let more = head("lexicon", json!({"add": ["broccoli"]}));
    assert_eq!(scores(&*more, &["damn broccoli"]), [2.0]);
    assert!(build_err("lexicon", json!({"words": []})).contains("empty"));
}

#[test]
fn repetition_flags_the_base_model_loop() {
    let h = head("repetition", json!({}));
    let s = scores(
        &*h,
        &[
            "The old lighthouse keeper climbed the stairs and the new lighthouse keeper climbed the stairs and the new lighthouse keeper climbed the stairs",
            "The old lighthouse keeper climbed the stairs, cleaned the lens and watched the sea until morning.",
            "too short",
        ],
    );
    assert!(s[0] > 0.4, "{s:?}");
    assert_eq!(s[1], 0.0);
    assert_eq!(s[2], 0.0);
    assert!(h.scale().normalize(s[0]) < 0.6 && h.scale().normalize(s[1]) == 1.0);
    let toks = head("repetition", json!({"n": 2, "unit": "tokens"}));
    let c = Candidate::new("", "x").with_tokens(vec![5, 6, 5, 6, 5, 6]);
    assert_eq!(toks.score(&[c]).unwrap(), [3.0 / 5.0]);
    assert!(build_err("repetition", json!({"n": 0})).contains("1..=16"));
}

fn reward_error(e: Error) -> RewardError {
    match e {
        Error::Reward(r) => r,
        other => panic!("expected a reward error, got {other}"),
    }
}

#[test]
fn specs_are_validated_with_errors_that_name_the_problem_and_the_choices() {
    let c = ctx();
    let e = spec(json!({"weights": {"sentimnt": 1.0}})).build(&deal_heads::Registry::with_builtin(), &c).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(reward_error(e), RewardError::UnknownHead { .. }));
    assert!(msg.contains("`sentimnt`") && msg.contains("sentiment") && msg.contains("keywords"), "{msg}");

    let e = spec(json!({"weights": {"length": 1.0}, "heads": {"length": {"target": 5, "targt": 3}}})).build(&deal_heads::Registry::with_builtin(), &c).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(reward_error(e), RewardError::UnknownParam { .. }));
    assert!(msg.contains("`targt`") && msg.contains("target, unit, tolerance"), "{msg}");

    let e = spec(json!({"weights": {"sentiment": 1}, "heads": {"sentiment": {"x": 1}}})).build(&deal_heads::Registry::with_builtin(), &c).unwrap_err();
    assert!(e.to_string().contains("`x`") && e.to_string().contains("valid: scope"), "{e}");

    let mut s = RewardSpec::default();
    s.set_weights_from_args("sentiment=NaN").unwrap();
    let e = s.build(&deal_heads::Registry::with_builtin(), &c).unwrap_err();
    assert!(matches!(reward_error(e), RewardError::BadWeight { .. }));
    let mut s = RewardSpec::default();
    s.set_weights_from_args("sentiment=inf").unwrap();
    assert!(s.build(&deal_heads::Registry::with_builtin(), &c).unwrap_err().to_string().contains("finite"));

    let zero = spec(json!({"weights": {"sentiment": 0.0, "repetition": 0.0}}));
    assert!(zero.build(&deal_heads::Registry::with_builtin(), &c).is_ok(), "all-zero weights are fine for scoring only");
    let e = zero.build(&Registry::with_builtin(), &c).and_then(|r| r.require_heuristic().map(|_| r)).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(reward_error(e), RewardError::NoHeuristic { .. }));
    assert!(msg.contains("non-zero weight") && msg.contains("sentiment"), "{msg}");
    assert!(RewardSpec::default().build(&Registry::with_builtin(), &c).and_then(|r| r.require_heuristic().map(|_| r)).is_err());

    let e = spec(json!({"weights": {"sentiment": 1}, "min": {"sentiment": 1.5}})).build(&deal_heads::Registry::with_builtin(), &c).unwrap_err();
    assert!(e.to_string().contains("min.sentiment") && e.to_string().contains("[0, 1]"), "{e}");
    let e = spec(json!({"weights": {"sentiment": 1}, "temperature": 0})).build(&deal_heads::Registry::with_builtin(), &c).unwrap_err();
    assert!(e.to_string().contains("temperature"), "{e}");

    let e = RewardSpec::from_json(r#"{"weight": {"sentiment": 1}}"#).unwrap_err().to_string();
    assert!(e.contains("unknown field `weight`") && e.contains("weights"), "{e}");
    let e = RewardSpec::from_json(r#"{"weights": {"sentiment": 1}, "combine": "product"}"#).unwrap_err().to_string();
    assert!(e.contains("linear") && e.contains("logsigmoid"), "{e}");
    let e = spec(json!({"weights": {"length": 1}, "heads": {"length": {"target": "long"}}})).build(&deal_heads::Registry::with_builtin(), &c).unwrap_err();
    assert!(e.to_string().contains("head `length`") && e.to_string().contains("invalid type"), "{e}");
    let e = spec(json!({"weights": {"length": 1}, "heads": {"length": 30}})).build(&deal_heads::Registry::with_builtin(), &c).unwrap_err();
    assert!(e.to_string().contains("JSON object"), "{e}");

    let mut s = RewardSpec::default();
    assert!(s.set_weights_from_args("sentiment").unwrap_err().to_string().contains("name=weight"));
    assert!(s.set_weights_from_args("sentiment=lots").unwrap_err().to_string().contains("not a number"));
    s.set_weights_from_args("sentiment=1 length=-0.5,repetition=2").unwrap();
    assert_eq!(s.weights, BTreeMap::from([("sentiment".into(), 1.0), ("length".into(), -0.5), ("repetition".into(), 2.0)]));
    // validation without building (no model needed) sees the same problems
    assert!(spec(json!({"weights": {"length": 1}})).validate(&Registry::with_builtin()).unwrap_err().to_string().contains("missing field `target`"));
}

#[test]
fn linear_combination_reports_raw_normalised_weight_and_total() {
    let s = spec(json!({
        "weights": {"sentiment": 1.0, "keywords": 0.5, "lexicon": 1.0},
        "heads": {"keywords": {"words": ["dog", "park"]}, "repetition": {"n": 2}}
    }));
    let r = s.build(&deal_heads::Registry::with_builtin(), &ctx()).unwrap();
    assert_eq!(r.combine(), Combine::Linear);
    let cands = vec![
        Candidate::new("Tell me about your day.", "I walked my lovely dog in the sunny park, wonderful!"),
        Candidate::new("Tell me about your day.", "The damn dog bit me. Awful, terrible day."),
    ];
    let b = r.score(&cands).unwrap();
    assert!(b[0].total > b[1].total);
    let heads: Vec<&str> = b[0].heads.iter().map(|h| h.head.as_str()).collect();
    assert_eq!(heads, ["keywords", "lexicon", "repetition", "sentiment"], "params-only heads are reported with weight 0");
    for bd in &b {
        let sum: f64 = bd.heads.iter().map(|h| h.contribution).sum();
        assert!((sum - bd.total).abs() < 1e-9);
        for h in &bd.heads {
            assert!((0.0..=1.0).contains(&h.normalized));
            assert!((h.contribution - h.weight * h.normalized as f64).abs() < 1e-9);
        }
        assert!(bd.feasible && bd.value == bd.total);
    }
    let sent = &b[1].heads[3];
    assert!(sent.raw < -0.5 && (sent.normalized - (sent.raw + 1.0) / 2.0).abs() < 1e-6, "{sent:?}");
    assert_eq!(b[1].heads[1].raw, 1.0, "one listed term");
    assert_eq!(b[0].heads[2].weight, 0.0);
    let js = serde_json::to_value(&b[0]).unwrap();
    assert!(js["heads"][0]["details"]["hard"].is_number() && js["total"].is_number() && js["value"].is_number(), "{js}");

    // a negative weight asks for less of it: the order flips
    let neg = spec(json!({"weights": {"sentiment": -1.0}})).build(&deal_heads::Registry::with_builtin(), &ctx()).unwrap();
    let b = neg.score(&cands).unwrap();
    assert_eq!(rank(&b), [1, 0]);
}

/// A test-only head (registered in a private registry, as a user would add one): reads
/// `<key>=<number>` from the response.
struct Echo {
    key: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EchoParams {
    key: String,
}

impl RewardHead for Echo {
    const NAME: &'static str = "echo";
    const DESCRIPTION: &'static str = "the number written after `<key>=` in the response";
    const PARAMS: &'static [ParamInfo] = &[ParamInfo { name: "key", ty: "string", default: "required", doc: "which number" }];
    const EXAMPLE: &'static str = r#"{"key": "a"}"#;
    type Params = EchoParams;
    fn build(p: EchoParams, _ctx: &Arc<HeadContext>) -> deal_heads::Result<Self> {
        Ok(Self { key: p.key })
    }
    fn scale(&self) -> Scale {
        Scale::UNIT
    }
    fn score(&self, cands: &[Candidate]) -> deal_heads::Result<Vec<f32>> {
        cands
            .iter()
            .map(|c| {
                c.response
                    .split_whitespace()
                    .find_map(|kv| kv.strip_prefix(&format!("{}=", self.key)))
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| deal_heads::bad_param("echo", format!("no {}= in {:?}", self.key, c.response)))
            })
            .collect()
    }
}

/// Two instances of the echo head under different names, for combination tests.
struct EchoB(Echo);
impl RewardHead for EchoB {
    const NAME: &'static str = "echo_b";
    const DESCRIPTION: &'static str = Echo::DESCRIPTION;
    const PARAMS: &'static [ParamInfo] = Echo::PARAMS;
    const EXAMPLE: &'static str = Echo::EXAMPLE;
    type Params = EchoParams;
    fn build(p: EchoParams, ctx: &Arc<HeadContext>) -> deal_heads::Result<Self> {
        Echo::build(p, ctx).map(EchoB)
    }
    fn scale(&self) -> Scale {
        Scale::UNIT
    }
    fn score(&self, cands: &[Candidate]) -> deal_heads::Result<Vec<f32>> {
        RewardHead::score(&self.0, cands)
    }
}

fn echo_registry() -> Registry {
    let mut r = Registry::with_builtin();
    r.register::<Echo>();
    r.register::<EchoB>();
    r
}

fn echo_cands(pairs: &[(f32, f32)]) -> Vec<Candidate> {
    pairs.iter().map(|(a, b)| Candidate::new("", format!("a={a} b={b}"))).collect()
}

#[test]
fn a_new_head_is_one_registration_and_errors_list_it() {
    let r = echo_registry();
    assert!(r.names().contains(&"echo"));
    let s = spec(json!({"weights": {"echo": 1.0}, "heads": {"echo": {"key": "a"}}}));
    let w = s.build(&r, &ctx()).unwrap();
    assert_eq!(w.values(&echo_cands(&[(0.25, 0.0)])).unwrap(), [0.25]);
    let e = spec(json!({"weights": {"nope": 1.0}})).build(&r, &ctx()).unwrap_err().to_string();
    assert!(e.contains("echo"), "{e}");
    // a head failing at scoring time is reported with its name
    let e = w.score(&[Candidate::new("", "no number")]).unwrap_err().to_string();
    assert!(e.contains("echo") && e.contains("no a="), "{e}");
}

#[test]
fn logsigmoid_prefers_good_in_all_objectives_where_linear_prefers_lopsided() {
    let r = echo_registry();
    let base = json!({"weights": {"echo": 1.0, "echo_b": 1.0}, "heads": {"echo": {"key": "a"}, "echo_b": {"key": "b"}}});
    let lopsided_vs_balanced = echo_cands(&[(1.0, 0.2), (0.55, 0.6)]);
    let lin = spec(base.clone()).build(&r, &ctx()).unwrap();
    assert_eq!(rank(&lin.score(&lopsided_vs_balanced).unwrap()), [0, 1]);
    let mut ls = base.clone();
    ls["combine"] = json!("logsigmoid");
    let ls = spec(ls).build(&r, &ctx()).unwrap();
    let b = ls.score(&lopsided_vs_balanced).unwrap();
    assert_eq!(rank(&b), [1, 0]);
    // Σ |w|·log σ((s − 0.5)/0.1)
    let want = deal_heads::reward::log_sigmoid(0.5) + deal_heads::reward::log_sigmoid(1.0);
    assert!((b[1].total - want).abs() < 1e-6, "{} vs {want}", b[1].total);
    // a custom reference point moves the bar: with ref b = 0.1 the lopsided one clears it
    let mut moved = base.clone();
    moved["combine"] = json!("logsigmoid");
    moved["ref"] = json!({"echo_b": 0.1});
    moved["temperature"] = json!(0.2);
    let m = spec(moved).build(&r, &ctx()).unwrap();
    assert_eq!(rank(&m.score(&lopsided_vs_balanced).unwrap()), [0, 1]);
    // negative weight under logsigmoid: less of it is better, still saturating
    let mut neg = base;
    neg["combine"] = json!("logsigmoid");
    neg["weights"] = json!({"echo": -1.0});
    let n = spec(neg).build(&r, &ctx()).unwrap();
    assert_eq!(rank(&n.score(&echo_cands(&[(0.9, 0.0), (0.1, 0.0)])).unwrap()), [1, 0]);
}

#[test]
fn floors_rank_candidates_below_them_under_every_candidate_that_meets_them() {
    let r = echo_registry();
    let s = spec(json!({
        "weights": {"echo": 1.0, "echo_b": 0.1},
        "heads": {"echo": {"key": "a"}, "echo_b": {"key": "b"}},
        "min": {"echo_b": 0.3}
    }));
    let w = s.build(&r, &ctx()).unwrap();
    // 0: best total but misses the floor badly; 1: misses slightly; 2, 3: meet it
    let cands = echo_cands(&[(1.0, 0.0), (0.9, 0.25), (0.1, 0.3), (0.2, 0.9)]);
    let b = w.score(&cands).unwrap();
    assert_eq!(b.iter().map(|x| x.feasible).collect::<Vec<_>>(), [false, false, true, true]);
    assert!((b[0].shortfall - 0.3).abs() < 1e-6 && (b[1].shortfall - 0.05).abs() < 1e-6);
    assert!(b[0].total > b[3].total, "the floor, not the total, decides");
    assert_eq!(rank(&b), [3, 2, 1, 0]);
    assert_eq!(b[0].heads[1].min, Some(0.3));
    // a floor alone (no weight) still applies
    let floor_only = spec(json!({"weights": {"echo": 1.0}, "heads": {"echo": {"key": "a"}, "echo_b": {"key": "b"}}, "min": {"echo_b": 0.5}}));
    let w = floor_only.build(&r, &ctx()).unwrap();
    assert_eq!(rank(&w.score(&echo_cands(&[(1.0, 0.4), (0.2, 0.6)])).unwrap()), [1, 0]);
}

#[test]
fn scales_normalise_to_the_unit_interval() {
    let r = Scale::Range { lo: -1.0, hi: 1.0 };
    assert_eq!((r.normalize(-1.0), r.normalize(0.0), r.normalize(1.0), r.normalize(3.0)), (0.0, 0.5, 1.0, 1.0));
    let inv = Scale::Range { lo: 3.0, hi: 0.0 };
    assert_eq!((inv.normalize(0.0), inv.normalize(3.0)), (1.0, 0.0));
    let z = Scale::Zscore { mean: 2.0, std: 0.5 };
    assert!((z.normalize(2.0) - 0.5).abs() < 1e-6);
    assert!((z.normalize(2.5) - 0.8458).abs() < 1e-3, "≈ Φ(1) = 0.841");
    assert!(z.normalize(-100.0) >= 0.0 && z.normalize(100.0) <= 1.0);
    assert!(Scale::Range { lo: 1.0, hi: 1.0 }.validate().is_err());
    assert!(Scale::Zscore { mean: 0.0, std: 0.0 }.validate().is_err());
}

/// A one-thread HTTP server on 127.0.0.1 answering `n` requests with `reply(body)`.
fn serve(n: usize, reply: fn(&serde_json::Value) -> (u16, String)) -> (String, std::thread::JoinHandle<Vec<serde_json::Value>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/score", listener.local_addr().unwrap());
    let handle = std::thread::spawn(move || {
        let mut seen = Vec::new();
        for _ in 0..n {
            let (stream, _) = listener.accept().unwrap();
            let mut r = BufReader::new(stream.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if line.trim().is_empty() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
            }
            let mut body = vec![0; len];
            r.read_exact(&mut body).unwrap();
            let req: serde_json::Value = serde_json::from_slice(&body).unwrap();
            let (status, text) = reply(&req);
            let mut s = stream;
            write!(s, "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{text}", text.len()).unwrap();
            seen.push(req);
        }
        seen
    });
    (url, handle)
}

#[test]
fn http_head_posts_batches_to_a_reward_server() {
    // the server scores a response by its length in characters
    let (url, server) = serve(2, |req| {
        let scores: Vec<usize> = req["responses"].as_array().unwrap().iter().map(|r| r.as_str().unwrap().len()).collect();
        (200, json!({ "scores": scores }).to_string())
    });
    let h = head("http", json!({"url": url, "timeout_ms": 5000, "range": [0, 10]}));
    let cands = vec![
        Candidate::new("p1", "abc"),
        Candidate::new("p2", "abcdefgh").partial(true),
        Candidate::new("p1", "abcdef"),
    ];
    assert_eq!(h.score(&cands).unwrap(), [3.0, 8.0, 6.0]);
    let seen = server.join().unwrap();
    assert_eq!(seen.len(), 2, "one request per distinct prompt");
    assert_eq!(seen[0], json!({"prompt": "p1", "responses": ["abc", "abcdef"], "partial": [false, false]}));
    assert_eq!(seen[1]["partial"], json!([true]));
    assert!((h.scale().normalize(8.0) - 0.8).abs() < 1e-6);
}

#[test]
fn http_head_errors_name_the_server_and_the_problem() {
    // down: bind a port, then free it, so nothing listens there
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let down = head("http", json!({"url": format!("http://127.0.0.1:{port}/score"), "timeout_ms": 1000}));
    let e = down.score(&[Candidate::new("p", "r")]).unwrap_err().to_string();
    assert!(e.contains(&format!("127.0.0.1:{port}")) && e.contains("is the server running"), "{e}");

    // slow: accepts, never answers
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let hold = std::thread::spawn(move || {
        let conn = listener.accept();
        std::thread::sleep(std::time::Duration::from_millis(1500));
        drop(conn);
    });
    let slow = head("http", json!({"url": url, "timeout_ms": 300}));
    let t = std::time::Instant::now();
    let e = slow.score(&[Candidate::new("p", "r")]).unwrap_err().to_string();
    assert!(e.contains("no answer within 300 ms"), "{e}");
    assert!(t.elapsed().as_millis() < 1400, "the timeout was not applied");
    hold.join().unwrap();

    // wrong answers
    let (url, server) = serve(2, |req| {
        if req["prompt"] == "500" {
            (500, "model crashed".into())
        } else {
            (200, json!({"scores": [1.0, 2.0]}).to_string())
        }
    });
    let h = head("http", json!({"url": url}));
    let e = h.score(&[Candidate::new("500", "r")]).unwrap_err().to_string();
    // the status, never the body: a client must not read an internal service's pages through us
    assert!(e.contains("HTTP 500") && !e.contains("model crashed"), "{e}");
    let e = h.score(&[Candidate::new("ok", "r")]).unwrap_err().to_string();
    assert!(e.contains("2 scores for 1 responses"), "{e}");
    server.join().unwrap();

    assert!(build_err("http", json!({"url": "https://example.com"})).contains("http://"));
    assert!(build_err("http", json!({"url": "http://x", "range": [0, 1], "mean": 0, "std": 1})).contains("either"));
    assert!(build_err("http", json!({"url": "http://x", "range": [1, 1]})).contains("different"));
    assert!(build_err("http", json!({"url": "http://x", "timeout_ms": 3_600_000})).contains("30000"));
}
