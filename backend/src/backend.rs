//! The [`Backend`] trait (a model behind a tokenizer) and [`Rows`] (the continuations of one
//! search on it).
//!
//! A search starts with [`Backend::start`]: the prompt is prefilled into one row. Controllers
//! then grow rows token by token ([`Rows::feed`]: every row's new tokens in one pass, each
//! fed row's next-token [`TokenDist`] back), fork, prune and reorder them ([`Rows::select`]),
//! and cut lookaheads back off ([`Rows::truncate`]). A backend that cannot step rows cheaply
//! (a remote server, where every step is an HTTP call) says so in [`Capabilities`], and
//! controllers then roll lookaheads out with one [`Rows::rollout`] call per step.

use crate::chat::Message;
use crate::{Result, TextCodec, TokenDist, TokenLogprob};

/// What a backend can give, so that a head or controller needing more can refuse clearly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capabilities {
    /// Final hidden states after each fed token (the `probe` head reads them).
    pub hidden_states: bool,
    /// Size of those hidden states.
    pub hidden_size: Option<usize>,
    /// `None`: full logits over the vocabulary. `Some(n)`: only the top-`n`
    /// log-probabilities of each position (an OpenAI-compatible server's `logprobs`).
    pub top_n: Option<usize>,
    /// Rows can be fed one token at a time at the cost of a forward pass (a local KV cache).
    /// When `false`, every feed is a round trip, and lookaheads go through [`Rows::rollout`].
    pub cheap_steps: bool,
    /// Bytes of KV cache one token of one row holds here (`None`: the cache is not in this
    /// process, e.g. a remote engine). Servers estimate a request's memory from it.
    pub kv_bytes_per_token: Option<usize>,
}

/// What one fed row gives back.
#[derive(Debug, Clone, Default)]
pub struct Step {
    /// The next-token distribution after the fed tokens, when it was asked for.
    pub dist: Option<TokenDist>,
    /// The final hidden state after the last fed token, when asked for and available.
    pub hidden: Option<Vec<f32>>,
}

/// A counter a backend reports for `/metrics` (forward passes, HTTP calls, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    /// Prometheus name, e.g. `deal_engine_passes_total`.
    pub name: &'static str,
    /// One line saying what it counts.
    pub help: &'static str,
    /// Its value.
    pub value: u64,
}

/// A model behind a tokenizer: the local GGUF engine, or a remote server.
pub trait Backend: Send + Sync {
    /// The model's name for APIs.
    fn model_id(&self) -> String;

    /// The model's tokenizer.
    fn codec(&self) -> &dyn TextCodec;

    /// Most tokens a row may hold, prompt included.
    fn context_length(&self) -> usize;

    /// What the backend can give.
    fn capabilities(&self) -> Capabilities;

    /// Prompt tokens of a conversation, rendered by the model's chat template (or deal's
    /// plain fallback when the model has none).
    fn encode_chat(&self, messages: &[Message]) -> Result<Vec<u32>>;

    /// Strings that end an assistant turn under that template.
    fn chat_stop_strings(&self) -> Vec<String> {
        Vec::new()
    }

    /// Whether the model carries its own chat template (a base model usually does not).
    fn has_chat_template(&self) -> bool {
        false
    }

    /// Counters for `/metrics`.
    fn counters(&self) -> Vec<Counter> {
        Vec::new()
    }

    /// Tokens of a raw prompt, with BOS when the model wants one.
    fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        let c = self.codec();
        c.encode(text, c.add_bos())
    }

    /// Prefill `prompt` into a new set of one row; returns the rows and the next-token
    /// distribution (and, if `hidden` and available, the hidden state) after the prompt.
    fn start(&self, prompt: &[u32], hidden: bool) -> Result<(Box<dyn Rows + '_>, Step)>;

    /// The model's log-probability of every token of `tokens` given those before it (the
    /// first has none: `None`), each with the `top` most likely alternatives: a
    /// teacher-forced pass, as OpenAI's `echo` + `logprobs` and evaluation harnesses ask for.
    /// The default says the backend cannot.
    fn prompt_logprobs(&self, tokens: &[u32], top: usize) -> Result<Vec<Option<TokenLogprob>>> {
        let _ = (tokens, top);
        Err(crate::Error::unsupported("prompt_logprobs", "score the prompt's tokens (`echo` with `logprobs`)"))
    }

    /// [`Backend::start`] for a prompt that will be started again and again (a judge's
    /// template): a backend may keep its prefill and fork new rows from it. The default
    /// prefills every time.
    fn start_shared(&self, prompt: &[u32], hidden: bool) -> Result<(Box<dyn Rows + '_>, Step)> {
        self.start(prompt, hidden)
    }
}

/// The rows of one search on a [`Backend`]. Row indices are positions in the current order;
/// lengths count the tokens after the prompt.
pub trait Rows: Send {
    /// Number of rows.
    fn len(&self) -> usize;

    /// Whether there are no rows.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Append `new[i]` to row `i` (one entry per row; empty = untouched) in one pass. Returns
    /// one entry per row: `Some` for the rows that were fed, with the next-token distribution
    /// if `dist` and the hidden state if `hidden`.
    fn feed(&mut self, new: &[Vec<u32>], dist: bool, hidden: bool) -> Result<Vec<Option<Step>>>;

    /// Row `i` becomes row `indices[i]` (fork, prune, reorder, duplicate).
    fn select(&mut self, indices: &[usize]) -> Result<()>;

    /// Cut row `row` back to `len` tokens after the prompt.
    fn truncate(&mut self, row: usize, len: usize) -> Result<()>;

    /// Append `pending[i]` to row `i` (empty = the row takes no part) and continue it greedily
    /// for `l` tokens. Returns, per row, the generated tokens each with the distribution it
    /// was chosen from (fewer than `l` where the engine stopped at an end-of-generation
    /// token, which is included). The row then holds the pending tokens and every generated
    /// token but the last (as after `l` feeds). The default runs `l` feeds.
    fn rollout(&mut self, pending: &[Vec<u32>], l: usize) -> Result<Vec<Vec<(u32, TokenDist)>>> {
        let mut out: Vec<Vec<(u32, TokenDist)>> = vec![Vec::new(); pending.len()];
        let mut new = pending.to_vec();
        for j in 0..l {
            let steps = self.feed(&new, true, false)?;
            for (i, step) in steps.into_iter().enumerate() {
                new[i].clear();
                let Some(dist) = step.and_then(|s| s.dist) else { continue };
                let t = dist.argmax();
                out[i].push((t, dist));
                if j + 1 < l {
                    new[i].push(t);
                }
            }
        }
        Ok(out)
    }
}
