#![warn(missing_docs)]
//! # deal-remote
//!
//! A [`deal_backend::Backend`] over an OpenAI-compatible `/v1/completions` endpoint, for
//! users whose model lives in an engine cluster (vLLM, SGLang, llama.cpp's server, or
//! another deal): deal stays a stateless controller; the engine keeps the weights and the KV
//! cache (its prefix cache shares the prompt between the rows of a search).
//!
//! What the engine gives, and what is claimed from it:
//! - next-token candidates: the top-N `logprobs` of one generated position (N ≤ 20 by
//!   default, `top_n`); tokens outside them count as impossible ([`TokenDist::TopN`]);
//! - lookaheads: one request per search step with every row as a prompt of token ids,
//!   `max_tokens = l`, temperature 0: the engine's greedy continuation is the lookahead;
//! - prompts as token ids (llama.cpp's server and vLLM take them), tokenized here with the
//!   model's own tokenizer, read from its GGUF (no weights are loaded);
//! - no hidden states: heads that read them (`probe`) are refused, naming the capability.
//!
//! Responses in llama.cpp's shape (`logprobs.content[].top_logprobs[].id`) and in OpenAI's
//! legacy shape with token ids as `token_id:N` (vLLM's `return_tokens_as_token_ids`) are both
//! read. Requests are bounded ([`RemoteOptions::max_inflight`]), time out, and are retried
//! with backoff on connection failures and 5xx; a failure becomes
//! [`deal_backend::Error::Upstream`] / [`deal_backend::Error::Timeout`], never a hang.

mod wire;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use deal_backend::chat::Message;
use deal_backend::{Backend, Capabilities, Counter, Error, Result, Rows, Step, TextCodec, TokenDist};
use deal_engine::chat::ChatTemplate;
use deal_engine::gguf::GgufFile;
use deal_engine::model::ModelConfig;
use deal_engine::tokenizer::GgufTokenizer;

/// How to reach the engine.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// Base URL, e.g. `http://127.0.0.1:8081` (`/v1/completions` is appended).
    pub url: String,
    /// The `model` field sent (the engine's served model name).
    pub model: String,
    /// `Authorization: Bearer` key, when the engine wants one.
    pub api_key: Option<String>,
    /// Log-probabilities asked for per position (OpenAI and vLLM allow at most 20).
    pub top_n: usize,
    /// Whole-request timeout.
    pub timeout: Duration,
    /// Retries after a connection failure or a 5xx (with backoff 100 ms, 400 ms, ...).
    pub retries: usize,
    /// Requests in flight at once from this process (beyond: callers wait their turn).
    pub max_inflight: usize,
    /// Context length of the engine's slots, when smaller than the model's.
    pub context_length: Option<usize>,
}

impl RemoteOptions {
    /// Defaults for an engine at `url` serving `model`.
    pub fn new(url: impl Into<String>, model: impl Into<String>) -> Self {
        Self {
            url: url.into().trim_end_matches('/').to_string(),
            model: model.into(),
            api_key: None,
            top_n: 20,
            timeout: Duration::from_secs(60),
            retries: 2,
            max_inflight: 8,
            context_length: None,
        }
    }
}

/// A model served by a remote engine; see the crate docs.
pub struct RemoteBackend {
    opts: RemoteOptions,
    agent: ureq::Agent,
    tokenizer: GgufTokenizer,
    chat: ChatTemplate,
    context_length: usize,
    inflight: Mutex<usize>,
    slot_free: Condvar,
    calls: AtomicU64,
    rows: AtomicU64,
    failures: AtomicU64,
}

impl RemoteBackend {
    /// A backend for the engine `opts` names, whose model's tokenizer and chat template are
    /// read from the GGUF at `vocab` (the same model file, or any GGUF with its vocabulary;
    /// only metadata is read).
    pub fn new(opts: RemoteOptions, vocab: &Path) -> Result<Self> {
        if !(opts.url.starts_with("http://")) {
            return Err(Error::invalid(format!("engine URL {:?}: only http:// is supported (put TLS in a local proxy)", opts.url)));
        }
        if opts.top_n == 0 || opts.max_inflight == 0 {
            return Err(Error::invalid("top_n and max_inflight must be at least 1"));
        }
        let f = GgufFile::open(vocab)?;
        let tokenizer = GgufTokenizer::from_gguf(f.content())?;
        let source = deal_engine::gguf::opt(f.content(), "tokenizer.chat_template", |c, k| {
            deal_engine::gguf::get_str(c, k).map(str::to_string)
        })?;
        let chat = ChatTemplate::new(source.as_deref(), &tokenizer).or_else(|_| ChatTemplate::new(None, &tokenizer))?;
        let model_ctx = ModelConfig::from_gguf(f.content()).map(|c| c.context_length).unwrap_or(4096);
        let context_length = opts.context_length.map_or(model_ctx, |c| c.min(model_ctx));
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(opts.timeout))
            .http_status_as_error(false)
            .max_redirects(0)
            .build()
            .into();
        Ok(Self {
            opts,
            agent,
            tokenizer,
            chat,
            context_length,
            inflight: Mutex::new(0),
            slot_free: Condvar::new(),
            calls: AtomicU64::new(0),
            rows: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// The options it was built with.
    pub fn options(&self) -> &RemoteOptions {
        &self.opts
    }

    /// One completions call: every prompt continued by up to `max_tokens` greedy tokens, with
    /// each position's top-N log-probabilities. One entry per prompt, in order.
    pub fn complete(&self, prompts: &[Vec<u32>], max_tokens: usize) -> Result<Vec<Vec<(u32, TokenDist)>>> {
        if prompts.is_empty() {
            return Ok(Vec::new());
        }
        let body = serde_json::json!({
            "model": self.opts.model,
            "prompt": prompts,
            "max_tokens": max_tokens.max(1),
            "temperature": 0.0,
            "logprobs": self.opts.top_n,
            "n": 1,
            "stream": false,
            "return_tokens_as_token_ids": true,
            "cache_prompt": false,
        })
        .to_string();
        let _slot = self.slot();
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.rows.fetch_add(prompts.len() as u64, Ordering::Relaxed);
        let text = self.post_with_retries("/v1/completions", &body).inspect_err(|_| {
            self.failures.fetch_add(1, Ordering::Relaxed);
        })?;
        let eos = self.tokenizer.eos_id();
        let out = wire::parse_completions(&text, prompts.len(), eos)?;
        Ok(out)
    }

    fn post_with_retries(&self, path: &str, body: &str) -> Result<String> {
        let url = format!("{}{path}", self.opts.url);
        let mut attempt = 0;
        loop {
            // a cancelled request sends no more calls (a call in flight runs to its timeout)
            deal_backend::cancel::check()?;
            match self.post_once(&url, body) {
                Ok(t) => return Ok(t),
                Err(e) if attempt < self.opts.retries && retryable(&e) => {
                    attempt += 1;
                    let wait = Duration::from_millis(100 * 4u64.pow(attempt as u32 - 1));
                    tracing::warn!("engine {url}: {e}; retry {attempt} in {wait:?}");
                    std::thread::sleep(wait);
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn post_once(&self, url: &str, body: &str) -> Result<String> {
        let mut req = self.agent.post(url).header("Content-Type", "application/json");
        if let Some(k) = &self.opts.api_key {
            req = req.header("Authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.send(body.as_bytes()).map_err(|e| match e {
            ureq::Error::Timeout(_) => Error::Timeout(self.opts.timeout),
            other => Error::Upstream { status: None, message: format!("cannot reach the engine at {}: {other}", self.opts.url) },
        })?;
        let status = resp.status().as_u16();
        let text = resp
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_string()
            .map_err(|e| Error::Upstream { status: Some(status), message: format!("reading the engine's reply: {e}") })?;
        match status {
            200 => Ok(text),
            // the engine's words are not echoed to our clients: only its status and error type
            s => Err(Error::Upstream { status: Some(s), message: format!("the engine answered HTTP {s} ({})", wire::error_kind(&text)) }),
        }
    }

    /// Wait for a request slot (at most `max_inflight` calls at once).
    fn slot(&self) -> SlotGuard<'_> {
        let mut n = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= self.opts.max_inflight {
            n = self.slot_free.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        SlotGuard { backend: self }
    }
}

struct SlotGuard<'a> {
    backend: &'a RemoteBackend,
}

impl Drop for SlotGuard<'_> {
    fn drop(&mut self) {
        let mut n = self.backend.inflight.lock().unwrap_or_else(|p| p.into_inner());
        *n = n.saturating_sub(1);
        self.backend.slot_free.notify_one();
    }
}

fn retryable(e: &Error) -> bool {
    match e {
        Error::Upstream { status: None, .. } => true,
        Error::Upstream { status: Some(s), .. } => *s >= 500,
        _ => false,
    }
}

impl Backend for RemoteBackend {
    fn model_id(&self) -> String {
        self.opts.model.clone()
    }

    fn codec(&self) -> &dyn TextCodec {
        &self.tokenizer
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { hidden_states: false, hidden_size: None, top_n: Some(self.opts.top_n), cheap_steps: false, kv_bytes_per_token: None }
    }

    fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>> {
        Ok(self.chat.encode(&self.tokenizer, messages)?)
    }

    fn chat_stop_strings(&self) -> Vec<String> {
        self.chat.stop_strings()
    }

    fn has_chat_template(&self) -> bool {
        !self.chat.is_fallback()
    }

    fn counters(&self) -> Vec<Counter> {
        vec![
            Counter { name: "deal_remote_calls_total", help: "HTTP calls to the remote engine.", value: self.calls.load(Ordering::Relaxed) },
            Counter { name: "deal_remote_rows_total", help: "Rows (prompts) sent in those calls.", value: self.rows.load(Ordering::Relaxed) },
            Counter { name: "deal_remote_failures_total", help: "Calls that failed after retries.", value: self.failures.load(Ordering::Relaxed) },
        ]
    }

    fn start(&self, prompt: &[u32], _hidden: bool) -> Result<(Box<dyn Rows + '_>, Step)> {
        if prompt.is_empty() {
            return Err(Error::invalid("the prompt is empty (no tokens)"));
        }
        if prompt.len() >= self.context_length {
            return Err(Error::invalid(format!("the prompt has {} tokens; the model's context is {}", prompt.len(), self.context_length)));
        }
        let mut out = self.complete(&[prompt.to_vec()], 1)?;
        let dist = out.pop().and_then(|r| r.into_iter().next()).map(|(_, d)| d);
        let step = Step { dist: Some(dist.ok_or_else(|| Error::Upstream { status: None, message: "the engine returned no log-probabilities".into() })?), hidden: None };
        Ok((Box::new(RemoteRows { backend: self, rows: vec![prompt.to_vec()], prompt_len: prompt.len() }), step))
    }
}

/// The rows of one search on a remote engine: token sequences (prompt included); the
/// engine's prefix cache holds their KV.
struct RemoteRows<'a> {
    backend: &'a RemoteBackend,
    rows: Vec<Vec<u32>>,
    prompt_len: usize,
}

impl Rows for RemoteRows<'_> {
    fn len(&self) -> usize {
        self.rows.len()
    }

    fn feed(&mut self, new: &[Vec<u32>], dist: bool, _hidden: bool) -> Result<Vec<Option<Step>>> {
        if new.len() != self.rows.len() {
            return Err(Error::invalid(format!("feed: {} entries for {} rows", new.len(), self.rows.len())));
        }
        let fed: Vec<usize> = (0..new.len()).filter(|&i| !new[i].is_empty()).collect();
        for &i in &fed {
            self.rows[i].extend_from_slice(&new[i]);
        }
        let mut steps = vec![None; new.len()];
        if !dist {
            for &i in &fed {
                steps[i] = Some(Step::default());
            }
            return Ok(steps);
        }
        let prompts: Vec<Vec<u32>> = fed.iter().map(|&i| self.rows[i].clone()).collect();
        for (k, out) in self.backend.complete(&prompts, 1)?.into_iter().enumerate() {
            let d = out.into_iter().next().map(|(_, d)| d);
            steps[fed[k]] = Some(Step { dist: d, hidden: None });
        }
        Ok(steps)
    }

    fn select(&mut self, indices: &[usize]) -> Result<()> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.rows.len()) {
            return Err(Error::invalid(format!("select: row {bad} of {}", self.rows.len())));
        }
        self.rows = indices.iter().map(|&i| self.rows[i].clone()).collect();
        Ok(())
    }

    fn truncate(&mut self, row: usize, len: usize) -> Result<()> {
        let r = self.rows.get_mut(row).ok_or_else(|| Error::invalid(format!("truncate: no row {row}")))?;
        r.truncate(self.prompt_len + len);
        Ok(())
    }

    fn rollout(&mut self, pending: &[Vec<u32>], l: usize) -> Result<Vec<Vec<(u32, TokenDist)>>> {
        let active: Vec<usize> = (0..pending.len()).filter(|&i| !pending[i].is_empty()).collect();
        for &i in &active {
            self.rows[i].extend_from_slice(&pending[i]);
        }
        let room = active.iter().map(|&i| self.backend.context_length.saturating_sub(self.rows[i].len() + 1)).min().unwrap_or(0);
        let mut outs = vec![Vec::new(); pending.len()];
        if active.is_empty() || room == 0 {
            return Ok(outs);
        }
        let prompts: Vec<Vec<u32>> = active.iter().map(|&i| self.rows[i].clone()).collect();
        for (k, out) in self.backend.complete(&prompts, l.min(room))?.into_iter().enumerate() {
            let i = active[k];
            // the row holds every generated token but the last (as after l feeds)
            let held = out.len().saturating_sub(1);
            self.rows[i].extend(out.iter().take(held).map(|(t, _)| *t));
            outs[i] = out;
        }
        Ok(outs)
    }
}
