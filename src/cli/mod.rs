//! Subcommands of the `deal` binary, one module each, plus the options they share.

pub mod bench;
pub mod bench_search;
pub mod generate;
pub mod heads;
pub mod info;
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
