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
}

pub fn run(a: Args) -> anyhow::Result<()> {
    if a.queue == 0 || a.parallel == 0 {
        anyhow::bail!("--queue and --parallel must be at least 1");
    }
    let driver = a.model.driver()?;
    let config = ServerConfig {
        host: a.host,
        port: a.port,
        api_key: a.api_key.filter(|k| !k.is_empty()),
        max_body_bytes: a.max_body,
        queue: a.queue,
        parallel: a.parallel,
        ..Default::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    rt.block_on(async move {
        let name = driver.backend().model_id();
        let server = Server::start(driver, config).await?;
        // the test harness and scripts read this line to find the port
        eprintln!("deal serve: listening on http://{} (model `{name}`; Ctrl-C stops)", server.addr);
        server.run_until_ctrl_c().await
    })?;
    Ok(())
}
