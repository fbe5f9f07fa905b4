//! The gated feed-forward block: `down(act(gate(x)) · up(x))`, and its gate activations.
//!
//! On the fused packed path (gate and up in one Q8_0 matmul) the activation runs straight
//! on the matmul's output rows, with no tensor round trips. GELU uses ggml's method: the
//! input rounded to f16 indexes a 65 536-entry table of f16 GELU values, with inputs beyond
//! ±10 passed through or zeroed. That is what llama.cpp computes (`ggml_vec_geglu_f32`), so
//! our activations match it exactly, and a table lookup costs a fraction of a `tanhf`.

use std::sync::OnceLock;

use candle_core::Tensor;
use half::f16;

use crate::model::config::Activation;
use crate::model::layers::{Linear, Projections};
use crate::Result;

/// Weights of one gated MLP.
#[derive(Clone)]
pub struct Mlp {
    /// Gate and up projections (fused into one matmul where possible).
    pub gate_up: Projections,
    /// Down projection back to the hidden size.
    pub down: Linear,
}

impl Mlp {
    /// `x` `[.., hidden]` → `[.., hidden]`.
    pub fn forward(&self, x: &Tensor, act: Activation) -> Result<Tensor> {
        if let Some((y, widths)) = self.gate_up.forward_flat(x)? {
            let (g, u) = (widths[0], widths[1]);
            if g == u {
                let rows = y.len() / (g + u);
                let mut h = vec![0f32; rows * g];
                for (out, row) in h.chunks_exact_mut(g).zip(y.chunks_exact(g + u)) {
                    let (gate, up) = row.split_at(g);
                    gated(act, gate, up, out);
                }
                let mut dims = x.dims().to_vec();
                if let Some(last) = dims.last_mut() {
                    *last = g;
                }
                return self.down.forward(&Tensor::from_vec(h, dims, x.device())?);
            }
        }
        let gu = self.gate_up.forward(x)?;
        let h = match act {
            Activation::GeluTanh => (gu[0].gelu()? * &gu[1])?,
            Activation::Silu => (candle_nn::ops::silu(&gu[0])? * &gu[1])?,
        };
        self.down.forward(&h)
    }
}

/// `out[i] = act(gate[i]) · up[i]`.
pub fn gated(act: Activation, gate: &[f32], up: &[f32], out: &mut [f32]) {
    match act {
        Activation::GeluTanh => {
            let table = gelu_table();
            let mut done = 0;
            #[cfg(target_arch = "x86_64")]
            if crate::kernels::has_avx512f() {
                // SAFETY: AVX-512F is present (checked at run time).
                done = unsafe { geglu_avx512(table, gate, up, out) };
            }
            let (gate, up, out) = (&gate[done..], &up[done..], &mut out[done..]);
            for ((o, &x), &g) in out.iter_mut().zip(gate).zip(up) {
                *o = if x <= -10.0 {
                    0.0
                } else if x >= 10.0 {
                    x * g
                } else {
                    table[f16::from_f32(x).to_bits() as usize] * g
                };
            }
        }
        Activation::Silu => {
            for ((o, &x), &g) in out.iter_mut().zip(gate).zip(up) {
                *o = x / (1.0 + (-x).exp()) * g;
            }
        }
    }
}

/// The table GELU 16 values at a time (f16 conversion and table gather in hardware), bit for
/// bit what the scalar loop computes. Returns how many leading values it wrote (a multiple of
/// 16); the caller finishes the tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn geglu_avx512(table: &[f32], gate: &[f32], up: &[f32], out: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    let n = gate.len().min(up.len()).min(out.len()) / 16 * 16;
    let (lo, hi) = (_mm512_set1_ps(-10.0), _mm512_set1_ps(10.0));
    for i in (0..n).step_by(16) {
        let x = _mm512_loadu_ps(gate.as_ptr().add(i));
        let g = _mm512_loadu_ps(up.as_ptr().add(i));
        let bits = _mm512_cvtepu16_epi32(_mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x));
        let looked = _mm512_i32gather_ps::<4>(bits, table.as_ptr());
        let mut y = _mm512_mul_ps(looked, g);
        y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_GE_OQ>(x, hi), _mm512_mul_ps(x, g));
        y = _mm512_mask_mov_ps(y, _mm512_cmp_ps_mask::<_CMP_LE_OQ>(x, lo), _mm512_setzero_ps());
        _mm512_storeu_ps(out.as_mut_ptr().add(i), y);
    }
    n
}

/// GELU with the tanh approximation, as ggml writes it.
pub fn gelu_tanh(x: f32) -> f32 {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    const COEF_A: f32 = 0.044715;
    0.5 * x * (1.0 + (SQRT_2_OVER_PI * x * (1.0 + COEF_A * x * x)).tanh())
}

/// `table[bits]` = GELU of the f16 with those bits, rounded to f16 (kept as f32).
fn gelu_table() -> &'static [f32] {
    static TABLE: OnceLock<Vec<f32>> = OnceLock::new();
    TABLE.get_or_init(|| (0..=u16::MAX).map(|b| f16::from_f32(gelu_tanh(f16::from_bits(b).to_f32())).to_f32()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gelu_table_is_f16_rounding_of_gelu() {
        let mut out = [0f32; 6];
        let gate = [-12.0f32, -1.0, 0.0, 0.5, 3.0, 11.0];
        gated(Activation::GeluTanh, &gate, &[2.0; 6], &mut out);
        assert_eq!(out[0], 0.0, "below -10 is zero");
        assert_eq!(out[5], 22.0, "above 10 passes through");
        for i in 1..5 {
            let want = f16::from_f32(gelu_tanh(f16::from_f32(gate[i]).to_f32())).to_f32() * 2.0;
            assert_eq!(out[i], want);
            // within f16 precision of the exact function
            assert!((out[i] - 2.0 * gelu_tanh(gate[i])).abs() <= 2e-3 * gate[i].abs().max(1.0), "{i}: {}", out[i]);
        }
        assert!((gelu_tanh(1.0) - 0.841_192).abs() < 1e-5);
    }

    #[test]
    fn vector_path_equals_scalar_path() {
        // 1000 values over [-12, 12] plus specials; the first 992 take the AVX-512 path when
        // the CPU has it, and must equal the scalar definition bit for bit
        let mut gate: Vec<f32> = (0..1000).map(|i| (i as f32 - 500.0) * 0.024).collect();
        gate[10] = -10.0;
        gate[11] = 10.0;
        gate[12] = f32::NAN;
        gate[13] = 1e-8;
        let up: Vec<f32> = (0..1000).map(|i| 1.0 + (i % 7) as f32 * 0.3).collect();
        let mut out = vec![0f32; 1000];
        gated(Activation::GeluTanh, &gate, &up, &mut out);
        let table = gelu_table();
        for i in 0..1000 {
            let x = gate[i];
            let want = if x <= -10.0 {
                0.0
            } else if x >= 10.0 {
                x * up[i]
            } else {
                table[f16::from_f32(x).to_bits() as usize] * up[i]
            };
            assert!(out[i].to_bits() == want.to_bits() || (out[i].is_nan() && want.is_nan()), "{i}: {x} -> {} vs {want}", out[i]);
        }
    }

    #[test]
    fn silu_gate() {
        let mut out = [0f32; 3];
        gated(Activation::Silu, &[0.0, 1.0, -2.0], &[1.0, 2.0, 3.0], &mut out);
        assert_eq!(out[0], 0.0);
        assert!((out[1] - 2.0 * 0.731_058_6).abs() < 1e-6);
        assert!((out[2] - 3.0 * -0.238_405_8).abs() < 1e-6);
    }
}
