"""Byte-level BPE training (bpe.py, bpe_merge.c) and the trained tokenizer (trained.py), CLI included."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from groundup.cli import main
from groundup.errors import GroundupError
from groundup.tokenizer import bpe, bpe_native
from groundup.tokenizer.trained import TrainedTokenizer

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
REF = SHARED / "bpe-reference"

VARIED = [
    "Hello   world\n\n\n  tabs\t\there  's 'S 'LL I'M 123456789 x²³ ½ ٣٤٥ \r\n\r\n end  ",
    "日本語のテキストと中文和한국어 😀👍🏽 naïve café Ελληνικά русский עברית",
    "def f(x):\n    return x**2  # comment\n\n\nclass A:\n\tpass\n",
    "ſ 'ſ K Ω \u00a0\u2003 \u200b zero\u200dwidth \x00\x1c\x7f",
    "<|bos|> <|user_start|>hi<|user_end|> <|endoftext|> <|not_special|>",
    "   leading and trailing spaces   ",
    "",
]


def shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"shared test data {path} is missing")
    return path


def needs_c() -> None:
    if not bpe_native.available():
        pytest.skip(f"C merge loop not available: {bpe_native.why_not()}")


@pytest.fixture(scope="module")
def stories_text() -> str:
    return shared(SHARED / "tinystories" / "tinystories-v1-valid-head.txt").read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def tok(stories_text: str) -> TrainedTokenizer:
    return bpe.train([stories_text], 2048, workers=1)


def fixture_texts() -> list[str]:
    return [shared(REF / name).read_text(encoding="utf-8")
            for name in ("address.txt", "german.txt", "tinystories_sample.txt")]


# ---- training --------------------------------------------------------------------------------

@pytest.mark.parametrize("native", [False, True], ids=["python", "c"])
def test_reference_merges(native: bool) -> None:
    """cs336's reference: GPT-2 split, vocab 500, <|endoftext|>, ties to the greater byte pair."""
    if native:
        needs_c()
    text = shared(REF / "corpus.en").read_text(encoding="utf-8")
    tok = bpe.train([text], 500, pattern="gpt2", special_tokens=["<|endoftext|>"], native=native)
    expected = (REF / "train-bpe-reference-merges.txt").read_text(encoding="utf-8").splitlines()
    assert tok.train_stats.merge_loop == ("C" if native else "Python")
    assert len(tok.merges) == 243
    assert tok.printable_merges() == expected
    ref_vocab = json.loads((REF / "train-bpe-reference-vocab.json").read_text(encoding="utf-8"))
    ours = tok.printable_tokens()
    assert tok.vocab_size == len(ref_vocab) == 500
    assert ref_vocab[ours[0]] == 0 == tok.special_ids["<|endoftext|>"]
    # the reference numbers the 256 bytes in GPT-2's printable order, we in byte order; same set
    assert {ref_vocab[t] for t in ours[1:257]} == set(range(1, 257))
    assert all(ref_vocab[t] == i for i, t in enumerate(ours) if i >= 257)


def test_c_and_python_loops_agree_on_real_text(stories_text: str) -> None:
    needs_c()
    counts, _ = bpe.count_chunks([stories_text[:400_000]], bpe.GPT4_PATTERN, [])
    c_merges, _ = bpe.learn_merges(counts, 1500, native=True)
    py_merges, _ = bpe.learn_merges(counts, 1500, native=False)
    assert len(c_merges) == 1500 - 256
    assert c_merges == py_merges


def test_c_and_python_loops_agree_on_random_corpora() -> None:
    """Tiny alphabets make many ties and long runs (aaaa...), the tricky cases of the merge loop."""
    needs_c()
    for seed in range(300):
        rng = random.Random(seed)
        alphabet = b"abc"[:rng.randint(1, 3)]
        counts: dict[bytes, int] = {}
        for _ in range(rng.randint(1, 8)):
            word = bytes(rng.choice(alphabet) for _ in range(rng.randint(2, 14)))
            counts[word] = counts.get(word, 0) + rng.randint(1, 20)
        n = 256 + rng.randint(1, 60)
        assert bpe.learn_merges(counts, n, native=True)[0] == bpe.learn_merges(counts, n, native=False)[0], seed


def test_merges_follow_counts() -> None:
    """Most frequent pair first; the tie between (a,b) and (c,d) goes to the greater bytes (c,d)."""
    merges, _ = bpe.learn_merges({b"ab": 5, b"cd": 5, b"ef": 9, b"xyz": 1}, 259)
    assert merges == [(b"e", b"f"), (b"c", b"d"), (b"a", b"b")]


def test_specials_are_cut_out_of_training_text() -> None:
    text = "<|bos|>ab<|bos|>ab<|bos|>ab<|bos|>" * 50
    counts, _ = bpe.count_chunks([text], bpe.GPT4_PATTERN, ["<|bos|>"])
    assert counts == {b"ab": 150}


@pytest.mark.parametrize("pattern", ["gpt4", "gpt2"])
def test_file_pieces_split_like_the_whole_text(pattern: str, tmp_path: Path) -> None:
    text = shared(SHARED / "tinyshakespeare" / "input.txt").read_text(encoding="utf-8")[:150_000]
    text += "a\n  b\n\n c \n" * 300 + "x\r\n y\r\nz" * 300 + "long line without newlines " * 2_000
    path = tmp_path / "t.txt"
    path.write_text(text, encoding="utf-8")
    pieces = list(bpe.read_files([path], block_chars=3_000))
    assert "".join(pieces) == text and len(pieces) > 40
    regex_src = bpe.PATTERNS[pattern]
    whole, n = bpe.count_chunks([text], regex_src, [], block_chars=10 ** 9)
    cut, m = bpe.count_chunks(pieces, regex_src, [], block_chars=3_000, workers=1)
    assert n == m == len(text)
    assert cut == whole


def test_each_text_is_a_document_of_its_own() -> None:
    counts, n = bpe.count_chunks(["ab", "cd", "ab"], bpe.GPT4_PATTERN, [])
    assert counts == {b"ab": 2, b"cd": 1} and n == 6


def test_parallel_counting_equals_serial(stories_text: str) -> None:
    text = stories_text[:600_000]
    serial, _ = bpe.count_chunks([text], bpe.GPT4_PATTERN, ["<|bos|>"], workers=1, block_chars=100_000)
    parallel, _ = bpe.count_chunks([text], bpe.GPT4_PATTERN, ["<|bos|>"], workers=2, block_chars=100_000)
    assert parallel == serial


def test_character_budget_and_files(tmp_path: Path, stories_text: str) -> None:
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text(stories_text[:30_000], encoding="utf-8")
    b.write_text(stories_text[30_000:60_000], encoding="utf-8")
    tok = bpe.train_files([a, b], 300, max_chars=45_000)
    assert tok.train_stats.chars == 45_000
    same = bpe.train(iter([stories_text[:45_000]]), 300)
    assert tok.merges == same.merges


def test_training_errors(tmp_path: Path) -> None:
    with pytest.raises(GroundupError, match="too small"):
        bpe.train(["abc"], 260)
    with pytest.raises(GroundupError, match="empty"):
        bpe.train([""], 300)
    with pytest.raises(GroundupError, match="does not exist"):
        bpe.train_files([tmp_path / "nope.txt"], 300)
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(GroundupError, match="not UTF-8"):
        bpe.train_files([bad], 300)


# ---- the trained tokenizer -------------------------------------------------------------------

def test_round_trip_on_fixtures(tok: TrainedTokenizer) -> None:
    for text in fixture_texts() + VARIED:
        ids = tok.encode(text)
        assert tok.decode(ids) == text
        assert all(0 <= i < tok.vocab_size for i in ids)
    stories = fixture_texts()[2]
    assert len(stories.encode()) / len(tok.encode(stories)) > 3.0  # a 2k vocab on stories compresses
    for bad in (-1, tok.vocab_size):
        with pytest.raises(GroundupError, match="outside the vocabulary"):
            tok.decode([5, bad])


def test_tiktoken_encoding_equals_merge_by_merge_reference(tok: TrainedTokenizer, stories_text: str) -> None:
    texts = fixture_texts() + VARIED + [stories_text[-20_000:]]
    for text in texts:
        assert tok.encode(text) == tok.reference_encode(text)
        assert tok.encode(text, allow_special=True) == tok.reference_encode(text, allow_special=True)


def test_user_text_never_yields_special_tokens(tok: TrainedTokenizer) -> None:
    text = "<|bos|>Hi<|user_start|> there <|assistant_end|>"
    plain = tok.encode(text)
    assert not any(tok.is_special(i) for i in plain)
    assert tok.decode(plain) == text
    allowed = tok.encode(text, allow_special=True)
    ids = tok.special_ids
    assert [i for i in allowed if tok.is_special(i)] == [ids["<|bos|>"], ids["<|user_start|>"], ids["<|assistant_end|>"]]
    assert tok.decode(allowed) == text
    assert tok.decode(allowed, skip_special=True) == "Hi there "
    assert tok.encode("hi", add_bos=True)[0] == tok.bos_id == 0


def test_save_load_round_trip(tok: TrainedTokenizer, tmp_path: Path) -> None:
    path = tok.save(tmp_path / "tok.json")
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]  # no temp file left behind
    text = path.read_text(encoding="utf-8")
    data = json.loads(text)
    assert data["format"] == "groundup-bpe" and data["vocab_size"] == tok.vocab_size
    assert data["merges"][:len(tok.merges)] == tok.printable_merges()
    assert '\n  "Ġ t",\n' in text or '\n  "h e",\n' in text  # one readable merge per line
    back = TrainedTokenizer.load(path)
    assert back.merges == tok.merges and back.special_tokens == tok.special_tokens
    assert back.pattern == tok.pattern and back.digest() == tok.digest()
    sample = fixture_texts()[0]
    assert back.encode(sample) == tok.encode(sample)


def test_load_errors(tmp_path: Path) -> None:
    with pytest.raises(GroundupError, match="does not exist"):
        TrainedTokenizer.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(GroundupError, match="not valid JSON"):
        TrainedTokenizer.load(bad)
    bad.write_text(json.dumps({"format": "something-else"}), encoding="utf-8")
    with pytest.raises(GroundupError, match="not a groundup tokenizer"):
        TrainedTokenizer.load(bad)
    bad.write_text(json.dumps({"format": "groundup-bpe", "version": 1, "pattern": bpe.GPT4_PATTERN,
                               "special_tokens": [], "merges": ["Ġt he"]}), encoding="utf-8")
    with pytest.raises(GroundupError, match="no earlier merge"):
        TrainedTokenizer.load(bad)


def test_hf_tokenizer_json_encodes_identically(tok: TrainedTokenizer, tmp_path: Path, stories_text: str) -> None:
    tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers not installed")
    tok.save_hf(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    assert hf.get_vocab_size() == tok.vocab_size
    for text in fixture_texts() + VARIED + [stories_text[:50_000]]:
        ids = tok.encode(text, allow_special=True)  # HF always turns special-token text into its id
        assert hf.encode(text, add_special_tokens=False).ids == ids
        assert hf.decode(ids, skip_special_tokens=False) == text


def test_gguf_metadata_loads_in_the_engine_tokenizer(tok: TrainedTokenizer, stories_text: str) -> None:
    from groundup.tokenizer.tokenizer import CONTROL, NORMAL, Tokenizer

    meta = tok.gguf_metadata()
    assert meta["tokenizer.ggml.model"] == "gpt2" and meta["tokenizer.ggml.pre"] == "llama-bpe"
    assert len(meta["tokenizer.ggml.tokens"]) == len(meta["tokenizer.ggml.token_type"]) == tok.vocab_size
    assert meta["tokenizer.ggml.token_type"][0] == CONTROL and meta["tokenizer.ggml.token_type"][-1] == NORMAL
    assert meta["tokenizer.ggml.merges"] == tok.printable_merges()
    assert meta["tokenizer.ggml.bos_token_id"] == tok.bos_id
    assert meta["tokenizer.ggml.eot_token_id"] == tok.special_ids["<|assistant_end|>"]
    engine_tok = Tokenizer.from_gguf(meta)  # groundup's llama.cpp-exact BPE
    for text in fixture_texts() + VARIED[:4] + [stories_text[:30_000]]:
        assert engine_tok.encode(text, add_bos=False) == tok.encode(text)
    chat = "<|user_start|>hi<|user_end|>"
    assert engine_tok.encode(chat, add_bos=False, allow_special=True) == tok.encode(chat, allow_special=True)
    assert tok.eot_id in engine_tok.eos_ids


@pytest.mark.reference
def test_gguf_metadata_tokenizes_like_llama_cpp(tok: TrainedTokenizer, tmp_path: Path) -> None:
    """A vocabulary-only GGUF with our tokenizer.ggml.* keys, loaded by llama.cpp itself."""
    llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python not installed (make install-ref)")
    import gguf

    path = tmp_path / "vocab.gguf"
    writer = gguf.GGUFWriter(str(path), arch="llama")
    writer.add_context_length(256)  # the few hyperparameters llama.cpp reads even for vocab_only
    writer.add_embedding_length(64)
    writer.add_block_count(1)
    writer.add_feed_forward_length(128)
    writer.add_head_count(1)
    writer.add_layer_norm_rms_eps(1e-5)
    for key, value in tok.gguf_metadata().items():
        if isinstance(value, bool):
            writer.add_bool(key, value)
        elif isinstance(value, int):
            writer.add_uint32(key, value)
        elif isinstance(value, str):
            writer.add_string(key, value)
        else:
            writer.add_array(key, value)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for text in fixture_texts() + VARIED[:6]:
        assert llm.tokenize(text.encode(), add_bos=False, special=False) == tok.encode(text)
    chat = "<|user_start|>hi<|user_end|>"
    assert llm.tokenize(chat.encode(), add_bos=False, special=True) == tok.encode(chat, allow_special=True)
    assert llm.token_bos() == tok.bos_id


def test_gpt2_pattern_exports(stories_text: str, tmp_path: Path) -> None:
    tokenizers = pytest.importorskip("tokenizers", reason="HF tokenizers not installed")
    from groundup.tokenizer.tokenizer import Tokenizer

    tok = bpe.train([stories_text[:200_000]], 600, pattern="gpt2", special_tokens=["<|endoftext|>"])
    assert tok.gguf_metadata()["tokenizer.ggml.pre"] == "gpt2"
    tok.save_hf(tmp_path)
    hf = tokenizers.Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    engine_tok = Tokenizer.from_gguf(tok.gguf_metadata())
    for text in fixture_texts() + VARIED[:4]:
        ids = tok.encode(text)
        assert ids == tok.reference_encode(text)
        assert engine_tok.encode(text, add_bos=False) == ids
        assert hf.encode(text, add_special_tokens=False).ids == tok.encode(text, allow_special=True)


# ---- comparison and CLI ----------------------------------------------------------------------

def test_gpt2_reference_tokenizer() -> None:
    from groundup.tokenizer.compare import gpt2

    shared(REF / "gpt2_vocab.json")
    enc = gpt2()
    assert enc.vocab_size == 50257
    assert enc.encode("Hello world") == [15496, 995]  # GPT-2's published ids
    text = fixture_texts()[0]
    assert b"".join(enc.token_bytes(i) for i in enc.encode(text)) == text.encode()


def test_cli_train_encode_decode_show_compare(tmp_path: Path, stories_text: str, capsys) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(stories_text[:100_000], encoding="utf-8")
    out = tmp_path / "mini.json"
    assert main(["tokenizer", "train", str(corpus), "--vocab-size", "400", "-o", str(out),
                 "--hf-dir", str(tmp_path / "hf")]) == 0
    printed = capsys.readouterr().out
    assert "trained 400 tokens" in printed and "saved" in printed
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    tok = TrainedTokenizer.load(out)

    assert main(["tokenizer", "encode", "Once upon a time <|bos|>", "-t", str(out)]) == 0
    ids = [int(x) for x in capsys.readouterr().out.split()]
    assert ids == tok.encode("Once upon a time <|bos|>") and tok.bos_id not in ids
    assert main(["tokenizer", "encode", "<|bos|>Once", "-t", str(out), "--allow-special"]) == 0
    assert capsys.readouterr().out.split()[0] == str(tok.bos_id)

    assert main(["tokenizer", "decode", *map(str, ids), "-t", str(out)]) == 0
    assert capsys.readouterr().out == "Once upon a time <|bos|>\n"

    assert main(["tokenizer", "show", "Once upon a time, Lily 😀", "-t", str(out)]) == 0
    shown = capsys.readouterr().out
    assert "Once upon a time, Lily 😀" in shown.replace("\n", "", 1) or "Lily" in shown
    assert " ".join(map(str, tok.encode("Once upon a time, Lily 😀"))) in shown

    sample = shared(REF / "tinystories_sample.txt")
    assert main(["tokenizer", "compare", str(sample), "-t", str(out)]) == 0
    table = capsys.readouterr().out
    assert "mini" in table and "gpt2" in table and "smollm2" in table
    n = len(tok.encode(sample.read_text(encoding="utf-8")))
    assert f"{n:,}" in table


def test_cli_errors_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["tokenizer", "encode", "hi", "-t", str(tmp_path / "none.json")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1
    assert main(["tokenizer", "train", str(tmp_path / "none.txt")]) == 1
    assert "does not exist" in capsys.readouterr().err
