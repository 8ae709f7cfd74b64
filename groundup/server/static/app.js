/* groundup web chat: the page's behaviour (vanilla JS, no build step, nothing fetched but this server).
 *
 * Talks to the OpenAI-compatible API of `groundup serve` through api.js: GET v1/models fills the model list,
 * POST v1/chat/completions with stream=true is read as Server-Sent Events (`data: {chunk}` lines,
 * `data: [DONE]` at the end), and Stop aborts that fetch (the server cancels generation when the
 * client goes away). POST tokenize drives the token view. Conversations, sampling settings and the
 * API key live in localStorage. Model text reaches the page only through markdown.js (escaped
 * first) or textContent; user text only through textContent.
 */
"use strict";

(function () {
  const KEYS = { convs: "groundup.conversations", current: "groundup.current", settings: "groundup.settings", apiKey: "groundup.apiKey" };
  const { api, readEvents, samplingBody, SAMPLING_DEFAULTS: DEFAULTS } = window.groundupApi;
  const SAMPLING = Object.keys(DEFAULTS);
  const $ = (id) => document.getElementById(id);
  const { renderMarkdown } = window.groundupMarkdown;

  let conversations = [];
  let currentId = null;
  let controller = null;  // AbortController of the running generation, if any
  let models = [];

  // ---- storage -------------------------------------------------------------------------------
  function load(key, fallback) {
    try { const v = localStorage.getItem(key); return v === null ? fallback : JSON.parse(v); } catch (e) { return fallback; }
  }
  function store(key, value) {
    try { localStorage.setItem(key, JSON.stringify(value)); } catch (e) { showError("Could not save to browser storage: " + e.message); }
  }
  const saveConversations = () => { store(KEYS.convs, conversations); store(KEYS.current, currentId); };
  const current = () => conversations.find((c) => c.id === currentId) || null;

  // ---- status and errors ---------------------------------------------------------------------
  function showError(text) { const el = $("error"); el.textContent = text; el.hidden = !text; }
  function setStatus(text, ok) { const el = $("server-status"); el.textContent = text; el.className = "status " + (ok ? "ok" : "bad"); }

  async function loadModels() {
    try {
      const body = await (await api("v1/models")).json();
      models = (body.data || []).map((m) => ({ id: String(m.id), context: m.context_length }));
      const select = $("model");
      const wanted = load(KEYS.settings, {}).model;
      select.replaceChildren(...models.map((m) => new Option(m.id, m.id)));
      if (models.some((m) => m.id === wanted)) select.value = wanted;
      showModelInfo();
      setStatus(models.length ? "connected" : "no models", models.length > 0);
      showError("");
    } catch (e) {
      setStatus("not connected", false);
      showError(e.message);
    }
  }
  function showModelInfo() {
    const m = models.find((x) => x.id === $("model").value);
    $("model-info").textContent = m && m.context ? "context: " + m.context.toLocaleString() + " tokens" : "";
  }

  // ---- settings ------------------------------------------------------------------------------
  function loadSettings() {
    const s = Object.assign({}, DEFAULTS, load(KEYS.settings, {}));
    for (const k of SAMPLING) $(k).value = s[k];
    $("system").value = s.system || "";
    $("api-key").value = load(KEYS.apiKey, "");
  }
  function saveSettings() {
    const s = { model: $("model").value, system: $("system").value };
    for (const k of SAMPLING) s[k] = $(k).value;
    store(KEYS.settings, s);
  }

  // ---- conversations -------------------------------------------------------------------------
  function newConversation() {
    // A new conversation starts with the system prompt now in the box (the last one used).
    const c = { id: Date.now().toString(36) + Math.random().toString(36).slice(2, 7), title: "New chat",
      system: $("system").value, messages: [], updated: Date.now() };
    conversations.unshift(c);
    currentId = c.id;
    saveConversations();
    renderAll();
    $("input").focus();
  }
  function switchTo(id) {
    if (controller || id === currentId) return;
    currentId = id;
    saveConversations();
    renderAll();
  }
  function deleteConversation(id) {
    if (controller && id === currentId) return;
    conversations = conversations.filter((c) => c.id !== id);
    saveConversations();
    if (id !== currentId) { renderConversationList(); return; }  // the open chat (maybe streaming) stays
    currentId = conversations.length ? conversations[0].id : null;
    saveConversations();
    renderAll();
  }

  function renderConversationList() {
    const list = $("conversations");
    list.replaceChildren(...conversations.map((c) => {
      const li = document.createElement("li");
      li.className = "conv" + (c.id === currentId ? " active" : "");
      li.dataset.id = c.id;
      const title = document.createElement("button");
      title.type = "button";
      title.className = "conv-title";
      title.textContent = c.title;
      title.title = c.title;
      title.addEventListener("click", () => switchTo(c.id));
      const del = document.createElement("button");
      del.type = "button";
      del.className = "conv-delete";
      del.textContent = "×";
      del.title = "Delete this conversation";
      del.setAttribute("aria-label", "Delete conversation " + c.title);
      del.addEventListener("click", () => deleteConversation(c.id));
      li.append(title, del);
      return li;
    }));
  }

  // ---- messages ------------------------------------------------------------------------------
  function messageNode(msg) {
    const div = document.createElement("div");
    div.className = "msg " + msg.role;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = msg.role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "body";
    const meta = document.createElement("div");
    meta.className = "meta";
    div.append(who, body, meta);
    fillMessage(div, msg);
    return div;
  }
  function fillMessage(div, msg) {
    const body = div.querySelector(".body");
    if (msg.role === "assistant") body.innerHTML = renderMarkdown(msg.content);  // escaped first, see markdown.js
    else body.textContent = msg.content;
    const notes = [];
    if (msg.stopped) notes.push("stopped");
    if (msg.finish === "length") notes.push("hit max tokens");
    if (msg.stats) notes.push(msg.stats);
    div.querySelector(".meta").textContent = notes.join(" · ");
  }
  function renderMessages() {
    const box = $("messages");
    const c = current();
    const nodes = c ? c.messages.map(messageNode) : [];
    box.replaceChildren($("empty-hint"), ...nodes);  // the hint stays in the box, hidden when there are messages
    $("empty-hint").hidden = nodes.length > 0;
    box.scrollTop = box.scrollHeight;
  }
  function renderAll() {
    renderConversationList();
    renderMessages();
    const c = current();
    if (c) $("system").value = c.system || "";
  }

  function setBusy(busy) {
    $("send").disabled = busy;
    $("stop").disabled = !busy;
    document.body.dataset.busy = busy ? "true" : "false";
  }

  // ---- sending and streaming -----------------------------------------------------------------
  async function send() {
    const text = $("input").value.trim();
    if (!text || controller) return;
    if (!current()) newConversation();
    const c = current();
    showError("");
    c.system = $("system").value;
    c.messages.push({ role: "user", content: text });
    const oldTitle = c.title;
    if (c.title === "New chat") c.title = text.replace(/\s+/g, " ").slice(0, 48);
    const reply = { role: "assistant", content: "" };
    c.messages.push(reply);
    c.updated = Date.now();
    $("input").value = "";
    renderAll();
    const node = $("messages").lastElementChild;
    node.dataset.streaming = "true";

    const history = c.messages.slice(0, -1).map((m) => ({ role: m.role, content: m.content }));
    const messages = (c.system.trim() !== "" ? [{ role: "system", content: c.system }] : []).concat(history);
    controller = new AbortController();
    setBusy(true);
    const started = performance.now();
    let pieces = 0;
    let usage = null;
    let pending = false;
    const paint = () => {
      pending = false;
      const box = $("messages");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      fillMessage(node, reply);
      if (atBottom) box.scrollTop = box.scrollHeight;
    };
    try {
      const resp = await api("v1/chat/completions", Object.assign({ model: $("model").value, messages, stream: true, stream_options: { include_usage: true } }, samplingBody()), controller.signal);
      await readEvents(resp, (chunk) => {
        if (chunk.error) throw new Error("Server error: " + (chunk.error.message || JSON.stringify(chunk.error)));
        const choice = (chunk.choices || [])[0] || {};
        const delta = (choice.delta && choice.delta.content) || "";
        if (delta) { reply.content += delta; pieces++; }
        if (choice.finish_reason) reply.finish = choice.finish_reason;
        if (chunk.usage && chunk.usage.completion_tokens) usage = chunk.usage.completion_tokens;
        if (!pending) { pending = true; requestAnimationFrame(paint); }
      });
    } catch (e) {
      if (e.name === "AbortError") {
        reply.stopped = true;
      } else if (!reply.content) {  // nothing arrived: take the turn back so the user can retry
        c.messages.splice(-2, 2);
        c.title = oldTitle;
        $("input").value = text;
        showError(e.message);
      } else {
        reply.stopped = true;
        showError(e.message);
      }
    } finally {
      const secs = (performance.now() - started) / 1000;
      const n = usage || pieces;
      if (n) reply.stats = n + (usage ? " tokens" : " chunks") + " in " + secs.toFixed(1) + " s · " + (n / secs).toFixed(1) + (usage ? " tok/s" : " chunks/s");
      controller.abort();  // closes the connection if an error left it open; no-op after [DONE]
      controller = null;
      c.updated = Date.now();
      saveConversations();
      delete node.dataset.streaming;
      if (c.messages.includes(reply)) fillMessage(node, reply); else renderAll();
      renderConversationList();
      setBusy(false);
    }
  }

  // ---- token view ----------------------------------------------------------------------------
  let tokSeq = 0;
  let tokTimer = null;
  function scheduleTokenize() { clearTimeout(tokTimer); tokTimer = setTimeout(tokenize, 150); }
  async function tokenize() {
    const text = $("tok-input").value;
    const seq = ++tokSeq;
    $("tok-chars").textContent = text.length.toLocaleString() + " characters";
    if (!text) { showTokens({ tokens: [], pieces: [], count: 0 }); return; }
    try {
      const body = await (await api("tokenize", { model: $("model").value, prompt: text })).json();
      if (seq === tokSeq) showTokens(body);
    } catch (e) {
      if (seq !== tokSeq) return;
      $("tok-view").replaceChildren();
      $("tok-ids").replaceChildren();
      $("tok-count").textContent = e.message;
      $("tok-count").dataset.count = "";
    }
  }
  function showTokens(body) {
    const ids = body.tokens || [];
    const pieces = body.pieces || [];
    const count = body.count === undefined ? ids.length : body.count;
    $("tok-count").textContent = count.toLocaleString() + (count === 1 ? " token" : " tokens");
    $("tok-count").dataset.count = String(count);
    const spans = ids.map((id, i) => {
      const span = document.createElement("span");
      span.className = "tok c" + (i % 8);
      span.dataset.i = String(i);
      span.title = "token " + i + " · id " + id;
      const piece = pieces[i] === undefined ? "" : pieces[i];
      span.textContent = piece.replace(/\n/g, "↵\n").replace(/\t/g, "→\t") || "∅";
      return span;
    });
    $("tok-view").replaceChildren(...spans);
    $("tok-ids").replaceChildren(...ids.map((id, i) => {
      const span = document.createElement("span");
      span.className = "tok-id c" + (i % 8);
      span.dataset.i = String(i);
      span.textContent = String(id);
      return span;
    }));
  }
  function highlightToken(event) {
    const i = event.target.dataset && event.target.dataset.i;
    for (const el of document.querySelectorAll(".tok.hl, .tok-id.hl")) el.classList.remove("hl");
    if (event.type === "mouseover" && i !== undefined) {
      for (const el of document.querySelectorAll('[data-i="' + i + '"]')) el.classList.add("hl");
    }
  }

  // ---- wiring --------------------------------------------------------------------------------
  function showTab(button) {
    for (const tab of document.querySelectorAll(".tab")) {
      const on = tab === button;
      tab.classList.toggle("active", on);
      tab.setAttribute("aria-selected", String(on));
      $(tab.dataset.panel).hidden = !on;
    }
    if (button.id === "tab-tokens") { $("tok-input").focus(); tokenize(); }
  }

  function init() {
    conversations = load(KEYS.convs, []);
    if (!Array.isArray(conversations)) conversations = [];
    currentId = load(KEYS.current, null);
    if (!current()) currentId = conversations.length ? conversations[0].id : null;
    loadSettings();
    renderAll();
    setBusy(false);

    $("composer").addEventListener("submit", (e) => { e.preventDefault(); send(); });
    $("input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); send(); }
    });
    $("stop").addEventListener("click", () => { if (controller) controller.abort(); });
    $("new-chat").addEventListener("click", () => { if (!controller) newConversation(); });
    $("system").addEventListener("change", () => {
      const c = current();
      if (c) { c.system = $("system").value; saveConversations(); }
      saveSettings();
    });
    for (const k of SAMPLING) $(k).addEventListener("change", saveSettings);
    $("reset-sampling").addEventListener("click", () => { for (const k of SAMPLING) $(k).value = DEFAULTS[k]; saveSettings(); });
    $("model").addEventListener("change", () => { saveSettings(); showModelInfo(); if (!$("tokens-panel").hidden) tokenize(); });
    $("api-key").addEventListener("change", () => { store(KEYS.apiKey, $("api-key").value.trim()); loadModels(); });
    for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab));
    $("tok-input").addEventListener("input", scheduleTokenize);
    for (const id of ["tok-view", "tok-ids"]) {
      $(id).addEventListener("mouseover", highlightToken);
      $(id).addEventListener("mouseout", highlightToken);
    }
    loadModels();
    $("input").focus();
  }

  document.addEventListener("DOMContentLoaded", init);
})();
