"""Tokenizer tests: token-for-token agreement with llama.cpp on both reference models, round trips,
special-token handling, byte streaming, save/load and Hugging Face directories."""
from __future__ import annotations

import ctypes
import json
import struct
import subprocess
import sys
import unicodedata
from functools import lru_cache
from pathlib import Path

import numpy as np
import pytest

from groundup.errors import GroundupError
from groundup.tokenizer import gpt2_bpe
from groundup.tokenizer.tokenizer import Tokenizer
from tests.conftest import llama_cpp_or_skip

DATA = Path("/work/shared/data")

TEXTS = [
    "", " ", "  ", "\n", "\t", "Hello world",
    "Hello, world! How's it going? I'm fine; we'll see, they've gone, you'd know. IT'S LOUD",
    "naïve café résumé Ångström façade Straße ĳ ﬁ",
    "combining: e\u0301 a\u0308o\u0308u\u0308 \u0915\u094d\u0937 \u05e9\u05c1 Z\u0351\u0352\u0353",
    "日本語のテキストです。中文文本，标点！한국어 텍스트 ｆｕｌｌｗｉｄｔｈ",
    "emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇺🇸 ❤️ 🫠",
    "RTL: مرحبا بالعالم שלום עולם \u200fmark\u200e",
    "def f(x):\n    if x > 0:\n\treturn x ** 2\n    return -x  # comment\n\n\nclass A:\n        pass\n",
    "spaces:     five, then\t\ttabs\n\n\n\nnewlines\r\n crlf   \n  trailing   ",
    "digits 0 12 345 6789 1234567890123 3.14159 -42 1e10 ٣٤٥ ¼ ² 1,000,000 v2.0.1",
    "<|im_end|> <|im_start|>system <end_of_turn> <start_of_turn>user <bos> <eos> <s> </s> <pad> "
    "<unused0> <0x41> [multimodal] <b>bold</b> <table><tr><td>x</td></tr></table> <|endoftext|>",
    "<|im_end|><|im_end|>x<end_of_turn>\n<bos><bos>",
    "nbsp\u00a0em\u2003ideographic\u3000space nel\u0085 zero\u200bwidth",
    "A" * 300, " " * 100, "x" * 50 + "\n" * 40 + "y", " " * 33 + "z" + "\t" * 35,
    "’curly’ “quotes” — dashes … ellipsis «guillemets» ‹›",
    "control chars \x00\x01\x7f\x1b[0m and \ufeff BOM, private \ue000, unassigned \U000e0fff",
    "Kawi (Unicode 15): \U00011f04\U00011f05 and CJK ext \U0002ebf0",
    "''''' 's 't 're 've 'm 'll 'd ' 'S 'T",
]
MODELS = ["smollm2", "gemma3"]

_SCALAR = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}


@lru_cache(maxsize=None)
def gguf_metadata(path: str) -> dict:
    """GGUF key/value metadata as python values. (gguf.GGUFReader takes 10-30 s on these vocabularies.)"""
    with open(path, "rb") as f:
        head = f.read(24)
        assert head[:4] == b"GGUF", path
        n_kv = struct.unpack_from("<Q", head, 16)[0]
        buf = f.read(64 << 20)
    pos = 0

    def value(kind: int):
        nonlocal pos
        if kind == 8:
            (n,) = struct.unpack_from("<Q", buf, pos)
            pos += 8 + n
            return buf[pos - n:pos].decode("utf-8")
        if kind == 9:
            item, n = struct.unpack_from("<IQ", buf, pos)
            pos += 12
            if item in _SCALAR and item != 7:
                arr = np.frombuffer(buf, np.dtype(_SCALAR[item]), n, pos)
                pos += arr.nbytes
                return arr.tolist()
            return [value(item) for _ in range(n)]
        fmt = _SCALAR[kind]
        (v,) = struct.unpack_from(fmt, buf, pos)
        pos += struct.calcsize(fmt)
        return v

    meta = {}
    for _ in range(n_kv):
        key = value(8)
        (kind,) = struct.unpack_from("<I", buf, pos)
        pos += 4
        meta[key] = value(kind)
    return meta


@pytest.fixture(scope="module")
def paths(smollm2_path, gemma3_path) -> dict[str, Path]:
    return {"smollm2": smollm2_path, "gemma3": gemma3_path}


@pytest.fixture(scope="module")
def toks(paths) -> dict[str, Tokenizer]:
    return {name: Tokenizer.from_gguf(gguf_metadata(str(p))) for name, p in paths.items()}


@lru_cache(maxsize=None)
def llama_cpp_loads(path: str) -> str:
    """Load the vocab in a child process first: a llama.cpp built for a newer CPU dies of SIGILL."""
    code = "import sys, llama_cpp; llama_cpp.Llama(model_path=sys.argv[1], vocab_only=True, verbose=False)"
    proc = subprocess.run([sys.executable, "-c", code, path], capture_output=True, text=True, timeout=300)
    if proc.returncode == 0:
        return ""
    why = "SIGILL: built for instructions this CPU lacks (AVX-512?)" if proc.returncode == -4 else proc.stderr[-300:]
    return f"llama-cpp-python cannot load {Path(path).name}: {why}"


_REFERENCE: dict[Path, object] = {}


def reference_vocab(path: Path):
    """A llama.cpp vocab-only model (one per file per module), or skip with the reason it cannot be had."""
    if path not in _REFERENCE:
        llama_cpp = llama_cpp_or_skip()
        problem = llama_cpp_loads(str(path))
        if problem:
            pytest.skip(problem)
        _REFERENCE[path] = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    return _REFERENCE[path]


@pytest.fixture(scope="module", autouse=True)
def _close_reference_vocabs():
    """Free llama.cpp models before interpreter shutdown (their __del__ fails once ctypes is torn down)."""
    yield
    for llm in _REFERENCE.values():
        llm.close()
    _REFERENCE.clear()


@pytest.fixture(scope="module")
def ref(paths):
    """llama.cpp vocab-only models, loaded once."""
    return {name: reference_vocab(p) for name, p in paths.items()}


def prose() -> list[str]:
    files = [DATA / "tinyshakespeare/input.txt", DATA / "llamafactory/wiki_demo.txt",
             DATA / "bpe-reference/german.txt", DATA / "bpe-reference/tinystories_sample.txt"]
    if not all(f.exists() for f in files):
        pytest.skip(f"shared test data missing under {DATA}")
    shakespeare, wiki, *rest = (f.read_text(encoding="utf-8") for f in files)
    return [shakespeare[:6000], shakespeare[500_000:504_000], wiki[:5000], wiki[400_000:405_000], *rest]


# ---- agreement with llama.cpp ---------------------------------------------------------------------
@pytest.mark.reference
@pytest.mark.parametrize("model", MODELS)
def test_encode_matches_llama_cpp(model, toks, ref):
    tok, llm = toks[model], ref[model]
    for text in TEXTS + prose():
        for add in (True, False):
            want = llm.tokenize(text.encode("utf-8"), add_bos=add, special=False)
            got = tok.encode(text, add_bos=add and tok.add_bos)
            assert got == want, (model, add, text[:80])


@pytest.mark.reference
@pytest.mark.parametrize("model", MODELS)
def test_encode_with_specials_matches_llama_cpp(model, toks, ref):
    tok, llm = toks[model], ref[model]
    for text in TEXTS[-12:] + prose()[:1]:
        want = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        assert tok.encode(text, add_bos=False, allow_special=True) == want, (model, text[:80])


@pytest.mark.reference
@pytest.mark.parametrize("model", MODELS)
def test_token_bytes_match_llama_cpp(model, toks, ref):
    tok, llm = toks[model], ref[model]
    ids = sorted({*range(0, tok.vocab_size, max(1, tok.vocab_size // 3000)), *range(300), *tok.special.values()})
    llama_cpp = llama_cpp_or_skip()
    buf = ctypes.create_string_buffer(1024)
    for i in ids:  # llama_token_to_piece(special=True), what llama.cpp streams out for each token
        n = llama_cpp.llama_token_to_piece(llm._model.vocab, i, buf, len(buf), 0, True)
        assert tok.token_bytes(i) == buf.raw[:n], i


@pytest.mark.reference
@pytest.mark.parametrize("model", MODELS)
def test_special_roles_match_llama_cpp(model, toks, ref):
    """Control / user-defined attributes and the end-of-generation set, for every token."""
    tok, llm = toks[model], ref[model]
    llama_cpp = llama_cpp_or_skip()
    vocab = llm._model.vocab
    control_bits = llama_cpp.LLAMA_TOKEN_ATTR_CONTROL | llama_cpp.LLAMA_TOKEN_ATTR_UNKNOWN
    for i in range(tok.vocab_size):
        attr = llama_cpp.llama_vocab_get_attr(vocab, i)
        assert bool(attr & control_bits) == tok.is_special(i), (i, tok.tokens[i], attr)
        if not attr & control_bits:
            assert bool(attr & llama_cpp.LLAMA_TOKEN_ATTR_USER_DEFINED) == (i in tok._user), (i, tok.tokens[i])
    assert {i for i in tok.special.values() if llama_cpp.llama_vocab_is_eog(vocab, i)} | (
        {tok.eos_id} if tok.eos_id is not None else set()) == tok.eos_ids


# ---- properties of our own ------------------------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_round_trip(model, toks):
    tok = toks[model]
    for text in TEXTS + prose():
        assert tok.decode(tok.encode(text, add_bos=False)) == text


def test_model_facts(toks):
    smol, gemma = toks["smollm2"], toks["gemma3"]
    assert (smol.vocab_size, smol.bos_id, smol.eos_id, smol.add_bos) == (49152, 1, 2, False)
    assert smol.eos_ids >= {smol.special["<|im_end|>"], smol.special["<|endoftext|>"]}
    assert smol.chat_template and "<|im_start|>" in smol.chat_template
    assert (gemma.vocab_size, gemma.bos_id, gemma.eos_id, gemma.add_bos) == (262144, 2, 1, True)
    assert gemma.eos_ids >= {1, gemma.special["<end_of_turn>"]}
    assert gemma.chat_template is None
    assert gemma.encode("hi")[0] == 2 and smol.encode("hi")[0] != smol.bos_id


def test_special_tokens_only_when_allowed(toks):
    smol, gemma = toks["smollm2"], toks["gemma3"]
    im_end = smol.special["<|im_end|>"]
    assert smol.encode("<|im_end|>", allow_special=True) == [im_end]
    assert im_end not in smol.encode("<|im_end|>")
    assert smol.encode("a<|im_end|>b", allow_special=True) == [*smol.encode("a"), im_end, *smol.encode("b")]
    eot = gemma.special["<end_of_turn>"]
    assert gemma.encode("<end_of_turn>", add_bos=False, allow_special=True) == [eot]
    plain = gemma.encode("<end_of_turn><bos><start_of_turn>", add_bos=False)
    assert not set(plain) & set(gemma.special.values())
    # user-defined tokens (newline runs, HTML tags) are split out even as plain text, as in llama.cpp
    assert gemma.encode("\n\n", add_bos=False) == [gemma.token_to_id["\n\n"]]


def test_decode_skip_special_and_streaming_bytes(toks):
    for tok in toks.values():
        text = "héllo 😀 日本 \U0002ebf0 \u0915\u094d\u0937"
        ids = tok.encode(text)
        assert tok.decode(ids, skip_special=True) == text
        assert b"".join(tok.token_bytes(i) for i in ids if not tok.is_special(i)) == text.encode("utf-8")
    gemma = toks["gemma3"]  # a rare character falls back to single byte tokens: partial UTF-8 pieces
    pieces = [gemma.token_bytes(i) for i in gemma.encode("\U0002ebf0", add_bos=False)]
    assert len(pieces) == 4 and all(len(p) == 1 for p in pieces)


def test_bpe_heap_path_agrees_with_simple_path(toks):
    ranks = toks["smollm2"]._ranks
    b2u = gpt2_bpe.byte_to_unicode()
    for word in ["a" * 120, "ab" * 70, "-" * 99, "x" + "=" * 80 + "y", "日本語" * 20, " " * 64]:
        printable = "".join(b2u[b] for b in word.encode())
        assert gpt2_bpe.bpe(printable, ranks) == _bpe_simple(printable, ranks)


def _bpe_simple(word: str, ranks: dict) -> list[str]:
    parts = list(word)
    while True:
        cands = [(ranks[p], i) for i, p in enumerate(zip(parts, parts[1:])) if p in ranks]
        if not cands:
            return parts
        i = min(cands)[1]
        parts[i:i + 2] = [parts[i] + parts[i + 1]]


def test_spm_heap_path_agrees_with_simple_path(toks):
    spm = toks["gemma3"]._spm
    for piece in ["▁" + "abcdefghij" * 6, "▁" + "ab" * 30, "▁日本語のテキストです" * 5]:
        assert spm._to_ids(spm._merge_heap(piece)) == _spm_simple(spm, piece)


def _spm_simple(spm, piece: str) -> list[int]:
    symbols = list(piece)
    while True:
        cands = [(spm.scores[spm.token_to_id[a + b]], -i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))
                 if a + b in spm.token_to_id]
        if not cands:
            return spm._to_ids(symbols)
        i = -max(cands)[1]
        symbols[i:i + 2] = [symbols[i] + symbols[i + 1]]


def test_unicode_tables_agree_with_python():
    """Our Unicode 15.1 letter/number classes contain Python's letters/numbers; extras are unassigned there."""
    if unicodedata.unidata_version > "15.1.0":
        pytest.skip(f"Python's Unicode {unicodedata.unidata_version} is newer than llama.cpp's 15.1")
    import re

    # every plane with assigned letters or numbers (4-13 are empty, 15-16 are private use)
    chars = "".join(chr(cp) for cp in [*range(0xD800), *range(0xE000, 0x32400), *range(0xE0000, 0xE0200)])
    for table, first in ((gpt2_bpe._L, "L"), (gpt2_bpe._N, "N")):
        ours = set(re.findall(f"[{table}]", chars))
        python = {ch for ch in chars if unicodedata.category(ch)[0] == first}
        assert python <= ours
        assert {unicodedata.category(ch) for ch in ours - python} <= {"Cn"}


@pytest.mark.slow
def test_gguf_reader_metadata_gives_the_same_tokenizer(smollm2_path, toks):
    """The gguf package's reader (what the weight loader uses) feeds from_gguf the same values."""
    gguf = pytest.importorskip("gguf")
    reader = gguf.GGUFReader(str(smollm2_path))
    meta = {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.")}
    tok, ours = Tokenizer.from_gguf(meta), toks["smollm2"]
    assert (tok.tokens, tok.merges, tok.eos_ids, tok.chat_template) == (ours.tokens, ours.merges, ours.eos_ids,
                                                                       ours.chat_template)
    assert tok.encode(TEXTS[6]) == ours.encode(TEXTS[6])


# ---- save / load / Hugging Face directories -------------------------------------------------------
@pytest.mark.parametrize("model", MODELS)
def test_save_load_round_trip(model, toks, tmp_path):
    tok = toks[model]
    tok.save(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["model"]["type"] == "BPE" and len(data["model"]["vocab"]) == tok.vocab_size
    back = Tokenizer.load(tmp_path)
    for attr in ("vocab_size", "bos_id", "eos_id", "eos_ids", "add_bos", "special", "chat_template"):
        assert getattr(back, attr) == getattr(tok, attr), attr
    for text in TEXTS + prose()[:2]:
        assert back.encode(text) == tok.encode(text)
        assert back.encode(text, allow_special=True) == tok.encode(text, allow_special=True)
    assert not list(tmp_path.glob("*.tmp"))


def test_from_plain_hf_dir(toks, tmp_path):
    """A tokenizer.json in Hugging Face's own layout (no groundup section) encodes the same."""
    smol = toks["smollm2"]
    smol.save(tmp_path)
    data = json.loads((tmp_path / "tokenizer.json").read_text(encoding="utf-8"))
    del data["groundup"]
    data["model"]["merges"] = [m.split(" ", 1) for m in data["model"]["merges"]]  # newer HF style
    (tmp_path / "tokenizer.json").write_text(json.dumps(data, ensure_ascii=False), encoding="utf-8")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["eos_token"] = {"content": "<|im_end|>", "special": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    hf = Tokenizer.from_hf_dir(tmp_path)
    assert (hf.pre, hf.bos_id, hf.eos_id, hf.special) == ("smollm", smol.bos_id, smol.eos_id, smol.special)
    for text in TEXTS + prose()[:2]:
        assert hf.encode(text) == smol.encode(text)


def test_bad_input_is_one_clear_error(toks, tmp_path):
    smol = toks["smollm2"]
    with pytest.raises(GroundupError, match="tokenizer"):
        Tokenizer.from_gguf({})
    with pytest.raises(GroundupError, match="not supported"):
        Tokenizer.from_gguf({"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.pre": "nonesuch",
                             "tokenizer.ggml.tokens": ["a"], "tokenizer.ggml.merges": []})
    with pytest.raises(GroundupError, match="str"):
        smol.encode(b"bytes")  # type: ignore[arg-type]
    with pytest.raises(GroundupError, match="outside the vocabulary"):
        smol.decode([smol.vocab_size])
    with pytest.raises(GroundupError, match="tokenizer.json"):
        Tokenizer.from_hf_dir(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(GroundupError, match="not valid JSON"):
        Tokenizer.from_hf_dir(tmp_path)
    assert smol.encode("x\ud800y") == smol.encode("x\ufffdy")  # lone surrogates are replaced
