//! Activations quantized per 256 values as ggml's Q8_K, the activation side of the K-quant
//! kernels ([`super::q4_k`], [`super::q6_k`]): for each block the value of largest magnitude
//! sets the scale (`max / -128`), values are rounded half away from zero and clamped at 127
//! (as candle computes it), and the sums of every 16 quantized values are kept for the kernels'
//! offset and min corrections.

/// Width of a K-quant block.
pub const QK_K: usize = 256;

/// `m` rows of `k` activations, quantized.
pub struct Q8KRows {
    /// Quantized values, row-major `[m, k]`.
    pub qs: Vec<i8>,
    /// Scale of each block, `[m, k / 256]`.
    pub d: Vec<f32>,
    /// `sums16[block * 16 + j]`: Σ of values `16j .. 16j + 16` of that block.
    pub sums16: Vec<i32>,
    /// Blocks per row.
    pub kb: usize,
    /// Row width.
    pub k: usize,
}

impl Q8KRows {
    /// Quantize `x` (`m` rows of `k`, `k` a multiple of 256).
    pub fn new(x: &[f32], m: usize, k: usize) -> Self {
        let kb = k / QK_K;
        let mut qs = vec![0i8; m * k];
        let mut d = vec![0f32; m * kb];
        let mut sums16 = vec![0i32; m * kb * 16];
        for (bi, (xs, q)) in x.chunks_exact(QK_K).zip(qs.chunks_exact_mut(QK_K)).enumerate() {
            let (mut max, mut amax) = (0f32, 0f32);
            for &v in xs {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            if amax == 0.0 {
                continue;
            }
            let iscale = -128f32 / max;
            for (qv, &v) in q.iter_mut().zip(xs) {
                *qv = (iscale * v).round().min(127.0) as i8;
            }
            for j in 0..16 {
                sums16[bi * 16 + j] = q[16 * j..16 * (j + 1)].iter().map(|&v| v as i32).sum();
            }
            d[bi] = 1.0 / iscale;
        }
        Self { qs, d, sums16, kb, k }
    }

    /// Σ of the 32 values of sub-block `j` (0..8) of block `bi` (row-major block index).
    pub fn sum32(&self, bi: usize, j: usize) -> i32 {
        self.sums16[bi * 16 + 2 * j] + self.sums16[bi * 16 + 2 * j + 1]
    }
}
