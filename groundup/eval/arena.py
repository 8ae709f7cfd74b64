"""The Arena's battles: the record, JSONL files of them, the SQLite vote store, and `groundup eval arena`.

A battle is one prompt answered by two anonymous models (side A and side B) and one vote. The
web chat's Arena tab (server/arena_api.py) stores each vote as a row of a SQLite database
(default `<groundup cache>/arena.sqlite`; WAL journal, one INSERT per vote, the battle id as
primary key so a battle is counted once even with several servers on one file).

JSONL of battles: one JSON object per line with at least

    {"model_a": "llama-3", "model_b": "smollm2", "winner": "model_a"}

where winner is "model_a", "model_b", "tie" or "tie (bothbad)" (Chatbot Arena's names; "A", "B",
"bad" / "both_bad" are accepted too). Other keys are ignored; "id", "prompt", "answer_a",
"answer_b" and "tstamp" are kept. Blank lines are skipped; anything else that is not a battle
stops the read with an error naming the file and line. A file holding one JSON array of such
objects (Chatbot Arena's published battle files) is read as well.

`groundup eval arena [--battles FILE]` rates the battles of FILE (a JSONL file or a vote store;
default: the web chat's vote store) with ratings.py and prints the leaderboard; `--json` and
`--png` also write it to files (atomically).

Only the standard library is imported at the top, so the CLI can add these arguments cheaply.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sqlite3
import tempfile
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from pathlib import Path

from groundup.errors import GroundupError

WINNER_ALIASES = {"model_a": "model_a", "a": "model_a", "model_b": "model_b", "b": "model_b", "tie": "tie",
                  "tie (bothbad)": "tie (bothbad)", "bad": "tie (bothbad)", "both_bad": "tie (bothbad)",
                  "bothbad": "tie (bothbad)", "both bad": "tie (bothbad)"}
SQLITE_MAGIC = b"SQLite format 3\x00"
SCHEMA = """
CREATE TABLE IF NOT EXISTS votes (
    id       TEXT PRIMARY KEY,
    model_a  TEXT NOT NULL,
    model_b  TEXT NOT NULL,
    winner   TEXT NOT NULL CHECK (winner IN ('model_a', 'model_b', 'tie', 'tie (bothbad)')),
    prompt   TEXT,
    answer_a TEXT,
    answer_b TEXT,
    tstamp   REAL NOT NULL
)"""


@dataclass(frozen=True)
class Battle:
    model_a: str
    model_b: str
    winner: str  # "model_a", "model_b", "tie" or "tie (bothbad)"
    id: str | None = None
    prompt: str | None = None
    answer_a: str | None = None
    answer_b: str | None = None
    tstamp: float | None = None


def normalise_winner(value: object) -> str:
    """A winner as written in a file or a vote ("A", "bad", ...) -> its canonical name."""
    key = value.strip().lower() if isinstance(value, str) else None
    if key not in WINNER_ALIASES:
        raise GroundupError(f"winner {value!r} is not one of model_a, model_b, tie, tie (bothbad) "
                            f"(or A, B, bad)")
    return WINNER_ALIASES[key]


def battle_from_dict(d: object) -> Battle:
    if not isinstance(d, dict):
        raise GroundupError(f"expected a JSON object, got {type(d).__name__}")
    for key in ("model_a", "model_b", "winner"):
        if key not in d:
            raise GroundupError(f"missing key {key!r} (a battle needs model_a, model_b and winner)")
    a, b = d["model_a"], d["model_b"]
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        raise GroundupError("model_a and model_b must be non-empty strings")
    if a == b:
        raise GroundupError(f"model_a and model_b are both {a!r}; a battle needs two different models")
    tstamp = d.get("tstamp")
    return Battle(a, b, normalise_winner(d["winner"]), _opt_str(d.get("id")), _opt_str(d.get("prompt")),
                  _opt_str(d.get("answer_a")), _opt_str(d.get("answer_b")),
                  float(tstamp) if isinstance(tstamp, (int, float)) else None)


def _opt_str(v: object) -> str | None:
    return None if v is None else str(v)


def read_jsonl(path: str | Path) -> list[Battle]:
    """The battles of a JSONL file, in file order; a bad line raises GroundupError naming it.

    A file that is one JSON array of battles (Chatbot Arena's published `clean_battle_*.json`) is
    read too; an error then names the item.
    """
    path = Path(path)
    battles = []
    try:
        with open(path, encoding="utf-8") as f:
            head = f.read(4096).lstrip()
            f.seek(0)
            if head.startswith("["):
                return _read_json_array(path, f.read())
            for lineno, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    battles.append(battle_from_dict(json.loads(line)))
                except json.JSONDecodeError as e:
                    raise GroundupError(f"{path}:{lineno}: not valid JSON ({e.msg}); each line must be one "
                                        f'battle like {{"model_a": ..., "model_b": ..., "winner": "model_a"}}') from None
                except GroundupError as e:
                    raise GroundupError(f"{path}:{lineno}: {e}") from None
    except UnicodeDecodeError:
        raise GroundupError(f"{path}: not UTF-8 text; expected a JSONL file of battles") from None
    except OSError as e:
        raise GroundupError(f"cannot read battles from {path}: {e.strerror or e}") from None
    return battles


def _read_json_array(path: Path, text: str) -> list[Battle]:
    try:
        items = json.loads(text)
    except json.JSONDecodeError as e:
        raise GroundupError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); expected a JSON array of battles "
                            "or one battle object per line") from None
    battles = []
    for i, item in enumerate(items if isinstance(items, list) else [items], 1):
        try:
            battles.append(battle_from_dict(item))
        except GroundupError as e:
            raise GroundupError(f"{path}: battle {i} of the array: {e}") from None
    return battles


def default_db_path() -> Path:
    """Where the web chat keeps votes: <groundup cache>/arena.sqlite (see registry.cache_dir)."""
    from groundup.registry import cache_dir

    return cache_dir() / "arena.sqlite"


class VoteStore:
    """Votes in a SQLite file. Each call opens its own connection, so any thread may use it."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=10.0)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(SCHEMA)
        return conn

    def add(self, battle: Battle) -> bool:
        """Store one vote atomically; False (nothing written) when this battle id already has one."""
        if battle.id is None:
            raise ValueError("a stored battle needs an id")
        with closing(self._connect()) as conn:
            try:
                with conn:  # one transaction: committed whole or rolled back
                    conn.execute("INSERT INTO votes (id, model_a, model_b, winner, prompt, answer_a, answer_b, tstamp)"
                                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                                 (battle.id, battle.model_a, battle.model_b, battle.winner, battle.prompt,
                                  battle.answer_a, battle.answer_b, battle.tstamp or time.time()))
            except sqlite3.IntegrityError:
                return False
        return True

    def battles(self) -> list[Battle]:
        """All votes, oldest first (an absent file holds none)."""
        if not self.path.exists():
            return []
        try:
            with closing(self._connect()) as conn:
                rows = conn.execute("SELECT model_a, model_b, winner, id, prompt, answer_a, answer_b, tstamp "
                                    "FROM votes ORDER BY tstamp, rowid").fetchall()
        except sqlite3.DatabaseError as e:
            raise GroundupError(f"{self.path} is not a readable arena vote store ({e})") from None
        return [Battle(*r) for r in rows]


def read_battles(path: str | Path) -> list[Battle]:
    """Battles from a vote store (SQLite) or a JSONL file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise GroundupError(f"no battles file at {path}; give --battles FILE (JSONL) or vote in the web chat's "
                            "Arena tab first")
    with open(path, "rb") as f:
        is_sqlite = f.read(len(SQLITE_MAGIC)) == SQLITE_MAGIC
    return VoteStore(path).battles() if is_sqlite else read_jsonl(path)


# -- groundup eval arena --------------------------------------------------------------------------
def add_arena_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--battles", default=None, metavar="FILE",
                   help="JSONL of battles (model_a, model_b, winner) or an arena vote store "
                        "(default: the web chat's, <groundup cache>/arena.sqlite)")
    p.add_argument("--anchor", default=None, metavar="MODEL",
                   help="model whose rating is fixed at --anchor-rating (default: the mean is)")
    p.add_argument("--anchor-rating", type=float, default=1000.0)
    p.add_argument("--bootstrap", type=int, default=1000, help="resampling rounds for the 95%% intervals (0 = none)")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resampling")
    p.add_argument("--json", default=None, metavar="OUT", help="also write the leaderboard as JSON")
    p.add_argument("--png", default=None, metavar="OUT", help="also plot ratings with their intervals")


def arena_command(args: argparse.Namespace) -> int:
    from groundup.eval.ratings import leaderboard, mle_is_finite

    if args.bootstrap < 0:
        raise GroundupError(f"--bootstrap must be 0 or more (got {args.bootstrap})")
    source = Path(args.battles).expanduser() if args.battles else default_db_path()
    battles = read_battles(source)
    rows = leaderboard(battles, anchor=args.anchor, anchor_rating=args.anchor_rating,
                       bootstrap=args.bootstrap, seed=args.seed)
    _print_table(rows, source, len(battles), args)
    if not mle_is_finite(battles):
        print("note: some models won (or lost) against every model they met, directly or through others, so their "
              "Bradley-Terry ratings are only 'far apart' (the maximum likelihood is at infinity); more battles "
              "settle them")
    if args.json:
        report = {"battles": len(battles), "source": str(source), "finite": mle_is_finite(battles),
                  "anchor": args.anchor,
                  "anchor_rating": args.anchor_rating, "bootstrap": args.bootstrap, "seed": args.seed,
                  "models": [{k: _finite(v) for k, v in asdict(r).items()} for r in rows]}
        _atomic_write(Path(args.json), (json.dumps(report, indent=2) + "\n").encode())
        print(f"wrote {args.json}")
    if args.png:
        _atomic_write(Path(args.png), _plot(rows, len(battles), args.bootstrap))
        print(f"wrote {args.png}")
    return 0


def _finite(v: object) -> object:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _print_table(rows: list, source: Path, n: int, args: argparse.Namespace) -> None:
    from rich.console import Console
    from rich.table import Table

    anchor = f"{args.anchor} = {args.anchor_rating:g}" if args.anchor else f"mean = {args.anchor_rating:g}"
    table = Table(title=f"arena leaderboard: {n} battles from {source}",
                  caption=f"Bradley-Terry MLE in Elo points ({anchor}); 95% CI from {args.bootstrap} bootstrap "
                          f"rounds (seed {args.seed}); Elo: online, K=4, in battle order; ties include both-bad")
    for col in ("rank", "model", "rating", "95% CI", "Elo", "battles", "wins", "ties", "losses"):
        table.add_column(col, justify="left" if col == "model" else "right", no_wrap=col != "model")
    for i, r in enumerate(rows, 1):
        ci = "-" if math.isnan(r.ci_low) else f"{r.ci_low - r.rating:+.0f}/{r.ci_high - r.rating:+.0f}"
        table.add_row(str(i), r.model, f"{r.rating:.1f}", ci, f"{r.elo:.1f}", str(r.battles), str(r.wins),
                      str(r.ties), str(r.losses))
    Console().print(table)


def _plot(rows: list, n: int, rounds: int) -> bytes:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(max(4.0, 0.8 * len(rows) + 2), 4.5))
    x = list(range(len(rows)))
    y = [r.rating for r in rows]
    lo = [0.0 if math.isnan(r.ci_low) else r.rating - r.ci_low for r in rows]
    hi = [0.0 if math.isnan(r.ci_high) else r.ci_high - r.rating for r in rows]
    ax.errorbar(x, y, yerr=[lo, hi], fmt="o", capsize=4, label="Bradley-Terry (95% bootstrap CI)")
    ax.plot(x, [r.elo for r in rows], "x", color="tab:red", label="online Elo (K=4)")
    ax.set_xticks(x, [r.model for r in rows], rotation=30, ha="right")
    ax.set_ylabel("rating (Elo points)")
    ax.set_title(f"arena: {n} battles, {rounds} bootstrap rounds")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize="small")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120)
    plt.close(fig)
    return buf.getvalue()


def _atomic_write(path: Path, data: bytes) -> None:
    path = path.expanduser()
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
        raise GroundupError(f"cannot write {path}: {e.strerror or e}") from None
