//! Hand-written CPU kernels for the hot matmuls, where candle's generic path leaves speed on
//! the table. Each kernel checks CPU features at run time and reports `None` when it cannot
//! run, so callers fall back to candle.

pub mod q8_0;
