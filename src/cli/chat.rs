//! `deal chat`: an interactive chat with live weight dials. Lines are user turns; lines that
//! start with `/` are commands (`/weights`, `/head`, `/heads`, `/controller`, `/scores`,
//! `/reset`, `/help`, `/quit`). In a terminal it has line editing and history (rustyline);
//! with piped stdin it reads one line per turn and prints only the replies and command
//! output, so it can be scripted.

use std::io::{BufRead, IsTerminal, Write};

use deal_backend::chat::{Message, Role};
use deal_controllers::Outcome;
use deal_driver::Alignment;
use deal_driver::Driver;

use super::{ModelArgs, RewardArgs};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Most tokens per reply.
    #[arg(short = 'n', long = "max-tokens", default_value_t = 96)]
    pub max_tokens: usize,
    /// A system message at the start of the conversation.
    #[arg(long)]
    pub system: Option<String>,
    /// Controller used once weights are set (`/controller` changes it).
    #[arg(long, default_value = "deal")]
    pub controller: String,
    /// Controller settings as JSON, e.g. '{"k": 4, "lookahead": 4}'.
    #[arg(long, value_name = "JSON")]
    pub params: Option<String>,
    /// RNG seed of sampling controllers.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[command(flatten)]
    pub reward: RewardArgs,
}

const HELP: &str = "\
commands:
  /weights h=w ...        set the weight vector (e.g. /weights sentiment=1 length=0.5);
                          /weights alone shows it, /weights clear removes it
  /head NAME JSON         set a head's params (e.g. /head keywords {\"words\": [\"sea\", \"storm\"]})
  /heads                  list the reward heads and their params
  /controller NAME k=v .. choose the controller and its params (e.g. /controller deal k=4 l=4;
                          deal commits with {\"mode\": \"lead\", \"margin\": 0.5} here for speed,
                          commit=token is the paper's one-token rule)
  /scores                 per-head breakdown and search stats of the last reply
  /reset                  forget the conversation (settings stay)
  /help                   this text
  /quit                   leave (Ctrl-D too)
Without weights replies are greedy; with weights the controller steers them.";

/// The conversation and its settings.
struct Chat {
    driver: Driver,
    system: Option<String>,
    messages: Vec<Message>,
    alignment: Alignment,
    last: Option<Outcome>,
}

pub fn run(a: Args) -> anyhow::Result<()> {
    let mut alignment = Alignment { controller: a.controller.clone(), ..Default::default() };
    // interactive default: DeAL commits the winner's lookahead when it leads by 0.5 (about
    // 2.4x greedy per token instead of the paper's ~8x, still well above greedy on
    // alignment; docs/controllers.md); `--params '{"commit": "token"}'` or
    // `/controller deal commit=token` gives the paper's rule
    alignment.config.commit = deal_controllers::Commit::Lead { margin: 0.5, min_prob: 0.0 };
    if let Some(p) = &a.params {
        let v: serde_json::Value = serde_json::from_str(p).map_err(|e| anyhow::anyhow!("--params: not JSON ({e})"))?;
        for (k, v) in v.as_object().ok_or_else(|| anyhow::anyhow!("--params must be a JSON object"))? {
            alignment.set_param(k, v.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        }
    }
    alignment.config.max_tokens = a.max_tokens.max(1);
    alignment.config.seed = a.seed;
    alignment.reward = a.reward.spec()?;
    let driver = a.model.driver()?;
    if !driver.backend().has_chat_template() {
        eprintln!(
            "note: `{}` has no chat template (a base model): the conversation is joined as plain text and the model continues it; \
             for chat, use an instruct GGUF: deal chat -m path/to/instruct.gguf",
            driver.backend().model_id()
        );
    }
    let mut chat = Chat { driver, system: a.system, messages: Vec::new(), alignment, last: None };
    chat.reset();

    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        let mut rl = rustyline::DefaultEditor::new()?;
        let history = deal_engine::setup::deal_home().join("chat_history");
        let _ = rl.load_history(&history);
        eprintln!("deal chat on `{}` - /help for commands, Ctrl-D to leave", chat.driver.backend().model_id());
        loop {
            match rl.readline("> ") {
                Ok(line) => {
                    let _ = rl.add_history_entry(line.as_str());
                    if !chat.handle(&line)? {
                        break;
                    }
                }
                Err(rustyline::error::ReadlineError::Interrupted) => continue,
                Err(_) => break,
            }
        }
        let _ = std::fs::create_dir_all(deal_engine::setup::deal_home());
        let _ = rl.save_history(&history);
    } else {
        for line in stdin.lock().lines() {
            if !chat.handle(&line?)? {
                break;
            }
        }
    }
    Ok(())
}

impl Chat {
    fn reset(&mut self) {
        self.messages.clear();
        if let Some(s) = &self.system {
            self.messages.push(Message::new(Role::System, s.clone()));
        }
        self.last = None;
    }

    /// One input line; `false` to leave.
    fn handle(&mut self, line: &str) -> anyhow::Result<bool> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(true);
        }
        let Some(cmd) = line.strip_prefix('/') else {
            self.reply(line)?;
            return Ok(true);
        };
        let (name, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        let rest = rest.trim();
        let out = std::io::stdout();
        let mut out = out.lock();
        match name {
            "quit" | "exit" | "q" => return Ok(false),
            "help" | "?" => {
                writeln!(out, "{HELP}")?;
                writeln!(out, "\nweights: {}", deal_controllers::config::WEIGHT_MEANING)?;
            }
            "reset" => {
                self.reset();
                writeln!(out, "(conversation cleared)")?;
            }
            "heads" => {
                for k in self.driver.registries().heads.kinds() {
                    let params: Vec<&str> = k.params.iter().map(|p| p.name).collect();
                    writeln!(out, "{:<11} {}  params: {}", k.name, k.description, params.join(", "))?;
                }
            }
            "weights" => self.weights(rest, &mut out)?,
            "head" => {
                let (head, json) = rest.split_once(char::is_whitespace).unwrap_or((rest, "null"));
                let v = serde_json::from_str::<serde_json::Value>(json.trim());
                let mut spec = self.alignment.reward.clone();
                match v {
                    Ok(v) => {
                        spec.heads.insert(head.to_string(), v);
                        match spec.validate(&self.driver.registries().heads) {
                            Ok(()) => {
                                self.alignment.reward = spec;
                                writeln!(out, "(head {head} set)")?;
                            }
                            Err(e) => writeln!(out, "error: {e}")?,
                        }
                    }
                    Err(e) => writeln!(out, "error: /head {head}: params are not JSON ({e})")?,
                }
            }
            "controller" => self.controller(rest, &mut out)?,
            "scores" => self.scores(&mut out)?,
            other => writeln!(out, "error: unknown command /{other} (/help lists them)")?,
        }
        Ok(true)
    }

    fn weights(&mut self, rest: &str, out: &mut impl Write) -> anyhow::Result<()> {
        if rest.is_empty() {
            let w = &self.alignment.reward.weights;
            if w.is_empty() {
                writeln!(out, "(no weights: replies are greedy)")?;
            } else {
                let list: Vec<String> = w.iter().map(|(h, v)| format!("{h}={v}")).collect();
                writeln!(out, "weights: {}", list.join(" "))?;
            }
            return Ok(());
        }
        let mut spec = self.alignment.reward.clone();
        spec.weights.clear();
        if rest != "clear" {
            if let Err(e) = spec.set_weights_from_args(rest).and_then(|_| spec.validate(&self.driver.registries().heads)) {
                writeln!(out, "error: {e}")?;
                return Ok(());
            }
        }
        self.alignment.reward = spec;
        let list: Vec<String> = self.alignment.reward.weights.iter().map(|(h, v)| format!("{h}={v}")).collect();
        writeln!(out, "(weights: {})", if list.is_empty() { "none".to_string() } else { list.join(" ") })?;
        Ok(())
    }

    fn controller(&mut self, rest: &str, out: &mut impl Write) -> anyhow::Result<()> {
        let mut words = rest.split_whitespace();
        let Some(name) = words.next() else {
            let cfg = serde_json::to_string(&self.alignment.config)?;
            writeln!(out, "controller: {} {cfg}", self.alignment.controller)?;
            writeln!(out, "available: {}", self.driver.registries().controllers.names().join(", "))?;
            return Ok(());
        };
        let mut a = self.alignment.clone();
        a.controller = name.to_string();
        for kv in words {
            let Some((k, v)) = kv.split_once('=') else {
                writeln!(out, "error: `{kv}`: expected key=value (e.g. k=4)")?;
                return Ok(());
            };
            if let Err(e) = a.set_param_text(k, v) {
                writeln!(out, "error: {e}")?;
                return Ok(());
            }
        }
        match self.driver.registries().controllers.build(&a.controller, &a.config) {
            Ok(_) => {
                self.alignment = a;
                writeln!(out, "(controller: {} {})", self.alignment.controller, serde_json::to_string(&self.alignment.config)?)?;
            }
            Err(e) => writeln!(out, "error: {e}")?,
        }
        Ok(())
    }

    fn scores(&self, out: &mut impl Write) -> anyhow::Result<()> {
        let Some(o) = &self.last else {
            writeln!(out, "(no reply yet)")?;
            return Ok(());
        };
        match &o.breakdown {
            None => writeln!(out, "(the last reply was not scored: set weights with /weights)")?,
            Some(b) => {
                writeln!(out, "{:<11} {:>9} {:>10} {:>7} {:>12}", "head", "raw", "normalised", "weight", "contribution")?;
                for h in &b.heads {
                    writeln!(out, "{:<11} {:>9.4} {:>10.4} {:>7.3} {:>12.4}", h.head, h.raw, h.normalized, h.weight, h.contribution)?;
                }
                writeln!(out, "total {:.4}{}", b.total, if b.feasible { "" } else { " (misses a floor)" })?;
            }
        }
        let s = &o.stats;
        writeln!(
            out,
            "search: {} forward passes, {} rows, {} tokens generated for {} committed, {:.2}s",
            s.forward_passes, s.rows_evaluated, s.tokens_generated, s.tokens_committed, s.wall_secs
        )?;
        Ok(())
    }

    /// Answer a user turn, streaming the reply to stdout.
    fn reply(&mut self, text: &str) -> anyhow::Result<()> {
        self.messages.push(Message::new(Role::User, text));
        let backend = self.driver.backend().clone();
        let tokens = match backend.encode_chat(&self.messages) {
            Ok(t) => t,
            Err(e) => {
                self.messages.pop();
                println!("error: {e}");
                return Ok(());
            }
        };
        let ctx = backend.context_length();
        if tokens.len() + 1 >= ctx {
            self.messages.pop();
            println!("error: the conversation is {} tokens, the model's context is {ctx}; /reset to start over", tokens.len());
            return Ok(());
        }
        let mut a = self.alignment.clone();
        a.config.max_tokens = a.config.max_tokens.min(ctx - tokens.len() - 1).max(1);
        a.config.stop.extend(backend.chat_stop_strings());
        let weighted = a.reward.weights.values().any(|&w| w != 0.0);
        let needs = self.driver.registries().controllers.get(&a.controller).is_some_and(|k| k.needs_reward);
        if needs && !weighted {
            a.controller = "greedy".into();
        }
        let has_reward = a.has_reward();
        let req = deal_driver::Request::new(
            vec![deal_driver::Prompt { tokens, text: text.to_string() }],
            1,
            a.controller,
            a.config,
            has_reward.then_some(a.reward),
        );
        let mut stdout = std::io::stdout().lock();
        let result = self.driver.run(&req, None, &mut |ev| match ev {
            deal_driver::Event::Text { text, .. } => stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()).is_ok(),
            _ => true,
        });
        let _ = writeln!(stdout);
        let result = result.and_then(|mut o| {
            o.pop()
                .ok_or_else(|| deal_controllers::ControlError::Backend(deal_backend::Error::Engine("the search produced no answer".into())))
        });
        match result {
            Ok(o) => {
                self.messages.push(Message::new(Role::Assistant, o.text.trim().to_string()));
                self.last = Some(o);
            }
            Err(e) => {
                self.messages.pop();
                let _ = writeln!(stdout, "error: {e}");
            }
        }
        Ok(())
    }
}
