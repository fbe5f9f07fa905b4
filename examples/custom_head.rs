//! A custom reward head: implement [`RewardHead`] in one file, register it next to the
//! built-in heads, and steer a search with it like any other head.
//!
//! The head here rewards responses whose words are short (plain language): its raw score is
//! the share of words with at most `max_letters` letters.
//!
//! ```sh
//! cargo run --release --example custom_head
//! ```

use std::io::Write;
use std::sync::Arc;

use deal_controllers::{Request, SearchConfig};
use deal_runtime::heads::{Candidate, HeadContext, ParamInfo, Registry, RewardHead, Scale};
use deal_runtime::reward::RewardSpec;
use deal_runtime::{Engine, EngineOptions};
use serde::Deserialize;

/// Params arrive as JSON (`{"heads": {"plain_words": {"max_letters": 5}}}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Params {
    #[serde(default = "five")]
    max_letters: usize,
}

fn five() -> usize {
    5
}

struct PlainWords {
    max_letters: usize,
}

impl RewardHead for PlainWords {
    const NAME: &'static str = "plain_words";
    const DESCRIPTION: &'static str = "share of words with at most `max_letters` letters (higher = plainer)";
    const PARAMS: &'static [ParamInfo] =
        &[ParamInfo { name: "max_letters", ty: "integer", default: "5", doc: "longest word that counts as plain" }];
    const EXAMPLE: &'static str = r#"{"max_letters": 5}"#;
    type Params = Params;

    fn build(p: Params, _ctx: &Arc<HeadContext>) -> deal_runtime::Result<Self> {
        if p.max_letters == 0 {
            return Err(deal_runtime::heads::bad_param(Self::NAME, "`max_letters` must be at least 1"));
        }
        Ok(Self { max_letters: p.max_letters })
    }

    fn scale(&self) -> Scale {
        Scale::UNIT // raw scores are already in [0, 1]
    }

    fn score(&self, cands: &[Candidate]) -> deal_runtime::Result<Vec<f32>> {
        Ok(cands
            .iter()
            .map(|c| {
                let words: Vec<&str> = c.response.split_whitespace().collect();
                if words.is_empty() {
                    return 0.5; // nothing to judge yet
                }
                let plain = words.iter().filter(|w| w.chars().filter(|ch| ch.is_alphabetic()).count() <= self.max_letters);
                plain.count() as f32 / words.len() as f32
            })
            .collect())
    }
}

fn main() -> anyhow::Result<()> {
    let mut registry = Registry::with_builtin();
    registry.register::<PlainWords>();

    let engine = Arc::new(Engine::load(deal_runtime::setup::resolve_model(None)?, &EngineOptions::default())?);
    let spec = RewardSpec::from_json(r#"{"weights": {"plain_words": 1.0}, "heads": {"plain_words": {"max_letters": 4}}}"#)?;
    let reward = spec.build_with(&registry, &HeadContext::with_policy(engine.clone()))?;

    let prompt = "Explain what a computer does.";
    let cfg = SearchConfig { max_tokens: 32, lambda: 3.0, ..Default::default() };
    for controller in ["greedy", "deal"] {
        let req = Request::new(&engine, prompt).with_reward(&reward);
        print!("{controller:>6}: ");
        let mut out = std::io::stdout().lock();
        let o = deal_controllers::search(controller, &cfg, &req, &mut |p| out.write_all(p.as_bytes()).is_ok())?;
        writeln!(out)?;
        let score = o.breakdown.map(|b| b.total).unwrap_or_default();
        writeln!(out, "        plain_words = {score:.3}")?;
    }
    Ok(())
}
