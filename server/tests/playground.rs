//! The web playground in a real browser: headless Chromium (Debian's `chromium` and
//! `chromium-driver`, which `.ci/run` installs) driven over WebDriver by `fantoccini`, against
//! a server on the default model.
//!
//! - the page loads, builds a slider per head from `/v1/heads`, and a slider moved with the
//!   keyboard sends its weight: the server's breakdown of the streamed answer names it;
//! - the answer streams (several chunks), the per-head bars, the search stats and the plain
//!   (greedy) answer beside it appear;
//! - a server error (a head param the server refuses) is shown as the server wrote it;
//! - with `--api-key`, the page asks for the key and works once it is typed;
//! - the pages carry a strict CSP and are not served with the playground off.
//!
//! A screenshot of the finished page goes to `$CARGO_TARGET_TMPDIR/playground.png` (and to
//! `$DEAL_SCREENSHOT_TO` when set, which is how `docs/playground.png` is made).

mod common;

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::TestServer;
use deal_server::ServerConfig;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// chromedriver on a free port, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
    profile: std::path::PathBuf,
}

impl Driver {
    fn start() -> Self {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                std::path::Path::new(bin).is_file(),
                "{bin} is missing: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)"
            );
        }
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let t = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(t.elapsed() < Duration::from_secs(20), "chromedriver did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = std::env::temp_dir().join(format!("deal-chromium-{}-{port}", std::process::id()));
        Self { child, port, profile }
    }

    async fn browser(&self) -> Client {
        // the flags a closed-network CI machine needs: no sandbox as root, no background
        // connections to Google's hosts, a fresh profile
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-quic", "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--window-size=1400,1050",
                    format!("--user-data-dir={}", self.profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else { unreachable!() };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a WebDriver session in headless Chromium")
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // a test that panicked left its session open: its browser outlives chromedriver
        // unless killed too (found by its own profile directory)
        let _ = Command::new("pkill").arg("-f").arg(self.profile.as_os_str()).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Run `script` (a JS expression) until it is truthy; its value.
async fn until(c: &Client, what: &str, script: &str, within: Duration) -> Value {
    let t = Instant::now();
    loop {
        let v = c.execute(&format!("return ({script});"), vec![]).await.expect("execute");
        if !(v.is_null() || v == json!(false) || v == json!("") || v == json!(0)) {
            return v;
        }
        if t.elapsed() > within {
            let err = c.execute("return document.querySelector('#error').textContent", vec![]).await.unwrap_or_default();
            panic!("{what}: not seen within {within:?} (error box: {err})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn js(c: &Client, script: &str) -> Value {
    c.execute(&format!("return ({script});"), vec![]).await.expect("execute")
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

#[test]
fn pages_are_served_with_a_strict_policy_and_can_be_turned_off() {
    let on = TestServer::start(ServerConfig::default());
    let agent: ureq::Agent = ureq::Agent::config_builder().http_status_as_error(false).build().into();
    for (path, mime) in [("/", "text/html"), ("/playground.js", "text/javascript"), ("/playground.css", "text/css")] {
        let resp = agent.get(&format!("{}{path}", on.base)).call().unwrap();
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let h = resp.headers();
        assert!(h["content-type"].to_str().unwrap().starts_with(mime), "{path}: {:?}", h["content-type"]);
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("default-src 'self'") && csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert_eq!(h["x-frame-options"], "DENY");
    }
    let (_, models) = on.get("/v1/models");
    let models: Value = serde_json::from_str(&models).unwrap();
    assert_eq!(models["data"][0]["chat_template"], json!(false), "the default model is a base model: {models}");
    let (_, heads) = on.get("/v1/heads");
    let heads: Value = serde_json::from_str(&heads).unwrap();
    let deal = heads["controllers"].as_array().unwrap().iter().find(|c| c["name"] == "deal").unwrap();
    assert_eq!(deal["params"], json!(["k", "beams", "lookahead", "lambda", "commit", "top_p"]));
    drop(on);

    let off = TestServer::start(ServerConfig { playground: false, ..Default::default() });
    let (status, body) = off.get("/");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\""), "an OpenAI-style 404: {body}");
}

#[test]
fn a_slider_steers_a_streamed_answer_in_a_real_browser() {
    let server = TestServer::start(ServerConfig::default());
    let driver = Driver::start();
    rt().block_on(async {
        let c = driver.browser().await;
        c.goto(&format!("{}/", server.base)).await.unwrap();
        until(&c, "the page built from /v1/heads", "document.body.dataset.ready === 'true'", Duration::from_secs(30)).await;
        let sliders = js(&c, "document.querySelectorAll('input[type=range][data-head]').length").await;
        assert!(sliders.as_u64().unwrap() >= 8, "a slider per head: {sliders}");
        let note = js(&c, "document.querySelector('#model-note').textContent").await;
        assert!(note.as_str().unwrap().contains("no chat template"), "the base-model note: {note}");

        // a server error is shown as the server wrote it: keywords without its words
        let kw = c.find(Locator::Css("input[data-head=keywords]")).await.unwrap();
        kw.send_keys(&"\u{E014}".repeat(5)).await.unwrap(); // ArrowRight × 5 = weight 0.5
        c.execute("document.querySelector('textarea[data-head-params=keywords]').value = '{\"words\": 5}'", vec![]).await.unwrap();
        c.find(Locator::Css("#prompt")).await.unwrap().send_keys("The weather today").await.unwrap();
        c.find(Locator::Css("#send")).await.unwrap().click().await.unwrap();
        let err = until(&c, "the server's 400", "!document.querySelector('#error').hidden && document.querySelector('#error').textContent", Duration::from_secs(30)).await;
        assert!(err.as_str().unwrap().contains("HTTP 400") && err.as_str().unwrap().contains("words"), "error box: {err}");
        assert_eq!(js(&c, "document.querySelectorAll('#history .msg').length").await, json!(0), "a failed turn leaves no message");
        assert_eq!(js(&c, "document.querySelector('#prompt').value").await, json!("The weather today"), "and gives the prompt back");
        c.execute("document.querySelector('#prompt').value = ''", vec![]).await.unwrap();
        kw.send_keys(&"\u{E012}".repeat(5)).await.unwrap(); // ArrowLeft × 5: back to 0
        assert_eq!(js(&c, "document.querySelector('output[data-head-value=keywords]').textContent").await, json!("0.0"));

        // move the sentiment slider with the keyboard: 10 steps of 0.1
        let s = c.find(Locator::Css("input[data-head=sentiment]")).await.unwrap();
        s.send_keys(&"\u{E014}".repeat(10)).await.unwrap();
        assert_eq!(js(&c, "document.querySelector('output[data-head-value=sentiment]').textContent").await, json!("1.0"));
        let max = c.find(Locator::Css("#max-tokens")).await.unwrap();
        max.clear().await.unwrap();
        max.send_keys("10").await.unwrap();
        c.find(Locator::Css("#prompt")).await.unwrap().send_keys("The weather today").await.unwrap();
        c.find(Locator::Css("#send")).await.unwrap().click().await.unwrap();

        until(&c, "the plain answer's stats", "document.querySelector('#plain .stats').textContent", Duration::from_secs(180)).await;
        assert_eq!(js(&c, "document.querySelector('#error').hidden").await, json!(true), "no error");
        let sent: Value = serde_json::from_str(js(&c, "document.querySelector('#request').textContent").await.as_str().unwrap()).unwrap();
        assert_eq!(sent["alignment"]["weights"], json!({"sentiment": 1}), "the request the page sent: {sent}");
        assert_eq!(sent["alignment"]["controller"], "deal");
        assert_eq!(sent["max_tokens"], 10);
        assert_eq!(sent["stream"], true);

        let text = js(&c, "document.querySelector('#steered .text').textContent").await;
        assert!(!text.as_str().unwrap().trim().is_empty(), "streamed text: {text}");
        let chunks: u64 = js(&c, "document.querySelector('#steered').dataset.chunks").await.as_str().unwrap().parse().unwrap();
        assert!(chunks >= 2, "the answer arrived in {chunks} chunks");
        // the breakdown comes from the server's parse of the request: it carried the weight
        let bar = js(&c, "(() => { const b = document.querySelector('#steered .bar[data-head=sentiment]'); return b && [b.dataset.weight, b.dataset.normalized]; })()").await;
        assert_eq!(bar[0], json!("1"), "the server scored sentiment at the slider's weight: {bar}");
        let score: f64 = bar[1].as_str().unwrap().parse().unwrap();
        assert!((0.0..=1.0).contains(&score), "{bar}");
        let stats = js(&c, "document.querySelector('#steered .stats').textContent").await;
        assert!(stats.as_str().unwrap().contains("passes") && stats.as_str().unwrap().contains("tokens/s"), "{stats}");
        assert!(js(&c, "!!document.querySelector('#plain .bar[data-head=sentiment]')").await == json!(true), "the plain answer's breakdown");
        let plain_controller = js(&c, "document.querySelector('#plain .stats').textContent").await;
        assert!(plain_controller.as_str().unwrap().starts_with("greedy"), "{plain_controller}");
        assert_eq!(js(&c, "document.querySelectorAll('#history .msg.assistant').length").await, json!(1));
        assert_eq!(js(&c, "document.querySelectorAll('#history .msg.user').length").await, json!(1));
        let fill = js(&c, "document.querySelector('#steered .bar[data-head=sentiment] .fill').getBoundingClientRect().width").await;
        assert!(fill.as_f64().unwrap() > 1.0, "the bar is drawn: {fill}px");
        assert_eq!(js(&c, "document.querySelector('#key-box').offsetParent === null").await, json!(true), "no key box without a key");

        let png = c.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a screenshot ({} bytes)", png.len());
        std::fs::write(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("playground.png"), &png).unwrap();
        if let Some(to) = std::env::var_os("DEAL_SCREENSHOT_TO") {
            std::fs::write(to, &png).unwrap();
        }
        c.close().await.unwrap();
    });
    server.wait_idle(Duration::from_secs(30), "after the browser test");
}

#[test]
fn the_page_asks_for_the_api_key() {
    let server = TestServer::start(ServerConfig { api_key: Some("sekret-key".into()), ..Default::default() });
    let driver = Driver::start();
    rt().block_on(async {
        let c = driver.browser().await;
        c.goto(&format!("{}/", server.base)).await.unwrap();
        let err = until(&c, "the 401", "!document.querySelector('#error').hidden && document.querySelector('#error').textContent", Duration::from_secs(30)).await;
        assert!(err.as_str().unwrap().contains("401"), "{err}");
        assert_eq!(js(&c, "document.querySelector('#key-box').hidden").await, json!(false), "the key box is shown");
        let key = c.find(Locator::Css("#api-key")).await.unwrap();
        key.send_keys("sekret-key\u{E004}").await.unwrap(); // then Tab: the change event
        until(&c, "the page built once the key is given", "document.body.dataset.ready === 'true'", Duration::from_secs(30)).await;
        assert_eq!(js(&c, "document.querySelector('#error').hidden").await, json!(true));
        c.close().await.unwrap();
    });
}
