//! Decode-step attention on plain slices: the few new tokens of every row against the shared
//! prefix and the row's own suffix slots, in one loop with no temporary tensors.
//!
//! A lookahead pass attends 1 new token per row over a few hundred keys: a few MFLOP for
//! the whole batch, which candle's general path spreads over ~20 tensor ops and four small
//! GEMM calls per layer, each with its own allocation and dispatch. Here every (row, head,
//! token) computes its scores, softmax and weighted values directly. Each row reads only its
//! own data, in a fixed order, so a row's result does not depend on the other rows of the
//! batch (merged passes stay bit-identical to solo ones).

/// Geometry of one call.
#[derive(Debug, Clone, Copy)]
pub struct AttnShape {
    /// Rows of the batch.
    pub rows: usize,
    /// New tokens per row (padded).
    pub t: usize,
    /// Query heads.
    pub hq: usize,
    /// Key/value heads (each serves `hq / hkv` query heads).
    pub hkv: usize,
    /// Head width.
    pub d: usize,
}

/// Keys and values of the shared prefix: `[hkv, len, d]` each.
#[derive(Debug, Clone, Copy)]
pub struct PrefixKv<'a> {
    /// Keys.
    pub k: &'a [f32],
    /// Values.
    pub v: &'a [f32],
    /// Prefix length.
    pub len: usize,
}

/// Per-row suffix keys and values: `[rows, hkv, cap, d]` each, of which the first `used`
/// slots are in use.
#[derive(Debug, Clone, Copy)]
pub struct SuffixKv<'a> {
    /// Keys.
    pub k: &'a [f32],
    /// Values.
    pub v: &'a [f32],
    /// Slots allocated per row and head.
    pub cap: usize,
    /// Slots in use.
    pub used: usize,
}

/// `out[i, j, h*d..]` = softmax(q·K + mask) V for every query row `i`, new token `j` and
/// query head `h`. `q` is `[s.rows, t, hq, d]` (already rotated and scaled), `out` is
/// `[s.rows, t, hq*d]`. Query row `i` is cache row `cache_rows[i]` (row `i` itself when
/// `None`): the row whose suffix slots it reads and whose lines of the additive mask
/// `[cache rows, t, prefix.len + suffix.used]` apply, so a pass can leave out rows that
/// bring no token. Rows run in parallel on candle's CPU pool; with AVX-512 the inner loops
/// are 16 lanes wide.
pub fn attend(
    q: &[f32],
    prefix: Option<PrefixKv<'_>>,
    suffix: Option<SuffixKv<'_>>,
    mask: &[f32],
    s: AttnShape,
    cache_rows: Option<&[usize]>,
    out: &mut [f32],
) {
    let per_row = s.t * s.hq * s.d;
    let out_ptr = out.as_mut_ptr() as usize;
    let run = |range: std::ops::Range<usize>| {
        for i in range {
            let r = cache_rows.map_or(i, |m| m[i]);
            let q_row = &q[i * per_row..][..per_row];
            // SAFETY: query row i owns out[i*per_row .. (i+1)*per_row], disjoint across rows,
            // and `out` outlives the pool call.
            let row_out = unsafe { std::slice::from_raw_parts_mut((out_ptr as *mut f32).add(i * per_row), per_row) };
            #[cfg(target_arch = "x86_64")]
            if super::has_avx512f() {
                // SAFETY: the CPU has AVX-512F (checked at run time).
                unsafe { attend_row_avx512(q_row, prefix, suffix, mask, s, r, row_out) };
                continue;
            }
            attend_row(q_row, prefix, suffix, mask, s, r, row_out);
        }
    };
    if s.rows > 1 {
        candle_core::utils::barrier_pool().execute_chunked(s.rows, run);
    } else {
        run(0..s.rows);
    }
}

/// One query row of [`attend`] (`q` and `out` its `[t, hq*d]`, `r` its cache row) with AVX-512: each key/value head and its group of query heads
/// at once, so every key and value vector is loaded once for the whole group and the
/// products accumulate in registers. Falls back to [`attend_row`] for head widths that are
/// not a multiple of 64 or groups wider than 8.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn attend_row_avx512(
    q: &[f32],
    prefix: Option<PrefixKv<'_>>,
    suffix: Option<SuffixKv<'_>>,
    mask: &[f32],
    s: AttnShape,
    r: usize,
    out: &mut [f32],
) {
    let AttnShape { t, hq, hkv, d, .. } = s;
    let group = hq / hkv.max(1);
    if d % 64 != 0 || !(1..=8).contains(&group) {
        return attend_row(q, prefix, suffix, mask, s, r, out);
    }
    let p_len = prefix.map_or(0, |p| p.len);
    let used = suffix.map_or(0, |x| x.used);
    let keys = p_len + used;
    let mut scores = vec![0f32; group * keys];
    for j in 0..t {
        let m = &mask[(r * t + j) * keys..][..keys];
        for kvh in 0..hkv {
            let mut segs: [(&[f32], &[f32]); 2] = [(&[], &[]); 2];
            if let Some(p) = prefix {
                let span = kvh * p.len * d..(kvh + 1) * p.len * d;
                segs[0] = (&p.k[span.clone()], &p.v[span]);
            }
            if let Some(x) = suffix {
                let base = (r * hkv + kvh) * x.cap * d;
                segs[1] = (&x.k[base..base + x.used * d], &x.v[base..base + x.used * d]);
            }
            let heads = (j * hq + kvh * group) * d..(j * hq + (kvh + 1) * group) * d;
            let o = &mut out[(j * hq + kvh * group) * d..(j * hq + (kvh + 1) * group) * d];
            match group {
                1 => group_avx512::<1>(&q[heads], &segs, m, d, &mut scores, o),
                2 => group_avx512::<2>(&q[heads], &segs, m, d, &mut scores, o),
                3 => group_avx512::<3>(&q[heads], &segs, m, d, &mut scores, o),
                4 => group_avx512::<4>(&q[heads], &segs, m, d, &mut scores, o),
                5 => group_avx512::<5>(&q[heads], &segs, m, d, &mut scores, o),
                6 => group_avx512::<6>(&q[heads], &segs, m, d, &mut scores, o),
                7 => group_avx512::<7>(&q[heads], &segs, m, d, &mut scores, o),
                _ => group_avx512::<8>(&q[heads], &segs, m, d, &mut scores, o),
            }
        }
    }
}

/// One token's `G` query heads (`q`: `[G, d]`) against the keys/values of `segs` (each a
/// `[n, d]` block, in key order), `mask` over all keys → `out` `[G, d]`. `d % 64 == 0`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn group_avx512<const G: usize>(q: &[f32], segs: &[(&[f32], &[f32]); 2], mask: &[f32], d: usize, scores: &mut [f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let keys = mask.len();
    let qp = q.as_ptr();
    // scores[h * keys + c] = q_h · k_c + mask_c
    let mut c = 0;
    for (k, _) in segs {
        for kv in k.chunks_exact(d) {
            let kp = kv.as_ptr();
            let mut acc = [_mm512_setzero_ps(); G];
            for e in (0..d).step_by(16) {
                let kx = _mm512_loadu_ps(kp.add(e));
                for (h, a) in acc.iter_mut().enumerate() {
                    *a = _mm512_fmadd_ps(_mm512_loadu_ps(qp.add(h * d + e)), kx, *a);
                }
            }
            for (h, a) in acc.iter().enumerate() {
                scores[h * keys + c] = _mm512_reduce_add_ps(*a) + mask[c];
            }
            c += 1;
        }
    }
    for h in 0..G {
        softmax_in_place(&mut scores[h * keys..(h + 1) * keys]);
    }
    // out_h = Σ_c p_hc v_c, 64 output values per pass held in 4 registers per head
    let op = out.as_mut_ptr();
    for e0 in (0..d).step_by(64) {
        let mut acc = [[_mm512_setzero_ps(); 4]; G];
        let mut c = 0;
        for (_, v) in segs {
            for vv in v.chunks_exact(d) {
                let vp = vv.as_ptr().add(e0);
                let x = [_mm512_loadu_ps(vp), _mm512_loadu_ps(vp.add(16)), _mm512_loadu_ps(vp.add(32)), _mm512_loadu_ps(vp.add(48))];
                for (h, a) in acc.iter_mut().enumerate() {
                    let w = _mm512_set1_ps(scores[h * keys + c]);
                    for i in 0..4 {
                        a[i] = _mm512_fmadd_ps(w, x[i], a[i]);
                    }
                }
                c += 1;
            }
        }
        for (h, a) in acc.iter().enumerate() {
            for (i, v) in a.iter().enumerate() {
                _mm512_storeu_ps(op.add(h * d + e0 + 16 * i), *v);
            }
        }
    }
}

/// One query row of [`attend`]: `q` and `out` are that row's `[t, hq*d]`, `r` its cache row.
#[inline(always)]
fn attend_row(q: &[f32], prefix: Option<PrefixKv<'_>>, suffix: Option<SuffixKv<'_>>, mask: &[f32], s: AttnShape, r: usize, out: &mut [f32]) {
    let AttnShape { t, hq, hkv, d, .. } = s;
    let p_len = prefix.map_or(0, |p| p.len);
    let used = suffix.map_or(0, |x| x.used);
    let keys = p_len + used;
    let group = hq / hkv.max(1);
    let mut scores = vec![0f32; keys];
    for j in 0..t {
        let m = &mask[(r * t + j) * keys..][..keys];
        for h in 0..hq {
            let kvh = h / group;
            let qv = &q[(j * hq + h) * d..][..d];
            if let Some(p) = prefix {
                let base = kvh * p.len * d;
                for (c, sc) in scores[..p_len].iter_mut().enumerate() {
                    *sc = dot(qv, &p.k[base + c * d..][..d]) + m[c];
                }
            }
            if let Some(x) = suffix {
                let base = (r * hkv + kvh) * x.cap * d;
                for (c, sc) in scores[p_len..].iter_mut().enumerate() {
                    *sc = dot(qv, &x.k[base + c * d..][..d]) + m[p_len + c];
                }
            }
            softmax_in_place(&mut scores);
            let acc = &mut out[(j * hq + h) * d..][..d];
            acc.iter_mut().for_each(|a| *a = 0.0);
            if let Some(p) = prefix {
                let base = kvh * p.len * d;
                for (c, &w) in scores[..p_len].iter().enumerate() {
                    axpy(w, &p.v[base + c * d..][..d], acc);
                }
            }
            if let Some(x) = suffix {
                let base = (r * hkv + kvh) * x.cap * d;
                for (c, &w) in scores[p_len..].iter().enumerate() {
                    axpy(w, &x.v[base + c * d..][..d], acc);
                }
            }
        }
    }
}

use super::math::exp_nonpositive;

/// Rotate one head vector in place, NeoX style: pairs `(i, i + d/2)`.
pub fn rope_neox(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    let half = x.len() / 2;
    let (a, b) = x.split_at_mut(half);
    for i in 0..half {
        let (x1, x2) = (a[i], b[i]);
        a[i] = x1 * cos[i] - x2 * sin[i];
        b[i] = x1 * sin[i] + x2 * cos[i];
    }
}

/// Rotate one head vector in place, interleaved (GPT-J / llama) style: pairs `(2i, 2i+1)`.
pub fn rope_interleaved(x: &mut [f32], cos: &[f32], sin: &[f32]) {
    for (i, pair) in x.chunks_exact_mut(2).enumerate() {
        let (x1, x2) = (pair[0], pair[1]);
        pair[0] = x1 * cos[i] - x2 * sin[i];
        pair[1] = x1 * sin[i] + x2 * cos[i];
    }
}

/// Dot product: four 16-lane partial sums (independent FMA chains that vectorise), reduced
/// as a tree; a fixed order, so the same inputs always give the same bits.
#[inline(always)]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    const W: usize = 64;
    let mut lanes = [0f32; W];
    let (ca, cb) = (a.chunks_exact(W), b.chunks_exact(W));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..W {
            lanes[i] += x[i] * y[i];
        }
    }
    let mut w = W / 2;
    while w > 0 {
        for i in 0..w {
            lanes[i] += lanes[i + w];
        }
        w /= 2;
    }
    lanes[0] + tail
}

/// `acc += w · v`.
#[inline(always)]
fn axpy(w: f32, v: &[f32], acc: &mut [f32]) {
    for (a, &x) in acc.iter_mut().zip(v) {
        *a += w * x;
    }
}

/// Softmax in place; masked entries (below -1e29) are exactly 0.
#[inline(always)]
fn softmax_in_place(s: &mut [f32]) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for x in s.iter_mut() {
        *x = if *x < -1e29 { 0.0 } else { exp_nonpositive(*x - max) };
        sum += *x;
    }
    let inv = 1.0 / sum;
    s.iter_mut().for_each(|x| *x *= inv);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn val(i: usize) -> f32 {
        ((i * 7919 + 13) % 101) as f32 / 50.0 - 1.0
    }

    /// Reference: attention of one query over an explicit list of (key, value).
    fn reference(q: &[f32], kv: &[(Vec<f32>, Vec<f32>)]) -> Vec<f32> {
        let s: Vec<f64> = kv.iter().map(|(k, _)| q.iter().zip(k).map(|(a, b)| (a * b) as f64).sum()).collect();
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let z: f64 = e.iter().sum();
        let d = q.len();
        (0..d).map(|i| kv.iter().zip(&e).map(|((_, v), w)| v[i] as f64 * w / z).sum::<f64>() as f32).collect()
    }

    #[test]
    fn matches_reference_with_prefix_suffix_mask_and_gqa() {
        // d = 20 takes the portable path; d = 64 with 2 heads per kv head the AVX-512 one
        check_against_reference(AttnShape { rows: 3, t: 2, hq: 4, hkv: 2, d: 20 });
        check_against_reference(AttnShape { rows: 3, t: 2, hq: 4, hkv: 2, d: 64 });
        check_against_reference(AttnShape { rows: 2, t: 3, hq: 7, hkv: 1, d: 128 });
    }

    fn check_against_reference(s: AttnShape) {
        let (p_len, cap, used) = (5, 8, 3);
        let pk: Vec<f32> = (0..s.hkv * p_len * s.d).map(val).collect();
        let pv: Vec<f32> = (0..s.hkv * p_len * s.d).map(|i| val(i + 1000)).collect();
        let sk: Vec<f32> = (0..s.rows * s.hkv * cap * s.d).map(|i| val(i + 2000)).collect();
        let sv: Vec<f32> = (0..s.rows * s.hkv * cap * s.d).map(|i| val(i + 3000)).collect();
        let q: Vec<f32> = (0..s.rows * s.t * s.hq * s.d).map(|i| val(i + 4000)).collect();
        let keys = p_len + used;
        // row r, token j may see prefix keys c < 5 - (r + j) % 3 and suffix slot c <= j
        let visible = |r: usize, j: usize, c: usize| if c < p_len { c < p_len - (r + j) % 3 } else { c - p_len <= j };
        let mut mask = vec![0f32; s.rows * s.t * keys];
        for r in 0..s.rows {
            for j in 0..s.t {
                for c in 0..keys {
                    if !visible(r, j, c) {
                        mask[(r * s.t + j) * keys + c] = -1e30;
                    }
                }
            }
        }
        let mut out = vec![0f32; s.rows * s.t * s.hq * s.d];
        attend(
            &q,
            Some(PrefixKv { k: &pk, v: &pv, len: p_len }),
            Some(SuffixKv { k: &sk, v: &sv, cap, used }),
            &mask,
            s,
            None,
            &mut out,
        );
        for r in 0..s.rows {
            for j in 0..s.t {
                for h in 0..s.hq {
                    let kvh = h / (s.hq / s.hkv);
                    let mut kv = Vec::new();
                    for c in (0..keys).filter(|&c| visible(r, j, c)) {
                        let (k, v) = if c < p_len {
                            let o = (kvh * p_len + c) * s.d;
                            (pk[o..o + s.d].to_vec(), pv[o..o + s.d].to_vec())
                        } else {
                            let o = ((r * s.hkv + kvh) * cap + c - p_len) * s.d;
                            (sk[o..o + s.d].to_vec(), sv[o..o + s.d].to_vec())
                        };
                        kv.push((k, v));
                    }
                    let qo = ((r * s.t + j) * s.hq + h) * s.d;
                    let want = reference(&q[qo..qo + s.d], &kv);
                    let got = &out[qo..qo + s.d];
                    for (a, b) in got.iter().zip(&want) {
                        assert!((a - b).abs() < 1e-5, "row {r} token {j} head {h}: {a} vs {b}");
                    }
                }
            }
        }
    }

    #[test]
    fn gemma_shaped_heads_match_reference() {
        // d = 256, 4 query heads on 1 kv head: the shape the AVX-512 path takes
        let s = AttnShape { rows: 2, t: 1, hq: 4, hkv: 1, d: 256 };
        let (p_len, cap, used) = (37, 16, 5);
        let pk: Vec<f32> = (0..p_len * s.d).map(|i| val(i) * 0.2).collect();
        let pv: Vec<f32> = (0..p_len * s.d).map(|i| val(i + 9)).collect();
        let sk: Vec<f32> = (0..s.rows * cap * s.d).map(|i| val(i + 3) * 0.2).collect();
        let sv: Vec<f32> = (0..s.rows * cap * s.d).map(|i| val(i + 11)).collect();
        let q: Vec<f32> = (0..s.rows * s.hq * s.d).map(|i| val(i + 17) * 0.2).collect();
        let keys = p_len + used;
        let mut mask = vec![0f32; s.rows * keys];
        mask[keys - 1] = -1e30; // row 0 does not see its last slot
        let mut out = vec![0f32; s.rows * s.hq * s.d];
        attend(&q, Some(PrefixKv { k: &pk, v: &pv, len: p_len }), Some(SuffixKv { k: &sk, v: &sv, cap, used }), &mask, s, None, &mut out);
        for r in 0..s.rows {
            let visible = if r == 0 { keys - 1 } else { keys };
            for h in 0..s.hq {
                let kv: Vec<(Vec<f32>, Vec<f32>)> = (0..visible)
                    .map(|c| {
                        if c < p_len {
                            (pk[c * s.d..(c + 1) * s.d].to_vec(), pv[c * s.d..(c + 1) * s.d].to_vec())
                        } else {
                            let o = (r * cap + c - p_len) * s.d;
                            (sk[o..o + s.d].to_vec(), sv[o..o + s.d].to_vec())
                        }
                    })
                    .collect();
                let qo = (r * s.hq + h) * s.d;
                let want = reference(&q[qo..qo + s.d], &kv);
                for (a, b) in out[qo..qo + s.d].iter().zip(&want) {
                    assert!((a - b).abs() < 1e-5, "row {r} head {h}: {a} vs {b}");
                }
            }
        }
    }

    #[test]
    fn a_row_does_not_depend_on_the_others() {
        let s = AttnShape { rows: 2, t: 1, hq: 2, hkv: 1, d: 32 };
        let (cap, used) = (4, 2);
        let sk: Vec<f32> = (0..s.rows * cap * s.d).map(val).collect();
        let sv: Vec<f32> = (0..s.rows * cap * s.d).map(|i| val(i + 77)).collect();
        let q: Vec<f32> = (0..s.rows * s.hq * s.d).map(|i| val(i + 5)).collect();
        let mask = vec![0f32; s.rows * used];
        let mut both = vec![0f32; s.rows * s.hq * s.d];
        attend(&q, None, Some(SuffixKv { k: &sk, v: &sv, cap, used }), &mask, s, None, &mut both);
        // row 1 alone: its own slice of every input
        let one = AttnShape { rows: 1, ..s };
        let mut alone = vec![0f32; s.hq * s.d];
        let n = cap * s.d;
        attend(&q[s.hq * s.d..], None, Some(SuffixKv { k: &sk[n..], v: &sv[n..], cap, used }), &mask[used..], one, None, &mut alone);
        assert_eq!(&both[s.hq * s.d..], &alone[..]);
    }

    #[test]
    fn left_out_rows_leave_the_others_bit_identical() {
        // 4 cache rows, the pass brings tokens for rows 1 and 3 only: their query rows alone,
        // mapped onto the cache's rows, give exactly what the full pass gives them
        for d in [32, 64] {
            let s = AttnShape { rows: 4, t: 2, hq: 4, hkv: 2, d };
            let (p_len, cap, used) = (3, 4, 2);
            let pk: Vec<f32> = (0..s.hkv * p_len * d).map(|i| val(i + 1)).collect();
            let pv: Vec<f32> = (0..s.hkv * p_len * d).map(|i| val(i + 2)).collect();
            let sk: Vec<f32> = (0..s.rows * s.hkv * cap * d).map(|i| val(i + 3)).collect();
            let sv: Vec<f32> = (0..s.rows * s.hkv * cap * d).map(|i| val(i + 4)).collect();
            let q: Vec<f32> = (0..s.rows * s.t * s.hq * d).map(|i| val(i + 5)).collect();
            let keys = p_len + used;
            // each row its own visibility, so a wrong row map reads the wrong mask line
            let mask: Vec<f32> = (0..s.rows * s.t * keys).map(|i| if (i / keys + i % keys) % 3 == 0 && i % keys > 0 { -1e30 } else { 0.0 }).collect();
            let (prefix, suffix) = (Some(PrefixKv { k: &pk, v: &pv, len: p_len }), Some(SuffixKv { k: &sk, v: &sv, cap, used }));
            let mut full = vec![0f32; s.rows * s.t * s.hq * d];
            attend(&q, prefix, suffix, &mask, s, None, &mut full);
            let per_row = s.t * s.hq * d;
            let picked = [1usize, 3];
            let q_some: Vec<f32> = picked.iter().flat_map(|&r| q[r * per_row..(r + 1) * per_row].to_vec()).collect();
            let mut some = vec![0f32; picked.len() * per_row];
            attend(&q_some, prefix, suffix, &mask, AttnShape { rows: picked.len(), ..s }, Some(&picked), &mut some);
            for (i, &r) in picked.iter().enumerate() {
                assert_eq!(&some[i * per_row..(i + 1) * per_row], &full[r * per_row..(r + 1) * per_row], "d {d}: cache row {r}");
            }
            assert_ne!(&full[per_row..2 * per_row], &full[3 * per_row..4 * per_row], "rows differ, so the map is tested");
        }
    }

    #[test]
    fn softmax_zeroes_masked_keys() {
        let mut s = [0.0, -1e30, 1.0];
        softmax_in_place(&mut s);
        assert_eq!(s[1], 0.0);
        assert!((s[0] + s[2] - 1.0).abs() < 1e-6 && (s[2] / s[0] - std::f32::consts::E).abs() < 1e-5);
    }

    #[test]
    fn rope_styles_rotate_the_right_pairs() {
        let (c, s) = (0.6f32, 0.8f32);
        let mut x = [1.0, 2.0, 3.0, 4.0];
        rope_neox(&mut x, &[c, 1.0], &[s, 0.0]);
        // pair (0, 2) rotated, pair (1, 3) by angle 0
        assert_eq!(x, [1.0 * c - 3.0 * s, 2.0, 1.0 * s + 3.0 * c, 4.0]);
        let mut y = [1.0, 2.0, 3.0, 4.0];
        rope_interleaved(&mut y, &[c, 1.0], &[s, 0.0]);
        assert_eq!(y, [1.0 * c - 2.0 * s, 1.0 * s + 2.0 * c, 3.0, 4.0]);
    }
}
