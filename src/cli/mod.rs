//! Subcommands of the `deal` binary, one module each, plus the options they share.

pub mod bench;
pub mod bench_all;
pub mod bench_search;
pub mod bench_steer;
pub mod chat;
pub mod eval;
pub mod generate;
pub mod heads;
pub mod info;
pub mod perplexity;
pub mod serve;
pub mod train_probe;

use std::path::PathBuf;
use std::sync::Arc;

use deal_driver::{Driver, Registries};
use deal_engine::model::WeightMode;
use deal_engine::{device::parse_device, setup::resolve_model, Engine, EngineOptions};
use deal_heads::HeadContext;

/// Options every model-using subcommand takes.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// GGUF model file (gemma3, llama/mistral, qwen2/qwen3). Default: the bundled
    /// Gemma 3 270M, fetched on first use.
    #[arg(short = 'm', long = "model", value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// A random-weight model of a real shape with llama.cpp's Q4_K_M type mix, written once
    /// under $DEAL_HOME/synthetic (gemma3:1b, gemma3:4b, llama:8b, qwen2:7b, ...): speed and
    /// memory at real sizes without a download. Its text is noise.
    #[arg(long, value_name = "ARCH:SIZE", conflicts_with = "model")]
    pub synthetic: Option<String>,
    /// Compute device: cpu, cuda, cuda:N (cuda needs a `--features cuda` build).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Weights in memory: `compact` (Q8_0, Q4_K, Q5_K, Q6_K, Q5_0, Q4_0, Q5_1 and Q4_1 as
    /// stored, on deal's kernels; other types to Q8_0 on CPU: least memory, fastest load and
    /// decode), `requantize` (all but Q8_0 and Q4_K to Q8_0: faster prefill of long prompts), `q8` (every type to Q8_0: most memory,
    /// fastest on wide batches), `stored` (as in the file, candle's kernels), `f32` (exact
    /// reference arithmetic).
    #[arg(long, default_value = "compact", value_parser = ["compact", "requantize", "q8", "stored", "f32"])]
    pub weights: String,
    /// Steer a model served by a remote OpenAI-compatible engine (llama.cpp's server, vLLM,
    /// SGLang, another deal) at this base URL instead of loading it here; `-m` then names a
    /// GGUF of the same model for its tokenizer and chat template (only metadata is read).
    #[arg(long, value_name = "URL")]
    pub engine: Option<String>,
    /// The remote engine's model name (its `model` field; default: the GGUF's file name).
    #[arg(long, value_name = "NAME")]
    pub engine_model: Option<String>,
    /// Bearer key of the remote engine (also read from $DEAL_ENGINE_KEY).
    #[arg(long, env = "DEAL_ENGINE_KEY", hide_env_values = true)]
    pub engine_key: Option<String>,
    /// Seconds a remote engine may take to answer one call.
    #[arg(long, default_value_t = 60)]
    pub engine_timeout: u64,
}

/// The GGUF a model option names: `--synthetic ARCH:SIZE` (written on first use, with a
/// progress bar), else `-m`, else the default model (fetched on first use).
pub fn model_path(model: Option<&std::path::Path>, synthetic: Option<&str>) -> anyhow::Result<PathBuf> {
    let Some(name) = synthetic else {
        return Ok(resolve_model(model)?);
    };
    let shape = deal_engine::synthetic::find(name)?;
    let path = deal_engine::synthetic::path_of(&shape);
    if path.exists() {
        return Ok(path);
    }
    eprintln!("writing the synthetic {} model to {} (once)", shape.name, path.display());
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {bytes}/{total_bytes} [{elapsed_precise}, eta {eta}]")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let path = deal_engine::synthetic::ensure(name, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })?;
    bar.finish_and_clear();
    Ok(path)
}

impl ModelArgs {
    /// The GGUF these options name (see [`model_path`]).
    pub fn path(&self) -> anyhow::Result<PathBuf> {
        model_path(self.model.as_deref(), self.synthetic.as_deref())
    }

    /// The `--weights` mode.
    pub fn weight_mode(&self) -> WeightMode {
        match self.weights.as_str() {
            "stored" => WeightMode::Stored,
            "f32" => WeightMode::F32,
            "q8" => WeightMode::Q8,
            "requantize" => WeightMode::Requantize,
            _ => WeightMode::Compact,
        }
    }

    /// Resolve the model path (fetching the default one if needed) and load the engine.
    pub fn load(&self) -> anyhow::Result<Engine> {
        let path = self.path()?;
        let mut opts = EngineOptions { device: parse_device(&self.device)?, ..Default::default() };
        opts.load.weights = self.weight_mode();
        Ok(Engine::load(&path, &opts)?)
    }

    /// The remote engine `--engine` names (the tokenizer comes from `-m`'s GGUF), if any.
    pub fn remote(&self) -> anyhow::Result<Option<Arc<deal_remote::RemoteBackend>>> {
        let Some(url) = &self.engine else {
            return Ok(None);
        };
        let path = self.path()?;
        let name = match &self.engine_model {
            Some(n) => n.clone(),
            None => path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "model".into()),
        };
        let mut opts = deal_remote::RemoteOptions::new(url.clone(), name);
        opts.api_key = self.engine_key.clone().filter(|k| !k.is_empty());
        opts.timeout = std::time::Duration::from_secs(self.engine_timeout.max(1));
        Ok(Some(Arc::new(deal_remote::RemoteBackend::new(opts, &path)?)))
    }

    /// The request driver over the local engine (or the remote one `--engine` names), with
    /// the built-in heads and controllers.
    pub fn driver(&self) -> anyhow::Result<Driver> {
        if let Some(remote) = self.remote()? {
            let remote: Arc<dyn deal_backend::Backend> = remote;
            return Ok(Driver::new(remote.clone(), Registries::builtin(), HeadContext::with_backend(remote)));
        }
        let engine = Arc::new(self.load()?);
        Ok(Driver::new(engine.clone(), Registries::builtin(), HeadContext::with_policy(engine)))
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
    pub fn spec(&self) -> anyhow::Result<deal_heads::reward::RewardSpec> {
        let mut spec = match &self.spec {
            Some(s) => deal_heads::reward::RewardSpec::from_json(s)?,
            None => Default::default(),
        };
        if let Some(w) = &self.reward {
            spec.set_weights_from_args(w)?;
        }
        for hp in &self.head_params {
            let (name, json) = hp.split_once('=').ok_or_else(|| anyhow::anyhow!("--head {hp:?}: expected NAME=JSON"))?;
            let v: serde_json::Value = serde_json::from_str(json).map_err(|e| anyhow::anyhow!("--head {name}: not JSON ({e})"))?;
            spec.heads.insert(name.to_string(), v);
        }
        spec.validate(&deal_heads::Registry::with_builtin())?;
        Ok(spec)
    }
}
