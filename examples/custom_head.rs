//! A custom reward head: implement [`RewardHead`] in one file, register it next to the
//! built-in heads, steer a search with it like any other head, and serve it over the
//! OpenAI-compatible endpoint (registries are passed in: no fork of deal needed).
//!
//! The head here rewards responses whose words are short (plain language): its raw score is
//! the share of words with at most `max_letters` letters.
//!
//! ```sh
//! cargo run --release --example custom_head            # library + one HTTP request
//! cargo run --release --example custom_head -- --serve # keep serving on :8080
//! ```

use std::io::Write;
use std::sync::Arc;

use deal_controllers::SearchConfig;
use deal_driver::{Driver, Event, Prompt, Registries};
use deal_engine::{Engine, EngineOptions};
use deal_heads::reward::RewardSpec;
use deal_heads::{Candidate, HeadContext, ParamInfo, Registry, RewardHead, Scale};
use deal_server::{Server, ServerConfig};
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

    fn build(p: Params, _ctx: &Arc<HeadContext>) -> deal_heads::Result<Self> {
        if p.max_letters == 0 {
            return Err(deal_heads::bad_param(Self::NAME, "`max_letters` must be at least 1"));
        }
        Ok(Self { max_letters: p.max_letters })
    }

    fn scale(&self) -> Scale {
        Scale::UNIT // raw scores are already in [0, 1]
    }

    fn score(&self, cands: &[Candidate]) -> deal_heads::Result<Vec<f32>> {
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
    // 1. The registries: the built-in heads plus ours, the built-in controllers.
    let mut heads = Registry::with_builtin();
    heads.register::<PlainWords>();
    let registries = Registries::new(heads, deal_controllers::Registry::builtin());

    // 2. One driver over the local engine; the library, the CLI and the server all run requests
    //    through it.
    let engine = Arc::new(Engine::load(deal_engine::setup::resolve_model(None)?, &EngineOptions::default())?);
    let driver = Driver::new(engine.clone(), registries, HeadContext::with_policy(engine.clone()));

    // 3. As a library: greedy vs deal steered by the new head.
    let spec = RewardSpec::from_json(r#"{"weights": {"plain_words": 1.0}, "heads": {"plain_words": {"max_letters": 4}}}"#)?;
    let prompt = "Explain what a computer does.";
    let tokens = engine.encode_prompt(prompt)?;
    for controller in ["greedy", "deal"] {
        let req = deal_driver::Request::new(
            vec![Prompt { tokens: tokens.clone(), text: prompt.into() }],
            1,
            controller,
            SearchConfig { max_tokens: 32, lambda: 3.0, ..Default::default() },
            Some(spec.clone()),
        );
        print!("{controller:>6}: ");
        let mut out = std::io::stdout().lock();
        let o = driver.run(&req, None, &mut |ev| match ev {
            Event::Text { text, .. } => out.write_all(text.as_bytes()).is_ok(),
            _ => true,
        })?;
        writeln!(out)?;
        let score = o.first().and_then(|o| o.breakdown.as_ref()).map(|b| b.total).unwrap_or_default();
        writeln!(out, "        plain_words = {score:.3}")?;
    }

    // 4. Over HTTP: the same driver served by deal-server; a client steers with the new head
    //    in `alignment` (`--serve` keeps the server up on port 8080 for curl or the openai
    //    client).
    let serve = std::env::args().any(|a| a == "--serve");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let port = if serve { 8080 } else { 0 };
        let server = Server::start(driver, ServerConfig { port, ..Default::default() }).await?;
        let body = r#"{"model": "deal", "prompt": "Explain what a computer does.", "max_tokens": 24,
            "alignment": {"controller": "deal", "weights": {"plain_words": 1.0},
                          "heads": {"plain_words": {"max_letters": 4}}, "params": {"lambda": 3}}}"#;
        let addr = server.addr;
        let reply = tokio::task::spawn_blocking(move || post(addr, "/v1/completions", body)).await??;
        println!("POST /v1/completions -> {reply}");
        if serve {
            eprintln!("serving the custom head on http://{addr} (Ctrl-C stops)");
            server.run_until_ctrl_c().await
        } else {
            server.stop().await
        }
    })?;
    Ok(())
}

/// A minimal HTTP/1.1 POST (the example needs no client library); returns the body.
fn post(addr: std::net::SocketAddr, path: &str, body: &str) -> std::io::Result<String> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect(addr)?;
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out.split_once("\r\n\r\n").map_or(out.clone(), |(_, b)| b.to_string()))
}
