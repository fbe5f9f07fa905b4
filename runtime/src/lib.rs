#![warn(missing_docs)]
//! # deal-runtime
//!
//! The engine under deal's search controllers:
//!
//! - [`gguf`]: reading GGUF metadata and tensors;
//! - [`tokenizer`]: a `tokenizers::Tokenizer` built from the GGUF's own vocabulary;
//! - [`model`]: our own forward pass for gemma3 and the llama family, on candle ops;
//! - [`kernels`]: hand-written CPU matmul kernels (batched Q8_0 with AVX512-VNNI);
//! - [`kv_cache`]: a batched KV cache built for tree search (fork / select / truncate rows);
//! - [`sampling`]: greedy, temperature, top-k/top-p/min-p, repetition penalty, seeds;
//! - [`engine`]: model + tokenizer + device, with prefill/step and plain generation;
//! - [`stop`]: stop strings over streamed text;
//! - [`chat`]: chat templates (the GGUF's own via minijinja, or a plain fallback);
//! - [`device`]: choosing cpu / cuda at run time;
//! - [`setup`]: fetching and verifying the default model;
//! - [`heads`]: reward heads (keywords, length, format, sentiment, lexicon, repetition,
//!   relevance, judge, probe, http) behind one trait and a registry;
//! - [`reward`]: per-request weight vectors over heads, calibration, combination, floors;
//! - [`probe_train`]: fitting linear probes on hidden states (`deal train-probe`).

pub mod chat;
pub mod device;
pub mod engine;
pub mod error;
pub mod gguf;
pub mod heads;
pub mod kernels;
pub mod kv_cache;
pub mod model;
pub mod probe_train;
pub mod reward;
pub mod sampling;
pub mod setup;
pub mod stop;
pub mod tokenizer;

pub use error::{Error, Result};

pub use engine::{Engine, EngineOptions, FinishReason, GenerateParams, Generation};
