"""The Arena tab in a real browser, against a real `groundup serve` with two served models.

The server serves SmolLM2-135M-Instruct twice, under two names (two symlinks to the pulled GGUF in
a temporary directory), with GROUNDUP_CACHE pointing at a temporary cache so the votes land in a
SQLite file of this test. Chromium (Playwright, the same set-up as test_webchat.py) opens the
Arena tab, sends a prompt, watches both answers stream into their panes, votes, and sees the names
revealed and the leaderboard updated; the vote is then read back from the SQLite file. The HTTP
checks (no name before the vote, vote only after both answers, once) use httpx against the same
server. Skips like test_webchat.py when the model, Chromium or Playwright is missing.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import time

import httpx
import pytest

from tests.serving import live_server
from tests.test_webchat import _set, browser  # noqa: F401  (browser: the shared Chromium fixture)

NAMES = ("smollm2-a.gguf", "smollm2-b.gguf")
PANES = ("#arena-a", "#arena-b")


@contextlib.contextmanager
def _env(**values: str):
    """Set environment variables while the server process is spawned (it copies them), then restore."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def arena_server(smollm2_path, tmp_path_factory):
    """(base url, vote-store path) of a server with two names for SmolLM2."""
    tmp = tmp_path_factory.mktemp("arena")
    for name in NAMES:
        (tmp / name).symlink_to(smollm2_path)
    cache = tmp / "cache"
    with contextlib.ExitStack() as stack:
        with _env(GROUNDUP_CACHE=str(cache)):
            url, _ = stack.enter_context(live_server(
                "-m", str(tmp / NAMES[0]), "-m", str(tmp / NAMES[1]), "--max-batch", "2", "--max-len", "512", "--dtype", "fp32",
                wait_s=180))
        yield url, cache / "arena.sqlite"


@pytest.fixture
def page(arena_server, browser):  # noqa: F811
    url, _ = arena_server
    context = browser.new_context()
    pg = context.new_page()
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.goto(url + "/")
    pg.wait_for_function("() => document.querySelector('#model').options.length === 2", timeout=15_000)
    yield pg
    context.close()


def _sse_events(text: str) -> list:
    out = []
    for line in text.splitlines():
        if line.startswith("data: ") and line[6:] != "[DONE]":
            out.append(json.loads(line[6:]))
    return out


def test_battle_api_hides_names_until_one_vote_after_both_answers(arena_server):
    url, db = arena_server
    c = httpx.Client(base_url=url, timeout=60)
    assert c.post("/arena/battles", json={"prompt": ""}).status_code == 400
    assert c.post("/arena/battles/nope/vote", json={"winner": "A"}).status_code == 404
    started = c.post("/arena/battles", json={"prompt": "Say one word.", "seed": 3})
    assert started.status_code == 200
    bid = started.json()["id"]
    assert not any(n in started.text for n in NAMES)
    early = c.post(f"/arena/battles/{bid}/vote", json={"winner": "A"})
    assert early.status_code == 409 and early.json()["error"]["code"] == "answers_unfinished"
    answers = {}
    for side in ("A", "B"):
        r = c.post(f"/arena/battles/{bid}/answers/{side}", json={"max_tokens": 4, "temperature": 0})
        assert r.status_code == 200 and r.text.rstrip().endswith("data: [DONE]")
        assert not any(n in r.text for n in NAMES), r.text[:300]
        events = _sse_events(r.text)
        assert {e["model"] for e in events} == {side}
        answers[side] = "".join(ch["delta"].get("content", "") for e in events for ch in e["choices"])
        assert answers[side]
    again = c.post(f"/arena/battles/{bid}/answers/A", json={"max_tokens": 4})
    assert again.status_code == 409
    voted = c.post(f"/arena/battles/{bid}/vote", json={"winner": "bad"})
    assert voted.status_code == 200
    body = voted.json()
    assert {body["model_a"], body["model_b"]} == set(NAMES)
    assert c.post(f"/arena/battles/{bid}/vote", json={"winner": "A"}).status_code == 404  # counted once
    with sqlite3.connect(db) as conn:
        row = conn.execute("SELECT model_a, model_b, winner, prompt, answer_a, answer_b FROM votes WHERE id = ?",
                           (bid,)).fetchone()
    assert row == (body["model_a"], body["model_b"], "tie (bothbad)", "Say one word.", answers["A"], answers["B"])
    # the same seed draws the same sides
    sides = set()
    for _ in range(2):
        b2 = c.post("/arena/battles", json={"prompt": "x", "seed": 3}).json()["id"]
        for side in ("A", "B"):
            c.post(f"/arena/battles/{b2}/answers/{side}", json={"max_tokens": 1})
        revealed = c.post(f"/arena/battles/{b2}/vote", json={"winner": "tie"}).json()
        sides.add((revealed["model_a"], revealed["model_b"]))
    assert sides == {(body["model_a"], body["model_b"])}


def test_arena_tab_streams_both_answers_vote_reveals_names_and_updates_leaderboard(page, arena_server):
    _, db = arena_server
    arena_responses = []
    page.on("response", lambda r: arena_responses.append(r) if "/arena/battles" in r.url else None)
    _set(page, "#temperature", "0")
    _set(page, "#max_tokens", "32")
    page.click("#tab-arena")
    assert page.is_visible("#arena-panel") and not page.is_visible("#chat-panel")
    page.wait_for_function("() => document.querySelector('#arena-lb-note').textContent !== ''", timeout=10_000)
    before = int(page.get_attribute("#arena-leaderboard", "data-battles") or 0)

    prompt = "Name two fruits."
    page.fill("#arena-input", prompt)
    page.click("#arena-send")
    page.wait_for_selector("#arena-a[data-streaming='true']", timeout=10_000)
    page.wait_for_selector("#arena-b[data-streaming='true']", timeout=10_000)
    lengths = {p: set() for p in PANES}
    deadline = time.monotonic() + 90
    while page.get_attribute("#arena-panel", "data-state") == "streaming" and time.monotonic() < deadline:
        for p in PANES:
            lengths[p].add(len(page.inner_text(f"{p} .body")))
        page.wait_for_timeout(40)
    assert page.get_attribute("#arena-panel", "data-state") == "ready", page.inner_text("#arena-error")
    for p in PANES:
        assert page.inner_text(f"{p} .body").strip(), f"{p} is empty"
        assert len(lengths[p] - {0}) >= 2, f"{p} did not grow while streaming: {lengths[p]}"
    # before the vote: anonymous headers, and nothing the page received names a model
    assert [page.inner_text(f"{p} .who") for p in PANES] == ["Model A", "Model B"]
    shown = "".join(page.inner_text(sel) for sel in (*PANES, "#arena-result"))  # (the leaderboard lists all names)
    assert not any(n in shown for n in NAMES)
    assert page.get_attribute(PANES[0], "data-model") is None
    created = [r for r in arena_responses if r.url.endswith("/arena/battles")]
    assert len(created) == 1 and not any(n in created[0].text() for n in NAMES)  # the streams: see the API test
    assert page.inner_text("#arena-prompt") == prompt

    page.click("#arena-panel .vote[data-vote='A']")
    page.wait_for_selector("#arena-panel[data-state='voted']", timeout=10_000)
    revealed = [page.get_attribute(p, "data-model") for p in PANES]
    assert sorted(revealed) == sorted(NAMES)
    assert page.inner_text("#arena-a .who") == f"Model A: {revealed[0]}"
    assert revealed[0] in page.inner_text("#arena-result") and revealed[1] in page.inner_text("#arena-result")
    assert page.is_disabled("#arena-panel .vote[data-vote='B']")

    page.wait_for_function(f"() => document.querySelector('#arena-leaderboard').dataset.battles === '{before + 1}'",
                           timeout=10_000)
    rows = {tr.get_attribute("data-model"): [td.inner_text() for td in tr.query_selector_all("td")]
            for tr in page.query_selector_all("#arena-leaderboard tbody tr")}
    assert set(rows) == set(NAMES)
    assert sum(int(r[5]) for r in rows.values()) == 2 * (before + 1)  # each vote counts for both models

    battle_id = page.get_attribute("#arena-panel", "data-battle")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        row = conn.execute("SELECT model_a, model_b, winner, prompt, answer_a FROM votes WHERE id = ?",
                           (battle_id,)).fetchone()
    assert row is not None, "the vote is not in the SQLite store"
    assert row[:4] == (revealed[0], revealed[1], "model_a", prompt)
    assert row[4].strip()

    page.click("#arena-new")  # a new battle starts anonymous again
    assert page.get_attribute("#arena-panel", "data-state") == "idle"
    assert [page.inner_text(f"{p} .who") for p in PANES] == ["Model A", "Model B"]
    assert page.dialogs == []


def _scripted(*pieces: str) -> str:
    chunks = [{"object": "chat.completion.chunk", "model": "A",
               "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]} for p in pieces]
    return "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"


def test_arena_panes_show_model_html_as_text(page):
    hostile = ["<img src=x onerror=\"window.__pwned=1\">\n\n", "<script>window.__pwned=1</script> ",
               "[x](javascript:window.__pwned=1) **bold**"]
    page.route("**/arena/battles/*/answers/*",
               lambda route: route.fulfill(status=200, headers={"Content-Type": "text/event-stream"},
                                           body=_scripted(*hostile)))
    page.click("#tab-arena")
    page.fill("#arena-input", "show me html")
    page.press("#arena-input", "Enter")
    page.wait_for_selector("#arena-panel[data-state='ready']", timeout=10_000)
    for p in PANES:
        body = page.query_selector(f"{p} .body")
        assert "<script>window.__pwned=1</script>" in body.inner_text()
        assert body.query_selector_all("img, script, iframe, svg") == []
        assert body.query_selector("strong").inner_text() == "bold"
        assert body.query_selector_all("a") == []
    page.wait_for_timeout(200)
    assert page.dialogs == [] and page.evaluate("window.__pwned") is None
