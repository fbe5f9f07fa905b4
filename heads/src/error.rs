//! The heads' error type: a bad reward spec or head failure ([`RewardError`]), and the
//! backend, engine and I/O errors a model-backed head can meet.

use std::path::PathBuf;

use crate::reward::RewardError;

/// Errors of reward heads and the reward layer.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A reward specification was invalid, or a head failed (see [`crate::reward`]).
    #[error(transparent)]
    Reward(#[from] RewardError),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// An invalid argument (bad probe file, empty text to judge, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A head's assets could not be fetched or read.
    #[error("model setup: {0}")]
    Setup(String),
    /// A head's own tokenizer failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The policy backend (or a judge model) failed or lacks a capability.
    #[error(transparent)]
    Backend(#[from] deal_backend::Error),
    /// Loading a judge model failed.
    #[error(transparent)]
    Engine(#[from] deal_engine::Error),
    /// An external reward server (the `http` head) failed or answered something unusable;
    /// the message never quotes its body.
    #[error("{message}")]
    Upstream {
        /// What went wrong, naming the server.
        message: String,
        /// Whether it did not answer in time.
        timeout: bool,
    },
    /// A tensor operation of a head's own model failed.
    #[error("{}", .0.to_string().lines().next().unwrap_or_default())]
    Candle(#[from] candle_core::Error),
}

/// Shorthand result type of the heads.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidArgument`] from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }
}
