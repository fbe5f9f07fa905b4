//! # deal-bench
//!
//! Benchmarks behind `deal bench`. Speed targets are checked here, never by timed unit tests;
//! every report quotes ratios measured in one run (ours vs. a peer or a baseline) because the
//! machines are shared and noisy.
//!
//! - [`decode`]: decode tok/s at batch 1 and aggregate tok/s for forked lockstep rows, next to
//!   llama.cpp's `llama-bench` / `llama-batched-bench` on the same GGUF when they are built
//!   (`bench/llamacpp/build.sh`).
//! - [`footprint`]: load to first token and peak memory, ours and llama.cpp's;
//! - [`search`]: wall time per committed token of every search controller vs. greedy, and of
//!   `deal` vs. a naive implementation of the same search (rows one at a time, the prefix
//!   recomputed every step).
//! - [`grammar`]: structured outputs: compiler build, schema compile, mask µs per row per
//!   token, constrained vs unconstrained wall time per token;
//! - [`steer`]: what a weight of 1 does at default settings, per λ: keyword coverage and
//!   sentiment against greedy's, and the fluency cost (perplexity of the texts);
//! - [`kernel`]: our batched Q8_0 matmul vs candle's on the model's weight shapes, and what
//!   `m` rows cost relative to one.
//! - [`load`]: many HTTP clients against a running server for a fixed time: throughput,
//!   latency and time-to-first-token percentiles, statuses by class.
//! - [`heads`]: each reward head's cost for a batch of candidates vs one decode step of as
//!   many rows (`deal heads bench`).

pub mod concurrent;
pub mod decode;
pub mod footprint;
pub mod grammar;
pub mod heads;
pub mod kernel;
pub mod llamacpp;
pub mod load;
pub mod search;
pub mod steer;
