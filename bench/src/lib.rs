//! # deal-bench
//!
//! Benchmarks behind `deal bench`. Speed targets are checked here, never by timed unit tests;
//! every report quotes ratios measured in one run (ours vs. a peer or a baseline) because the
//! machines are shared and noisy.
//!
//! - [`decode`]: decode tok/s at batch 1 and aggregate tok/s for forked lockstep rows, next to
//!   llama.cpp's `llama-bench` / `llama-batched-bench` on the same GGUF when they are built
//!   (`bench/llamacpp/build.sh`).

pub mod decode;
pub mod llamacpp;
