//! `deal info`: what is inside a GGUF model, without loading its weights.

use std::path::PathBuf;

use deal_engine::gguf::GgufFile;
use deal_engine::model::Model;
use deal_engine::tokenizer::GgufTokenizer;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// GGUF model file (default: the bundled Gemma 3 270M).
    #[arg(short = 'm', long = "model", value_name = "PATH")]
    pub model: Option<PathBuf>,
    /// A synthetic model of a real shape (see `deal generate --help`).
    #[arg(long, value_name = "ARCH:SIZE", conflicts_with = "model")]
    pub synthetic: Option<String>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let path = super::model_path(a.model.as_deref(), a.synthetic.as_deref())?;
    let f = GgufFile::open(&path)?;
    let info = Model::info(&f)?;
    let c = &info.config;
    let tok = GgufTokenizer::from_gguf(f.content())?;
    println!("file            {} ({:.1} MB)", path.display(), info.file_bytes as f64 / 1e6);
    println!("architecture    {} ({:?})", c.arch_name, c.arch);
    println!("parameters      {:.1} M", info.parameters as f64 / 1e6);
    println!("layers          {}", c.n_layers);
    println!("hidden size     {}", c.hidden_size);
    println!("ffn size        {}", c.ffn_size);
    println!("heads           {} query, {} kv, head dim {}", c.n_heads, c.n_kv_heads, c.head_dim);
    println!("context length  {}", c.context_length);
    println!("vocabulary      {} tokens ({:?})", tok.vocab_size(), tok.kind());
    println!("rope            base {} ({:?}), local base {}", c.rope_base, c.rope_style, c.rope_base_local);
    match c.sliding_window {
        Some(w) => {
            println!("sliding window  {w} tokens on {} of {} layers", (0..c.n_layers).filter(|&i| c.is_local_layer(i)).count(), c.n_layers)
        }
        None => println!("sliding window  none"),
    }
    let quants: Vec<String> = info.quant_types.iter().map(|(q, n)| format!("{q} x{n}")).collect();
    println!("tensor types    {}", quants.join(", "));
    let mb = |m| deal_engine::model::resident_estimate(&f, m) as f64 / 1e6;
    println!(
        "weights in RAM  {:.1} MB on CPU by default ({:.2}x the file; --weights requantize: {:.1} MB, q8: {:.1} MB)",
        info.resident_bytes as f64 / 1e6,
        info.resident_bytes as f64 / info.file_bytes.max(1) as f64,
        mb(deal_engine::model::WeightMode::Requantize),
        mb(deal_engine::model::WeightMode::Q8)
    );
    println!("CPU matmuls     {}", deal_engine::kernels::describe());
    Ok(())
}
