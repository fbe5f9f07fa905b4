//! Controllers by name ([`Registry`]): each is built from a [`SearchConfig`] (validated
//! first). The built-in list is the `controllers!` line in `lib.rs`; a program adds its own
//! with [`Registry::register`].

use crate::config::SearchConfig;
use crate::controller::{Controller, Final, Session};
use crate::error::{ControlError, Result};

/// A decoding strategy, one per file: its name, a one-line description, the config checks
/// only it needs, and the search itself. The registry pairs it with a validated
/// [`SearchConfig`] as a [`Controller`].
pub trait Build: Send + Sync + 'static {
    /// Name the controller is registered and requested under (e.g. `deal`).
    const NAME: &'static str;
    /// One-line description, shown in listings.
    const DESCRIPTION: &'static str;
    /// Whether the controller searches by the reward (and fails without one).
    const NEEDS_REWARD: bool;
    /// The [`SearchConfig`] fields (their JSON names in `params`) this controller reads
    /// besides `max_tokens`, `stop` and the penalties, which every controller reads: what a
    /// client lists as its settings (`GET /v1/heads`, the playground).
    const PARAMS: &'static [&'static str] = &[];
    /// Check the fields this controller reads (the common ranges are already checked).
    fn check(_cfg: &SearchConfig) -> Result<()> {
        Ok(())
    }

    /// Most rows the search holds at once under `cfg`, and the field that sets that number
    /// (for admission estimates of its KV cache). Default: one row.
    fn rows(_cfg: &SearchConfig) -> (usize, &'static str) {
        (1, "max_tokens")
    }
    /// Search from the prefilled prompt (one row in `s.batch`); commit final tokens through
    /// `s.stream` as soon as they are decided; return the row with the answer.
    fn search(cfg: &SearchConfig, s: &mut Session<'_>) -> Result<Final>;
}

/// A strategy with its config: the one [`Controller`] implementation.
struct Configured<C> {
    cfg: SearchConfig,
    strategy: std::marker::PhantomData<fn() -> C>,
}

impl<C: Build> Controller for Configured<C> {
    fn name(&self) -> &'static str {
        C::NAME
    }

    fn config(&self) -> &SearchConfig {
        &self.cfg
    }

    fn search(&self, s: &mut Session<'_>) -> Result<Final> {
        C::search(&self.cfg, s)
    }

    fn rows(&self) -> (usize, &'static str) {
        C::rows(&self.cfg)
    }
}

/// A registered controller.
#[derive(Clone, Copy)]
pub struct Kind {
    /// Registry name.
    pub name: &'static str,
    /// One-line description.
    pub description: &'static str,
    /// Whether the controller searches by the reward (and fails without one).
    pub needs_reward: bool,
    /// The `params` fields it reads besides the common ones ([`Build::PARAMS`]).
    pub params: &'static [&'static str],
    build: fn(SearchConfig) -> Result<Box<dyn Controller>>,
}

impl std::fmt::Debug for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kind").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Kind {
    /// The registration of controller `C`.
    pub fn of<C: Build>() -> Self {
        fn build<C: Build>(cfg: SearchConfig) -> Result<Box<dyn Controller>> {
            C::check(&cfg)?;
            Ok(Box::new(Configured::<C> { cfg, strategy: std::marker::PhantomData }))
        }
        Self { name: C::NAME, description: C::DESCRIPTION, needs_reward: C::NEEDS_REWARD, params: C::PARAMS, build: build::<C> }
    }
}

/// The controllers available by name. Build one (usually [`Registry::builtin`], extended
/// with [`Registry::register`]) and pass it to whatever validates and runs requests: adding
/// a controller needs no change to deal.
#[derive(Debug, Clone, Default)]
pub struct Registry {
    kinds: Vec<Kind>,
}

impl Registry {
    /// An empty registry.
    pub fn empty() -> Self {
        Self::default()
    }

    /// The built-in controllers, in listing order.
    pub fn builtin() -> Self {
        Self { kinds: crate::builtin_kinds() }
    }

    /// Add (or replace) controller `C`.
    pub fn register<C: Build>(&mut self) {
        self.kinds.retain(|k| k.name != C::NAME);
        self.kinds.push(Kind::of::<C>());
    }

    /// Every registered controller, in registration order.
    pub fn kinds(&self) -> &[Kind] {
        &self.kinds
    }

    /// The controller named `name`.
    pub fn get(&self, name: &str) -> Option<&Kind> {
        self.kinds.iter().find(|k| k.name == name)
    }

    /// Names of every registered controller.
    pub fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name).collect()
    }

    /// Build controller `name` from `cfg` (validated; errors name the field or list the names).
    pub fn build(&self, name: &str, cfg: &SearchConfig) -> Result<Box<dyn Controller>> {
        let kind = self.get(name).ok_or_else(|| ControlError::UnknownController {
            name: name.to_string(),
            valid: self.names().iter().map(|k| k.to_string()).collect(),
        })?;
        cfg.validate()?;
        (kind.build)(cfg.clone())
    }

    /// Build controller `name` from `cfg` and run it on `req` (see [`crate::run`]).
    pub fn search(
        &self,
        name: &str,
        cfg: &SearchConfig,
        req: &crate::Request<'_>,
        on_text: &mut dyn FnMut(crate::Piece<'_>) -> bool,
    ) -> Result<crate::Outcome> {
        let c = self.build(name, cfg)?;
        crate::run(c.as_ref(), req, on_text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every listed param is a field of `params` (a client that sends it is not refused), and
    /// each controller's own settings are listed.
    #[test]
    fn params_are_fields_of_the_config() {
        let fields = serde_json::to_value(SearchConfig::default()).unwrap();
        let reg = Registry::builtin();
        for k in reg.kinds() {
            for p in k.params {
                assert!(fields.get(p).is_some(), "{}: `{p}` is not a field of SearchConfig", k.name);
            }
        }
        assert_eq!(reg.get("deal").unwrap().params, ["k", "beams", "lookahead", "lambda", "commit", "top_p"]);
        assert!(reg.get("greedy").unwrap().params.is_empty());
        assert!(reg.get("best_of_n").unwrap().params.contains(&"n"));
    }
}
