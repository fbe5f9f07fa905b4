//! Stop strings over streamed text: emits text as soon as it can no longer be the start of a
//! stop string, and reports when one has appeared (the stop string itself is not emitted).

/// Incremental stop-string matcher.
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    stopped: bool,
}

/// What [`StopMatcher::push`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text that is safe to show now.
    pub emit: String,
    /// A stop string was found: generation should end.
    pub stopped: bool,
}

impl StopMatcher {
    /// Empty strings in `stops` are ignored.
    pub fn new(stops: &[String]) -> Self {
        Self { stops: stops.iter().filter(|s| !s.is_empty()).cloned().collect(), ..Default::default() }
    }

    /// Feed the next piece of generated text.
    pub fn push(&mut self, delta: &str) -> StopOutcome {
        if self.stopped {
            return StopOutcome { emit: String::new(), stopped: true };
        }
        self.held.push_str(delta);
        // earliest complete stop string
        if let Some(at) = self.stops.iter().filter_map(|s| self.held.find(s.as_str())).min() {
            let emit = self.held[..at].to_string();
            self.held.clear();
            self.stopped = true;
            return StopOutcome { emit, stopped: true };
        }
        // hold back the longest suffix that is a proper prefix of some stop string
        let mut keep = 0;
        for s in &self.stops {
            for (i, _) in s.char_indices().skip(1) {
                if self.held.ends_with(&s[..i]) {
                    keep = keep.max(i);
                }
            }
        }
        let cut = self.held.len() - keep;
        let emit = self.held[..cut].to_string();
        self.held.drain(..cut);
        StopOutcome { emit, stopped: false }
    }

    /// Text still held back when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Whether a stop string has appeared (later pushes emit nothing).
    pub fn stopped(&self) -> bool {
        self.stopped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stop_split_across_pieces_is_caught_and_not_emitted() {
        let mut m = StopMatcher::new(&["\n\nQ:".to_string()]);
        let mut out = String::new();
        for piece in ["Paris", ".", "\n", "\nQ", ":", " more"] {
            let o = m.push(piece);
            out.push_str(&o.emit);
            if o.stopped {
                break;
            }
        }
        assert!(m.stopped());
        assert_eq!(out, "Paris.");
    }

    #[test]
    fn partial_prefix_released_when_it_diverges() {
        let mut m = StopMatcher::new(&["END".to_string()]);
        assert_eq!(m.push("the E").emit, "the ");
        assert_eq!(m.push("Nx").emit, "ENx");
        assert_eq!(m.finish(), "");
        assert!(!m.stopped());
    }
}
