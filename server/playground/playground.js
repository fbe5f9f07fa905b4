// deal playground: a client of deal's public API, nothing else.
//   GET  /v1/models            the served model (and whether it has a chat template)
//   GET  /v1/heads             reward heads (params, example), controllers (params), defaults
//   POST /v1/chat/completions  streamed, with deal's extra `alignment` object
// Every text from the model or the server is put in the page with textContent, never as HTML.
"use strict";

const $ = (sel) => document.querySelector(sel);
const state = { model: null, heads: [], controllers: [], defaults: {}, history: [], aborts: [] };

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k === "dataset") Object.assign(e.dataset, v);
    else if (k in e && typeof v !== "string") e[k] = v;
    else e.setAttribute(k, v);
  }
  for (const c of children) e.append(c);
  return e;
}

function apiKey() {
  return sessionStorage.getItem("deal-api-key") || "";
}

function headers(json) {
  const h = {};
  if (json) h["Content-Type"] = "application/json";
  const key = apiKey();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

// An OpenAI-style error body (or any text) as a message; a 401 shows the key box.
async function failure(resp) {
  let msg = `HTTP ${resp.status}`;
  try {
    const body = await resp.json();
    if (body && body.error && body.error.message) msg += `: ${body.error.message}`;
  } catch (_) { /* not JSON */ }
  if (resp.status === 401) {
    $("#key-box").hidden = false;
    $("#api-key").focus();
    msg += " (enter the server's API key above)";
  }
  return new Error(msg);
}

function showError(e) {
  const box = $("#error");
  if (!e) { box.hidden = true; box.textContent = ""; return; }
  box.hidden = false;
  box.textContent = String(e.message || e);
}

async function getJson(path) {
  const resp = await fetch(path, { headers: headers(false) });
  if (!resp.ok) throw await failure(resp);
  return resp.json();
}

async function load() {
  showError(null);
  try {
    const [models, heads] = await Promise.all([getJson("/v1/models"), getJson("/v1/heads")]);
    state.model = models.data[0];
    state.heads = heads.data;
    state.controllers = heads.controllers;
    state.defaults = heads.params || {};
    $("#weight-meaning").textContent = heads.weights || "";
    $("#model").textContent = `model ${state.model.id}`;
    if (state.model.chat_template === false) {
      const note = $("#model-note");
      note.hidden = false;
      note.textContent = `${state.model.id} has no chat template (a base model): deal joins the conversation as plain text and the model continues it. ` +
        "For chat, serve an instruct GGUF: deal serve -m path/to/instruct.gguf";
    }
    buildHeads();
    buildControllers();
    document.body.dataset.ready = "true";
  } catch (e) {
    $("#model").textContent = "not connected";
    showError(e);
  }
}

function buildHeads() {
  const box = $("#heads");
  box.replaceChildren();
  for (const h of state.heads) {
    const out = el("output", { dataset: { headValue: h.name } }, "0.0");
    const slider = el("input", { type: "range", min: "-2", max: "2", step: "0.1", value: "0", dataset: { head: h.name }, "aria-label": `weight of ${h.name}` });
    const row = el("div", { class: "head", dataset: { headRow: h.name } });
    slider.addEventListener("input", () => {
      out.textContent = Number(slider.value).toFixed(1);
      row.classList.toggle("on", Number(slider.value) !== 0);
    });
    const params = el("textarea", { rows: 3, spellcheck: false, dataset: { headParams: h.name } });
    params.value = h.example && Object.keys(h.example).length ? JSON.stringify(h.example) : "{}";
    const doc = (h.params || []).map((p) => `${p.name} (${p.type}, default ${p.default}): ${p.doc}`).join("\n");
    row.append(
      el("div", { class: "top" }, el("span", { class: "name", title: h.description }, h.name), slider, out),
      el("details", {}, el("summary", {}, h.description), el("pre", {}, doc || "no params"), params),
    );
    box.append(row);
  }
}

function buildControllers() {
  const sel = $("#controller");
  sel.replaceChildren();
  for (const c of state.controllers) sel.append(el("option", { value: c.name }, c.name));
  sel.value = state.controllers.some((c) => c.name === "deal") ? "deal" : (state.controllers[0] || {}).name;
  sel.addEventListener("change", buildParams);
  buildParams();
}

function controller() {
  return state.controllers.find((c) => c.name === $("#controller").value) || { name: "greedy", params: [], needs_reward: false };
}

function buildParams() {
  const c = controller();
  $("#controller-doc").textContent = c.description || "";
  const box = $("#controller-params");
  box.replaceChildren();
  for (const p of c.params || []) {
    const d = state.defaults[p];
    const numeric = typeof d === "number";
    const input = el("input", { type: numeric ? "number" : "text", dataset: { param: p } });
    input.value = numeric ? String(d) : JSON.stringify(d);
    if (numeric) input.step = Number.isInteger(d) && p !== "lambda" ? "1" : "any";
    box.append(el("label", {}, p, input));
  }
}

// The alignment object the sliders and fields describe (throws on a bad field).
function alignment(controllerName) {
  const weights = {};
  const heads = {};
  for (const s of document.querySelectorAll("input[data-head]")) {
    const w = Number(s.value);
    if (w === 0) continue;
    weights[s.dataset.head] = w;
    const text = document.querySelector(`textarea[data-head-params="${s.dataset.head}"]`).value.trim();
    let params;
    try { params = text ? JSON.parse(text) : {}; } catch (e) { throw new Error(`params of ${s.dataset.head} are not JSON: ${e.message}`); }
    if (Object.keys(params).length) heads[s.dataset.head] = params;
  }
  const a = { controller: controllerName };
  if (Object.keys(weights).length) { a.weights = weights; a.heads = heads; }
  if (controllerName === controller().name) {
    const params = {};
    for (const input of document.querySelectorAll("#controller-params input")) {
      const name = input.dataset.param;
      const d = state.defaults[name];
      let v;
      if (typeof d === "number") {
        v = Number(input.value);
        if (input.value.trim() === "" || !Number.isFinite(v)) throw new Error(`${name} must be a number`);
      } else {
        try { v = JSON.parse(input.value); } catch (e) { throw new Error(`${name} is not JSON: ${e.message}`); }
      }
      if (JSON.stringify(v) !== JSON.stringify(d)) params[name] = v;
    }
    if (Object.keys(params).length) a.params = params;
  }
  return a;
}

function body(messages, align) {
  const max = Number($("#max-tokens").value);
  return { model: state.model.id, messages, stream: true, max_tokens: Number.isFinite(max) && max > 0 ? max : 32, alignment: align };
}

// Stream one chat completion into `panel`; resolves with the final text and alignment.
async function stream(panel, req, signal) {
  const textBox = panel.querySelector(".text");
  textBox.textContent = "";
  textBox.classList.add("streaming");
  panel.querySelector(".breakdown").replaceChildren();
  panel.querySelector(".stats").textContent = "";
  panel.hidden = false;
  const t0 = performance.now();
  let text = "";
  let final = null;
  let chunks = 0;
  panel.dataset.chunks = "0";
  try {
    const resp = await fetch("/v1/chat/completions", { method: "POST", headers: headers(true), body: JSON.stringify(req), signal });
    if (!resp.ok) throw await failure(resp);
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, cut);
        buf = buf.slice(cut + 2);
        for (const line of event.split("\n")) {
          if (!line.startsWith("data:")) continue;
          const data = line.slice(5).trim();
          if (data === "[DONE]") continue;
          const chunk = JSON.parse(data);
          if (chunk.error) throw new Error(`server: ${chunk.error.message}`);
          for (const ch of chunk.choices || []) {
            if (ch.delta && ch.delta.content) {
              text += ch.delta.content;
              textBox.textContent = text;
              panel.dataset.chunks = String(++chunks);
            }
            if (ch.alignment) final = ch.alignment;
          }
        }
      }
    }
  } finally {
    textBox.classList.remove("streaming");
  }
  if (final) render(panel, final, (performance.now() - t0) / 1000);
  return { text, alignment: final };
}

function render(panel, a, seconds) {
  const box = panel.querySelector(".breakdown");
  box.replaceChildren();
  for (const h of a.heads || []) {
    const pct = Math.max(0, Math.min(1, h.normalized)) * 100;
    const fill = el("span", { class: "fill" });
    fill.style.width = `${pct.toFixed(1)}%`; // CSSOM, which the page's CSP allows (a style attribute it would not)
    const bar = el("div", { class: "bar" + (h.weight < 0 ? " negative" : ""), dataset: { head: h.head, weight: String(h.weight), normalized: String(h.normalized) } },
      el("span", {}, h.head),
      el("span", { class: "track" }, fill),
      el("span", { class: "num" }, `${h.normalized.toFixed(2)} × ${h.weight}`));
    bar.title = `raw ${h.raw}; normalised ${h.normalized}; weight ${h.weight}; contribution ${h.contribution}`;
    box.append(bar);
  }
  if (a.heads && a.heads.length) box.append(el("div", { class: "total" }, `total ${Number(a.total).toFixed(3)}${a.feasible === false ? " (a floor is not met)" : ""}`));
  const s = a.stats || {};
  const tokens = s.tokens_committed || 0;
  const wall = s.wall_secs || seconds;
  const parts = [
    `${a.controller}`,
    `${tokens} tokens`,
    `${s.forward_passes ?? "?"} passes (${tokens ? (s.forward_passes / tokens).toFixed(2) : "?"}/token)`,
    `${s.rows_evaluated ?? "?"} rows`,
    `${wall > 0 ? (tokens / wall).toFixed(1) : "?"} tokens/s`,
  ];
  const stats = panel.querySelector(".stats");
  stats.textContent = parts.join(" · ");
  stats.dataset.passes = String(s.forward_passes ?? "");
}

function addMessage(role, text) {
  const m = el("div", { class: `msg ${role}` }, text);
  $("#history").append(m);
  m.scrollIntoView({ block: "end" });
  return m;
}

async function send(ev) {
  if (ev) ev.preventDefault();
  const prompt = $("#prompt").value.trim();
  if (!prompt || !state.model) return;
  showError(null);
  const c = controller();
  let steeredAlign;
  try {
    steeredAlign = alignment(c.name);
    if (c.needs_reward && !steeredAlign.weights) throw new Error(`${c.name} searches by the reward: move at least one head's slider off 0`);
  } catch (e) { showError(e); return; }
  const messages = state.history.concat([{ role: "user", content: prompt }]);
  const steeredReq = body(messages, steeredAlign);
  const compare = $("#compare").checked;
  const plainAlign = { controller: "greedy" };
  if (steeredAlign.weights) { plainAlign.weights = steeredAlign.weights; plainAlign.heads = steeredAlign.heads; }
  const plainReq = body(messages, plainAlign);
  $("#request").textContent = JSON.stringify(steeredReq, null, 2);
  $("#steered .which").textContent = c.name;
  $("#plain").hidden = true;
  const asked = addMessage("user", prompt);
  $("#prompt").value = "";
  $("#send").disabled = true;
  $("#stop").disabled = false;
  const abort = new AbortController();
  state.aborts = [abort];
  try {
    const steered = await stream($("#steered"), steeredReq, abort.signal);
    state.history = messages.concat([{ role: "assistant", content: steered.text }]);
    addMessage("assistant", steered.text);
    // one request at a time: the plain run follows, so both get the same share of the engine
    if (compare && !abort.signal.aborted) await stream($("#plain"), plainReq, abort.signal);
  } catch (e) {
    if (e.name !== "AbortError") showError(e);
    if (state.history.length < messages.length) {
      // the steered answer failed: the turn is not part of the conversation
      asked.remove();
      $("#prompt").value = prompt;
      $("#steered").hidden = true;
    }
  } finally {
    $("#send").disabled = false;
    $("#stop").disabled = true;
  }
}

document.addEventListener("DOMContentLoaded", () => {
  const key = $("#api-key");
  key.value = apiKey();
  if (key.value) $("#key-box").hidden = false;
  key.addEventListener("change", () => { sessionStorage.setItem("deal-api-key", key.value.trim()); load(); });
  $("#ask").addEventListener("submit", send);
  $("#prompt").addEventListener("keydown", (e) => { if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) send(e); });
  $("#stop").addEventListener("click", () => state.aborts.forEach((a) => a.abort()));
  $("#clear").addEventListener("click", () => {
    state.history = [];
    $("#history").replaceChildren();
    $("#steered").hidden = true;
    $("#plain").hidden = true;
  });
  load();
});
