//! Subcommands of the `deal` binary, one module each, plus the options they share.

pub mod bench;
pub mod generate;
pub mod info;

use std::path::PathBuf;

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
    /// Keep Q4_0/Q5_0-type weights as stored instead of re-quantizing them to Q8_0 on CPU.
    #[arg(long)]
    pub no_requantize: bool,
}

impl ModelArgs {
    /// Resolve the model path (fetching the default one if needed) and load the engine.
    pub fn load(&self) -> anyhow::Result<Engine> {
        let path = resolve_model(self.model.as_deref())?;
        let mut opts = EngineOptions { device: parse_device(&self.device)?, ..Default::default() };
        opts.load.requantize = !self.no_requantize;
        Ok(Engine::load(&path, &opts)?)
    }
}
