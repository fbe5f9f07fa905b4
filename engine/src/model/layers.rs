//! Building blocks of the decoder: quantized linear layers, RMS norm, rotary embeddings.
//! Tensors in, tensors out; no state.

use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
use candle_core::{DType, Device, Module, Tensor};

use crate::gguf::{dequantize_into, GgufFile};
use crate::kernels::q4_k::{PackedQ4K, PackedQ5K};
use crate::kernels::StoredWeight;
use crate::kernels::q6_k::PackedQ6K;
use crate::kernels::q8_0::PackedQ8;
use crate::model::config::RopeStyle;
use crate::Result;

/// Quantized types re-quantized to Q8_0 at load on CPU under [`WeightMode::Requantize`]:
/// Q8_0 and (with our kernels: AVX-512 VNNI or AVX2) Q4_K run as stored; the others (Q5_0, Q4_0, Q6_K, ...) become
/// Q8_0, whose kernel is faster than candle's on these shapes (Q4_0/Q5_0: +20% decode).
/// [`WeightMode::Compact`] (the default) keeps Q5_K, Q6_K, Q5_0, Q4_0, Q5_1 and Q4_1 as stored
/// too, on their own kernels. All our kernels are **batch-invariant**: a row's result does not
/// depend on which other rows share the matmul (integer block sums, one accumulation order),
/// so merged passes of concurrent requests give each request exactly what it gets alone, and
/// a seed reproduces its text under any load. candle's K-quant kernels take different paths
/// for one row and for several.
pub fn requantized_on_cpu(dtype: GgmlDType) -> bool {
    match dtype {
        GgmlDType::Q8_0 | GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16 => false,
        GgmlDType::Q4K => !crate::kernels::q4_k::available(),
        _ => true,
    }
}

/// Types [`WeightMode::Compact`] keeps as stored on our kernels.
pub fn compact_kernel(dtype: GgmlDType) -> bool {
    matches!(dtype, GgmlDType::Q4K | GgmlDType::Q5K | GgmlDType::Q6K | GgmlDType::Q5_0 | GgmlDType::Q4_0 | GgmlDType::Q5_1 | GgmlDType::Q4_1)
        && crate::kernels::q4_k::available()
}

/// How matmul weights are held in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WeightMode {
    /// As stored in the GGUF, on candle's kernels.
    Stored,
    /// Q8_0 and Q4_K as stored on deal's kernels; other quantized types (Q6_K, Q5_0, ...)
    /// become Q8_0 (CPU only). Faster prefill of long prompts than [`Self::Compact`] (passes
    /// of hundreds of rows: 1.2-1.4x on the 4B and the default model), at ~12% more memory and
    /// a slower load on Q4_K_M files.
    Requantize,
    /// Q8_0, Q4_K, Q5_K, Q6_K, Q5_0, Q4_0, Q5_1 and Q4_1 as stored on deal's kernels; other
    /// types (Q2_K, Q3_K, ...) become Q8_0 (CPU only). The default: the least memory (about the file's size), the fastest
    /// load, and decode at 1 and 8 rows (searches) as fast or faster than
    /// [`Self::Requantize`].
    #[default]
    Compact,
    /// Every quantized matmul weight becomes Q8_0 (CPU only): about twice the memory of a
    /// Q4_K file and slower to load; the fastest where many rows share each pass (prefill,
    /// wide batches), as `deal bench decode` shows per model.
    Q8,
    /// Dequantized to f32: exact reference arithmetic (4x the memory, slower). Quantized
    /// matmuls round activations to 8 bits, so two schedules of the same computation can
    /// differ by a few tenths of a logit; in f32 they agree to ~1e-5.
    F32,
}

impl WeightMode {
    /// Whether weights go on deal's packed kernels where one takes them (`stored` and `f32`
    /// keep candle's, as references).
    fn packs(self) -> bool {
        !matches!(self, WeightMode::Stored | WeightMode::F32)
    }
}

/// Whether `mode` turns a weight of type `dtype` on `device` into Q8_0.
fn to_q8(mode: WeightMode, dtype: GgmlDType, device: &Device) -> bool {
    device.is_cpu()
        && match mode {
            WeightMode::Requantize => requantized_on_cpu(dtype),
            WeightMode::Compact => requantized_on_cpu(dtype) && !compact_kernel(dtype),
            WeightMode::Q8 => !matches!(dtype, GgmlDType::Q8_0 | GgmlDType::F32 | GgmlDType::F16 | GgmlDType::BF16),
            _ => false,
        }
}

/// Read a weight as a [`QTensor`] held per `mode`.
pub fn load_qtensor(f: &GgufFile, name: &str, device: &Device, mode: WeightMode) -> Result<QTensor> {
    let t = f.tensor(name, device)?;
    match mode {
        WeightMode::F32 if t.dtype() != GgmlDType::F32 => Ok(QTensor::quantize(&t.dequantize(device)?, GgmlDType::F32)?),
        _ if to_q8(mode, t.dtype(), device) => requantize_q8(&t),
        _ => Ok(t),
    }
}

/// A CPU weight re-quantized to Q8_0 on every core, bit for bit what candle's
/// `QTensor::quantize(&t.dequantize(), Q8_0)` gives: each thread dequantizes slabs of its
/// rows into a small reused buffer (candle's own `to_float` for the stored type) and
/// quantizes them straight into the one output buffer. (Going through candle's tensors
/// instead allocated, zeroed and copied every slab several times: most of a 4B model's
/// load time.)
pub fn requantize_q8(t: &QTensor) -> Result<QTensor> {
    if let Some(q) = crate::kernels::with_stored(&[t], |parts| requantize_stored_q8(parts[0]))? {
        return Ok(q);
    }
    Ok(QTensor::quantize(&t.dequantize(&t.device())?, GgmlDType::Q8_0)?)
}

/// [`requantize_q8`] on stored bytes (the memory-mapped file's, at load); `None` when the
/// type, the width or the bytes' alignment do not allow it (the caller then goes through
/// candle).
pub fn requantize_stored_q8(w: StoredWeight) -> Result<Option<QTensor>> {
    use candle_core::quantized::k_quants::BlockQ8_0;
    let StoredWeight { bytes: data, dtype, n: rows, k, mapped } = w;
    if k % 32 != 0 || k % dtype.block_size() != 0 {
        return Ok(None);
    }
    let row_bytes = k / dtype.block_size() * dtype.type_size();
    // whole blocks of a type we dequantize, aligned for its block type (checked on a row:
    // rows follow each other whole, so the rest are aligned alike)
    if data.len() != rows * row_bytes || rows == 0 || !dequantize_into(dtype, &data[..row_bytes], &mut vec![0f32; k]) {
        return Ok(None);
    }
    let blocks_per_row = k / 32;
    let mut out: Vec<BlockQ8_0> = Vec::with_capacity(rows * blocks_per_row);
    let out_addr = out.as_mut_ptr() as usize;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).max(1);
    let per_worker = rows.div_ceil(workers).max(1);
    // ~64k values per slab: the f32 buffer stays in L2
    let slab_rows = (1usize << 16).div_ceil(k).max(1);
    let vector = crate::kernels::q8_0::quantizer_is_vector();
    let failed = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        for w in 0..workers {
            let (r_start, r_end) = (w * per_worker, ((w + 1) * per_worker).min(rows));
            if r_start >= r_end {
                continue;
            }
            let (data, failed) = (&data, &failed);
            s.spawn(move || {
                let mut buf = vec![0f32; slab_rows * k];
                let mut release = crate::kernels::MappedRelease::default();
                let mut r = r_start;
                while r < r_end {
                    let r1 = (r + slab_rows).min(r_end);
                    let vals = &mut buf[..(r1 - r) * k];
                    if !dequantize_into(dtype, &data[r * row_bytes..r1 * row_bytes], vals) {
                        failed.store(true, std::sync::atomic::Ordering::Relaxed);
                        return;
                    }
                    // SAFETY: blocks r * blocks_per_row .. r1 * blocks_per_row lie in this
                    // worker's rows, inside the capacity reserved above, written by no other
                    // thread; BlockQ8_0 is repr(C): an f16 scale, then 32 i8 values (34 bytes).
                    let block = std::mem::size_of::<BlockQ8_0>();
                    let dst = unsafe {
                        std::slice::from_raw_parts_mut((out_addr as *mut u8).add(r * blocks_per_row * block), (r1 - r) * blocks_per_row * block)
                    };
                    crate::kernels::q8_0::quantize_blocks(vals, dst, vector);
                    if mapped {
                        release.done(&data[r * row_bytes..r1 * row_bytes]);
                    }
                    r = r1;
                }
            });
        }
    });
    if failed.into_inner() {
        return Err(crate::Error::Internal(format!("{dtype:?} rows could not be dequantized")));
    }
    // SAFETY: the workers covered rows [0, rows), writing every byte of every block.
    unsafe { out.set_len(rows * blocks_per_row) };
    Ok(Some(QTensor::new(candle_core::quantized::QStorage::Cpu(Box::new(out)), (rows, k))?))
}

/// The weights `names` (`{name}.weight`) packed for one kernel straight from the mapped file:
/// each taken as stored, or re-quantized to Q8_0 from the stored bytes where `mode` asks, and
/// its mapped pages released afterwards; no loaded copy in between. `None` when the device is
/// not the CPU, `mode` keeps candle's kernels, or no kernel takes them all (the caller then
/// loads tensors).
fn pack_from_map(f: &GgufFile, names: &[String], device: &Device, mode: WeightMode) -> Result<Option<Packed>> {
    if !device.is_cpu() || !mode.packs() || !crate::kernels::q8_0::available() {
        return Ok(None);
    }
    let mut stored = Vec::with_capacity(names.len());
    for name in names {
        let (bytes, dtype, dims) = f.tensor_bytes(&format!("{name}.weight"))?;
        let [n, k] = dims[..] else { return Ok(None) };
        stored.push(StoredWeight { bytes, dtype, n, k, mapped: true });
    }
    // every part ends up Q8_0 and one needs converting: packed straight from the stored rows
    if stored.iter().any(|w| to_q8(mode, w.dtype, device))
        && stored.iter().all(|w| w.dtype == GgmlDType::Q8_0 || to_q8(mode, w.dtype, device))
    {
        if let Some(p) = crate::kernels::q8_0::PackedQ8::pack_requantized(&stored)? {
            for w in &stored {
                crate::gguf::release_pages(w.bytes);
            }
            return Ok(Some(Packed::Q8(p)));
        }
    }
    let mut converted = Vec::with_capacity(stored.len());
    for w in &stored {
        converted.push(if to_q8(mode, w.dtype, device) {
            match requantize_stored_q8(*w)? {
                Some(q) => Some(q),
                None => return Ok(None),
            }
        } else {
            None
        });
    }
    let datas = converted.iter().map(|q| q.as_ref().map(|q| q.data()).transpose()).collect::<candle_core::Result<Vec<_>>>()?;
    let parts: Vec<StoredWeight> = stored
        .iter()
        .zip(&datas)
        .map(|(w, d)| match d {
            Some(d) => StoredWeight { bytes: d, dtype: GgmlDType::Q8_0, n: w.n, k: w.k, mapped: false },
            None => *w,
        })
        .collect();
    let packed = Packed::pack_stored(&parts)?;
    for w in &stored {
        crate::gguf::release_pages(w.bytes);
    }
    Ok(packed)
}

/// Weights repacked for one of our CPU kernels.
pub enum Packed {
    /// Q8_0, Q5_0, Q4_0, Q5_1 and Q4_1 (over Q8_0 activations), 8 activation rows per weight
    /// load.
    Q8(PackedQ8),
    /// Q4_K as stored, 8 activation rows per weight load.
    Q4K(PackedQ4K),
    /// Q5_K as stored, 8 activation rows per weight load.
    Q5K(PackedQ5K),
    /// Q6_K as stored, 8 activation rows per weight load.
    Q6K(PackedQ6K),
}

impl Packed {
    /// Repack `ws` (stacked along `n`) for whichever kernel takes them all; `None` if none
    /// does (other types, mixed types, a CPU with neither AVX-512 VNNI nor AVX2).
    pub fn pack(ws: &[&QTensor]) -> Result<Option<Self>> {
        crate::kernels::with_stored(ws, Self::pack_stored)
    }

    /// [`Packed::pack`] on stored bytes (the memory-mapped file's, at load).
    pub fn pack_stored(parts: &[StoredWeight]) -> Result<Option<Self>> {
        if let Some(p) = PackedQ8::pack_stored(parts)? {
            return Ok(Some(Packed::Q8(p)));
        }
        if let Some(p) = PackedQ4K::pack_stored(parts)? {
            return Ok(Some(Packed::Q4K(p)));
        }
        if let Some(p) = PackedQ5K::pack_stored(parts)? {
            return Ok(Some(Packed::Q5K(p)));
        }
        Ok(PackedQ6K::pack_stored(parts)?.map(Packed::Q6K))
    }

    /// Output width.
    pub fn n(&self) -> usize {
        match self {
            Packed::Q8(p) => p.n(),
            Packed::Q4K(p) => p.n(),
            Packed::Q5K(p) => p.n(),
            Packed::Q6K(p) => p.n(),
        }
    }

    /// Bytes the packed weights hold (what one pass over them reads).
    pub fn bytes(&self) -> usize {
        match self {
            Packed::Q8(p) => p.bytes(),
            Packed::Q4K(p) => p.bytes(),
            Packed::Q5K(p) => p.bytes(),
            Packed::Q6K(p) => p.bytes(),
        }
    }

    /// `lhs[m, k] · Wᵀ`, row-major `[m, n]`.
    pub fn matmul(&self, lhs: &[f32], m: usize) -> Result<Vec<f32>> {
        match self {
            Packed::Q8(p) => p.matmul(lhs, m),
            Packed::Q4K(p) => p.matmul(lhs, m),
            Packed::Q5K(p) => p.matmul(lhs, m),
            Packed::Q6K(p) => p.matmul(lhs, m),
        }
    }
}

/// The matmul behind a linear layer: one of our packed kernels where it applies, else candle's.
#[derive(Clone)]
enum Matmul {
    Candle(QMatMul),
    Packed(Arc<Packed>),
}

impl Matmul {
    fn new(w: QTensor) -> Result<Self> {
        match Packed::pack(&[&w])? {
            Some(p) => Ok(Matmul::Packed(Arc::new(p))),
            None => Ok(Matmul::Candle(QMatMul::from_qtensor(w)?)),
        }
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        match self {
            Matmul::Candle(q) => Ok(q.forward(x)?),
            Matmul::Packed(p) => packed_forward(p, x),
        }
    }
}

/// `x[.., k]` through a packed weight, on CPU: the output rows, row-major.
fn packed_flat(p: &Packed, x: &Tensor) -> Result<Vec<f32>> {
    let k = *x.dims().last().ok_or_else(|| crate::Error::invalid("matmul input has no dimensions"))?;
    let m = x.elem_count() / k.max(1);
    let flat = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
    p.matmul(&flat, m)
}

/// `x[.., k]` through a packed weight, on CPU.
fn packed_forward(p: &Packed, x: &Tensor) -> Result<Tensor> {
    let y = packed_flat(p, x)?;
    let mut out_dims = x.dims().to_vec();
    *out_dims.last_mut().expect("non-empty dims") = p.n();
    Ok(Tensor::from_vec(y, out_dims, x.device())?.to_dtype(x.dtype())?)
}

/// A linear layer `y = x Wᵀ (+ b)` with a quantized weight.
#[derive(Clone)]
pub struct Linear {
    weight: Matmul,
    bias: Option<Tensor>,
}

fn load_bias(f: &GgufFile, name: &str, device: &Device) -> Result<Option<Tensor>> {
    let bias_name = format!("{name}.bias");
    if f.has_tensor(&bias_name) {
        Ok(Some(f.tensor(&bias_name, device)?.dequantize(device)?))
    } else {
        Ok(None)
    }
}

impl Linear {
    /// Load `{name}.weight` and, if present, `{name}.bias`.
    pub fn load(f: &GgufFile, name: &str, device: &Device, mode: WeightMode) -> Result<Self> {
        if let Some(l) = Self::from_map(f, name, device, mode)? {
            return Ok(l);
        }
        let w = load_qtensor(f, &format!("{name}.weight"), device, mode)?;
        let weight = if mode.packs() { Matmul::new(w)? } else { Matmul::Candle(QMatMul::from_qtensor(w)?) };
        Ok(Self { weight, bias: load_bias(f, name, device)? })
    }

    /// `{name}.weight` packed straight from the mapped file (see [`pack_from_map`]), and
    /// `{name}.bias` if present; `None` where no packed kernel takes it there.
    pub fn from_map(f: &GgufFile, name: &str, device: &Device, mode: WeightMode) -> Result<Option<Self>> {
        match pack_from_map(f, &[name.to_string()], device, mode)? {
            Some(p) => Ok(Some(Self { weight: Matmul::Packed(Arc::new(p)), bias: load_bias(f, name, device)? })),
            None => Ok(None),
        }
    }

    /// Wrap an already loaded tensor (tied output embedding); a type `mode` turns into Q8_0
    /// (see [`requantized_on_cpu`]) gets a Q8_0 copy for the matmul.
    pub fn from_arc(w: Arc<QTensor>, mode: WeightMode) -> Result<Self> {
        let w = if to_q8(mode, w.dtype(), &w.device()) {
            Arc::new(requantize_q8(&w)?)
        } else {
            w
        };
        let packed = if mode.packs() { Packed::pack(&[&w])? } else { None };
        let weight = match packed {
            Some(p) => Matmul::Packed(Arc::new(p)),
            None => Matmul::Candle(QMatMul::from_arc(w)?),
        };
        Ok(Self { weight, bias: None })
    }

    /// Whether this layer runs on `w` itself (candle's kernels on the shared tensor) rather
    /// than on a packed or re-quantized copy of it.
    pub fn holds(&self, w: &Arc<QTensor>) -> bool {
        match &self.weight {
            Matmul::Candle(QMatMul::QTensor(q)) => Arc::ptr_eq(q, w),
            _ => false,
        }
    }

    /// `x` `[.., in]` → `x Wᵀ (+ b)` `[.., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let y = self.weight.forward(x)?;
        Ok(match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        })
    }
}

/// Several projections of the same input (q/k/v, gate/up): one fused packed matmul when all
/// weights pack for the same kernel without biases, else one [`Linear`] each.
#[derive(Clone)]
pub struct Projections {
    fused: Option<Arc<Packed>>,
    parts: Vec<Linear>,
    widths: Vec<usize>,
    /// The parts' biases as plain values, for [`Projections::forward_flat`].
    flat_biases: Vec<Option<Vec<f32>>>,
}

impl Projections {
    /// Load `{name}.weight` (and `{name}.bias` if present) for each of `names`; fused into one
    /// packed matmul when every weight packs for the same kernel and none has a bias.
    pub fn load(f: &GgufFile, names: &[String], device: &Device, mode: WeightMode) -> Result<Self> {
        if !names.iter().any(|n| f.has_tensor(&format!("{n}.bias"))) {
            if let Some(p) = pack_from_map(f, names, device, mode)? {
                let widths = names
                    .iter()
                    .map(|n| f.tensor_bytes(&format!("{n}.weight")).map(|(_, _, dims)| dims.first().copied().unwrap_or(0)))
                    .collect::<Result<Vec<_>>>()?;
                return Ok(Self { fused: Some(Arc::new(p)), parts: Vec::new(), widths, flat_biases: Vec::new() });
            }
        }
        let mut ws = Vec::with_capacity(names.len());
        let mut has_bias = false;
        for n in names {
            ws.push(load_qtensor(f, &format!("{n}.weight"), device, mode)?);
            has_bias |= f.has_tensor(&format!("{n}.bias"));
        }
        let widths = ws.iter().map(|w| w.shape().dims2().map(|d| d.0)).collect::<candle_core::Result<Vec<_>>>()?;
        if mode.packs() && !has_bias {
            let refs: Vec<&QTensor> = ws.iter().collect();
            if let Some(p) = Packed::pack(&refs)? {
                return Ok(Self { fused: Some(Arc::new(p)), parts: Vec::new(), widths, flat_biases: Vec::new() });
            }
        }
        let mut parts = Vec::with_capacity(names.len());
        for (w, n) in ws.into_iter().zip(names) {
            let weight = if mode.packs() { Matmul::new(w)? } else { Matmul::Candle(QMatMul::from_qtensor(w)?) };
            parts.push(Linear { weight, bias: load_bias(f, n, device)? });
        }
        let flat_biases = parts
            .iter()
            .map(|l| l.bias.as_ref().map(|b| b.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()).transpose())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self { fused: None, parts, widths, flat_biases })
    }

    /// Whether [`Projections::forward_flat`] runs (every projection on a packed kernel).
    pub fn is_packed(&self) -> bool {
        self.fused.is_some() || self.parts.iter().all(|l| matches!(l.weight, Matmul::Packed(_)))
    }

    /// Every projection's output side by side, row-major `[rows, Σ widths]`, and the widths,
    /// when every projection runs on a packed kernel (fused, or separately with the outputs
    /// interleaved and biases added); `None` when one runs on candle.
    pub fn forward_flat(&self, x: &Tensor) -> Result<Option<(Vec<f32>, &[usize])>> {
        if let Some(p) = &self.fused {
            return Ok(Some((packed_flat(p, x)?, self.widths.as_slice())));
        }
        let mut packed = Vec::with_capacity(self.parts.len());
        for (l, b) in self.parts.iter().zip(&self.flat_biases) {
            match &l.weight {
                Matmul::Packed(p) => packed.push((p, b.as_deref())),
                Matmul::Candle(_) => return Ok(None),
            }
        }
        let k = *x.dims().last().ok_or_else(|| crate::Error::invalid("matmul input has no dimensions"))?;
        let m = x.elem_count() / k.max(1);
        let flat = x.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
        let total: usize = self.widths.iter().sum();
        let mut out = vec![0f32; m * total];
        let mut at = 0;
        for ((p, bias), &w) in packed.into_iter().zip(&self.widths) {
            let y = p.matmul(&flat, m)?;
            for (dst, src) in out.chunks_exact_mut(total).zip(y.chunks_exact(w)) {
                let dst = &mut dst[at..at + w];
                dst.copy_from_slice(src);
                if let Some(b) = bias {
                    dst.iter_mut().zip(b).for_each(|(d, b)| *d += b);
                }
            }
            at += w;
        }
        Ok(Some((out, self.widths.as_slice())))
    }

    /// One output per projection, in the order loaded.
    pub fn forward(&self, x: &Tensor) -> Result<Vec<Tensor>> {
        match &self.fused {
            Some(p) => {
                let y = packed_forward(p, x)?;
                let mut out = Vec::with_capacity(self.widths.len());
                let mut at = 0;
                for &w in &self.widths {
                    out.push(y.narrow(candle_core::D::Minus1, at, w)?);
                    at += w;
                }
                Ok(out)
            }
            None => self.parts.iter().map(|l| l.forward(x)).collect(),
        }
    }
}

/// RMS normalisation over the last dimension with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    weight: Tensor,
    /// The scale as plain values, for the CPU path.
    w: Vec<f32>,
    eps: f32,
}

impl RmsNorm {
    /// Load the scale tensor `name` (as f32), with `eps` added to the mean square.
    pub fn load(f: &GgufFile, name: &str, device: &Device, eps: f64) -> Result<Self> {
        let weight = f.tensor(name, device)?.dequantize(device)?.to_dtype(DType::F32)?;
        let w = weight.flatten_all()?.to_vec1::<f32>()?;
        Ok(Self { weight, w, eps: eps as f32 })
    }

    /// Normalise `x` over its last dimension, then multiply by the scale (on CPU in f32, with
    /// ggml's arithmetic).
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        if !x.device().is_cpu() || x.dtype() != DType::F32 {
            return Ok(candle_nn::ops::rms_norm(&x.contiguous()?, &self.weight, self.eps)?);
        }
        let mut v = x.flatten_all()?.to_vec1::<f32>()?;
        for row in v.chunks_exact_mut(self.w.len()) {
            self.normalize(row);
        }
        Ok(Tensor::from_vec(v, x.shape(), x.device())?)
    }

    /// Normalise one row in place (its length must be the scale's), with ggml's arithmetic:
    /// sum of squares in f64, scale = 1/sqrt(mean + eps) in f32, then the weight multiply.
    pub fn normalize(&self, row: &mut [f32]) {
        let sum: f64 = row.iter().map(|&a| (a * a) as f64).sum();
        let mean = (sum / row.len() as f64) as f32;
        let scale = 1.0 / (mean + self.eps).sqrt();
        for (a, &wi) in row.iter_mut().zip(&self.w) {
            *a = (*a * scale) * wi;
        }
    }

    /// Width of the rows it normalises.
    pub fn width(&self) -> usize {
        self.w.len()
    }
}

/// Rotary frequencies of one kind of layer.
#[derive(Debug, Clone)]
pub struct Rope {
    head_dim: usize,
    /// `base^(-2/d)`: each pair's angle is the previous one's times this (ggml's recurrence).
    theta_scale: f32,
    /// Per-pair divisors (llama 3.1's `rope_freqs.weight`).
    factors: Option<Vec<f32>>,
    /// Positions are divided by this (linear RoPE scaling).
    linear_scale: f32,
}

impl Rope {
    /// Frequencies for heads of `head_dim` from RoPE base `base`, with optional per-pair divisors
    /// `factors` and positions divided by `linear_scale`.
    pub fn new(head_dim: usize, base: f32, factors: Option<Vec<f32>>, linear_scale: f32) -> Self {
        Self { head_dim, theta_scale: base.powf(-2.0 / head_dim as f32), factors, linear_scale }
    }

    /// cos/sin tables `[rows, t, d/2]` for the positions of one step (`[rows, t]`), computed
    /// exactly as ggml does (angle recurrence in f32).
    pub fn tables(&self, positions: &[u32], rows: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.head_dim / 2;
        let mut cos = Vec::with_capacity(positions.len() * half);
        let mut sin = Vec::with_capacity(positions.len() * half);
        let freq_scale = 1.0 / self.linear_scale;
        for &p in positions {
            let mut theta = p as f32;
            for i in 0..half {
                let ff = self.factors.as_ref().and_then(|f| f.get(i)).copied().filter(|&f| f != 0.0).unwrap_or(1.0);
                let a = freq_scale * (theta / ff);
                cos.push(a.cos());
                sin.push(a.sin());
                theta *= self.theta_scale;
            }
        }
        Ok((Tensor::from_vec(cos, (rows, t, half), device)?, Tensor::from_vec(sin, (rows, t, half), device)?))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_requantization_equals_candles() {
        let dev = Device::Cpu;
        for (dtype, rows, k) in [(GgmlDType::Q6K, 300, 512), (GgmlDType::Q5_0, 7, 640), (GgmlDType::Q4K, 5000, 256)] {
            let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (rows, k), &dev).unwrap(), dtype).unwrap();
            let ours = requantize_q8(&w).unwrap();
            let theirs = QTensor::quantize(&w.dequantize(&dev).unwrap(), GgmlDType::Q8_0).unwrap();
            assert_eq!(ours.dtype(), GgmlDType::Q8_0);
            assert_eq!(ours.shape().dims(), &[rows, k]);
            assert_eq!(ours.data().unwrap(), theirs.data().unwrap(), "{dtype:?}");
        }
    }

    /// Re-quantizing row by row while packing (the load path) gives the very weights that
    /// packing a re-quantized copy gives, a fused Q8_0 part included.
    #[test]
    fn requantized_while_packing_equals_packing_a_requantized_copy() {
        if !crate::kernels::q8_0::available() {
            return;
        }
        let dev = Device::Cpu;
        let k = 512;
        let a = QTensor::quantize(&Tensor::randn(0f32, 1.0, (40, k), &dev).unwrap(), GgmlDType::Q5_0).unwrap();
        let b = QTensor::quantize(&Tensor::randn(0f32, 1.0, (24, k), &dev).unwrap(), GgmlDType::Q8_0).unwrap();
        let c = QTensor::quantize(&Tensor::randn(0f32, 1.0, (9, k), &dev).unwrap(), GgmlDType::Q4K).unwrap();
        let fused = crate::kernels::with_stored(&[&a, &b, &c], PackedQ8::pack_requantized).unwrap().unwrap();
        let copies = [requantize_q8(&a).unwrap(), b, requantize_q8(&c).unwrap()];
        let packed = PackedQ8::pack(&copies.iter().collect::<Vec<_>>()).unwrap().unwrap();
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (3, k), &dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(fused.matmul(&x, 3).unwrap(), packed.matmul(&x, 3).unwrap());
    }
}
