//! A conversation as chat templates take it: [`Message`]s with a [`Role`].

use serde::Serialize;

/// Who wrote a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Instructions for the assistant (OpenAI's `system`, or `developer`).
    System,
    /// The person talking to the model.
    User,
    /// The model's own turns.
    Assistant,
}

impl Role {
    /// Parse an OpenAI role; `developer` is OpenAI's newer name for `system`.
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "system" | "developer" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            _ => None,
        }
    }
}

/// One message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message {
    /// Who wrote it.
    pub role: Role,
    /// Its text, tokenized as plain text (control tokens in it are not recognised).
    pub content: String,
}

impl Message {
    /// A message from `role` with text `content`.
    pub fn new(role: Role, content: impl Into<String>) -> Self {
        Self { role, content: content.into() }
    }
}
