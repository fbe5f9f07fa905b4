//! Our own decoder forward pass for GGUF models (gemma3 and the llama family) on candle ops.
//!
//! [`Model::forward`] runs one step for every row of a [`KvCache`]: each row brings zero or
//! more new tokens (ragged rows are padded and masked), and the caller chooses which logits
//! come back (last position per row, or every position to score a continuation in one pass).
//! The final normalised hidden state of each row's last token always comes back too (probe
//! reward heads read it for free).
//!
//! Rows that bring no token in a step (the search's waiting and finished rows) are left out
//! of the pass where the direct CPU attention path runs it (decode and lookahead steps): they
//! cost no projection, MLP or output-layer work, and [`ForwardOutput::rows`] names the rows
//! that came back.

pub mod attention;
pub mod config;
pub mod layers;
pub mod mlp;

use std::sync::Arc;

use candle_core::quantized::QTensor;
use candle_core::{DType, Device, Tensor};

pub use config::{Activation, Arch, ModelConfig, RopeStyle};

use crate::gguf::GgufFile;
use crate::kv_cache::{CacheShape, KvCache};
use attention::{AttnGroup, AttnInputs, Attention};
use layers::{load_qtensor, Linear, Projections, RmsNorm, Rope};
use mlp::Mlp;
pub use layers::WeightMode;

use crate::{Error, Result};

/// Load-time choices.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// How matmul weights are held; the default ([`WeightMode::Compact`]) runs Q8_0, Q4_K and
    /// Q6_K as stored and re-quantizes the other types (Q5_0, Q4_0, ...) to Q8_0 on CPU.
    pub weights: WeightMode,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { weights: WeightMode::default() }
    }
}

/// Which logits [`Model::forward`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogitsFor {
    /// The last new token of each row: `[rows, vocab]`.
    Last,
    /// Every new position: `[rows, t, vocab]` (padding positions of short rows are junk).
    All,
    /// No logits (prefill of a prefix whose next token is not needed yet).
    None,
}

/// One caller's step in a merged pass ([`Model::forward_many`]).
pub struct ForwardJob<'a> {
    /// The caller's cache (rows, positions).
    pub cache: &'a mut KvCache,
    /// New tokens per row, as for [`Model::forward`].
    pub tokens: &'a [Vec<u32>],
    /// Which logits the caller wants.
    pub want: LogitsFor,
}

/// A job after validation: its slots reserved, embeddings and RoPE tables built.
struct Prepared {
    step: crate::kv_cache::StepInfo,
    /// New tokens of each row the pass runs.
    lens: Vec<usize>,
    /// Rows the pass runs.
    b: usize,
    /// Their cache rows, where the pass leaves out rows with no new token.
    cache_rows: Option<Vec<usize>>,
    t: usize,
    x: Tensor,
    cos_g: Tensor,
    sin_g: Tensor,
    cos_l: Tensor,
    sin_l: Tensor,
}

/// Result of one forward step.
#[derive(Debug)]
pub struct ForwardOutput {
    /// Logits, shaped per [`LogitsFor`]; `None` for [`LogitsFor::None`]. Row `i` belongs to
    /// cache row `rows[i]`.
    pub logits: Option<Tensor>,
    /// Final normalised hidden state of each row's last new token: `[rows.len(), hidden]`.
    pub hidden: Tensor,
    /// The cache row of each output row, ascending: every row of the cache, or, where the
    /// pass left out the rows that brought no token, only those that did.
    pub rows: Vec<usize>,
}

impl ForwardOutput {
    /// The output row of cache row `r`; `None` where the pass left that row out.
    pub fn index_of(&self, r: usize) -> Option<usize> {
        self.rows.binary_search(&r).ok()
    }
}

#[derive(Clone)]
struct Layer {
    attn_norm: RmsNorm,
    attn: Attention,
    post_attn_norm: Option<RmsNorm>,
    ffn_norm: RmsNorm,
    mlp: Mlp,
    post_ffn_norm: Option<RmsNorm>,
    local: bool,
}

/// Static description of a loaded model (for `deal info`).
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// Hyper-parameters read from the GGUF metadata.
    pub config: ModelConfig,
    /// Number of parameters (elements of all tensors).
    pub parameters: usize,
    /// Tensor count per stored quantization type, e.g. `("Q4K", 108)`.
    pub quant_types: Vec<(String, usize)>,
    /// Size of the GGUF file, bytes (0 if it could not be read).
    pub file_bytes: u64,
    /// Bytes the weights take in memory once loaded on CPU in the default weight mode
    /// (kernel tiles, re-quantized copies and, when tied, the embedding's output copy; the
    /// embedding itself is read in place from the mapped file).
    pub resident_bytes: u64,
}

/// The token embedding table.
enum TokenEmbedding {
    /// Loaded as a tensor (other devices, `--weights f32`, or shared with the output layer).
    Loaded(Arc<QTensor>),
    /// Read row by row from the memory-mapped GGUF, as stored.
    Mapped(crate::gguf::MappedRows),
}

impl TokenEmbedding {
    /// The rows of `ids` (`n × t` token ids, row-major), `[n, t, hidden]` f32 on `device`.
    fn lookup(&self, ids: Vec<u32>, n: usize, t: usize, device: &Device) -> Result<Tensor> {
        match self {
            TokenEmbedding::Loaded(table) => Ok(table.embedding(&Tensor::from_vec(ids, (n, t), device)?)?),
            TokenEmbedding::Mapped(rows) => Ok(Tensor::from_vec(rows.gather(&ids)?, (n, t, rows.width()), device)?),
        }
    }
}

/// A loaded model: weights plus precomputed RoPE frequencies.
pub struct Model {
    cfg: ModelConfig,
    device: Device,
    dtype: DType,
    embed: TokenEmbedding,
    layers: Vec<Layer>,
    norm: RmsNorm,
    output: Linear,
    rope_global: Rope,
    rope_local: Rope,
    /// Every layer's attention can take the direct CPU path, so decode steps can leave out
    /// rows that bring no token.
    direct_attention: bool,
}

impl Model {
    /// Load every weight from an open GGUF file onto `device`.
    pub fn load(f: &GgufFile, device: &Device, opts: &LoadOptions) -> Result<Self> {
        let cfg = ModelConfig::from_gguf(f.content())?;
        let rq = opts.weights;
        let (_, _, dims) = f.tensor_bytes("token_embd.weight")?;
        let [vocab, hidden] = dims[..] else {
            return Err(Error::Gguf(format!("token_embd.weight has {} dimensions, expected 2", dims.len())));
        };
        if hidden != cfg.hidden_size {
            return Err(Error::Gguf(format!(
                "token_embd.weight has width {hidden}, metadata says embedding_length {}",
                cfg.hidden_size
            )));
        }
        let mut cfg = cfg;
        cfg.vocab_size = vocab;
        let eps = cfg.rms_eps;
        let embed_mode = if rq == WeightMode::F32 { rq } else { WeightMode::Stored };
        let load_embed = || load_qtensor(f, "token_embd.weight", device, embed_mode).map(Arc::new);
        // the output layer first: a tied one is packed straight from the mapped embedding
        // where a kernel takes it, else built on the loaded embedding (shared with the lookups
        // when it runs on candle's kernels), before the layers load
        let mut loaded_embed = None;
        let output = if f.has_tensor("output.weight") {
            Linear::load(f, "output", device, rq)?
        } else if let Some(output) = Linear::from_map(f, "token_embd", device, rq)? {
            output
        } else {
            let embed = load_embed()?;
            let output = Linear::from_arc(embed.clone(), rq)?;
            loaded_embed = Some(embed);
            output
        };
        // on CPU the embedding's rows are read in place from the mapped file unless the
        // output layer runs on the loaded tensor itself, so its stored bytes need not stay
        // resident
        let shared = loaded_embed.as_ref().is_some_and(|e| output.holds(e));
        let mapped = if device.is_cpu() && rq != WeightMode::F32 && !shared {
            f.mapped_rows("token_embd.weight")?
        } else {
            None
        };
        let embed = match (mapped, loaded_embed) {
            (Some(rows), _) => TokenEmbedding::Mapped(rows),
            (None, Some(embed)) => TokenEmbedding::Loaded(embed),
            (None, None) => TokenEmbedding::Loaded(load_embed()?),
        };
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = |s: &str| format!("blk.{i}.{s}");
            let opt_norm = |f: &GgufFile, s: &str| -> Result<Option<RmsNorm>> {
                let name = p(s);
                if f.has_tensor(&name) {
                    Ok(Some(RmsNorm::load(f, &name, device, eps)?))
                } else {
                    Ok(None)
                }
            };
            let attn = Attention {
                qkv: Projections::load(f, &[p("attn_q"), p("attn_k"), p("attn_v")], device, rq)?,
                o: Linear::load(f, &p("attn_output"), device, rq)?,
                q_norm: if cfg.qk_norm { opt_norm(f, "attn_q_norm.weight")? } else { None },
                k_norm: if cfg.qk_norm { opt_norm(f, "attn_k_norm.weight")? } else { None },
            };
            if cfg.qk_norm && (attn.q_norm.is_none() || attn.k_norm.is_none()) {
                return Err(Error::Gguf(format!("layer {i}: missing attn_q_norm/attn_k_norm")));
            }
            layers.push(Layer {
                attn_norm: RmsNorm::load(f, &p("attn_norm.weight"), device, eps)?,
                attn,
                post_attn_norm: if cfg.post_norms { opt_norm(f, "post_attention_norm.weight")? } else { None },
                ffn_norm: RmsNorm::load(f, &p("ffn_norm.weight"), device, eps)?,
                mlp: Mlp {
                    gate_up: Projections::load(f, &[p("ffn_gate"), p("ffn_up")], device, rq)?,
                    down: Linear::load(f, &p("ffn_down"), device, rq)?,
                },
                post_ffn_norm: if cfg.post_norms { opt_norm(f, "post_ffw_norm.weight")? } else { None },
                local: cfg.is_local_layer(i),
            });
        }
        let norm = RmsNorm::load(f, "output_norm.weight", device, eps)?;
        let factors = if f.has_tensor("rope_freqs.weight") {
            Some(f.tensor("rope_freqs.weight", device)?.dequantize(device)?.to_vec1::<f32>()?)
        } else {
            None
        };
        let rope_global = Rope::new(cfg.head_dim, cfg.rope_base, factors, cfg.rope_linear_scale);
        let rope_local = Rope::new(cfg.head_dim, cfg.rope_base_local, None, 1.0);
        let direct_attention = device.is_cpu() && layers.iter().all(|l| l.attn.qkv.is_packed());
        Ok(Self {
            direct_attention,
            cfg,
            device: device.clone(),
            dtype: DType::F32,
            embed,
            layers,
            norm,
            output,
            rope_global,
            rope_local,
        })
    }

    /// Summarise a GGUF file's model without loading weights.
    pub fn info(f: &GgufFile) -> Result<ModelInfo> {
        let config = ModelConfig::from_gguf(f.content())?;
        let mut parameters = 0usize;
        let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
        for ti in f.content().tensor_infos.values() {
            parameters += ti.shape.elem_count();
            *counts.entry(format!("{:?}", ti.ggml_dtype)).or_default() += 1;
        }
        let file_bytes = std::fs::metadata(f.path()).map(|m| m.len()).unwrap_or(0);
        let resident_bytes = resident_estimate(f, WeightMode::default());
        Ok(ModelInfo { config, parameters, quant_types: counts.into_iter().collect(), file_bytes, resident_bytes })
    }

    /// The model's hyper-parameters.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Geometry for [`KvCache::new`].
    pub fn cache_shape(&self) -> CacheShape {
        CacheShape { n_layers: self.cfg.n_layers, n_kv_heads: self.cfg.n_kv_heads, head_dim: self.cfg.head_dim }
    }

    /// Bytes one token of one row holds in a KV cache of this model (keys and values, every
    /// layer).
    pub fn kv_bytes_per_token(&self) -> usize {
        let c = &self.cfg;
        2 * c.n_layers * c.n_kv_heads * c.head_dim * self.dtype.size_in_bytes()
    }

    /// A new empty cache with `rows` rows for this model.
    pub fn new_cache(&self, rows: usize) -> Result<KvCache> {
        KvCache::new(self.cache_shape(), rows, &self.device, self.dtype)
    }

    /// Run one step. `tokens[r]` are the new tokens of row `r` (may differ in length, may be
    /// empty for rows that only wait); the cache must have `tokens.len()` rows.
    ///
    /// One pass, on this thread. Concurrent callers share passes through the engine's
    /// scheduler ([`crate::scheduler`], [`crate::Engine::forward`]) instead.
    pub fn forward(&self, cache: &mut KvCache, tokens: &[Vec<u32>], want: LogitsFor) -> Result<ForwardOutput> {
        let mut jobs = [ForwardJob { cache, tokens, want }];
        self.forward_many(&mut jobs).pop().unwrap_or_else(|| Err(Error::invalid("forward job was not run")))
    }

    /// Run several caches' steps as one batch: the projections, MLPs and the output layer
    /// see every row of every job at once; attention runs per cache. Jobs whose new-token
    /// count differs from the first valid job's, or that want logits at every position, run
    /// as batches of their own. One result per job, in order.
    pub fn forward_many(&self, jobs: &mut [ForwardJob<'_>]) -> Vec<Result<ForwardOutput>> {
        let mut results: Vec<Option<Result<ForwardOutput>>> = (0..jobs.len()).map(|_| None).collect();
        // row lengths before this pass: a failed merged batch is undone and its jobs rerun alone
        let before: Vec<Vec<usize>> = jobs.iter().map(|j| j.cache.row_lens()).collect();
        let mut prepared = Vec::with_capacity(jobs.len());
        for (i, job) in jobs.iter_mut().enumerate() {
            match self.prepare(job.cache, job.tokens, job.want) {
                Ok(p) => prepared.push((i, p)),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        // batches: jobs of the same width t merge (logits at every position run alone)
        let mut batches: Vec<Vec<(usize, Prepared)>> = Vec::new();
        for (i, p) in prepared {
            let mergeable = jobs[i].want != LogitsFor::All;
            match batches.iter_mut().find(|b| mergeable && jobs[b[0].0].want != LogitsFor::All && b[0].1.t == p.t) {
                Some(b) => b.push((i, p)),
                None => batches.push(vec![(i, p)]),
            }
        }
        for batch in batches {
            let idx: Vec<usize> = batch.iter().map(|(i, _)| *i).collect();
            match self.run_batch(jobs, batch) {
                Ok(outs) => {
                    for (i, o) in idx.iter().zip(outs) {
                        results[*i] = Some(Ok(o));
                    }
                }
                Err(e) if idx.len() == 1 => results[idx[0]] = Some(Err(Error::Internal(format!("forward pass failed: {e}")))),
                Err(_) => {
                    // one job's fault must not fail the others merged with it: each alone
                    for i in idx {
                        jobs[i].cache.restore_lens(&before[i]);
                        let (tokens, want) = (jobs[i].tokens, jobs[i].want);
                        let solo = match self.prepare(&mut *jobs[i].cache, tokens, want) {
                            Ok(p) => self.run_batch(jobs, vec![(i, p)]),
                            Err(e) => Err(e),
                        };
                        results[i] = Some(match solo {
                            Ok(mut outs) => Ok(outs.remove(0)),
                            Err(e) => {
                                jobs[i].cache.restore_lens(&before[i]);
                                Err(Error::Internal(format!("forward pass failed: {e}")))
                            }
                        });
                    }
                }
            }
        }
        results.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::Internal("forward job was not run".into())))).collect()
    }

    /// Validate one job, reserve its cache slots and build its embeddings and RoPE tables:
    /// for the rows that bring tokens only, where the direct attention path will run the pass
    /// and logits at every position are not wanted.
    fn prepare(&self, cache: &mut KvCache, tokens: &[Vec<u32>], want: LogitsFor) -> Result<Prepared> {
        let b = tokens.len();
        let lens: Vec<usize> = tokens.iter().map(|t| t.len()).collect();
        let t = lens.iter().copied().max().unwrap_or(0);
        if b == 0 || t == 0 {
            return Err(Error::invalid("a forward pass needs at least one row with a new token"));
        }
        if b != cache.rows() {
            return Err(Error::invalid(format!("{b} rows of tokens for a cache of {} rows", cache.rows())));
        }
        if let Some(&bad) = tokens.iter().flatten().find(|&&id| id as usize >= self.cfg.vocab_size) {
            return Err(Error::invalid(format!("token id {bad} outside the vocabulary ({})", self.cfg.vocab_size)));
        }
        for (r, &n) in lens.iter().enumerate() {
            let total = cache.row_len(r)? + n;
            if total > self.cfg.context_length {
                return Err(Error::invalid(format!(
                    "row {r} would hold {total} tokens, beyond the model's context of {}",
                    self.cfg.context_length
                )));
            }
        }
        let has_local = self.layers.iter().any(|l| l.local);
        let step = cache.begin_step(&lens, if has_local { self.cfg.sliding_window } else { None })?;

        let leave_out = self.direct_attention && t <= attention::FAST_MAX_T && want != LogitsFor::All && lens.contains(&0);
        let cache_rows: Option<Vec<usize>> = leave_out.then(|| (0..b).filter(|&r| lens[r] > 0).collect());
        let run: Vec<usize> = cache_rows.clone().unwrap_or_else(|| (0..b).collect());
        let mut ids = Vec::with_capacity(run.len() * t);
        let mut positions = Vec::with_capacity(run.len() * t);
        for &r in &run {
            ids.extend_from_slice(&tokens[r]);
            ids.extend(std::iter::repeat_n(0u32, t - tokens[r].len()));
            positions.extend_from_slice(&step.positions[r * t..(r + 1) * t]);
        }
        let n = run.len();
        let mut x = self.embed.lookup(ids, n, t, &self.device)?.to_dtype(self.dtype)?;
        if let Some(s) = self.cfg.embed_scale {
            x = (x * s)?;
        }
        let (cos_g, sin_g) = self.rope_global.tables(&positions, n, t, &self.device)?;
        let (cos_l, sin_l) = if has_local {
            self.rope_local.tables(&positions, n, t, &self.device)?
        } else {
            (cos_g.clone(), sin_g.clone())
        };
        let lens = run.iter().map(|&r| lens[r]).collect();
        Ok(Prepared { step, lens, b: n, cache_rows, t, x, cos_g, sin_g, cos_l, sin_l })
    }

    /// One pass over the prepared jobs of `batch` (all of width `t`).
    fn run_batch(&self, jobs: &mut [ForwardJob<'_>], batch: Vec<(usize, Prepared)>) -> Result<Vec<ForwardOutput>> {
        #[cfg(feature = "fault-injection")]
        crate::fault::check(batch.iter().map(|(i, _)| jobs[*i].tokens));
        let wants: Vec<LogitsFor> = batch.iter().map(|(i, _)| jobs[*i].want).collect();
        let xs: Vec<Tensor> = batch.iter().map(|(_, p)| p.x.clone()).collect();
        let mut x = if xs.len() == 1 { xs[0].clone() } else { Tensor::cat(&xs, 0)? };
        // the jobs' caches, borrowed mutably all at once (distinct jobs, distinct caches)
        let mut caches: Vec<Option<&mut KvCache>> = jobs.iter_mut().map(|j| Some(&mut *j.cache)).collect();
        let mut groups: Vec<AttnGroup<'_, '_>> = Vec::with_capacity(batch.len());
        for (i, p) in &batch {
            let cache = caches[*i].take().ok_or_else(|| Error::invalid("a cache appears twice in one batch"))?;
            let local_mask = p.step.mask_local.as_ref().unwrap_or(&p.step.mask_global);
            groups.push(AttnGroup {
                cache,
                global: AttnInputs { step: &p.step, mask: &p.step.mask_global, cos: &p.cos_g, sin: &p.sin_g },
                local: AttnInputs { step: &p.step, mask: local_mask, cos: &p.cos_l, sin: &p.sin_l },
                rows: p.b,
                cache_rows: p.cache_rows.as_deref(),
            });
        }

        for (i, layer) in self.layers.iter().enumerate() {
            let h = layer.attn_norm.forward(&x)?;
            let mut h = layer.attn.forward(&self.cfg, i, layer.local, &h, &mut groups)?;
            if let Some(n) = &layer.post_attn_norm {
                h = n.forward(&h)?;
            }
            x = (x + h)?;
            let h = layer.ffn_norm.forward(&x)?;
            let mut h = layer.mlp.forward(&h, self.cfg.activation)?;
            if let Some(n) = &layer.post_ffn_norm {
                h = n.forward(&h)?;
            }
            x = (x + h)?;
        }
        drop(groups);

        // last positions of every row of every job, normed; one output matmul for all jobs
        // that want last-token logits
        let t = batch[0].1.t;
        let hidden_dim = self.cfg.hidden_size;
        let total: usize = batch.iter().map(|(_, p)| p.b).sum();
        let flat = x.reshape((total * t, hidden_dim))?;
        let mut last_idx = Vec::with_capacity(total);
        let mut off = 0;
        for (_, p) in &batch {
            last_idx.extend(p.lens.iter().enumerate().map(|(r, &n)| ((off + r) * t + n.max(1) - 1) as u32));
            off += p.b;
        }
        let last_idx = Tensor::new(last_idx.as_slice(), &self.device)?;
        let hidden = self.norm.forward(&flat.index_select(&last_idx, 0)?)?;
        let want_last: Vec<usize> = (0..batch.len()).filter(|&g| wants[g] == LogitsFor::Last).collect();
        let last_logits = if want_last.is_empty() {
            None
        } else if want_last.len() == batch.len() {
            Some(self.output.forward(&hidden)?)
        } else {
            let mut rows = Vec::new();
            let mut off = 0;
            for (g, (_, p)) in batch.iter().enumerate() {
                if wants[g] == LogitsFor::Last {
                    rows.extend((off..off + p.b).map(|r| r as u32));
                }
                off += p.b;
            }
            let rows = Tensor::new(rows.as_slice(), &self.device)?;
            Some(self.output.forward(&hidden.index_select(&rows, 0)?)?)
        };

        let mut outs = Vec::with_capacity(batch.len());
        let (mut off, mut logit_off) = (0, 0);
        for (g, (_, p)) in batch.iter().enumerate() {
            let hidden_g = if batch.len() == 1 { hidden.clone() } else { hidden.narrow(0, off, p.b)? };
            let logits = match wants[g] {
                LogitsFor::None => None,
                LogitsFor::Last => {
                    let all = last_logits.as_ref().ok_or_else(|| Error::invalid("missing logits"))?;
                    let l = if want_last.len() == 1 && batch.len() == 1 { all.clone() } else { all.narrow(0, logit_off, p.b)? };
                    logit_off += p.b;
                    Some(l)
                }
                LogitsFor::All => {
                    let rows = flat.narrow(0, off * t, p.b * t)?;
                    let all = self.norm.forward(&rows)?;
                    Some(self.output.forward(&all)?.reshape((p.b, t, self.cfg.vocab_size))?)
                }
            };
            let rows = p.cache_rows.clone().unwrap_or_else(|| (0..p.b).collect());
            outs.push(ForwardOutput { logits, hidden: hidden_g, rows });
            off += p.b;
        }
        Ok(outs)
    }
}

/// Bytes the weights of `f` take in memory on CPU under `mode`: per tensor, its stored size,
/// or the size of the type `mode` turns it into, or the K-quant kernels' tiles (Q4_K: 148
/// bytes per 144, Q5_K: 180 per 176, Q6_K: 3392 per 3360; Q5_0 and Q4_0 tiles are the stored size). The token embedding is read in place from the mapped
/// file (only the pages of the tokens looked up become resident) except under `f32`, and a
/// tied output layer adds its matmul copy (under `stored`, the shared stored tensor).
pub fn resident_estimate(f: &GgufFile, mode: WeightMode) -> u64 {
    use candle_core::quantized::GgmlDType as T;
    let size = |dtype: T, elems: usize| (elems / dtype.block_size() * dtype.type_size()) as u64;
    let held = |dtype: T, elems: usize| -> u64 {
        let is_float = matches!(dtype, T::F32 | T::F16 | T::BF16);
        match mode {
            WeightMode::F32 => (elems * 4) as u64,
            WeightMode::Stored => size(dtype, elems),
            _ if is_float || dtype == T::Q8_0 => size(dtype, elems),
            WeightMode::Requantize | WeightMode::Compact if dtype == T::Q4K && !layers::requantized_on_cpu(dtype) => size(dtype, elems) * 148 / 144,
            WeightMode::Compact if dtype == T::Q6K && !layers::requantized_on_cpu(T::Q4K) => size(dtype, elems) * 3392 / 3360,
            WeightMode::Compact if dtype == T::Q5K && layers::compact_kernel(dtype) => size(dtype, elems) * 180 / 176,
            WeightMode::Compact if layers::compact_kernel(dtype) => size(dtype, elems),
            _ => size(T::Q8_0, elems),
        }
    };
    let infos = &f.content().tensor_infos;
    let mut total = 0u64;
    for (name, ti) in infos {
        let elems = ti.shape.elem_count();
        if name != "token_embd.weight" || mode == WeightMode::F32 {
            total += held(ti.ggml_dtype, elems);
        }
    }
    if !infos.contains_key("output.weight") {
        if let Some(ti) = infos.get("token_embd.weight") {
            total += held(ti.ggml_dtype, ti.shape.elem_count());
        }
    }
    total
}

/// Weight bytes one decode step reads on CPU under `mode` (the roofline of memory-bound
/// decoding): [`resident_estimate`] less a token embedding held in memory (under `f32`), of
/// which a step reads only its tokens' rows (a tied output layer reads its own copy, counted
/// there).
pub fn bytes_per_token(f: &GgufFile, mode: WeightMode) -> u64 {
    let embd = f.content().tensor_infos.get("token_embd.weight").map_or(0, |ti| if mode == WeightMode::F32 { ti.shape.elem_count() as u64 * 4 } else { 0 });
    resident_estimate(f, mode).saturating_sub(embd)
}

/// The same for llama.cpp, which reads every weight as stored: the file's tensors less the
/// embedding when the output layer is a tensor of its own.
pub fn stored_bytes_per_token(f: &GgufFile) -> u64 {
    let infos = &f.content().tensor_infos;
    infos
        .iter()
        .filter(|(name, _)| !(name.as_str() == "token_embd.weight" && infos.contains_key("output.weight")))
        .map(|(_, ti)| (ti.shape.elem_count() / ti.ggml_dtype.block_size() * ti.ggml_dtype.type_size()) as u64)
        .sum()
}
