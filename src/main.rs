//! `deal`: the command-line entry point. Each subcommand lives in its own module under
//! `cli/`; this file only parses arguments and reports errors as one line.

mod cli;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "deal", version, about = "Decoding-time alignment runtime: reward-guided search over a GGUF LLM")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Interactive chat with live weight dials (/weights, /controller, /scores, /help).
    Chat(cli::chat::Args),
    /// OpenAI-compatible HTTP server (/v1/chat/completions, /v1/completions, ...).
    Serve(cli::serve::Args),
    /// Generate text from a prompt, streamed to stdout.
    Generate(cli::generate::Args),
    /// Describe a GGUF model: architecture, sizes, quantization types, context length.
    Info(cli::info::Args),
    /// Perplexity of a text file (llama.cpp's llama-perplexity protocol: -c, --chunks).
    Perplexity(cli::perplexity::Args),
    /// Fetch and verify the default model (done automatically on first use), and with
    /// `--heads relevance` the relevance head's MiniLM model (a server never fetches it).
    Setup {
        /// Model-backed heads whose assets to fetch too (comma-separated: relevance).
        #[arg(long, value_delimiter = ',')]
        heads: Vec<String>,
    },
    /// List the reward heads and their params; score texts (`heads score`); cost (`heads bench`).
    Heads(cli::heads::Args),
    /// Fit a linear probe reward head on the policy's hidden states (ridge regression).
    TrainProbe(cli::train_probe::Args),
    /// Evaluations: keyword coverage per controller, weight sweeps with Pareto fronts and
    /// plots, DeAL vs best-of-N vs ARGS at equal tokens.
    #[command(subcommand)]
    Eval(cli::eval::EvalCommand),
    /// Benchmarks (speed ratios vs. baselines and peers).
    #[command(subcommand)]
    Bench(cli::bench::BenchCommand),
}

fn setup(heads: &[String]) -> anyhow::Result<()> {
    println!("{}", deal_engine::setup::ensure_default_model()?.display());
    for h in heads {
        match h.trim() {
            "relevance" => println!("{}", deal_heads::relevance::MiniLm::default_dir()?.display()),
            "" => {}
            other => anyhow::bail!("--heads {other}: only `relevance` has assets to fetch"),
        }
    }
    Ok(())
}

fn main() -> ExitCode {
    // candle asks for its thread count on every f32 matmul (attention), and without this
    // variable it parses /proc/cpuinfo each time: thousands of reads per search. Fix it
    // once, while the process is still single-threaded.
    if std::env::var_os("RAYON_NUM_THREADS").is_none() {
        std::env::set_var("RAYON_NUM_THREADS", candle_core::utils::get_num_threads().to_string());
    }
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_env("DEAL_LOG"))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Chat(a) => cli::chat::run(a),
        Command::Serve(a) => cli::serve::run(a),
        Command::Generate(a) => cli::generate::run(a),
        Command::Info(a) => cli::info::run(a),
        Command::Perplexity(a) => cli::perplexity::run(a),
        Command::Setup { heads } => setup(&heads),
        Command::Bench(b) => cli::bench::run(b),
        Command::Eval(e) => cli::eval::run(e),
        Command::Heads(a) => cli::heads::run(a),
        Command::TrainProbe(a) => cli::train_probe::run(a),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    /// clap's own checks of every subcommand (duplicate names, bad defaults), which it
    /// otherwise runs only when that subcommand is parsed.
    #[test]
    fn every_subcommand_is_well_formed() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }
}
