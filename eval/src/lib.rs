//! # deal-eval
//!
//! The evaluations behind `deal eval`: what the trade-offs a user can dial look like on
//! their own model and heads, measured rather than taken on faith.
//!
//! - [`task`]: prompts and their own head params (keyword concept sets, plain prompts);
//! - [`measure`]: one setting (controller, config, weights) run on every prompt, every
//!   output scored by every evaluated head, and what the search cost;
//! - [`keywords`]: `deal eval keywords`, coverage and speed per controller;
//! - [`sweep`]: `deal eval sweep`, a weight grid, its Pareto front and hypervolume against
//!   greedy and best-of-N at an equal token budget;
//! - [`compare`]: `deal eval compare`, DeAL vs best-of-N vs ARGS at equal generated tokens;
//! - [`pareto`]: fronts and exact hypervolumes;
//! - [`plot`]: PNG and SVG plots of fronts and of reward against tokens spent.

pub mod compare;
pub mod keywords;
pub mod measure;
pub mod pareto;
pub mod plot;
pub mod sweep;
pub mod task;
