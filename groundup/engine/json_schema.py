"""JSON Schema -> a grammar graph: the schema half of constrained decoding.

`compile_schema(schema)` turns a JSON Schema into a small graph of the nodes defined in
engine/json_nodes.py: `Obj` (known properties), `FreeObj` (any keys), `Arr`, `Str`, `Lit`
(enum/const/true/false/null), `Num` (exact bounds) and `Alt` (anyOf/oneOf, type lists, $ref
targets). engine/json_automaton.py reads JSON text over this graph one byte at a time and
engine/constrain.py turns that into a token mask. `tool_calls_schema(tools)` builds the
schema of a tool-call array from OpenAI-style tool definitions.

What gets generated is a subset of what the schema accepts, always valid against it:
objects emit only the listed properties, in `properties` order, required ones always
(additionalProperties is used only for objects without `properties`); whitespace is capped
per gap (`max_whitespace` bytes; none before or after the top-level value); strings are valid
UTF-8 with JSON escapes (no raw control characters, no \\uD800-DFFF escapes) and at most
maxLength (default `max_string`) characters; numbers have at most 16 integer and 16 fraction
digits and a 2-digit exponent; minimum/maximum/exclusiveMinimum/exclusiveMaximum are enforced
exactly (a bounded number gets no exponent); enum/const values come out in compact json.dumps
form; oneOf is treated as anyOf (branches that can both match are not excluded). Schema-free
values (`{}`, `true`, objects without properties) nest at most `max_depth` containers deep.
Keywords that constrain values in ways not supported (pattern, multipleOf, uniqueItems, not,
...) raise a GroundupError naming the keyword and where it is; annotations (title,
description, format, default, ...) and unknown keywords are ignored, as JSON Schema does.
"""
from __future__ import annotations

import math
from fractions import Fraction

from groundup.engine.json_nodes import K_ALT, Alt, Arr, FreeObj, Lit, Num, Obj, Str
from groundup.engine.json_nodes import K_ARR, K_LIT, K_NUM, K_OBJ, K_STR  # noqa: F401  (json_automaton's import)
from groundup.errors import GroundupError

_NO_LIMIT = 1 << 62  # maxItems when absent
_IGNORED = frozenset({"title", "description", "default", "examples", "$schema", "$id", "$comment",
                      "$defs", "definitions", "deprecated", "readOnly", "writeOnly", "format",
                      "contentMediaType", "contentEncoding", "strict", "$anchor"})
_UNSUPPORTED = ("pattern", "patternProperties", "multipleOf", "uniqueItems", "not", "if", "then", "else",
                "dependentRequired", "dependentSchemas", "dependencies", "propertyNames", "contains",
                "minContains", "maxContains", "prefixItems", "unevaluatedProperties",
                "unevaluatedItems", "$dynamicRef", "$recursiveRef")
_OBJ_KW = ("properties", "required", "additionalProperties", "minProperties", "maxProperties")
_ARR_KW = ("items", "minItems", "maxItems")
_STR_KW = ("minLength", "maxLength")
_NUM_KW = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


def tool_calls_schema(tools: list[dict], parallel: bool = True) -> dict:
    """A schema for a JSON array of calls `[{"name": ..., "arguments": {...}}, ...]` to the given
    tools (OpenAI form {"type": "function", "function": {"name", "parameters"}} or bare
    {"name", "parameters"}): one anyOf branch per tool, its arguments its parameters schema
    (kept under $defs, local $refs inside rewritten to match). parallel=False: exactly one call."""
    if not isinstance(tools, list) or not tools:
        raise GroundupError("tools must be a non-empty list of tool definitions")
    defs, branches = {}, []
    for i, tool in enumerate(tools):
        fn = tool.get("function", tool) if isinstance(tool, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str):
            raise GroundupError(f"tool {i} has no function name")
        key = f"tool{i}_parameters"
        defs[key] = _rebase(fn.get("parameters") or {"type": "object", "properties": {}}, f"#/$defs/{key}")
        branches.append({"type": "object", "properties": {"name": {"const": fn["name"]},
                                                         "arguments": {"$ref": f"#/$defs/{key}"}},
                         "required": ["name", "arguments"]})
    return {"$defs": defs, "type": "array", "minItems": 1, **({} if parallel else {"maxItems": 1}),
            "items": branches[0] if len(branches) == 1 else {"anyOf": branches}}


def _rebase(s, root: str):
    """A copy of schema s with its local $refs ('#...') made relative to `root`."""
    if isinstance(s, list):
        return [_rebase(x, root) for x in s]
    if not isinstance(s, dict):
        return s
    return {k: (root + v[1:] if k == "$ref" and isinstance(v, str) and v.startswith("#") else
                v if k in ("enum", "const", "default", "examples") else _rebase(v, root)) for k, v in s.items()}


def compile_schema(schema: dict | bool | None, *, max_string: int = 512, max_whitespace: int = 2,
                   max_depth: int = 6) -> object:
    """The root node for `schema` (None: any JSON object). Raises GroundupError on what it cannot do."""
    return _Compiler(schema, max_string, max_whitespace, max_depth).root


class _Compiler:
    def __init__(self, schema, max_string: int, ws: int, depth: int) -> None:
        self.doc, self.max_string, self.ws, self.depth = schema, max_string, ws, depth
        self.refs: dict[str, Alt] = {}
        self.anys: dict[int, Alt] = {}
        if schema is None:
            self.root = FreeObj(self.any(depth - 1), ws)
        else:
            self.root = self.node(schema, "#")
        for alt in self.refs.values():
            self._check_cycle(alt, [])

    def _check_cycle(self, node, path: list) -> None:
        if node.kind != K_ALT:
            return
        if any(node is p for p in path):
            raise GroundupError("schema $ref cycle with no object or array in between: it has no finite value")
        for o in node.options:
            self._check_cycle(o, path + [node])

    def any(self, depth: int) -> Alt:
        """Any JSON value with at most `depth` more levels of containers."""
        if depth not in self.anys:
            alt = self.anys[depth] = Alt([Str(0, self.max_string), Num(False), Lit([True, False, None])])
            if depth > 0:
                alt.options += [FreeObj(self.any(depth - 1), self.ws), Arr(self.any(depth - 1), 0, _NO_LIMIT, self.ws)]
        return self.anys[depth]

    def ref(self, ref: str, where: str) -> Alt:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise GroundupError(f"schema $ref {ref!r} at {where} is not supported: only local refs "
                                "('#', '#/$defs/NAME', '#/definitions/NAME')")
        if ref not in self.refs:
            self.refs[ref] = alt = Alt([])
            target = self.doc
            for part in [p for p in ref[1:].split("/") if p]:
                part = part.replace("~1", "/").replace("~0", "~")
                if not isinstance(target, dict) or part not in target:
                    raise GroundupError(f"schema $ref {ref!r} at {where} points to nothing")
                target = target[part]
            alt.options.append(self.node(target, ref))
        return self.refs[ref]

    def node(self, s, where: str):
        if s is True or s == {}:
            return self.any(self.depth)
        if s is False:
            raise GroundupError(f"schema at {where} is false: no value can match it")
        if not isinstance(s, dict):
            raise GroundupError(f"schema at {where} must be an object or a boolean, got {type(s).__name__}")
        for kw in _UNSUPPORTED:
            if kw in s and not (kw == "uniqueItems" and s[kw] is False):
                raise GroundupError(f"schema keyword {kw!r} at {where} is not supported by constrained decoding; "
                                    "remove it (or use enum)")
        rest = [k for k in s if k not in _IGNORED]
        for kw in ("$ref", "allOf", "anyOf", "oneOf"):
            if kw in s:
                others = [k for k in rest if k != kw]
                if others:
                    raise GroundupError(f"schema keyword {kw!r} at {where} next to {', '.join(map(repr, others))} "
                                        f"is not supported; move those into the {kw} subschemas")
                if kw == "$ref":
                    return self.ref(s["$ref"], where)
                subs = s[kw]
                if not isinstance(subs, list) or not subs:
                    raise GroundupError(f"schema keyword {kw!r} at {where} must be a non-empty list of schemas")
                if kw == "allOf" and len(subs) > 1:
                    raise GroundupError(f"schema keyword 'allOf' with {len(subs)} subschemas at {where} is not "
                                        "supported (only a single one); merge them into one schema")
                opts = [self.node(x, f"{where}/{kw}/{i}") for i, x in enumerate(subs)]
                return opts[0] if len(opts) == 1 else Alt(opts)
        types = s.get("type")
        types = [types] if isinstance(types, str) else list(types) if types is not None else None
        if s.get("nullable") is True and types is not None and "null" not in types:
            types.append("null")
        if "enum" in s or "const" in s:
            values = [s["const"]] if "const" in s else s["enum"]
            if not isinstance(values, list):
                raise GroundupError(f"schema keyword 'enum' at {where} must be a list")
            if types is not None:
                values = [v for v in values if _json_type(v) in types
                          or (_json_type(v) == "integer" and "number" in types)]
            if not values:
                raise GroundupError(f"schema at {where}: enum/const leaves no value of type {types}")
            try:
                return Lit(values)
            except ValueError as e:
                raise GroundupError(f"schema at {where}: enum/const value is not JSON ({e})") from None
        if types is None:  # infer the type from the keywords present
            types = [t for t, kws in (("object", _OBJ_KW), ("array", _ARR_KW), ("string", _STR_KW),
                                      ("number", _NUM_KW)) if any(k in s for k in kws)]
            if not types:
                return self.any(self.depth)
        if not types:
            raise GroundupError(f"schema keyword 'type' at {where} is an empty list")
        opts = [self.typed(s, t, where) for t in dict.fromkeys(types)]
        return opts[0] if len(opts) == 1 else Alt(opts)

    def typed(self, s: dict, t: str, where: str):
        if t == "object":
            return self.obj(s, where)
        if t == "array":
            items = s.get("items", True)
            if isinstance(items, list):
                raise GroundupError(f"schema keyword 'items' at {where} as a list (tuple form) is not supported")
            lo, hi = _count(s, "minItems", 0, where), _count(s, "maxItems", _NO_LIMIT, where)
            if lo > hi:
                raise GroundupError(f"schema at {where}: minItems {lo} > maxItems {hi}")
            return Arr(self.node(items, f"{where}/items"), lo, hi, self.ws)
        if t == "string":
            lo, hi = _count(s, "minLength", 0, where), _count(s, "maxLength", max(self.max_string, 0), where)
            if "maxLength" not in s:
                hi = max(hi, lo)
            if lo > hi:
                raise GroundupError(f"schema at {where}: minLength {lo} > maxLength {hi}")
            return Str(lo, hi)
        if t in ("number", "integer"):
            return self.num(s, t == "integer", where)
        if t == "boolean":
            return Lit([True, False])
        if t == "null":
            return Lit([None])
        raise GroundupError(f"schema type {t!r} at {where} is unknown (expected object, array, string, number, "
                            "integer, boolean or null)")

    def obj(self, s: dict, where: str):
        props, required = s.get("properties"), s.get("required", [])
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise GroundupError(f"schema keyword 'required' at {where} must be a list of property names")
        if props is None and not required:
            if _count(s, "minProperties", 0, where) or "maxProperties" in s:
                raise GroundupError(f"schema keywords 'minProperties'/'maxProperties' at {where} are not supported "
                                    "on an object without 'properties'")
            extra = s.get("additionalProperties", True)
            if extra is False:
                return Obj([], self.ws)
            value = self.any(self.depth - 1) if extra is True or extra == {} else \
                self.node(extra, f"{where}/additionalProperties")
            return FreeObj(value, self.ws)
        if not isinstance(props or {}, dict):
            raise GroundupError(f"schema keyword 'properties' at {where} must be an object")
        names = list(props or {}) + [r for r in dict.fromkeys(required) if r not in (props or {})]
        out = [(n, self.node((props or {}).get(n, True), f"{where}/properties/{n}"), n in required)
               for n in names]
        if _count(s, "minProperties", 0, where) > len(set(required)) or \
                _count(s, "maxProperties", _NO_LIMIT, where) < len(names):
            raise GroundupError(f"schema keywords 'minProperties'/'maxProperties' at {where} are only supported "
                                "when the required / listed properties already satisfy them")
        return Obj(out, self.ws)

    def num(self, s: dict, integer: bool, where: str) -> Num:
        def bound(key: str) -> Fraction | None:
            v = s.get(key)
            if v is None or isinstance(v, bool):
                return None
            if not isinstance(v, (int, float)) or not math.isfinite(v):
                raise GroundupError(f"schema keyword {key!r} at {where} must be a finite number")
            return Fraction(v)

        lo, hi = bound("minimum"), bound("maximum")
        lo_x = hi_x = False
        if s.get("exclusiveMinimum") is True:  # draft 4: a flag on minimum
            lo_x = lo is not None
        elif (x := bound("exclusiveMinimum")) is not None and (lo is None or x >= lo):
            lo, lo_x = x, True
        if s.get("exclusiveMaximum") is True:
            hi_x = hi is not None
        elif (x := bound("exclusiveMaximum")) is not None and (hi is None or x <= hi):
            hi, hi_x = x, True
        node = Num(integer, lo, hi, lo_x, hi_x)
        if node.bounded and not node.feasible(""):
            raise GroundupError(f"schema at {where}: no {'integer' if integer else 'number'} lies between "
                                f"the minimum and maximum")
        return node


def _count(s: dict, key: str, default: int, where: str) -> int:
    v = s.get(key, default)
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int) or isinstance(v, bool) or v < 0:
        raise GroundupError(f"schema keyword {key!r} at {where} must be an integer >= 0 (got {v!r})")
    return v


def _json_type(v) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return "integer"
    return {float: "number", str: "string", list: "array", dict: "object"}.get(type(v), "?")
