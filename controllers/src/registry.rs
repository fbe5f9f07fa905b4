//! Controllers by name: each is built from a [`SearchConfig`] (validated first). The list
//! itself is the `controllers!` line in `lib.rs`.

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
    /// Check the fields this controller reads (the common ranges are already checked).
    fn check(_cfg: &SearchConfig) -> Result<()> {
        Ok(())
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
        Self { name: C::NAME, description: C::DESCRIPTION, needs_reward: C::NEEDS_REWARD, build: build::<C> }
    }
}

/// Every controller, in listing order.
pub fn kinds() -> Vec<Kind> {
    crate::builtin_kinds()
}

/// Names of every controller.
pub fn names() -> Vec<&'static str> {
    kinds().iter().map(|k| k.name).collect()
}

/// Build controller `name` from `cfg` (validated; errors name the field or list the names).
pub fn build(name: &str, cfg: &SearchConfig) -> Result<Box<dyn Controller>> {
    let kinds = kinds();
    let kind = kinds.iter().find(|k| k.name == name).ok_or_else(|| ControlError::UnknownController {
        name: name.to_string(),
        valid: kinds.iter().map(|k| k.name.to_string()).collect(),
    })?;
    cfg.validate()?;
    (kind.build)(cfg.clone())
}
