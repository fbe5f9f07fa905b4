//! Subcommands of the `deal` binary, one module each, plus the options they share.

pub mod bench;
pub mod bench_search;
pub mod generate;
pub mod heads;
pub mod info;
pub mod serve;
pub mod chat;
pub mod train_probe;

use std::path::PathBuf;

use deal_runtime::model::WeightMode;
use deal_runtime::{device::parse_device, setup::resolve_model, Engine, EngineOptions};

/// Options every model-using subcommand takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF model file (gemma3, llama/mistral, qwen2/qwen3). Default: the bundled
    /// Gemma 3 270M, fetched on first use.
    #[arg(short = 'm', long = "model", value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// Compute device: cpu, cuda, cuda:N (cuda needs a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights in memory: `requantize` (Q4_0/Q5_0-type weights to Q8_0 on CPU, fastest),
    /// `stored` (as in the file), `f32` (exact reference arithmetic, 4x memory).
    #[arg(long, default_value = "requantize", value_parser = ["requantize", "stored", "f32"])]
    pub weights: String,
}

impl ModelArgs {
    /// Resolve the model path (fetching the default one if needed) and load the engine.
    pub fn load(&self) -> anyhow::Result<Engine> {
        let path = resolve_model(self.model.as_deref())?;
        let mut opts = EngineOptions { device: parse_device(&self.device)?, ..Default::default() };
        opts.load.weights = match self.weights.as_str() {
            "stored" => WeightMode::Stored,
            "f32" => WeightMode::F32,
            _ => WeightMode::Requantize,
        };
        Ok(Engine::load(&path, &opts)?)
    }
}

/// A reward spec given on the command line (validated against the head registry).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct RewardArgs {
    /// The reward spec as JSON: {"weights": {...}, "heads": {...}, "combine", "min"}.
    #[arg(long, value_name = "JSON")]
    pub spec: Option<String>,
    /// Weights as name=value pairs ("sentiment=1 length=0.5"), added to --spec.
    #[arg(short = 'W', long, value_name = "NAME=W ...")]
    pub reward: Option<String>,
    /// Params of one head, as NAME=JSON (repeatable), e.g. length='{"target": 30}'.
    #[arg(long = "head", value_name = "NAME=JSON")]
    pub head_params: Vec<String>,
}

impl RewardArgs {
    /// Whether any reward setting was given.
    pub fn is_empty(&self) -> bool {
        self.spec.is_none() && self.reward.is_none() && self.head_params.is_empty()
    }

    /// The validated spec.
    pub fn spec(&self) -> anyhow::Result<deal_runtime::reward::RewardSpec> {
        let mut spec = match &self.spec {
            Some(s) => deal_runtime::reward::RewardSpec::from_json(s)?,
            None => Default::default(),
        };
        if let Some(w) = &self.reward {
            spec.set_weights_from_args(w)?;
        }
        for hp in &self.head_params {
            let (name, json) = hp.split_once('=').ok_or_else(|| anyhow::anyhow!("--head {hp:?}: expected NAME=JSON"))?;
            let v: serde_json::Value =
                serde_json::from_str(json).map_err(|e| anyhow::anyhow!("--head {name}: not JSON ({e})"))?;
            spec.heads.insert(name.to_string(), v);
        }
        spec.validate(deal_runtime::heads::Registry::builtin())?;
        Ok(spec)
    }
}
