"""Tokenizer: text <-> token ids, token for token the way llama.cpp does it, plus chat rendering.

A `Tokenizer` comes from GGUF metadata (`from_gguf`), a Hugging Face tokenizer.json directory
(`from_hf_dir`), or a groundup checkpoint (`load`, written by `save`). Two algorithms sit behind it:
byte-level BPE (`gpt2_bpe`, GGUF model "gpt2") and SentencePiece-style score merging (`spm`, GGUF
model "llama"). Encoding first cuts special tokens out of the text the way llama.cpp's
`tokenizer_st_partition` does: user-defined tokens always (Gemma's "\\n", runs of spaces, HTML tags),
control tokens (`<|im_end|>`, `<bos>`) only with `allow_special=True`; plain text never turns into a
control token by that route.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np

from groundup.errors import GroundupError
from groundup.tokenizer import chat_template as ct
from groundup.tokenizer import gpt2_bpe
from groundup.tokenizer.spm import SPACE, SPMEncoder

# GGUF tokenizer.ggml.token_type values
UNDEFINED, NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = range(7)
# llama.cpp (llama_vocab::impl::load) finds these roles by token text when the GGUF does not name
# them; each found token becomes a control token, and the end-of-generation ones join the stop set.
EOG_TEXTS = frozenset({
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>", "<end_of_turn>",
    "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]", "<|end_of_text|>",
    "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>", "<\uff5cend\u2581of\u2581sentence\uff5c>", "[e~[",
})
FIM_TEXTS = {
    "fim_pre": ("<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<\uff5cfim\u2581begin\uff5c>", "<PRE>",
                "\u2581<PRE>", "<|code_prefix|>", "<|prefix|>"),
    "fim_suf": ("<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<\uff5cfim\u2581hole\uff5c>", "<SUF>",
                "\u2581<SUF>", "<|code_suffix|>", "<|suffix|>"),
    "fim_mid": ("<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<\uff5cfim\u2581end\uff5c>", "<MID>",
                "\u2581<MID>", "<|code_middle|>", "<|middle|>"),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
ROLE_KEYS = ("eot", "eom", *FIM_TEXTS)  # GGUF tokenizer.ggml.<role>_token_id keys besides bos/eos
_SURROGATES = re.compile("[\ud800-\udfff]")


class Tokenizer:
    """Encode/decode with a fixed vocabulary; see the module docstring."""

    def __init__(self, tokens: list[str], token_types: list[int] | None = None, *, model: str = "gpt2",
                 merges: list[str] | None = None, scores: list[float] | None = None, pre: str = "gpt2",
                 bos_id: int | None = None, eos_id: int | None = None, add_bos: bool = False,
                 add_space_prefix: bool = False, chat_template: str | list | None = None,
                 role_ids: dict[str, int] | None = None) -> None:
        if model not in ("gpt2", "llama"):
            raise GroundupError(f"tokenizer model {model!r} is not supported (supported: 'gpt2' byte-level BPE, "
                                "'llama' SentencePiece)")
        n = len(tokens)
        self.tokens = tokens
        self.token_types = token_types if token_types is not None else [NORMAL] * n
        self.model, self.pre, self.merges, self.scores = model, pre, merges, scores
        self.vocab_size = n
        self.token_to_id = dict(zip(tokens, range(n)))
        for name, tid in (("bos", bos_id), ("eos", eos_id)):
            if tid is not None and not 0 <= tid < n:
                raise GroundupError(f"{name} token id {tid} is outside the vocabulary of {n} tokens")
        self.bos_id, self.eos_id = bos_id, eos_id
        self.add_bos = bool(add_bos) and bos_id is not None
        self.add_space_prefix = add_space_prefix
        self._template_source = chat_template
        self.chat_template = ct.pick_template(chat_template)

        self.role_ids = dict(role_ids or {})
        self._control, self._user, self.eos_ids, self._override = _roles(
            self.token_to_id, self.token_types, {**self.role_ids, "eos": eos_id})
        self.special = {tokens[i]: i for i in sorted(self._control)}
        # the order llama.cpp cuts special tokens out in: longest first
        self._split_plain = sorted(((tokens[i], i) for i in self._user), key=lambda s: (-len(s[0]), s[1]))
        self._split_all = sorted([*self._split_plain, *((tokens[i], i) for i in self._control)],
                                 key=lambda s: (-len(s[0]), s[1]))
        self._piece_bytes: dict[int, bytes] = {}

        if model == "gpt2":
            if merges is None:
                raise GroundupError("a byte-level BPE tokenizer needs its merges (tokenizer.ggml.merges)")
            self._pattern = gpt2_bpe.pre_tokenizer(pre)
            self._ranks = gpt2_bpe.parse_merges(merges)
            self._ignore_merges = pre in gpt2_bpe.IGNORE_MERGES
            b2u = gpt2_bpe.byte_to_unicode()
            self._to_printable = {b: b2u[b] for b in range(256)}
            self._from_printable = gpt2_bpe.unicode_to_byte()
            self._word_cache: dict[str, list[int]] = {}
        else:
            if scores is None:
                scores = [0.0] * n
                self.scores = scores
            self._spm = SPMEncoder(tokens, scores, self.token_to_id)

    # ---- construction ------------------------------------------------------------------------
    @classmethod
    def from_gguf(cls, meta: dict) -> "Tokenizer":
        """Build from GGUF metadata (key -> python value), with llama.cpp's defaults for absent keys."""
        model = meta.get("tokenizer.ggml.model")
        tokens = meta.get("tokenizer.ggml.tokens")
        if model is None or tokens is None:
            raise GroundupError("GGUF metadata has no tokenizer (tokenizer.ggml.model / tokenizer.ggml.tokens)")
        spm = model == "llama"
        n = len(tokens)

        def special_id(key: str, default: int | None) -> int | None:
            value = meta.get(f"tokenizer.ggml.{key}_token_id", default)  # llama.cpp: out of range -> none
            return int(value) if value is not None and 0 <= int(value) < n else None

        def listed(key: str) -> list | None:
            value = meta.get(f"tokenizer.ggml.{key}")
            return None if value is None else list(value)

        pre = meta.get("tokenizer.ggml.pre") or "default"
        roles = {role: i for role in ROLE_KEYS if (i := special_id(role, None)) is not None}
        for old_name, role in (("prefix", "fim_pre"), ("suffix", "fim_suf"), ("middle", "fim_mid")):
            if role not in roles and (i := special_id(old_name, None)) is not None:
                roles[role] = i  # deprecated key names
        tokens = [t or f"[EMPTY_{i}]" for i, t in enumerate(tokens)] if "" in tokens else list(tokens)
        return cls(tokens, listed("token_type"), model=model, merges=listed("merges"), scores=listed("scores"),
                   pre=pre, bos_id=special_id("bos", 1 if spm else 11), eos_id=special_id("eos", 2 if spm else 11),
                   add_bos=bool(meta.get("tokenizer.ggml.add_bos_token", spm or pre in gpt2_bpe.IGNORE_MERGES)),
                   add_space_prefix=bool(meta.get("tokenizer.ggml.add_space_prefix", spm)),
                   chat_template=_gguf_templates(meta), role_ids=roles)

    @classmethod
    def from_hf_dir(cls, path: str | os.PathLike) -> "Tokenizer":
        """Build from a directory with tokenizer.json (+ tokenizer_config.json), HF or groundup-written."""
        from groundup.tokenizer import hf_json

        tokens, types, kw = hf_json.read(Path(path))
        return cls(tokens, types, **kw)

    def save(self, directory: str | os.PathLike) -> None:
        """Write tokenizer.json + tokenizer_config.json (readable JSON, HF layout, atomic writes)."""
        from groundup.tokenizer import hf_json

        hf_json.write(self, Path(directory))

    @classmethod
    def load(cls, directory: str | os.PathLike) -> "Tokenizer":
        return cls.from_hf_dir(directory)

    # ---- encoding ----------------------------------------------------------------------------
    def encode(self, text: str, add_bos: bool | None = None, allow_special: bool = False) -> list[int]:
        """Token ids for `text`. Control tokens are only recognised with `allow_special=True`."""
        if not isinstance(text, str):
            raise GroundupError(f"encode() takes a str, got {type(text).__name__}")
        if _SURROGATES.search(text):
            text = _SURROGATES.sub("\ufffd", text)
        add = self.add_bos if add_bos is None else add_bos
        out: list[int] = [self.bos_id] if add and self.bos_id is not None else []
        fragments = self._partition(text, allow_special) if text else []
        if self.model == "llama":
            prev_special = True
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                    prev_special = True
                    continue
                if self.add_space_prefix and prev_special:
                    frag = " " + frag
                out.extend(self._spm.encode(frag.replace(" ", SPACE)))
                prev_special = False
        else:
            for frag in fragments:
                if isinstance(frag, int):
                    out.append(frag)
                else:
                    out.extend(self._encode_bpe(frag))
        return out

    def _partition(self, text: str, allow_special: bool) -> list[str | int]:
        """Cut special tokens out, longest first, each left to right (llama.cpp's order)."""
        fragments: list[str | int] = [text]
        specials = self._split_all if allow_special else self._split_plain
        if len(specials) > 256 and len(text) > 256:  # many candidates (Gemma: 6k): filter by 4-grams
            grams = {text[i:i + 4] for i in range(len(text) - 3)}
            specials = [s for s in specials if len(s[0]) < 4 or s[0][:4] in grams]
        for tok, tid in specials:
            if tok not in text:
                continue
            cut: list[str | int] = []
            for frag in fragments:
                if isinstance(frag, int) or tok not in frag:
                    cut.append(frag)
                    continue
                for k, part in enumerate(frag.split(tok)):
                    if k:
                        cut.append(tid)
                    if part:
                        cut.append(part)
            fragments = cut
        return fragments

    def _encode_bpe(self, text: str) -> list[int]:
        out: list[int] = []
        cache, get = self._word_cache, self._word_cache.get
        for word in self._pattern.findall(text):
            ids = get(word)
            if ids is None:
                printable = "".join([self._to_printable[b] for b in word.encode("utf-8")])
                tid = self.token_to_id.get(printable) if self._ignore_merges else None
                if tid is not None:
                    ids = [tid]
                else:
                    ids = []
                    for part in gpt2_bpe.bpe(printable, self._ranks):
                        tid = self.token_to_id.get(part)
                        if tid is not None:
                            ids.append(tid)
                        else:  # llama.cpp: look up each byte of the piece alone, drop the misses
                            ids.extend(i for i in (self.token_to_id.get(chr(b), -1) for b in part.encode("utf-8")
                                                   if b < 0x80) if i >= 0)
                if len(cache) > 200_000:
                    cache.clear()
                cache[word] = ids
            out.extend(ids)
        return out

    # ---- decoding ----------------------------------------------------------------------------
    def token_bytes(self, id: int) -> bytes:
        """The raw bytes one token stands for (may be part of a UTF-8 character)."""
        piece = self._piece_bytes.get(id)
        if piece is not None:
            return piece
        if not 0 <= id < self.vocab_size:
            raise GroundupError(f"token id {id} is outside the vocabulary of {self.vocab_size} tokens")
        text, kind = self.tokens[id], self._override.get(id, self.token_types[id])
        if id in self._control or id in self._user:
            piece = text.encode("utf-8")
        elif kind == BYTE and len(text) == 6 and text.startswith("<0x"):
            piece = bytes([int(text[3:5], 16)])
        elif kind == NORMAL and self.model == "llama":
            piece = text.replace(SPACE, " ").encode("utf-8")
        elif kind == NORMAL:
            fp = self._from_printable
            piece = b"".join(bytes([fp[c]]) if c in fp else c.encode("utf-8") for c in text)
        else:  # unused / undefined tokens print nothing (llama.cpp token_to_piece)
            piece = b""
        self._piece_bytes[id] = piece
        return piece

    def decode(self, ids: list[int], skip_special: bool = False) -> str:
        """Text for `ids`; invalid UTF-8 (a cut-off character) becomes U+FFFD."""
        control = self._control
        data = b"".join(self.token_bytes(int(i)) for i in ids if not (skip_special and i in control))
        if self.add_space_prefix and data.startswith(b" "):
            data = data[1:]
        return data.decode("utf-8", errors="replace")

    def is_special(self, id: int) -> bool:
        """Whether `id` is a control token (decode(skip_special=True) drops these)."""
        return id in self._control

    # ---- chat --------------------------------------------------------------------------------
    def _template(self, tools: list[dict] | None) -> str:
        chosen = ct.pick_template(self._template_source, tools)
        return chosen if chosen is not None else ct.fallback_template(self.token_to_id)

    def render_chat(self, messages: list[dict], tools: list[dict] | None = None,
                    add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages`, from the model's chat template (or the fallback)."""
        return ct.render(self._template(tools), messages, tools=tools, add_generation_prompt=add_generation_prompt,
                         bos_token=self._text(self.bos_id), eos_token=self._text(self.eos_id))

    def encode_chat(self, messages: list[dict], tools: list[dict] | None = None,
                    add_generation_prompt: bool = True) -> list[int]:
        """Ids for a chat: template markers become control tokens, message contents stay plain text."""
        pieces = ct.content_pieces(lambda msgs: self.render_chat(msgs, tools, add_generation_prompt), messages)
        out: list[int] = []
        for is_content, text in pieces:
            out.extend(self.encode(text, add_bos=False, allow_special=not is_content))
        template_bos = bool(pieces) and not pieces[0][0] and out[:1] == [self.bos_id]
        if self.add_bos and not template_bos:
            out.insert(0, self.bos_id)
        return out

    def _text(self, tid: int | None) -> str:
        return self.tokens[tid] if tid is not None else ""

    def __repr__(self) -> str:
        return (f"Tokenizer(model={self.model!r}, pre={self.pre!r}, vocab_size={self.vocab_size}, "
                f"bos={self._text(self.bos_id)!r}, eos={self._text(self.eos_id)!r}, add_bos={self.add_bos})")


def _roles(token_to_id: dict[str, int], types: list[int], ids: dict[str, int | None]
           ) -> tuple[set[int], set[int], set[int], dict[int, int]]:
    """llama.cpp's special-token bookkeeping: (control ids, user-defined ids, stop ids, kind overrides)."""
    find = token_to_id.get
    ids, control, override = dict(ids), set(), {}
    for role, texts in FIM_TEXTS.items():
        found = [find(t) for t in texts if t in token_to_id]
        if ids.get(role) is None and found:
            ids[role] = min(found)  # llama.cpp takes the first its hash map yields; usually only one exists
            control.add(ids[role])
    named = {find(t) for t in EOG_TEXTS if t in token_to_id}
    control |= named
    eog = named | {ids[r] for r in ("eos", "eot", "eom", "fim_pad", "fim_rep", "fim_sep") if ids.get(r) is not None}
    for t in ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"):  # gpt-oss: always printed
        if t in token_to_id:
            override[find(t)] = USER_DEFINED
    has = {t: find(t) for t in ("<|return|>", "<|call|>", "<|calls|>", "<|flush|>", "<|end|>", "</s>",
                                "<|tool_response>", "<|plamo:eos|>") if find(t) in eog}
    if "<|end|>" in has and ("<|call|>" in has or "<|calls|>" in has) and ("<|return|>" in has or "<|flush|>" in has):
        eog.discard(has["<|end|>"])  # harmony / solar-open: <|end|> ends a message, not generation
        override[has["<|end|>"]] = USER_DEFINED
    if "</s>" in has and ("<|tool_response>" in has or "<|plamo:eos|>" in has):
        eog.discard(has["</s>"])
        override[has["</s>"]] = NORMAL
    kinds = np.asarray(types, dtype=np.int64)
    control |= set(np.flatnonzero((kinds == CONTROL) | (kinds == UNKNOWN)).tolist())
    user = set(np.flatnonzero(kinds == USER_DEFINED).tolist())
    for i, kind in override.items():
        control.discard(i)
        (user.add if kind == USER_DEFINED else user.discard)(i)
    return control, user - control, eog, override


def _gguf_templates(meta: dict) -> str | list | None:
    """tokenizer.chat_template, or a HF-style named list when tokenizer.chat_template.<name> keys exist."""
    default = meta.get("tokenizer.chat_template")
    prefix = "tokenizer.chat_template."
    named = [{"name": k[len(prefix):], "template": v} for k, v in meta.items() if k.startswith(prefix)]
    if not named:
        return default
    return ([{"name": "default", "template": default}] if default else []) + named
