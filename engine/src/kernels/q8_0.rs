//! Batched Q8_0 × Q8_0 matmul with AVX512-VNNI (and an AVX2 path, [`super::avx2`]).
//!
//! candle's CPU path for Q8_0 weights computes one 32-value dot product per (row, column)
//! with AVX2 and only repacks weights whose width is a multiple of 256, which excludes every
//! projection of a 640-wide model such as Gemma 3 270M. Here the weights are repacked once
//! at load into tiles of 16 output rows: for each 32-value block, eight 64-byte vectors that
//! each hold 4 consecutive values of all 16 rows (stored +128 as u8), plus the 16 scales. One
//! `vpdpbusd` then advances 16 outputs by 4 values, and each weight vector loaded from memory
//! is reused for up to [`ROWS_PER_PASS`] activation rows, so lockstep search rows share the
//! weight traffic instead of re-reading it.
//!
//! Arithmetic is the same as ggml/candle's Q8_0 path (activations quantized per 32 values
//! with an f16 scale), so results agree with `QMatMul` up to float summation order.
//!
//! [`PackedQ8`] also holds the Q5_0 and Q4_0 tiles of [`super::q5_0`], which take the same
//! activations: a fused projection may mix the three types.

use candle_core::quantized::{GgmlDType, QTensor};
use half::f16;

use super::q5_0::{TileQ4, TileQ4_1, TileQ5, TileQ5_1};
use crate::{Error, Result};

const QK: usize = 32;
use super::TILE;
/// Activation rows processed per pass over a weight tile.
pub const ROWS_PER_PASS: usize = 8;
/// How far ahead of the block being multiplied the weights are prefetched, in blocks (about
/// 8 KiB: a bit under two tiles of a 640-wide matrix).
const PREFETCH_BLOCKS: usize = 16;

/// One 32-value block of 16 rows: `qs[g][row][j]` = weight value `4g + j` of `row`, + 128,
/// and the 16 row scales as f16 bits (544 bytes: the same as the Q8_0 blocks it replaces).
#[repr(C, align(32))]
#[derive(Clone)]
struct TileBlock {
    qs: [u8; QK * TILE],
    d: [u16; TILE],
}

/// Weights `[n, k]` of the types that run against Q8_0 activations, repacked for the VNNI
/// kernels: Q8_0 tiles, and Q5_0 / Q4_0 / Q5_1 / Q4_1 tiles on their stored bits
/// ([`super::q5_0`]). The
/// projections fused into one matmul may mix them (Gemma 3 270M's q and k are Q5_0, its v
/// Q8_0 in some layers): each part becomes a run of tiles of its own type, and one
/// quantization of the activations feeds them all.
pub struct PackedQ8 {
    n: usize,
    k: usize,
    segments: Vec<Segment>,
}

/// A run of tiles of one type, from output tile `first_tile` on.
struct Segment {
    first_tile: usize,
    tiles: Tiles,
}

/// One type's tiles.
enum Tiles {
    Q8_0(Vec<TileBlock>),
    Q5_0(Vec<TileQ5>),
    Q4_0(Vec<TileQ4>),
    Q5_1(Vec<TileQ5_1>),
    Q4_1(Vec<TileQ4_1>),
}

impl Tiles {
    fn bytes(&self) -> usize {
        match self {
            Tiles::Q8_0(v) => v.len() * std::mem::size_of::<TileBlock>(),
            Tiles::Q5_0(v) => v.len() * std::mem::size_of::<TileQ5>(),
            Tiles::Q4_0(v) => v.len() * std::mem::size_of::<TileQ4>(),
            Tiles::Q5_1(v) => v.len() * std::mem::size_of::<TileQ5_1>(),
            Tiles::Q4_1(v) => v.len() * std::mem::size_of::<TileQ4_1>(),
        }
    }
}

/// Whether this CPU can run the kernels (AVX-512 VNNI or AVX2, see [`super::isa`]).
pub fn available() -> bool {
    super::isa().is_some()
}

impl PackedQ8 {
    /// Repack Q8_0, Q5_0, Q4_0, Q5_1 or Q4_1 weights; several tensors with the same `k` are stacked along
    /// `n` (fused q/k/v or gate/up projections), each on its own type's tiles. `None` if a
    /// tensor is of another type, `k` is not a multiple of 32, a part other than the last
    /// changes type after a row count that is not a multiple of 16, or the CPU has neither
    /// AVX-512 VNNI nor AVX2.
    pub fn pack(ts: &[&QTensor]) -> Result<Option<Self>> {
        super::with_stored(ts, Self::pack_stored)
    }

    /// [`Self::pack`] on stored bytes (the memory-mapped file's, at load).
    pub fn pack_stored(parts: &[super::StoredWeight]) -> Result<Option<Self>> {
        if !available() || parts.is_empty() {
            return Ok(None);
        }
        let family = |t: GgmlDType| matches!(t, GgmlDType::Q8_0 | GgmlDType::Q5_0 | GgmlDType::Q4_0 | GgmlDType::Q5_1 | GgmlDType::Q4_1);
        if parts.iter().any(|p| !family(p.dtype)) {
            return Ok(None);
        }
        // runs of parts of one type; a run that is not the last must end on a tile boundary
        let mut runs: Vec<&[super::StoredWeight]> = Vec::new();
        let mut start = 0;
        for i in 1..=parts.len() {
            if i == parts.len() || parts[i].dtype != parts[start].dtype {
                runs.push(&parts[start..i]);
                start = i;
            }
        }
        let (mut segments, mut first_tile, mut n) = (Vec::with_capacity(runs.len()), 0, 0);
        for (i, run) in runs.iter().enumerate() {
            let rows: usize = run.iter().map(|p| p.n).sum();
            if i + 1 < runs.len() && !rows.is_multiple_of(TILE) {
                return Ok(None);
            }
            let packed = super::with_stacked_rows(run, run[0].dtype, |rows, k| match run[0].dtype {
                GgmlDType::Q5_0 => Tiles::Q5_0(super::q5_0::pack(rows, k)),
                GgmlDType::Q4_0 => Tiles::Q4_0(super::q5_0::pack(rows, k)),
                GgmlDType::Q5_1 => Tiles::Q5_1(super::q5_0::pack(rows, k)),
                GgmlDType::Q4_1 => Tiles::Q4_1(super::q5_0::pack(rows, k)),
                _ => Tiles::Q8_0(Self::pack_q8_tiles(rows, k)),
            })?;
            let Some(tiles) = packed else { return Ok(None) };
            segments.push(Segment { first_tile, tiles });
            first_tile += rows.div_ceil(TILE);
            n += rows;
        }
        Ok(Some(Self { n, k: parts[0].k, segments }))
    }

    /// [`Self::pack_stored`] where parts of other types (Q5_0, Q4_0, ...) are re-quantized to
    /// Q8_0 as they are packed, bit for bit as [`crate::model::layers::requantize_q8`] would,
    /// without a re-quantized copy of the whole tensor in between. `None` when a part's type
    /// cannot be dequantized or the CPU has neither AVX-512 VNNI nor AVX2.
    pub fn pack_requantized(parts: &[super::StoredWeight]) -> Result<Option<Self>> {
        if !available() {
            return Ok(None);
        }
        super::with_requantized_rows(parts, Self::pack_rows)
    }

    fn pack_rows(rows: &super::SourceRows, k: usize) -> Self {
        let segments = vec![Segment { first_tile: 0, tiles: Tiles::Q8_0(Self::pack_q8_tiles(rows, k)) }];
        Self { n: rows.len(), k, segments }
    }

    fn pack_q8_tiles(rows: &super::SourceRows, k: usize) -> Vec<TileBlock> {
        let empty = TileBlock { qs: [128; QK * TILE], d: [0; TILE] };
        super::pack_tiles(rows, k / QK, 34, empty, |blk, lane, src| {
            blk.d[lane] = u16::from_le_bytes([src[0], src[1]]);
            // 4 values at a time, each i8 `q` stored as the u8 `q + 128` (its top bit flipped)
            for (g, four) in src[2..].chunks_exact(4).enumerate() {
                let at = g * TILE * 4 + lane * 4;
                let flipped = u32::from_le_bytes([four[0], four[1], four[2], four[3]]) ^ 0x8080_8080;
                blk.qs[at..at + 4].copy_from_slice(&flipped.to_le_bytes());
            }
        })
    }

    /// Output width.
    pub fn n(&self) -> usize {
        self.n
    }

    /// Input width.
    pub fn k(&self) -> usize {
        self.k
    }

    /// Bytes the packed weights hold.
    pub fn bytes(&self) -> usize {
        self.segments.iter().map(|s| s.tiles.bytes()).sum()
    }

    /// `dst[m, n] = lhs[m, k] · Wᵀ`.
    pub fn matmul(&self, lhs: &[f32], m: usize) -> Result<Vec<f32>> {
        self.matmul_with(lhs, m, super::isa().ok_or_else(|| Error::invalid("no packed-kernel instruction set on this CPU"))?)
    }

    /// [`Self::matmul`] on the kernels of `isa` (an error if this CPU cannot run them).
    pub fn matmul_with(&self, lhs: &[f32], m: usize, isa: super::Isa) -> Result<Vec<f32>> {
        let isa = super::check_isa(isa)?;
        if lhs.len() != m * self.k {
            return Err(Error::invalid(format!("lhs has {} values, expected {m} x {}", lhs.len(), self.k)));
        }
        let act = QuantizedRows::new(lhs, m, self.k);
        let kb = self.k / QK;
        let dst = super::tiled_matmul(self.n, m, isa.rows_per_pass(), |t, r0, rows, first, out, stride| {
            let Some(seg) = self.segments.iter().rev().find(|s| s.first_tile <= t) else { return };
            let (at, prefetch) = ((t - seg.first_tile) * kb, first && rows > 1);
            // SAFETY: `check_isa` confirmed the CPU runs `isa`; `out` has `rows` rows of 16
            // floats at `stride`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                use super::q5_0::{tile_kernel as nibbles, tile_kernel_avx2 as nibbles_avx2};
                match (&seg.tiles, isa) {
                    (Tiles::Q8_0(b), super::Isa::Avx512Vnni) => tile_kernel(b, at, kb, &act, r0, rows, prefetch, out, stride),
                    (Tiles::Q5_0(b), super::Isa::Avx512Vnni) => nibbles(b, at, kb, &act, r0, rows, prefetch, out, stride),
                    (Tiles::Q4_0(b), super::Isa::Avx512Vnni) => nibbles(b, at, kb, &act, r0, rows, prefetch, out, stride),
                    (Tiles::Q5_1(b), super::Isa::Avx512Vnni) => nibbles(b, at, kb, &act, r0, rows, prefetch, out, stride),
                    (Tiles::Q4_1(b), super::Isa::Avx512Vnni) => nibbles(b, at, kb, &act, r0, rows, prefetch, out, stride),
                    (Tiles::Q8_0(b), super::Isa::Avx2) => tile_kernel_avx2(b, at, kb, &act, r0, rows, (out, stride)),
                    (Tiles::Q5_0(b), super::Isa::Avx2) => nibbles_avx2(b, at, kb, &act, r0, rows, (out, stride)),
                    (Tiles::Q4_0(b), super::Isa::Avx2) => nibbles_avx2(b, at, kb, &act, r0, rows, (out, stride)),
                    (Tiles::Q5_1(b), super::Isa::Avx2) => nibbles_avx2(b, at, kb, &act, r0, rows, (out, stride)),
                    (Tiles::Q4_1(b), super::Isa::Avx2) => nibbles_avx2(b, at, kb, &act, r0, rows, (out, stride)),
                }
            };
        });
        Ok(dst)
    }
}

/// Activations quantized to Q8_0 (ggml's reference arithmetic, as candle's; f16 scales), with
/// per-block sums for the weights' offset corrections (Q8_0 tiles: +128; Q5_0: 16; Q4_0: 8).
pub(super) struct QuantizedRows {
    pub(super) qs: Vec<i8>,
    pub(super) d: Vec<f32>,
    pub(super) sums: Vec<i32>,
    pub(super) kb: usize,
    pub(super) k: usize,
}

impl QuantizedRows {
    pub(super) fn new(x: &[f32], m: usize, k: usize) -> Self {
        let kb = k / QK;
        let mut qs = vec![0i8; m * k];
        let mut d = vec![0f32; m * kb];
        let mut sums = vec![0i32; m * kb];
        let vector = quantizer_is_vector();
        for (bi, (xs, q)) in x.chunks_exact(QK).zip(qs.chunks_exact_mut(QK)).enumerate() {
            let (scale, s) = quantize_q8_0(xs, q, vector);
            d[bi] = scale.to_f32();
            sums[bi] = s;
        }
        Self { qs, d, sums, kb, k }
    }
}

/// Whether [`quantize_q8_0`] may take its AVX-512 path on this CPU.
pub fn quantizer_is_vector() -> bool {
    static VECTOR: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *VECTOR.get_or_init(|| super::Isa::Avx512Vnni.supported())
}

/// One Q8_0 block of 32 values, with ggml's reference arithmetic (and candle's
/// `BlockQ8_0::from_float`, bit for bit): scale `d = max|x| / 127`, values `x · (1/d)`
/// rounded half away from zero. Writes the 32 values to `q`; returns `d` as f16 and the sum
/// of the values. `vector` (from [`quantizer_is_vector`]) picks the AVX-512 rounding, which
/// gives the same bits.
pub fn quantize_q8_0(xs: &[f32], q: &mut [i8], vector: bool) -> (f16, i32) {
    #[cfg(target_arch = "x86_64")]
    let amax = if vector && xs.len() == QK {
        // SAFETY: as below; 32 values.
        unsafe { abs_max_avx512(xs) }
    } else {
        xs.iter().fold(0f32, |a, &v| a.max(v.abs()))
    };
    #[cfg(not(target_arch = "x86_64"))]
    let amax = xs.iter().fold(0f32, |a, &v| a.max(v.abs()));
    let scale = amax / 127.0;
    let inv = if scale != 0.0 { 1.0 / scale } else { 0.0 };
    #[cfg(target_arch = "x86_64")]
    let s = if vector && xs.len() == QK && q.len() == QK {
        // SAFETY: `vector` comes from `quantizer_is_vector` (AVX-512F/BW present); both
        // slices hold 32 values.
        unsafe { quantize_block_avx512(xs, inv, q) }
    } else {
        quantize_block(xs, inv, q)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let s = {
        let _ = vector;
        quantize_block(xs, inv, q)
    };
    (f16::from_f32(scale), s)
}

/// `xs` (a whole number of 32-value blocks) as Q8_0 blocks in `out`, 34 bytes each (the f16
/// scale, then the 32 values), by [`quantize_q8_0`]: the byte layout of candle's `BlockQ8_0`.
pub fn quantize_blocks(xs: &[f32], out: &mut [u8], vector: bool) {
    for (xs, blk) in xs.chunks_exact(QK).zip(out.chunks_exact_mut(34)) {
        let (d, q) = blk.split_at_mut(2);
        // SAFETY: i8 and u8 have the same size and alignment, and any bits are valid in both.
        let q = unsafe { std::slice::from_raw_parts_mut(q.as_mut_ptr() as *mut i8, QK) };
        let (scale, _) = quantize_q8_0(xs, q, vector);
        d.copy_from_slice(&scale.to_bits().to_le_bytes());
    }
}

/// `max |x|` of 32 values, as the scalar `fold(0, |a, v| a.max(v.abs()))`: NaNs are skipped
/// (`vmaxps` returns its second operand, the running maximum, when the first is NaN).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn abs_max_avx512(xs: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_abs_ps(_mm512_loadu_ps(xs.as_ptr()));
    let b = _mm512_abs_ps(_mm512_loadu_ps(xs.as_ptr().add(16)));
    let m = _mm512_max_ps(a, _mm512_setzero_ps());
    let m = _mm512_max_ps(b, m);
    _mm512_reduce_max_ps(m)
}

/// Quantize one block with the multiplier `inv`; returns the sum of the quantized values.
fn quantize_block(xs: &[f32], inv: f32, q: &mut [i8]) -> i32 {
    let mut s = 0i32;
    for (qv, &v) in q.iter_mut().zip(xs) {
        *qv = (v * inv).round() as i8;
        s += *qv as i32;
    }
    s
}

/// [`quantize_block`] 16 lanes at a time, bit for bit the same: round half away from zero as
/// truncation plus a step of ±1 where the exact fraction is at least one half; NaN becomes 0
/// in both.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn quantize_block_avx512(xs: &[f32], inv: f32, q: &mut [i8]) -> i32 {
    use std::arch::x86_64::*;
    let mul = _mm512_set1_ps(inv);
    let mut sum = _mm512_setzero_si512();
    for half in 0..2 {
        let v = _mm512_mul_ps(_mm512_loadu_ps(xs.as_ptr().add(16 * half)), mul);
        let t = _mm512_roundscale_ps::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(v);
        // v - trunc(v) is exact; |fraction| >= 0.5 steps away from zero
        let frac = _mm512_abs_ps(_mm512_sub_ps(v, t));
        let away = _mm512_cmp_ps_mask::<_CMP_GE_OQ>(frac, _mm512_set1_ps(0.5));
        let sign = _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(i32::MIN));
        let step = _mm512_castsi512_ps(_mm512_or_si512(_mm512_castps_si512(_mm512_set1_ps(1.0)), sign));
        let r = _mm512_mask_add_ps(t, away, t, step);
        let i = _mm512_cvtps_epi32(r);
        // NaN converts to i32::MIN, whose low byte is 0, as Rust's `NaN as i8`
        let i = _mm512_mask_mov_epi32(i, _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v), _mm512_setzero_si512());
        _mm_storeu_si128(q.as_mut_ptr().add(16 * half) as *mut __m128i, _mm512_cvtepi32_epi8(i));
        sum = _mm512_add_epi32(sum, i);
    }
    _mm512_reduce_add_epi32(sum)
}

/// Dispatch one pass of `rows` (1..=ROWS_PER_PASS) activation rows over the weight tile whose
/// `kb` blocks start at `blocks[first]`; `prefetch` asks it to pull upcoming tiles into cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_kernel(
    blocks: &[TileBlock],
    first: usize,
    kb: usize,
    act: &QuantizedRows,
    r0: usize,
    rows: usize,
    prefetch: bool,
    out: *mut f32,
    stride: usize,
) {
    with_rows!(8, rows, R => tile_pass::<R>(blocks, first, kb, act, r0, prefetch, (out, stride)))
}

/// `R` activation rows against one 16-row weight tile; row `r`'s 16 outputs go to
/// `out + r * stride`. Each weight vector of a block is
/// loaded once for all `R` rows. With few rows each row keeps two integer accumulators
/// (even / odd 4-value groups) so the `vpdpbusd` dependency chains stay short; from 4 rows
/// on the rows themselves are independent chains enough. Integer sums are exact, so the split
/// changes no result bit: a row's output does not depend on `R` or on the other rows.
///
/// Weights stream from memory (a 262k-row output layer is 178 MB), and with several rows the
/// loop is busy enough that the hardware prefetcher falls behind: each block prefetches the
/// block [`PREFETCH_BLOCKS`] ahead (only on a tile's first pass of several rows; later
/// passes hit L1). A single row is left to the hardware prefetcher, which streams faster
/// alone (`deal bench kernel`: 262k × 2560 output at 1 row, 16.1-16.7 ms without against
/// 17.4-23.2 ms with, 2026-12-06).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_pass<const R: usize>(
    blocks: &[TileBlock],
    first: usize,
    kb: usize,
    act: &QuantizedRows,
    r0: usize,
    prefetch: bool,
    (out, stride): (*mut f32, usize),
) {
    use std::arch::x86_64::*;
    let split = R < 4;
    let mut acc = [_mm512_setzero_ps(); R];
    let qptr = act.qs.as_ptr();
    let base = blocks.as_ptr();
    for b in 0..kb {
        let blk = &*base.add(first + b);
        if prefetch {
            // 544 bytes: 9 cache lines
            super::prefetch_share(blocks, first + b + PREFETCH_BLOCKS, 0, 1);
        }
        let wp = blk.qs.as_ptr() as *const __m512i;
        let wd = _mm512_cvtph_ps(_mm256_loadu_si256(blk.d.as_ptr() as *const __m256i));
        let mut even = [_mm512_setzero_si512(); R];
        let mut odd = [_mm512_setzero_si512(); R];
        let mut ap = [std::ptr::null::<i32>(); R];
        for (r, p) in ap.iter_mut().enumerate() {
            *p = qptr.add((r0 + r) * act.k + b * QK) as *const i32;
        }
        for g in (0..8).step_by(2) {
            let w0 = _mm512_loadu_si512(wp.add(g));
            let w1 = _mm512_loadu_si512(wp.add(g + 1));
            for r in 0..R {
                if split {
                    even[r] = _mm512_dpbusd_epi32(even[r], w0, _mm512_set1_epi32(ap[r].add(g).read_unaligned()));
                    odd[r] = _mm512_dpbusd_epi32(odd[r], w1, _mm512_set1_epi32(ap[r].add(g + 1).read_unaligned()));
                } else {
                    even[r] = _mm512_dpbusd_epi32(even[r], w0, _mm512_set1_epi32(ap[r].add(g).read_unaligned()));
                    even[r] = _mm512_dpbusd_epi32(even[r], w1, _mm512_set1_epi32(ap[r].add(g + 1).read_unaligned()));
                }
            }
        }
        for r in 0..R {
            let bi = (r0 + r) * act.kb + b;
            let sum = if split { _mm512_add_epi32(even[r], odd[r]) } else { even[r] };
            let s = _mm512_sub_epi32(sum, _mm512_set1_epi32(128 * act.sums[bi]));
            let scale = _mm512_mul_ps(wd, _mm512_set1_ps(act.d[bi]));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[r]);
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add(r * stride), *a);
    }
}

/// [`tile_kernel`] on AVX2: `rows` (1..=4) activation rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_kernel_avx2(blocks: &[TileBlock], first: usize, kb: usize, act: &QuantizedRows, r0: usize, rows: usize, out: (*mut f32, usize)) {
    with_rows!(4, rows, R => tile_pass_avx2::<R>(blocks, first, kb, act, r0, out))
}

/// [`tile_pass`] on AVX2, one 8-row half of the tile at a time: the weights flipped back to
/// `i8` and multiplied as signed values ([`super::avx2::dot_i8_i8`]), which is the same
/// integer as the AVX-512 path's `Σ (w + 128) · a − 128 · Σ a`, so the same bits. The first
/// half (the one that streams the tile from memory) prefetches ahead even for one row: reading
/// half of each cache line, the hardware prefetcher fell behind (the 1B's output matrix at one
/// row took 21.7 ms without, 16.1 ms with; `DEAL_KERNELS=avx2 deal bench kernel`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_pass_avx2<const R: usize>(blocks: &[TileBlock], first: usize, kb: usize, act: &QuantizedRows, r0: usize, (out, stride): (*mut f32, usize)) {
    use super::avx2::{dot_i8_i8, f16x8, four};
    use std::arch::x86_64::*;
    let flip = _mm256_set1_epi8(i8::MIN);
    for half in 0..2 {
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..kb {
            let blk = &blocks[first + b];
            if half == 0 {
                super::prefetch_share(blocks, first + b + PREFETCH_BLOCKS, 0, 1);
            }
            let mut isum = [_mm256_setzero_si256(); R];
            for g in 0..8 {
                let w = _mm256_xor_si256(_mm256_loadu_si256(blk.qs.as_ptr().add(64 * g + 32 * half) as *const __m256i), flip);
                for (r, s) in isum.iter_mut().enumerate() {
                    *s = dot_i8_i8(*s, w, four(act.qs.as_ptr().add((r0 + r) * act.k + b * QK + 4 * g)));
                }
            }
            let wd = f16x8(blk.d.as_ptr().add(8 * half));
            for r in 0..R {
                let bi = (r0 + r) * act.kb + b;
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(wd, _mm256_set1_ps(act.d[bi])), acc[r]);
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * stride + 8 * half), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::quantized::QMatMul;
    use candle_core::{Device, Module, Tensor};

    #[test]
    fn matches_candle_q8_0_matmul() {
        if !available() {
            eprintln!("neither AVX-512 VNNI nor AVX2: kernel not exercised");
            return;
        }
        let dev = Device::Cpu;
        for (n, k, m) in [(40usize, 64usize, 1usize), (256, 640, 5), (33, 96, 9)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap();
            let q2 = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
            let reference = QMatMul::from_qtensor(q2).unwrap().forward(&x).unwrap();
            let packed = PackedQ8::pack(&[&q]).unwrap().unwrap();
            let got = packed.matmul(&x.flatten_all().unwrap().to_vec1::<f32>().unwrap(), m).unwrap();
            let want = reference.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst < 1e-3, "({n},{k},{m}): max abs diff {worst}");
        }
    }

    #[test]
    fn fused_pack_equals_separate_matmuls() {
        if !available() {
            return;
        }
        let dev = Device::Cpu;
        let a = QTensor::quantize(&Tensor::randn(0f32, 1.0, (48, 64), &dev).unwrap(), GgmlDType::Q8_0).unwrap();
        let b = QTensor::quantize(&Tensor::randn(0f32, 1.0, (16, 64), &dev).unwrap(), GgmlDType::Q8_0).unwrap();
        let x: Vec<f32> = (0..3 * 64).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let fused = PackedQ8::pack(&[&a, &b]).unwrap().unwrap().matmul(&x, 3).unwrap();
        let pa = PackedQ8::pack(&[&a]).unwrap().unwrap().matmul(&x, 3).unwrap();
        let pb = PackedQ8::pack(&[&b]).unwrap().unwrap().matmul(&x, 3).unwrap();
        for r in 0..3 {
            assert_eq!(&fused[r * 64..r * 64 + 48], &pa[r * 48..(r + 1) * 48]);
            assert_eq!(&fused[r * 64 + 48..(r + 1) * 64], &pb[r * 16..(r + 1) * 16]);
        }
    }

    #[test]
    fn vector_quantizer_equals_scalar() {
        if !available() {
            return;
        }
        let mut xs: Vec<f32> = (0..32).map(|i| (i as f32 - 15.5) * 0.37).collect();
        xs[3] = 2.5; // exact halves round away from zero
        xs[4] = -3.5;
        xs[5] = 0.499_999_97; // just below one half: 0, where adding 0.5 would give 1
        xs[6] = -0.499_999_97;
        for inv in [0.0f32, 1.0, 127.0 / 11.47, 9.999, 2.0] {
            let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
            let sa = quantize_block(&xs, inv, &mut a);
            let sb = unsafe { quantize_block_avx512(&xs, inv, &mut b) };
            assert_eq!((a, sa), (b, sb), "inv {inv}");
        }
        let mut odd = xs.clone();
        odd[7] = f32::NAN;
        let (mut a, mut b) = ([0i8; 32], [0i8; 32]);
        assert_eq!(quantize_block(&odd, 2.0, &mut a), unsafe { quantize_block_avx512(&odd, 2.0, &mut b) });
        assert_eq!(a, b);
        // the block maximum skips NaNs as the scalar fold does, wherever they sit
        let scalar = |v: &[f32]| v.iter().fold(0f32, |a, &x| a.max(x.abs()));
        for at in [0, 7, 16, 31] {
            let mut v = xs.clone();
            v[at] = f32::NAN;
            v[(at + 9) % 32] = -f32::INFINITY * (at % 2) as f32 - 40.0;
            assert_eq!(unsafe { abs_max_avx512(&v) }.to_bits(), scalar(&v).to_bits(), "NaN at {at}");
        }
        assert_eq!(unsafe { abs_max_avx512(&[f32::NAN; 32]) }, 0.0);
        assert_eq!(unsafe { abs_max_avx512(&xs) }, scalar(&xs));
    }

    #[test]
    fn non_q8_weights_are_declined() {
        let dev = Device::Cpu;
        let w = QTensor::quantize(&Tensor::randn(0f32, 1.0, (32, 256), &dev).unwrap(), GgmlDType::Q4K).unwrap();
        assert!(PackedQ8::pack(&[&w]).unwrap().is_none());
    }
}

