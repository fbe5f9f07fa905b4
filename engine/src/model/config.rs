//! Model hyper-parameters read from GGUF metadata, one struct for every supported architecture.
//!
//! The architectures differ in a handful of switches (norm placement, activation, RoPE layout,
//! per-head q/k norms, sliding-window layers); [`ModelConfig`] names each switch so the forward
//! pass in [`super::Model`] stays a single code path.

use candle_core::quantized::gguf_file::Content;

use crate::gguf::{get_f32, get_str, get_usize, opt};
use crate::{Error, Result};

/// Supported model families.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// Gemma 3 (text): q/k norms, gelu-tanh, sandwich norms, 5 local : 1 global layers.
    Gemma3,
    /// Llama family (Llama 2/3, Mistral, and most `llama` GGUFs).
    Llama,
    /// Qwen 2 / 2.5: llama layout with q/k/v biases and NeoX RoPE.
    Qwen2,
    /// Qwen 3: per-head q/k RMS norms, NeoX RoPE, no biases.
    Qwen3,
}

impl Arch {
    /// Parse `general.architecture`.
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "gemma3" => Ok(Arch::Gemma3),
            "llama" | "mistral" => Ok(Arch::Llama),
            "qwen2" => Ok(Arch::Qwen2),
            "qwen3" => Ok(Arch::Qwen3),
            other => Err(Error::UnsupportedArch(other.to_string())),
        }
    }

    /// The metadata key prefix, e.g. `gemma3`.
    pub fn key_prefix(self) -> &'static str {
        match self {
            Arch::Gemma3 => "gemma3",
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Qwen3 => "qwen3",
        }
    }
}

/// How rotary embeddings pair up dimensions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Pairs (i, i + d/2): Gemma, Qwen (llama.cpp's `NEOX`).
    Neox,
    /// Pairs (2i, 2i+1): llama GGUFs, whose q/k weights were permuted at conversion.
    Interleaved,
}

/// MLP gate activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu` with the tanh approximation (Gemma).
    GeluTanh,
    /// `silu` (Llama, Qwen).
    Silu,
}

/// All hyper-parameters the forward pass needs.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Model family; decides the switches below.
    pub arch: Arch,
    /// `general.architecture` as written in the GGUF (e.g. `mistral` for [`Arch::Llama`]).
    pub arch_name: String,
    /// Number of token ids (the token embedding's rows once the model is loaded).
    pub vocab_size: usize,
    /// Width of the residual stream (`embedding_length`).
    pub hidden_size: usize,
    /// Number of transformer blocks (`block_count`).
    pub n_layers: usize,
    /// Inner width of the MLP (`feed_forward_length`).
    pub ffn_size: usize,
    /// Query heads per layer.
    pub n_heads: usize,
    /// Key/value heads per layer; divides `n_heads` (fewer with grouped-query attention).
    pub n_kv_heads: usize,
    /// Width of one attention head (`attention.key_length`, else hidden size / heads).
    pub head_dim: usize,
    /// Epsilon of the RMS norms (default 1e-6).
    pub rms_eps: f64,
    /// Most tokens (prompt plus output) the model runs on (default 4096).
    pub context_length: usize,
    /// RoPE base of global layers.
    pub rope_base: f32,
    /// RoPE base of sliding-window (local) layers, when they use another one.
    pub rope_base_local: f32,
    /// Linear RoPE scaling of global layers (position divided by this).
    pub rope_linear_scale: f32,
    /// How RoPE pairs up the dimensions of a head.
    pub rope_style: RopeStyle,
    /// Sliding window width of local layers, if the model has them.
    pub sliding_window: Option<usize>,
    /// Every `sliding_pattern`-th layer is global, the others local (Gemma 3: 6).
    pub sliding_pattern: usize,
    /// Multiplier applied to q before q·k.
    pub attn_scale: f64,
    /// Multiplier applied to token embeddings (Gemma: sqrt(hidden)).
    pub embed_scale: Option<f64>,
    /// Per-head RMS norm on q and k (Gemma 3, Qwen 3).
    pub qk_norm: bool,
    /// Extra norms after attention and MLP outputs (Gemma "sandwich" norms).
    pub post_norms: bool,
    /// Gate activation of the MLP.
    pub activation: Activation,
}

impl ModelConfig {
    /// Read the hyper-parameters from GGUF metadata.
    pub fn from_gguf(c: &Content) -> Result<Self> {
        let arch_name = get_str(c, "general.architecture")?.to_string();
        let arch = Arch::parse(&arch_name)?;
        let p = arch.key_prefix();
        let k = |s: &str| format!("{p}.{s}");
        let hidden_size = get_usize(c, &k("embedding_length"))?;
        let n_heads = get_usize(c, &k("attention.head_count"))?;
        if n_heads == 0 {
            return Err(Error::Gguf("attention.head_count is 0".into()));
        }
        let n_kv_heads = opt(c, &k("attention.head_count_kv"), get_usize)?.unwrap_or(n_heads);
        if n_kv_heads == 0 || n_heads % n_kv_heads != 0 {
            return Err(Error::Gguf(format!(
                "head_count {n_heads} is not a multiple of head_count_kv {n_kv_heads}"
            )));
        }
        let head_dim = match opt(c, &k("attention.key_length"), get_usize)? {
            Some(d) => d,
            None => hidden_size / n_heads,
        };
        let rms_eps = opt(c, &k("attention.layer_norm_rms_epsilon"), get_f32)?.unwrap_or(1e-6) as f64;
        let context_length = opt(c, &k("context_length"), get_usize)?.unwrap_or(4096);
        let rope_base = opt(c, &k("rope.freq_base"), get_f32)?.unwrap_or(10_000.0);
        let scaling_type = match c.metadata.contains_key(&k("rope.scaling.type")) {
            true => Some(get_str(c, &k("rope.scaling.type"))?.to_string()),
            false => None,
        };
        let rope_linear_scale = match scaling_type.as_deref() {
            Some("linear") => opt(c, &k("rope.scaling.factor"), get_f32)?.unwrap_or(1.0),
            _ => 1.0,
        };
        let vocab_size = match opt(c, &k("vocab_size"), get_usize)? {
            Some(v) => v,
            None => match c.metadata.get("tokenizer.ggml.tokens") {
                Some(v) => v.to_vec().map(|t| t.len()).unwrap_or(0),
                None => 0,
            },
        };
        let n_layers = get_usize(c, &k("block_count"))?;
        let ffn_size = get_usize(c, &k("feed_forward_length"))?;
        let cfg = match arch {
            Arch::Gemma3 => ModelConfig {
                rope_base_local: 10_000.0,
                rope_style: RopeStyle::Neox,
                sliding_window: Some(opt(c, &k("attention.sliding_window"), get_usize)?.unwrap_or(512)),
                sliding_pattern: 6,
                // llama.cpp: 1/sqrt(head_dim) except for the 27B model (62 layers).
                attn_scale: if n_layers == 62 {
                    1.0 / ((hidden_size / n_heads) as f64).sqrt()
                } else {
                    1.0 / (head_dim as f64).sqrt()
                },
                embed_scale: Some((hidden_size as f64).sqrt()),
                qk_norm: true,
                post_norms: true,
                activation: Activation::GeluTanh,
                ..Self::base(arch, arch_name, vocab_size, hidden_size, n_layers, ffn_size, n_heads, n_kv_heads, head_dim, rms_eps, context_length, rope_base, rope_linear_scale)
            },
            Arch::Llama => Self::base(arch, arch_name, vocab_size, hidden_size, n_layers, ffn_size, n_heads, n_kv_heads, head_dim, rms_eps, context_length, rope_base, rope_linear_scale),
            Arch::Qwen2 => ModelConfig {
                rope_style: RopeStyle::Neox,
                ..Self::base(arch, arch_name, vocab_size, hidden_size, n_layers, ffn_size, n_heads, n_kv_heads, head_dim, rms_eps, context_length, rope_base, rope_linear_scale)
            },
            Arch::Qwen3 => ModelConfig {
                rope_style: RopeStyle::Neox,
                qk_norm: true,
                ..Self::base(arch, arch_name, vocab_size, hidden_size, n_layers, ffn_size, n_heads, n_kv_heads, head_dim, rms_eps, context_length, rope_base, rope_linear_scale)
            },
        };
        Ok(cfg)
    }

    #[allow(clippy::too_many_arguments)]
    fn base(
        arch: Arch,
        arch_name: String,
        vocab_size: usize,
        hidden_size: usize,
        n_layers: usize,
        ffn_size: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
        rms_eps: f64,
        context_length: usize,
        rope_base: f32,
        rope_linear_scale: f32,
    ) -> Self {
        ModelConfig {
            arch,
            arch_name,
            vocab_size,
            hidden_size,
            n_layers,
            ffn_size,
            n_heads,
            n_kv_heads,
            head_dim,
            rms_eps,
            context_length,
            rope_base,
            rope_base_local: rope_base,
            rope_linear_scale,
            rope_style: RopeStyle::Interleaved,
            sliding_window: None,
            sliding_pattern: 1,
            attn_scale: 1.0 / (head_dim as f64).sqrt(),
            embed_scale: None,
            qk_norm: false,
            post_norms: false,
            activation: Activation::Silu,
        }
    }

    /// Whether layer `i` attends only within the sliding window.
    pub fn is_local_layer(&self, i: usize) -> bool {
        self.sliding_window.is_some() && self.sliding_pattern > 1 && !(i + 1).is_multiple_of(self.sliding_pattern)
    }
}
