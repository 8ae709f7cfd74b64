"""The web chat at `/` in a real browser: Playwright drives Debian's Chromium against `groundup serve`.

One real server (SmolLM2-135M-Instruct on a free loopback port) serves the page and the API for the
whole module. Streaming, stopping and the token view run against it; the XSS and error-message
checks swap the chat endpoint for a scripted SSE reply (page.route), since they test only how the
page renders what comes back. Skips with the reason when the model is not pulled or when Chromium
(`apt-get install -y chromium`) or Playwright (`pip install playwright`; never `playwright install`)
is missing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from tests.serving import free_port

MODEL = "smollm2-135m-instruct"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]
XSS = "<img src=x onerror=alert(1)>"
ASSISTANT = "#messages .msg.assistant"


def _post_json(url: str, body: dict) -> dict:
    req = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.load(r)


@pytest.fixture(scope="module")
def serve_process(smollm2_path):  # smollm2_path skips when the model is not pulled
    """Start `groundup serve` on a free port (it loads the model while the browser starts); stop it at the end."""
    port = free_port()
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([sys.executable, "-m", "groundup.cli", "serve", "--model", MODEL, "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        yield proc, f"http://127.0.0.1:{port}", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install -y chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def server(serve_process, browser) -> str:
    """The server's base URL, once /health answers (up to 180 s: model load is slow on a loaded machine)."""
    proc, url, log = serve_process
    deadline = time.monotonic() + 180
    while True:
        if proc.poll() is not None:
            log.seek(0)
            pytest.fail(f"groundup serve exited with {proc.returncode}:\n{log.read().decode(errors='replace')[-3000:]}")
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    return url
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("groundup serve did not answer /health within 180 s")
        time.sleep(0.3)


@pytest.fixture
def page(server, browser):
    """A fresh page (empty localStorage) on the server's `/`, with the model list loaded; collects dialogs."""
    context = browser.new_context()
    pg = context.new_page()
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.goto(server + "/")
    pg.wait_for_function("() => document.querySelector('#model').options.length > 0", timeout=15_000)
    yield pg
    context.close()


def _set(pg, selector: str, value: str) -> None:
    pg.fill(selector, value)
    pg.dispatch_event(selector, "change")


def _ask(pg, text: str) -> None:
    pg.fill("#input", text)
    pg.press("#input", "Enter")


def _reply_text(pg) -> str:
    return pg.inner_text(f"{ASSISTANT} .body") if pg.query_selector(ASSISTANT) else ""


def _wait_ready(pg, timeout_ms: int) -> None:
    pg.wait_for_function("() => !document.querySelector('#send').disabled && document.querySelector('#stop').disabled",
                         timeout=timeout_ms)


def test_answer_streams_in_and_conversation_is_kept(page):
    _set(page, "#temperature", "0")
    _set(page, "#max_tokens", "24")
    _ask(page, "Name three colours of the rainbow.")
    page.wait_for_selector(f"{ASSISTANT}[data-streaming='true']", timeout=10_000)
    seen: list[int] = []
    deadline = time.monotonic() + 60
    while page.query_selector(f"{ASSISTANT}[data-streaming='true']") and time.monotonic() < deadline:
        seen.append(len(_reply_text(page)))
        page.wait_for_timeout(40)
    _wait_ready(page, 5_000)
    answer = _reply_text(page).strip()
    assert answer, "no answer text after the stream ended"
    # Several different non-empty lengths while streaming = the text arrived in pieces. (Not checked to
    # be monotonic: closing a **bold** pair removes the asterisks from the rendered text.)
    partial = set(n for n in seen if n > 0)
    assert len(partial) >= 2, f"answer did not grow while streaming (lengths seen: {seen})"
    assert page.inner_text("#messages .msg.user .body") == "Name three colours of the rainbow."

    # The conversation survives a reload (localStorage), listed under its first message.
    page.reload()
    page.wait_for_selector(ASSISTANT)
    assert _reply_text(page).strip() == answer
    assert "Name three colours" in page.inner_text("#conversations .conv.active")
    page.click("#new-chat")
    assert page.query_selector(ASSISTANT) is None
    assert len(page.query_selector_all("#conversations .conv")) == 2


def test_stop_ends_generation_and_ui_is_ready_again(page):
    _set(page, "#temperature", "0.8")
    _set(page, "#seed", "1")
    _set(page, "#max_tokens", "1000")
    _ask(page, "Write a very long story about a dragon who learns to cook. Make it many paragraphs.")
    page.wait_for_function(f"() => (document.querySelector('{ASSISTANT} .body')?.innerText || '').length > 0",
                           timeout=30_000)
    page.click("#stop")
    _wait_ready(page, 5_000)
    stopped = _reply_text(page)
    page.wait_for_timeout(1500)
    assert _reply_text(page) == stopped, "answer kept growing after Stop"
    assert "stopped" in page.inner_text(f"{ASSISTANT} .meta")
    assert stopped.strip()

    # The chat goes on after a stop: the next question gets its answer.
    _set(page, "#max_tokens", "8")
    _ask(page, "Say hi.")
    page.wait_for_function(f"() => document.querySelectorAll('{ASSISTANT}').length === 2", timeout=5_000)
    _wait_ready(page, 30_000)
    last = page.query_selector_all(f"{ASSISTANT} .body")[-1].inner_text()
    assert last.strip()


def _sse(*pieces: str) -> str:
    chunks = [{"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}
              for p in pieces]
    chunks.append({"object": "chat.completion.chunk", "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_model_html_is_shown_as_text_and_never_runs(page):
    hostile = [
        "Here: ", XSS[:7], XSS[7:], "\n\n",  # split across chunks, so only the joined text is the tag
        '<img src=x onerror="window.__pwned=1">\n\n',
        "<script>window.__pwned=1</script>\n\n",
        '<svg onload="window.__pwned=1"></svg> <iframe src="javascript:window.__pwned=1"></iframe>\n\n',
        "[click](javascript:window.__pwned=1) ![pic](https://example.com/p.png) ",
        '[quote](https://example.com/"onmouseover="window.__pwned=1) ',
        "**bold** and `<b>code</b>`\n",
    ]
    page.route("**/v1/chat/completions",
               lambda route: route.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                                           body=_sse(*hostile)))
    _ask(page, "show me html")
    _wait_ready(page, 10_000)
    page.wait_for_timeout(300)
    body = page.query_selector(f"{ASSISTANT} .body")
    text = body.inner_text()
    assert XSS in text
    assert "<script>window.__pwned=1</script>" in text
    assert "[click](javascript:window.__pwned=1)" in text
    assert body.query_selector_all("img, script, svg, iframe, object, embed") == []
    on_attrs = body.evaluate(
        "b => [...b.querySelectorAll('*')].flatMap(e => [...e.attributes].map(a => a.name))"
        ".filter(n => n.startsWith('on'))")
    assert on_attrs == []
    hrefs = body.evaluate("b => [...b.querySelectorAll('a')].map(a => a.getAttribute('href'))")
    assert hrefs and all(h.startswith("https://") for h in hrefs), hrefs
    for a in body.query_selector_all("a"):
        a.hover()
    assert body.query_selector("strong").inner_text() == "bold"  # the Markdown subset still renders
    assert body.query_selector("code").inner_text() == "<b>code</b>"
    page.wait_for_timeout(200)
    assert page.dialogs == []
    assert page.evaluate("window.__pwned") is None


def test_request_carries_settings_and_errors_are_explained(page):
    requests: list[tuple[str | None, dict]] = []

    def reject(route):
        requests.append((route.request.headers.get("authorization"), route.request.post_data_json))
        route.fulfill(status=401, headers={"Content-Type": "application/json"},
                      body=json.dumps({"error": {"message": "invalid API key", "type": "invalid_request_error",
                                                 "code": "invalid_api_key"}}))

    page.route("**/v1/chat/completions", reject)
    _set(page, "#api-key", "test-key")
    _set(page, "#system", "Answer in French.")
    for field, value in [("temperature", "0.3"), ("top_p", "0.8"), ("top_k", "40"), ("min_p", "0.05"),
                         ("max_tokens", "77"), ("repetition_penalty", "1.1"), ("seed", "42")]:
        _set(page, f"#{field}", value)
    _ask(page, "hello?")
    page.wait_for_selector("#error:not([hidden])", timeout=10_000)
    error = page.inner_text("#error")
    assert "401" in error and "invalid API key" in error and "API key" in error
    assert len(requests) == 1
    auth, body = requests[0]
    assert auth == "Bearer test-key"
    assert body["model"] == MODEL and body["stream"] is True
    assert body["messages"] == [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "hello?"}]
    assert {k: body[k] for k in ("temperature", "top_p", "top_k", "min_p", "max_tokens", "repetition_penalty", "seed")} \
        == {"temperature": 0.3, "top_p": 0.8, "top_k": 40, "min_p": 0.05, "max_tokens": 77,
            "repetition_penalty": 1.1, "seed": 42}
    assert page.input_value("#input") == "hello?"  # the message is handed back for a retry
    assert page.query_selector(ASSISTANT) is None
    assert page.inner_text("#conversations .conv.active .conv-title") == "New chat"
    _wait_ready(page, 2_000)

    # Settings and the key persist in localStorage across a reload.
    page.reload()
    assert page.input_value("#api-key") == "test-key"
    assert page.input_value("#max_tokens") == "77"


MARKDOWN_CASES = [
    ("**b** *i* `c*d*`", "<p><strong>b</strong> <em>i</em> <code>c*d*</code></p>"),
    ("# T\n\n- a\n- b\n\n1. x\n2. y", "<h1>T</h1>\n<ul><li>a</li><li>b</li></ul>\n<ol><li>x</li><li>y</li></ol>"),
    ("```py\nif a < b: print('**')\n```", '<pre data-lang="py"><code>if a &lt; b: print(&#39;**&#39;)</code></pre>'),
    ("[x](https://e.com/?a=1&b=2)",
     '<p><a href="https://e.com/?a=1&amp;b=2" target="_blank" rel="noopener noreferrer">x</a></p>'),
    ("[x](javascript:alert(1)) ![p](https://e.com/p.png)",
     "<p>[x](javascript:alert(1)) ![p](https://e.com/p.png)</p>"),
    ('<a href="https://e.com" onclick=f()>', "<p>&lt;a href=&quot;https://e.com&quot; onclick=f()&gt;</p>"),
    ("line 1\nline 2\n\n2 * 3 * 4", "<p>line 1<br>line 2</p>\n<p>2 * 3 * 4</p>"),
    ("\u0000" + "0" + "\u0000 no forged slot", "<p>0 no forged slot</p>"),
]


def test_markdown_subset_renders_escaped_html(page):
    got = page.evaluate("cases => cases.map(c => window.groundupMarkdown.renderMarkdown(c))",
                        [src for src, _ in MARKDOWN_CASES])
    assert got == [html for _, html in MARKDOWN_CASES]


def test_token_view_matches_server_tokenizer(page, server):
    text = "Hello, world! naïve café 🤖 — tokens\n    indented_code(x=1)\tand 12345"
    page.click("#tab-tokens")
    page.fill("#tok-input", text)
    expected = _post_json(server + "/tokenize", {"model": MODEL, "prompt": text})
    page.wait_for_function("() => document.querySelector('#tok-count').dataset.count !== ''", timeout=10_000)
    page.wait_for_function(f"() => document.querySelector('#tok-count').dataset.count === '{expected['count']}'",
                           timeout=5_000)
    assert expected["count"] == len(expected["tokens"]) > 5
    assert page.inner_text("#tok-count").startswith(f"{expected['count']} token")
    spans = page.query_selector_all("#tok-view .tok")
    assert len(spans) == expected["count"]
    ids = [int(s.inner_text()) for s in page.query_selector_all("#tok-ids .tok-id")]
    assert ids == expected["tokens"]
    classes = [s.get_attribute("class") for s in spans]
    assert all(a != b for a, b in zip(classes, classes[1:])), "neighbouring tokens share a colour"
    shown = "".join(s.text_content() for s in spans).replace("↵\n", "\n").replace("→\t", "\t")
    assert shown == "".join(expected["pieces"])  # the emoji's bytes span tokens: pieces show U+FFFD there
