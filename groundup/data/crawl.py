"""A polite, resumable web crawler that writes WARC files the rest of the pipeline reads like Common Crawl's.

`crawl(seeds, out)` walks pages breadth-first from the seed URLs:

- stays inside the allowed domains (the seeds' hosts by default; subdomains included) and
  within `max_depth` links of a seed; stops after `max_pages` recorded pages;
- honours robots.txt (urllib.robotparser, fetched once per host with our own client: a 404
  means "all allowed", 401/403/5xx or no answer mean "nothing allowed") and its Crawl-delay,
  plus `<meta name="robots" content="noindex/nofollow">`;
- waits at least `delay` seconds between two requests to the same host;
- normalizes URLs (lower-case scheme and host, default port dropped, dot segments resolved,
  query parameters sorted, fragment dropped) and fetches each one once;
- follows redirects itself, at most `max_redirects` hops, never into a URL already seen
  (so a redirect loop ends at once);
- skips non-HTML responses by Content-Type before reading their body, reads at most
  `max_bytes` of a body (the record is then marked `WARC-Truncated: length`), times out;
- records each HTML page it keeps (status 2xx) as a WARC request + response pair (warcio,
  gzip per record), the body as received (we ask for `Accept-Encoding: identity`).

Resuming: `<out>.state.json` holds the queue, the seen set, the counters and the WARC's
length after the last committed page. A page's records are built in memory, appended in one
write, flushed and fsync'ed, and only then is the state written (atomically). A crawl killed
at any point restarts from the state: the WARC is first cut back to the recorded length, so
a half-written record or a page recorded after the last state write is removed and fetched again.
"""
from __future__ import annotations

import io
import json
import os
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Callable
from urllib.parse import parse_qsl, urlencode, urljoin, urlsplit, urlunsplit
from urllib.robotparser import RobotFileParser

from groundup.errors import GroundupError

AGENT = "groundup-crawler"
USER_AGENT = f"{AGENT}/0.1 (groundup LLM data pipeline; honours robots.txt)"
HTML_TYPES = ("text/html", "application/xhtml+xml")
REDIRECTS = (301, 302, 303, 307, 308)


def normalize_url(url: str, base: str | None = None) -> str | None:
    """Canonical form of an http(s) URL (see the module docstring); None for other schemes or junk."""
    try:
        url = urljoin(base, url.strip()) if base else url.strip()
        p = urlsplit(url)
        port = p.port
    except ValueError:
        return None
    scheme = p.scheme.lower()
    host = (p.hostname or "").lower().rstrip(".")
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:
        host = f"[{host}]"
    netloc = host if port in (None, {"http": 80, "https": 443}[scheme]) else f"{host}:{port}"
    path = _remove_dot_segments(p.path or "/")
    query = urlencode(sorted(parse_qsl(p.query, keep_blank_values=True))) if p.query else ""
    return urlunsplit((scheme, netloc, path, query, ""))


def _remove_dot_segments(path: str) -> str:
    out: list[str] = []
    for seg in path.split("/")[1:] if path.startswith("/") else path.split("/"):
        if seg == "..":
            if out:
                out.pop()
        elif seg != ".":
            out.append(seg)
    trailing = path.endswith(("/.", "/..")) and (not out or out[-1] != "")
    return "/" + "/".join(out) + ("/" if trailing else "")


def in_domains(url: str, domains: list[str]) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    return any(host == d or host.endswith("." + d) for d in domains)


class _LinkParser(HTMLParser):
    """Collects <a href>, <base href> and the robots meta tag."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.base: str | None = None
        self.robots = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag in ("a", "area") and a.get("href") and "nofollow" not in a.get("rel", "").lower():
            self.links.append(a["href"])
        elif tag == "base" and a.get("href") and self.base is None:
            self.base = a["href"]
        elif tag == "meta" and a.get("name", "").lower() in ("robots", AGENT):
            self.robots += "," + a.get("content", "").lower()


@dataclass
class CrawlStats:
    pages: int = 0  # HTML pages recorded
    requests: int = 0
    bytes: int = 0
    redirects: int = 0
    truncated: int = 0
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> count

    def skip(self, reason: str) -> None:
        self.skipped[reason] = self.skipped.get(reason, 0) + 1


class Crawler:
    """One crawl into one WARC file; see the module docstring. `run()` returns the stats."""

    def __init__(self, seeds: list[str], out: str | os.PathLike, *, domains: list[str] | None = None,
                 max_depth: int = 2, max_pages: int = 100, delay: float = 1.0, max_bytes: int = 1 << 20,
                 max_redirects: int = 5, timeout: float = 10.0, user_agent: str = USER_AGENT,
                 log: Callable[[str], None] | None = None) -> None:
        self.out = Path(out)
        self.state_path = self.out.with_name(self.out.name + ".state.json")
        self.max_depth, self.max_pages, self.delay = max_depth, max_pages, delay
        self.max_bytes, self.max_redirects, self.timeout = max_bytes, max_redirects, timeout
        self.user_agent, self.log = user_agent, log or (lambda s: None)
        self.robots: dict[str, RobotFileParser | None] = {}
        self.last_request: dict[str, float] = {}
        norm = [u for u in (normalize_url(s) for s in seeds) if u]
        if len(norm) != len(seeds):
            bad = [s for s in seeds if not normalize_url(s)]
            raise GroundupError(f"not an http(s) URL: {bad[0]!r}; seeds look like https://example.org/")
        self.domains = sorted({d.lower().lstrip(".") for d in (domains or [])} |
                              ({urlsplit(u).hostname or "" for u in norm} if not domains else set()))
        self.queue: deque[tuple[str, int]] = deque()
        self.seen: set[str] = set()
        self.stats = CrawlStats()
        self.warc_bytes = 0
        if self.state_path.exists():
            self._load_state()
        elif self.out.exists() and self.out.stat().st_size > 0:
            raise GroundupError(f"{self.out} exists but has no {self.state_path.name}; it is not a crawl to resume: "
                                "choose another --out or remove it")
        for u in norm:
            self._enqueue(u, 0)

    # ---- state -----------------------------------------------------------------------------
    def _load_state(self) -> None:
        try:
            st = json.loads(self.state_path.read_text())
        except ValueError as ex:
            raise GroundupError(f"{self.state_path} is damaged ({ex}); remove it and {self.out} to start over") \
                from None
        self.queue = deque((u, d) for u, d in st["queue"])
        self.seen = set(st["seen"])
        self.domains = sorted(set(self.domains) | set(st["domains"]))
        self.stats = CrawlStats(**st["stats"])
        self.warc_bytes = int(st["warc_bytes"])
        size = self.out.stat().st_size if self.out.exists() else 0
        if size < self.warc_bytes:
            raise GroundupError(f"{self.out} is shorter ({size} bytes) than its state says ({self.warc_bytes}); "
                                "it was changed outside the crawler")
        if size > self.warc_bytes:  # records appended after the last committed page: cut them off
            with open(self.out, "r+b") as f:
                f.truncate(self.warc_bytes)
            self.log(f"resume: cut {size - self.warc_bytes} uncommitted bytes off {self.out.name}")

    def _save_state(self) -> None:
        st = {"version": 1, "domains": self.domains, "queue": list(self.queue), "seen": sorted(self.seen),
              "stats": self.stats.__dict__, "warc_bytes": self.warc_bytes}
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(st))
        os.replace(tmp, self.state_path)

    def _enqueue(self, url: str, depth: int) -> None:
        if url in self.seen:
            return
        self.seen.add(url)
        if not in_domains(url, self.domains):
            self.stats.skip("out_of_domain")
            return
        self.queue.append((url, depth))

    # ---- WARC --------------------------------------------------------------------------------
    def _append(self, build: Callable[[Any], None]) -> None:
        """Build records into a buffer with `build(writer)`, then append them in one write and commit."""
        from warcio.warcwriter import WARCWriter

        buf = io.BytesIO()
        build(WARCWriter(buf, gzip=True))
        with open(self.out, "ab") as f:
            f.write(buf.getvalue())
            f.flush()
            os.fsync(f.fileno())
            self.warc_bytes = f.tell()
        self._save_state()

    def _write_warcinfo(self) -> None:
        def build(w: Any) -> None:
            info = {"software": "groundup crawler", "format": "WARC File Format 1.0", "http-header-user-agent":
                    self.user_agent, "robots": "obey", "domains": ",".join(self.domains)}
            w.write_record(w.create_warcinfo_record(self.out.name, info))
        self._append(build)

    def _record(self, url: str, resp: Any, body: bytes, truncated: bool) -> None:
        from warcio.statusandheaders import StatusAndHeaders

        req = resp.request
        target = req.url.raw_path.decode("ascii", errors="replace") or "/"
        req_headers = StatusAndHeaders(f"GET {target} HTTP/1.1", list(req.headers.items()), is_http_request=True)
        headers = []
        for k, v in resp.headers.multi_items():
            lk = k.lower()
            if lk == "transfer-encoding" or (lk == "content-length" and truncated):
                k = "X-Crawler-" + k  # the body below is de-chunked / cut: keep the original as a note
            headers.append((k, v))
        if truncated:
            headers.append(("Content-Length", str(len(body))))
        phrase = resp.reason_phrase or ""
        resp_headers = StatusAndHeaders(f"{resp.status_code} {phrase}".strip(), headers, protocol="HTTP/1.1")
        resp_id = f"<urn:uuid:{uuid.uuid4()}>"

        def build(w: Any) -> None:
            extra = {"WARC-Record-ID": resp_id}
            if truncated:
                extra["WARC-Truncated"] = "length"
            response = w.create_warc_record(url, "response", payload=io.BytesIO(body), http_headers=resp_headers,
                                            warc_headers_dict=extra)
            request = w.create_warc_record(url, "request", payload=io.BytesIO(b""), http_headers=req_headers,
                                           warc_headers_dict={"WARC-Concurrent-To": resp_id})
            w.write_record(request)
            w.write_record(response)
        self._append(build)

    # ---- fetching ---------------------------------------------------------------------------
    def _wait(self, host: str, delay: float) -> None:
        last = self.last_request.get(host)
        if last is not None:
            pause = last + delay - time.monotonic()
            if pause > 0:
                time.sleep(pause)
        self.last_request[host] = time.monotonic()

    def _robots(self, client: Any, url: str) -> RobotFileParser | None:
        p = urlsplit(url)
        key = f"{p.scheme}://{p.netloc}"
        if key not in self.robots:
            rp = RobotFileParser(key + "/robots.txt")
            try:
                self._wait(p.netloc, self.delay)
                self.stats.requests += 1
                r = client.get(key + "/robots.txt", headers={"User-Agent": self.user_agent})
                if r.status_code == 200:
                    rp.parse(r.content[: 1 << 19].decode("utf-8", errors="replace").splitlines())
                elif 400 <= r.status_code < 500 and r.status_code not in (401, 403):
                    rp.allow_all = True
                else:
                    rp.disallow_all = True
            except Exception as ex:  # network error: treat the host as closed
                self.log(f"robots.txt for {key}: {type(ex).__name__}; skipping the host")
                rp.disallow_all = True
            self.robots[key] = rp
        return self.robots[key]

    def _allowed(self, client: Any, url: str) -> tuple[bool, float]:
        rp = self._robots(client, url)
        if rp is None:
            return True, self.delay
        delay = rp.crawl_delay(AGENT)
        return rp.can_fetch(AGENT, url), max(self.delay, float(delay or 0))

    def _fetch(self, client: Any, url: str, depth: int) -> None:
        """Fetch `url`, following redirects; record it if it is HTML; enqueue its links."""
        for hop in range(self.max_redirects + 1):
            ok, delay = self._allowed(client, url)
            if not ok:
                self.stats.skip("robots_txt")
                return
            self._wait(urlsplit(url).netloc, delay)
            self.stats.requests += 1
            headers = {"User-Agent": self.user_agent, "Accept-Encoding": "identity",
                       "Accept": "text/html,application/xhtml+xml;q=0.9,*/*;q=0.1"}
            try:
                with client.stream("GET", url, headers=headers) as r:
                    if r.status_code in REDIRECTS and r.headers.get("location"):
                        self.stats.redirects += 1
                        nxt = normalize_url(r.headers["location"], base=url)
                        if nxt is None or nxt in self.seen:
                            self.stats.skip("redirect_seen" if nxt else "redirect_bad")
                            return
                        self.seen.add(nxt)
                        if not in_domains(nxt, self.domains):
                            self.stats.skip("out_of_domain")
                            return
                        url = nxt
                        continue
                    if not 200 <= r.status_code < 300:
                        self.stats.skip(f"http_{r.status_code}")
                        return
                    ctype = r.headers.get("content-type", "").split(";")[0].strip().lower()
                    if ctype not in HTML_TYPES:
                        self.stats.skip("not_html")
                        return
                    body, truncated = bytearray(), False
                    for chunk in r.iter_raw():
                        body += chunk
                        if len(body) > self.max_bytes:
                            del body[self.max_bytes:]
                            truncated = True
                            break
                    self._page(url, depth, r, bytes(body), truncated)
                    return
            except Exception as ex:  # timeouts, refused connections, protocol errors
                self.stats.skip(f"error_{type(ex).__name__}")
                return
        self.stats.skip("too_many_redirects")

    def _page(self, url: str, depth: int, r: Any, body: bytes, truncated: bool) -> None:
        charset = r.charset_encoding or "utf-8"
        try:
            text = body.decode(charset, errors="replace")
        except LookupError:
            text = body.decode("utf-8", errors="replace")
        parser = _LinkParser()
        try:
            parser.feed(text)
        except Exception:  # html.parser is lenient; a failure only costs the links
            pass
        if depth < self.max_depth and "nofollow" not in parser.robots:  # links first: committed with the page
            base = urljoin(url, parser.base) if parser.base else url
            for href in parser.links:
                link = normalize_url(href, base=base)
                if link:
                    self._enqueue(link, depth + 1)
        if "noindex" in parser.robots:
            self.stats.skip("meta_noindex")
            return
        self.stats.pages += 1
        self.stats.bytes += len(body)
        self.stats.truncated += truncated
        self._record(url, r, body, truncated)
        self.log(f"[{self.stats.pages}] {url} ({len(body):,} bytes{', truncated' if truncated else ''})")

    def run(self) -> CrawlStats:
        import httpx

        if self.warc_bytes == 0:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            self.out.write_bytes(b"")
            self._write_warcinfo()
        limits = httpx.Timeout(self.timeout)
        with httpx.Client(timeout=limits, follow_redirects=False, trust_env=False) as client:
            while self.queue and self.stats.pages < self.max_pages:
                url, depth = self.queue.popleft()
                self._fetch(client, url, depth)
                self._save_state()
        return self.stats


def crawl(seeds: list[str], out: str | os.PathLike, **kw: Any) -> CrawlStats:
    """Crawl from `seeds` into the WARC file `out` (resuming it if its state file exists)."""
    return Crawler(seeds, out, **kw).run()
