//! Batched Q4_K and Q5_K matmuls with AVX512-VNNI (and an AVX2 path, [`super::avx2`]), on the
//! weights as stored (4 or 5 bits per value).
//!
//! A Q4_K block holds 256 values of one row in 144 bytes: two f16 super-scales (`d`, `dmin`),
//! eight 6-bit sub-block scales and mins packed in 12 bytes, and 128 bytes of 4-bit values
//! (byte `l` of 64-value chunk `c` holds value `64c + l` in its low nibble and `64c + 32 + l`
//! in its high nibble). A value is `d·sc_j·q − dmin·m_j` for its 32-value sub-block `j`.
//!
//! At load the blocks of 16 rows are interleaved into tiles ([`TileBlock`]): the 4-bit
//! bytes are only regrouped (4 consecutive bytes of each of the 16 rows per 64-byte vector),
//! the scales and mins unpacked to one byte each, the super-scales kept as f16: 148 bytes per
//! row-block instead of 144 (+2.8%). The kernel then splits each 64-byte vector into its low
//! and high nibbles (two `vpdpbusd` operands: 4 values of 16 rows each, unsigned 0..15),
//! multiplies them with activations quantized per 256 values (Q8_K, as ggml's Q4_K dot
//! product), applies the sub-block scales and mins in integers, and the super-scales once
//! per block. Each weight vector is reused for up to [`ROWS_PER_PASS`] activation rows.
//!
//! Q5_K is Q4_K with a fifth bit per value (176-byte blocks: 32 bytes of fifth bits between
//! the scales and the nibbles; bit `2c` of byte `l` belongs to value `64c + l`, bit `2c + 1` to
//! value `64c + 32 + l`). Its tiles ([`TileQ5K`]) are the Q4_K tile plus one 64-bit mask per
//! `vpdpbusd` operand (180 bytes per row-block instead of 176, +2.3%), and the same kernel
//! adds 16 where a mask has a fifth bit (one masked byte add per operand).
//!
//! Every row's result is a fixed sequence of exact integer sums and the same float
//! operations in the same order whatever the other rows are: the kernel is batch-invariant,
//! like the Q8_0 one.

use candle_core::quantized::{GgmlDType, QTensor};

use super::q8_k::{Q8KRows, QK_K};
use crate::{Error, Result};

const BLOCK_BYTES: usize = 144;
const Q5K_BLOCK_BYTES: usize = 176;
use super::TILE;
/// Activation rows processed per pass over a weight tile: up to 4 rows keep both nibble
/// chains of every row in registers; 5 to 8 rows take one sub-block at a time (both in
/// [`tile_pass`]), so that a tile's weights stream from memory once for 8 rows.
pub const ROWS_PER_PASS: usize = 8;
/// On the first pass of several rows over a tile, the kernel prefetches the tile-block this
/// many blocks ahead (37 cache lines, spread over the block's steps). A pass of several
/// rows is busy enough between loads that the hardware prefetcher falls behind; one row is
/// left to the hardware prefetcher, which streams faster alone, and later passes read the
/// tile from L1/L2. On the 4B's shapes at 4-8 rows this took 10-35% off (`deal bench kernel`;
/// 2 blocks ahead measured the same or worse).
const PREFETCH_BLOCKS: usize = 1;

/// One 256-value block of 16 rows.
#[repr(C, align(64))]
#[derive(Clone)]
struct TileBlock {
    /// `qs[c][g][row][i]` = byte `32c + 4g + i` of `row`'s block: 4 chunks × 8 groups × 16
    /// rows × 4 bytes.
    qs: [u8; 128 * TILE],
    /// `sc[j][row]`: 6-bit scale of sub-block `j`.
    sc: [u8; 8 * TILE],
    /// `m[j][row]`: 6-bit min of sub-block `j`.
    m: [u8; 8 * TILE],
    /// Per-row `d` as f16 bits.
    d: [u16; TILE],
    /// Per-row `dmin` as f16 bits.
    dmin: [u16; TILE],
}

/// One 256-value Q5_K block of 16 rows: the Q4_K tile of its low four bits, and the fifth
/// bits as one mask per `vpdpbusd` operand.
#[repr(C, align(64))]
#[derive(Clone)]
struct TileQ5K {
    low: TileBlock,
    /// `qh[(8c + g) * 2 + half]`, bit `4·row + i`: the fifth bit of value `64c + 32·half + 4g + i`
    /// of `row`.
    qh: [u64; 64],
}

/// What the kernel needs of a tile: the Q4_K part, and the fifth bits of Q5_K.
trait KTile: Clone + Send + Sync {
    /// Whether values have a fifth bit.
    const FIFTH_BIT: bool;
    /// The nibbles, scales and mins.
    fn low(&self) -> &TileBlock;
    /// The fifth-bit mask of operand `(8c + g) * 2 + half` (0 without fifth bits).
    fn fifth(&self, operand: usize) -> u64;
}

impl KTile for TileBlock {
    const FIFTH_BIT: bool = false;

    #[inline(always)]
    fn low(&self) -> &TileBlock {
        self
    }

    #[inline(always)]
    fn fifth(&self, _: usize) -> u64 {
        0
    }
}

impl KTile for TileQ5K {
    const FIFTH_BIT: bool = true;

    #[inline(always)]
    fn low(&self) -> &TileBlock {
        &self.low
    }

    #[inline(always)]
    fn fifth(&self, operand: usize) -> u64 {
        self.qh[operand]
    }
}

impl TileBlock {
    const EMPTY: TileBlock = TileBlock { qs: [0; 128 * TILE], sc: [0; 8 * TILE], m: [0; 8 * TILE], d: [0; TILE], dmin: [0; TILE] };

    /// Copy row `lane` in: `head` is a stored block's first 16 bytes (`d`, `dmin`, the packed
    /// scales and mins), `qs` its 128 nibble bytes.
    fn fill(&mut self, lane: usize, head: &[u8], qs: &[u8]) {
        self.d[lane] = u16::from_le_bytes([head[0], head[1]]);
        self.dmin[lane] = u16::from_le_bytes([head[2], head[3]]);
        for j in 0..8 {
            let (sc, m) = scale_min(j, &head[4..16]);
            self.sc[j * TILE + lane] = sc;
            self.m[j * TILE + lane] = m;
        }
        for c in 0..4 {
            for g in 0..8 {
                let at = ((c * 8 + g) * TILE + lane) * 4;
                self.qs[at..at + 4].copy_from_slice(&qs[32 * c + 4 * g..32 * c + 4 * g + 4]);
            }
        }
    }
}

impl TileQ5K {
    /// Copy row `lane`'s stored Q5_K block (176 bytes) in.
    fn fill(&mut self, lane: usize, src: &[u8]) {
        self.low.fill(lane, &src[..16], &src[48..176]);
        let qh = &src[16..48];
        for c in 0..4 {
            for g in 0..8 {
                for half in 0..2 {
                    let bit = 2 * c + half;
                    let nibble = (0..4).fold(0u64, |acc, i| acc | (u64::from((qh[4 * g + i] >> bit) & 1) << i));
                    let mask = &mut self.qh[(8 * c + g) * 2 + half];
                    *mask = (*mask & !(0xF << (4 * lane))) | (nibble << (4 * lane));
                }
            }
        }
    }
}

/// Q4_K weights `[n, k]` repacked for the VNNI kernel.
pub struct PackedQ4K {
    n: usize,
    k: usize,
    blocks: Vec<TileBlock>,
}

/// Q5_K weights `[n, k]` repacked for the VNNI kernel.
pub struct PackedQ5K {
    n: usize,
    k: usize,
    blocks: Vec<TileQ5K>,
}

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    super::q8_0::available()
}

/// The 6-bit scale and min of sub-block `j` from a Q4_K block's 12 packed bytes (ggml's
/// `get_scale_min_k4`).
fn scale_min(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

impl PackedQ4K {
    /// Repack Q4_K weights; several tensors with the same `k` are stacked along `n` (fused
    /// projections). `None` if a tensor is not Q4_K on the CPU, or the CPU has neither AVX-512 VNNI nor AVX2.
    pub fn pack(ts: &[&QTensor]) -> Result<Option<Self>> {
        super::with_stored(ts, Self::pack_stored)
    }

    /// [`Self::pack`] on stored bytes (the memory-mapped file's, at load).
    pub fn pack_stored(parts: &[super::StoredWeight]) -> Result<Option<Self>> {
        if !available() {
            return Ok(None);
        }
        super::with_stacked_rows(parts, GgmlDType::Q4K, |rows, k| {
            let blocks = super::pack_tiles(rows, k / QK_K, BLOCK_BYTES, TileBlock::EMPTY, |blk, lane, src| blk.fill(lane, &src[..16], &src[16..]));
            Self { n: rows.len(), k, blocks }
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
        self.blocks.len() * std::mem::size_of::<TileBlock>()
    }

    /// `dst[m, n] = lhs[m, k] · Wᵀ`.
    pub fn matmul(&self, lhs: &[f32], m: usize) -> Result<Vec<f32>> {
        self.matmul_with(lhs, m, super::isa().ok_or_else(|| Error::invalid("no packed-kernel instruction set on this CPU"))?)
    }

    /// [`Self::matmul`] on the kernels of `isa` (an error if this CPU cannot run them).
    pub fn matmul_with(&self, lhs: &[f32], m: usize, isa: super::Isa) -> Result<Vec<f32>> {
        matmul_tiles(&self.blocks, self.n, self.k, lhs, m, isa)
    }
}

impl PackedQ5K {
    /// Repack Q5_K weights; several tensors with the same `k` are stacked along `n` (fused
    /// projections). `None` if a tensor is not Q5_K on the CPU, or the CPU has neither AVX-512 VNNI nor AVX2.
    pub fn pack(ts: &[&QTensor]) -> Result<Option<Self>> {
        super::with_stored(ts, Self::pack_stored)
    }

    /// [`Self::pack`] on stored bytes (the memory-mapped file's, at load).
    pub fn pack_stored(parts: &[super::StoredWeight]) -> Result<Option<Self>> {
        if !available() {
            return Ok(None);
        }
        super::with_stacked_rows(parts, GgmlDType::Q5K, |rows, k| {
            let empty = TileQ5K { low: TileBlock::EMPTY, qh: [0; 64] };
            let blocks = super::pack_tiles(rows, k / QK_K, Q5K_BLOCK_BYTES, empty, |blk, lane, src| blk.fill(lane, src));
            Self { n: rows.len(), k, blocks }
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
        self.blocks.len() * std::mem::size_of::<TileQ5K>()
    }

    /// `dst[m, n] = lhs[m, k] · Wᵀ`.
    pub fn matmul(&self, lhs: &[f32], m: usize) -> Result<Vec<f32>> {
        self.matmul_with(lhs, m, super::isa().ok_or_else(|| Error::invalid("no packed-kernel instruction set on this CPU"))?)
    }

    /// [`Self::matmul`] on the kernels of `isa` (an error if this CPU cannot run them).
    pub fn matmul_with(&self, lhs: &[f32], m: usize, isa: super::Isa) -> Result<Vec<f32>> {
        matmul_tiles(&self.blocks, self.n, self.k, lhs, m, isa)
    }
}

/// `dst[m, n] = lhs[m, k] · Wᵀ` on packed tiles of either type, with the kernels of `isa`.
fn matmul_tiles<T: KTile>(blocks: &[T], n: usize, k: usize, lhs: &[f32], m: usize, isa: super::Isa) -> Result<Vec<f32>> {
    let isa = super::check_isa(isa)?;
    if lhs.len() != m * k {
        return Err(Error::invalid(format!("lhs has {} values, expected {m} x {k}", lhs.len())));
    }
    let act = Q8KRows::new(lhs, m, k);
    let kb = k / QK_K;
    let dst = super::tiled_matmul(n, m, isa.rows_per_pass(), |t, r0, rows, first, out, stride| {
        // Q5_K tiles are prefetched at one row too: the hardware prefetcher does not follow
        // their two streams per tile (nibbles, then masks), and one row ran at 10-13 GB/s
        // without against 27-47 GB/s with (`deal bench kernel --synthetic gemma3:4b --types
        // q5_k --rows 1`, two interleaved rounds)
        let prefetch = first && (rows > 1 || T::FIFTH_BIT);
        // SAFETY: `check_isa` confirmed the CPU runs `isa`; `out` has `rows` rows of 16
        // floats at `stride`.
        #[cfg(target_arch = "x86_64")]
        unsafe {
            match isa {
                super::Isa::Avx512Vnni => tile_kernel(blocks, t * kb, kb, &act, r0, rows, prefetch, out, stride),
                super::Isa::Avx2 => tile_kernel_avx2(blocks, t * kb, kb, &act, r0, rows, (out, stride)),
            }
        };
    });
    Ok(dst)
}

/// Dispatch one pass of `rows` (1..=ROWS_PER_PASS) activation rows over one weight tile;
/// `prefetch` (a first pass of several rows) pulls the tile-blocks ahead into cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_kernel<T: KTile>(
    blocks: &[T],
    first: usize,
    kb: usize,
    act: &Q8KRows,
    r0: usize,
    rows: usize,
    prefetch: bool,
    out: *mut f32,
    stride: usize,
) {
    let ahead = if prefetch { PREFETCH_BLOCKS } else { 0 };
    with_rows!(8, rows, R => tile_pass::<T, R>(blocks, first, kb, act, r0, ahead, (out, stride)))
}

/// `R` activation rows against one 16-row weight tile; row `r`'s 16 outputs go to
/// `out + r * stride`. Up to 4 rows, low and high nibbles (sub-blocks `2c` and `2c + 1`)
/// accumulate in separate chains, so even one row keeps two `vpdpbusd` chains in flight.
/// 5 to 8 rows take the low nibbles of a chunk, then its high nibbles, one chain per row, so
/// `R` sub-block sums, `R` integer block sums and `R` float accumulators fit the 32 vector
/// registers. Both add up the same exact integers and end each block alike
/// ([`finish_block`]), so a row's result does not depend on the pass that computed it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_pass<T: KTile, const R: usize>(
    blocks: &[T],
    first: usize,
    kb: usize,
    act: &Q8KRows,
    r0: usize,
    ahead: usize,
    (out, stride): (*mut f32, usize),
) {
    use std::arch::x86_64::*;
    let nib = _mm512_set1_epi8(0x0F);
    let fifth = _mm512_set1_epi8(0x10);
    let mut acc = [_mm512_setzero_ps(); R];
    let qptr = act.qs.as_ptr();
    let base = blocks.as_ptr();
    for b in 0..kb {
        let tile = &*base.add(first + b);
        let blk = tile.low();
        let wp = blk.qs.as_ptr() as *const __m512i;
        let mut ap = [std::ptr::null::<i8>(); R];
        for (r, p) in ap.iter_mut().enumerate() {
            *p = qptr.add((r0 + r) * act.k + b * QK_K);
        }
        let mut isum = [_mm512_setzero_si512(); R];
        for c in 0..4 {
            if ahead > 0 {
                super::prefetch_share(blocks, first + b + ahead, c, 4);
            }
            if R <= 4 {
                // both nibble chains of every row at once
                let mut lo_acc = [_mm512_setzero_si512(); R];
                let mut hi_acc = [_mm512_setzero_si512(); R];
                for g in 0..8 {
                    let v = _mm512_load_si512(wp.add(c * 8 + g));
                    let mut lo = _mm512_and_si512(v, nib);
                    let mut hi = _mm512_and_si512(_mm512_srli_epi16::<4>(v), nib);
                    if T::FIFTH_BIT {
                        lo = _mm512_mask_add_epi8(lo, tile.fifth((c * 8 + g) * 2), lo, fifth);
                        hi = _mm512_mask_add_epi8(hi, tile.fifth((c * 8 + g) * 2 + 1), hi, fifth);
                    }
                    for r in 0..R {
                        let a = ap[r].add(64 * c + 4 * g);
                        let alo = _mm512_set1_epi32((a as *const i32).read_unaligned());
                        let ahi = _mm512_set1_epi32((a.add(32) as *const i32).read_unaligned());
                        lo_acc[r] = _mm512_dpbusd_epi32(lo_acc[r], lo, alo);
                        hi_acc[r] = _mm512_dpbusd_epi32(hi_acc[r], hi, ahi);
                    }
                }
                let sc_lo = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.sc.as_ptr().add(2 * c * TILE) as *const __m128i));
                let sc_hi = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.sc.as_ptr().add((2 * c + 1) * TILE) as *const __m128i));
                for r in 0..R {
                    isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(lo_acc[r], sc_lo));
                    isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(hi_acc[r], sc_hi));
                }
            } else {
                // the low nibbles (sub-block 2c), then the high ones (2c + 1): one chain per row
                for half in 0..2 {
                    let mut sub = [_mm512_setzero_si512(); R];
                    for g in 0..8 {
                        let v = _mm512_load_si512(wp.add(c * 8 + g));
                        let mut w = if half == 0 { _mm512_and_si512(v, nib) } else { _mm512_and_si512(_mm512_srli_epi16::<4>(v), nib) };
                        if T::FIFTH_BIT {
                            w = _mm512_mask_add_epi8(w, tile.fifth((c * 8 + g) * 2 + half), w, fifth);
                        }
                        for r in 0..R {
                            let a = ap[r].add(64 * c + 32 * half + 4 * g);
                            sub[r] = _mm512_dpbusd_epi32(sub[r], w, _mm512_set1_epi32((a as *const i32).read_unaligned()));
                        }
                    }
                    let sc = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.sc.as_ptr().add((2 * c + half) * TILE) as *const __m128i));
                    for r in 0..R {
                        isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(sub[r], sc));
                    }
                }
            }
        }
        finish_block(blk, act, r0, b, &isum, &mut acc);
    }
    for (r, a) in acc.iter().enumerate() {
        _mm512_storeu_ps(out.add(r * stride), *a);
    }
}

/// The end of a block for `R` rows: each row's integer sum `isum` times `d_w · d_a`, less
/// the mins' share `dmin_w · d_a · Σ_j m_j · Σ(activations of sub-block j)`, onto its float
/// accumulator.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[inline]
unsafe fn finish_block<const R: usize>(
    blk: &TileBlock,
    act: &Q8KRows,
    r0: usize,
    b: usize,
    isum: &[std::arch::x86_64::__m512i; R],
    acc: &mut [std::arch::x86_64::__m512; R],
) {
    use std::arch::x86_64::*;
    let wd = _mm512_cvtph_ps(_mm256_loadu_si256(blk.d.as_ptr() as *const __m256i));
    let wmin = _mm512_cvtph_ps(_mm256_loadu_si256(blk.dmin.as_ptr() as *const __m256i));
    // mins of sub-blocks 2p and 2p + 1 in the low and high 16 bits of each row's lane
    let mut pairs = [_mm512_setzero_si512(); 4];
    for (p, v) in pairs.iter_mut().enumerate() {
        let e = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.m.as_ptr().add(2 * p * TILE) as *const __m128i));
        let o = _mm512_cvtepu8_epi32(_mm_loadu_si128(blk.m.as_ptr().add((2 * p + 1) * TILE) as *const __m128i));
        *v = _mm512_or_si512(e, _mm512_slli_epi32::<16>(o));
    }
    for r in 0..R {
        let bi = (r0 + r) * act.kb + b;
        // two sub-blocks per `vpdpwssd` (each activation sum is at most 32 · 128 in
        // magnitude: it fits 16 bits)
        let mut imin = _mm512_setzero_si512();
        for (p, v) in pairs.iter().enumerate() {
            let both = (act.sum32(bi, 2 * p) & 0xFFFF) | (act.sum32(bi, 2 * p + 1) << 16);
            imin = _mm512_dpwssd_epi32(imin, *v, _mm512_set1_epi32(both));
        }
        let da = _mm512_set1_ps(act.d[bi]);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum[r]), _mm512_mul_ps(wd, da), acc[r]);
        acc[r] = _mm512_fnmadd_ps(_mm512_cvtepi32_ps(imin), _mm512_mul_ps(wmin, da), acc[r]);
    }
}

/// [`tile_kernel`] on AVX2: `rows` (1..=4) activation rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_kernel_avx2<T: KTile>(blocks: &[T], first: usize, kb: usize, act: &Q8KRows, r0: usize, rows: usize, out: (*mut f32, usize)) {
    with_rows!(4, rows, R => tile_pass_avx2::<T, R>(blocks, first, kb, act, r0, out))
}

/// [`tile_pass`] on AVX2, one 8-row half of the tile at a time and one 32-value sub-block at a
/// time (as the AVX-512 pass of 5 to 8 rows), then [`finish_block`]'s arithmetic on 8 lanes:
/// the same integer sums and float operations, so the same bits. Products are added in i16
/// lanes in chains of [`super::avx2::chain_length`] before widening, and the first half
/// prefetches the tile ahead whatever the rows (see the Q8_0 pass).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_pass_avx2<T: KTile, const R: usize>(blocks: &[T], first: usize, kb: usize, act: &Q8KRows, r0: usize, (out, stride): (*mut f32, usize)) {
    use super::avx2::{chain_length, f16x8, fifth_bits, four, pairs_u8_i8, u8x8, widen};
    use std::arch::x86_64::*;
    let nib = _mm256_set1_epi8(0x0F);
    // products added in i16 before widening: 8 of 4-bit weights, 4 of 5-bit ones
    let chain = if T::FIFTH_BIT { chain_length(5) } else { chain_length(4) };
    for half in 0..2 {
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..kb {
            let tile = &blocks[first + b];
            let blk = tile.low();
            let mut isum = [_mm256_setzero_si256(); R];
            for c in 0..4 {
                if half == 0 {
                    super::prefetch_share(blocks, first + b + PREFETCH_BLOCKS, c, 4);
                }
                for nibble in 0..2 {
                    let mut sub = [_mm256_setzero_si256(); R];
                    let mut pairs = [_mm256_setzero_si256(); R];
                    for g in 0..8 {
                        let v = _mm256_loadu_si256(blk.qs.as_ptr().add(64 * (c * 8 + g) + 32 * half) as *const __m256i);
                        let mut w = if nibble == 0 { _mm256_and_si256(v, nib) } else { _mm256_and_si256(_mm256_srli_epi16::<4>(v), nib) };
                        if T::FIFTH_BIT {
                            w = _mm256_or_si256(w, fifth_bits((tile.fifth((c * 8 + g) * 2 + nibble) >> (32 * half)) as u32));
                        }
                        for (r, p) in pairs.iter_mut().enumerate() {
                            *p = pairs_u8_i8(*p, w, four(act.qs.as_ptr().add((r0 + r) * act.k + b * QK_K + 64 * c + 32 * nibble + 4 * g)));
                        }
                        if (g + 1) % chain == 0 {
                            for r in 0..R {
                                sub[r] = widen(sub[r], pairs[r]);
                                pairs[r] = _mm256_setzero_si256();
                            }
                        }
                    }
                    let sc = u8x8(blk.sc.as_ptr().add((2 * c + nibble) * TILE + 8 * half));
                    for r in 0..R {
                        isum[r] = _mm256_add_epi32(isum[r], _mm256_mullo_epi32(sub[r], sc));
                    }
                }
            }
            // the mins' share, as `finish_block`
            let wd = f16x8(blk.d.as_ptr().add(8 * half));
            let wmin = f16x8(blk.dmin.as_ptr().add(8 * half));
            let mut pairs = [_mm256_setzero_si256(); 4];
            for (p, v) in pairs.iter_mut().enumerate() {
                let e = u8x8(blk.m.as_ptr().add(2 * p * TILE + 8 * half));
                let o = u8x8(blk.m.as_ptr().add((2 * p + 1) * TILE + 8 * half));
                *v = _mm256_or_si256(e, _mm256_slli_epi32::<16>(o));
            }
            for r in 0..R {
                let bi = (r0 + r) * act.kb + b;
                let mut imin = _mm256_setzero_si256();
                for (p, v) in pairs.iter().enumerate() {
                    let both = (act.sum32(bi, 2 * p) & 0xFFFF) | (act.sum32(bi, 2 * p + 1) << 16);
                    imin = _mm256_add_epi32(imin, _mm256_madd_epi16(*v, _mm256_set1_epi32(both)));
                }
                let da = _mm256_set1_ps(act.d[bi]);
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(isum[r]), _mm256_mul_ps(wd, da), acc[r]);
                acc[r] = _mm256_fnmadd_ps(_mm256_cvtepi32_ps(imin), _mm256_mul_ps(wmin, da), acc[r]);
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

    /// Σ over blocks of d_a · Σ w · q_a, in f64 with the dequantized weights: the kernel's
    /// arithmetic up to float rounding.
    fn reference(w: &QTensor, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = w.shape().dims2().unwrap();
        let wd = w.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let act = Q8KRows::new(x, m, k);
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for o in 0..n {
                let mut s = 0f64;
                for b in 0..k / QK_K {
                    let mut bs = 0f64;
                    for l in 0..QK_K {
                        bs += wd[o * k + b * QK_K + l] as f64 * act.qs[r * k + b * QK_K + l] as f64;
                    }
                    s += bs * act.d[r * (k / QK_K) + b] as f64;
                }
                out[r * n + o] = s as f32;
            }
        }
        out
    }

    /// Our kernel for `q` (Q4_K or Q5_K).
    fn packed(q: &QTensor) -> Box<dyn Fn(&[f32], usize) -> Vec<f32>> {
        match q.dtype() {
            GgmlDType::Q4K => {
                let p = PackedQ4K::pack(&[q]).unwrap().unwrap();
                Box::new(move |x, m| p.matmul(x, m).unwrap())
            }
            _ => {
                let p = PackedQ5K::pack(&[q]).unwrap().unwrap();
                Box::new(move |x, m| p.matmul(x, m).unwrap())
            }
        }
    }

    #[test]
    fn matches_the_q4_k_and_q5_k_by_q8_k_dot_products() {
        if !available() {
            eprintln!("neither AVX-512 VNNI nor AVX2: kernel not exercised");
            return;
        }
        let dev = Device::Cpu;
        for dtype in [GgmlDType::Q4K, GgmlDType::Q5K] {
            for (n, k, m) in [(16usize, 256usize, 1usize), (40, 512, 3), (256, 2560, 5), (33, 768, 9)] {
                let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
                let q = QTensor::quantize(&w, dtype).unwrap();
                let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let got = packed(&q)(&x, m);
                let want = reference(&q, &x, m);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-4 * scale.max(1.0), "{dtype:?} ({n},{k},{m}): max abs diff {worst} (outputs up to {scale})");
                // and as close to candle's matmul as 8-bit activations allow
                let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
                let theirs = QMatMul::from_qtensor(QTensor::quantize(&w, dtype).unwrap()).unwrap().forward(&xt).unwrap();
                let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
                let off = got.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(off <= 0.03 * scale, "{dtype:?} ({n},{k},{m}): {off} from candle's result");
            }
        }
    }

    #[test]
    fn q5_k_fifth_bits_land_on_their_values() {
        if !available() {
            return;
        }
        // a one-hot activation reads one weight back: every value position of a block, in
        // every 64-value chunk and both halves, must come out as candle dequantizes it
        let (n, k) = (16usize, 256usize);
        let w: Vec<f32> = (0..n * k).map(|i| ((i * 37) % 31) as f32 - 15.0 + (i % 3) as f32 * 0.25).collect();
        let q = QTensor::quantize(&Tensor::from_vec(w, (n, k), &Device::Cpu).unwrap(), GgmlDType::Q5K).unwrap();
        let want = q.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let p = packed(&q);
        for probe in [0usize, 3, 31, 32, 45, 63, 64, 100, 127, 128, 170, 191, 192, 223, 255] {
            let mut x = vec![0f32; k];
            x[probe] = 1.0;
            let got = p(&x, 1);
            for row in 0..n {
                let expect = want[row * k + probe];
                assert!((got[row] - expect).abs() <= 1e-3 * expect.abs().max(1.0), "value {probe} of row {row}: {} vs {expect}", got[row]);
            }
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_and_in_any_batch() {
        if !available() {
            return;
        }
        let dev = Device::Cpu;
        let (n, k) = (48, 512);
        for dtype in [GgmlDType::Q4K, GgmlDType::Q5K] {
            let q = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), dtype).unwrap();
            let p = packed(&q);
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (11, k), &dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let all = p(&x, 11);
            for r in 0..11 {
                let alone = p(&x[r * k..(r + 1) * k], 1);
                assert_eq!(&all[r * n..(r + 1) * n], alone.as_slice(), "{dtype:?} row {r}");
            }
        }
    }

    #[test]
    fn fused_pack_equals_separate_matmuls_and_other_types_are_declined() {
        if !available() {
            return;
        }
        let dev = Device::Cpu;
        let a = QTensor::quantize(&Tensor::randn(0f32, 1.0, (48, 256), &dev).unwrap(), GgmlDType::Q4K).unwrap();
        let b = QTensor::quantize(&Tensor::randn(0f32, 1.0, (16, 256), &dev).unwrap(), GgmlDType::Q4K).unwrap();
        let x: Vec<f32> = (0..2 * 256).map(|i| ((i * 7) % 13) as f32 - 6.0).collect();
        let fused = PackedQ4K::pack(&[&a, &b]).unwrap().unwrap().matmul(&x, 2).unwrap();
        let pa = PackedQ4K::pack(&[&a]).unwrap().unwrap().matmul(&x, 2).unwrap();
        let pb = PackedQ4K::pack(&[&b]).unwrap().unwrap().matmul(&x, 2).unwrap();
        for r in 0..2 {
            assert_eq!(&fused[r * 64..r * 64 + 48], &pa[r * 48..(r + 1) * 48]);
            assert_eq!(&fused[r * 64 + 48..(r + 1) * 64], &pb[r * 16..(r + 1) * 16]);
        }
        let q8 = QTensor::quantize(&Tensor::randn(0f32, 1.0, (16, 256), &dev).unwrap(), GgmlDType::Q8_0).unwrap();
        assert!(PackedQ4K::pack(&[&q8]).unwrap().is_none());
        assert!(PackedQ5K::pack(&[&a]).unwrap().is_none(), "Q4_K is not Q5_K");
        // the repacked tiles stay within 3% of the stored bytes
        let p = PackedQ4K::pack(&[&a]).unwrap().unwrap();
        assert!((p.bytes() as f64) <= 1.03 * a.storage_size_in_bytes() as f64, "{} vs {}", p.bytes(), a.storage_size_in_bytes());
        let q5 = QTensor::quantize(&Tensor::randn(0f32, 1.0, (48, 512), &dev).unwrap(), GgmlDType::Q5K).unwrap();
        let p5 = PackedQ5K::pack(&[&q5]).unwrap().unwrap();
        assert!((p5.bytes() as f64) <= 1.03 * q5.storage_size_in_bytes() as f64, "{} vs {}", p5.bytes(), q5.storage_size_in_bytes());
    }

    #[test]
    fn the_avx2_path_gives_the_avx512_bits() {
        use super::super::Isa;
        if !Isa::Avx2.supported() {
            eprintln!("AVX2 not available: its path not exercised");
            return;
        }
        let dev = Device::Cpu;
        let (n, k) = (40, 768);
        let q4 = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), GgmlDType::Q4K).unwrap();
        let q5 = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), GgmlDType::Q5K).unwrap();
        let (p4, p5) = (PackedQ4K::pack(&[&q4]).unwrap().unwrap(), PackedQ5K::pack(&[&q5]).unwrap().unwrap());
        for m in [1usize, 2, 3, 4, 5, 9] {
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            for (q, got) in [(&q4, p4.matmul_with(&x, m, Isa::Avx2).unwrap()), (&q5, p5.matmul_with(&x, m, Isa::Avx2).unwrap())] {
                let want = reference(q, &x, m);
                let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
                let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                assert!(worst <= 1e-4 * scale.max(1.0), "{:?} m={m}: max abs diff {worst}", q.dtype());
            }
            if Isa::Avx512Vnni.supported() {
                assert_eq!(p4.matmul_with(&x, m, Isa::Avx2).unwrap(), p4.matmul_with(&x, m, Isa::Avx512Vnni).unwrap(), "Q4_K m={m}");
                assert_eq!(p5.matmul_with(&x, m, Isa::Avx2).unwrap(), p5.matmul_with(&x, m, Isa::Avx512Vnni).unwrap(), "Q5_K m={m}");
            }
        }
    }
}
