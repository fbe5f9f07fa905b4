//! The local engine as a [`Backend`]: the rows of a search are the rows of one forked
//! [`KvCache`] (the prompt is a shared prefix, never copied), fed together through the
//! engine's scheduler, so concurrent searches share passes. Distributions are views into
//! each pass's logits ([`TokenDist::Logits`]); hidden states come with every pass.

use deal_backend::{Backend, Capabilities, Rows, Step, TextCodec, TokenDist};

use crate::kv_cache::KvCache;
use crate::model::{ForwardOutput, LogitsFor};
use crate::{Engine, Error, Result};

impl Backend for Engine {
    fn model_id(&self) -> String {
        self.name()
    }

    fn codec(&self) -> &dyn TextCodec {
        self.tokenizer()
    }

    fn encode_chat(&self, messages: &[deal_backend::chat::Message]) -> deal_backend::Result<Vec<u32>> {
        Ok(Engine::encode_chat(self, messages)?)
    }

    fn chat_stop_strings(&self) -> Vec<String> {
        self.chat_template().stop_strings()
    }

    fn has_chat_template(&self) -> bool {
        Engine::has_chat_template(self)
    }

    fn counters(&self) -> Vec<deal_backend::Counter> {
        let s = self.scheduler_stats();
        vec![
            deal_backend::Counter {
                name: "deal_engine_passes_total",
                help: "Forward passes of the model (concurrent searches share them).",
                value: s.passes,
            },
            deal_backend::Counter { name: "deal_engine_calls_total", help: "Forward calls served by those passes.", value: s.jobs },
        ]
    }

    fn context_length(&self) -> usize {
        self.model().config().context_length
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            hidden_states: true,
            hidden_size: Some(self.model().config().hidden_size),
            top_n: None,
            cheap_steps: true,
            kv_bytes_per_token: Some(self.model().kv_bytes_per_token()),
        }
    }

    fn start(&self, prompt: &[u32], hidden: bool) -> deal_backend::Result<(Box<dyn Rows + '_>, Step)> {
        let run = || -> Result<(LocalRows<'_>, Step)> {
            let (cache, out) = self.prefill(prompt)?;
            let mut steps = split(out, &[true], true, hidden)?;
            let step = steps.pop().flatten().ok_or_else(|| Error::invalid("prefill returned no row"))?;
            Ok((LocalRows { engine: self, cache, prompt_len: prompt.len() }, step))
        };
        let (rows, step) = run()?;
        Ok((Box::new(rows), step))
    }

    fn prompt_logprobs(&self, tokens: &[u32], top: usize) -> deal_backend::Result<Vec<Option<deal_backend::TokenLogprob>>> {
        Ok(self.teacher_forced_logprobs(tokens, top)?)
    }

    fn start_shared(&self, prompt: &[u32], hidden: bool) -> deal_backend::Result<(Box<dyn Rows + '_>, Step)> {
        let run = || -> Result<(LocalRows<'_>, Step)> {
            let (base, mut step) = match self.shared_prompts().get(prompt) {
                Some(hit) => hit,
                None => {
                    let (mut cache, out) = self.prefill(prompt)?;
                    let step = split(out, &[true], true, true)?.pop().flatten().ok_or_else(|| Error::invalid("prefill returned no row"))?;
                    cache.promote_prefix()?;
                    let base = std::sync::Arc::new(cache);
                    let cfg = self.model().config();
                    let bytes = prompt.len() * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2 * 4;
                    self.shared_prompts().put(prompt, base.clone(), step.clone(), bytes);
                    (base, step)
                }
            };
            if !hidden {
                step.hidden = None;
            }
            Ok((LocalRows { engine: self, cache: base.deep_clone()?, prompt_len: prompt.len() }, step))
        };
        let (rows, step) = run()?;
        Ok((Box::new(rows), step))
    }
}

/// Positions per pass of [`Engine::teacher_forced_logprobs`]: all-position logits take
/// vocabulary × positions floats (32 × 262k × 4 B = 34 MB on Gemma 3).
const SCORE_CHUNK: usize = 32;

impl Engine {
    /// Each token's log-probability given the tokens before it (the first: `None`), with the
    /// `top` most likely alternatives: one single-row cache, [`SCORE_CHUNK`] positions per
    /// pass, the request's cancel flag checked between passes.
    pub fn teacher_forced_logprobs(&self, tokens: &[u32], top: usize) -> Result<Vec<Option<deal_backend::TokenLogprob>>> {
        let mut out = Vec::with_capacity(tokens.len());
        if tokens.is_empty() {
            return Ok(out);
        }
        if tokens.len() > self.model().config().context_length {
            return Err(Error::invalid(format!("{} tokens to score; the context holds {}", tokens.len(), self.model().config().context_length)));
        }
        out.push(None);
        let mut cache = self.model().new_cache(1)?;
        let mut pos = 0;
        // positions 0 .. n-2 predict tokens 1 .. n-1
        for part in tokens[..tokens.len() - 1].chunks(SCORE_CHUNK) {
            deal_backend::cancel::check()?;
            let o = self.forward(&mut cache, &[part.to_vec()], LogitsFor::All)?;
            let logits = o.logits.ok_or_else(|| Error::invalid("the forward pass returned no logits"))?;
            for row in logits.get(0)?.to_vec2::<f32>()? {
                pos += 1;
                out.push(Some(TokenDist::from_logits(row).token_logprob(tokens[pos], top)));
            }
        }
        Ok(out)
    }
}

/// Prefilled prompts kept for [`Backend::start_shared`]: each a single-row cache promoted to
/// a shared prefix (new rows fork from it without copying), least recently used first out,
/// within a byte budget.
#[derive(Default)]
pub struct SharedPrompts {
    entries: std::sync::Mutex<std::collections::VecDeque<SharedPrompt>>,
}

struct SharedPrompt {
    tokens: Vec<u32>,
    cache: std::sync::Arc<KvCache>,
    step: Step,
    bytes: usize,
}

/// KV bytes the shared prompts may hold in all.
const SHARED_PROMPT_BYTES: usize = 64 << 20;

impl SharedPrompts {
    fn get(&self, tokens: &[u32]) -> Option<(std::sync::Arc<KvCache>, Step)> {
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        let i = e.iter().position(|p| p.tokens == tokens)?;
        let hit = e.remove(i)?;
        let out = (hit.cache.clone(), hit.step.clone());
        e.push_back(hit);
        Some(out)
    }

    fn put(&self, tokens: &[u32], cache: std::sync::Arc<KvCache>, step: Step, bytes: usize) {
        if bytes > SHARED_PROMPT_BYTES / 4 {
            return;
        }
        let mut e = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        e.retain(|p| p.tokens != tokens);
        while !e.is_empty() && e.iter().map(|p| p.bytes).sum::<usize>() + bytes > SHARED_PROMPT_BYTES {
            e.pop_front();
        }
        e.push_back(SharedPrompt { tokens: tokens.to_vec(), cache, step, bytes });
    }
}

/// One search's rows on the local engine: a batched KV cache.
pub struct LocalRows<'a> {
    engine: &'a Engine,
    cache: KvCache,
    prompt_len: usize,
}

impl LocalRows<'_> {
    /// The cache the rows live in.
    pub fn cache(&self) -> &KvCache {
        &self.cache
    }
}

impl Rows for LocalRows<'_> {
    fn len(&self) -> usize {
        self.cache.rows()
    }

    fn feed(&mut self, new: &[Vec<u32>], dist: bool, hidden: bool) -> deal_backend::Result<Vec<Option<Step>>> {
        let fed: Vec<bool> = new.iter().map(|t| !t.is_empty()).collect();
        if !fed.contains(&true) {
            return Ok(vec![None; new.len()]);
        }
        let want = if dist { LogitsFor::Last } else { LogitsFor::None };
        let out = self.engine.forward(&mut self.cache, new, want)?;
        Ok(split(out, &fed, dist, hidden)?)
    }

    fn select(&mut self, indices: &[usize]) -> deal_backend::Result<()> {
        Ok(self.cache.select(indices)?)
    }

    fn truncate(&mut self, row: usize, len: usize) -> deal_backend::Result<()> {
        Ok(self.cache.truncate(row, self.prompt_len + len)?)
    }
}

/// One pass's output as a [`Step`] per row (`None` for rows that were not fed): one copy of
/// the pass's logits, shared by its rows.
fn split(out: ForwardOutput, fed: &[bool], dist: bool, hidden: bool) -> Result<Vec<Option<Step>>> {
    let logits = match (dist, out.logits) {
        (true, Some(l)) => {
            let vocab = l.dim(candle_core::D::Minus1)?;
            Some((std::sync::Arc::new(l.flatten_all()?.to_vec1::<f32>()?), vocab))
        }
        _ => None,
    };
    let mut hidden_rows: Vec<Option<Vec<f32>>> = if hidden { out.hidden.to_vec2::<f32>()?.into_iter().map(Some).collect() } else { Vec::new() };
    let mut steps = Vec::with_capacity(fed.len());
    for (r, &f) in fed.iter().enumerate() {
        let Some(i) = out.rows.binary_search(&r).ok().filter(|_| f) else {
            steps.push(None);
            continue;
        };
        let h = hidden_rows.get_mut(i).and_then(Option::take);
        let dist = logits.as_ref().map(|(pass, vocab)| TokenDist::row_of(pass, i, *vocab));
        steps.push(Some(Step { dist, hidden: h }));
    }
    Ok(steps)
}
