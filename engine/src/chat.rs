//! Chat prompts: a conversation ([`Message`]s) rendered into prompt tokens by the GGUF's own
//! `tokenizer.chat_template` (Jinja, run by minijinja with Python-style string methods), or by
//! deal's documented plain fallback when the model has none (base models such as the default
//! Gemma 3 270M).
//!
//! Message text can never forge a turn: the template is rendered with a placeholder for each
//! message, the template's own text is tokenized with control tokens recognised
//! (`<start_of_turn>`, `<|im_start|>`...), and each message's text is tokenized as plain text.

use minijinja::{context, Environment, ErrorKind};

use crate::tokenizer::GgufTokenizer;
use crate::{Error, Result};

/// The plain template used when the GGUF carries none:
///
/// ```text
/// {system}\n\n          (default: "A conversation between a user and a helpful assistant.")
/// User: {user}\n
/// Assistant: {assistant}\n
/// ...
/// Assistant:
/// ```
///
/// Generation stops at [`FALLBACK_STOP`] so the model does not write the user's next turn.
pub const FALLBACK_TEMPLATE: &str = "\
{% if messages[0].role != 'system' %}A conversation between a user and a helpful assistant.\n\n{% endif %}\
{% for m in messages %}\
{% if m.role == 'system' %}{{ m.content }}\n\n\
{% elif m.role == 'user' %}User: {{ m.content }}\n\
{% else %}Assistant: {{ m.content }}\n\
{% endif %}\
{% endfor %}\
{% if add_generation_prompt %}Assistant:{% endif %}";

/// Stop string of the fallback template: the start of the next user turn.
pub const FALLBACK_STOP: &str = "\nUser:";

pub use deal_backend::chat::{Message, Role};

/// A compiled chat template.
pub struct ChatTemplate {
    env: Environment<'static>,
    fallback: bool,
    bos: String,
    eos: String,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").field("fallback", &self.fallback).finish_non_exhaustive()
    }
}

/// Marks the place of message `i` in a rendered template (private-use code points).
fn placeholder(i: usize) -> String {
    format!("\u{F8F0}{i}\u{F8F1}")
}

impl ChatTemplate {
    /// Compile `source` (a GGUF `tokenizer.chat_template`), or the fallback when `None`.
    /// `tok` supplies `bos_token` / `eos_token` to the template.
    pub fn new(source: Option<&str>, tok: &GgufTokenizer) -> Result<Self> {
        let mut env = Environment::new();
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", |msg: String| -> std::result::Result<String, minijinja::Error> {
            Err(minijinja::Error::new(ErrorKind::InvalidOperation, msg))
        });
        env.add_function("strftime_now", |_fmt: String| -> String { String::new() });
        let fallback = source.is_none();
        let src = source.unwrap_or(FALLBACK_TEMPLATE).to_string();
        env.add_template_owned("chat", src)
            .map_err(|e| Error::invalid(format!("the model's chat template does not compile: {e}")))?;
        let text = |id: Option<u32>| id.and_then(|i| tok.token_text(i)).unwrap_or_default().to_string();
        Ok(Self { env, fallback, bos: text(tok.bos_id()), eos: text(tok.eos_id()) })
    }

    /// Whether this is deal's plain fallback (the model has no template).
    pub fn is_fallback(&self) -> bool {
        self.fallback
    }

    /// Stop strings the template needs besides the model's end-of-turn tokens.
    pub fn stop_strings(&self) -> Vec<String> {
        if self.fallback {
            vec![FALLBACK_STOP.to_string()]
        } else {
            Vec::new()
        }
    }

    /// Render `messages` as text (with the generation prompt for the assistant's reply).
    pub fn render(&self, messages: &[Message]) -> Result<String> {
        self.render_with(messages.iter().map(|m| (m.role, m.content.clone())).collect())
    }

    fn render_with(&self, messages: Vec<(Role, String)>) -> Result<String> {
        if messages.is_empty() {
            return Err(Error::invalid("`messages` is empty: a chat needs at least one message"));
        }
        let msgs: Vec<_> = messages.iter().map(|(r, c)| context! { role => r, content => c }).collect();
        let tmpl = self.env.get_template("chat").map_err(|e| Error::invalid(e.to_string()))?;
        tmpl.render(context! {
            messages => msgs,
            add_generation_prompt => true,
            bos_token => self.bos,
            eos_token => self.eos,
        })
        .map_err(|e| {
            let msg = match e.kind() {
                ErrorKind::InvalidOperation => e.detail().unwrap_or("invalid conversation").to_string(),
                _ => e.to_string(),
            };
            Error::invalid(format!("chat template: {msg}"))
        })
    }

    /// Prompt tokens of `messages`: the template's text with control tokens recognised, each
    /// message's text as plain text; BOS once at the start when the model wants one.
    pub fn encode(&self, tok: &GgufTokenizer, messages: &[Message]) -> Result<Vec<u32>> {
        let rendered = self.render_with(messages.iter().enumerate().map(|(i, m)| (m.role, placeholder(i))).collect())?;
        let mut segments: Vec<(&str, bool)> = Vec::new();
        let mut rest = rendered.as_str();
        while let Some(start) = rest.find('\u{F8F0}') {
            let after = &rest[start + '\u{F8F0}'.len_utf8()..];
            let Some(end) = after.find('\u{F8F1}') else { break };
            let Some(msg) = after[..end].parse::<usize>().ok().and_then(|i| messages.get(i)) else { break };
            segments.push((&rest[..start], true));
            segments.push((msg.content.as_str(), false));
            rest = &after[end + '\u{F8F1}'.len_utf8()..];
        }
        segments.push((rest, true));
        let ids = tok.encode_segments(&segments, true)?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Environment<'static> {
        let mut env = Environment::new();
        env.add_template("chat", FALLBACK_TEMPLATE).unwrap();
        env
    }

    #[test]
    fn fallback_template_renders_turns_on_their_own_lines() {
        let env = env();
        let t = env.get_template("chat").unwrap();
        let msgs = vec![
            context! { role => "user", content => "Hi" },
            context! { role => "assistant", content => "Hello." },
            context! { role => "user", content => "Bye" },
        ];
        let out = t.render(context! { messages => msgs, add_generation_prompt => true }).unwrap();
        assert_eq!(
            out,
            "A conversation between a user and a helpful assistant.\n\nUser: Hi\nAssistant: Hello.\nUser: Bye\nAssistant:"
        );
        let msgs = vec![context! { role => "system", content => "Be brief." }, context! { role => "user", content => "Hi" }];
        let out = t.render(context! { messages => msgs, add_generation_prompt => true }).unwrap();
        assert_eq!(out, "Be brief.\n\nUser: Hi\nAssistant:");
    }
}
