//! Batched Q6_K matmul with AVX512-VNNI (and an AVX2 path, [`super::avx2`]), on the weights as
//! stored (6.6 bits per value).
//!
//! A Q6_K block holds 256 values of one row in 210 bytes: 128 bytes of low 4 bits (`ql`), 64
//! bytes of high 2 bits (`qh`), 16 signed 8-bit scales (one per 16 values) and an f16 `d`. In
//! half `h` (128 values), byte `l < 32` of `ql` (and `l + 32`) and byte `l` of `qh` give the
//! values `128h + l + 32k` for `k = 0..4`; a value is `d · sc · (q − 32)`.
//!
//! At load the blocks of 16 rows are interleaved into tiles ([`TileBlock`]) with the same
//! 3360 bytes plus cache-line padding (+1%; the bits are only regrouped: 4 consecutive bytes
//! of each of the 16 rows per 64-byte vector). The kernel rebuilds each 6-bit value from its
//! `ql` nibble and `qh` pair (unsigned 0..63) and multiplies it with activations quantized
//! per 256 values (Q8_K, as ggml's Q6_K dot product) in `vpdpbusd`, one exact integer sum per
//! 16-value sub-block and row; each sum meets its scale in one `vpmulld`, the `−32` offset is
//! `32 · Σ sc · Σ q_a` per 16 values, and `d` is applied once per block. Each weight vector
//! serves up to [`ROWS_PER_PASS`] activation rows. (The earlier `vpmaddubsw` + `vpdpwssd`
//! form, which folds the scale into the second multiply, issues two multiplies per operand:
//! at 8 rows the 4B output matrix took 44-81 ms against 38-40 ms now, `deal bench kernel`.)
//!
//! As the other kernels, every row's result is a fixed sequence of exact integer sums and the
//! same float operations whatever the other rows are: batch-invariant.

use candle_core::quantized::{GgmlDType, QTensor};

use super::q8_k::{Q8KRows, QK_K};
use super::TILE;
use crate::{Error, Result};

const BLOCK_BYTES: usize = 210;
/// Activation rows processed per pass over a weight tile: up to 4 rows keep the four
/// sub-block chains of every row in registers ([`tile_pass`]); 5 to 8 rows take one
/// sub-block at a time (both in [`tile_pass`]), so that a tile's weights stream from memory
/// once for 8 rows.
pub const ROWS_PER_PASS: usize = 8;
/// On the first pass of several rows over a tile, the kernel prefetches the tile-block this
/// many blocks ahead (53 cache lines, spread over the block's steps). A pass of several
/// rows is busy enough between loads that the hardware prefetcher falls behind; one row is
/// left to the hardware prefetcher, which streams faster alone, and later passes read the
/// tile from L1/L2. On the 4B's shapes at 4-8 rows this took 10-35% off (`deal bench kernel`;
/// 2 blocks ahead measured the same or worse).
const PREFETCH_BLOCKS: usize = 1;

/// One 256-value block of 16 rows: the 3360 bytes of the 16 Q6_K blocks it replaces, padded
/// to whole cache lines (3392).
#[repr(C, align(64))]
#[derive(Clone)]
struct TileBlock {
    /// The 4-bit and 2-bit parts in the order the kernel reads them, three 64-byte vectors
    /// per `(h, g)`: `q[h][g][0][row][i]` = byte `64h + 4g + i` of `row`'s `ql`,
    /// `q[h][g][1][row][i]` = byte `64h + 32 + 4g + i` of `ql`, `q[h][g][2][row][i]` = byte
    /// `32h + 4g + i` of `qh`. One sequential stream per block, so the hardware prefetchers
    /// keep up with it.
    q: [u8; 192 * TILE],
    /// `sc[j][row]`: scale of values `16j .. 16j + 16`.
    sc: [i8; 16 * TILE],
    /// Per-row `d` as f16 bits.
    d: [u16; TILE],
}

/// Q6_K weights `[n, k]` repacked for the VNNI kernel.
pub struct PackedQ6K {
    n: usize,
    k: usize,
    blocks: Vec<TileBlock>,
}

/// Whether this CPU can run the kernel.
pub fn available() -> bool {
    super::q8_0::available()
}

impl PackedQ6K {
    /// Repack Q6_K weights; several tensors with the same `k` are stacked along `n`. `None`
    /// if a tensor is not Q6_K on the CPU, or the CPU has neither AVX-512 VNNI nor AVX2.
    pub fn pack(ts: &[&QTensor]) -> Result<Option<Self>> {
        super::with_stored(ts, Self::pack_stored)
    }

    /// [`Self::pack`] on stored bytes (the memory-mapped file's, at load).
    pub fn pack_stored(parts: &[super::StoredWeight]) -> Result<Option<Self>> {
        if !available() {
            return Ok(None);
        }
        super::with_stacked_rows(parts, GgmlDType::Q6K, |rows, k| {
            let empty = TileBlock { q: [0; 192 * TILE], sc: [0; 16 * TILE], d: [0; TILE] };
            let blocks = super::pack_tiles(rows, k / QK_K, BLOCK_BYTES, empty, |blk, lane, src| {
                let (ql, qh, sc) = (&src[..128], &src[128..192], &src[192..208]);
                blk.d[lane] = u16::from_le_bytes([src[208], src[209]]);
                for (j, &s) in sc.iter().enumerate() {
                    blk.sc[j * TILE + lane] = s as i8;
                }
                for h in 0..2 {
                    for g in 0..8 {
                        let v = (h * 8 + g) * 3;
                        for (part, from) in [(0, &ql[64 * h + 4 * g..]), (1, &ql[64 * h + 32 + 4 * g..]), (2, &qh[32 * h + 4 * g..])] {
                            let at = ((v + part) * TILE + lane) * 4;
                            blk.q[at..at + 4].copy_from_slice(&from[..4]);
                        }
                    }
                }
            });
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
        let isa = super::check_isa(isa)?;
        if lhs.len() != m * self.k {
            return Err(Error::invalid(format!("lhs has {} values, expected {m} x {}", lhs.len(), self.k)));
        }
        let act = Q8KRows::new(lhs, m, self.k);
        let kb = self.k / QK_K;
        let dst = super::tiled_matmul(self.n, m, isa.rows_per_pass(), |t, r0, rows, first, out, stride| {
            // SAFETY: `check_isa` confirmed the CPU runs `isa`; `out` has `rows` rows of 16
            // floats at `stride`.
            #[cfg(target_arch = "x86_64")]
            unsafe {
                match isa {
                    super::Isa::Avx512Vnni => tile_kernel(&self.blocks, t * kb, kb, &act, r0, rows, first && rows > 1, out, stride),
                    super::Isa::Avx2 => tile_kernel_avx2(&self.blocks, t * kb, kb, &act, r0, rows, (out, stride)),
                }
            };
        });
        Ok(dst)
    }
}

/// Dispatch one pass of `rows` (1..=ROWS_PER_PASS) activation rows over one weight tile;
/// `prefetch` (a first pass of several rows) pulls the tile-blocks ahead into cache.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
#[allow(clippy::too_many_arguments)]
unsafe fn tile_kernel(
    blocks: &[TileBlock],
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
    with_rows!(8, rows, R => tile_pass::<R>(blocks, first, kb, act, r0, ahead, (out, stride)))
}

/// `R` activation rows against one 16-row weight tile, with the 6-bit operands in
/// `vpdpbusd` (u6 × i8, four products per lane) into one integer sum per 16-value sub-block
/// and row, each multiplied by its scale once (`vpmulld`): one multiply instruction per
/// operand instead of two. Up to 4 rows keep the four sub-block chains of every row; 5 to 8
/// rows take one sub-block at a time, one chain per row, so `R` sub-block sums, `R` integer
/// block sums and `R` float accumulators fit the 32 vector registers. Both add up the same
/// exact integers and end each block alike ([`finish_block`]), so a row's result does not
/// depend on the pass that computed it.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn tile_pass<const R: usize>(
    blocks: &[TileBlock],
    first: usize,
    kb: usize,
    act: &Q8KRows,
    r0: usize,
    ahead: usize,
    (out, stride): (*mut f32, usize),
) {
    use std::arch::x86_64::*;
    let low4 = _mm512_set1_epi8(0x0F);
    let bits45 = _mm512_set1_epi8(0x30);
    let mut acc = [_mm512_setzero_ps(); R];
    let qptr = act.qs.as_ptr();
    let base = blocks.as_ptr();
    for b in 0..kb {
        let blk = &*base.add(first + b);
        let qp = blk.q.as_ptr() as *const __m512i;
        let scp = blk.sc.as_ptr();
        let mut ap = [std::ptr::null::<i8>(); R];
        for (r, p) in ap.iter_mut().enumerate() {
            *p = qptr.add((r0 + r) * act.k + b * QK_K);
        }
        let mut isum = [_mm512_setzero_si512(); R];
        for h in 0..2 {
            for is in 0..2 {
                if ahead > 0 {
                    // a quarter of the block `ahead` tile-blocks on per (h, is)
                    super::prefetch_share(blocks, first + b + ahead, 2 * h + is, 4);
                }
                if R <= 4 {
                    // sub-block 8h + is + 2kq holds values 128h + 16is + 32kq + (0..16)
                    let mut part = [[_mm512_setzero_si512(); R]; 4];
                    for gg in 0..4 {
                        let g = 4 * is + gg;
                        let v = (h * 8 + g) * 3;
                        let l0 = _mm512_load_si512(qp.add(v));
                        let l1 = _mm512_load_si512(qp.add(v + 1));
                        let hb = _mm512_load_si512(qp.add(v + 2));
                        // value kq's high 2 bits sit at bits 2kq, 2kq+1 of its qh byte
                        let u = [
                            _mm512_or_si512(_mm512_and_si512(l0, low4), _mm512_and_si512(_mm512_slli_epi16::<4>(hb), bits45)),
                            _mm512_or_si512(_mm512_and_si512(l1, low4), _mm512_and_si512(_mm512_slli_epi16::<2>(hb), bits45)),
                            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(l0), low4), _mm512_and_si512(hb, bits45)),
                            _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(l1), low4), _mm512_and_si512(_mm512_srli_epi16::<2>(hb), bits45)),
                        ];
                        for r in 0..R {
                            let a = ap[r].add(128 * h + 4 * g);
                            for kq in 0..4 {
                                let av = _mm512_set1_epi32((a.add(32 * kq) as *const i32).read_unaligned());
                                part[kq][r] = _mm512_dpbusd_epi32(part[kq][r], u[kq], av);
                            }
                        }
                    }
                    for (kq, p) in part.iter().enumerate() {
                        let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(scp.add((8 * h + is + 2 * kq) * TILE) as *const __m128i));
                        for r in 0..R {
                            isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(p[r], sc));
                        }
                    }
                } else {
                    // one sub-block (`kq`) at a time over the four groups that share its scale
                    for kq in 0..4 {
                        let mut sub = [_mm512_setzero_si512(); R];
                        for gg in 0..4 {
                            let g = 4 * is + gg;
                            let v = (h * 8 + g) * 3;
                            let hb = _mm512_load_si512(qp.add(v + 2));
                            // the same 6-bit operands as `u[kq]` above
                            let u = match kq {
                                0 => _mm512_or_si512(_mm512_and_si512(_mm512_load_si512(qp.add(v)), low4), _mm512_and_si512(_mm512_slli_epi16::<4>(hb), bits45)),
                                1 => _mm512_or_si512(_mm512_and_si512(_mm512_load_si512(qp.add(v + 1)), low4), _mm512_and_si512(_mm512_slli_epi16::<2>(hb), bits45)),
                                2 => _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16::<4>(_mm512_load_si512(qp.add(v))), low4), _mm512_and_si512(hb, bits45)),
                                _ => _mm512_or_si512(
                                    _mm512_and_si512(_mm512_srli_epi16::<4>(_mm512_load_si512(qp.add(v + 1))), low4),
                                    _mm512_and_si512(_mm512_srli_epi16::<2>(hb), bits45),
                                ),
                            };
                            for r in 0..R {
                                let a = ap[r].add(128 * h + 4 * g + 32 * kq);
                                sub[r] = _mm512_dpbusd_epi32(sub[r], u, _mm512_set1_epi32((a as *const i32).read_unaligned()));
                            }
                        }
                        let sc = _mm512_cvtepi8_epi32(_mm_loadu_si128(scp.add((8 * h + is + 2 * kq) * TILE) as *const __m128i));
                        for r in 0..R {
                            isum[r] = _mm512_add_epi32(isum[r], _mm512_mullo_epi32(sub[r], sc));
                        }
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

/// The end of a block for `R` rows: the `−32` offset (`32 · Σ_j sc_j · Σ q_a` over the
/// 16-value sub-blocks, two per `vpdpwssd`) off each row's integer sum `isum`, then
/// `d_w · d_a` onto its float accumulator.
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
    let low16 = _mm512_set1_epi32(0xFFFF);
    let scp = blk.sc.as_ptr();
    let mut pairs = [_mm512_setzero_si512(); 8];
    for (p, v) in pairs.iter_mut().enumerate() {
        let e = _mm512_cvtepi8_epi32(_mm_loadu_si128(scp.add(2 * p * TILE) as *const __m128i));
        let o = _mm512_cvtepi8_epi32(_mm_loadu_si128(scp.add((2 * p + 1) * TILE) as *const __m128i));
        *v = _mm512_or_si512(_mm512_and_si512(e, low16), _mm512_slli_epi32::<16>(o));
    }
    let wd = _mm512_cvtph_ps(_mm256_loadu_si256(blk.d.as_ptr() as *const __m256i));
    for r in 0..R {
        let bi = (r0 + r) * act.kb + b;
        let sums = &act.sums16[bi * 16..bi * 16 + 16];
        let mut off = _mm512_setzero_si512();
        for (p, v) in pairs.iter().enumerate() {
            let both = (sums[2 * p] & 0xFFFF) | (sums[2 * p + 1] << 16);
            off = _mm512_dpwssd_epi32(off, *v, _mm512_set1_epi32(both));
        }
        let s = _mm512_sub_epi32(isum[r], _mm512_slli_epi32::<5>(off));
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(wd, _mm512_set1_ps(act.d[bi])), acc[r]);
    }
}

/// [`tile_kernel`] on AVX2: `rows` (1..=4) activation rows.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_kernel_avx2(blocks: &[TileBlock], first: usize, kb: usize, act: &Q8KRows, r0: usize, rows: usize, out: (*mut f32, usize)) {
    with_rows!(4, rows, R => tile_pass_avx2::<R>(blocks, first, kb, act, r0, out))
}

/// [`tile_pass`] on AVX2, one 8-row half of the tile and one 16-value sub-block at a time (as
/// the AVX-512 pass of 5 to 8 rows), then [`finish_block`]'s arithmetic on 8 lanes: the same
/// integer sums and float operations, so the same bits. Products are added in i16 lanes in
/// pairs before widening ([`super::avx2::chain_length`]), and the first half prefetches the
/// tile ahead whatever the rows (see the Q8_0 pass).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn tile_pass_avx2<const R: usize>(blocks: &[TileBlock], first: usize, kb: usize, act: &Q8KRows, r0: usize, (out, stride): (*mut f32, usize)) {
    use super::avx2::{chain_length, f16x8, four, i8x8, pairs_u8_i8, widen};
    use std::arch::x86_64::*;
    let low4 = _mm256_set1_epi8(0x0F);
    let bits45 = _mm256_set1_epi8(0x30);
    let low16 = _mm256_set1_epi32(0xFFFF);
    for half in 0..2 {
        let mut acc = [_mm256_setzero_ps(); R];
        for b in 0..kb {
            let blk = &blocks[first + b];
            let load = |v: usize| _mm256_loadu_si256(blk.q.as_ptr().add(64 * v + 32 * half) as *const __m256i);
            let scp = blk.sc.as_ptr();
            let mut isum = [_mm256_setzero_si256(); R];
            for h in 0..2 {
                for is in 0..2 {
                    if half == 0 {
                        super::prefetch_share(blocks, first + b + PREFETCH_BLOCKS, 2 * h + is, 4);
                    }
                    for kq in 0..4 {
                        let mut sub = [_mm256_setzero_si256(); R];
                        let mut pairs = [_mm256_setzero_si256(); R];
                        for gg in 0..4 {
                            let g = 4 * is + gg;
                            let v = (h * 8 + g) * 3;
                            let hb = load(v + 2);
                            let u = match kq {
                                0 => _mm256_or_si256(_mm256_and_si256(load(v), low4), _mm256_and_si256(_mm256_slli_epi16::<4>(hb), bits45)),
                                1 => _mm256_or_si256(_mm256_and_si256(load(v + 1), low4), _mm256_and_si256(_mm256_slli_epi16::<2>(hb), bits45)),
                                2 => _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(load(v)), low4), _mm256_and_si256(hb, bits45)),
                                _ => _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16::<4>(load(v + 1)), low4), _mm256_and_si256(_mm256_srli_epi16::<2>(hb), bits45)),
                            };
                            for (r, p) in pairs.iter_mut().enumerate() {
                                *p = pairs_u8_i8(*p, u, four(act.qs.as_ptr().add((r0 + r) * act.k + b * QK_K + 128 * h + 4 * g + 32 * kq)));
                            }
                            if (gg + 1) % chain_length(6) == 0 {
                                for r in 0..R {
                                    sub[r] = widen(sub[r], pairs[r]);
                                    pairs[r] = _mm256_setzero_si256();
                                }
                            }
                        }
                        let sc = i8x8(scp.add((8 * h + is + 2 * kq) * TILE + 8 * half));
                        for r in 0..R {
                            isum[r] = _mm256_add_epi32(isum[r], _mm256_mullo_epi32(sub[r], sc));
                        }
                    }
                }
            }
            // the −32 offset and the scales, as `finish_block`
            let mut pairs = [_mm256_setzero_si256(); 8];
            for (p, v) in pairs.iter_mut().enumerate() {
                let e = i8x8(scp.add(2 * p * TILE + 8 * half));
                let o = i8x8(scp.add((2 * p + 1) * TILE + 8 * half));
                *v = _mm256_or_si256(_mm256_and_si256(e, low16), _mm256_slli_epi32::<16>(o));
            }
            let wd = f16x8(blk.d.as_ptr().add(8 * half));
            for r in 0..R {
                let bi = (r0 + r) * act.kb + b;
                let sums = &act.sums16[bi * 16..bi * 16 + 16];
                let mut off = _mm256_setzero_si256();
                for (p, v) in pairs.iter().enumerate() {
                    let both = (sums[2 * p] & 0xFFFF) | (sums[2 * p + 1] << 16);
                    off = _mm256_add_epi32(off, _mm256_madd_epi16(*v, _mm256_set1_epi32(both)));
                }
                let s = _mm256_sub_epi32(isum[r], _mm256_slli_epi32::<5>(off));
                acc[r] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(s), _mm256_mul_ps(wd, _mm256_set1_ps(act.d[bi])), acc[r]);
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

    /// Σ over blocks of d_a · Σ w · q_a in f64 with the dequantized weights.
    fn reference(w: &QTensor, x: &[f32], m: usize) -> Vec<f32> {
        let (n, k) = w.shape().dims2().unwrap();
        let wd = w.dequantize(&Device::Cpu).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let act = Q8KRows::new(x, m, k);
        let mut out = vec![0f32; m * n];
        for r in 0..m {
            for o in 0..n {
                let mut s = 0f64;
                for b in 0..k / QK_K {
                    let bs: f64 = (0..QK_K).map(|l| wd[o * k + b * QK_K + l] as f64 * act.qs[r * k + b * QK_K + l] as f64).sum();
                    s += bs * act.d[r * (k / QK_K) + b] as f64;
                }
                out[r * n + o] = s as f32;
            }
        }
        out
    }

    #[test]
    fn matches_the_q6_k_by_q8_k_dot_product() {
        if !available() {
            eprintln!("neither AVX-512 VNNI nor AVX2: kernel not exercised");
            return;
        }
        let dev = Device::Cpu;
        for (n, k, m) in [(16usize, 256usize, 1usize), (40, 512, 3), (256, 2560, 5), (33, 768, 6)] {
            let w = Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap();
            let q = QTensor::quantize(&w, GgmlDType::Q6K).unwrap();
            let x = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap().flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let got = PackedQ6K::pack(&[&q]).unwrap().unwrap().matmul(&x, m).unwrap();
            let want = reference(&q, &x, m);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-4 * scale.max(1.0), "({n},{k},{m}): max abs diff {worst} (outputs up to {scale})");
            let xt = Tensor::from_vec(x.clone(), (m, k), &dev).unwrap();
            let theirs = QMatMul::from_qtensor(QTensor::quantize(&w, GgmlDType::Q6K).unwrap()).unwrap().forward(&xt).unwrap();
            let theirs = theirs.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let off = got.iter().zip(&theirs).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(off <= 0.03 * scale, "({n},{k},{m}): {off} from candle's result");
        }
    }

    #[test]
    fn a_row_gets_the_same_bits_alone_and_in_any_batch_and_bytes_are_kept() {
        if !available() {
            return;
        }
        let dev = Device::Cpu;
        let (n, k) = (48, 512);
        let q = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), GgmlDType::Q6K).unwrap();
        let p = PackedQ6K::pack(&[&q]).unwrap().unwrap();
        // the stored bytes, plus padding each tile-block to whole cache lines (+1%)
        assert!(p.bytes() as f64 <= 1.01 * q.storage_size_in_bytes() as f64, "{} vs {}", p.bytes(), q.storage_size_in_bytes());
        let x: Vec<f32> = Tensor::randn(0f32, 1.0, (11, k), &dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
        let all = p.matmul(&x, 11).unwrap();
        for r in 0..11 {
            let alone = p.matmul(&x[r * k..(r + 1) * k], 1).unwrap();
            assert_eq!(&all[r * n..(r + 1) * n], alone.as_slice(), "row {r}");
        }
        let q4 = QTensor::quantize(&Tensor::randn(0f32, 1.0, (16, 256), &dev).unwrap(), GgmlDType::Q4K).unwrap();
        assert!(PackedQ6K::pack(&[&q4]).unwrap().is_none());
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
        let q = QTensor::quantize(&Tensor::randn(0f32, 1.0, (n, k), &dev).unwrap(), GgmlDType::Q6K).unwrap();
        let p = PackedQ6K::pack(&[&q]).unwrap().unwrap();
        for m in [1usize, 2, 3, 4, 5, 9] {
            let x: Vec<f32> = Tensor::randn(0f32, 1.0, (m, k), &dev).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let got = p.matmul_with(&x, m, Isa::Avx2).unwrap();
            let want = reference(&q, &x, m);
            let scale = want.iter().fold(0f32, |a, v| a.max(v.abs()));
            let worst = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(worst <= 1e-4 * scale.max(1.0), "m={m}: max abs diff {worst}");
            if Isa::Avx512Vnni.supported() {
                assert_eq!(got, p.matmul_with(&x, m, Isa::Avx512Vnni).unwrap(), "m={m}");
            }
        }
    }
}
