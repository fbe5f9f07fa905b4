//! deal's packed matmul kernels ([`deal_engine::kernels`]: Q8_0, Q4_K, Q5_K, Q6_K, Q5_0, Q4_0,
//! Q5_1, Q4_1) against candle's
//! `QMatMul` on the same type, on the loaded model's own weight shapes, at several activation
//! row counts: time per call, the ratio, GMAC/s, the weight bytes streamed per second (against
//! the machine's copy bandwidth, the batch-1 roof), and what `m` rows cost relative to one row
//! (the number behind every lockstep search: a pass of 8 rows should cost far less than 8
//! passes of one). Weights are random (speed does not depend on the values). Matrices smaller
//! than the last-level cache are re-read from it between calls, so their GB/s can exceed the
//! memory's; the output layer is the one that streams from memory.

use std::time::Instant;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{Device, Module, Tensor};
use deal_engine::model::layers::Packed;
use deal_engine::model::ModelConfig;

/// The weight types `deal bench kernel --types` takes, by their GGUF names.
pub fn parse_type(s: &str) -> anyhow::Result<GgmlDType> {
    Ok(match s.to_ascii_lowercase().as_str() {
        "q8_0" => GgmlDType::Q8_0,
        "q4_k" => GgmlDType::Q4K,
        "q6_k" => GgmlDType::Q6K,
        "q5_k" => GgmlDType::Q5K,
        "q5_0" => GgmlDType::Q5_0,
        "q4_0" => GgmlDType::Q4_0,
        "q5_1" => GgmlDType::Q5_1,
        "q4_1" => GgmlDType::Q4_1,
        other => anyhow::bail!("no packed kernel for weight type `{other}` (q8_0, q4_k, q5_k, q6_k, q5_0, q4_0, q5_1, q4_1)"),
    })
}

/// One (shape, rows) measurement.
#[derive(Debug, Clone, serde::Serialize)]
pub struct KernelPoint {
    /// Which weight: qkv, attn_out, gate_up, down, output.
    pub weight: String,
    /// Its type (Q8_0, Q4K, Q5K, Q6K, Q5_0, Q4_0).
    pub dtype: String,
    /// Output width.
    pub n: usize,
    /// Input width.
    pub k: usize,
    /// Activation rows.
    pub rows: usize,
    /// Our kernel, ms per call.
    pub ours_ms: f64,
    /// candle's Q8_0 matmul, ms per call.
    pub candle_ms: f64,
    /// candle / ours.
    pub speedup: f64,
    /// Our multiply-accumulates per second, in billions.
    pub gmacs: f64,
    /// Packed weight bytes our kernel streams per second, in GB (10^9).
    pub gb_s: f64,
    /// Our time at these rows / our time at one row.
    pub cost_vs_one_row: f64,
}

/// Seconds per call of `f`, repeated for at least `min_secs` (and 3 calls).
fn time(min_secs: f64, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<f64> {
    f()?; // warm-up
    let (mut n, t) = (0usize, Instant::now());
    while n < 3 || t.elapsed().as_secs_f64() < min_secs {
        f()?;
        n += 1;
    }
    Ok(t.elapsed().as_secs_f64() / n as f64)
}

/// Measure every weight shape of `cfg` in each of `types` at each of `rows`.
pub fn run(cfg: &ModelConfig, types: &[GgmlDType], rows: &[usize], min_secs: f64) -> anyhow::Result<Vec<KernelPoint>> {
    let (h, q, kv) = (cfg.hidden_size, cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim);
    let shapes = [
        ("qkv", q + 2 * kv, h),
        ("attn_out", h, q),
        ("gate_up", 2 * cfg.ffn_size, h),
        ("down", h, cfg.ffn_size),
        ("output", cfg.vocab_size, h),
    ];
    let dev = Device::Cpu;
    let mut out = Vec::new();
    for (&dtype, (name, n, k)) in types.iter().flat_map(|t| shapes.iter().map(move |s| (t, *s))) {
        // (candle's Q5_0 and Q4_0 dot products take an even number of 32-value blocks)
        let even_blocks = !matches!(dtype, GgmlDType::Q5_0 | GgmlDType::Q4_0 | GgmlDType::Q5_1 | GgmlDType::Q4_1) || k % 64 == 0;
        if k % dtype.block_size() != 0 || !even_blocks {
            continue;
        }
        let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev)?, dtype)?;
        let packed = Packed::pack(&[&w])?.ok_or_else(|| anyhow::anyhow!("this CPU has neither AVX-512 VNNI nor AVX2: no kernel to measure"))?;
        let bytes = packed.bytes();
        let candle = QMatMul::from_qtensor(w)?;
        let mut one_row = None;
        for &m in rows {
            let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0).collect();
            let xt = Tensor::from_vec(x.clone(), (m, k), &dev)?;
            let ours = time(min_secs, || {
                std::hint::black_box(packed.matmul(&x, m)?);
                Ok(())
            })?;
            let theirs = time(min_secs, || {
                std::hint::black_box(candle.forward(&xt)?);
                Ok(())
            })?;
            let base = *one_row.get_or_insert(if m == 1 { ours } else { f64::NAN });
            out.push(KernelPoint {
                weight: name.to_string(),
                dtype: format!("{dtype:?}"),
                n,
                k,
                rows: m,
                ours_ms: ours * 1e3,
                candle_ms: theirs * 1e3,
                speedup: theirs / ours,
                gmacs: (n * k * m) as f64 / ours / 1e9,
                gb_s: bytes as f64 / ours / 1e9,
                cost_vs_one_row: ours / base,
            });
        }
    }
    Ok(out)
}
