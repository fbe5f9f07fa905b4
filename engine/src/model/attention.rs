//! Self-attention of one layer over the search KV cache: the shared prefix is attended by all
//! rows with a single matmul (rows folded into the query dimension), the per-row suffix with a
//! batched matmul; one softmax over both, masks from [`crate::kv_cache::StepInfo`].
//!
//! On CPU, steps of at most [`FAST_MAX_T`] new tokens per row (decoding, lookahead) take a
//! direct path instead: q/k norms, RoPE and the attention itself run on the fused q/k/v
//! matmul's output rows ([`crate::kernels::attention`]), with no intermediate tensors. That
//! path also takes passes that leave out the rows bringing no token
//! ([`AttnGroup::cache_rows`]).

/// Widest step (new tokens per row) the direct CPU path takes; prefill chunks go through
/// candle's batched matmuls.
pub const FAST_MAX_T: usize = 8;

use candle_core::Tensor;

use crate::kernels::attention::{attend, rope_interleaved, rope_neox, AttnShape, PrefixKv, SuffixKv};
use crate::kernels::CpuSlice;
use crate::kv_cache::{KvCache, StepInfo};
use crate::model::config::{ModelConfig, RopeStyle};
use crate::model::layers::{apply_rope, merge_heads, softmax_last, split_heads, Linear, Projections, RmsNorm};
use crate::{Error, Result};

/// Weights of one attention block.
#[derive(Clone)]
pub struct Attention {
    /// q, k and v projections (fused into one matmul where possible).
    pub qkv: Projections,
    /// Output projection back to the hidden size.
    pub o: Linear,
    /// Per-head RMS norm on q, for models with q/k norms (Gemma 3, Qwen 3).
    pub q_norm: Option<RmsNorm>,
    /// Per-head RMS norm on k, for models with q/k norms (Gemma 3, Qwen 3).
    pub k_norm: Option<RmsNorm>,
}

/// Per-step inputs shared by all layers of one kind (global or local), for one cache.
pub struct AttnInputs<'a> {
    /// Where the new tokens go in the cache.
    pub step: &'a StepInfo,
    /// Additive attention mask `[rows, 1, t, keys]`.
    pub mask: &'a Tensor,
    /// RoPE tables for the new positions.
    pub cos: &'a Tensor,
    /// RoPE tables for the new positions.
    pub sin: &'a Tensor,
}

/// One cache's rows within a (possibly merged) batch: attention runs per cache, the
/// projections over the rows of every cache at once.
pub struct AttnGroup<'a, 'c> {
    /// The cache the rows attend over and write to.
    pub cache: &'c mut KvCache,
    /// Inputs of global-attention layers.
    pub global: AttnInputs<'a>,
    /// Inputs of sliding-window layers.
    pub local: AttnInputs<'a>,
    /// How many consecutive rows of the batch belong to this cache.
    pub rows: usize,
    /// The cache row of each of those batch rows, where the pass leaves out rows that bring
    /// no token (`None`: batch row `i` is cache row `i`, all of them). Only the direct CPU
    /// path takes such a group.
    pub cache_rows: Option<&'a [usize]>,
}

impl Attention {
    /// `x`: normalised hidden states `[rows, t, hidden]` of every group's rows, concatenated in
    /// group order → attention output `[rows, t, hidden]`. `local` picks the sliding-window
    /// inputs.
    pub fn forward(
        &self,
        cfg: &ModelConfig,
        layer: usize,
        local: bool,
        x: &Tensor,
        groups: &mut [AttnGroup<'_, '_>],
    ) -> Result<Tensor> {
        if let Some(out) = self.forward_direct(cfg, layer, local, x, groups)? {
            return Ok(out);
        }
        if groups.iter().any(|g| g.cache_rows.is_some()) {
            return Err(Error::Internal("a pass that leaves out rows took the general attention path".into()));
        }
        let (hq, hkv, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let qkv = self.qkv.forward(x)?;
        let mut q = split_heads(&qkv[0].contiguous()?, hq, d)?;
        let mut k = split_heads(&qkv[1].contiguous()?, hkv, d)?;
        let v = split_heads(&qkv[2].contiguous()?, hkv, d)?;
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q = qn.forward(&q)?;
            k = kn.forward(&k)?;
        }
        let mut outs = Vec::with_capacity(groups.len());
        let mut off = 0;
        for g in groups.iter_mut() {
            let inp = if local { &g.local } else { &g.global };
            let (qg, kg, vg) = (q.narrow(0, off, g.rows)?, k.narrow(0, off, g.rows)?, v.narrow(0, off, g.rows)?);
            outs.push(self.attend(cfg, layer, &qg, &kg, &vg, g.cache, inp)?);
            off += g.rows;
        }
        let out = if outs.len() == 1 { outs.pop().expect("one group") } else { Tensor::cat(&outs, 0)? };
        self.o.forward(&out)
    }

    /// The direct CPU path (see the module documentation); `None` where it does not apply.
    fn forward_direct(
        &self,
        cfg: &ModelConfig,
        layer: usize,
        local: bool,
        x: &Tensor,
        groups: &mut [AttnGroup<'_, '_>],
    ) -> Result<Option<Tensor>> {
        let (rows_total, t, _) = x.dims3()?;
        if !x.device().is_cpu() || t > FAST_MAX_T {
            return Ok(None);
        }
        let (hq, hkv, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let Some((y, widths)) = self.qkv.forward_flat(x)? else { return Ok(None) };
        if widths != [hq * d, hkv * d, hkv * d] || hkv == 0 || hq % hkv != 0 {
            return Err(Error::invalid(format!("q/k/v widths {widths:?} do not match {hq}/{hkv} heads of {d}")));
        }
        let tokens = rows_total * t;
        let (qw, kw) = (hq * d, hkv * d);
        let mut q = Vec::with_capacity(tokens * qw);
        let mut k = Vec::with_capacity(tokens * kw);
        let mut v = Vec::with_capacity(tokens * kw);
        for tok in y.chunks_exact(qw + 2 * kw) {
            q.extend_from_slice(&tok[..qw]);
            k.extend_from_slice(&tok[qw..qw + kw]);
            v.extend_from_slice(&tok[qw + kw..]);
        }
        if let (Some(qn), Some(kn)) = (&self.q_norm, &self.k_norm) {
            q.chunks_exact_mut(qn.width()).for_each(|h| qn.normalize(h));
            k.chunks_exact_mut(kn.width()).for_each(|h| kn.normalize(h));
        }
        let rope = match cfg.rope_style {
            RopeStyle::Neox => rope_neox,
            RopeStyle::Interleaved => rope_interleaved,
        };
        let scale = cfg.attn_scale as f32;
        let half = d / 2;
        let mut out = vec![0f32; tokens * qw];
        let mut off = 0;
        for g in groups.iter_mut() {
            let inp = if local { &g.local } else { &g.global };
            let rows = g.rows;
            {
                let (cos, sin) = match (CpuSlice::of(inp.cos), CpuSlice::of(inp.sin)) {
                    (Some(c), Some(s)) => (c, s),
                    _ => return Err(Error::invalid("RoPE tables are not contiguous f32 on CPU")),
                };
                let (cos, sin) = (cos.get(), sin.get());
                for i in 0..rows * t {
                    let (c, s) = (&cos[i * half..][..half], &sin[i * half..][..half]);
                    let tok = off * t + i;
                    for h in q[tok * qw..][..qw].chunks_exact_mut(d) {
                        rope(h, c, s);
                        h.iter_mut().for_each(|a| *a *= scale);
                    }
                    for h in k[tok * kw..][..kw].chunks_exact_mut(d) {
                        rope(h, c, s);
                    }
                }
            }
            // the cache takes keys/values head-major for all its rows: [cache rows, hkv, t, d];
            // rows left out of the pass get zeros in slots their masks never open
            let cache_rows = g.cache.rows();
            let head_major = |src: &[f32]| -> Vec<f32> {
                let mut dst = vec![0f32; cache_rows * t * kw];
                for i in 0..rows {
                    let r = g.cache_rows.map_or(i, |m| m[i]);
                    for j in 0..t {
                        for h in 0..hkv {
                            let from = ((i * t + j) * hkv + h) * d;
                            let to = ((r * hkv + h) * t + j) * d;
                            dst[to..to + d].copy_from_slice(&src[from..from + d]);
                        }
                    }
                }
                dst
            };
            let span = off * t * kw..(off + rows) * t * kw;
            let kt = Tensor::from_vec(head_major(&k[span.clone()]), (cache_rows, hkv, t, d), x.device())?;
            let vt = Tensor::from_vec(head_major(&v[span]), (cache_rows, hkv, t, d), x.device())?;
            g.cache.write_layer(layer, inp.step, &kt, &vt)?;

            let st = g.cache.layer_storage(layer);
            let prefix = kv_view(st.prefix)?;
            let suffix = kv_view(st.suffix)?;
            let mask = CpuSlice::of(inp.mask).ok_or_else(|| Error::invalid("attention mask is not contiguous f32 on CPU"))?;
            attend(
                &q[off * t * qw..(off + rows) * t * qw],
                prefix.as_ref().map(|(k, v)| PrefixKv { k: k.get(), v: v.get(), len: st.prefix_len }),
                suffix.as_ref().map(|(k, v)| SuffixKv { k: k.get(), v: v.get(), cap: st.cap, used: st.used }),
                mask.get(),
                AttnShape { rows, t, hq, hkv, d },
                g.cache_rows,
                &mut out[off * t * qw..(off + rows) * t * qw],
            );
            off += rows;
        }
        let out = Tensor::from_vec(out, (rows_total, t, qw), x.device())?;
        Ok(Some(self.o.forward(&out)?))
    }

    /// Attention of one cache's rows: `q` `[b, hq, t, d]`, `k`/`v` `[b, hkv, t, d]` (before
    /// RoPE) → merged heads `[b, t, hq*d]`.
    #[allow(clippy::too_many_arguments)]
    fn attend(
        &self,
        cfg: &ModelConfig,
        layer: usize,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        cache: &mut KvCache,
        inp: &AttnInputs<'_>,
    ) -> Result<Tensor> {
        let (b, _, t, _) = q.dims4()?;
        let (hq, hkv, d) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let q = (apply_rope(q, inp.cos, inp.sin, cfg.rope_style)? * cfg.attn_scale)?;
        let k = apply_rope(k, inp.cos, inp.sin, cfg.rope_style)?;
        let v = v.contiguous()?;
        cache.write_layer(layer, inp.step, &k, &v)?;
        let kv = cache.layer_kv(layer)?;

        // Group query heads by kv head: [b, hkv, g*t, d].
        let g = hq / hkv;
        let q = q.reshape((b, hkv, g * t, d))?;
        let mut scores = Vec::with_capacity(2);
        let mut p_len = 0;
        let q_folded = match &kv.prefix {
            Some((kp, _)) => {
                p_len = kp.dim(1)?;
                // [hkv, b*g*t, d] x [hkv, d, P] -> [hkv, b*g*t, P] -> [b, hkv, g*t, P]
                let qf = q.transpose(0, 1)?.contiguous()?.reshape((hkv, b * g * t, d))?;
                let s = qf.matmul(&kp.t()?)?.reshape((hkv, b, g * t, p_len))?.transpose(0, 1)?;
                scores.push(s);
                Some(qf)
            }
            None => None,
        };
        let mut s_len = 0;
        if let Some((ks, _)) = &kv.suffix {
            s_len = ks.dim(2)?;
            scores.push(q.contiguous()?.matmul(&ks.t()?)?);
        }
        let scores = if scores.len() == 1 { scores.pop().expect("one score block") } else { Tensor::cat(&scores, 3)? };
        let keys = p_len + s_len;
        let scores = scores.reshape((b, hkv, g, t, keys))?.broadcast_add(inp.mask)?.reshape((b, hkv, g * t, keys))?;
        let probs = softmax_last(&scores)?;

        let mut out: Option<Tensor> = None;
        if let (Some((_, vp)), Some(_)) = (&kv.prefix, &q_folded) {
            let pp = probs.narrow(3, 0, p_len)?.transpose(0, 1)?.contiguous()?.reshape((hkv, b * g * t, p_len))?;
            let o = pp.matmul(vp)?.reshape((hkv, b, g * t, d))?.transpose(0, 1)?;
            out = Some(o);
        }
        if let Some((_, vs)) = &kv.suffix {
            let ps = probs.narrow(3, p_len, s_len)?.contiguous()?;
            let o = ps.matmul(vs)?;
            out = Some(match out {
                Some(prev) => (prev + o)?,
                None => o,
            });
        }
        let out = out.ok_or_else(|| Error::invalid("attention over an empty cache"))?;
        merge_heads(&out.reshape((b, hq, t, d))?)
    }
}

/// Direct views of a key/value pair of tensors.
fn kv_view<'a>(t: Option<(&'a Tensor, &'a Tensor)>) -> Result<Option<(CpuSlice<'a>, CpuSlice<'a>)>> {
    match t {
        None => Ok(None),
        Some((a, b)) => match (CpuSlice::of(a), CpuSlice::of(b)) {
            (Some(a), Some(b)) => Ok(Some((a, b))),
            _ => Err(Error::invalid("KV cache is not contiguous f32 on CPU")),
        },
    }
}
