//! `http`: an external reward server (a user's own reward model). One POST per distinct
//! prompt in the batch:
//!
//! ```text
//! → {"prompt": "...", "responses": ["...", ...], "partial": [false, ...]}
//! ← {"scores": [0.7, ...]}
//! ```
//!
//! with a timeout (at most [`MAX_TIMEOUT_MS`]); a server that is down, slow, or answers
//! anything else is an error that names the URL and what went wrong, never quoting its body.
//! Redirects are not followed. Which URLs a request may name is the [`HeadContext`]'s
//! [`crate::Access`]: any on the command line, only the operator's prefixes on a server
//! (`deal serve --allow-http-head URL_PREFIX`; off without one).

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{bad_param, Candidate, HeadContext, ParamInfo, RewardHead, Scale};
use crate::Result;

/// Params of the [`Http`] head.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Params {
    /// Endpoint to POST to; must start with `http://`.
    pub url: String,
    /// Whole-request timeout in milliseconds (> 0, default 5000).
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// The server's score range `[lo, hi]`, normalised to [0, 1] (default `[0, 1]`).
    pub range: Option<[f64; 2]>,
    /// With `std`: mean of the server's scores, for z-score normalisation instead of a range.
    pub mean: Option<f64>,
    /// With `mean`: standard deviation of the server's scores (> 0).
    pub std: Option<f64>,
}

fn default_timeout() -> u64 {
    5000
}

/// Largest reply read, bytes.
const MAX_REPLY_BYTES: u64 = 1 << 20;

/// Largest `timeout_ms`.
pub const MAX_TIMEOUT_MS: u64 = 30_000;

/// See the module documentation.
pub struct Http {
    url: String,
    timeout_ms: u64,
    agent: ureq::Agent,
    scale: Scale,
}

#[derive(Deserialize)]
struct Reply {
    scores: Vec<f64>,
}

impl Http {
    fn fail(&self, message: String) -> crate::Error {
        crate::Error::Upstream { message: format!("reward server {}: {message}", self.url), timeout: false }
    }

    fn post(&self, prompt: &str, cands: &[&Candidate]) -> Result<Vec<f32>> {
        let body = serde_json::json!({
            "prompt": prompt,
            "responses": cands.iter().map(|c| c.response.as_str()).collect::<Vec<_>>(),
            "partial": cands.iter().map(|c| c.partial).collect::<Vec<_>>(),
        })
        .to_string();
        let mut resp = self.agent.post(&self.url).header("Content-Type", "application/json").send(body.as_bytes()).map_err(|e| {
            if let ureq::Error::Timeout(_) = e {
                return crate::Error::Upstream {
                    message: format!("reward server {}: no answer within {} ms (timeout_ms)", self.url, self.timeout_ms),
                    timeout: true,
                };
            }
            self.fail(match e {
                ureq::Error::ConnectionFailed | ureq::Error::HostNotFound => format!("cannot connect ({e}); is the server running?"),
                ureq::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                    format!("connection refused; is the server running? ({io})")
                }
                other => other.to_string(),
            })
        })?;
        let status = resp.status().as_u16();
        if (300..400).contains(&status) {
            return Err(self.fail(format!("HTTP {status} (a redirect; redirects are not followed)")));
        }
        if status != 200 {
            return Err(self.fail(format!("HTTP {status}")));
        }
        let text = resp
            .body_mut()
            .with_config()
            .limit(MAX_REPLY_BYTES)
            .read_to_string()
            .map_err(|e| self.fail(format!("reading the reply: {e}")))?;
        let reply: Reply = serde_json::from_str(&text)
            .map_err(|e| self.fail(format!("reply is not {{\"scores\": [numbers]}} ({e})")))?;
        if reply.scores.len() != cands.len() {
            return Err(self.fail(format!("returned {} scores for {} responses", reply.scores.len(), cands.len())));
        }
        if let Some(bad) = reply.scores.iter().find(|s| !s.is_finite()) {
            return Err(self.fail(format!("returned a non-finite score {bad}")));
        }
        Ok(reply.scores.iter().map(|&s| s as f32).collect())
    }
}

impl RewardHead for Http {
    const NAME: &'static str = "http";
    const DESCRIPTION: &'static str =
        "external reward server: POST {prompt, responses[], partial[]} → {scores[]}; higher = better per the server";
    const PARAMS: &'static [ParamInfo] = &[
        ParamInfo { name: "url", ty: "string", default: "required", doc: "http:// endpoint (on a server: under an --allow-http-head prefix)" },
        ParamInfo { name: "timeout_ms", ty: "integer", default: "5000", doc: "whole-request timeout, at most 30000" },
        ParamInfo { name: "range", ty: "[lo, hi]", default: "[0, 1]", doc: "the server's score range, normalised to [0, 1]" },
        ParamInfo { name: "mean", ty: "number", default: "none", doc: "with `std`: z-score normalisation instead of a range" },
        ParamInfo { name: "std", ty: "number", default: "none", doc: "standard deviation of the server's scores" },
    ];
    const EXAMPLE: &'static str = r#"{"url": "http://127.0.0.1:8000/score", "timeout_ms": 2000, "range": [-5, 5]}"#;
    type Params = Params;

    fn build(p: Params, ctx: &Arc<HeadContext>) -> Result<Self> {
        if !p.url.starts_with("http://") {
            return Err(bad_param(
                Self::NAME,
                format!("`url` must start with http:// (got {:?}; TLS is not built in: put an https server behind a local proxy)", p.url),
            ));
        }
        if p.timeout_ms == 0 || p.timeout_ms > MAX_TIMEOUT_MS {
            return Err(bad_param(Self::NAME, format!("`timeout_ms` must be in 1..={MAX_TIMEOUT_MS}, got {}", p.timeout_ms)));
        }
        ctx.access().check_url(&p.url).map_err(|e| bad_param(Self::NAME, e.0))?;
        let scale = match (p.range, p.mean, p.std) {
            (None, None, None) => Scale::UNIT,
            (Some([lo, hi]), None, None) => Scale::Range { lo, hi },
            (None, Some(mean), Some(std)) => Scale::Zscore { mean, std },
            _ => return Err(bad_param(Self::NAME, "give either `range` or both `mean` and `std`")),
        };
        scale.validate().map_err(|m| bad_param(Self::NAME, m))?;
        let agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(p.timeout_ms)))
            .http_status_as_error(false)
            .max_redirects(0)
            .max_redirects_will_error(false)
            .build()
            .into();
        Ok(Self { url: p.url, timeout_ms: p.timeout_ms, agent, scale })
    }

    fn scale(&self) -> Scale {
        self.scale
    }

    fn score(&self, cands: &[Candidate]) -> Result<Vec<f32>> {
        let mut out = vec![0.0f32; cands.len()];
        for (prompt, idx) in super::group_by_prompt(cands) {
            let group: Vec<&Candidate> = idx.iter().map(|&i| &cands[i]).collect();
            for (&i, s) in idx.iter().zip(self.post(prompt, &group)?) {
                out[i] = s;
            }
        }
        Ok(out)
    }
}
