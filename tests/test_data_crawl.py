"""The crawler against a small site served on loopback by the test: robots.txt, scope, depth, URL
dedup, redirects (and a loop), 404, size cap, non-HTML, rate limit, WARC output, resume after kill -9."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from groundup.data.crawl import Crawler, crawl, normalize_url

ROOT = Path(__file__).resolve().parents[1]
HUGE = 3_000_000


def page(title: str, links: list[str]) -> bytes:
    body = "".join(f'<p><a href="{h}">{h}</a></p>' for h in links)
    return f"<html><head><title>{title}</title></head><body><h1>{title}</h1>{body}</body></html>".encode()


class Site:
    """A tiny web site on 127.0.0.1 that logs every request it gets."""

    def __init__(self) -> None:
        self.log: list[tuple[float, str, str]] = []  # (time, path with query, user agent)
        site = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # keep pytest output clean
                pass

            def do_GET(self):
                site.log.append((time.monotonic(), self.path, self.headers.get("User-Agent", "")))
                port = self.server.server_address[1]
                routes = {
                    "/": page("home", ["/a", "/b?x=1&y=2", "/private/secret", "/loop1", "/missing", "/huge",
                                       "/file.pdf", f"http://localhost:{port}/external", "/a#frag", "/redirect",
                                       "mailto:someone@example.org", "/./a/../b?y=2&x=1"]),
                    "/a": page("a", ["/", "/b?y=2&x=1", "/a/deep"]),
                    "/a/deep": page("deep", ["/a/deeper"]),
                    "/b?x=1&y=2": page("b", ["/c"]),
                    "/c": page("c", []),
                }
                if self.path == "/robots.txt":
                    return self._send(200, b"User-agent: *\nDisallow: /private/\n", "text/plain")
                if self.path in ("/loop1", "/loop2", "/redirect"):
                    target = {"/loop1": "/loop2", "/loop2": "/loop1", "/redirect": "/c"}[self.path]
                    self.send_response(302)
                    self.send_header("Location", target)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                if self.path == "/huge":
                    return self._send(200, b"<html><body><p>" + b"big " * (HUGE // 4) + b"</p></body></html>")
                if self.path == "/file.pdf":
                    return self._send(200, b"%PDF-1.4 not html" * 100, "application/pdf")
                if self.path in routes:
                    return self._send(200, routes[self.path])
                return self._send(404, b"<html><body>not found</body></html>")

            def _send(self, code: int, body: bytes, ctype: str = "text/html; charset=utf-8"):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                try:
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):  # the crawler stopped reading (size cap)
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def paths(self) -> list[str]:
        return [p for _, p, _ in self.log]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def site():
    s = Site()
    yield s
    s.close()


def records(warc: Path) -> list[tuple[str, str, dict, bytes]]:
    from warcio.archiveiterator import ArchiveIterator

    out = []
    with open(warc, "rb") as f:
        for rec in ArchiveIterator(f):
            uri = rec.rec_headers.get_header("WARC-Target-URI") or ""
            out.append((rec.rec_type, uri, dict(rec.rec_headers.headers), rec.content_stream().read()))
    return out


def responses(warc: Path) -> list[str]:
    return [uri for kind, uri, _, _ in records(warc) if kind == "response"]


def test_normalize_url():
    assert normalize_url("HTTP://Example.ORG:80/a/./b/../c?z=1&a=2#top") == "http://example.org/a/c?a=2&z=1"
    assert normalize_url("https://example.org:8443") == "https://example.org:8443/"
    assert normalize_url("../x", base="http://h.org/a/b/") == "http://h.org/a/x"
    assert normalize_url("mailto:a@b.org") is None
    assert normalize_url("javascript:void(0)") is None
    assert normalize_url("http://[::1]:8080/p") == "http://[::1]:8080/p"


def test_crawl_is_polite_scoped_and_writes_warc(site: Site, tmp_path: Path):
    out = tmp_path / "crawl.warc.gz"
    stats = crawl([site.url], out, max_depth=2, max_pages=50, delay=0.1, max_bytes=100_000)
    got = responses(out)
    base = site.url.rstrip("/")
    assert sorted(got) == sorted(base + p for p in ["/", "/a", "/a/deep", "/b?x=1&y=2", "/c", "/huge"])
    paths = site.paths()
    assert "/private/secret" not in paths  # robots.txt
    assert "/a/deeper" not in paths  # depth 3 > max_depth 2
    assert not any("external" in p for p in paths)  # other host
    assert paths.count("/robots.txt") == 1
    dup = [p for p in set(paths) if paths.count(p) > 1]
    assert dup == []  # every normalized URL fetched once; the loop stops after one round
    assert "/loop1" in paths and "/loop2" in paths and "/redirect" in paths
    assert all(ua.startswith("groundup-crawler/") for _, _, ua in site.log)
    gaps = [b[0] - a[0] for a, b in zip(site.log, site.log[1:])]
    assert min(gaps) >= 0.08  # one host: `delay` apart (less the server's thread-start jitter)
    assert stats.skipped.get("robots_txt") == 1 and stats.skipped.get("not_html") == 1
    # the loop ends at its second hop; /redirect points at /c, already queued from /b
    assert stats.skipped.get("http_404") == 1 and stats.skipped.get("redirect_seen") == 2
    assert stats.truncated == 1 and stats.pages == 6

    recs = records(out)
    assert recs[0][0] == "warcinfo"
    kinds = [k for k, *_ in recs[1:]]
    assert kinds == ["request", "response"] * 6
    huge = next(r for r in recs if r[0] == "response" and r[1].endswith("/huge"))
    assert huge[2]["WARC-Truncated"] == "length" and len(huge[3]) == 100_000
    home = next(r for r in recs if r[0] == "response" and r[1] == base + "/")
    assert b"<h1>home</h1>" in home[3]
    # every record is its own gzip member (Common Crawl layout): the file decompresses as a whole
    assert gzip.decompress(out.read_bytes()).count(b"WARC/1.0\r\n") == len(recs)


def test_redirect_target_is_recorded_under_its_own_url(site: Site, tmp_path: Path):
    out = tmp_path / "r.warc.gz"
    crawl([site.url + "redirect"], out, max_depth=0, delay=0.0)
    assert responses(out) == [site.url + "c"]


def test_redirect_limit(site: Site, tmp_path: Path):
    out = tmp_path / "r.warc.gz"
    stats = crawl([site.url + "redirect"], out, max_depth=0, delay=0.0, max_redirects=0)
    assert responses(out) == [] and stats.skipped == {"too_many_redirects": 1}
    assert "/c" not in site.paths()


def test_resume_after_stop_and_damaged_tail(site: Site, tmp_path: Path):
    out = tmp_path / "crawl.warc.gz"
    full = tmp_path / "full.warc.gz"
    crawl([site.url], full, max_depth=2, delay=0.0, max_bytes=100_000)
    first = crawl([site.url], out, max_depth=2, max_pages=2, delay=0.0, max_bytes=100_000)
    assert first.pages == 2 and len(responses(out)) == 2
    with open(out, "ab") as f:  # a record cut in half by a crash after the last committed page
        f.write(gzip.compress(b"WARC/1.0\r\nWARC-Type: response\r\n")[:25])
    state = json.loads(out.with_name(out.name + ".state.json").read_text())
    assert state["warc_bytes"] < out.stat().st_size
    again = Crawler([site.url], out, max_depth=2, max_pages=50, delay=0.0, max_bytes=100_000).run()
    assert again.pages == 6
    assert sorted(responses(out)) == sorted(responses(full))


def test_crawl_killed_with_sigkill_resumes_without_duplicates(site: Site, tmp_path: Path):
    out = tmp_path / "crawl.warc.gz"
    state = out.with_name(out.name + ".state.json")
    cmd = [sys.executable, "-m", "groundup", "data", "crawl", site.url, "--out", str(out), "--delay", "0.25",
           "--max-bytes", "100000"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if json.loads(state.read_text())["stats"]["pages"] >= 2:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.02)
        else:
            pytest.fail("the crawl never recorded two pages")
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    done_before = len(responses(out))
    assert 2 <= done_before < 6
    rc = subprocess.run(cmd[:-4] + ["--delay", "0"] + cmd[-2:], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert rc.returncode == 0, rc.stderr
    got = responses(out)
    assert len(got) == len(set(got)) == 6
    assert "6 pages" in rc.stdout


def test_existing_non_crawl_file_is_refused(tmp_path: Path):
    from groundup.errors import GroundupError

    out = tmp_path / "x.warc.gz"
    out.write_bytes(b"something")
    with pytest.raises(GroundupError, match="not a crawl to resume"):
        Crawler(["http://127.0.0.1:9/"], out)
