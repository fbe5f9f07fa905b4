#![warn(missing_docs)]
//! # deal-driver
//!
//! The one request driver. The server, `deal generate` and `deal chat` all validate their
//! input into the same typed [`Request`] (prompts, controller, [`SearchConfig`], reward
//! spec) and hand it to [`Driver::run`], which builds the reward from the heads registry,
//! builds each choice's controller from the controllers registry, runs the searches on the
//! backend and streams [`Event`]s. Nothing here knows HTTP or the terminal.
//!
//! - [`Registries`]: the heads and controllers a program runs with, passed in (a program
//!   that adds its own head or controller registers it here; nothing is global);
//! - [`alignment`]: [`Alignment`], what a request says about steering, parsed and validated
//!   against the registries.

pub mod alignment;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use deal_backend::Backend;
use deal_controllers::grammar::{Grammar, GrammarCompiler, GrammarError, GrammarSpec};
use deal_controllers::{ControlError, Outcome, SearchConfig};
use deal_heads::reward::{RewardSpec, WeightedReward};
use deal_heads::HeadContext;

pub use alignment::{Alignment, AlignmentError};

/// The heads and controllers available by name.
#[derive(Debug, Clone)]
pub struct Registries {
    /// Reward heads.
    pub heads: Arc<deal_heads::Registry>,
    /// Search controllers.
    pub controllers: Arc<deal_controllers::Registry>,
}

impl Registries {
    /// The built-in heads and controllers.
    pub fn builtin() -> Self {
        Self::new(deal_heads::Registry::with_builtin(), deal_controllers::Registry::builtin())
    }

    /// These heads and controllers.
    pub fn new(heads: deal_heads::Registry, controllers: deal_controllers::Registry) -> Self {
        Self { heads: Arc::new(heads), controllers: Arc::new(controllers) }
    }
}

/// One prompt of a request.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// Prompt tokens (a raw prompt with BOS, or a chat rendered by the model's template).
    pub tokens: Vec<u32>,
    /// The text the reward heads see as the prompt (the last user message of a chat).
    pub text: String,
}

/// A validated request: what to run, on which prompts, how many times.
#[derive(Debug, Clone)]
pub struct Request {
    /// One or more prompts; each is answered `n` times.
    pub prompts: Vec<Prompt>,
    /// Choices per prompt (choice j samples with `config.seed + j`).
    pub n: usize,
    /// Registry name of the controller.
    pub controller: String,
    /// Its settings.
    pub config: SearchConfig,
    /// The reward, when the request is steered.
    pub reward: Option<RewardSpec>,
    /// Report the model's log-probability of every generated token, with this many
    /// alternatives per position (`None`: no logprobs).
    pub logprobs: Option<usize>,
    /// Also score the prompt's tokens (OpenAI's `echo`): every outcome carries them in
    /// [`Outcome::prompt_logprobs`], with `logprobs` alternatives (0 when `None`).
    pub echo: bool,
    /// Generate a response (false with `echo`: only score the prompt, OpenAI's
    /// `max_tokens: 0`).
    pub generate: bool,
    /// Constrain every response to this grammar (compiled by [`Driver::grammar`]).
    pub grammar: Option<Grammar>,
}

impl Request {
    /// A request for `prompts` × `n` choices with `controller`, nothing extra reported.
    pub fn new(prompts: Vec<Prompt>, n: usize, controller: impl Into<String>, config: SearchConfig, reward: Option<RewardSpec>) -> Self {
        Self { prompts, n, controller: controller.into(), config, reward, logprobs: None, echo: false, generate: true, grammar: None }
    }
}

/// What [`Driver::run`] reports, in order: `Started` once the reward's heads are built,
/// then each choice's text pieces as they are committed and its `Done`.
#[derive(Debug)]
pub enum Event {
    /// The reward heads are built; the searches start.
    Started,
    /// A piece of choice `index`'s text (to append to what came before).
    Text {
        /// The choice: prompt number × `n` + choice number within the prompt.
        index: usize,
        /// The new text.
        text: String,
        /// The model's log-probabilities of the tokens this piece completes (empty unless
        /// the request asked for logprobs).
        logprobs: Vec<deal_backend::TokenLogprob>,
    },
    /// Choice `index` is finished.
    Done {
        /// The choice, numbered as in `Text`.
        index: usize,
        /// The search's result: full text, tokens, finish reason, reward breakdown, stats.
        outcome: Box<Outcome>,
    },
}

/// [`Driver::kv_estimate`]'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvEstimate {
    /// Bytes of KV cache at the search's peak.
    pub bytes: usize,
    /// Rows the search holds at once.
    pub rows: usize,
    /// The config field that sets the row count (`k`, `n`, `blocks`; `max_tokens` for one row).
    pub field: &'static str,
}

/// A backend with the registries and the heads' shared context; see the crate docs.
#[derive(Clone)]
pub struct Driver {
    backend: Arc<dyn Backend>,
    registries: Registries,
    heads: Arc<HeadContext>,
    /// The grammar compiler of the backend's tokenizer, built on first use.
    grammars: Arc<std::sync::OnceLock<Result<GrammarCompiler, GrammarError>>>,
}

impl Driver {
    /// A driver over `backend`, whose model-backed heads share `heads` (build it with
    /// [`HeadContext::with_policy`] for the local engine or [`HeadContext::with_backend`]).
    pub fn new(backend: Arc<dyn Backend>, registries: Registries, heads: Arc<HeadContext>) -> Self {
        Self { backend, registries, heads, grammars: Arc::default() }
    }

    /// Compile `spec` for the backend's tokenizer (the compiler is built on the first call,
    /// about a second for a 262k vocabulary; [`Driver::warm_grammars`] builds it ahead).
    pub fn grammar(&self, spec: &GrammarSpec) -> Result<Grammar, GrammarError> {
        match self.grammars.get_or_init(|| GrammarCompiler::new(self.backend.codec())) {
            Ok(c) => c.compile(spec),
            Err(e) => Err(e.clone()),
        }
    }

    /// Build the grammar compiler now (a server does it at start, off the request path).
    pub fn warm_grammars(&self) {
        self.grammars.get_or_init(|| GrammarCompiler::new(self.backend.codec()));
    }

    /// The backend searches run on.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The registries requests are validated and built against.
    pub fn registries(&self) -> &Registries {
        &self.registries
    }

    /// The context model-backed heads share.
    pub fn heads(&self) -> &Arc<HeadContext> {
        &self.heads
    }

    /// The same driver with its heads under `access` (see [`deal_heads::Access`]): a server
    /// limits what its clients' head params may reach.
    pub fn with_head_access(mut self, access: deal_heads::Access) -> Self {
        self.heads = self.heads.with_access(access);
        self
    }

    /// An upper estimate of the KV cache one of `req`'s searches holds at its peak (choices
    /// run one after another): the shared prompt plus, per row, the generated tokens and a
    /// lookahead, times the backend's bytes per token. `None` when the cache is not in this
    /// process (a remote engine). The field is the one that sets the row count.
    pub fn kv_estimate(&self, req: &Request) -> Result<Option<KvEstimate>, ControlError> {
        let Some(per_token) = self.backend.capabilities().kv_bytes_per_token else {
            return Ok(None);
        };
        let controller = self.registries.controllers.build(&req.controller, &req.config)?;
        let (rows, field) = controller.rows();
        let prompt = req.prompts.iter().map(|p| p.tokens.len()).max().unwrap_or(0);
        let per_row = req.config.max_tokens.saturating_add(req.config.lookahead);
        let tokens = prompt.saturating_add(rows.max(1).saturating_mul(per_row));
        Ok(Some(KvEstimate { bytes: tokens.saturating_mul(per_token), rows, field }))
    }

    /// Build the reward of `spec` (validated against the heads registry).
    pub fn reward(&self, spec: &RewardSpec) -> Result<WeightedReward, ControlError> {
        Ok(spec.build(&self.registries.heads, &self.heads)?)
    }

    /// Run `req`: build the reward once, then every prompt × `n` choice in turn, streaming
    /// events to `on_event` (return `false` to stop: the search is cancelled). `cancel` is
    /// checked before every pass. Returns the outcomes of the choices that finished.
    pub fn run(
        &self,
        req: &Request,
        cancel: Option<&AtomicBool>,
        on_event: &mut dyn FnMut(Event) -> bool,
    ) -> Result<Vec<Outcome>, ControlError> {
        let never = AtomicBool::new(false);
        let cancel = cancel.unwrap_or(&never);
        // everything below (prefill chunks, head scoring, head model loads) sees the flag
        deal_backend::cancel::scope(cancel, || self.run_in_scope(req, cancel, on_event))
    }

    fn run_in_scope(
        &self,
        req: &Request,
        cancel: &AtomicBool,
        on_event: &mut dyn FnMut(Event) -> bool,
    ) -> Result<Vec<Outcome>, ControlError> {
        let reward = match &req.reward {
            Some(spec) => match self.reward(spec) {
                Ok(r) => Some(r),
                Err(e) if e.is_cancelled() => return Ok(Vec::new()),
                Err(e) => return Err(e),
            },
            None => None,
        };
        let gone = AtomicBool::new(false);
        if !on_event(Event::Started) {
            return Ok(Vec::new());
        }
        let mut outcomes = Vec::new();
        for (p, prompt) in req.prompts.iter().enumerate() {
            let echoed = if req.echo {
                let lps = match self.backend.prompt_logprobs(&prompt.tokens, req.logprobs.unwrap_or(0)) {
                    Ok(l) => l,
                    Err(e) if matches!(e, deal_backend::Error::Cancelled) => return Ok(outcomes),
                    Err(e) => return Err(e.into()),
                };
                Some(prompt.tokens.iter().copied().zip(lps).collect::<Vec<_>>())
            } else {
                None
            };
            for j in 0..req.n {
                let index = p * req.n + j;
                // choice j samples with seed + j, so the n choices differ when the controller samples
                let mut cfg = req.config.clone();
                cfg.seed = cfg.seed.wrapping_add(j as u64);
                let controller = self.registries.controllers.build(&req.controller, &cfg)?;
                let mut r = deal_controllers::Request::new(self.backend.as_ref(), &prompt.text).with_tokens(&prompt.tokens).with_cancel(cancel);
                if let Some(w) = &reward {
                    r = r.with_reward(w);
                }
                if let Some(top) = req.logprobs {
                    r = r.with_logprobs(top);
                }
                if let Some(g) = &req.grammar {
                    r = r.with_grammar(g);
                }
                let mut on_text = |piece: deal_controllers::Piece<'_>| {
                    let ok = !cancel.load(Ordering::Relaxed)
                        && on_event(Event::Text { index, text: piece.text.to_string(), logprobs: piece.logprobs.to_vec() });
                    if !ok {
                        gone.store(true, Ordering::Relaxed);
                    }
                    ok
                };
                let mut outcome = if req.generate {
                    deal_controllers::run(controller.as_ref(), &r, &mut on_text)?
                } else {
                    Outcome {
                        text: String::new(),
                        tokens: Vec::new(),
                        finish: deal_backend::FinishReason::Length,
                        breakdown: None,
                        stats: deal_controllers::SearchStats { prompt_tokens: prompt.tokens.len(), ..Default::default() },
                        logprobs: Vec::new(),
                        prompt_logprobs: None,
                    }
                };
                outcome.prompt_logprobs = echoed.clone();
                if cancel.load(Ordering::Relaxed) || gone.load(Ordering::Relaxed) {
                    outcomes.push(outcome);
                    return Ok(outcomes);
                }
                outcomes.push(outcome.clone());
                if !on_event(Event::Done { index, outcome: Box::new(outcome) }) {
                    return Ok(outcomes);
                }
            }
        }
        Ok(outcomes)
    }
}
