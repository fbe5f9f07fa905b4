//! Building blocks of the decoder: quantized linear layers, RMS norm, rotary embeddings.
//! Tensors in, tensors out; no state.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::gguf::GgufFile;
use crate::model::config::RopeStyle;
use crate::Result;

/// Quantization types that have no fast CPU kernel in candle; re-quantized to Q8_0 at load
/// (measured +20% decode speed on the default model, at a small memory cost).
pub fn slow_on_cpu(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4_0 | GgmlDType::Q4_1 | GgmlDType::Q5_0 | GgmlDType::Q5_1)
}

/// How matmul weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WeightMode {
    /// As stored in the GGUF.
    Stored,
    /// As stored, except types without a fast CPU kernel become Q8_0 (CPU only).
    Requantize,
    /// Dequantized to f32: exact reference arithmetic (4x the memory, slower). Quantized
    /// matmuls round activations to 8 bits, so two schedules of the same computation can
    /// differ by a few tenths of a logit; in f32 they agree to ~1e-5.
    F32,
}

/// Read a weight as a [`QTensor`] held per `mode`.
pub fn load_qtensor(f: &mut GgufFile, name: &str, device: &Device, mode: WeightMode) -> Result<QTensor> {
    let t = f.tensor(name, device)?;
    let target = match mode {
        WeightMode::Requantize if device.is_cpu() && slow_on_cpu(t.dtype()) => GgmlDType::Q8_0,
        WeightMode::F32 if t.dtype() != GgmlDType::F32 => GgmlDType::F32,
        _ => return Ok(t),
    };
    Ok(QTensor::quantize(&t.dequantize(device)?, target)?)
}

/// A linear layer `y = x Wᵀ (+ b)` with a quantized weight.
#[derive(Debug, Clone)]
pub struct Linear {
    weight: QMatMul,
    bias: Option<Tensor>,
}

impl Linear {
    /// Load `{name}.weight` and, if present, `{name}.bias`.
    pub fn load(f: &mut GgufFile, name: &str, device: &Device, mode: WeightMode) -> Result<Self> {
        let w = load_qtensor(f, &format!("{name}.weight"), device, mode)?;
        let bias_name = format!("{name}.bias");
        let bias = if f.has_tensor(&bias_name) {
            Some(f.tensor(&bias_name, device)?.dequantize(device)?)
        } else {
            None
        };
        Ok(Self { weight: QMatMul::from_qtensor(w)?, bias })
    }

    /// Wrap an already loaded tensor (tied output embedding).
    pub fn from_arc(w: Arc<QTensor>) -> Result<Self> {
        Ok(Self { weight: QMatMul::from_arc(w)?, bias: None })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// RMS normalisation over the last dimension with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    eps: f32,
}

impl RmsNorm {
    pub fn load(f: &mut GgufFile, name: &str, device: &Device, eps: f64) -> Result<Self> {
        let weight = f.tensor(name, device)?.dequantize(device)?.to_dtype(DType::F32)?;
        Ok(Self { weight, eps: eps as f32 })
    }

    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?)
    }
}

/// Inverse frequencies `1 / base^(2i/d)` for `i < d/2`, optionally divided by per-dimension
/// factors (llama 3.1's `rope_freqs.weight`).
pub fn inv_freq(head_dim: usize, base: f32, factors: Option<&[f32]>, device: &Device) -> Result<Tensor> {
    let half = head_dim / 2;
    let v: Vec<f32> = (0..half)
        .map(|i| {
            let f = 1.0 / base.powf(2.0 * i as f32 / head_dim as f32);
            match factors {
                Some(fs) if i < fs.len() && fs[i] != 0.0 => f / fs[i],
                _ => f,
            }
        })
        .collect();
    Ok(Tensor::from_vec(v, (1, 1, half), device)?)
}

/// cos/sin tables `[rows, t, d/2]` for the positions of one step (`positions`: `[rows, t]` u32).
pub fn rope_tables(positions: &Tensor, inv_freq: &Tensor, linear_scale: f32) -> Result<(Tensor, Tensor)> {
    let mut pos = positions.to_dtype(DType::F32)?.unsqueeze(2)?;
    if linear_scale != 1.0 {
        pos = (pos / linear_scale as f64)?;
    }
    let angles = pos.broadcast_mul(inv_freq)?.contiguous()?;
    Ok((angles.cos()?, angles.sin()?))
}

/// Apply rotary embeddings to `x`: `[rows, heads, t, d]`.
pub fn apply_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, style: RopeStyle) -> Result<Tensor> {
    let x = x.contiguous()?;
    Ok(match style {
        RopeStyle::Neox => candle_nn::rotary_emb::rope(&x, cos, sin)?,
        RopeStyle::Interleaved => candle_nn::rotary_emb::rope_i(&x, cos, sin)?,
    })
}

/// The last dimension of `x` split into `n` heads of `d`: `[b, t, n*d]` → `[b, n, t, d]`.
pub fn split_heads(x: &Tensor, n: usize, d: usize) -> Result<Tensor> {
    let (b, t, _) = x.dims3()?;
    Ok(x.reshape((b, t, n, d))?.transpose(1, 2)?)
}

/// Inverse of [`split_heads`].
pub fn merge_heads(x: &Tensor) -> Result<Tensor> {
    let (b, n, t, d) = x.dims4()?;
    Ok(x.transpose(1, 2)?.contiguous()?.reshape((b, t, n * d))?)
}

/// Softmax over the last dimension.
pub fn softmax_last(x: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::ops::softmax_last_dim(&x.contiguous()?)?)
}
