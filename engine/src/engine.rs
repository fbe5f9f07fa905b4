//! The engine: a loaded [`Model`] with its [`GgufTokenizer`] and the [`Scheduler`] that merges
//! concurrent callers' passes, and plain generation on top (prefill in chunks, then sample
//! token by token with streaming, stop strings and cancellation). Search controllers reach
//! it through [`deal_backend::Backend`] ([`crate::local`]).

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Device;

use crate::chat::ChatTemplate;
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::model::{ForwardOutput, LoadOptions, LogitsFor, Model};
use crate::sampling::{Sampler, SamplingParams};
use crate::stop::StopMatcher;
use crate::scheduler::{Scheduler, SchedulerStats};
use crate::tokenizer::GgufTokenizer;
use deal_backend::codec::StreamDecoder;
use deal_backend::FinishReason;
use crate::{Error, Result};

/// Prompts are prefilled in chunks of this many tokens: bounds attention-score memory, and
/// the request's cancellation flag ([`deal_backend::cancel`]) is checked between chunks, so
/// a client that leaves during a long prompt frees its worker within a chunk's time. The
/// chunking depends on the prompt alone (never on load), so a prompt's cache and logits are
/// the same under any concurrency.
pub const PREFILL_CHUNK: usize = 256;

/// How to load an engine.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Device the weights are loaded onto and the forward pass runs on (default CPU).
    pub device: Device,
    /// How the weights are held in memory.
    pub load: LoadOptions,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self { device: Device::Cpu, load: LoadOptions::default() }
    }
}

/// Settings of one plain generation.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    /// Most new tokens to produce.
    pub max_tokens: usize,
    /// How each next token is chosen.
    pub sampling: SamplingParams,
    /// Generation ends when any of these appears; it is not part of the output.
    pub stop: Vec<String>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        Self { max_tokens: 128, sampling: SamplingParams::default(), stop: Vec::new() }
    }
}

/// Output of [`Engine::generate`].
#[derive(Debug, Clone)]
pub struct Generation {
    /// The generated text (a stop string and what follows excluded).
    pub text: String,
    /// Generated token ids (the stop token excluded).
    pub tokens: Vec<u32>,
    /// Why generation ended.
    pub finish_reason: FinishReason,
    /// Number of prompt tokens prefilled.
    pub prompt_tokens: usize,
    /// Wall time of the prefill, seconds.
    pub prefill_secs: f64,
    /// Wall time of decoding (after the prefill), seconds.
    pub decode_secs: f64,
}

/// A model and its tokenizer on one device.
pub struct Engine {
    model: Model,
    tokenizer: GgufTokenizer,
    path: PathBuf,
    /// The GGUF's `tokenizer.chat_template`, compiled (or deal's plain fallback).
    chat: ChatTemplate,
    has_chat_template: bool,
    /// Merges concurrent callers' steps into shared passes, first come first served.
    scheduler: Scheduler,
    /// Prefilled prompts that are started again and again (judge templates).
    shared_prompts: crate::local::SharedPrompts,
}

impl Engine {
    /// Load model weights and build the tokenizer from a GGUF file.
    pub fn load(path: impl AsRef<Path>, opts: &EngineOptions) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        let mut f = GgufFile::open(&path)?;
        // the tokenizer first (milliseconds), so that the parsed vocabulary can go before the
        // weights load
        let tokenizer = GgufTokenizer::from_gguf(f.content())?;
        f.release_vocab();
        let model = Model::load(&f, &opts.device, &opts.load)?;
        let source = crate::gguf::opt(f.content(), "tokenizer.chat_template", |c, k| {
            crate::gguf::get_str(c, k).map(str::to_string)
        })?;
        // a template that does not compile is reported and replaced by the fallback
        let chat = match ChatTemplate::new(source.as_deref(), &tokenizer) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!("{e}; using deal's plain chat template");
                ChatTemplate::new(None, &tokenizer)?
            }
        };
        let has_chat_template = !chat.is_fallback();
        Ok(Self { model, tokenizer, path, chat, has_chat_template, scheduler: Scheduler::default(), shared_prompts: Default::default() })
    }

    /// The chat template (the GGUF's own, or deal's plain fallback; see [`crate::chat`]).
    pub fn chat_template(&self) -> &ChatTemplate {
        &self.chat
    }

    /// Whether the GGUF carries its own chat template.
    pub fn has_chat_template(&self) -> bool {
        self.has_chat_template
    }

    /// Prompt tokens of a conversation, rendered by [`Engine::chat_template`].
    pub fn encode_chat(&self, messages: &[crate::chat::Message]) -> Result<Vec<u32>> {
        self.chat.encode(&self.tokenizer, messages)
    }

    /// The loaded model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// Run one step on `cache` (see [`Model::forward`]). Concurrent calls from several threads
    /// (searches of different requests) are merged by the scheduler: calls that arrive while
    /// a pass runs wait, and the next pass runs all of them at once, first come first served.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[Vec<u32>], want: LogitsFor) -> Result<ForwardOutput> {
        self.scheduler.run(&self.model, cache, tokens, want)
    }

    /// How many passes the engine ran and how many callers they served (concurrent callers
    /// share passes; see [`crate::scheduler`]).
    pub fn scheduler_stats(&self) -> SchedulerStats {
        self.scheduler.stats()
    }

    pub(crate) fn shared_prompts(&self) -> &crate::local::SharedPrompts {
        &self.shared_prompts
    }

    /// The model's tokenizer.
    pub fn tokenizer(&self) -> &GgufTokenizer {
        &self.tokenizer
    }

    /// The GGUF file the engine was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Model name for APIs: the file name without `.gguf`.
    pub fn name(&self) -> String {
        self.path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into())
    }

    /// Tokenize a raw prompt, adding BOS when the model wants one.
    pub fn encode_prompt(&self, text: &str) -> Result<Vec<u32>> {
        self.tokenizer.encode(text, self.tokenizer.add_bos())
    }

    /// Run a prompt through a fresh single-row cache, in chunks; returns the cache and the
    /// output of the last chunk (logits of the last prompt token).
    pub fn prefill(&self, tokens: &[u32]) -> Result<(KvCache, ForwardOutput)> {
        if tokens.is_empty() {
            return Err(Error::invalid("the prompt is empty (no tokens)"));
        }
        let ctx = self.model.config().context_length;
        if tokens.len() >= ctx {
            return Err(Error::invalid(format!(
                "the prompt has {} tokens; the model's context is {ctx}",
                tokens.len()
            )));
        }
        let mut cache = self.model.new_cache(1)?;
        let mut last = None;
        let chunks: Vec<&[u32]> = tokens.chunks(PREFILL_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            deal_backend::cancel::check()?;
            let want = if i + 1 == chunks.len() { LogitsFor::Last } else { LogitsFor::None };
            last = Some(self.forward(&mut cache, &[chunk.to_vec()], want)?);
        }
        let out = last.ok_or_else(|| Error::invalid("empty prompt"))?;
        Ok((cache, out))
    }

    /// Generate from prompt tokens. `on_text` receives each piece of text as soon as it is
    /// final (UTF-8 complete, not part of a stop string); returning `false` cancels.
    pub fn generate(
        &self,
        prompt: &[u32],
        params: &GenerateParams,
        on_text: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation> {
        let mut sampler = Sampler::new(params.sampling.clone())?;
        let t0 = Instant::now();
        let (mut cache, mut out) = self.prefill(prompt)?;
        let prefill_secs = t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let ctx = self.model.config().context_length;
        let mut history = prompt.to_vec();
        let mut tokens = Vec::new();
        let mut text = String::new();
        let mut decoder = StreamDecoder::new(true);
        let mut stops = StopMatcher::new(&params.stop);
        let mut finish = FinishReason::Length;
        while tokens.len() < params.max_tokens {
            let logits = out.logits.as_ref().ok_or_else(|| Error::invalid("no logits"))?.get(0)?.to_vec1::<f32>()?;
            let next = sampler.sample(&logits, &history)?;
            if self.tokenizer.is_eog(next) {
                finish = FinishReason::Stop;
                break;
            }
            tokens.push(next);
            history.push(next);
            let piece = decoder.push(&self.tokenizer, next)?;
            let o = stops.push(&piece);
            text.push_str(&o.emit);
            if !o.emit.is_empty() && !on_text(&o.emit) {
                finish = FinishReason::Cancelled;
                break;
            }
            if o.stopped {
                finish = FinishReason::Stop;
                break;
            }
            if history.len() >= ctx || tokens.len() >= params.max_tokens {
                break;
            }
            out = self.forward(&mut cache, &[vec![next]], LogitsFor::Last)?;
        }
        // flush what the decoder and the stop matcher still hold (a stop string may complete)
        if !stops.stopped() {
            let rest = stops.push(&decoder.finish());
            let mut tail = rest.emit;
            if !rest.stopped {
                tail.push_str(&stops.finish());
            }
            if !tail.is_empty() && finish != FinishReason::Cancelled {
                on_text(&tail);
                text.push_str(&tail);
            }
        }
        Ok(Generation {
            text,
            tokens,
            finish_reason: finish,
            prompt_tokens: prompt.len(),
            prefill_secs,
            decode_secs: t1.elapsed().as_secs_f64(),
        })
    }
}
