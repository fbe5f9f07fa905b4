//! Embedding deal in a Rust application: load a model, build a weighted reward from heads,
//! run the DeAL controller with streaming, and read the per-head breakdown. (Programs that
//! take requests from users run them through `deal_driver::Driver` instead, as
//! `custom_head.rs` does.)
//!
//! ```sh
//! cargo run --release --example embed -- "Write a cheerful sentence about the sea."
//! ```

use std::io::Write;
use std::sync::Arc;

use deal_backend::chat::{Message, Role};
use deal_controllers::{Request, SearchConfig};
use deal_engine::{Engine, EngineOptions};
use deal_heads::reward::RewardSpec;
use deal_heads::{HeadContext, Registry};

fn main() -> anyhow::Result<()> {
    let prompt = std::env::args().nth(1).unwrap_or_else(|| "Write a cheerful sentence about the sea.".into());

    // 1. The model: the default Gemma 3 270M (fetched on first use) or any GGUF path.
    let path = deal_engine::setup::resolve_model(None)?;
    let engine = Arc::new(Engine::load(&path, &EngineOptions::default())?);

    // 2. The reward: a weight vector over heads, with head params. Validated here.
    let spec = RewardSpec::from_json(
        r#"{"weights": {"sentiment": 1.0, "length": 0.5},
            "heads": {"length": {"target": 15, "unit": "words"}}}"#,
    )?;
    let heads = HeadContext::with_policy(engine.clone());
    let reward = spec.build(&Registry::with_builtin(), &heads)?;

    // 3. The prompt as a chat turn, rendered by the model's template (or deal's plain one), and
    //    the search: DeAL with 4 candidates per beam, 2 beams, 4 lookahead tokens.
    let tokens = engine.encode_chat(&[Message::new(Role::User, prompt.clone())])?;
    let stop = engine.chat_template().stop_strings();
    let cfg = SearchConfig { max_tokens: 32, stop, k: 4, beams: 2, lookahead: 4, lambda: 2.0, ..Default::default() };
    let req = Request::new(engine.as_ref(), &prompt).with_tokens(&tokens).with_reward(&reward);

    // 4. Run it; committed text streams through the callback (return false to stop).
    let mut out = std::io::stdout().lock();
    let outcome = deal_controllers::Registry::builtin().search("deal", &cfg, &req, &mut |piece| {
        out.write_all(piece.text.as_bytes()).and_then(|_| out.flush()).is_ok()
    })?;
    writeln!(out)?;

    // 5. Why this text: the per-head breakdown and what the search cost.
    if let Some(b) = &outcome.breakdown {
        for h in &b.heads {
            println!("{:<10} raw {:>7.3}  normalised {:.3} x weight {:.2} = {:.3}", h.head, h.raw, h.normalized, h.weight, h.contribution);
        }
        println!("total {:.3}", b.total);
    }
    let s = &outcome.stats;
    println!("{} forward passes over {} rows for {} tokens ({:.2}s)", s.forward_passes, s.rows_evaluated, s.tokens_committed, s.wall_secs);
    Ok(())
}
