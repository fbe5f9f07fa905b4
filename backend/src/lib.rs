#![warn(missing_docs)]
//! # deal-backend
//!
//! The one interface between deal's search controllers and reward heads and the engines
//! they run on. A controller never sees a tensor, a KV cache or an HTTP call: it sees a
//! [`Backend`] (tokenizer, context length, [`Capabilities`]) and the [`Rows`] of one search,
//! whose operations return plain data: a [`TokenDist`] per row (top-k, argmax, log-probability
//! of a token, a draw), and fork / select / truncate.
//!
//! - [`backend`]: the [`Backend`] and [`Rows`] traits and what they report;
//! - [`dist`]: [`TokenDist`], a next-token distribution (full logits, or only the top-N
//!   log-probabilities a remote engine returns);
//! - [`cancel`]: the running request's cancellation flag, checked by long loops below the
//!   controllers (prefill chunks, scoring chunks, model-load waits);
//! - [`chat`]: [`chat::Message`] and [`chat::Role`], a conversation for chat templates;
//! - [`codec`]: the [`TextCodec`] (tokenizer) trait and [`codec::StreamDecoder`];
//! - [`sampling`]: choosing a token from logits (greedy, temperature, top-k/p, min-p, seeds);
//! - [`stop`]: stop strings over streamed text;
//! - [`math`]: vectorisable scalar math shared with the engine's kernels;
//! - [`error`]: [`Error`], whose variants say whose fault a failure is (caller, engine,
//!   upstream server, missing capability).
//!
//! Implementations: the local GGUF engine (`deal-engine`) and a remote OpenAI-compatible
//! server (`deal-remote`).

pub mod backend;
pub mod cancel;
pub mod chat;
pub mod codec;
pub mod dist;
pub mod error;
pub mod math;
pub mod sampling;
pub mod stop;

pub use backend::{Backend, Capabilities, Counter, Rows, Step};
pub use codec::TextCodec;
pub use dist::{TokenDist, TokenLogprob};
pub use error::{Error, Result};

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token or a stop string.
    Stop,
    /// `max_tokens` reached (or the context is full).
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FinishReason::Stop => "stop",
            FinishReason::Length => "length",
            FinishReason::Cancelled => "cancelled",
        }
    }
}
