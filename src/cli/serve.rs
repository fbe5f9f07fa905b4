//! `deal serve`: the OpenAI-compatible HTTP endpoint (see the `deal-server` crate).

use deal_server::{Server, ServerConfig};

use super::ModelArgs;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Address to bind.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to bind (0: any free port, printed at start).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer KEY` on /v1/* (also read from $DEAL_API_KEY).
    #[arg(long, env = "DEAL_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Largest request body in bytes (beyond: 413).
    #[arg(long, default_value_t = 1 << 20)]
    pub max_body: usize,
    /// Requests that may wait for an engine worker (beyond: 429 with Retry-After).
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Searches run at once; they take turns at the forward pass, first come first served.
    #[arg(long, default_value_t = 4)]
    pub parallel: usize,
    /// Longest a request may run, seconds, queue wait included (then: 504 request_timeout).
    #[arg(long, default_value_t = 300)]
    pub request_timeout: u64,
    /// Longest a client may take to send its headers / its body, seconds.
    #[arg(long, default_value_t = 10)]
    pub read_timeout: u64,
    /// Open connections at most (beyond: 503).
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Largest KV-cache estimate of one request, MB (default: half the machine's memory
    /// shared by the --parallel searches); beyond it the request gets a 400 naming the field.
    #[arg(long, value_name = "MB")]
    pub max_kv_mb: Option<usize>,
    /// Serve /metrics without the API key.
    #[arg(long)]
    pub public_metrics: bool,
    /// Do not serve the web playground at `/`.
    #[arg(long)]
    pub no_playground: bool,
    /// Let web pages from ORIGIN call the API (CORS; repeatable; `*` for any).
    #[arg(long = "cors", value_name = "ORIGIN")]
    pub cors: Vec<String>,
    /// Let requests' `http` head POST to URLs under this prefix (repeatable; off without).
    #[arg(long = "allow-http-head", value_name = "URL_PREFIX")]
    pub allow_http_head: Vec<String>,
    /// A judge model requests may name as `judge.model: NAME` (repeatable).
    #[arg(long = "judge", value_name = "NAME=PATH")]
    pub judges: Vec<String>,
    /// A probe requests may name as `probe.path: NAME` (repeatable).
    #[arg(long = "probe", value_name = "NAME=PATH")]
    pub probes: Vec<String>,
    /// Requests may name judge models and probes in this directory (relative paths).
    #[arg(long, value_name = "DIR")]
    pub models_dir: Option<std::path::PathBuf>,
    /// Model-backed heads to install and load at start (comma-separated: relevance, judge);
    /// requests never fetch anything.
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub heads: Vec<String>,
}

/// What requests' head params may reach, from the flags.
fn access(a: &Args) -> anyhow::Result<deal_heads::Access> {
    let mut access = deal_heads::Access::server();
    for p in &a.allow_http_head {
        access.allow_http_prefix(p).map_err(|e| anyhow::anyhow!("--allow-http-head {p}: {e}"))?;
    }
    for (flag, list) in [("--judge", &a.judges), ("--probe", &a.probes)] {
        for item in list {
            let (name, path) = item.split_once('=').ok_or_else(|| anyhow::anyhow!("{flag} {item:?}: expected NAME=PATH"))?;
            access.allow_file(name, std::path::Path::new(path)).map_err(|e| anyhow::anyhow!("{flag} {name}: {e}"))?;
        }
    }
    if let Some(d) = &a.models_dir {
        access.allow_dir(d).map_err(|e| anyhow::anyhow!("--models-dir: {e}"))?;
    }
    Ok(access)
}

/// Install and load the model-backed heads `--heads` names, before any request.
fn preload(a: &Args, driver: &deal_driver::Driver, access: &deal_heads::Access) -> anyhow::Result<()> {
    let restricted = driver.heads().with_access(access.clone());
    for h in &a.heads {
        match h.trim() {
            "relevance" => {
                deal_heads::relevance::Relevance::embedder(driver.heads())?;
            }
            "judge" => {
                for item in &a.judges {
                    if let Some((name, _)) = item.split_once('=') {
                        restricted.model("judge", Some(std::path::Path::new(name)))?;
                    }
                }
            }
            "" => {}
            other => anyhow::bail!("--heads {other}: only relevance and judge have assets to load"),
        }
    }
    Ok(())
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.queue == 0 || a.parallel == 0 {
        anyhow::bail!("--queue and --parallel must be at least 1");
    }
    let access = access(&a)?;
    let driver = a.model.driver()?;
    // assets load with the operator's rights, before the server's rules apply
    preload(&a, &driver, &access)?;
    let read = std::time::Duration::from_secs(a.read_timeout.max(1));
    let playground = !a.no_playground;
    let config = ServerConfig {
        host: a.host,
        port: a.port,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        max_body_bytes: a.max_body,
        queue: a.queue,
        parallel: a.parallel,
        request_timeout: std::time::Duration::from_secs(a.request_timeout.max(1)),
        header_timeout: read,
        body_timeout: read,
        max_connections: a.max_connections.max(1),
        max_kv_bytes: a.max_kv_mb.map(|mb| mb << 20),
        public_metrics: a.public_metrics,
        cors_origins: a.cors.clone(),
        playground,
        access,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let name = driver.backend().model_id();
        let server = Server::start(driver, config).await?;
        // the test harness and scripts read this line to find the port
        eprintln!("deal serve: listening on http://{} (model `{name}`; Ctrl-C stops)", server.addr);
        if playground {
            eprintln!("deal serve: playground at http://{}/", server.addr);
        }
        server.run_until_ctrl_c().await
    })?;
    Ok(())
}
