//! The controllers' error type: bad configs are rejected at the edge with the field named,
//! engine and reward errors pass through, and cancellation is a distinct outcome.

/// Errors of a search.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// A config field is out of range for the controller that reads it.
    #[error("search config: `{field}` {message}")]
    BadConfig {
        /// The field at fault, e.g. `k` or `commit.margin` (`(json)` for unparsable JSON).
        field: &'static str,
        /// What is wrong with it, e.g. `must be at least 1`.
        message: String,
    },
    /// No controller of that name is registered.
    #[error("unknown controller `{name}` (available: {})", .valid.join(", "))]
    UnknownController {
        /// The name asked for.
        name: String,
        /// Names of every registered controller.
        valid: Vec<String>,
    },
    /// The controller searches by a heuristic but the request brought no reward.
    #[error("controller `{0}` searches by reward: give it a weight vector with a non-zero weight")]
    NeedsReward(&'static str),
    /// The caller cancelled (callback returned `false` or the cancel flag was set).
    #[error("the search was cancelled")]
    Cancelled,
    /// The backend failed (or lacks a capability the search needs).
    #[error(transparent)]
    Backend(#[from] deal_backend::Error),
    /// A reward head failed, or the reward spec is invalid.
    #[error(transparent)]
    Heads(#[from] deal_heads::Error),
}

/// Shorthand result type of the controllers.
pub type Result<T, E = ControlError> = std::result::Result<T, E>;

impl ControlError {
    pub(crate) fn config(field: &'static str, message: impl Into<String>) -> Self {
        ControlError::BadConfig { field, message: message.into() }
    }

    /// Whether this is a cancellation, however deep it was raised (the controller's own
    /// check, the backend's prefill, a head's scoring or model-load wait).
    pub fn is_cancelled(&self) -> bool {
        use deal_backend::Error as B;
        use deal_heads::reward::RewardError as R;
        use deal_heads::Error as H;
        let heads = |h: &H| matches!(h, H::Backend(B::Cancelled));
        match self {
            ControlError::Cancelled | ControlError::Backend(B::Cancelled) => true,
            ControlError::Heads(h) => heads(h) || matches!(h, H::Reward(R::Head { source, .. }) if heads(source)),
            _ => false,
        }
    }

    /// An internal invariant broke (a row without logits where the search needs them).
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        ControlError::Backend(deal_backend::Error::Engine(message.into()))
    }
}
