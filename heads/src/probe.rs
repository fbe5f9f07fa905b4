//! `probe`: a linear head on the policy's final hidden state (ArmoRM-style): score =
//! w·h + b, with (w, b) in a safetensors file (`weight` [hidden] f32, `bias` [1] f32, and
//! metadata: the scale, the teacher, the model it was fitted on). During search it costs a
//! dot product per candidate because the engine already has the hidden state
//! ([`Candidate::hidden`]); candidates without one get it from one batched forward of the
//! policy. `deal train-probe` fits probes ([`crate::probe_train`]).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use serde::Deserialize;

use super::{bad_param, Candidate, HeadContext, ParamInfo, RewardHead, Scale};
use deal_backend::Backend;

use crate::{Error, Result};

/// Params of the [`Probe`] head.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Safetensors probe written by `deal train-probe`; `None` = the bundled sentiment probe.
    pub path: Option<PathBuf>,
}

/// The bundled example probe: the `sentiment` head distilled into the default model's final
/// hidden state (`deal train-probe --distill sentiment`; docs/heads.md has its agreement).
const BUNDLED: &[u8] = include_bytes!("../assets/probes/sentiment_probe.safetensors");

/// Weights of a linear probe plus what is known about them.
#[derive(Debug, Clone, PartialEq)]
pub struct ProbeWeights {
    /// One weight per hidden-state dimension (the policy's hidden size).
    pub weight: Vec<f32>,
    /// Intercept b of the score w·h + b.
    pub bias: f32,
    /// How its outputs normalise (the teacher's range, or z-score statistics).
    pub scale: Scale,
    /// Free-form metadata (teacher, model, fit statistics).
    pub meta: BTreeMap<String, String>,
}

impl ProbeWeights {
    /// Raw score of one hidden state.
    pub fn apply(&self, hidden: &[f32]) -> f32 {
        self.weight.iter().zip(hidden).map(|(w, h)| w * h).sum::<f32>() + self.bias
    }

    /// Parse a safetensors file's bytes; `origin` names it in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |m: String| Error::invalid(format!("probe {origin}: {m}"));
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| bad(e.to_string()))?;
        let st = SafeTensors::deserialize(bytes).map_err(|e| bad(e.to_string()))?;
        let read = |name: &str| -> Result<Vec<f32>> {
            let t = st.tensor(name).map_err(|_| bad(format!("no tensor `{name}`")))?;
            if t.dtype() != Dtype::F32 {
                return Err(bad(format!("tensor `{name}` is {:?}, expected F32", t.dtype())));
            }
            Ok(t.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect())
        };
        let weight = read("weight")?;
        let bias = read("bias")?;
        if weight.is_empty() || bias.len() != 1 {
            return Err(bad(format!("expected weight [hidden] and bias [1], got {} and {} values", weight.len(), bias.len())));
        }
        let meta: BTreeMap<String, String> = header.metadata().clone().unwrap_or_default().into_iter().collect();
        let num = |k: &str| -> Result<f64> {
            meta.get(k).ok_or_else(|| bad(format!("metadata lacks `{k}`")))?.parse().map_err(|_| bad(format!("metadata `{k}` is not a number")))
        };
        let scale = match meta.get("scale").map(String::as_str) {
            Some("range") => Scale::Range { lo: num("scale_lo")?, hi: num("scale_hi")? },
            Some("zscore") => Scale::Zscore { mean: num("scale_mean")?, std: num("scale_std")? },
            other => return Err(bad(format!("metadata `scale` is {other:?}, expected \"range\" or \"zscore\""))),
        };
        scale.validate().map_err(bad)?;
        if weight.iter().chain(&bias).any(|v| !v.is_finite()) {
            return Err(bad("non-finite weights".into()));
        }
        Ok(Self { weight, bias: bias[0], scale, meta })
    }

    /// The bundled sentiment probe's file contents.
    pub fn bundled_bytes() -> &'static [u8] {
        BUNDLED
    }

    /// Load a probe file.
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Serialize to safetensors bytes (scale and `meta` go into the metadata).
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut meta: HashMap<String, String> = self.meta.clone().into_iter().collect();
        match self.scale {
            Scale::Range { lo, hi } => {
                meta.insert("scale".into(), "range".into());
                meta.insert("scale_lo".into(), lo.to_string());
                meta.insert("scale_hi".into(), hi.to_string());
            }
            Scale::Zscore { mean, std } => {
                meta.insert("scale".into(), "zscore".into());
                meta.insert("scale_mean".into(), mean.to_string());
                meta.insert("scale_std".into(), std.to_string());
            }
        }
        meta.insert("hidden_size".into(), self.weight.len().to_string());
        let w: Vec<u8> = self.weight.iter().flat_map(|v| v.to_le_bytes()).collect();
        let b: Vec<u8> = self.bias.to_le_bytes().to_vec();
        let err = |e: safetensors::SafeTensorError| Error::invalid(format!("probe: {e}"));
        let tensors = vec![
            ("weight", TensorView::new(Dtype::F32, vec![self.weight.len()], &w).map_err(err)?),
            ("bias", TensorView::new(Dtype::F32, vec![1], &b).map_err(err)?),
        ];
        safetensors::serialize(tensors, Some(meta)).map_err(err)
    }

    /// Write a probe file.
    pub fn save(&self, path: &Path) -> Result<()> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| Error::Io { path: dir.to_path_buf(), source })?;
        }
        std::fs::write(path, self.to_bytes()?).map_err(|source| Error::Io { path: path.to_path_buf(), source })
    }
}

/// Final hidden states of the policy after each candidate's last response token, computed
/// with one batched feed per distinct prompt (prompt prefilled once, rows forked). Needs a
/// backend with the `hidden_states` capability.
pub fn policy_hidden(engine: &dyn Backend, cands: &[&Candidate]) -> Result<Vec<Vec<f32>>> {
    if !engine.capabilities().hidden_states {
        return Err(deal_backend::Error::unsupported("hidden_states", "compute the policy's hidden states (the `probe` head)").into());
    }
    let missing = || Error::invalid("probe: the policy returned no hidden state");
    let mut out = vec![Vec::new(); cands.len()];
    for (prompt, idx) in super::group_by_prompt(cands.iter().copied()) {
        let rows: Vec<Vec<u32>> = idx
            .iter()
            .map(|&i| {
                let c = cands[i];
                if c.tokens.is_empty() && !c.response.is_empty() {
                    engine.codec().encode(&c.response, false)
                } else {
                    Ok(c.tokens.clone())
                }
            })
            .collect::<deal_backend::Result<_>>()?;
        let prompt_tokens = engine.encode_prompt(prompt)?;
        if prompt_tokens.is_empty() {
            // no prompt to share: each response is its own sequence
            for (k, &i) in idx.iter().enumerate() {
                if rows[k].is_empty() {
                    return Err(Error::invalid("probe: a candidate with an empty prompt and an empty response has no hidden state"));
                }
                out[i] = engine.start(&rows[k], true)?.1.hidden.ok_or_else(missing)?;
            }
            continue;
        }
        let (mut set, first) = engine.start(&prompt_tokens, true)?;
        set.select(&vec![0; rows.len()])?;
        let steps = set.feed(&rows, false, true)?;
        for (k, &i) in idx.iter().enumerate() {
            out[i] = match steps.get(k).cloned().flatten() {
                Some(step) => step.hidden.ok_or_else(missing)?,
                None => first.hidden.clone().ok_or_else(missing)?,
            };
        }
    }
    Ok(out)
}

/// See the module documentation.
pub struct Probe {
    weights: Arc<ProbeWeights>,
    ctx: Arc<HeadContext>,
}

impl Probe {
    /// The probe's weights.
    pub fn weights(&self) -> &ProbeWeights {
        &self.weights
    }
}

impl RewardHead for Probe {
    const NAME: &'static str = "probe";
    const DESCRIPTION: &'static str =
        "linear probe w·h + b on the policy's final hidden state (free during search); higher = more of what it was fitted to";
    const PARAMS: &'static [ParamInfo] = &[ParamInfo {
        name: "path",
        ty: "path",
        default: "bundled sentiment probe",
        doc: "safetensors probe written by `deal train-probe`",
    }];
    const EXAMPLE: &'static str = r#"{"path": "probe.safetensors"}"#;
    type Params = Params;

    fn build(p: Params, ctx: &Arc<HeadContext>) -> Result<Self> {
        let weights = match &p.path {
            None => ctx.shared("bundled probe", || ProbeWeights::from_bytes(BUNDLED, "bundled sentiment probe"))?,
            Some(given) => {
                let path = ctx.resolve_file(Self::NAME, "probe", given)?;
                let path = path.canonicalize().unwrap_or(path);
                let key = path.to_string_lossy().into_owned();
                let restricted = ctx.access().files_restricted();
                ctx.shared(&key, || match ProbeWeights::load(&path) {
                    Err(e) if restricted => {
                        tracing::warn!("probe {}: {e}", path.display());
                        Err(bad_param(Self::NAME, format!("probe `{}` could not be loaded (see the server log)", given.display())))
                    }
                    r => r,
                })?
            }
        };
        if let Some(e) = ctx.policy() {
            let caps = e.capabilities();
            if !caps.hidden_states {
                return Err(deal_backend::Error::unsupported("hidden_states", "run the `probe` head").into());
            }
            if let Some(m) = weights.meta.get("model").filter(|m| **m != e.model_id()) {
                tracing::warn!("probe was fitted on {m}, the policy is {}: its scores may mean little", e.model_id());
            }
            if let Some(h) = caps.hidden_size.filter(|&h| h != weights.weight.len()) {
                return Err(bad_param(
                    Self::NAME,
                    format!("the probe has {} weights but the policy's hidden size is {h}", weights.weight.len()),
                ));
            }
        }
        Ok(Self { weights, ctx: ctx.clone() })
    }

    fn scale(&self) -> Scale {
        self.weights.scale
    }

    fn reads_hidden(&self) -> bool {
        true
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        let missing: Vec<&Candidate> = cands.iter().filter(|c| c.hidden.is_none()).collect();
        let mut computed = if missing.is_empty() {
            Vec::new()
        } else {
            let engine = self.ctx.policy().ok_or_else(|| {
                bad_param(Self::NAME, "candidates carry no hidden state and no policy model is loaded to compute it")
            })?;
            policy_hidden(engine.as_ref(), &missing)?
        }
        .into_iter();
        let dim = self.weights.weight.len();
        cands
            .iter()
            .map(|c| {
                let owned;
                let h: &[f32] = match &c.hidden {
                    Some(h) => h,
                    None => {
                        owned = computed.next().unwrap_or_default();
                        &owned
                    }
                };
                if h.len() != dim {
                    return Err(bad_param(Self::NAME, format!("hidden state has {} values, the probe {dim}", h.len())));
                }
                Ok(self.weights.apply(h))
            })
            .collect()
    }
}
