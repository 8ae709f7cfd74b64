"""The grammar graph of a JSON Schema: the nodes engine/json_schema.py compiles a schema into.

`Obj` (known properties, emitted in order; `keys[i]` is a byte trie of the keys that may come
next), `FreeObj` (any keys), `Arr`, `Str`, `Lit` (enum/const/true/false/null as a byte trie of
their compact JSON text), `Num` (with exact bound checks on every prefix: `feasible(prefix)`,
`in_range(text)`) and `Alt` (a value of any option). Each node's `kind` (K_OBJ, ...) is what
the byte automaton in engine/json_automaton.py dispatches on; nodes hold no per-sequence state.
"""
from __future__ import annotations

import json
import math
from fractions import Fraction

# node kinds (Node.kind), what the automaton in engine/json_automaton.py dispatches on
K_OBJ, K_FREEOBJ, K_ARR, K_STR, K_LIT, K_NUM, K_ALT = range(7)
INT_DIGITS, FRAC_DIGITS, EXP_DIGITS = 16, 16, 2
MAX_KEY = 64  # characters in a key of a free-form object


class ByteTrie:
    """Byte strings -> values: next[state] maps a byte to the next state; value[state] at ends."""

    def __init__(self) -> None:
        self.next: list[dict[int, int]] = [{}]
        self.value: list[object] = [None]

    def add(self, data: bytes, value: object) -> None:
        t = 0
        for b in data:
            nxt = self.next[t].get(b)
            if nxt is None:
                nxt = self.next[t][b] = len(self.next)
                self.next.append({})
                self.value.append(None)
            t = nxt
        self.value[t] = value


class Obj:
    """Object with known properties: props[j] = (name, child, required), emitted in order."""
    kind = K_OBJ

    def __init__(self, props: list[tuple[str, object, bool]], ws: int) -> None:
        self.props, self.ws, n = props, ws, len(props)
        req = [i for i, p in enumerate(props) if p[2]]
        self.can_close = [not any(r >= i for r in req) for i in range(n + 1)]
        self.keys: list[ByteTrie] = []  # keys[i]: the keys that may come next when props[:i] are done
        for i in range(n):
            trie, last = ByteTrie(), next((r for r in req if r >= i), n - 1)
            for j in range(i, last + 1):  # skip optional ones, never a required one
                trie.add(json.dumps(props[j][0], ensure_ascii=False).encode()[1:], j)
            self.keys.append(trie)


class FreeObj:
    """Object with any keys (strings of at most MAX_KEY characters), each value `value`."""
    kind = K_FREEOBJ

    def __init__(self, value: object, ws: int) -> None:
        self.value, self.ws, self.key = value, ws, Str(0, MAX_KEY)


class Arr:
    kind = K_ARR

    def __init__(self, item: object, lo: int, hi: int, ws: int) -> None:
        self.item, self.min, self.max, self.ws = item, lo, hi, ws


class Str:
    kind = K_STR

    def __init__(self, lo: int, hi: int) -> None:
        self.min, self.max = lo, hi


class Lit:
    """A fixed set of JSON values (enum, const, true/false, null), as a trie of their text."""
    kind = K_LIT

    def __init__(self, values: list) -> None:
        self.trie = ByteTrie()
        for v in values:
            self.trie.add(json.dumps(v, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode(), True)


class Num:
    """JSON number (or integer); bounds as Fractions, checked exactly on every prefix."""
    kind = K_NUM

    def __init__(self, integer: bool, lo: Fraction | None = None, hi: Fraction | None = None,
                 lo_excl: bool = False, hi_excl: bool = False) -> None:
        self.integer, self.lo, self.hi, self.lo_excl, self.hi_excl = integer, lo, hi, lo_excl, hi_excl
        self.bounded = lo is not None or hi is not None
        big = max((abs(b) for b in (lo, hi) if b is not None), default=Fraction(0))
        self.int_cap = max(INT_DIGITS, len(str(math.floor(big))) + 1)
        self.frac_cap = 0 if integer else FRAC_DIGITS
        self.exp_cap = 0 if integer or self.bounded else EXP_DIGITS
        self._feasible: dict[str, bool] = {}
        self._in_range: dict[str, bool] = {}

    def in_range(self, text: str) -> bool:
        """Whether the complete number `text` lies in the bounds."""
        hit = self._in_range.get(text)
        if hit is None:
            v = Fraction(text)
            hit = self._in_range[text] = ((self.lo is None or v > self.lo or (v == self.lo and not self.lo_excl))
                                          and (self.hi is None or v < self.hi or (v == self.hi and not self.hi_excl)))
        return hit

    def feasible(self, text: str) -> bool:
        """Whether some number with this prefix (within the digit caps) lies in the bounds."""
        hit = self._feasible.get(text)
        if hit is None:
            hit = self._feasible[text] = self._check(text)
        return hit

    def _check(self, text: str) -> bool:
        if text in ("", "-"):
            return any(self.feasible(text + d) for d in "0123456789") or (text == "" and self.feasible("-"))
        neg, body = text.startswith("-"), text.lstrip("-")
        ipart, dot, frac = body.partition(".")
        step = Fraction(1, 10 ** self.frac_cap)  # the finest reachable grid
        grids = []  # (first magnitude, count of grid points)
        if dot:
            grids.append((Fraction(int(ipart)) + (Fraction(int(frac), 10 ** len(frac)) if frac else 0),
                          10 ** (self.frac_cap - len(frac))))
        else:
            grids.append((Fraction(int(ipart)), 10 ** self.frac_cap))
            if ipart != "0":
                for m in range(1, self.int_cap - len(ipart) + 1):
                    grids.append((Fraction(int(ipart) * 10 ** m), 10 ** (m + self.frac_cap)))
        lo, hi, lo_x, hi_x = self.lo, self.hi, self.lo_excl, self.hi_excl
        if neg:  # magnitudes of negative numbers: [-hi, -lo]
            lo, hi, lo_x, hi_x = (None if hi is None else -hi), (None if lo is None else -lo), hi_x, lo_x
        for a, n in grids:
            j = 0 if lo is None else max(0, math.ceil((lo - a) / step))
            if lo is not None and lo_x and a + j * step == lo:
                j += 1
            x = a + j * step
            if j < n and (hi is None or x < hi or (x == hi and not hi_x)):
                return True
        return False


class Alt:
    """anyOf / oneOf / type lists / $ref targets: a value of any option."""
    kind = K_ALT

    def __init__(self, options: list) -> None:
        self.options = options
