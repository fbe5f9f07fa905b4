//! The evaluations on the default model: each measures what it says (steering shows up in
//! its numbers), an interrupted sweep keeps what finished, and the plots are real images.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use deal_controllers::SearchConfig;
use deal_engine::{Engine, EngineOptions};
use deal_eval::measure::{self, Runner};
use deal_heads::HeadContext;
use deal_eval::sweep::{self, Grid, Sweep};
use deal_eval::task::Task;
use deal_eval::{compare, keywords, plot};
use serde_json::{json, Value};

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::load(deal_engine::setup::ensure_default_model().expect("default model"), &EngineOptions::default()).expect("load"))
}

fn cfg(max_tokens: usize) -> SearchConfig {
    SearchConfig { max_tokens, stop: vec!["\n".into()], ..Default::default() }
}

fn length_params() -> BTreeMap<String, Value> {
    BTreeMap::from([("length".to_string(), json!({"target": 4, "tolerance": 4}))])
}

const PROMPTS: &str = "The weather today\nMy neighbour's dog\nThe meeting this morning\n";

#[test]
fn keywords_eval_shows_deal_covering_more_than_greedy() {
    let stop = AtomicBool::new(false);
    let runner = Runner::new(engine(), HeadContext::new(), vec!["keywords".into()], BTreeMap::new(), &stop);
    let task = Task::keywords(deal_bench::search::CONCEPTS_TEXT).take(6);
    let settings = keywords::settings(&["greedy".into(), "deal".into()], &cfg(16), &runner.registry).unwrap();
    assert!(settings[0].weights.is_empty() && settings[1].weights["keywords"] == 1.0);
    let mut calls = 0;
    let ms = measure::interleaved(&runner, &task, &settings, &mut |_, _| calls += 1).unwrap().expect("not stopped");
    assert_eq!(calls, 12);
    let (g, d) = (&ms[0], &ms[1]);
    assert_eq!((g.prompts, d.prompts), (6, 6));
    assert!(d.scores["keywords"] > g.scores["keywords"], "soft coverage: deal {} vs greedy {}", d.scores["keywords"], g.scores["keywords"]);
    assert!(d.hard_coverage.unwrap() >= g.hard_coverage.unwrap());
    // the lookahead costs rows (k·l per token at the defaults) and some passes (the
    // pipelined commit rule keeps them near one per token)
    assert!(d.rows_per_token > 4.0 * g.rows_per_token, "the lookahead costs rows: {} vs {}", d.rows_per_token, g.rows_per_token);
    assert!(d.passes_per_token > g.passes_per_token, "the lookahead costs passes: {} vs {}", d.passes_per_token, g.passes_per_token);
    assert!(g.tokens_per_sec > 0.0 && d.tokens_per_sec > 0.0);
    let table = keywords::table(&ms);
    assert!(table.lines().count() == 4 && table.contains("| deal |"), "{table}");
}

#[test]
fn a_sweep_moves_along_the_trade_off_and_keeps_partial_results() {
    let stop = AtomicBool::new(false);
    let heads = vec!["sentiment".to_string(), "length".to_string()];
    let runner = Runner::new(engine(), HeadContext::new(), heads.clone(), length_params(), &stop);
    let task = Task::prompts(PROMPTS);
    let s = Sweep {
        heads,
        grid: Grid::Simplex(2),
        controller: "deal".into(),
        config: SearchConfig { k: 3, beams: 1, lookahead: 2, ..cfg(10) },
        references: true,
        reference_point: vec![],
    };
    let mut saved = Vec::new();
    let r = sweep::run(&runner, &task, &s, &mut |_, _| {}, &mut |r| {
        saved.push((r.points.len(), r.best_of_n.len()));
        Ok(())
    })
    .unwrap();
    assert!(r.complete);
    // greedy, 2 weight vectors, then best-of-N at each: saved after every one
    assert_eq!(saved, vec![(0, 0), (1, 0), (2, 0), (2, 1), (2, 2)]);
    let all_sentiment = r.points.iter().find(|m| m.weights["sentiment"] == 1.0).unwrap();
    let all_length = r.points.iter().find(|m| m.weights["length"] == 1.0).unwrap();
    assert!(all_sentiment.scores["sentiment"] > all_length.scores["sentiment"], "{:?} vs {:?}", all_sentiment.scores, all_length.scores);
    assert!(all_length.scores["length"] > all_sentiment.scores["length"], "{:?} vs {:?}", all_length.scores, all_sentiment.scores);
    assert!(r.front.hypervolume > 0.0 && !r.front.indices.is_empty());
    let n = r.best_of_n_n.unwrap();
    assert!(n >= 2, "deal generates more tokens than greedy, so best-of-N gets N = {n}");
    let g = r.greedy.as_ref().unwrap();
    assert!(r.best_of_n[0].tokens_generated <= 1.05 * n as f64 * g.tokens.max(10.0), "N samples of at most max_tokens each");

    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval-sweep");
    std::fs::create_dir_all(&dir).unwrap();
    let [png, svg] = plot::front(&r, &dir.join("front")).unwrap();
    let png = std::fs::read(png).unwrap();
    assert!(png.starts_with(b"\x89PNG") && png.len() > 5_000, "{} bytes", png.len());
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.contains("<svg") && svg.contains("sentiment") && svg.contains("best_of_n"), "the SVG has its labels");

    // interrupted after the first weight vector: the report keeps it and says so
    let stop = AtomicBool::new(false);
    let runner = Runner::new(engine(), HeadContext::new(), s.heads.clone(), length_params(), &stop);
    let s = Sweep { references: false, ..s };
    let per = task.items.len();
    let r = sweep::run(
        &runner,
        &task,
        &s,
        &mut |done, _| {
            if done == per {
                stop.store(true, Ordering::Relaxed)
            }
        },
        &mut |_| Ok(()),
    )
    .unwrap();
    assert!(!r.complete);
    assert_eq!(r.points.len(), 1, "the finished weight vector is kept");
}

#[test]
fn compare_puts_every_family_on_a_tokens_axis() {
    let stop = AtomicBool::new(false);
    let runner = Runner::new(engine(), HeadContext::new(), vec!["sentiment".into()], BTreeMap::new(), &stop);
    let task = Task::prompts(PROMPTS).take(2);
    let f = compare::Families { best_of_n: vec![4], args: vec![4], deal: vec![(2, 2)] };
    let weights = BTreeMap::from([("sentiment".to_string(), 1.0)]);
    let settings = compare::settings(&f, &cfg(10), &weights);
    let points = compare::run(&runner, &task, &settings, &mut |_, _| {}).unwrap().unwrap();
    let families: Vec<&str> = points.iter().map(|p| p.family.as_str()).collect();
    assert_eq!(families, ["greedy", "best_of_n", "args", "deal"]);
    let tokens = |fam: &str| points.iter().find(|p| p.family == fam).unwrap().measured.tokens_generated;
    assert!(tokens("best_of_n") > 2.0 * tokens("greedy"), "4 samples spend more tokens than one");
    assert!(tokens("deal") > tokens("greedy"), "rollouts are tokens spent");
    assert!(points.iter().all(|p| p.measured.reward.is_some_and(|r| (0.0..=1.0).contains(&r))));
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("eval-compare");
    std::fs::create_dir_all(&dir).unwrap();
    let [png, _] = plot::compare(&points, &dir.join("compare")).unwrap();
    assert!(std::fs::read(png).unwrap().starts_with(b"\x89PNG"));
    assert!(compare::table(&points).contains("deal k=2 l=2"));
    assert!(plot::compare(&[], &dir.join("empty")).is_err(), "nothing to plot is an error, not a panic");
}
