"""SQLite cache of evaluation answers: an interrupted run resumes, a rerun is free.

One row per (model identity, request): the request is stored as canonical JSON
(its kind and every field, which include the rendered prompt, so few-shot
count, chat template and generation settings are all part of the key) with
the task and item it came from, for inspection. Answers are committed in
batches as they arrive, so Ctrl-C loses at most the batch in flight. WAL mode
lets a report read while a run writes.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
from dataclasses import asdict
from pathlib import Path


def default_path() -> Path:
    from groundup.registry import cache_dir

    return cache_dir() / "eval" / "cache.sqlite"


def request_key(model_id: str, request) -> str:
    body = json.dumps({"kind": type(request).__name__, **asdict(request)}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(f"{model_id}\n{body}".encode()).hexdigest()


class AnswerCache:
    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path else default_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, model TEXT, task TEXT, "
                        "item TEXT, request TEXT, answer TEXT, created REAL DEFAULT (unixepoch('subsec')))")
        self.db.commit()

    def get_many(self, keys: list[str]) -> dict[str, object]:
        found: dict[str, object] = {}
        for s in range(0, len(keys), 500):
            part = keys[s:s + 500]
            q = f"SELECT key, answer FROM answers WHERE key IN ({','.join('?' * len(part))})"
            for k, a in self.db.execute(q, part):
                found[k] = json.loads(a)
        return found

    def put_many(self, rows: list[tuple[str, str, str, str, object, object]]) -> None:
        """rows of (key, model, task, item, request, answer), committed together."""
        with self.db:
            self.db.executemany(
                "INSERT OR REPLACE INTO answers (key, model, task, item, request, answer) VALUES (?,?,?,?,?,?)",
                [(k, m, t, i, json.dumps(asdict(r), ensure_ascii=False), json.dumps(a)) for k, m, t, i, r, a in rows])

    def count(self, model_id: str | None = None) -> int:
        if model_id is None:
            return self.db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]
        return self.db.execute("SELECT COUNT(*) FROM answers WHERE model=?", (model_id,)).fetchone()[0]

    def close(self) -> None:
        self.db.close()

