//! The [`Controller`] trait, what a search is given ([`Request`]) and returns ([`Outcome`]),
//! and the [`Session`] every controller works in: the [`Batch`] of rows, the committed
//! [`Stream`] and the reward.

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use deal_backend::{Backend, FinishReason, TokenLogprob};
use deal_heads::reward::{Breakdown, WeightedReward};

use crate::batch::{Batch, Finish};
use crate::config::SearchConfig;
use crate::error::{ControlError, Result};
use crate::grammar::Grammar;
use crate::stats::SearchStats;
use crate::stream::{Piece, Stream};

/// What a search runs on.
#[derive(Clone, Copy)]
pub struct Request<'a> {
    /// The model the search runs on (the local engine, or a remote one).
    pub backend: &'a dyn Backend,
    /// The prompt as text: tokenized (with BOS when the model wants one) unless `tokens` are
    /// given, and the prompt the reward heads see.
    pub prompt: &'a str,
    /// Prompt tokens, when the caller tokenized it (e.g. a chat rendered by its template);
    /// `prompt` then only feeds the heads (typically the last user message).
    pub tokens: Option<&'a [u32]>,
    /// The heuristic (and the breakdown of the result). Greedy and sampling work without.
    pub reward: Option<&'a WeightedReward>,
    /// Checked before every forward pass: set it to stop the search within one pass.
    pub cancel: Option<&'a AtomicBool>,
    /// Report the model's log-probability of every response token with this many
    /// alternatives (`None`: don't).
    pub logprobs: Option<usize>,
    /// Constrain every row to this grammar (structured output).
    pub grammar: Option<&'a Grammar>,
}

impl<'a> Request<'a> {
    /// A request for `prompt` (tokenized by the backend), without reward or cancel flag.
    pub fn new(backend: &'a dyn Backend, prompt: &'a str) -> Self {
        Self { backend, prompt, tokens: None, reward: None, cancel: None, logprobs: None, grammar: None }
    }

    /// Search from these prompt tokens; `prompt` stays what the heads see.
    pub fn with_tokens(mut self, tokens: &'a [u32]) -> Self {
        self.tokens = Some(tokens);
        self
    }

    /// Guide the search by `reward` (required by the controllers that search by reward).
    pub fn with_reward(mut self, reward: &'a WeightedReward) -> Self {
        self.reward = Some(reward);
        self
    }

    /// Report the model's log-probability of each response token with `top` alternatives
    /// ([`Outcome::logprobs`], and with every streamed piece).
    pub fn with_logprobs(mut self, top: usize) -> Self {
        self.logprobs = Some(top);
        self
    }

    /// Constrain the output to `grammar` (every row, every controller).
    pub fn with_grammar(mut self, grammar: &'a Grammar) -> Self {
        self.grammar = Some(grammar);
        self
    }

    /// Stop the search once `cancel` is set (checked before every forward pass).
    pub fn with_cancel(mut self, cancel: &'a AtomicBool) -> Self {
        self.cancel = Some(cancel);
        self
    }
}

/// Result of a search.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The response (cut before a stop string).
    pub text: String,
    /// Its token ids (an EOS excluded).
    pub tokens: Vec<u32>,
    /// Why the response ended.
    pub finish: FinishReason,
    /// Per-head scores of the response (final, not partial), when the request had a reward.
    pub breakdown: Option<Breakdown>,
    /// What the search cost.
    pub stats: SearchStats,
    /// The model's log-probability of each of `tokens` (when the request asked for them).
    pub logprobs: Vec<TokenLogprob>,
    /// The prompt's tokens with their log-probabilities (the first has none), when the
    /// request echoes the prompt (filled by the request driver, not the search).
    pub prompt_logprobs: Option<Vec<(u32, Option<TokenLogprob>)>>,
}

/// Where a controller's search ended: the row holding the answer.
#[derive(Debug, Clone, Copy)]
pub struct Final {
    /// Index of the answer's row in the session's [`Batch`].
    pub row: usize,
}

/// The state a controller searches in.
pub struct Session<'a> {
    /// The rows being searched and their shared KV cache.
    pub batch: Batch<'a>,
    /// The committed output, streamed to the caller.
    pub stream: Stream<'a>,
    /// The prompt text the reward heads see.
    pub prompt: &'a str,
    /// The request's reward, if it has one.
    pub reward: Option<&'a WeightedReward>,
}

impl<'a> Session<'a> {
    /// The reward, or [`ControlError::NeedsReward`] naming the controller.
    pub fn require_reward(&self, controller: &'static str) -> Result<&'a WeightedReward> {
        match self.reward {
            Some(r) if r.has_heuristic() => Ok(r),
            _ => Err(ControlError::NeedsReward(controller)),
        }
    }

    /// Whether the reward reads hidden states (so rows must keep theirs current).
    pub fn needs_hidden(&self) -> bool {
        self.reward.is_some_and(WeightedReward::needs_hidden)
    }

    /// Commit row `r`'s tokens (the whole response so far) to the stream.
    pub fn commit(&mut self, r: usize) -> Result<()> {
        let n = self.batch.rows.get(r).map_or(0, |row| row.tokens.len());
        self.commit_prefix(r, n)
    }

    /// Commit the first `n` tokens of row `r` (tokens no later step can change).
    pub fn commit_prefix(&mut self, r: usize, n: usize) -> Result<()> {
        let row = self.batch.rows.get(r).ok_or_else(|| ControlError::internal(format!("commit: no row {r}")))?;
        let n = n.min(row.tokens.len());
        self.stream.commit(&row.tokens[..n], &row.logprobs[..n.min(row.logprobs.len())])
    }

    /// Reward values ([`Breakdown::value`]) of `rows` of the batch, partial unless ended.
    pub fn values(&mut self, reward: &WeightedReward, rows: &[usize]) -> Result<Vec<f64>> {
        let hidden = reward.needs_hidden();
        if hidden {
            self.batch.sync_hidden()?;
        }
        let cands = rows.iter().map(|&r| self.batch.candidate(r, self.prompt, hidden)).collect::<Result<Vec<_>>>()?;
        self.batch.stats.candidates_scored += cands.len();
        Ok(reward.values(&cands)?)
    }
}

/// A configured decoding strategy, as the registry builds it (strategies themselves implement
/// [`crate::registry::Build`], one per file).
pub trait Controller: Send + Sync {
    /// Registry name.
    fn name(&self) -> &'static str;

    /// The config the controller was built from.
    fn config(&self) -> &SearchConfig;

    /// Most rows the search holds at once, and the config field that sets that number.
    fn rows(&self) -> (usize, &'static str) {
        (1, "max_tokens")
    }

    /// Search from the prefilled prompt (one row in `s.batch`); commit final tokens through
    /// `s.stream` as soon as they are decided; return the row with the answer.
    fn search(&self, s: &mut Session<'_>) -> Result<Final>;
}

/// Run `controller` on `req`, streaming committed text to `on_text` (return `false` to
/// cancel). A cancelled search returns what was committed with [`FinishReason::Cancelled`].
pub fn run(controller: &dyn Controller, req: &Request<'_>, on_text: &mut dyn FnMut(Piece<'_>) -> bool) -> Result<Outcome> {
    let t0 = Instant::now();
    let cfg = controller.config();
    cfg.validate()?;
    let prompt = match req.tokens {
        Some(t) => t.to_vec(),
        None => req.backend.encode_prompt(req.prompt)?,
    };
    let hidden = req.reward.is_some_and(WeightedReward::needs_hidden);
    if hidden && !req.backend.capabilities().hidden_states {
        return Err(deal_backend::Error::unsupported("hidden_states", "run a head that reads hidden states").into());
    }
    let batch = match Batch::start(req.backend, &prompt, cfg.max_tokens, &cfg.stop, req.cancel, hidden) {
        Ok(b) => b,
        // cancelled during the prefill: nothing was committed
        Err(e) if e.is_cancelled() => {
            let stats = SearchStats { prompt_tokens: prompt.len(), wall_secs: t0.elapsed().as_secs_f64(), ..Default::default() };
            return Ok(Outcome {
                text: String::new(),
                tokens: Vec::new(),
                finish: FinishReason::Cancelled,
                breakdown: None,
                stats,
                logprobs: Vec::new(),
                prompt_logprobs: None,
            });
        }
        Err(e) => return Err(e),
    };
    let mut batch = batch;
    batch.record_logprobs(req.logprobs);
    batch.set_processing(crate::logits::LogitsProcessor::from_config(cfg), req.grammar)?;
    let stream = Stream::new(req.backend.codec(), &cfg.stop, on_text);
    let mut s = Session { batch, stream, prompt: req.prompt, reward: req.reward };
    let (tokens, text, finish, row) = match controller.search(&mut s) {
        Ok(Final { row }) => {
            let tokens = s.batch.rows.get(row).map(|r| r.tokens.clone()).ok_or_else(|| ControlError::internal("final row"))?;
            let finish = match s.batch.rows[row].finish {
                Some(Finish::Eos | Finish::Stop) => FinishReason::Stop,
                _ => FinishReason::Length,
            };
            match s.commit(row).and_then(|_| s.stream.finish()) {
                Ok(()) => (tokens, s.batch.text(row)?.0, finish, Some(row)),
                Err(e) if e.is_cancelled() => cancelled(&s),
                Err(e) => return Err(e),
            }
        }
        Err(e) if e.is_cancelled() => cancelled(&s),
        Err(e) => return Err(e),
    };
    let breakdown = match req.reward {
        Some(reward) => {
            let hidden = reward.needs_hidden();
            let mut cand = deal_heads::Candidate::new(req.prompt, text.clone()).with_tokens(tokens.clone());
            if hidden {
                if let Some(r) = row {
                    s.batch.sync_hidden()?;
                    if let Some(h) = &s.batch.rows[r].hidden {
                        cand = cand.with_hidden(h.clone());
                    }
                }
            }
            match reward.score(std::slice::from_ref(&cand)) {
                Ok(mut b) => b.pop(),
                // cancelled while the final answer was scored: the answer stands, unscored
                Err(e) if finish == FinishReason::Cancelled || deal_backend::cancel::cancelled() => {
                    tracing::debug!("final scoring skipped: {e}");
                    None
                }
                Err(e) => return Err(e.into()),
            }
        }
        None => None,
    };
    let mut stats = s.batch.stats.clone();
    stats.tokens_committed = tokens.len();
    stats.wall_secs = t0.elapsed().as_secs_f64();
    let logprobs = match (req.logprobs, row) {
        (None, _) => Vec::new(),
        (Some(_), Some(r)) => s.batch.rows[r].logprobs.clone(),
        // cancelled: nobody is left to read them
        (Some(_), None) => Vec::new(),
    };
    Ok(Outcome { text, tokens, finish, breakdown, stats, logprobs, prompt_logprobs: None })
}

fn cancelled(s: &Session<'_>) -> (Vec<u32>, String, FinishReason, Option<usize>) {
    (s.stream.tokens().to_vec(), s.stream.text().to_string(), FinishReason::Cancelled, None)
}
