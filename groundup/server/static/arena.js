/* groundup web chat: the Arena tab (vanilla JS, no build step, nothing fetched but this server).
 *
 * Battle: POST arena/battles {prompt, system} returns an id; the server has drawn two different
 * served models for sides A and B and keeps their names to itself. Both answers stream at once from
 * POST arena/battles/{id}/answers/A and .../B (Server-Sent Events in the chat-completion chunk
 * format, sampling from the right-hand panel). When both have finished, the vote buttons open;
 * POST arena/battles/{id}/vote {winner: A|B|tie|bad} answers with the two names, which are then
 * shown. GET arena/leaderboard fills the table. Model text reaches the page only through
 * markdown.js (escaped first); names, prompt and numbers only through textContent.
 * The panel's data-state is idle | streaming | ready (voting open) | voting | voted | failed.
 */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const { renderMarkdown } = window.groundupMarkdown;
  const { api, readEvents, samplingBody } = window.groundupApi;  // the chat's key, errors and sampling panel
  const VOTE_TEXT = { A: "A is better", B: "B is better", tie: "Tie", bad: "Both are bad" };

  let battle = null;  // { id, controller, text: {A, B}, done: {A, B} }

  // ---- view ----------------------------------------------------------------------------------
  const pane = (side) => $(side === "A" ? "arena-a" : "arena-b");
  function setState(state) {
    $("arena-panel").dataset.state = state;
    $("arena-send").disabled = state === "streaming";
    for (const b of document.querySelectorAll("#arena-panel .vote")) b.disabled = state !== "ready";
  }
  function showError(text) { const el = $("arena-error"); el.textContent = text; el.hidden = !text; }
  function resetPanes() {
    for (const side of ["A", "B"]) {
      const p = pane(side);
      p.querySelector(".who").textContent = "Model " + side;
      p.querySelector(".body").replaceChildren();
      p.querySelector(".meta").textContent = "";
      delete p.dataset.streaming;
      delete p.dataset.model;
      p.classList.remove("winner");
    }
    $("arena-result").textContent = "";
  }

  // ---- a battle ------------------------------------------------------------------------------
  async function streamSide(b, side) {
    const p = pane(side);
    const body = p.querySelector(".body");
    let pending = false;
    let usage = null;
    const started = performance.now();
    const paint = () => { pending = false; if (battle === b) body.innerHTML = renderMarkdown(b.text[side]); };  // escaped first, see markdown.js
    p.dataset.streaming = "true";
    try {
      const resp = await api("arena/battles/" + encodeURIComponent(b.id) + "/answers/" + side, samplingBody(), b.controller.signal);
      const finished = await readEvents(resp, (chunk) => {
        if (chunk.error) throw new Error("Model " + side + ": " + (chunk.error.message || JSON.stringify(chunk.error)));
        const choice = (chunk.choices || [])[0] || {};
        const delta = (choice.delta && choice.delta.content) || "";
        if (delta) b.text[side] += delta;
        if (choice.finish_reason) b.finish[side] = choice.finish_reason;
        if (chunk.usage && chunk.usage.completion_tokens) usage = chunk.usage.completion_tokens;
        if (!pending) { pending = true; requestAnimationFrame(paint); }
      });
      if (!finished) throw new Error("Model " + side + "'s answer ended early (the connection closed before [DONE])");
      b.done[side] = true;
    } finally {
      if (battle === b) {
        delete p.dataset.streaming;
        paint();
        const secs = (performance.now() - started) / 1000;
        const notes = [];
        if (b.finish[side] === "length") notes.push("hit max tokens");
        if (usage) notes.push(usage + " tokens in " + secs.toFixed(1) + " s");
        p.querySelector(".meta").textContent = notes.join(" · ");
      }
    }
  }

  async function startBattle() {
    const prompt = $("arena-input").value.trim();
    if (!prompt || (battle && $("arena-panel").dataset.state === "streaming")) return;
    showError("");
    resetPanes();
    const system = $("system").value.trim();
    const b = { id: null, controller: new AbortController(), text: { A: "", B: "" }, done: { A: false, B: false }, finish: {} };
    battle = b;
    setState("streaming");
    $("arena-prompt").textContent = prompt;
    $("arena-prompt").hidden = false;
    try {
      const created = await (await api("arena/battles", system ? { prompt, system } : { prompt }, b.controller.signal)).json();
      b.id = String(created.id);
      $("arena-panel").dataset.battle = b.id;
      let firstError = null;  // the first side to fail stops the other one
      const run = (side) => streamSide(b, side).catch((e) => { if (!firstError) firstError = e; b.controller.abort(); });
      await Promise.all([run("A"), run("B")]);
      if (battle !== b) return;
      if (firstError) throw firstError;
      $("arena-input").value = "";
      setState("ready");
    } catch (e) {
      if (battle !== b) return;
      setState("failed");
      if (e.name !== "AbortError") showError(e.message + " Start a new battle to try again.");
    }
  }

  async function vote(winner) {
    const b = battle;
    if (!b || $("arena-panel").dataset.state !== "ready") return;
    setState("voting");
    try {
      const r = await (await api("arena/battles/" + encodeURIComponent(b.id) + "/vote", { winner })).json();
      if (battle !== b) return;
      const names = { A: String(r.model_a), B: String(r.model_b) };
      for (const side of ["A", "B"]) {
        const p = pane(side);
        p.dataset.model = names[side];
        p.querySelector(".who").textContent = "Model " + side + ": " + names[side];
        p.classList.toggle("winner", winner === side);
      }
      $("arena-result").textContent = "You voted: " + VOTE_TEXT[winner] + ". A was " + names.A + ", B was " + names.B + ".";
      setState("voted");
      loadLeaderboard();
    } catch (e) {
      if (battle !== b) return;
      showError(e.message);
      setState("ready");
    }
  }

  function newBattle() {
    if (battle) battle.controller.abort();
    battle = null;
    resetPanes();
    showError("");
    $("arena-prompt").hidden = true;
    delete $("arena-panel").dataset.battle;
    setState("idle");
    $("arena-input").focus();
  }

  // ---- leaderboard ---------------------------------------------------------------------------
  const fmt = (x, digits) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
  const signed = (x) => (x >= 0 ? "+" : "") + x.toFixed(0);
  async function loadLeaderboard() {
    try {
      const lb = await (await api("arena/leaderboard?bootstrap=200")).json();
      const rows = (lb.models || []).map((r, i) => {
        const tr = document.createElement("tr");
        const ci = r.ci_low === null || r.ci_high === null ? "–"
          : signed(r.ci_low - r.rating) + " / " + signed(r.ci_high - r.rating);
        for (const value of [i + 1, r.model, fmt(r.rating, 0), ci, fmt(r.elo, 0), r.battles, r.wins, r.ties, r.losses]) {
          const td = document.createElement("td");
          td.textContent = String(value);
          tr.append(td);
        }
        tr.dataset.model = String(r.model);
        return tr;
      });
      $("arena-leaderboard").querySelector("tbody").replaceChildren(...rows);
      $("arena-lb-note").textContent = lb.battles ? lb.battles + (lb.battles === 1 ? " vote" : " votes") + "; 95% intervals from " + lb.bootstrap + " bootstrap rounds."
        + (lb.finite === false ? " Not settled yet: some model won (or lost) against everyone it met, so the ratings only say \"far apart\"; more votes settle them." : "")
        : "No votes yet.";
      $("arena-leaderboard").dataset.battles = String(lb.battles || 0);
    } catch (e) {
      $("arena-lb-note").textContent = "Leaderboard unavailable: " + e.message;
    }
  }

  function init() {
    setState("idle");
    $("arena-form").addEventListener("submit", (e) => { e.preventDefault(); startBattle(); });
    $("arena-input").addEventListener("keydown", (e) => {
      if (e.key === "Enter" && !e.shiftKey && !e.isComposing) { e.preventDefault(); startBattle(); }
    });
    $("arena-new").addEventListener("click", newBattle);
    for (const b of document.querySelectorAll("#arena-panel .vote")) b.addEventListener("click", () => vote(b.dataset.vote));
    $("tab-arena").addEventListener("click", () => { loadLeaderboard(); $("arena-input").focus(); });
  }

  document.addEventListener("DOMContentLoaded", init);
})();
