//! [`Batch`]: the rows of a search on a [`Backend`].
//!
//! A row is the response tokens of one continuation of the prompt, how many of them the
//! backend holds, the next-token distribution / hidden state after the last one fed, and
//! why it ended (if it did). Controllers push tokens into rows, then [`Batch::forward`]
//! feeds every row's pending tokens in one pass (ragged rows allowed). [`Batch::select`]
//! forks, prunes and reorders rows (on the local engine, forking a single row shares it as a
//! prefix without copies); [`Batch::truncate`] undoes a lookahead; [`Batch::rollout`] runs a
//! greedy lookahead step by step where steps are cheap, or as one call per step on a
//! backend where they are not (a remote server). Text, stop strings and EOS are handled here
//! once for all controllers.

use std::sync::atomic::{AtomicBool, Ordering};

use deal_backend::{Backend, Rows, TokenDist, TokenLogprob};
use deal_heads::Candidate;

use crate::error::{ControlError, Result};
use crate::grammar::{Grammar, RowGrammar};
use crate::logits::LogitsProcessor;
use crate::stats::SearchStats;

/// Why a row stopped growing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// The model produced an end-of-generation token (not kept in the row).
    Eos,
    /// A stop string appeared (the row's text ends before it).
    Stop,
    /// `max_tokens` reached.
    Length,
}

/// One continuation of the prompt.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Response token ids (the prompt excluded; an EOS is never stored).
    pub tokens: Vec<u32>,
    /// How many of `tokens` are in the cache.
    fed: usize,
    /// Next-token distribution after `tokens[..fed]` (when the last pass asked for it).
    pub dist: Option<TokenDist>,
    /// Final hidden state after `tokens[..fed]`.
    pub hidden: Option<Vec<f32>>,
    /// Why the row ended; `None` while it is still live.
    pub finish: Option<Finish>,
    /// Cumulative log-probability, kept by the controllers that rank by it.
    pub logprob: f64,
    /// The model's log-probability of each of `tokens` (when the request asked for
    /// logprobs; see [`Batch::record_logprobs`]), parallel to `tokens`.
    pub logprobs: Vec<TokenLogprob>,
    /// The grammar's parser state after `tokens`, when the request has one.
    pub grammar: Option<RowGrammar>,
}

impl Row {
    /// Whether the row has ended (it takes no more tokens).
    pub fn is_done(&self) -> bool {
        self.finish.is_some()
    }

    /// Tokens in the cache.
    pub fn fed(&self) -> usize {
        self.fed
    }

    /// The row's next-token distribution, or an error naming what the controller expected.
    pub fn next_dist(&self) -> Result<&TokenDist> {
        self.dist.as_ref().ok_or_else(|| ControlError::internal("a live row has no next-token distribution"))
    }
}

/// What a greedy lookahead ([`Batch::rollout`]) saw for one row.
#[derive(Debug, Clone, Default)]
pub struct Trace {
    /// Response length before the lookahead (after the row's pending tokens).
    pub base: usize,
    /// Why the row had ended before the lookahead (`None` = it was live).
    pub finish: Option<Finish>,
    /// The distribution after the pending tokens (the first lookahead token's).
    pub first: Option<TokenDist>,
    /// Log-probability of each lookahead token (when recorded).
    pub logprobs: Vec<f64>,
    /// The distribution each lookahead token was chosen from (when recorded).
    pub dists: Vec<Option<TokenDist>>,
}

/// The rows of one search and their backend state.
pub struct Batch<'a> {
    backend: &'a dyn Backend,
    state: Box<dyn Rows + 'a>,
    /// Keep hidden states current (the reward reads them).
    hidden: bool,
    prompt_len: usize,
    max_tokens: usize,
    stop: Vec<String>,
    cancel: Option<&'a AtomicBool>,
    /// Record every pushed token's log-probability with this many alternatives.
    record: Option<usize>,
    /// Applied to every distribution a row gets, before any controller reads it.
    processor: Option<LogitsProcessor>,
    /// The rows, in the order the last [`Batch::select`] left them.
    pub rows: Vec<Row>,
    /// What the search has cost so far.
    pub stats: SearchStats,
}

impl<'a> Batch<'a> {
    /// Prefill `prompt` into a single row; `hidden`: keep every row's hidden state current.
    pub fn start(
        backend: &'a dyn Backend,
        prompt: &[u32],
        max_tokens: usize,
        stop: &[String],
        cancel: Option<&'a AtomicBool>,
        hidden: bool,
    ) -> Result<Self> {
        let t = std::time::Instant::now();
        // the prefill checks the request's flag between its chunks (see `deal_backend::cancel`)
        let (state, step) = match cancel {
            Some(c) => deal_backend::cancel::scope(c, || backend.start(prompt, hidden))?,
            None => backend.start(prompt, hidden)?,
        };
        if step.dist.is_none() {
            return Err(ControlError::internal("prefill returned no logits"));
        }
        let row = Row { dist: step.dist, hidden: step.hidden, ..Default::default() };
        let stats = SearchStats { prompt_tokens: prompt.len(), prefill_secs: t.elapsed().as_secs_f64(), ..Default::default() };
        Ok(Self {
            backend,
            state,
            hidden,
            prompt_len: prompt.len(),
            max_tokens,
            stop: stop.iter().filter(|s| !s.is_empty()).cloned().collect(),
            cancel,
            record: None,
            processor: None,
            rows: vec![row],
            stats,
        })
    }

    /// The backend the search runs on.
    pub fn backend(&self) -> &'a dyn Backend {
        self.backend
    }

    /// Whether rows step cheaply one token at a time (see [`deal_backend::Capabilities`]).
    pub fn cheap_steps(&self) -> bool {
        self.backend.capabilities().cheap_steps
    }

    /// Number of prompt tokens.
    pub fn prompt_len(&self) -> usize {
        self.prompt_len
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Whether every row has ended.
    pub fn all_done(&self) -> bool {
        self.rows.iter().all(Row::is_done)
    }

    /// Err([`ControlError::Cancelled`]) once the caller's cancel flag is set.
    pub fn check_cancel(&self) -> Result<()> {
        match self.cancel {
            Some(c) if c.load(Ordering::Relaxed) => Err(ControlError::Cancelled),
            _ if deal_backend::cancel::cancelled() => Err(ControlError::Cancelled),
            _ => Ok(()),
        }
    }

    /// From now on, keep the model's log-probability of every token pushed into a row, with
    /// its `top` most likely alternatives (`None`: stop recording).
    pub fn record_logprobs(&mut self, top: Option<usize>) {
        self.record = top;
    }

    /// Process every distribution rows get from now on (and the ones they hold) with
    /// `processor` (penalties, logit bias; see [`crate::logits`]) and mask them with
    /// `grammar` (see [`crate::grammar`]). Called before any token is generated.
    pub fn set_processing(&mut self, processor: Option<LogitsProcessor>, grammar: Option<&Grammar>) -> Result<()> {
        if grammar.is_some() && !self.cheap_steps() {
            return Err(deal_backend::Error::unsupported(
                "cheap_steps",
                "enforce a grammar (response_format, alignment.grammar): a remote engine continues rows on its own, unmasked",
            )
            .into());
        }
        self.processor = processor;
        for row in &mut self.rows {
            row.grammar = grammar.map(Grammar::start);
            if let Some(d) = row.dist.take() {
                row.dist = Some(process(&self.processor, row, d));
            }
        }
        Ok(())
    }

    /// Append `token` to row `r` (not yet fed). An end-of-generation token ends the row
    /// instead; so do a stop string in its text and `max_tokens`. Returns whether the row is
    /// still live.
    pub fn push(&mut self, r: usize, token: u32) -> Result<bool> {
        let eog = self.backend.codec().is_eog(token);
        let max = self.max_tokens;
        let record = self.record;
        let row = self.row_mut(r)?;
        if row.is_done() {
            return Err(ControlError::internal(format!("token pushed into finished row {r}")));
        }
        if eog {
            row.finish = Some(Finish::Eos);
            return Ok(false);
        }
        if let Some(g) = &mut row.grammar {
            g.consume(token).map_err(|e| ControlError::internal(format!("token {token} breaks the grammar: {e}")))?;
        }
        if let Some(top) = record {
            // the distribution the token was chosen from
            let lp = match &row.dist {
                Some(d) => d.model().token_logprob(token, top),
                None => TokenLogprob { token, logprob: f32::NAN, top: Vec::new() },
            };
            row.logprobs.push(lp);
        }
        row.tokens.push(token);
        self.stats.tokens_generated += 1;
        let len = self.rows[r].tokens.len();
        if !self.stop.is_empty() && self.text(r)?.1 {
            self.rows[r].finish = Some(Finish::Stop);
        } else if len >= max {
            self.rows[r].finish = Some(Finish::Length);
        }
        Ok(!self.rows[r].is_done())
    }

    /// Feed every row's pending tokens in one pass (rows with none wait). Rows that brought
    /// tokens get their next-token distribution (and hidden state, when the search reads it).
    pub fn forward(&mut self) -> Result<()> {
        self.feed(true)
    }

    /// Feed pending tokens without computing distributions, so every row's hidden state is
    /// current (for heads that read it). Rows that get fed lose their distribution.
    pub fn sync_hidden(&mut self) -> Result<()> {
        self.feed(false)
    }

    fn feed(&mut self, dist: bool) -> Result<()> {
        let new: Vec<Vec<u32>> = self.rows.iter().map(|r| r.tokens[r.fed..].to_vec()).collect();
        let active = new.iter().filter(|t| !t.is_empty()).count();
        if active == 0 {
            return Ok(());
        }
        self.check_cancel()?;
        let steps = self.state.feed(&new, dist, self.hidden)?;
        self.check_cancel()?;
        self.stats.forward_passes += 1;
        self.stats.rows_evaluated += active;
        for ((row, t), step) in self.rows.iter_mut().zip(&new).zip(steps) {
            if t.is_empty() {
                continue;
            }
            row.fed += t.len();
            let step = step.unwrap_or_default();
            row.hidden = step.hidden;
            row.dist = step.dist.map(|d| process(&self.processor, row, d));
        }
        Ok(())
    }

    /// Feed every row's pending tokens, then extend every live row by up to `l` greedy
    /// tokens (rows end on EOS, a stop string or `max_tokens` as with [`Batch::push`]).
    /// `record` keeps each lookahead token's log-probability and distribution; `feed_last`
    /// also feeds the last lookahead token (with its distribution when `record`), as heads
    /// that read hidden states need. One pass per lookahead token where steps are cheap; one
    /// [`Rows::rollout`] call otherwise.
    pub fn rollout(&mut self, l: usize, record: bool, feed_last: bool) -> Result<Vec<Trace>> {
        if !self.cheap_steps() {
            return self.rollout_remote(l, record);
        }
        self.forward()?;
        let mut traces: Vec<Trace> = self
            .rows
            .iter()
            .map(|row| Trace { base: row.tokens.len(), finish: row.finish, first: row.dist.clone(), ..Default::default() })
            .collect();
        for j in 0..l {
            // every row ended (EOS, stop, max_tokens): nothing left to roll out
            if self.all_done() {
                break;
            }
            self.check_cancel()?;
            for (r, trace) in traces.iter_mut().enumerate() {
                if self.rows[r].is_done() {
                    continue;
                }
                let dist = self.rows[r].next_dist()?;
                let t = dist.argmax();
                if record {
                    trace.logprobs.push(dist.logprob(t));
                    trace.dists.push(self.rows[r].dist.clone());
                }
                self.push(r, t)?;
            }
            if j + 1 < l {
                self.forward()?;
            } else if feed_last {
                self.feed(record)?;
            }
        }
        Ok(traces)
    }

    /// [`Batch::rollout`] on a backend whose steps are round trips: every live row's pending
    /// tokens and its `l` greedy tokens in one call.
    fn rollout_remote(&mut self, l: usize, record: bool) -> Result<Vec<Trace>> {
        self.check_cancel()?;
        let pending: Vec<Vec<u32>> =
            self.rows.iter().map(|r| if r.is_done() { Vec::new() } else { r.tokens[r.fed..].to_vec() }).collect();
        let active = pending.iter().filter(|t| !t.is_empty()).count();
        let outs = if active > 0 && l > 0 { self.state.rollout(&pending, l)? } else { vec![Vec::new(); pending.len()] };
        self.check_cancel()?;
        if active > 0 {
            self.stats.forward_passes += l;
            self.stats.rows_evaluated += active * l;
        }
        let mut traces = Vec::with_capacity(self.rows.len());
        for (r, out) in outs.into_iter().enumerate() {
            let first = out.first().map(|(_, d)| process(&self.processor, &mut self.rows[r], d.clone()));
            let row = &mut self.rows[r];
            row.fed += pending[r].len();
            let base = row.tokens.len();
            let mut trace = Trace { base, finish: row.finish, first, ..Default::default() };
            if pending[r].is_empty() {
                traces.push(trace);
                continue;
            }
            if out.is_empty() {
                // the engine generated nothing (its context is full)
                self.rows[r].finish = Some(Finish::Length);
                traces.push(trace);
                continue;
            }
            // the backend row now holds the pending tokens and all generated tokens but the last
            let held = base + out.len().saturating_sub(1);
            for (t, d) in &out {
                if self.rows[r].is_done() {
                    break;
                }
                let d = &process(&self.processor, &mut self.rows[r], d.clone());
                if record {
                    trace.logprobs.push(d.logprob(*t));
                    trace.dists.push(Some(d.clone()));
                }
                // the distribution this token was chosen from (replaced after the loop)
                self.rows[r].dist = Some(d.clone());
                self.push(r, *t)?;
            }
            let len = self.rows[r].tokens.len();
            let fed = held.min(len);
            if fed < held {
                self.state.truncate(r, fed)?;
            }
            // penalties count the tokens before this distribution (the row holds one more)
            let dist = match (&self.processor, out.get(fed - base)) {
                (Some(p), Some((_, d))) => Some(p.apply(d, &self.rows[r].tokens[..fed])),
                (None, Some((_, d))) => Some(d.clone()),
                (_, None) => None,
            };
            let row = &mut self.rows[r];
            row.fed = fed;
            row.dist = dist;
            row.hidden = None;
            traces.push(trace);
        }
        Ok(traces)
    }

    /// Extend row 0 greedily by up to `n` tokens in one call to the backend (for backends
    /// whose steps are round trips: the engine's own greedy decoding, token for token).
    /// Returns whether the row is still live.
    pub fn extend_greedy(&mut self, mut n: usize) -> Result<bool> {
        if self.rows.len() != 1 {
            return Err(ControlError::internal("extend_greedy runs on a single row"));
        }
        if self.rows[0].is_done() || n == 0 {
            return Ok(!self.rows[0].is_done());
        }
        if self.rows[0].fed == self.rows[0].tokens.len() {
            // nothing pending: the next token comes from the distribution at hand
            let t = self.rows[0].next_dist()?.argmax();
            if !self.push(0, t)? || n == 1 {
                return Ok(!self.rows[0].is_done());
            }
            n -= 1;
        }
        self.rollout_remote(n, false)?;
        Ok(!self.rows[0].is_done())
    }

    /// Row `i` of the result is row `indices[i]` (fork, prune, reorder, duplicate).
    pub fn select(&mut self, indices: &[usize]) -> Result<()> {
        if let Some(&bad) = indices.iter().find(|&&i| i >= self.rows.len()) {
            return Err(ControlError::internal(format!("select: row {bad} of {}", self.rows.len())));
        }
        self.state.select(indices)?;
        self.rows = indices.iter().map(|&i| self.rows[i].clone()).collect();
        Ok(())
    }

    /// Cut row `r` back to `len` response tokens and mark it live again. The distribution and
    /// hidden state survive only if no fed token was cut.
    pub fn truncate(&mut self, r: usize, len: usize) -> Result<()> {
        let row = self.rows.get_mut(r).ok_or_else(|| ControlError::internal(format!("truncate: no row {r}")))?;
        if len > row.tokens.len() {
            return Err(ControlError::internal(format!("truncate row {r} to {len} > {}", row.tokens.len())));
        }
        if let Some(g) = &mut row.grammar {
            g.rollback(row.tokens.len() - len).map_err(|e| ControlError::internal(format!("grammar rollback: {e}")))?;
        }
        row.tokens.truncate(len);
        row.logprobs.truncate(len);
        row.finish = None;
        if row.fed > len {
            row.fed = len;
            row.dist = None;
            row.hidden = None;
            self.state.truncate(r, len)?;
        }
        Ok(())
    }

    /// The response text of row `r`, cut before the first stop string, and whether one was
    /// found.
    pub fn text(&self, r: usize) -> Result<(String, bool)> {
        let row = self.rows.get(r).ok_or_else(|| ControlError::internal(format!("text: no row {r}")))?;
        let text = self.backend.codec().decode(&row.tokens, true)?;
        Ok(cut_at_stop(text, &self.stop))
    }

    /// Row `r` as a candidate for the reward heads. It is `partial` unless it has ended.
    pub fn candidate(&self, r: usize, prompt: &str, hidden: bool) -> Result<Candidate> {
        let row = self.rows.get(r).ok_or_else(|| ControlError::internal(format!("candidate: no row {r}")))?;
        let mut c = self.candidate_of(&row.tokens, row.is_done(), prompt)?;
        if hidden {
            if let Some(h) = &row.hidden {
                c = c.with_hidden(h.clone());
            }
        }
        Ok(c)
    }

    /// `tokens` (a prefix of some row's response) as a candidate for the reward heads: its
    /// text cut before a stop string, `partial` unless `ended`.
    pub fn candidate_of(&self, tokens: &[u32], ended: bool, prompt: &str) -> Result<Candidate> {
        let (response, _) = cut_at_stop(self.backend.codec().decode(tokens, true)?, &self.stop);
        Ok(Candidate::new(prompt, response).partial(!ended).with_tokens(tokens.to_vec()))
    }

    fn row_mut(&mut self, r: usize) -> Result<&mut Row> {
        self.rows.get_mut(r).ok_or_else(|| ControlError::internal(format!("no row {r}")))
    }
}

/// `dist` after the request's processing for `row` (penalties over its tokens, then its
/// grammar's mask).
fn process(processor: &Option<LogitsProcessor>, row: &mut Row, dist: TokenDist) -> TokenDist {
    let dist = match processor {
        Some(p) => p.apply(&dist, &row.tokens),
        None => dist,
    };
    match &mut row.grammar {
        Some(g) => g.mask(&dist),
        None => dist,
    }
}

/// `text` cut before the earliest stop string, and whether one was found.
pub fn cut_at_stop(mut text: String, stop: &[String]) -> (String, bool) {
    match stop.iter().filter(|s| !s.is_empty()).filter_map(|s| text.find(s.as_str())).min() {
        Some(at) => {
            text.truncate(at);
            (text, true)
        }
        None => (text, false),
    }
}

/// Length of the longest common prefix of the rows' tokens.
pub fn common_prefix(rows: &[Row]) -> usize {
    let tokens: Vec<&[u32]> = rows.iter().map(|r| r.tokens.as_slice()).collect();
    common_prefix_of(&tokens)
}

/// Length of the longest common prefix of token sequences (0 for none).
pub fn common_prefix_of(seqs: &[&[u32]]) -> usize {
    let Some(first) = seqs.first() else { return 0 };
    let mut n = first.len();
    for s in &seqs[1..] {
        n = n.min(first.iter().zip(s.iter()).take_while(|(a, b)| a == b).count());
    }
    n
}
