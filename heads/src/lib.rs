#![warn(missing_docs)]
//! # deal-heads
//!
//! Reward heads: functions h(prompt, response) → score that the search combines with
//! per-request weights ([`crate::reward`]). Heads see text and token ids; model-backed heads
//! reach the policy only through a [`deal_backend::Backend`] handle.
//!
//! - [`RewardHead`]: the trait every head implements: its name, a one-line description, the
//!   params it accepts (a typed `Params` struct, checked against the declared [`ParamInfo`]
//!   list), how its raw scores are normalised ([`Scale`]) and batched scoring of many
//!   [`Candidate`]s at once.
//! - [`Registry`]: the heads available by name. Adding a head is one file in this folder plus
//!   one line in the `builtin_heads!` list below.
//! - [`HeadContext`]: what heads share across requests: the policy backend (judge, probe)
//!   and lazily loaded models (MiniLM, other GGUF judges), each loaded once behind an `Arc`.
//! - [`reward`]: per-request weight vectors over heads, calibration, combination, floors;
//! - [`probe_train`]: fitting linear probes on hidden states (`deal train-probe`);
//! - [`error`]: [`Error`], the heads' error type.
//!
//! Every head's normalised score lies in [0, 1] and "higher" always means "more of what the
//! head rewards"; negative weights ask for less of it. Raw scores keep the head's natural
//! units (a VADER compound in [-1, 1], a count of offensive terms, ...).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use deal_backend::Backend;
use deal_engine::{Engine, EngineOptions};

use crate::reward::RewardError;

pub mod access;
pub mod error;
pub mod probe_train;
pub mod reward;
pub mod text;

pub use access::Access;
pub use error::{Error, Result};

/// The built-in heads: `module => Type`. One line per head; the module is the head's file.
macro_rules! builtin_heads {
    ($($module:ident => $ty:ident),* $(,)?) => {
        $(pub mod $module;)*
        fn register_builtin(r: &mut Registry) {
            $(r.register::<$module::$ty>();)*
        }
    };
}

builtin_heads! {
    keywords => Keywords,
    length => Length,
    format => Format,
    sentiment => Sentiment,
    lexicon => Lexicon,
    repetition => Repetition,
    relevance => Relevance,
    judge => Judge,
    probe => Probe,
    http => Http,
}

/// One candidate continuation to score.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    /// The prompt the response continues.
    pub prompt: String,
    /// The response so far (without the prompt).
    pub response: String,
    /// The response's token ids in the policy's vocabulary (may be empty when unknown).
    #[serde(default)]
    pub tokens: Vec<u32>,
    /// `true` for a lookahead prefix that will still grow, `false` for a finished response.
    #[serde(default)]
    pub partial: bool,
    /// The policy's final normalised hidden state after the last response token, when the
    /// backend has it.
    #[serde(default, skip_serializing)]
    pub hidden: Option<Vec<f32>>,
}

impl Candidate {
    /// A finished response to `prompt`, without token ids or hidden state.
    pub fn new(prompt: impl Into<String>, response: impl Into<String>) -> Self {
        Self { prompt: prompt.into(), response: response.into(), ..Default::default() }
    }

    /// Mark as a lookahead prefix (`true`) or a finished response (`false`).
    pub fn partial(mut self, partial: bool) -> Self {
        self.partial = partial;
        self
    }

    /// Attach the response's token ids in the policy's vocabulary.
    pub fn with_tokens(mut self, tokens: Vec<u32>) -> Self {
        self.tokens = tokens;
        self
    }

    /// Attach the policy's final hidden state after the last response token.
    pub fn with_hidden(mut self, hidden: Vec<f32>) -> Self {
        self.hidden = Some(hidden);
        self
    }
}

/// How a head's raw scores map to the common normalised scale [0, 1] (higher = more of what
/// the head rewards).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Scale {
    /// Declared range: `lo` maps to 0, `hi` to 1, linearly, clamped. `lo > hi` is allowed and
    /// means lower raw scores are better (a count of offensive terms).
    Range {
        /// Raw score that maps to 0.
        lo: f64,
        /// Raw score that maps to 1.
        hi: f64,
    },
    /// Reference statistics: z = (raw − mean) / std, mapped to (0, 1) by the logistic
    /// approximation of the normal CDF, σ(1.702·z) (so mean → 0.5, ±1 std → 0.15 / 0.85).
    Zscore {
        /// Mean of the raw scores (maps to 0.5).
        mean: f64,
        /// Standard deviation of the raw scores (> 0).
        std: f64,
    },
}

impl Scale {
    /// The unit range [0, 1].
    pub const UNIT: Scale = Scale::Range { lo: 0.0, hi: 1.0 };

    /// Map a raw score to [0, 1].
    pub fn normalize(&self, raw: f32) -> f32 {
        let raw = raw as f64;
        let v = match *self {
            Scale::Range { lo, hi } => ((raw - lo) / (hi - lo)).clamp(0.0, 1.0),
            Scale::Zscore { mean, std } => 1.0 / (1.0 + (-1.702 * (raw - mean) / std).exp()),
        };
        v as f32 + 0.0 // no -0.0
    }

    /// Check the scale can normalise (finite, non-degenerate).
    pub fn validate(&self) -> std::result::Result<(), String> {
        match *self {
            Scale::Range { lo, hi } if !(lo.is_finite() && hi.is_finite()) || lo == hi => {
                Err(format!("range [{lo}, {hi}] must be two different finite numbers"))
            }
            Scale::Zscore { mean, std } if !(mean.is_finite() && std.is_finite() && std > 0.0) => {
                Err(format!("z-score needs a finite mean and a std > 0 (got mean {mean}, std {std})"))
            }
            _ => Ok(()),
        }
    }

    /// Human-readable form, e.g. `[-1, 1] → [0, 1]`.
    pub fn describe(&self) -> String {
        match *self {
            Scale::Range { lo, hi } => format!("raw [{lo}, {hi}] → [0, 1]"),
            Scale::Zscore { mean, std } => format!("z-score (mean {mean:.3}, std {std:.3}) → σ(1.7z)"),
        }
    }
}

/// One parameter a head accepts, for listings (`deal heads`) and for rejecting unknown ones.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ParamInfo {
    /// Key in the head's params object.
    pub name: &'static str,
    /// Type as written in JSON, e.g. `string[]`, `number`, `"words"|"tokens"`.
    #[serde(rename = "type")]
    pub ty: &'static str,
    /// Default value, or `required`.
    pub default: &'static str,
    /// One line: what the parameter does.
    pub doc: &'static str,
}

/// Per-candidate extra numbers a head reports next to its score (e.g. keyword hard coverage).
pub type Details = Vec<(&'static str, f32)>;

/// A reward head. Implementations live one per file in this folder and are registered in
/// `builtin_heads!`; the registry erases them to [`DynHead`].
pub trait RewardHead: Send + Sync + Sized + 'static {
    /// Name used in weight vectors (`{"weights": {"<NAME>": 1.0}}`).
    const NAME: &'static str;
    /// One line: what the head measures and what "higher" means.
    const DESCRIPTION: &'static str;
    /// Every parameter `Params` accepts (checked: a key not listed here is an error).
    const PARAMS: &'static [ParamInfo];
    /// Example params as JSON, shown by `deal heads`.
    const EXAMPLE: &'static str;
    /// Typed parameters, deserialized from the request's `heads.<NAME>` object.
    type Params: DeserializeOwned;

    /// Validate params (semantic checks beyond their types) and build the head. Heavy models
    /// are not loaded here but on first use, through `ctx`.
    fn build(params: Self::Params, ctx: &Arc<HeadContext>) -> Result<Self>;

    /// How raw scores are normalised.
    fn scale(&self) -> Scale;

    /// Raw scores, one per candidate, in order.
    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>>;

    /// Raw scores plus per-candidate details for the breakdown. Default: no details.
    fn score_with_details(&self, cands: &[Candidate]) -> Result<Vec<(f32, Details)>> {
        Ok(self.score(cands)?.into_iter().map(|s| (s, Vec::new())).collect())
    }

    /// Whether the head reads [`Candidate::hidden`] (the engine then passes hidden states).
    fn reads_hidden(&self) -> bool {
        false
    }

    /// Load whatever the head loads lazily (models), so the first search step is not slow.
    fn prepare(&self) -> Result<()> {
        Ok(())
    }
}

/// Object-safe view of a built [`RewardHead`].
pub trait DynHead: Send + Sync {
    /// Name used in weight vectors ([`RewardHead::NAME`]).
    fn name(&self) -> &'static str;
    /// How raw scores are normalised ([`RewardHead::scale`]).
    fn scale(&self) -> Scale;
    /// Raw scores, one per candidate, in order ([`RewardHead::score`]).
    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>>;
    /// Raw scores plus per-candidate details ([`RewardHead::score_with_details`]).
    fn score_with_details(&self, cands: &[Candidate]) -> Result<Vec<(f32, Details)>>;
    /// Whether the head reads [`Candidate::hidden`] ([`RewardHead::reads_hidden`]).
    fn reads_hidden(&self) -> bool;
    /// Load lazily loaded models now ([`RewardHead::prepare`]).
    fn prepare(&self) -> Result<()>;
}

impl<H: RewardHead> DynHead for H {
    fn name(&self) -> &'static str {
        H::NAME
    }
    fn scale(&self) -> Scale {
        RewardHead::scale(self)
    }
    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        RewardHead::score(self, cands)
    }
    fn score_with_details(&self, cands: &[Candidate]) -> Result<Vec<(f32, Details)>> {
        RewardHead::score_with_details(self, cands)
    }
    fn reads_hidden(&self) -> bool {
        RewardHead::reads_hidden(self)
    }
    fn prepare(&self) -> Result<()> {
        RewardHead::prepare(self)
    }
}

type BuildFn = fn(&serde_json::Value, &Arc<HeadContext>) -> Result<Arc<dyn DynHead>>;
type CheckFn = fn(&serde_json::Value) -> Result<()>;

/// A registered kind of head: its metadata and how to build one from JSON params.
#[derive(Clone, Copy)]
pub struct HeadKind {
    /// Name used in weight vectors ([`RewardHead::NAME`]).
    pub name: &'static str,
    /// One line: what the head measures ([`RewardHead::DESCRIPTION`]).
    pub description: &'static str,
    /// The parameters the head accepts ([`RewardHead::PARAMS`]).
    pub params: &'static [ParamInfo],
    /// Example params as JSON ([`RewardHead::EXAMPLE`]).
    pub example: &'static str,
    build: BuildFn,
    check: CheckFn,
}

impl std::fmt::Debug for HeadKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadKind").field("name", &self.name).finish_non_exhaustive()
    }
}

impl HeadKind {
    /// The kind of head `H`.
    pub fn of<H: RewardHead>() -> Self {
        fn build<H: RewardHead>(v: &serde_json::Value, ctx: &Arc<HeadContext>) -> Result<Arc<dyn DynHead>> {
            let p = parse_params::<H::Params>(H::NAME, H::PARAMS, v)?;
            Ok(Arc::new(H::build(p, ctx)?))
        }
        fn check<H: RewardHead>(v: &serde_json::Value) -> Result<()> {
            parse_params::<H::Params>(H::NAME, H::PARAMS, v).map(|_| ())
        }
        Self {
            name: H::NAME,
            description: H::DESCRIPTION,
            params: H::PARAMS,
            example: H::EXAMPLE,
            build: build::<H>,
            check: check::<H>,
        }
    }

    /// The kind as JSON: name, description, params (with types, defaults and docs) and the
    /// example params (as `deal heads --json` and `GET /v1/heads` list them).
    pub fn describe(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name,
            "description": self.description,
            "params": self.params,
            "example": serde_json::from_str::<serde_json::Value>(self.example).unwrap_or(serde_json::Value::Null),
        })
    }

    /// Build a head from JSON params (`null` = no params).
    pub fn build(&self, params: &serde_json::Value, ctx: &Arc<HeadContext>) -> Result<Arc<dyn DynHead>> {
        (self.build)(params, ctx)
    }

    /// Check JSON params against the declared list and the typed `Params` (no build).
    pub fn check_params(&self, params: &serde_json::Value) -> Result<()> {
        (self.check)(params)
    }
}

/// Candidate indices grouped by prompt, in first-seen order: heads that run a model score
/// all candidates of one prompt with one batched call.
pub fn group_by_prompt<'a>(cands: impl IntoIterator<Item = &'a Candidate>) -> Vec<(&'a str, Vec<usize>)> {
    let mut groups: Vec<(&str, Vec<usize>)> = Vec::new();
    for (i, c) in cands.into_iter().enumerate() {
        match groups.iter_mut().find(|(p, _)| *p == c.prompt) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((&c.prompt, vec![i])),
        }
    }
    groups
}

/// Parse a head's JSON params: an object (or `null`) whose keys are all declared, then
/// deserialized into the typed struct. Errors name the head and list the valid params.
pub fn parse_params<P: DeserializeOwned>(head: &str, params: &[ParamInfo], v: &serde_json::Value) -> Result<P> {
    let empty = serde_json::Value::Object(Default::default());
    let v = if v.is_null() { &empty } else { v };
    let obj = v.as_object().ok_or_else(|| RewardError::BadParam {
        head: head.into(),
        message: format!("params must be a JSON object, got {v}"),
    })?;
    for key in obj.keys() {
        if !params.iter().any(|p| p.name == key) {
            return Err(RewardError::UnknownParam {
                head: head.into(),
                param: key.clone(),
                valid: params.iter().map(|p| p.name.to_string()).collect(),
            }
            .into());
        }
    }
    serde_json::from_value(v.clone())
        .map_err(|e| RewardError::BadParam { head: head.into(), message: e.to_string() }.into())
}

/// Shorthand for a semantic param error of head `head`.
pub fn bad_param(head: &str, message: impl Into<String>) -> Error {
    RewardError::BadParam { head: head.into(), message: message.into() }.into()
}

/// The heads available by name.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: Vec<HeadKind>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self::default()
    }

    /// A new registry holding the built-in heads (extend it with [`Registry::register`]).
    pub fn with_builtin() -> Self {
        let mut r = Self::empty();
        register_builtin(&mut r);
        r
    }

    /// Add (or replace) head `H`.
    pub fn register<H: RewardHead>(&mut self) {
        self.kinds.retain(|k| k.name != H::NAME);
        self.kinds.push(HeadKind::of::<H>());
    }

    /// The kind named `name`, or an error listing the available ones.
    pub fn get(&self, name: &str) -> Result<&HeadKind> {
        self.kinds.iter().find(|k| k.name == name).ok_or_else(|| {
            RewardError::UnknownHead { name: name.into(), valid: self.names().iter().map(|s| s.to_string()).collect() }
                .into()
        })
    }

    /// Every registered kind, in registration order.
    pub fn kinds(&self) -> &[HeadKind] {
        &self.kinds
    }

    /// Names of the registered heads, in registration order.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name).collect()
    }
}

type Slot = Arc<Mutex<Option<Arc<dyn Any + Send + Sync>>>>;

/// What heads share across requests: the policy backend and models loaded on first use.
/// Build one per process (or per server) and pass it as `Arc<HeadContext>` to every
/// [`crate::reward::RewardSpec::build`].
pub struct HeadContext {
    policy: Option<Arc<dyn Backend>>,
    /// The GGUF file the policy was loaded from, when it is local.
    policy_path: Option<PathBuf>,
    /// Device for models heads load themselves (judges given by path).
    device: candle_core::Device,
    shared: Arc<Mutex<HashMap<(TypeId, String), Slot>>>,
    /// What head params may reach (URLs, files, fetching).
    access: Arc<Access>,
}

impl Default for HeadContext {
    fn default() -> Self {
        Self { policy: None, policy_path: None, device: candle_core::Device::Cpu, shared: Default::default(), access: Default::default() }
    }
}

impl std::fmt::Debug for HeadContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HeadContext").field("policy", &self.policy.as_ref().map(|e| e.model_id())).finish_non_exhaustive()
    }
}

impl HeadContext {
    /// A context without a policy model (heads that need one fail with a clear error).
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    /// A context whose policy is the local `engine` (the default judge, the probe's hidden
    /// states); judges given by path load on the engine's device.
    pub fn with_policy(engine: Arc<Engine>) -> Arc<Self> {
        Arc::new(Self {
            policy_path: Some(engine.path().to_path_buf()),
            device: engine.model().device().clone(),
            policy: Some(engine),
            shared: Default::default(),
            access: Default::default(),
        })
    }

    /// The same context (policy, loaded models) under other [`Access`] rules: a server
    /// restricts what its clients' head params may reach with [`Access::server`].
    pub fn with_access(&self, access: Access) -> Arc<Self> {
        Arc::new(Self {
            policy: self.policy.clone(),
            policy_path: self.policy_path.clone(),
            device: self.device.clone(),
            shared: self.shared.clone(),
            access: Arc::new(access),
        })
    }

    /// What head params may reach.
    pub fn access(&self) -> &Access {
        &self.access
    }

    /// A context whose policy is any backend (e.g. a remote engine).
    pub fn with_backend(backend: Arc<dyn Backend>) -> Arc<Self> {
        Arc::new(Self { policy: Some(backend), ..Default::default() })
    }

    /// The device for models heads load themselves (the local policy's, else the CPU).
    pub fn device(&self) -> &candle_core::Device {
        &self.device
    }

    /// The policy backend, if the context has one.
    pub fn policy(&self) -> Option<&Arc<dyn Backend>> {
        self.policy.as_ref()
    }

    /// The policy, or an error saying which head needed it.
    pub fn require_policy(&self, head: &str) -> Result<&Arc<dyn Backend>> {
        self.policy.as_ref().ok_or_else(|| {
            bad_param(head, "this head runs the policy model, but no model is loaded in this context")
        })
    }

    /// The value stored under (`T`, `key`), created by `init` on first use. Concurrent callers
    /// of the same key wait for one `init` (a cancelled request stops waiting); different
    /// keys load in parallel. A failed or panicking `init` is not cached (the next call
    /// retries).
    pub fn shared<T: Any + Send + Sync>(&self, key: &str, init: impl FnOnce() -> Result<T>) -> Result<Arc<T>> {
        // a panic while a model loaded poisons its slot; the slot then holds nothing (the
        // value is stored only after `init` returns), so the next caller simply retries
        let slot = {
            let mut map = self.shared.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            map.entry((TypeId::of::<T>(), key.to_string())).or_default().clone()
        };
        // wait for another caller's load without blocking past this request's cancellation
        let mut guard = loop {
            match slot.try_lock() {
                Ok(g) => break g,
                Err(std::sync::TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    deal_backend::cancel::check()?;
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
            }
        };
        if let Some(v) = guard.as_ref() {
            if let Ok(t) = v.clone().downcast::<T>() {
                return Ok(t);
            }
        }
        deal_backend::cancel::check()?;
        // a panicking loader (a bug, a malformed file) fails this call only: nothing is
        // stored, the slot stays usable, the next call loads again
        let loaded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(init))
            .map_err(|_| {
                tracing::error!("loading `{key}` panicked");
                Error::Backend(deal_backend::Error::Engine("a head's model failed to load (it panicked; see the server log)".into()))
            })?;
        let t = Arc::new(loaded?);
        *guard = Some(t.clone());
        Ok(t)
    }

    /// The file a head param names, checked against the context's [`Access`] (a request may
    /// only name files the operator listed; the error says nothing about what exists).
    pub fn resolve_file(&self, head: &str, what: &str, given: &Path) -> Result<PathBuf> {
        self.access.resolve_file(what, given).map_err(|e| bad_param(head, e.0))
    }

    /// A model to run: the policy when `path` is `None`, else the GGUF at `path` (resolved
    /// through the context's [`Access`], loaded once as a local engine on the policy's
    /// device, or the CPU). Returns the backend and a key that names it.
    pub fn model(&self, head: &str, path: Option<&Path>) -> Result<(Arc<dyn Backend>, String)> {
        match path {
            None => {
                let p = self.require_policy(head)?.clone();
                let key = self.policy_path.as_ref().map_or_else(|| format!("policy:{}", p.model_id()), |p| p.to_string_lossy().into_owned());
                Ok((p, key))
            }
            Some(given) => {
                let p = self.resolve_file(head, "model", given)?;
                // one key per file, however the request spelled it
                let p = p.canonicalize().unwrap_or(p);
                if let (Some(e), Some(pp)) = (&self.policy, &self.policy_path) {
                    if pp.canonicalize().is_ok_and(|c| c == p) {
                        return Ok((e.clone(), pp.to_string_lossy().into_owned()));
                    }
                }
                let key = p.to_string_lossy().into_owned();
                let device = self.device.clone();
                let restricted = self.access.files_restricted();
                let engine: Arc<Arc<Engine>> = self.shared(&key, || {
                    let opts = EngineOptions { device, ..Default::default() };
                    match Engine::load(&p, &opts) {
                        Ok(e) => Ok(Arc::new(e)),
                        // the loader's message may quote the file's bytes: not for a client
                        Err(e) if restricted => {
                            tracing::warn!("judge model {}: {e}", p.display());
                            Err(bad_param(head, format!("model `{}` could not be loaded (see the server log)", given.display())))
                        }
                        Err(e) => Err(e.into()),
                    }
                })?;
                Ok(((*engine).clone() as Arc<dyn Backend>, key))
            }
        }
    }
}

/// Check that an optional model path names a file the context allows (at validation time).
pub fn check_model_path(head: &str, path: &Option<PathBuf>, ctx: &HeadContext) -> Result<()> {
    match path {
        Some(p) => ctx.resolve_file(head, "model", p).map(|_| ()),
        None => Ok(()),
    }
}
