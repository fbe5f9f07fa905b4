#![warn(missing_docs)]
//! # deal-engine
//!
//! deal's local engine: a GGUF model runner built for tree search, behind the
//! [`deal_backend::Backend`] interface the controllers and heads use.
//!
//! - [`gguf`]: reading GGUF metadata and tensors;
//! - [`tokenizer`]: the GGUF's own vocabulary as a tokenizer (SentencePiece merges by score, or
//!   `tokenizers` for byte-level BPE);
//! - [`model`]: our own forward pass for gemma3 and the llama family, on candle ops;
//! - [`kernels`]: hand-written CPU matmul kernels (batched Q8_0, Q5_0, Q4_0, Q4_K, Q5_K and Q6_K
//!   on their stored bits, AVX-512 VNNI or AVX2);
//! - [`kv_cache`]: a batched KV cache built for tree search (fork / select / truncate rows);
//! - [`scheduler`]: concurrent callers' forward calls merged into shared passes;
//! - [`engine`]: model + tokenizer + scheduler, with prefill and plain generation;
//! - [`perplexity`]: a text's perplexity by llama.cpp's `llama-perplexity` protocol;
//! - [`local`]: the engine as a [`deal_backend::Backend`] (rows over one forked KV cache);
//! - [`chat`]: chat templates (the GGUF's own via minijinja, or a plain fallback);
//! - [`device`]: choosing cpu / cuda at run time;
//! - [`synthetic`]: random-weight GGUFs of real shapes (Q4_K_M mix) for benchmarks;
//! - [`setup`]: fetching and verifying the default model (and pip-packaged assets);
//! - [`sampling`], [`stop`]: re-exported from `deal-backend`.

pub mod chat;
pub mod device;
pub mod engine;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod gguf;
pub mod kernels;
pub mod kv_cache;
pub mod local;
pub mod model;
pub mod perplexity;
pub mod scheduler;
pub mod setup;
pub mod synthetic;
pub mod tokenizer;

pub use deal_backend::{sampling, stop};
pub use error::{Error, Result};

pub use engine::{Engine, EngineOptions, GenerateParams, Generation};
pub use deal_backend::FinishReason;
