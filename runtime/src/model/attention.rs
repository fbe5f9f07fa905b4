//! Self-attention of one layer over the search KV cache: the shared prefix is attended by all
//! rows with a single matmul (rows folded into the query dimension), the per-row suffix with a
//! batched matmul; one softmax over both, masks from [`crate::kv_cache::StepInfo`].

use candle_core::Tensor;

use crate::kv_cache::{KvCache, StepInfo};
use crate::model::config::ModelConfig;
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
