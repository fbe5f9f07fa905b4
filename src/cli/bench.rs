//! `deal bench`: speed benchmarks, printed as ratios against a peer measured in the same run.

use deal_bench::decode::{self, DecodeBench};
use deal_bench::llamacpp;

use super::ModelArgs;

#[derive(clap::Subcommand, Debug)]
pub enum BenchCommand {
    /// Run the decode, search, heads and concurrency benchmarks and write bench/REPORT.md
    /// (machine, model, ratios, the commands to reproduce).
    All(super::bench_all::Args),
    /// Decode tok/s at batch 1 and aggregate tok/s of forked lockstep rows, vs llama.cpp.
    Decode(DecodeArgs),
    /// Wall time per committed token of every search controller vs greedy, and of deal vs a naive implementation.
    Search(super::bench_search::Args),
    /// What a weight of 1 does at default settings, per λ: keyword coverage, sentiment and the
    /// perplexity cost against greedy.
    Steer(super::bench_steer::Args),
    /// Structured outputs: grammar compiler build, schema compile, mask µs per row per token,
    /// constrained vs unconstrained greedy and DeAL wall time per token.
    Grammar(GrammarArgs),
    /// Concurrent searches (as concurrent server requests) vs the same searches one after another.
    Concurrent(ConcurrentArgs),
    /// Our batched Q8_0 matmul vs candle's on the model's weight shapes, at several row counts.
    Kernel(KernelArgs),
    /// Many HTTP clients against `deal serve` (in-process, or `--url`) for a fixed time:
    /// throughput, latency and time-to-first-token percentiles, statuses by class.
    Load(LoadArgs),
}

#[derive(clap::Args, Debug)]
pub struct GrammarArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Interleaved rounds of constrained and unconstrained searches per schema.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

fn grammar_bench(a: GrammarArgs) -> anyhow::Result<()> {
    let engine = a.model.load()?;
    eprintln!("deal bench grammar: {} (vocabulary {}), {} rounds", engine.name(), deal_backend::TextCodec::vocab_size(engine.tokenizer()), a.rounds);
    let (build_ms, points) = deal_bench::grammar::run(&engine, a.rounds)?;
    println!("grammar compiler for the vocabulary: {build_ms:.0} ms (once per server)");
    println!("| schema | compile | mask per row per token | tokens | greedy constrained / plain | deal constrained / plain |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    for p in &points {
        println!(
            "| {} | {:.1} ms | {:.0} µs | {} | {:.2}x | {:.2}x |",
            p.schema, p.compile_ms, p.mask_us, p.tokens, p.greedy_ratio, p.deal_ratio
        );
    }
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct LoadArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// A running server's base URL; without it one is started here on the model.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// API key for `--url`.
    #[arg(long, env = "DEAL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Concurrent clients.
    #[arg(long, default_value_t = 32)]
    pub clients: usize,
    /// Seconds the clients keep sending.
    #[arg(long, default_value_t = 30)]
    pub duration: u64,
    /// Tokens per request.
    #[arg(long, default_value_t = 16)]
    pub max_tokens: usize,
    /// Share of requests that stream.
    #[arg(long, default_value_t = 0.5)]
    pub stream_share: f64,
    /// Share of streams the client drops after the first token.
    #[arg(long, default_value_t = 0.2)]
    pub drop_share: f64,
    /// The requests' `alignment` object as JSON (default: plain greedy), e.g.
    /// '{"controller":"deal","weights":{"sentiment":1}}'.
    #[arg(long, value_name = "JSON")]
    pub alignment: Option<String>,
    /// In-process server: searches at once.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// In-process server: queue length.
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Write the report as JSON to this file too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct KernelArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Activation row counts, comma separated (the first should be 1: the cost ratios are
    /// relative to it).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
    pub rows: Vec<usize>,
    /// Weight types, comma separated: q8_0, q4_k, q5_k, q6_k, q5_0, q4_0, q5_1, q4_1 (each
    /// against candle's matmul on the same type).
    #[arg(long, value_delimiter = ',', default_value = "q8_0,q4_k,q5_k,q6_k,q5_0,q4_0")]
    pub types: Vec<String>,
    /// Seconds spent timing each (shape, rows) point, per implementation.
    #[arg(long, default_value_t = 0.3)]
    pub secs: f64,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct ConcurrentArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Searches run at once.
    #[arg(long, default_value_t = 4)]
    pub clients: usize,
    /// Tokens per search.
    #[arg(long, default_value_t = 32)]
    pub max_tokens: usize,
}

#[derive(clap::Args, Debug)]
pub struct DecodeArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Decode steps timed per batch size.
    #[arg(long, default_value_t = 64)]
    pub steps: usize,
    /// Prompt length in tokens.
    #[arg(long, default_value_t = 32)]
    pub prompt_tokens: usize,
    /// Batch sizes, comma separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,8,16")]
    pub batches: Vec<usize>,
    /// Skip llama.cpp even if it is built.
    #[arg(long)]
    pub no_peer: bool,
    /// Also time the prefill of a prompt of this many tokens (0: skip), vs `llama-bench -p`.
    #[arg(long, default_value_t = 512)]
    pub prefill_tokens: usize,
    /// Write the results as JSON to this file too.
    #[arg(long)]
    pub json: Option<std::path::PathBuf>,
}

pub fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::All(a) => super::bench_all::run(a),
        BenchCommand::Decode(a) => decode_bench(a),
        BenchCommand::Search(a) => super::bench_search::run(a),
        BenchCommand::Steer(a) => super::bench_steer::run(a),
        BenchCommand::Grammar(a) => grammar_bench(a),
        BenchCommand::Concurrent(a) => concurrent_bench(a),
        BenchCommand::Kernel(a) => kernel_bench(a),
        BenchCommand::Load(a) => load_bench(a),
    }
}

fn load_bench(a: LoadArgs) -> anyhow::Result<()> {
    if a.clients == 0 || a.max_tokens == 0 || a.duration == 0 || a.parallel == 0 || a.queue == 0 {
        anyhow::bail!("--clients, --max-tokens, --duration, --parallel and --queue must be > 0");
    }
    let alignment = match &a.alignment {
        Some(text) => Some(serde_json::from_str(text).map_err(|e| anyhow::anyhow!("--alignment is not JSON: {e}"))?),
        None => None,
    };
    // an in-process server unless one is named; its runtime lives until the run ends
    let mut local = None;
    let url = match &a.url {
        Some(u) => u.clone(),
        None => {
            let driver = a.model.driver()?;
            let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
            let config = deal_server::ServerConfig { port: 0, parallel: a.parallel, queue: a.queue, ..Default::default() };
            let server = rt.block_on(deal_server::Server::start(driver, config))?;
            let url = format!("http://{}", server.addr);
            local = Some((rt, server));
            url
        }
    };
    let cfg = deal_bench::load::LoadBench {
        url: url.clone(),
        key: a.api_key.clone(),
        clients: a.clients,
        duration: std::time::Duration::from_secs(a.duration),
        max_tokens: a.max_tokens,
        stream_share: a.stream_share,
        drop_share: a.drop_share,
        alignment,
    };
    let rss0 = rss_bytes();
    eprintln!(
        "deal bench load: {} clients for {} s against {url} ({} tokens, {:.0}% streamed, {:.0}% of streams dropped)",
        a.clients,
        a.duration,
        a.max_tokens,
        a.stream_share * 100.0,
        a.drop_share * 100.0
    );
    let r = deal_bench::load::run(&cfg)?;
    let ms = |v: f64| v * 1e3;
    println!("statuses: {:?} ({} answered 200)", r.by_status, r.ok);
    println!("throughput: {:.2} requests/s, {:.1} tokens/s (completed requests)", r.requests_per_s, r.tokens_per_s);
    println!("latency ms p50/p90/p99: {:.0} / {:.0} / {:.0}", ms(r.latency[0]), ms(r.latency[1]), ms(r.latency[2]));
    println!("time to first token ms p50/p90/p99: {:.0} / {:.0} / {:.0}", ms(r.ttft[0]), ms(r.ttft[1]), ms(r.ttft[2]));
    println!("429 answered in ms p50/p99: {:.1} / {:.1}", ms(r.refusal_latency[0]), ms(r.refusal_latency[1]));
    if let (Some(before), Some(after)) = (rss0, rss_bytes()) {
        if local.is_some() {
            println!("resident memory of this process (model + server): {} MB before, {} MB after", before >> 20, after >> 20);
        }
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&r)?)?;
    }
    if let Some((rt, server)) = local {
        rt.block_on(async {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), server.stop()).await;
        });
    }
    Ok(())
}

/// Resident memory of this process (Linux), bytes.
fn rss_bytes() -> Option<usize> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let kb: usize = s.lines().find_map(|l| l.strip_prefix("VmRSS:"))?.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb << 10)
}

fn kernel_bench(a: KernelArgs) -> anyhow::Result<()> {
    if a.rows.is_empty() || a.rows.contains(&0) || !(a.secs > 0.0 && a.secs.is_finite()) {
        anyhow::bail!("--rows must be positive counts and --secs a positive number");
    }
    let types = a.types.iter().map(|t| deal_bench::kernel::parse_type(t)).collect::<anyhow::Result<Vec<_>>>()?;
    let path = a.model.path()?;
    let file = deal_engine::gguf::GgufFile::open(&path)?;
    let cfg = deal_engine::model::ModelConfig::from_gguf(file.content())?;
    drop(file);
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    eprintln!("deal bench kernel: {} weight shapes, {threads} threads; ours vs candle's QMatMul on the same type", cfg.arch_name);
    let copy = deal_bench::footprint::copy_bandwidth();
    println!("copy bandwidth (STREAM-like, {threads} threads): {:.1} GB/s", copy / 1e9);
    let points = deal_bench::kernel::run(&cfg, &types, &a.rows, a.secs)?;
    println!(
        "{:>9} {:>5} {:>7} {:>5} {:>5} {:>10} {:>10} {:>8} {:>8} {:>7} {:>10}",
        "weight", "type", "n", "k", "rows", "ours ms", "candle ms", "speedup", "GMAC/s", "GB/s", "vs 1 row"
    );
    for p in &points {
        println!(
            "{:>9} {:>5} {:>7} {:>5} {:>5} {:>10.3} {:>10.3} {:>7.2}x {:>8.1} {:>7.1} {:>9.2}x",
            p.weight, p.dtype, p.n, p.k, p.rows, p.ours_ms, p.candle_ms, p.speedup, p.gmacs, p.gb_s, p.cost_vs_one_row
        );
    }
    if let Some(path) = &a.json {
        std::fs::write(path, serde_json::to_string_pretty(&points)?)?;
    }
    Ok(())
}

fn concurrent_bench(a: ConcurrentArgs) -> anyhow::Result<()> {
    if a.clients == 0 || a.max_tokens == 0 {
        anyhow::bail!("--clients and --max-tokens must be > 0");
    }
    let engine = a.model.load()?;
    let cfg = deal_bench::concurrent::ConcurrentBench { clients: a.clients, max_tokens: a.max_tokens };
    eprintln!("deal bench concurrent: {} clients, {} tokens each", cfg.clients, cfg.max_tokens);
    let (merged, separate) = deal_bench::concurrent::pass_cost(&engine, cfg.clients, 16)?;
    println!(
        "one decode step of {} single-row caches: merged pass {:.1} ms, one pass each {:.1} ms: {:.2}x",
        cfg.clients,
        merged * 1e3,
        separate * 1e3,
        separate / merged
    );
    for p in deal_bench::concurrent::run(&engine, &cfg)? {
        println!(
            "{:<18} one after another {:>7.1} tok/s | at once {:>7.1} tok/s | {:.2}x ({:.2} calls per pass)",
            p.controller, p.sequential_tok_s, p.concurrent_tok_s, p.speedup, p.calls_per_pass
        );
    }
    Ok(())
}

fn decode_bench(a: DecodeArgs) -> anyhow::Result<()> {
    if a.batches.is_empty() || a.batches.contains(&0) || a.steps == 0 {
        anyhow::bail!("--batches needs positive sizes and --steps must be > 0");
    }
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let path = a.model.path()?;
    // llama.cpp's load to first token and peak memory on the same file, run twice so that both
    // engines read it from a warm page cache
    let peer_fp = if a.no_peer {
        None
    } else {
        let text = deal_bench::decode::PROMPT_TEXT;
        let _ = deal_bench::footprint::llamacpp(&path, text);
        match deal_bench::footprint::llamacpp(&path, text) {
            Ok(f) => Some(f),
            Err(e) => {
                eprintln!("llama.cpp load/memory: {e} (build it with bench/llamacpp/build.sh)");
                None
            }
        }
    };
    let (rss0, _) = deal_bench::footprint::rss_self();
    let t0 = std::time::Instant::now();
    let engine = a.model.load()?;
    let (rss_loaded, _) = deal_bench::footprint::rss_self();
    deal_bench::decode::first_token(&engine)?;
    let ours_fp = deal_bench::footprint::Footprint { first_token_secs: t0.elapsed().as_secs_f64(), peak_rss: deal_bench::footprint::rss_self().1 };
    let file_bytes = std::fs::metadata(&path).map_or(0, |m| m.len());
    if engine.model().device().is_cpu() {
        println!("CPU matmuls: {}", deal_engine::kernels::describe());
    }
    println!(
        "weights resident: {:.1} MB after load ({:.2}x the {:.1} MB file)",
        rss_loaded.saturating_sub(rss0) as f64 / 1e6,
        rss_loaded.saturating_sub(rss0) as f64 / file_bytes.max(1) as f64,
        file_bytes as f64 / 1e6
    );
    let ratio = |a: f64, b: Option<f64>| b.map_or("-".to_string(), |b| format!("{:.2}x", a / b));
    println!(
        "load to first token: deal {:.2} s, llama.cpp {} ({})",
        ours_fp.first_token_secs,
        peer_fp.map_or("-".into(), |f| format!("{:.2} s", f.first_token_secs)),
        ratio(ours_fp.first_token_secs, peer_fp.map(|f| f.first_token_secs))
    );
    println!(
        "peak RSS to first token: deal {:.1} MB, llama.cpp {} ({})",
        ours_fp.peak_rss as f64 / 1e6,
        peer_fp.map_or("-".into(), |f| format!("{:.1} MB", f.peak_rss as f64 / 1e6)),
        ratio(ours_fp.peak_rss as f64, peer_fp.map(|f| f.peak_rss as f64))
    );
    let gguf = deal_engine::gguf::GgufFile::open(&path)?;
    let ours_bytes = deal_engine::model::bytes_per_token(&gguf, a.model.weight_mode());
    let peer_bytes = deal_engine::model::stored_bytes_per_token(&gguf);
    drop(gguf);
    let bw = deal_bench::footprint::copy_bandwidth();
    let cfg = DecodeBench { prompt_tokens: a.prompt_tokens, steps: a.steps, batches: a.batches.clone(), warmup: 4 };
    eprintln!("deal bench decode: {} ({} threads), prompt {} tokens, {} steps", engine.name(), threads, cfg.prompt_tokens, cfg.steps);
    let ours = decode::run(&engine, &cfg)?;

    let mut peer: Vec<(usize, f64)> = Vec::new();
    if !a.no_peer {
        match llamacpp::bench_b1(engine.path(), threads, a.steps) {
            Ok(t) => peer.push((1, t)),
            Err(e) => eprintln!("llama.cpp b=1: {e} (build it with bench/llamacpp/build.sh)"),
        }
        let multi: Vec<usize> = a.batches.iter().copied().filter(|&b| b > 1).collect();
        if !multi.is_empty() {
            match llamacpp::batched(engine.path(), threads, a.prompt_tokens, a.steps, &multi) {
                Ok(rows) => peer.extend(rows),
                Err(e) => eprintln!("llama.cpp batched: {e}"),
            }
        }
    }
    println!("{:>6} {:>14} {:>16} {:>10} {:>12}", "batch", "deal tok/s", "llama.cpp tok/s", "ratio", "deal KV MB");
    let mut json = Vec::new();
    for p in &ours {
        let peer_t = peer.iter().find(|(b, _)| *b == p.batch).map(|(_, t)| *t);
        let ratio = peer_t.map(|t| p.tok_per_s / t);
        println!(
            "{:>6} {:>14.1} {:>16} {:>10} {:>12.1}",
            p.batch,
            p.tok_per_s,
            peer_t.map_or("-".into(), |t| format!("{t:.1}")),
            ratio.map_or("-".into(), |r| format!("{r:.2}x")),
            p.kv_bytes as f64 / 1e6
        );
        json.push(serde_json::json!({"batch": p.batch, "deal_tok_s": p.tok_per_s, "llamacpp_tok_s": peer_t, "ratio": ratio, "kv_bytes": p.kv_bytes}));
    }
    if a.prefill_tokens > 0 {
        let ours_pp = decode::prefill_speed(&engine, a.prefill_tokens, 2)?;
        let peer_pp = if a.no_peer { None } else { llamacpp::bench_prefill(engine.path(), threads, a.prefill_tokens).map_err(|e| eprintln!("llama.cpp prefill: {e}")).ok() };
        println!(
            "prefill of {} tokens: deal {ours_pp:.1} tok/s, llama.cpp {} ({})",
            a.prefill_tokens,
            peer_pp.map_or("-".into(), |t| format!("{t:.1} tok/s")),
            peer_pp.map_or("-".into(), |t| format!("{:.2}x", ours_pp / t))
        );
        json.push(serde_json::json!({"prefill": {"tokens": a.prefill_tokens, "deal_tok_s": ours_pp, "llamacpp_tok_s": peer_pp}}));
    }
    // the roofline of batch-1 decoding: weight bytes per token at this machine's copy bandwidth
    let b1 = ours.iter().find(|p| p.batch == 1).map(|p| p.tok_per_s);
    let peer_b1 = peer.iter().find(|(b, _)| *b == 1).map(|(_, t)| *t);
    let (roof_ours, roof_peer) = (bw / ours_bytes.max(1) as f64, bw / peer_bytes.max(1) as f64);
    println!("roofline (b=1): memory copy {:.1} GB/s; weights read per token: deal {:.1} MB, llama.cpp {:.1} MB", bw / 1e9, ours_bytes as f64 / 1e6, peer_bytes as f64 / 1e6);
    println!(
        "  at most deal {roof_ours:.1} tok/s (reached {}), llama.cpp {roof_peer:.1} tok/s (reached {})",
        b1.map_or("-".into(), |t| format!("{:.0}%", 100.0 * t / roof_ours)),
        peer_b1.map_or("-".into(), |t| format!("{:.0}%", 100.0 * t / roof_peer))
    );
    json.push(serde_json::json!({"roofline": {"copy_bytes_per_s": bw, "deal_bytes_per_token": ours_bytes, "llamacpp_bytes_per_token": peer_bytes}}));
    json.push(serde_json::json!({"footprint": {"deal": ours_fp, "llamacpp": peer_fp, "weights_resident_bytes": rss_loaded.saturating_sub(rss0), "file_bytes": file_bytes}}));
    if let Some(path) = a.json {
        std::fs::write(&path, serde_json::to_string_pretty(&json)?)?;
    }
    Ok(())
}

