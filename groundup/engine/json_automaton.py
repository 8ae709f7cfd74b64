"""The byte-level JSON automaton that constrained decoding runs over a compiled schema.

A state is a list of stacks (several only while anyOf branches are undecided); each stack is
an immutable linked list `(frame, parent)` of tuple frames, `None` once the value is complete.
`initial(root)` starts one, `step_all(stacks, byte)` advances it by one byte (an empty list =
rejected), `accepting(stacks)` says a complete value has been read, and `cache_key` names a
stack for the mask cache. The nodes come from engine/json_schema.py; engine/constrain.py
turns states into token masks.
"""
from __future__ import annotations

from groundup.engine.json_schema import K_ALT, K_ARR, K_LIT, K_NUM, K_OBJ, K_STR


# frame kinds (frame = (kind, node, ...))
(VAL, OBJ_OPEN, OBJ_KEY, OBJ_COLON, OBJ_VAL, OBJ_AFTER, OBJ_NEXT, FOBJ_OPEN, FOBJ_COLON, FOBJ_VAL,
 FOBJ_AFTER, FOBJ_NEXT, ARR_OPEN, ARR_AFTER, ARR_NEXT, STR_BODY, STR_ESC, STR_HEX, LIT, NUM) = range(20)
# number phases
N_START, N_MINUS, N_ZERO, N_INT, N_DOT, N_FRAC, N_E, N_ESIGN, N_EXP = range(9)
_N_ACCEPT = (N_ZERO, N_INT, N_FRAC, N_EXP)
_WS = frozenset(b" \t\n\r")
_ESCAPES = frozenset(b'"\\/bfnrt')
_HEX = frozenset(b"0123456789abcdefABCDEF")
# UTF-8 decoding states: 0 = between characters; 1-3 = that many continuation bytes (80-BF) due;
# 4-7 = first continuation restricted (E0: A0-BF, ED: 80-9F, F0: 90-BF, F4: 80-8F).
U8_NEXT = [(0, 0, 0), (0x80, 0xBF, 0), (0x80, 0xBF, 1), (0x80, 0xBF, 2),
           (0xA0, 0xBF, 1), (0x80, 0x9F, 1), (0x90, 0xBF, 2), (0x80, 0x8F, 2)]  # state -> (lo, hi, next)
U8_LEAD = [0] * 256
for _b in range(0xC2, 0xE0):
    U8_LEAD[_b] = 1
for _b in (*range(0xE1, 0xED), 0xEE, 0xEF):
    U8_LEAD[_b] = 2
for _b in range(0xF1, 0xF4):
    U8_LEAD[_b] = 3
U8_LEAD[0xE0], U8_LEAD[0xED], U8_LEAD[0xF0], U8_LEAD[0xF4] = 4, 5, 6, 7

# ---- the byte automaton over the schema's nodes ---------------------------------------------------
def initial(root: object) -> list:
    """The state before the first byte."""
    return [((VAL, root), None)]


def step_all(stacks: list, b: int) -> list:
    """The state after byte b (empty: b is not allowed). Completed stacks (None) accept nothing."""
    out: list = []
    for st in stacks:
        if st is not None:
            _STEP[st[0][0]](st[0], st[1], b, out)
    if len(out) > 1:
        out = list(dict.fromkeys(out))
    return out


def accepting(stacks: list) -> bool:
    """Whether the text so far is a complete value (EOS may follow)."""
    for st in stacks:
        if st is None:
            return True
        f = st[0]
        if st[1] is None and f[0] == NUM and f[2] in _N_ACCEPT and (not f[1].bounded or f[1].in_range(f[6])):
            return True
        if st[1] is None and f[0] == LIT and f[1].trie.value[f[2]] is not None:
            return True
    return False


def cache_key(stack: tuple, span: int, digit_span: int) -> tuple:
    """A key equal for stacks that accept exactly the same byte strings of length <= span
    (containing at most digit_span digits): counters far from their limits are clipped."""
    parts = []
    while stack is not None:
        f, stack = stack
        k = f[0]
        if STR_BODY <= k <= STR_HEX:
            node, c = f[1], f[2]
            f = (k, node, min(node.max - c, span), min(max(node.min - c, 0), span + 1), *f[3:])
        elif k == ARR_AFTER or k == ARR_NEXT:
            node, c = f[1], f[2]
            f = (k, node, min(c, node.min), min(node.max - c, span + 1), f[3])
        elif k == NUM and not f[1].bounded:
            node = f[1]
            f = (k, node, f[2], min(node.int_cap - f[3], digit_span), min(node.frac_cap - f[4], digit_span),
                 min(node.exp_cap - f[5], digit_span))
        parts.append(f)
    return tuple(parts)


def _enter(node, parent, b: int, out: list) -> None:
    """A value of `node` starts with byte b; `parent` is the stack to return to after it."""
    k = node.kind
    if k == K_ALT:
        for o in node.options:
            _enter(o, parent, b, out)
    elif k == K_STR:
        if b == 0x22:
            out.append(((STR_BODY, node, 0, 0), parent))
    elif k == K_OBJ:
        if b == 0x7B:
            out.append(((OBJ_OPEN, node, 0), parent))
    elif k == K_ARR:
        if b == 0x5B:
            out.append(((ARR_OPEN, node, 0), parent))
    elif k == K_NUM:
        _num((NUM, node, N_START, 0, 0, 0, ""), parent, b, out)
    elif k == K_LIT:
        t = node.trie.next[0].get(b)
        if t is not None:
            _lit_at(node, t, parent, out)
    elif b == 0x7B:
        out.append(((FOBJ_OPEN, node, 0), parent))


def _val(f, parent, b, out) -> None:
    _enter(f[1], parent, b, out)


def _ws(f, parent, b, out) -> bool:
    """Whitespace in a gap: stay in the frame with one more byte counted (if under the cap)."""
    if b in _WS:
        if f[-1] < f[1].ws:
            out.append((f[:-1] + (f[-1] + 1,), parent))
        return True
    return False


def _obj_open(f, parent, b, out) -> None:
    node = f[1]
    if _ws(f, parent, b, out):
        return
    if b == 0x7D and node.can_close[0]:
        out.append(parent)
    elif b == 0x22 and node.props:
        out.append(((OBJ_KEY, node, 0, 0), parent))


def _obj_key(f, parent, b, out) -> None:
    _, node, i, t = f
    trie = node.keys[i]
    nxt = trie.next[t].get(b)
    if nxt is not None:
        j = trie.value[nxt]
        out.append(((OBJ_KEY, node, i, nxt) if j is None else (OBJ_COLON, node, j, 0), parent))


def _obj_colon(f, parent, b, out) -> None:
    if not _ws(f, parent, b, out) and b == 0x3A:
        out.append(((OBJ_VAL, f[1], f[2], 0), parent))


def _obj_val(f, parent, b, out) -> None:
    if not _ws(f, parent, b, out):
        node, j = f[1], f[2]
        _enter(node.props[j][1], ((OBJ_AFTER, node, j + 1, 0), parent), b, out)


def _obj_after(f, parent, b, out) -> None:
    if _ws(f, parent, b, out):
        return
    node, i = f[1], f[2]
    if b == 0x2C and i < len(node.props):
        out.append(((OBJ_NEXT, node, i, 0), parent))
    elif b == 0x7D and node.can_close[i]:
        out.append(parent)


def _obj_next(f, parent, b, out) -> None:
    if not _ws(f, parent, b, out) and b == 0x22:
        out.append(((OBJ_KEY, f[1], f[2], 0), parent))


def _fobj_open(f, parent, b, out) -> None:
    if _ws(f, parent, b, out):
        return
    if b == 0x7D:
        out.append(parent)
    elif b == 0x22:
        out.append(((STR_BODY, f[1].key, 0, 0), ((FOBJ_COLON, f[1], 0), parent)))


def _fobj_colon(f, parent, b, out) -> None:
    if not _ws(f, parent, b, out) and b == 0x3A:
        out.append(((FOBJ_VAL, f[1], 0), parent))


def _fobj_val(f, parent, b, out) -> None:
    if not _ws(f, parent, b, out):
        _enter(f[1].value, ((FOBJ_AFTER, f[1], 0), parent), b, out)


def _fobj_after(f, parent, b, out) -> None:
    if _ws(f, parent, b, out):
        return
    if b == 0x2C:
        out.append(((FOBJ_NEXT, f[1], 0), parent))
    elif b == 0x7D:
        out.append(parent)


def _fobj_next(f, parent, b, out) -> None:
    if not _ws(f, parent, b, out) and b == 0x22:
        out.append(((STR_BODY, f[1].key, 0, 0), ((FOBJ_COLON, f[1], 0), parent)))


def _arr_open(f, parent, b, out) -> None:
    if _ws(f, parent, b, out):
        return
    node = f[1]
    if b == 0x5D:
        if node.min == 0:
            out.append(parent)
    elif node.max > 0:
        _enter(node.item, ((ARR_AFTER, node, 1, 0), parent), b, out)


def _arr_after(f, parent, b, out) -> None:
    if _ws(f, parent, b, out):
        return
    node, c = f[1], f[2]
    if b == 0x2C and c < node.max:
        out.append(((ARR_NEXT, node, c, 0), parent))
    elif b == 0x5D and c >= node.min:
        out.append(parent)


def _arr_next(f, parent, b, out) -> None:
    if not _ws(f, parent, b, out):
        _enter(f[1].item, ((ARR_AFTER, f[1], f[2] + 1, 0), parent), b, out)


def _str_body(f, parent, b, out) -> None:
    _, node, c, u = f
    if u:
        lo, hi, nxt = U8_NEXT[u]
        if lo <= b <= hi:
            out.append(((STR_BODY, node, c, nxt), parent))
    elif b == 0x22:
        if c >= node.min:
            out.append(parent)
    elif c >= node.max or b < 0x20:
        return
    elif b == 0x5C:
        out.append(((STR_ESC, node, c), parent))
    elif b < 0x80:
        out.append(((STR_BODY, node, c + 1, 0), parent))
    elif U8_LEAD[b]:
        out.append(((STR_BODY, node, c + 1, U8_LEAD[b]), parent))


def _str_esc(f, parent, b, out) -> None:
    if b in _ESCAPES:
        out.append(((STR_BODY, f[1], f[2] + 1, 0), parent))
    elif b == 0x75:  # \uXXXX
        out.append(((STR_HEX, f[1], f[2], 0), parent))


def _str_hex(f, parent, b, out) -> None:
    _, node, c, k = f  # k: hex digits read; -1: read a 'd' first (the next must be 0-7: no surrogates)
    if b not in _HEX or (k < 0 and b > 0x37):
        return
    k = -1 if k == 0 and (b == 0x64 or b == 0x44) else 2 if k < 0 else k + 1
    out.append(((STR_HEX, node, c, k) if k < 4 else (STR_BODY, node, c + 1, 0), parent))


def _lit_at(node, t: int, parent, out) -> None:
    if node.trie.next[t]:
        out.append(((LIT, node, t), parent))
    else:  # a whole value and nothing can extend it: done
        out.append(parent)


def _lit(f, parent, b, out) -> None:
    node, t = f[1], f[2]
    nxt = node.trie.next[t].get(b)
    if nxt is not None:
        _lit_at(node, nxt, parent, out)
    if node.trie.value[t] is not None and parent is not None:  # complete: b belongs to the parent
        _STEP[parent[0][0]](parent[0], parent[1], b, out)


def _num(f, parent, b, out) -> None:
    _, node, ph, ni, nf, ne, text = f
    new = None
    if 0x30 <= b <= 0x39:
        if ph == N_START or ph == N_MINUS:
            new = (N_ZERO if b == 0x30 else N_INT, 1, 0, 0)
        elif ph == N_INT and ni < node.int_cap:
            new = (N_INT, ni + 1, 0, 0)
        elif (ph == N_DOT or ph == N_FRAC) and nf < node.frac_cap:
            new = (N_FRAC, ni, nf + 1, 0)
        elif ph == N_E or ph == N_ESIGN or (ph == N_EXP and ne < node.exp_cap):
            new = (N_EXP, ni, nf, ne + 1)
    elif b == 0x2D:
        new = (N_MINUS, 0, 0, 0) if ph == N_START else (N_ESIGN, ni, nf, 0) if ph == N_E else None
    elif b == 0x2B:
        new = (N_ESIGN, ni, nf, 0) if ph == N_E else None
    elif b == 0x2E:
        new = (N_DOT, ni, 0, 0) if (ph == N_ZERO or ph == N_INT) and node.frac_cap else None
    elif b == 0x65 or b == 0x45:
        new = (N_E, ni, nf, 0) if ph in (N_ZERO, N_INT, N_FRAC) and node.exp_cap else None
    if new is not None:
        t2 = text + chr(b) if node.bounded else ""
        if not node.bounded or node.feasible(t2):
            out.append(((NUM, node, *new, t2), parent))
    if ph in _N_ACCEPT and parent is not None and (not node.bounded or node.in_range(text)):
        _STEP[parent[0][0]](parent[0], parent[1], b, out)  # the number ended: b belongs to the parent


_STEP = [_val, _obj_open, _obj_key, _obj_colon, _obj_val, _obj_after, _obj_next, _fobj_open, _fobj_colon,
         _fobj_val, _fobj_after, _fobj_next, _arr_open, _arr_after, _arr_next, _str_body, _str_esc, _str_hex,
         _lit, _num]
