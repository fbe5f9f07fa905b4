//! The engine's error type: every fallible public function returns [`Result`].

use std::path::PathBuf;

/// Errors raised by the runtime. Messages are written for the person who ran deal:
/// they say what was wrong and, where there is one, what would be accepted.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The GGUF file is malformed or lacks a key/tensor deal needs.
    #[error("GGUF: {0}")]
    Gguf(String),
    /// The model's architecture is not one deal can run.
    #[error("unsupported architecture `{0}` (supported: gemma3, llama, mistral, qwen2, qwen3)")]
    UnsupportedArch(String),
    /// Tokenizer construction or encoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A caller passed an invalid argument (bad row index, empty batch, too long prompt...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The default model could not be fetched or verified.
    #[error("model setup: {0}")]
    Setup(String),
    /// The requested device is unavailable (e.g. `cuda` in a CPU-only build).
    #[error("device: {0}")]
    Device(String),
    /// Sampling or stream decoding failed (see `deal-backend`).
    #[error(transparent)]
    Backend(#[from] deal_backend::Error),
    /// A fault inside the engine (a panicked or failed pass): never the caller's input.
    #[error("internal error: {0}")]
    Internal(String),
    /// An error from candle's tensor code (shown without the backtrace candle may attach).
    #[error("{}", first_line(.0))]
    Candle(#[from] candle_core::Error),
}

fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// Shorthand result type of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Build an [`Error::InvalidArgument`] from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}

impl From<Error> for deal_backend::Error {
    /// The caller's mistakes stay invalid arguments; everything else is the engine's fault.
    fn from(e: Error) -> Self {
        match e {
            Error::InvalidArgument(m) => deal_backend::Error::InvalidArgument(m),
            Error::Tokenizer(m) => deal_backend::Error::Tokenizer(m),
            Error::Backend(b) => b,
            other => deal_backend::Error::Engine(other.to_string()),
        }
    }
}
