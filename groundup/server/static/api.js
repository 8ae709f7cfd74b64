/* groundup web chat: talking to `groundup serve`, shared by the chat (app.js) and the Arena (arena.js).
 *
 * window.groundupApi holds:
 * - api(path, body?, signal?): GET (no body) or POST JSON with the API key from the Server panel as a
 *   Bearer token; a network failure or a non-2xx answer becomes an Error whose message a person can act
 *   on (401: where to enter the key; 429/503: wait and retry). An abort is rethrown as is.
 * - readEvents(resp, onChunk): reads a Server-Sent Events body (`data: {chunk}` lines), calling onChunk
 *   with each parsed JSON chunk; true once `data: [DONE]` arrived, false if the body ended before it.
 * - SAMPLING_DEFAULTS and samplingBody(): the sampling panel's fields as a request body (an empty
 *   field takes its default; seed only when one is given).
 * Nothing here touches the page but the Server and sampling inputs it reads.
 */
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const SAMPLING_DEFAULTS = Object.freeze({ temperature: 0.7, top_p: 0.9, top_k: 0, min_p: 0, max_tokens: 512,
    repetition_penalty: 1.0, seed: "" });

  function headers() {
    const h = { "Content-Type": "application/json" };
    const key = $("api-key").value.trim();
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }

  async function failure(resp) {
    let message = "";
    try { const body = await resp.json(); message = (body && body.error && body.error.message) || JSON.stringify(body); } catch (e) { /* not JSON */ }
    if (resp.status === 401) return "The server refused the request (401): " + (message || "missing or wrong API key") + ". Enter the key under Server → API key.";
    if (resp.status === 400) return "The server refused the request (400): " + (message || "bad request");
    if (resp.status === 429 || resp.status === 503) return "The server is busy (" + resp.status + "): " + (message || "too many requests") + ". Wait a moment and try again.";
    return "Server error " + resp.status + (message ? ": " + message : "");
  }

  async function api(path, body, signal) {
    let resp;
    try {
      resp = await fetch(path, body === undefined ? { headers: headers(), signal } : { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
    } catch (e) {
      if (e.name === "AbortError") throw e;
      throw new Error("Cannot reach the server (" + e.message + "). Is `groundup serve` running?");
    }
    if (!resp.ok) throw new Error(await failure(resp));
    return resp;
  }

  async function readEvents(resp, onChunk) {
    const reader = resp.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      buffer += decoder.decode(value || new Uint8Array(), { stream: !done });
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, "");
        buffer = buffer.slice(nl + 1);
        if (!line.startsWith("data:")) continue;
        const data = line.slice(5).trim();
        if (data === "[DONE]") { reader.cancel().catch(() => {}); return true; }
        if (data) onChunk(JSON.parse(data));
      }
      if (done) return false;
    }
  }

  function samplingBody() {
    const num = (k) => Number($(k).value === "" ? SAMPLING_DEFAULTS[k] : $(k).value);
    const body = {
      temperature: num("temperature"), top_p: num("top_p"), top_k: Math.trunc(num("top_k")), min_p: num("min_p"),
      max_tokens: Math.trunc(num("max_tokens")), repetition_penalty: num("repetition_penalty"),
    };
    if ($("seed").value.trim() !== "") body.seed = Math.trunc(Number($("seed").value));
    return body;
  }

  window.groundupApi = { api, readEvents, samplingBody, SAMPLING_DEFAULTS };
})();
