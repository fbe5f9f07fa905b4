//! [`Error`]: what can go wrong behind the backend interface, classified by whose fault it
//! is, so that a server can answer with the right status (caller: 400; missing capability:
//! 400 naming it; local engine: 500; upstream server: 502; upstream timeout: 504).

use std::time::Duration;

/// Errors of a backend.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// The caller asked for something invalid (a too-long prompt, a bad row index).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Tokenizing or detokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The engine lacks what the request needs (e.g. hidden states on a remote engine).
    #[error("the engine cannot {what}: it lacks the `{capability}` capability")]
    Unsupported {
        /// The capability, as [`crate::Capabilities`] names it (`hidden_states`, `top_n`).
        capability: &'static str,
        /// What needed it, in words.
        what: String,
    },
    /// The local engine failed (a bug or a resource problem, not the caller's fault).
    #[error("engine: {0}")]
    Engine(String),
    /// A remote engine failed or answered something unusable.
    #[error("upstream engine: {message}")]
    Upstream {
        /// The HTTP status it answered with, if it answered.
        status: Option<u16>,
        /// What went wrong, in words (never the upstream body verbatim).
        message: String,
    },
    /// A remote engine did not answer in time.
    #[error("upstream engine: no answer within {0:?}")]
    Timeout(Duration),
    /// The request's cancellation flag was set ([`crate::cancel`]) while the work ran.
    #[error("cancelled")]
    Cancelled,
}

/// Shorthand result type of the backend interface.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::InvalidArgument`] from anything printable.
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// An [`Error::Unsupported`] naming the missing capability.
    pub fn unsupported(capability: &'static str, what: impl Into<String>) -> Self {
        Error::Unsupported { capability, what: what.into() }
    }
}
