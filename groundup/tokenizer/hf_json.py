"""tokenizer.json / tokenizer_config.json: read Hugging Face tokenizer directories, write our own.

`write` produces Hugging Face's layout (a BPE model with vocab and merges, added_tokens, the
pre-tokenizer, the decoder) plus a "groundup" section holding what llama.cpp's behaviour needs and
HF's format cannot say (GGUF token types, SentencePiece scores, the llama.cpp pre-tokenizer name).
`read` takes either: with the groundup section it rebuilds the tokenizer exactly; without it, it maps
HF's byte-level pre-tokenizers to llama.cpp names and SentencePiece-converted BPE (▁ and <0xXX>
byte fallback) to score merging, with scores from the merge order. Writes are atomic; never pickle.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from groundup.errors import GroundupError
from groundup.tokenizer import gpt2_bpe
from groundup.tokenizer.spm import SPACE
from groundup.tokenizer.tokenizer import BYTE, CONTROL, NORMAL, UNUSED, USER_DEFINED

if TYPE_CHECKING:
    from groundup.tokenizer.tokenizer import Tokenizer

_BYTE_LEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_LLAMA3_REGEX = ("(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
                 "|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")


def _split_then_bytes(regex: str) -> dict:
    return {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False},
        {**_BYTE_LEVEL, "use_regex": False}]}


_HF_PRE = {
    "gpt2": _BYTE_LEVEL,
    "digits": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTE_LEVEL]},
    "llama3": _split_then_bytes(_LLAMA3_REGEX),
    "qwen2": _split_then_bytes(_LLAMA3_REGEX.replace("{1,3}", "")),
}


def _hf_pre_name(pre_tokenizer: dict | None) -> str | None:
    """Map a HF byte-level pre_tokenizer to a llama.cpp pre name; None if it is not byte-level."""
    steps = (pre_tokenizer or {}).get("pretokenizers") or ([pre_tokenizer] if pre_tokenizer else [])
    kinds = [s.get("type") for s in steps]
    if "ByteLevel" not in kinds:
        return None
    if "Digits" in kinds and any(s.get("individual_digits") for s in steps):
        return "smollm"
    split = next((s for s in steps if s.get("type") == "Split"), None)
    if split is None:
        return "gpt2"
    pattern = (split.get("pattern") or {}).get("Regex", "")
    if "\\p{N}{1,3}" in pattern:
        return "llama3"
    if "\\p{N}" in pattern:
        return "qwen2"
    raise GroundupError(f"tokenizer.json pre-tokenizer regex is not supported: {pattern[:80]!r}")


def _token_text(value: Any) -> str | None:
    return value.get("content") if isinstance(value, dict) else value


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise GroundupError(f"{path} is missing; a tokenizer directory needs tokenizer.json") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise GroundupError(f"{path} is not valid JSON ({e}); re-download or re-save it") from None


def read(path: Path) -> tuple[list[str], list[int], dict[str, Any]]:
    """(tokens, token types, Tokenizer keyword arguments) from a tokenizer directory."""
    data = _read_json(path / "tokenizer.json")
    config = _read_json(path / "tokenizer_config.json") if (path / "tokenizer_config.json").exists() else {}
    model = data.get("model") or {}
    if model.get("type") != "BPE":
        raise GroundupError(f"{path}/tokenizer.json has a {model.get('type')!r} model; only BPE is supported")
    added = data.get("added_tokens") or []
    entries = {**model.get("vocab", {}), **{a["content"]: a["id"] for a in added}}
    n = max(entries.values(), default=-1) + 1
    tokens: list = [None] * n
    for text, i in entries.items():
        tokens[i] = text
    missing = [i for i, t in enumerate(tokens) if t is None]
    for i in missing:
        tokens[i] = f"<|groundup_missing_{i}|>"
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    ours = data.get("groundup") or {}
    if ours:
        types, kind, pre = ours["token_types"], ours["model"], ours["pre"]
        scores, space_prefix = ours.get("scores"), ours.get("add_space_prefix", False)
    else:
        types = [NORMAL] * n
        for i in missing:
            types[i] = UNUSED
        for a in added:
            types[a["id"]] = CONTROL if a.get("special") else USER_DEFINED
        pre = _hf_pre_name(data.get("pre_tokenizer"))
        kind, scores, space_prefix = "gpt2", None, False
        if pre is None:  # SentencePiece converted to BPE: '▁' for spaces, <0xXX> byte fallback
            if not model.get("byte_fallback"):
                raise GroundupError(f"{path}/tokenizer.json is neither byte-level nor SentencePiece-style BPE")
            kind, pre = "llama", "default"
            space_prefix = '"Prepend"' in json.dumps(data.get("normalizer"))
            rank = {}
            for r, m in enumerate(merges):
                rank.setdefault(m.replace(" ", "", 1), r)
            scores = [-float(rank.get(t, len(merges) + i)) for i, t in enumerate(tokens)]
            for i, t in enumerate(tokens):
                if types[i] == NORMAL and len(t) == 6 and t.startswith("<0x") and t.endswith(">"):
                    types[i] = BYTE
    template = config.get("chat_template")
    if template is None and (path / "chat_template.jinja").exists():
        template = (path / "chat_template.jinja").read_text(encoding="utf-8")
    ids = {name: _lookup(tokens, _token_text(config.get(f"{name}_token"))) for name in ("bos", "eos")}
    add_bos = config.get("add_bos_token")
    if add_bos is None:  # else: does the post-processor put a special token first?
        single = ((data.get("post_processor") or {}).get("single") or [{}])[0]
        add_bos = ids["bos"] is not None and (single.get("SpecialToken") or {}).get("id") == tokens[ids["bos"]]
    return tokens, types, dict(model=kind, merges=merges if kind == "gpt2" else None, scores=scores, pre=pre,
                               bos_id=ids["bos"], eos_id=ids["eos"], add_bos=bool(add_bos),
                               add_space_prefix=space_prefix, chat_template=template, role_ids=ours.get("role_ids"))


def _lookup(tokens: list[str], text: str | None) -> int | None:
    if text is None:
        return None
    try:
        return tokens.index(text)
    except ValueError:
        raise GroundupError(f"special token {text!r} from tokenizer_config.json is not in the vocabulary") from None


def _write_atomic(path: Path, obj: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def write(tok: Tokenizer, directory: Path) -> None:
    """Save `tok` as tokenizer.json + tokenizer_config.json in `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    spm = tok.model == "llama"
    types = tok.token_types
    added = [{"id": i, "content": tok.tokens[i], "single_word": False, "lstrip": False, "rstrip": False,
              "normalized": False, "special": i in tok._control}
             for i in sorted(tok._control | tok._user)]
    family = next((f for f, names in gpt2_bpe._PRE_FAMILIES.items() if tok.pre in names), "")
    normalizer = None
    if spm:
        replace = {"type": "Replace", "pattern": {"String": " "}, "content": SPACE}
        prepend = {"type": "Prepend", "prepend": SPACE}
        normalizer = {"type": "Sequence", "normalizers": [prepend, replace]} if tok.add_space_prefix else replace
    data = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": added,
        "normalizer": normalizer,
        "pre_tokenizer": None if spm else _HF_PRE.get(family),
        "post_processor": None,
        "decoder": {"type": "ByteLevel"} if not spm else {"type": "Sequence", "decoders": [
            {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"},
            {"type": "Fuse"}]},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": spm, "byte_fallback": spm, "ignore_merges": False,
                  "vocab": tok.token_to_id, "merges": list(tok.merges or [])},
        "groundup": {"format": 1, "model": tok.model, "pre": tok.pre, "add_space_prefix": tok.add_space_prefix,
                     "role_ids": tok.role_ids, "token_types": types,
                     "scores": tok.scores if spm else None},
    }
    config = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": tok._text(tok.bos_id) or None,
              "eos_token": tok._text(tok.eos_id) or None, "add_bos_token": tok.add_bos, "add_eos_token": False,
              "clean_up_tokenization_spaces": False, "chat_template": tok._template_source}
    _write_atomic(directory / "tokenizer.json", data)
    _write_atomic(directory / "tokenizer_config.json", config)
