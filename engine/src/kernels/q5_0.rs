//! Q5_0, Q4_0, Q5_1 and Q4_1 weights on their stored bits, against Q8_0 activations, with
//! AVX512-VNNI (and an AVX2 path, [`super::avx2`]).
//!
//! A Q5_0 block holds 32 values of one row in 22 bytes: an f16 scale `d`, 32 fifth bits (a
//! little-endian u32 `qh`) and 16 bytes of nibbles (byte `j` holds value `j` in its low nibble
//! and value `16 + j` in its high one). A value is `d · (q − 16)` for its 5-bit `q`. Q4_0 is
//! the same without the fifth bits (18 bytes) and with `q − 8`. Q5_1 and Q4_1 add an f16 min
//! `m` after `d` (24 and 20 bytes): a value is `d · q + m`, with no offset.
//!
//! At load the blocks of 16 rows are interleaved into tiles of exactly the stored size
//! ([`TileQ5`]: 352 bytes for 16 × 22; [`TileQ4`]: 288 for 16 × 18): the nibble bytes
//! regrouped so that one 64-byte vector holds 4 bytes of each of the 16 rows, the fifth bits
//! regrouped into one 64-bit mask per `vpdpbusd` operand, and the scales kept as f16. The
//! kernel splits each vector into its low and high nibbles (values `4g..4g+4` and
//! `16+4g..16+4g+4` of every row), sets the fifth bit where the mask says (a masked byte add),
//! and multiplies the unsigned 5-bit values with the activations quantized per 32 values
//! (Q8_0, as ggml's Q5_0 dot product); the offset comes off once per block as
//! `16 · Σ activations` (Q4_0: 8), and the min of Q5_1/Q4_1 comes in as `m · d_a · Σ
//! activations`. Each weight vector is reused for up to 8 activation rows.
//!
//! These tiles run inside [`super::q8_0::PackedQ8`], which holds Q8_0, Q5_0 and Q4_0 tiles side
//! by side (the projections of one layer often mix them) against one quantization of the
//! activations. Every row's result is a fixed sequence of exact integer sums and the same
//! float operations in the same order whatever the other rows are: batch-invariant, as the
//! other kernels.

use super::q8_0::QuantizedRows;
use super::TILE;

/// Values per block.
const QK: usize = 32;
/// Stored bytes of a Q5_0 block.
pub(super) const Q5_0_BYTES: usize = 22;
/// Stored bytes of a Q4_0 block.
pub(super) const Q4_0_BYTES: usize = 18;
/// Stored bytes of a Q5_1 block.
pub(super) const Q5_1_BYTES: usize = 24;
/// Stored bytes of a Q4_1 block.
pub(super) const Q4_1_BYTES: usize = 20;

/// One 32-value Q5_0 block of 16 rows (352 bytes: the 16 stored blocks' size).
#[repr(C, align(32))]
#[derive(Clone)]
pub(super) struct TileQ5 {
    /// `qs[g][row][i]` = nibble byte `4g + i` of `row`'s block.
    qs: [u8; 16 * TILE],
    /// `qh[2g + half]`, bit `4·row + i`: the fifth bit of value `16·half + 4g + i` of `row`.
    qh: [u64; 8],
    /// Per-row `d` as f16 bits.
    d: [u16; TILE],
}

/// One 32-value Q4_0 block of 16 rows (288 bytes: the 16 stored blocks' size).
#[repr(C, align(32))]
#[derive(Clone)]
pub(super) struct TileQ4 {
    /// `qs[g][row][i]` = nibble byte `4g + i` of `row`'s block.
    qs: [u8; 16 * TILE],
    /// Per-row `d` as f16 bits.
    d: [u16; TILE],
}

/// One 32-value Q5_1 block of 16 rows: the Q5_0 tile of its bits and scales, and the 16 mins
/// (384 bytes: the 16 stored blocks' size).
#[repr(C, align(32))]
#[derive(Clone)]
pub(super) struct TileQ5_1 {
    base: TileQ5,
    /// Per-row `m` as f16 bits.
    m: [u16; TILE],
}

/// One 32-value Q4_1 block of 16 rows: the Q4_0 tile of its bits and scales, and the 16 mins
/// (320 bytes: the 16 stored blocks' size).
#[repr(C, align(32))]
#[derive(Clone)]
pub(super) struct TileQ4_1 {
    base: TileQ4,
    /// Per-row `m` as f16 bits.
    m: [u16; TILE],
}

/// What the kernel needs of a tile: its nibbles, scales, (Q5_0/Q5_1) fifth bits and (Q4_1/Q5_1)
/// mins.
pub(super) trait NibbleTile: Clone + Send + Sync {
    /// Whether values have a fifth bit.
    const FIFTH_BIT: bool;
    /// The value's offset: a weight is `d · (q − OFFSET)` (0 for the types with a min).
    const OFFSET: i32;
    /// Whether a weight is `d · q + m` (Q5_1, Q4_1).
    const MIN: bool = false;
    /// Stored bytes of one row's block.
    const STORED_BYTES: usize;
    /// A tile with every row empty (zero scales).
    fn empty() -> Self;
    /// Copy row `lane`'s stored block `src` in.
    fn fill(&mut self, lane: usize, src: &[u8]);
    /// The 256 nibble bytes.
    fn qs(&self) -> *const u8;
    /// The 16 f16 scales.
    fn d(&self) -> *const u16;
    /// The fifth-bit mask of operand `2g + half` (0 without fifth bits).
    fn fifth(&self, operand: usize) -> u64;
    /// The 16 f16 mins (the scales where [`Self::MIN`] is false; never read then).
    fn m(&self) -> *const u16 {
        self.d()
    }
}

/// Regroup a stored block's 32 fifth bits `qh` into row `lane` of a tile's 8 masks.
fn fill_fifth(masks: &mut [u64; 8], lane: usize, qh: u32) {
    for g in 0..4 {
        for half in 0..2 {
            let bits = (qh >> (16 * half + 4 * g)) & 0xF;
            let mask = &mut masks[2 * g + half];
            *mask = (*mask & !(0xF << (4 * lane))) | (u64::from(bits) << (4 * lane));
        }
    }
}

/// Copy the 16 nibble bytes of a stored block into row `lane` of a tile's `qs`.
fn fill_nibbles(qs: &mut [u8; 16 * TILE], lane: usize, nibbles: &[u8]) {
    for (g, four) in nibbles.chunks_exact(4).enumerate() {
        let at = (g * TILE + lane) * 4;
        qs[at..at + 4].copy_from_slice(four);
    }
}

impl NibbleTile for TileQ5 {
    const FIFTH_BIT: bool = true;
    const OFFSET: i32 = 16;
    const STORED_BYTES: usize = Q5_0_BYTES;

    fn empty() -> Self {
        Self { qs: [0; 16 * TILE], qh: [0; 8], d: [0; TILE] }
    }

    fn fill(&mut self, lane: usize, src: &[u8]) {
        self.d[lane] = u16::from_le_bytes([src[0], src[1]]);
        fill_fifth(&mut self.qh, lane, u32::from_le_bytes([src[2], src[3], src[4], src[5]]));
        fill_nibbles(&mut self.qs, lane, &src[6..22]);
    }

    fn qs(&self) -> *const u8 {
        self.qs.as_ptr()
    }

    fn d(&self) -> *const u16 {
        self.d.as_ptr()
    }

    #[inline(always)]
    fn fifth(&self, operand: usize) -> u64 {
        self.qh[operand]
    }
}

impl NibbleTile for TileQ4 {
    const FIFTH_BIT: bool = false;
    const OFFSET: i32 = 8;
    const STORED_BYTES: usize = Q4_0_BYTES;

    fn empty() -> Self {
        Self { qs: [0; 16 * TILE], d: [0; TILE] }
    }

    fn fill(&mut self, lane: usize, src: &[u8]) {
        self.d[lane] = u16::from_le_bytes([src[0], src[1]]);
        fill_nibbles(&mut self.qs, lane, &src[2..18]);
    }

    fn qs(&self) -> *const u8 {
        self.qs.as_ptr()
    }

    fn d(&self) -> *const u16 {
        self.d.as_ptr()
    }

    #[inline(always)]
    fn fifth(&self, _: usize) -> u64 {
        0
    }
}

impl NibbleTile for TileQ5_1 {
    const FIFTH_BIT: bool = true;
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    const STORED_BYTES: usize = Q5_1_BYTES;

    fn empty() -> Self {
        Self { base: TileQ5::empty(), m: [0; TILE] }
    }

    fn fill(&mut self, lane: usize, src: &[u8]) {
        self.base.d[lane] = u16::from_le_bytes([src[0], src[1]]);
        self.m[lane] = u16::from_le_bytes([src[2], src[3]]);
        fill_fifth(&mut self.base.qh, lane, u32::from_le_bytes([src[4], src[5], src[6], src[7]]));
        fill_nibbles(&mut self.base.qs, lane, &src[8..24]);
    }

    fn qs(&self) -> *const u8 {
        self.base.qs()
    }

    fn d(&self) -> *const u16 {
        self.base.d()
    }

    #[inline(always)]
    fn fifth(&self, operand: usize) -> u64 {
        self.base.fifth(operand)
    }

    fn m(&self) -> *const u16 {
        self.m.as_ptr()
    }
}

impl NibbleTile for TileQ4_1 {
    const FIFTH_BIT: bool = false;
    const OFFSET: i32 = 0;
    const MIN: bool = true;
    const STORED_BYTES: usize = Q4_1_BYTES;

    fn empty() -> Self {
        Self { base: TileQ4::empty(), m: [0; TILE] }
    }

    fn fill(&mut self, lane: usize, src: &[u8]) {
        self.base.d[lane] = u16::from_le_bytes([src[0], src[1]]);
        self.m[lane] = u16::from_le_bytes([src[2], src[3]]);
        fill_nibbles(&mut self.base.qs, lane, &src[4..20]);
    }

    fn qs(&self) -> *const u8 {
        self.base.qs()
    }

    fn d(&self) -> *const u16 {
        self.base.d()
    }

    #[inline(always)]
    fn fifth(&self, _: usize) -> u64 {
        0
    }

    fn m(&self) -> *const u16 {
        self.m.as_ptr()
    }
}

// every tile is exactly its 16 stored blocks
const _: () = assert!(std::mem::size_of::<TileQ5>() == TILE * Q5_0_BYTES && std::mem::size_of::<TileQ4>() == TILE * Q4_0_BYTES);
const _: () = assert!(std::mem::size_of::<TileQ5_1>() == TILE * Q5_1_BYTES && std::mem::size_of::<TileQ4_1>() == TILE * Q4_1_BYTES);

/// Repack `rows` (each `k / 32` stored blocks of `T`) into tiles of 16 rows.
pub(super) fn pack<T: NibbleTile>(rows: &super::SourceRows, k: usize) -> Vec<T> {
    super::pack_tiles(rows, k / QK, T::STORED_BYTES, T::empty(), |blk, lane, src| blk.fill(lane, src))
}

/// How far ahead of the block being multiplied a first pass of several rows prefetches, in
/// tile-blocks: about 8 KiB, as the Q8_0 kernel.
fn prefetch_blocks<T>() -> usize {
    (8192 / std::mem::size_of::<T>()).max(1)
}

/// Dispatch one pass of `rows` (1..=8) activation rows over the tile whose `kb` blocks start
/// at `blocks[first]`; `prefetch` (a first pass of several rows) pulls upcoming tiles into
/// cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn tile_kernel<T: NibbleTile>(
    blocks: &[T],
    first: usize,
    kb: usize,
    act: &QuantizedRows,
    r0: usize,
    rows: usize,
    prefetch: bool,
    out: *mut f32,
    stride: usize,
) {
    with_rows!(8, rows, R => tile_pass::<T, R>(blocks, first, kb, act, r0, prefetch, (out, stride)))
}

/// `R` activation rows against one 16-row tile; row `r`'s 16 outputs go to
/// `out + r * stride`. Below 4 rows each row keeps the low and the high nibbles in separate
/// `vpdpbusd` chains; from 4 rows on the rows themselves are chains enough. Integer sums are
/// exact, so a row's output does not depend on `R` or on the other rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_pass<T: NibbleTile, const R: usize>(
    blocks: &[T],
    first: usize,
    kb: usize,
    act: &QuantizedRows,
    r0: usize,
    prefetch: bool,
    (out, stride): (*mut f32, usize),
) {
    use std::arch::x86_64::*;
    let split = R < 4;
    let nib = _mm512_set1_epi8(0x0F);
    let fifth = _mm512_set1_epi8(0x10);
    let ahead = prefetch_blocks::<T>();
    let mut acc = [_mm512_setzero_ps(); R];
    let qptr = act.qs.as_ptr();
    let base = blocks.as_ptr();
    for b in 0..kb {
        let blk = &*base.add(first + b);
        if prefetch {
            super::prefetch_share(blocks, first + b + ahead, 0, 1);
        }
        let wp = blk.qs() as *const __m512i;
        let mut ap = [std::ptr::null::<i8>(); R];
        for (r, p) in ap.iter_mut().enumerate() {
            *p = qptr.add((r0 + r) * act.k + b * QK);
        }
        let mut lo_acc = [_mm512_setzero_si512(); R];
        let mut hi_acc = [_mm512_setzero_si512(); R];
        for g in 0..4 {
            let v = _mm512_loadu_si512(wp.add(g));
            let mut lo = _mm512_and_si512(v, nib);
            let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nib);
            if T::FIFTH_BIT {
                lo = _mm512_mask_add_epi8(lo, blk.fifth(2 * g), lo, fifth);
                hi = _mm512_mask_add_epi8(hi, blk.fifth(2 * g + 1), hi, fifth);
            }
            for r in 0..R {
                let a = ap[r].add(4 * g);
                let alo = _mm512_set1_epi32((a as *const i32).read_unaligned());
                let ahi = _mm512_set1_epi32((a.add(16) as *const i32).read_unaligned());
                lo_acc[r] = _mm512_dpbusd_epi32(lo_acc[r], lo, alo);
                if split {
                    hi_acc[r] = _mm512_dpbusd_epi32(hi_acc[r], hi, ahi);
                } else {
                    lo_acc[r] = _mm512_dpbusd_epi32(lo_acc[r], hi, ahi);
                }
            }
        }
        let wd = _mm512_cvtph_ps(_mm256_loadu_si256(blk.d() as *const __m256i));
        let wm = if T::MIN { _mm512_cvtph_ps(_mm256_loadu_si256(blk.m() as *const __m256i)) } else { wd };
        for r in 0..R {
            let bi = (r0 + r) * act.kb + b;
            let sum = if split { _mm512_add_epi32(lo_acc[r], hi_acc[r]) } else { lo_acc[r] };
            let s = _mm512_sub_epi32(sum, _mm512_set1_epi32(T::OFFSET * act.sums[bi]));
            let scale = _mm512_mul_ps(wd, _mm512_set1_ps(act.d[bi]));
            acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), scale, acc[r]);
            if T::MIN {
                // m · d_a · Σ a
                acc[r] = _mm512_fmadd_ps(wm, _mm512_set1_ps(act.d[bi] * act.sums[bi] as f32), acc[r]);
            }
        }
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add(r * stride), *a);
    }
}

/// [`tile_kernel`] on AVX2: `rows` (1..=4) activation rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn tile_kernel_avx2<T: NibbleTile>(blocks: &[T], first: usize, kb: usize, act: &QuantizedRows, r0: usize, rows: usize, out: (*mut f32, usize)) {
    with_rows!(4, rows, R => tile_pass_avx2::<T, R>(blocks, first, kb, act, r0, out))
}

/// [`tile_pass`] on AVX2, one 8-row half of the tile at a time (the 32-byte half of each
/// nibble vector, the 32-bit half of each fifth-bit mask): the same integer sums, so the same
/// bits. Products are added in i16 lanes in chains of [`super::avx2::chain_length`] before
/// widening, and the first half prefetches the tile ahead whatever the rows (see the Q8_0
/// pass).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_pass_avx2<T: NibbleTile, const R: usize>(blocks: &[T], first: usize, kb: usize, act: &QuantizedRows, r0: usize, (out, stride): (*mut f32, usize)) {
    use super::avx2::{chain_length, f16x8, fifth_bits, four, pairs_u8_i8, widen};
    use std::arch::x86_64::*;
    let nib = _mm256_set1_epi8(0x0F);
    // products added in i16 before widening: 8 of 4-bit weights, 4 of 5-bit ones
    let chain = if T::FIFTH_BIT { chain_length(5) } else { chain_length(4) };
    let ahead = prefetch_blocks::<T>();
    for half in 0..2 {
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..kb {
            let blk = &blocks[first + b];
            if half == 0 {
                super::prefetch_share(blocks, first + b + ahead, 0, 1);
            }
            let mut isum = [_mm256_setzero_si256(); R];
            let mut pairs = [_mm256_setzero_si256(); R];
            for g in 0..4 {
                let v = _mm256_loadu_si256(blk.qs().add(64 * g + 32 * half) as *const __m256i);
                let mut lo = _mm256_and_si256(v, nib);
                let mut hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nib);
                if T::FIFTH_BIT {
                    lo = _mm256_or_si256(lo, fifth_bits((blk.fifth(2 * g) >> (32 * half)) as u32));
                    hi = _mm256_or_si256(hi, fifth_bits((blk.fifth(2 * g + 1) >> (32 * half)) as u32));
                }
                for (r, p) in pairs.iter_mut().enumerate() {
                    let a = act.qs.as_ptr().add((r0 + r) * act.k + b * QK + 4 * g);
                    *p = pairs_u8_i8(*p, lo, four(a));
                    *p = pairs_u8_i8(*p, hi, four(a.add(16)));
                }
                // two products per group
                if (2 * g + 2) % chain == 0 {
                    for r in 0..R {
                        isum[r] = widen(isum[r], pairs[r]);
                        pairs[r] = _mm256_setzero_si256();
                    }
                }
            }
            let wd = f16x8(blk.d().add(8 * half));
            let wm = if T::MIN { f16x8(blk.m().add(8 * half)) } else { wd };
            for r in 0..R {
                let bi = (r0 + r) * act.kb + b;
                let s = _mm256_sub_epi32(isum[r], _mm256_set1_epi32(T::OFFSET * act.sums[bi]));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(wd, _mm256_set1_ps(act.d[bi])), acc[r]);
                if T::MIN {
                    acc[r] = _mm256_fmadd_ps(wm, _mm256_set1_ps(act.d[bi] * act.sums[bi] as f32), acc[r]);
                }
            }
        }
        for (r, a) in acc.iter().enumerate() {
            _mm256_storeu_ps(out.add(r * stride + 8 * half), *a);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::q8_0::{available, PackedQ8};
    use super::*;
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    use candle_core::{Device, Module, Tensor};

    /// Σ over blocks of d_a · Σ w · q_a, in f64 with the dequantized weights: the kernel's
    /// arithmetic up to float rounding.
    fn reference(w: &QTensor, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = w.shape().dims2().unwrap();
        let wd = w.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let act = QuantizedRows::new(x, m, k);
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for o in 0..n {
                let mut s = 0f64;
                for b in 0..k / QK {
                    let bs: f64 = (0..QK).map(|l| wd[o * k + b * QK + l] as f64 * act.qs[r * k + b * QK + l] as f64).sum();
                    s += bs * act.d[r * (k / QK) + b] as f64;
                }
                out[r * n + o] = s as f32;
            }
        }
        out
    }

    fn random(n: usize, k: usize, dtype: GgmlDType) -> (Tensor, QTensor) {
        let w = Tensor::randn(0f32, 1.0, (n, k), &Device::Cpu).unwrap();
        let q = QTensor::quantize(&w, dtype).unwrap();
        (w, q)
    }

    #[test]
    fn matches_the_q5_0_and_q4_0_dot_products() {
        if !available() {
            eprintln!("neither AVX-512 VNNI nor AVX2: kernel not exercised");
            return;
        }
        let dev = Device::Cpu;
        for dtype in [GgmlDType::Q5_0, GgmlDType::Q4_0, GgmlDType::Q5_1, GgmlDType::Q4_1] {
            for (n, k, m) in [(16usize, 32usize, 1usize), (40, 640, 3), (256, 1152, 5), (33, 96, 9)] {
                let (w, q) = random(n, k, dtype);
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let packed = PackedQ8::pack(&[&q]).unwrap().unwrap();
                assert_eq!(packed.bytes(), n.div_ceil(16) * 16 * k / 32 * dtype.type_size(), "tiles hold the stored bytes");
                let got = packed.matmul(&x, m).unwrap();
                let want = reference(&q, &x, m);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-4 * scale.max(1.0), "{dtype:?} ({n},{k},{m}): max abs diff {worst} (outputs up to {scale})");
                // and candle's own matmul on the same stored weights agrees up to float order
                // (candle's Q5_0 and Q4_0 dot products take an even number of blocks only)
                if k % 64 != 0 {
                    continue;
                }
                let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
                let theirs = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap().forward(&xt).unwrap();
                let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let off = got.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(off <= 1e-3 * scale.max(1.0), "{dtype:?} ({n},{k},{m}): {off} from candle's result");
            }
        }
    }

    #[test]
    fn fifth_bits_land_on_their_values() {
        if !available() {
            return;
        }
        // one row whose values are all 0 but one: the kernel output is d · (q − 16) · x at it
        let (n, k) = (16usize, 64usize);
        for at in [0usize, 5, 15, 16, 21, 31, 40, 63] {
            let mut w = vec![0f32; n * k];
            w[3 * k + at] = -1.0; // q = 0 after scaling: the fifth bit is clear there
            w[3 * k + (at + 1) % k] = 1.0;
            let wt = Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap();
            let q = QTensor::quantize(&wt, GgmlDType::Q5_0).unwrap();
            let packed = PackedQ8::pack(&[&q]).unwrap().unwrap();
            let want_w = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            for probe in [at, (at + 1) % k, (at + 7) % k] {
                let mut x = vec![0f32; k];
                x[probe] = 1.0;
                let got = packed.matmul(&x, 1).unwrap();
                assert!((got[3] - want_w[3 * k + probe]).abs() < 1e-2, "value {probe} (row with ±1 at {at}): {} vs {}", got[3], want_w[3 * k + probe]);
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_and_in_any_batch() {
        if !available() {
            return;
        }
        let (n, k) = (48, 640);
        for dtype in [GgmlDType::Q5_0, GgmlDType::Q4_0, GgmlDType::Q5_1, GgmlDType::Q4_1] {
            let p = PackedQ8::pack(&[&random(n, k, dtype).1]).unwrap().unwrap();
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (11, k), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let all = p.matmul(&x, 11).unwrap();
            for r in 0..11 {
                let alone = p.matmul(&x[r * k..(r + 1) * k], 1).unwrap();
                assert_eq!(&all[r * n..(r + 1) * n], alone.as_slice(), "{dtype:?} row {r}");
            }
        }
    }

    #[test]
    fn mixed_types_fuse_into_one_matmul() {
        if !available() {
            return;
        }
        let k = 640;
        let (a, b, c) = (random(48, k, GgmlDType::Q5_0).1, random(32, k, GgmlDType::Q8_0).1, random(20, k, GgmlDType::Q4_0).1);
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (3, k), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let fused = PackedQ8::pack(&[&a, &b, &c]).unwrap().unwrap();
        assert_eq!(fused.n(), 100);
        let got = fused.matmul(&x, 3).unwrap();
        let mut at = 0;
        for part in [&a, &b, &c] {
            let alone = PackedQ8::pack(&[part]).unwrap().unwrap().matmul(&x, 3).unwrap();
            let w = part.shape().dims2().unwrap().0;
            for r in 0..3 {
                assert_eq!(&got[r * 100 + at..r * 100 + at + w], &alone[r * w..(r + 1) * w], "{:?} row {r}", part.dtype());
            }
            at += w;
        }
        // a type change off a tile boundary cannot share the output tiles: declined
        let odd = random(40, k, GgmlDType::Q5_0).1;
        assert!(PackedQ8::pack(&[&odd, &b]).unwrap().is_none());
        assert!(PackedQ8::pack(&[&b, &odd]).unwrap().is_some(), "the last part may end anywhere");
        // and a type without a kernel here is left to the other kernels
        assert!(PackedQ8::pack(&[&random(16, 256, GgmlDType::Q4K).1]).unwrap().is_none());
    }

    #[test]
    fn the_avx2_path_gives_the_avx512_bits() {
        use super::super::Isa;
        if !Isa::Avx2.supported() {
            eprintln!("AVX2 not available: its path not exercised");
            return;
        }
        let k = 640;
        let parts = [
            random(48, k, GgmlDType::Q5_0).1,
            random(32, k, GgmlDType::Q8_0).1,
            random(16, k, GgmlDType::Q5_1).1,
            random(32, k, GgmlDType::Q4_1).1,
            random(20, k, GgmlDType::Q4_0).1,
        ];
        for m in [1usize, 2, 3, 4, 5, 9] {
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            for p in &parts {
                let packed = PackedQ8::pack(&[p]).unwrap().unwrap();
                let got = packed.matmul_with(&x, m, Isa::Avx2).unwrap();
                let want = reference(p, &x, m);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-4 * scale.max(1.0), "{:?} m={m}: max abs diff {worst}", p.dtype());
                if Isa::Avx512Vnni.supported() {
                    assert_eq!(got, packed.matmul_with(&x, m, Isa::Avx512Vnni).unwrap(), "{:?} m={m}", p.dtype());
                }
            }
            let fused = PackedQ8::pack(&parts.iter().collect::<Vec<_>>()).unwrap().unwrap();
            let got = fused.matmul_with(&x, m, Isa::Avx2).unwrap();
            if Isa::Avx512Vnni.supported() {
                assert_eq!(got, fused.matmul_with(&x, m, Isa::Avx512Vnni).unwrap(), "fused m={m}");
            }
        }
    }
}
