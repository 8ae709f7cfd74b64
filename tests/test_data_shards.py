"""Token shards: BOS-separated documents, dtype by vocabulary size, atomic shards, manifest, val split."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from groundup.data.shards import (ShardWriter, document_ids, dtype_for_vocab, is_validation, load_tokenizer,
                                  read_manifest, write_manifest)
from groundup.errors import GroundupError


def test_dtype_follows_vocab_size():
    assert dtype_for_vocab(257) == "uint16"
    assert dtype_for_vocab(65536) == "uint16"  # ids 0..65535 fit
    assert dtype_for_vocab(65537) == "uint32"
    assert dtype_for_vocab(200_000) == "uint32"


def test_byte_tokenizer_documents_start_with_bos():
    tok, info = load_tokenizer("bytes")
    ids = document_ids(tok, "héllo")
    assert ids[0] == tok.bos_id == info.bos_id == 256
    assert bytes(ids[1:]).decode() == "héllo"
    assert info.vocab_size == 257


def test_validation_split_is_deterministic_and_near_the_fraction():
    ids = [f"doc-{i}" for i in range(20_000)]
    val = [i for i in ids if is_validation(i, 0.05)]
    assert val == [i for i in ids if is_validation(i, 0.05)]
    assert 0.04 < len(val) / len(ids) < 0.06
    assert not any(is_validation(i, 0.0) for i in ids[:100])
    # a larger fraction only adds documents
    assert set(val) <= {i for i in ids if is_validation(i, 0.2)}


@pytest.mark.parametrize("dtype,big", [("uint16", 65535), ("uint32", 70_000)])
def test_shard_writer_roundtrip_and_rollover(tmp_path: Path, dtype: str, big: int):
    w = ShardWriter(tmp_path / "train", "00000", dtype, max_tokens=10)
    docs = [[1, 2, 3, big], [1, 5], [1, 7, 8, 9, 10, 11, 12], [1, 4]]
    for d in docs:
        w.add(d)
    shards = w.close()
    # rolls over after the document that reaches 10 tokens: [4 + 2 + 7] then [2]
    assert [s["tokens"] for s in shards] == [13, 2]
    assert [s["documents"] for s in shards] == [3, 1]
    stream = np.concatenate([np.fromfile(tmp_path / s["file"], dtype=np.dtype(dtype).newbyteorder("<"))
                             for s in shards])
    assert stream.tolist() == [t for d in docs for t in d]
    assert not list(tmp_path.rglob("*.tmp"))


def test_shard_writer_rejects_ids_outside_dtype(tmp_path: Path):
    w = ShardWriter(tmp_path / "train", "00000", "uint16")
    with pytest.raises(GroundupError, match="does not fit uint16"):
        w.add([1, 70_000])


def test_aborted_shard_leaves_nothing_half_written(tmp_path: Path):
    w = ShardWriter(tmp_path / "train", "00000", "uint16", max_tokens=4)
    w.add([1, 2, 3, 4])  # complete shard
    w.add([1, 9])  # in progress
    assert (tmp_path / "train" / "00000-0001.bin.tmp").exists()
    w.abort()
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == ["00000-0000.bin"]


def test_manifest_written_and_checked(tmp_path: Path):
    _, info = load_tokenizer("bytes")
    w = ShardWriter(tmp_path / "train", "00000", "uint16")
    w.add([256, 104, 105])
    shards = w.close()
    m = write_manifest(tmp_path, info, "uint16", {"train": shards, "val": []}, [{"file": "x.txt"}], 0.01)
    assert m["tokens"] == 3 and m["documents"] == 1
    assert read_manifest(tmp_path)["splits"]["train"]["shards"][0]["file"] == "train/00000-0000.bin"
    assert json.loads((tmp_path / "manifest.json").read_text())["tokenizer"]["name"] == "bytes"
    # a truncated shard is caught, not read as data
    (tmp_path / "train" / "00000-0000.bin").write_bytes(b"\x00\x01")
    with pytest.raises(GroundupError, match="incomplete"):
        read_manifest(tmp_path)


def test_unknown_tokenizer_is_one_line_error():
    with pytest.raises(GroundupError, match="unknown tokenizer"):
        load_tokenizer("no-such-tokenizer-xyz")


def test_smollm2_tokenizer_from_registry(smollm2_path):
    tok, info = load_tokenizer("smollm2-135m-instruct")
    assert info.vocab_size == 49152 and dtype_for_vocab(info.vocab_size) == "uint16"
    ids = document_ids(tok, "Hello world")
    assert ids[0] == info.bos_id and ids[1:] == tok.encode("Hello world", add_bos=False)
    assert tok.decode(ids[1:]) == "Hello world"
    assert len(info.sha256) == 64


def test_hf_tokenizer_directory(tmp_path: Path, smollm2_path):
    tok, _ = load_tokenizer("smollm2-135m-instruct")
    tok.save(tmp_path / "tok")
    tok2, info2 = load_tokenizer(str(tmp_path / "tok"))
    assert tok2.encode("The quick brown fox", add_bos=False) == tok.encode("The quick brown fox", add_bos=False)
    assert info2.name == "tok" and info2.vocab_size == 49152


def test_groundup_trained_tokenizer_file(tmp_path: Path):
    pytest.importorskip("tiktoken", reason="tiktoken not installed (the trained tokenizer encodes with it)")
    bpe = pytest.importorskip("groundup.tokenizer.bpe", reason="tokenizer training not available")
    text = "the cat sat on the mat. the dog sat on the log. " * 50
    trained = bpe.train([text], 300, workers=1, native=False)
    trained.save(tmp_path / "tok.json")
    tok, info = load_tokenizer(str(tmp_path / "tok.json"))
    assert info.sha256 == trained.digest() and info.vocab_size == trained.vocab_size and info.bos == "<|bos|>"
    ids = document_ids(tok, "the cat sat")
    assert ids[0] == info.bos_id and tok.decode(ids[1:]) == "the cat sat"
    _, info_dir = load_tokenizer(str(tmp_path))  # a directory holding exactly one such file
    assert info_dir.sha256 == info.sha256
