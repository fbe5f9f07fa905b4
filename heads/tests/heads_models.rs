//! Reward heads that run a model, on the real default policy: relevance (MiniLM, against
//! sentence-transformers' own numbers), judge (one batched forward over a cached prefix,
//! against a plain prefill of the same tokens), probe (hidden states given or computed,
//! the bundled sentiment probe) and the distillation pipeline behind `deal train-probe`.

use std::sync::{Arc, OnceLock};

use deal_heads::judge::DEFAULT_TEMPLATE;
use deal_heads::probe::{policy_hidden, ProbeWeights};
use deal_heads::relevance::{dot, Relevance};
use deal_heads::{Candidate, DynHead, HeadContext, Registry, Scale};
use deal_engine::model::{LoadOptions, LogitsFor, WeightMode};
use deal_heads::probe_train::{self, DistillOptions};
use deal_heads::reward::RewardSpec;
use deal_engine::{Engine, EngineOptions};
use serde_json::json;

fn load(weights: WeightMode) -> Arc<Engine> {
    let path = deal_engine::setup::resolve_model(None)
        .unwrap_or_else(|e| panic!("the default model is needed for this test: {e} (run `cargo run -- setup`)"));
    let opts = EngineOptions { load: LoadOptions { weights }, ..Default::default() };
    Arc::new(Engine::load(&path, &opts).expect("load model"))
}

/// The policy under `--weights requantize`.
///
/// The measured bars of the model-dependent tests (search quality, steering swings, schema
/// outputs) were set on these numerics; the default `compact` weights move near-ties (its Q6_K
/// matrices are exact where `requantize` rounds them to Q8_0), and the server's tests, the
/// perplexity test and the llama.cpp parity tests run the default.
fn engine() -> &'static Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| load(WeightMode::Requantize))
}

/// The same policy with f32 weights: exact arithmetic, so mechanics compare to ~1e-4.
fn engine_f32() -> &'static Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| load(WeightMode::F32))
}

/// One context around the policy (MiniLM loads once per binary).
fn ctx() -> &'static Arc<HeadContext> {
    static C: OnceLock<Arc<HeadContext>> = OnceLock::new();
    C.get_or_init(|| HeadContext::with_policy(engine().clone()))
}

/// A context around the f32 policy.
fn ctx_f32() -> &'static Arc<HeadContext> {
    static C: OnceLock<Arc<HeadContext>> = OnceLock::new();
    C.get_or_init(|| HeadContext::with_policy(engine_f32().clone()))
}

fn head(ctx: &Arc<HeadContext>, name: &str, params: serde_json::Value) -> Arc<dyn DynHead> {
    Registry::with_builtin().get(name).unwrap().build(&params, ctx).unwrap_or_else(|e| panic!("build {name}: {e}"))
}

#[test]
fn relevance_embeddings_match_sentence_transformers() {
    // fixtures/gen_minilm_ref.py: SentenceTransformer("all-MiniLM-L6-v2").encode(normalize=True)
    let fixture: serde_json::Value = serde_json::from_str(include_str!("fixtures/minilm_ref.json")).unwrap();
    let texts: Vec<&str> = fixture["texts"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    let m = Relevance::embedder(ctx()).unwrap();
    assert!(Arc::ptr_eq(&m, &Relevance::embedder(ctx()).unwrap()), "the embedder is loaded once and shared");
    let emb = m.embed(&texts).unwrap();
    for (i, e) in emb.iter().enumerate() {
        assert_eq!(e.len(), 384);
        let want: Vec<f64> = fixture["embeddings_first8"][i].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        for (g, w) in e.iter().zip(&want) {
            assert!((*g as f64 - w).abs() < 2e-4, "text {i}: {:?} vs {want:?}", &e[..8]);
        }
        for (j, f) in emb.iter().enumerate() {
            let want = fixture["cosine"][i][j].as_f64().unwrap();
            assert!((dot(e, f) as f64 - want).abs() < 2e-4, "cos({i},{j}) {} vs {want}", dot(e, f));
        }
    }
}

#[test]
fn relevance_scores_on_topic_responses_higher_and_caches_the_prompt() {
    let h = head(ctx(), "relevance", json!({}));
    let prompt = "How do I bake bread at home?";
    let cands = vec![
        Candidate::new(prompt, "Mix flour, water, yeast and salt, knead the dough, let it rise, then bake it at 230 C for 35 minutes."),
        Candidate::new(prompt, "The stock market closed higher on Tuesday after the central bank kept rates unchanged."),
        Candidate::new(prompt, "Preheat the oven, shape the loaf and bake until golden.").partial(true),
    ];
    let s = h.score(&cands).unwrap();
    assert!((s[0] - 0.5795).abs() < 1e-3 && s[1].abs() < 0.01, "{s:?} (reference cosines 0.5795, -0.0028)");
    assert!(s[2] > 0.4);
    assert_eq!(h.scale().normalize(s[1].min(-0.001)), 0.0, "negative cosine normalises to 0");
    assert!(Relevance::embedder(ctx()).unwrap().cached() >= 1);

    let t = head(ctx(), "relevance", json!({"target": "financial news about interest rates"}));
    let s = t.score(&cands).unwrap();
    assert!(s[1] > s[0] + 0.2, "{s:?}");
    assert!(Registry::with_builtin().get("relevance").unwrap().build(&json!({"target": " "}), ctx()).is_err());
}

/// The judge's rows: template text before `{response}` (trimmed) and after it.
fn judge_parts(rubric: &str, prompt: &str) -> (String, String, String) {
    let (before, after) = DEFAULT_TEMPLATE.split_once("{response}").unwrap();
    let fill = |s: &str| s.replace("{rubric}", rubric).replace("{prompt}", prompt);
    let b = fill(before);
    let trimmed = b.trim_end().len();
    (b[..trimmed].to_string(), b[trimmed..].to_string(), fill(after))
}

#[test]
fn judge_scores_all_candidates_in_one_forward_exactly_as_separate_prefills() {
    let ctx = ctx_f32();
    let engine = engine_f32().clone();
    let prompt = "My order arrived late. What should I do?";
    let responses = [
        "Please contact support.",
        "I'm sorry to hear that. Please contact our support team and we will gladly help you with a refund.",
        "Not my problem.",
    ];
    let h = head(ctx, "judge", json!({"rubric": "is polite"}));
    let cands: Vec<Candidate> = responses.iter().map(|r| Candidate::new(prompt, *r)).collect();
    let batched = h.score(&cands).unwrap();
    let (before, lead, after) = judge_parts("is polite", prompt);
    let tok = engine.tokenizer();
    for (i, r) in responses.iter().enumerate() {
        // the same tokens in one plain prefill
        let mut ids = engine.encode_prompt(&before).unwrap();
        ids.extend(tok.encode(&format!("{lead}{r}{after}"), false).unwrap());
        let (_, out) = engine.prefill(&ids).unwrap();
        let logits = out.logits.unwrap().get(0).unwrap().to_vec1::<f32>().unwrap();
        let lse = |words: &[&str]| {
            let ids: Vec<u32> =
                words.iter().filter_map(|w| tok.encode(w, false).ok().filter(|t| t.len() == 1).map(|t| t[0])).collect();
            let m = ids.iter().map(|&i| logits[i as usize]).fold(f32::NEG_INFINITY, f32::max);
            m + ids.iter().map(|&i| (logits[i as usize] - m).exp()).sum::<f32>().ln()
        };
        let margin = lse(&[" Yes", "Yes", " yes", "yes"]) - lse(&[" No", "No", " no", "no"]);
        let want = 1.0 / (1.0 + (-margin).exp());
        assert!((batched[i] - want).abs() < 1e-3, "candidate {i}: batched {} vs prefill {want}", batched[i]);
        let alone = h.score(&cands[i..=i]).unwrap()[0];
        assert!((batched[i] - alone).abs() < 1e-3, "candidate {i}: batched {} vs alone {alone}", batched[i]);
    }
    // more candidates than one judge pass takes: scored in chunks, each score unchanged
    let many: Vec<Candidate> = (0..deal_heads::judge::JUDGE_CHUNK_ROWS + 5).map(|i| cands[i % 3].clone()).collect();
    let chunked = h.score(&many).unwrap();
    for (i, s) in chunked.iter().enumerate() {
        assert!((s - batched[i % 3]).abs() < 1e-3, "candidate {i} of {}: {s} vs {}", many.len(), batched[i % 3]);
    }
    // candidates of different prompts are grouped, each group one forward
    let mixed = vec![cands[1].clone(), Candidate::new("Where is my parcel?", responses[1]), cands[2].clone()];
    let s = h.score(&mixed).unwrap();
    assert!((s[0] - batched[1]).abs() < 1e-3 && (s[2] - batched[2]).abs() < 1e-3);
}

#[test]
fn judge_on_the_default_policy_prefers_polite_replies() {
    let h = head(ctx(), "judge", json!({"rubric": "is polite"}));
    let prompt = "My order arrived late. What should I do?";
    let polite = [
        "I'm sorry to hear that. Please contact our support team and we will gladly help you with a refund.",
        "Thank you for your patience! Could you please send us your order number so we can look into it?",
        "We apologize for the delay. Kindly reach out to customer service and they will assist you.",
    ];
    let rude = [
        "Not my problem. Stop whining and wait like everyone else.",
        "Shut up, idiot. Figure it out yourself.",
        "Whatever. Nobody cares about your stupid order.",
    ];
    let cands: Vec<Candidate> = polite.iter().chain(&rude).map(|r| Candidate::new(prompt, *r)).collect();
    let s = h.score(&cands).unwrap();
    let min_polite = s[..3].iter().copied().fold(f32::INFINITY, f32::min);
    let max_rude = s[3..].iter().copied().fold(f32::NEG_INFINITY, f32::max);
    assert!(min_polite > max_rude + 0.05, "polite {:?} vs rude {:?}", &s[..3], &s[3..]);

    let err = |p: serde_json::Value, c: &Arc<HeadContext>| Registry::with_builtin().get("judge").unwrap().build(&p, c).err().unwrap().to_string();
    assert!(err(json!({"rubric": "x", "template": "no placeholder"}), ctx()).contains("{response}"));
    assert!(err(json!({"rubric": "x", "template": "{response} and {response}?"}), ctx()).contains("exactly once"));
    assert!(err(json!({"rubric": "  "}), ctx()).contains("empty"));
    assert!(err(json!({"rubric": "x", "model": "/nonexistent.gguf"}), ctx()).contains("does not exist"));
    assert!(err(json!({"rubric": "x"}), &HeadContext::new()).contains("no policy"));
}

#[test]
fn probe_reads_given_hidden_states_and_computes_missing_ones_the_same() {
    let ctx = ctx_f32();
    let engine = engine_f32().clone();
    let h = head(ctx, "probe", json!({}));
    assert!(h.reads_hidden());
    // hidden states as the search has them: decode steps of forked rows
    let prompt = "The hotel was";
    let (mut cache, _) = engine.prefill(&engine.encode_prompt(prompt).unwrap()).unwrap();
    cache.fork(3).unwrap();
    let rows: Vec<Vec<u32>> = [" lovely and the staff were kind", " dirty, noisy and the staff were rude", " near the station"]
        .iter()
        .map(|t| engine.tokenizer().encode(t, false).unwrap())
        .collect();
    let out = engine.forward(&mut cache, &rows, LogitsFor::None).unwrap();
    let hidden = out.hidden.to_vec2::<f32>().unwrap();
    let with: Vec<Candidate> = rows
        .iter()
        .zip(&hidden)
        .map(|(r, h)| Candidate::new(prompt, engine.tokenizer().decode(r, true).unwrap()).with_tokens(r.clone()).with_hidden(h.clone()))
        .collect();
    let without: Vec<Candidate> = with.iter().map(|c| Candidate { hidden: None, ..c.clone() }).collect();
    let a = h.score(&with).unwrap();
    let b = h.score(&without).unwrap();
    for (x, y) in a.iter().zip(&b) {
        assert!((x - y).abs() < 1e-3, "{a:?} vs {b:?}");
    }
    // the probe is w·h + b: scoring a given hidden state is exactly that
    let p = ProbeWeights::from_bytes(ProbeWeights::bundled_bytes(), "bundled").unwrap();
    assert!((p.apply(&hidden[0]) - a[0]).abs() < 1e-5);
    assert!(a[0] > a[1], "positive continuation above the negative one: {a:?}");
    // a wrong-sized hidden state is an error, not a silent score
    let bad = Candidate::new(prompt, "x").with_hidden(vec![0.0; 10]);
    assert!(h.score(&[bad]).unwrap_err().to_string().contains("640"));
    // heads that read hidden states make the reward ask for them
    let r = RewardSpec::from_value(json!({"weights": {"probe": 1.0}})).unwrap().build(&Registry::with_builtin(), ctx).unwrap();
    assert!(r.needs_hidden());
}

#[test]
fn bundled_sentiment_probe_agrees_with_its_teacher_on_unseen_text() {
    let p = ProbeWeights::from_bytes(ProbeWeights::bundled_bytes(), "bundled").unwrap();
    assert_eq!(p.scale, Scale::Range { lo: -1.0, hi: 1.0 });
    assert_eq!(p.meta.get("teacher").map(String::as_str), Some("sentiment"));
    let probe = head(ctx(), "probe", json!({}));
    let sentiment = head(ctx(), "sentiment", json!({}));
    // hand-written continuations, none from the training prompts
    let texts = [
        ("The picnic", " was lovely, the sun was warm and everyone laughed together."),
        ("The picnic", " was ruined by rain, the food was soggy and we argued all afternoon."),
        ("My new job", " is wonderful, my colleagues are kind and I love the work."),
        ("My new job", " is awful, my boss shouts at me and I hate every minute."),
        ("The letter said", " that the library will open at nine on Monday."),
        ("Our holiday", " was a dream: beautiful beaches, great food and happy kids."),
        ("Our holiday", " was a disaster: lost luggage, a terrible hotel and sick kids."),
        ("The report", " lists the quarterly figures for each regional office."),
    ];
    let cands: Vec<Candidate> = texts.iter().map(|(p, r)| Candidate::new(*p, *r)).collect();
    let ps = probe.score(&cands).unwrap();
    let ts = sentiment.score(&cands).unwrap();
    let rho = probe_train::spearman(&ps.iter().map(|&v| v as f64).collect::<Vec<_>>(), &ts.iter().map(|&v| v as f64).collect::<Vec<_>>());
    assert!(rho > 0.6, "Spearman {rho:.2}: probe {ps:?} vs teacher {ts:?}");
    for (pos, neg) in [(0, 1), (2, 3), (5, 6)] {
        assert!(ps[pos] > ps[neg], "pair {pos}/{neg}: {ps:?}");
    }
}

#[test]
fn probe_files_round_trip_and_mismatches_are_rejected() {
    let p = ProbeWeights {
        weight: vec![0.5; 10],
        bias: -1.0,
        scale: Scale::Zscore { mean: 0.2, std: 0.3 },
        meta: [("teacher".to_string(), "test".to_string())].into(),
    };
    let dir = std::env::temp_dir().join(format!("deal-probe-test-{}", std::process::id()));
    let path = dir.join("p.safetensors");
    p.save(&path).unwrap();
    let q = ProbeWeights::load(&path).unwrap();
    assert_eq!((q.weight.clone(), q.bias, q.scale), (p.weight.clone(), p.bias, p.scale));
    assert_eq!(q.meta["teacher"], "test");
    assert_eq!(q.meta["hidden_size"], "10");
    // no policy: the file alone is fine, and a given hidden state scores
    let h = head(&HeadContext::new(), "probe", json!({"path": path}));
    assert_eq!(h.score(&[Candidate::new("", "").with_hidden(vec![1.0; 10])]).unwrap(), [4.0]);
    let e = h.score(&[Candidate::new("", "no hidden")]).unwrap_err().to_string();
    assert!(e.contains("no policy"), "{e}");
    // with the 640-wide policy it is rejected at validation
    let e = Registry::with_builtin().get("probe").unwrap().build(&json!({"path": path}), ctx()).err().unwrap().to_string();
    assert!(e.contains("10 weights") && e.contains("640"), "{e}");
    let e = Registry::with_builtin().get("probe").unwrap().build(&json!({"path": dir.join("nope")}), ctx()).err().unwrap().to_string();
    assert!(e.contains("does not exist"), "{e}");
    std::fs::write(&path, b"not a safetensors file").unwrap();
    assert!(ProbeWeights::load(&path).is_err());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn length_counts_policy_tokens_when_candidates_carry_none() {
    let h = head(ctx(), "length", json!({"target": 6, "unit": "tokens"}));
    let text = "The lighthouse keeper climbed the stairs.";
    let n = engine().tokenizer().encode(text, false).unwrap().len();
    let d = h.score_with_details(&[Candidate::new("", text)]).unwrap();
    assert_eq!(d[0].1[0], ("length", n as f32));
}

#[test]
fn distillation_labels_policy_texts_with_the_teacher_and_fits_a_probe() {
    let engine = engine().clone();
    let teacher = head(ctx(), "sentiment", json!({}));
    let opts = DistillOptions { n: 24, max_tokens: 16, every: 8, per_prompt: 6, ..Default::default() };
    let mut calls = 0;
    let records = probe_train::distill(engine.as_ref(), &*teacher, &opts, &mut |_| calls += 1).unwrap();
    assert_eq!(calls, 4, "one batch per prompt");
    let groups: std::collections::BTreeSet<&str> = records.iter().map(|r| r.group.as_deref().unwrap()).collect();
    assert_eq!(groups.len(), 4);
    assert!(records.len() >= 24, "at least one record per text, got {}", records.len());
    for r in &records {
        let h = r.hidden.as_ref().unwrap();
        assert_eq!(h.len(), 640);
        // the label is the teacher's score of exactly this text
        let want = teacher.score(&[Candidate::new(r.prompt.clone(), r.response.clone())]).unwrap()[0];
        assert_eq!(r.score, want, "{:?}", r.response);
    }
    // the decode step's hidden state is the one a fresh forward of the text gives
    let sample: Vec<Candidate> = records.iter().take(4).map(|r| Candidate::new(r.prompt.clone(), r.response.clone())).collect();
    let fresh = policy_hidden(engine.as_ref(), &sample.iter().collect::<Vec<_>>()).unwrap();
    for (r, f) in records.iter().zip(&fresh) {
        let h = r.hidden.as_ref().unwrap();
        let cos = dot(h, f) / (dot(h, h).sqrt() * dot(f, f).sqrt());
        assert!(cos > 0.98, "cosine {cos} for {:?}", r.response);
    }
    // JSONL round trip, then a fit on the records
    let path = std::env::temp_dir().join(format!("deal-distill-{}.jsonl", std::process::id()));
    probe_train::write_jsonl(&path, &records).unwrap();
    let back = probe_train::read_jsonl(&path).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(back.len(), records.len());
    assert_eq!((back[0].score, &back[0].response, back[0].hidden.is_none()), (records[0].score, &records[0].response, true));
    // `deal train-probe --data` computes hidden states of file records in batches
    let mut some = back[..6].to_vec();
    let mut seen = Vec::new();
    probe_train::attach_hidden(engine.as_ref(), &mut some, 4, &mut |n| seen.push(n)).unwrap();
    assert_eq!(seen, [4, 6]);
    for (r, orig) in some.iter().zip(&records) {
        let (h, o) = (r.hidden.as_ref().unwrap(), orig.hidden.as_ref().unwrap());
        assert!(dot(h, o) / (dot(h, h).sqrt() * dot(o, o).sqrt()) > 0.98);
    }
    let (w, _, rep) = probe_train::fit(&records, &Default::default()).unwrap();
    assert_eq!(w.len(), 640);
    assert_eq!(rep.groups_test, 1);
    assert!(rep.r2_train.is_finite() && rep.r2_test.is_finite() && rep.n_train + rep.n_test == records.len());
}
