//! Building blocks of the packed kernels' AVX2 paths, for CPUs without AVX-512 VNNI: the
//! `vpdpbusd` step (four u8 × i8 products added into each i32 lane) as `vpmaddubsw` +
//! `vpmaddwd`, and the fifth-bit masks of Q5_0 / Q5_K tiles expanded to bytes.
//!
//! An AVX2 vector holds 8 of a tile's 16 outputs, so the AVX2 passes (next to the AVX-512
//! ones in each format's module) run a tile as two halves of 8 rows, each reading the
//! 32-byte half of every 64-byte tile vector that holds its rows. The integer sums are the
//! same exact values as `vpdpbusd`'s, so both paths give the same bits.

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// `acc + Σ` of four adjacent `w · a` products per i32 lane: `vpdpbusd` for unsigned weights
/// `w` and signed activations `a`, exact while two adjacent products fit an i16 (weights up
/// to 6 bits: 2 · 63 · 128 < 2^15).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn dot_u8_i8(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(_mm256_maddubs_epi16(w, a), _mm256_set1_epi16(1)))
}

/// `acc + ` the `vpmaddubsw` pair sums of `w · a` in i16 lanes, for chains that add several
/// before one [`widen`]: exact while the sums stay within an i16, which bounds how many a
/// chain may add (`n · 2 · max w · 128 ≤ 32767`: 8 for 4-bit weights, 4 for 5-bit, 2 for
/// 6-bit). Saves the `vpmaddwd` and `vpaddd` of [`dot_u8_i8`] on all but one product.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn pairs_u8_i8(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, a))
}

/// `acc +` the i16 pair sums of [`pairs_u8_i8`] added in pairs into i32 lanes: the same
/// integers as [`dot_u8_i8`] would have added.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn widen(acc: __m256i, pairs: __m256i) -> __m256i {
    _mm256_add_epi32(acc, _mm256_madd_epi16(pairs, _mm256_set1_epi16(1)))
}

/// How many [`pairs_u8_i8`] products of weights below `2^bits` an i16 chain may add before
/// [`widen`] (activations down to −128).
pub(super) const fn chain_length(bits: u32) -> usize {
    32767 / (2 * ((1 << bits) - 1) * 128)
}

/// The same for signed 8-bit weights (Q8_0): `|w| · (a with w's sign)`, exact as
/// `|w| ≤ 128` and `|a| ≤ 127` keep two products within an i16.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn dot_i8_i8(acc: __m256i, w: __m256i, a: __m256i) -> __m256i {
    dot_u8_i8(acc, _mm256_abs_epi8(w), _mm256_sign_epi8(a, w))
}

/// 32 bits of a fifth-bit mask as bytes: `0x10` in byte `j` where bit `j` is set, else 0.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn fifth_bits(mask: u32) -> __m256i {
    // byte j takes mask byte j / 8 (each 128-bit lane holds the whole mask), then bit j % 8
    let idx = _mm256_setr_epi8(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3);
    let bytes = _mm256_shuffle_epi8(_mm256_set1_epi32(mask as i32), idx);
    let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
    let set = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, bit), bit);
    _mm256_and_si256(set, _mm256_set1_epi8(0x10))
}

/// Broadcast the 4 bytes at `p` (4 activations) to every i32 lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn four(p: *const i8) -> __m256i {
    _mm256_set1_epi32((p as *const i32).read_unaligned())
}

/// 8 f16 values at `p` as f32.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn f16x8(p: *const u16) -> __m256 {
    _mm256_cvtph_ps(_mm_loadu_si128(p as *const __m128i))
}

/// 8 bytes at `p` as i32 lanes, zero-extended (`u8`) or sign-extended (`i8`).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn u8x8(p: *const u8) -> __m256i {
    _mm256_cvtepu8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

/// See [`u8x8`].
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[inline]
pub(super) unsafe fn i8x8(p: *const i8) -> __m256i {
    _mm256_cvtepi8_epi32(_mm_loadl_epi64(p as *const __m128i))
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn the_building_blocks_compute_what_they_say() {
        if !super::super::Isa::Avx2.supported() {
            return;
        }
        unsafe {
            // every byte position of the mask
            for j in 0..32 {
                let mut out = [0u8; 32];
                _mm256_storeu_si256(out.as_mut_ptr() as *mut __m256i, fifth_bits(1 << j));
                let want: Vec<u8> = (0..32).map(|b| if b == j { 0x10 } else { 0 }).collect();
                assert_eq!(out.as_slice(), want.as_slice(), "bit {j}");
            }
            // the dot products, at the extremes of their operands (Q8_0 activations lie in
            // -127..=127; Q8_K ones reach -128, against weights of at most 6 bits)
            let w: Vec<i8> = (0..32).map(|i| [-128i8, 127, -1, 0][i % 4]).collect();
            let a: Vec<i8> = (0..32).map(|i| [127i8, -127, -127, 5][(i / 4 + i) % 4]).collect();
            let wv = _mm256_loadu_si256(w.as_ptr() as *const __m256i);
            let av = _mm256_loadu_si256(a.as_ptr() as *const __m256i);
            let mut got = [0i32; 8];
            _mm256_storeu_si256(got.as_mut_ptr() as *mut __m256i, dot_i8_i8(_mm256_setzero_si256(), wv, av));
            for (l, g) in got.iter().enumerate() {
                let want: i32 = (0..4).map(|i| w[4 * l + i] as i32 * a[4 * l + i] as i32).sum();
                assert_eq!(*g, want, "signed lane {l}");
            }
            let u: Vec<u8> = (0..32).map(|i| [63u8, 0, 31, 63][i % 4]).collect();
            let uv = _mm256_loadu_si256(u.as_ptr() as *const __m256i);
            let a: Vec<i8> = (0..32).map(|i| [-128i8, 127, -128, -128][(i / 4 + i) % 4]).collect();
            let av = _mm256_loadu_si256(a.as_ptr() as *const __m256i);
            _mm256_storeu_si256(got.as_mut_ptr() as *mut __m256i, dot_u8_i8(_mm256_set1_epi32(7), uv, av));
            for (l, g) in got.iter().enumerate() {
                let want: i32 = 7 + (0..4).map(|i| u[4 * l + i] as i32 * a[4 * l + i] as i32).sum::<i32>();
                assert_eq!(*g, want, "unsigned lane {l}");
            }
            // chains of the longest allowed length at the worst operands stay exact
            assert_eq!((chain_length(4), chain_length(5), chain_length(6)), (8, 4, 2));
            for bits in [4u32, 5, 6] {
                let top = ((1u16 << bits) - 1) as u8;
                let (w, a) = (_mm256_set1_epi8(top as i8), _mm256_set1_epi8(i8::MIN));
                let mut chain = _mm256_setzero_si256();
                for _ in 0..chain_length(bits) {
                    chain = pairs_u8_i8(chain, w, a);
                }
                _mm256_storeu_si256(got.as_mut_ptr() as *mut __m256i, widen(_mm256_setzero_si256(), chain));
                let want = -(chain_length(bits) as i32) * 4 * top as i32 * 128;
                assert!(got.iter().all(|&g| g == want), "{bits} bits: {got:?} vs {want}");
            }
        }
    }
}
