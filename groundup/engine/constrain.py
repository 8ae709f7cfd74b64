"""Constrained decoding: a token mask that keeps the model's output valid JSON for a JSON Schema.

`compile_json_schema(schema, tokenizer)` -> `Grammar` (cached per canonical schema and
tokenizer); `Grammar.start()` -> a per-sequence `Constraint`: `allowed()` is the [vocab] bool
mask of tokens that keep the output a prefix of some valid document, `advance(token)` moves
on, `done` says the value is complete (then only the tokenizer's EOS ids are allowed).
engine/json_schema.py compiles the schema into nodes, engine/json_automaton.py reads bytes
over them; this module builds the token masks. Used through `SequenceSampler(..., constraint=...)` (engine/sampling.py).

The automaton is byte-level: a state is a list of stacks (several only while anyOf branches
are undecided), each an immutable linked list `(frame, parent)` of tuple frames, `None` when
the value is complete. So a token's bytes may be any part of a UTF-8 character.

The mask, per stack, cached by `cache_key(stack)` (counters clipped where a token cannot tell
them apart, so the thousandth character of a string shares the second's entry):
- precomputed once per tokenizer: every token's bytes, a radix trie of the vocabulary
  (control and empty tokens left out), a second trie of the few tokens with a quote,
  backslash or control byte, and for string bodies the "plain" tokens (none of those bytes)
  as [8 UTF-8 states, vocab] bool rows plus their character counts;
- inside a string: plain row for the UTF-8 state (and `chars <= room left` near maxLength)
  OR a walk of the small trie (tokens that close the string, escape, or hit a control byte);
- elsewhere: a depth-first walk of the vocabulary trie from the state, stepping the
  automaton one byte per edge and pruning a subtree at the first byte it rejects.
See docs/constrained-decoding.md for measured per-step times.
"""
from __future__ import annotations

import json
import re
import threading
import weakref
from bisect import bisect_left
from collections import OrderedDict
from os.path import commonprefix

import torch

from groundup.engine.json_automaton import STR_BODY, U8_LEAD, U8_NEXT, accepting, cache_key, initial, step_all
from groundup.engine.json_schema import compile_schema
from groundup.errors import GroundupError
from groundup.engine.json_schema import tool_calls_schema  # noqa: F401  (re-exported)

# ---- the vocabulary, precomputed once per tokenizer ----------------------------------------------
class _Trie:
    """Radix trie of token byte strings, stored flat (few Python objects, so the garbage
    collector does not walk it): node n has the edge label[n] from its parent, children
    kids[koff[n]:koff[n + 1]] and the tokens ending at it ends[eoff[n]:eoff[n + 1]]; node 0 is the root."""

    def __init__(self, items: list[tuple[bytes, int]]) -> None:
        items = sorted(items)
        self.label: list[bytes] = [b""]
        kids: list[list[int]] = [[]]
        ends: list[list[int]] = [[]]
        self._build([p for p, _ in items], [i for _, i in items], kids, ends, 0, 0, len(items), 0)
        self.koff, self.kids = _flatten(kids)
        self.eoff, self.ends = _flatten(ends)

    def _build(self, keys: list[bytes], ids: list[int], kids, ends, node: int, lo: int, hi: int, d: int) -> None:
        """Hang keys[lo:hi] (sorted, sharing their first d bytes) under node."""
        i = lo
        while i < hi and len(keys[i]) == d:
            ends[node].append(ids[i])
            i += 1
        while i < hi:
            first = keys[i]
            j = hi if first[d] == 255 else bisect_left(keys, first[:d] + bytes([first[d] + 1]), i, hi)
            e = len(commonprefix([first, keys[j - 1]]))
            child = len(self.label)
            self.label.append(first[d:e])
            kids.append([])
            ends.append([])
            kids[node].append(child)
            self._build(keys, ids, kids, ends, child, i, j, e)
            i = j

    def walk(self, stacks: list) -> list[int]:
        """Ids of the tokens whose bytes the automaton accepts from `stacks` (pruned DFS)."""
        label, koff, kids, eoff, ends = self.label, self.koff, self.kids, self.eoff, self.ends
        out: list[int] = []
        todo = [(0, stacks)]
        while todo:
            n, st = todo.pop()
            for c in kids[koff[n]:koff[n + 1]]:
                s = st
                for b in label[c]:
                    s = step_all(s, b)
                    if not s:
                        break
                else:
                    if eoff[c] != eoff[c + 1]:
                        out.extend(ends[eoff[c]:eoff[c + 1]])
                    if koff[c] != koff[c + 1]:
                        todo.append((c, s))
        return out


def _flatten(lists: list[list[int]]) -> tuple[list[int], list[int]]:
    off, flat = [0], []
    for x in lists:
        flat.extend(x)
        off.append(len(flat))
    return off, flat


class _Vocab:
    """What the masks need from a tokenizer, computed once (see the module docstring)."""

    def __init__(self, tok) -> None:
        v = self.size = tok.vocab_size
        self.pieces = [b"" if tok.is_special(i) else tok.token_bytes(i) for i in range(v)]
        self.eos = sorted(tok.eos_ids)
        if not self.eos:
            raise GroundupError("the tokenizer has no end-of-generation token; constrained decoding needs one")
        self.eos_set = frozenset(self.eos)
        self.eos_ids = torch.tensor(self.eos, dtype=torch.long)
        self.eos_mask = torch.zeros(v, dtype=torch.bool).index_fill_(0, self.eos_ids, True)
        items = [(p, i) for i, p in enumerate(self.pieces) if p]
        self.trie = _Trie(items)
        special = [(p, i) for p, i in items if _NOT_PLAIN.search(p)]
        self.string_trie = _Trie(special)
        self.span = max(len(p) for p, _ in items)
        self.digit_span = max(len(p) - len(p.translate(None, b"0123456789")) for p, _ in items)
        ok = [[False] * v for _ in range(8)]
        chars = [0] * v
        skip = {i for _, i in special}
        for p, i in items:
            if i in skip:
                continue
            chars[i] = len(p.translate(None, _CONTINUATION))
            if p.isascii():
                ok[0][i] = True
            else:
                for u in range(8):
                    ok[u][i] = _utf8_run(u, p)
        self.plain_ok, self.plain_chars = torch.tensor(ok), torch.tensor(chars, dtype=torch.int32)
        self.plain_span = max(chars)
        self.plain_rows: dict[tuple[int, int], torch.Tensor] = {}  # (UTF-8 state, room) -> plain tokens that fit
        self.string_span = max((_STRING_END.search(p).start() if _STRING_END.search(p) else len(p)
                                for p, _ in special), default=0)
        self.grammars: OrderedDict[str, Grammar] = OrderedDict()


def _utf8_run(u: int, data: bytes) -> bool:
    """Whether quote/backslash/control-free bytes continue valid UTF-8 from decoder state u."""
    for b in data:
        if u:
            lo, hi, u = U8_NEXT[u]
            if not lo <= b <= hi:
                return False
        elif b >= 0x80:
            u = U8_LEAD[b]
            if not u:
                return False
    return True


_NOT_PLAIN = re.compile(rb'[\x00-\x1f"\\]')  # bytes that end a plain run inside a JSON string
_STRING_END = re.compile(rb'[\x00-\x1f"]')  # bytes that end a string body (closing it or failing)
_CONTINUATION = bytes(range(0x80, 0xC0))
_VOCABS: "weakref.WeakKeyDictionary[object, _Vocab]" = weakref.WeakKeyDictionary()
_COMPILE_LOCK = threading.Lock()  # request threads may compile while the engine thread decodes
_NO_IDS = torch.zeros(0, dtype=torch.long)
_GRAMMARS_PER_TOKENIZER = 64
_MASKS_PER_GRAMMAR = 20_000


# ---- the public API -------------------------------------------------------------------------------
def compile_json_schema(schema: dict | None, tokenizer, *, max_string: int = 512, max_whitespace: int = 2,
                        max_depth: int = 6) -> "Grammar":
    """The Grammar for `schema` (None: any JSON object, for response_format json_object), cached
    per (canonical schema, options, tokenizer). max_string: characters in a string without
    maxLength; max_whitespace: bytes of whitespace allowed in each gap between tokens of the
    JSON; max_depth: nesting of schema-free values. See engine/json_schema.py for what is supported."""
    try:
        key = json.dumps([_canonical(schema), max_string, max_whitespace, max_depth], allow_nan=False)
    except (TypeError, ValueError) as e:
        raise GroundupError(f"JSON schema is not JSON-serialisable: {e}") from None
    with _COMPILE_LOCK:
        vocab = _VOCABS.get(tokenizer)
        if vocab is None:
            vocab = _VOCABS[tokenizer] = _Vocab(tokenizer)
        g = vocab.grammars.get(key)
        if g is None:
            g = Grammar(compile_schema(schema, max_string=max_string, max_whitespace=max_whitespace,
                                       max_depth=max_depth), vocab)
            vocab.grammars[key] = g
            if len(vocab.grammars) > _GRAMMARS_PER_TOKENIZER:
                vocab.grammars.popitem(last=False)
        vocab.grammars.move_to_end(key)
        return g


def _canonical(s):
    """The schema with keywords sorted, except the order of `properties` (it is the order of
    generation) and the insides of values (enum, const, ...)."""
    if isinstance(s, list):
        return [_canonical(x) for x in s]
    if not isinstance(s, dict):
        return s
    out = {}
    for k in sorted(s):
        v = s[k]
        if k == "properties" and isinstance(v, dict):
            out[k] = {name: _canonical(sub) for name, sub in v.items()}
        else:
            out[k] = v if k in ("enum", "const", "default", "examples") else _canonical(v)
    return out


class Grammar:
    """A compiled schema over one tokenizer's vocabulary; shared by all sequences using it
    (it holds the mask cache). `start()` gives a sequence its own Constraint."""

    def __init__(self, root, vocab: _Vocab) -> None:
        self.root, self.vocab = root, vocab
        self._masks: dict[tuple, torch.Tensor] = {}  # cache key of a stack -> allowed token ids

    def start(self) -> "Constraint":
        return Constraint(self)

    def stack_mask(self, stack: tuple) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """(dense bool [V] or None, token ids or None): the tokens one stack allows. Cached."""
        v = self.vocab
        f, parent = stack
        if f[0] == STR_BODY:  # the big case: plain tokens by table, the few others by the small trie
            node, room, u = f[1], f[1].max - f[2], f[3]
            dense = v.plain_rows.get((u, min(room, v.plain_span)))
            if dense is None:
                dense = v.plain_rows[u, min(room, v.plain_span)] = v.plain_ok[u] & (v.plain_chars <= room)
            # the small trie's tokens spend at most string_span characters of this string before
            # leaving it (or dying), so the room left matters only up to there
            key = (STR_BODY, node, min(room, v.string_span), min(max(node.min - f[2], 0), v.string_span + 1), u,
                   cache_key(parent, v.span, v.digit_span))
            trie = v.string_trie
        else:
            dense, key, trie = None, cache_key(stack, v.span, v.digit_span), v.trie
        ids = self._masks.get(key)
        if ids is None:
            if len(self._masks) >= _MASKS_PER_GRAMMAR:
                self._masks.clear()
            found = trie.walk([stack])
            ids = self._masks[key] = torch.tensor(found, dtype=torch.long) if found else _NO_IDS
        return dense, ids


class Constraint:
    """One sequence's position in a Grammar: allowed() -> bool [vocab], advance(token), done."""

    def __init__(self, grammar: Grammar) -> None:
        self.grammar = grammar
        self.states: list = initial(grammar.root)
        self.finished = False  # EOS accepted
        self.output = bytearray()  # the bytes accepted so far
        self._mask: torch.Tensor | None = None

    @property
    def done(self) -> bool:
        """The value is complete and nothing can extend it: only EOS is allowed."""
        return self.finished or all(s is None for s in self.states)

    @property
    def can_end(self) -> bool:
        """The text so far is a complete value (EOS is among the allowed tokens)."""
        return self.finished or accepting(self.states)

    def allowed(self) -> torch.Tensor:
        """Bool [tokenizer vocab]: True for the tokens that may come next. Do not modify it."""
        if self._mask is None:
            v = self.vocab
            if self.done:
                self._mask = v.eos_mask
            else:
                out, ids = None, []
                for st in self.states:
                    if st is None:
                        continue
                    dense, idx = self.grammar.stack_mask(st)
                    if dense is not None:
                        out = dense.clone() if out is None else out.logical_or_(dense)
                    if idx.numel():
                        ids.append(idx)
                if out is None:
                    out = torch.zeros(v.size, dtype=torch.bool)
                for idx in ids:
                    out.index_fill_(0, idx, True)
                if accepting(self.states):
                    out.index_fill_(0, v.eos_ids, True)
                self._mask = out
        return self._mask

    @property
    def vocab(self) -> _Vocab:
        return self.grammar.vocab

    def advance(self, token: int) -> None:
        """Take `token` (it must be allowed); EOS ends the constraint."""
        v = self.vocab
        if self.finished:
            if token in v.eos_set:  # more EOS (ignore_eos): harmless
                return
            raise GroundupError("constrained decoding: a token came after the end of the JSON value")
        if token in v.eos_set:
            if not accepting(self.states):
                raise GroundupError(f"constrained decoding: end of text (token {token}) before the JSON value "
                                    "is complete")
            self.finished, self.states, self._mask = True, [None], None
            return
        piece = v.pieces[token] if 0 <= token < v.size else b""
        s = self.states
        for b in piece:
            s = step_all(s, b)
            if not s:
                break
        if not s or not piece:
            raise GroundupError(f"constrained decoding: token {token} ({piece!r}) does not continue "
                                f"{bytes(self.output[-40:])!r} validly for the schema")
        self.states, self._mask = s, None
        self.output += piece
