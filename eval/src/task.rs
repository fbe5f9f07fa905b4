//! What an evaluation runs on: prompts, each with the head params that belong to it (a
//! keyword prompt's words), loaded from the files in `bench/data/` or the user's own.

use std::collections::BTreeMap;

use serde_json::Value;

/// One prompt and its own head params (merged over the evaluation's).
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub prompt: String,
    /// Params per head for this prompt only (e.g. `keywords.words`).
    pub heads: BTreeMap<String, Value>,
}

/// The prompts of an evaluation.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Task {
    pub items: Vec<Item>,
}

impl Task {
    /// One prompt per non-empty line.
    pub fn prompts(text: &str) -> Self {
        let items = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| Item { prompt: l.to_string(), heads: BTreeMap::new() }).collect();
        Self { items }
    }

    /// CommonGen-style keyword prompts: one concept set per non-empty line (words separated
    /// by spaces or commas); each becomes the benchmark's prompt with `keywords.words` set.
    pub fn keywords(text: &str) -> Self {
        let items = text
            .lines()
            .map(|l| l.split(|c: char| c.is_whitespace() || c == ',').filter(|w| !w.is_empty()).collect::<Vec<_>>())
            .filter(|w| !w.is_empty())
            .map(|words| {
                let mut heads = BTreeMap::new();
                heads.insert("keywords".to_string(), serde_json::json!({ "words": words }));
                Item { prompt: deal_bench::search::prompt(&words), heads }
            })
            .collect();
        Self { items }
    }

    /// The first `n` items (all when `n` is 0 or larger than the task).
    pub fn take(mut self, n: usize) -> Self {
        if n > 0 {
            self.items.truncate(n);
        }
        self
    }

    /// Whether the task has no prompt.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyword_lines_become_prompts_with_their_words() {
        let t = Task::keywords("dog ball park\n\n river, boat sun \n");
        assert_eq!(t.items.len(), 2);
        assert_eq!(t.items[1].heads["keywords"], serde_json::json!({"words": ["river", "boat", "sun"]}));
        assert!(t.items[0].prompt.ends_with("Write a sentence using the words: dog, ball, park.\nSentence:"), "{}", t.items[0].prompt);
        assert_eq!(Task::prompts("a\n\n b \n").take(1).items[0].prompt, "a");
    }
}
