"""Tests for constrained decoding: engine/json_schema.py (schema -> nodes), engine/constrain.py
(byte automaton, token masks) and the constraint hook in engine/sampling.py.

Layers: the automaton on byte strings (no tokenizer); masks on SmolLM2's real vocabulary
against a brute-force check of every token; random rollouts that pick any allowed token and
must end in JSON that validates (jsonschema); the real model generating tool calls and nested
objects through the Engine. `pytest -s -k real_model` prints the measured mask times.
"""
from __future__ import annotations

import json
import random
import re
import statistics
import time

import pytest
import torch

from groundup.engine.constrain import accepting, compile_json_schema, initial, step_all
from groundup.engine.json_schema import compile_schema, tool_calls_schema
from groundup.engine.sampling import SamplingParams, SequenceSampler, sample_batch
from groundup.errors import GroundupError

jsonschema = pytest.importorskip("jsonschema", reason="validating outputs needs jsonschema (pip install jsonschema)")

WEATHER = {"type": "object", "properties": {
    "location": {"type": "string", "description": "city name", "maxLength": 40},
    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    "days": {"type": "integer", "minimum": 1, "maximum": 14}}, "required": ["location", "unit"]}
TIME = {"type": "object", "properties": {"timezone": {"type": "string", "maxLength": 30}}, "required": ["timezone"]}
TOOL_CALLS = {"type": "array", "minItems": 1, "maxItems": 2, "items": {"oneOf": [
    {"type": "object", "properties": {"name": {"const": "get_weather"}, "arguments": WEATHER},
     "required": ["name", "arguments"]},
    {"type": "object", "properties": {"name": {"const": "get_time"}, "arguments": TIME},
     "required": ["name", "arguments"]}]}}
PERSON = {"type": "object", "properties": {
    "name": {"type": "string", "minLength": 1, "maxLength": 30},
    "age": {"type": "integer", "minimum": 0, "maximum": 120},
    "height_m": {"type": "number", "exclusiveMinimum": 0, "maximum": 3},
    "email": {"type": ["string", "null"], "maxLength": 40},
    "address": {"$ref": "#/$defs/address"},
    "tags": {"type": "array", "items": {"type": "string", "maxLength": 12}, "maxItems": 3},
    "active": {"type": "boolean"}},
    "required": ["name", "age", "address"],
    "$defs": {"address": {"type": "object", "properties": {
        "city": {"type": "string", "maxLength": 24}, "zip": {"type": "string", "minLength": 5, "maxLength": 5},
        "country": {"enum": ["FR", "DE", "US", None]}}, "required": ["city", "country"]}}}
TREE = {"definitions": {"node": {"type": "object", "properties": {
    "v": {"type": "integer", "minimum": -50, "maximum": 50},
    "kids": {"type": "array", "items": {"$ref": "#/definitions/node"}, "maxItems": 2}}, "required": ["v"]}},
    "$ref": "#/definitions/node"}


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: steadier on a busy 2-core machine (OpenMP stalls when the other
    core is taken); the previous setting is restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def run(schema, text: str | bytes, **kw) -> str:
    """'accept' (a complete value), 'prefix' (valid so far) or 'reject@i' (byte i refused)."""
    st = initial(compile_schema(schema, **kw))
    for i, b in enumerate(text.encode() if isinstance(text, str) else text):
        st = step_all(st, b)
        if not st:
            return f"reject@{i}"
    return "accept" if accepting(st) else "prefix"


# ---- the automaton on byte strings ------------------------------------------------------------
@pytest.mark.parametrize("schema,text,want", [
    # object: properties in order, required always, optional may be skipped, nothing else
    (WEATHER, '{"location":"Paris","unit":"celsius"}', "accept"),
    (WEATHER, '{"location":"Paris","unit":"celsius","days":3}', "accept"),
    (WEATHER, '{"location": "Paris", "unit": "celsius"}', "accept"),
    (WEATHER, '{"location":"Paris"}', "reject@19"),  # unit is required
    (WEATHER, '{"unit":"celsius","location":"Paris"}', "reject@2"),  # order of properties
    (WEATHER, '{"location":"Paris","unit":"celsius","x":1}', "reject@38"),  # additional property
    (WEATHER, '{"location":"Paris","unit":"kelvin"}', "reject@28"),  # enum
    (WEATHER, '{"location":"Paris","unit":"celsius","days":15}', "reject@45"),  # maximum
    (WEATHER, '{"location":"Paris","unit":"celsius",}', "reject@37"),
    ({"type": "object", "properties": {}}, "{}", "accept"),
    ({"type": "object", "properties": {}}, '{"a":1}', "reject@1"),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, '{"a":1,"b":-2}', "accept"),
    ({"type": "object", "additionalProperties": {"type": "integer"}}, '{"a":"x"}', "reject@5"),
    ({"type": "object", "additionalProperties": False}, '{"a":1}', "reject@1"),
    # array: items, minItems, maxItems
    ({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}, "[1, 2]", "accept"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}, "[]", "reject@1"),
    ({"type": "array", "items": {"type": "integer"}, "minItems": 1, "maxItems": 2}, "[1,2,3]", "reject@4"),
    ({"type": "array", "items": {"type": "integer"}}, '[1,"a"]', "reject@3"),
    # string: escapes, no raw control characters, UTF-8 only, lengths in characters
    ({"type": "string"}, r'"a\n\t\"\\\/\u00e9\u20AC"', "accept"),
    ({"type": "string"}, '"a\nb"', "reject@2"),
    ({"type": "string"}, r'"\x"', "reject@2"),
    ({"type": "string"}, r'"\ud83d\ude00"', "reject@4"),  # no surrogate escapes
    ({"type": "string"}, '"\u00e9\u20ac\U0001f600"', "accept"),
    ({"type": "string"}, b'"\xc3"', "reject@2"),  # cut-off UTF-8
    ({"type": "string"}, b'"\xc0\xaf"', "reject@1"),  # overlong
    ({"type": "string"}, b'"\xed\xa0\x80"', "reject@2"),  # encoded surrogate
    ({"type": "string"}, b'"\x80"', "reject@1"),
    ({"type": "string", "minLength": 2, "maxLength": 3}, '"\u00e9"', "reject@3"),
    ({"type": "string", "minLength": 2, "maxLength": 3}, '"\u00e9\u00e9\u00e9"', "accept"),
    ({"type": "string", "minLength": 2, "maxLength": 3}, '"abcd"', "reject@4"),
    ({"type": "string", "maxLength": 2}, r'"\n\u0041"', "accept"),
    ({"type": "string"}, '"' + "x" * 20 + '"', "accept"),
    ({"type": "string"}, '"' + "x" * 21, "reject@21"),  # the default cap (max_string below)
    ({"const": "get_weather"}, '"get_weather"', "accept"),
    ({"const": "get_weather"}, '"get_time"', "reject@5"),
    # numbers
    ({"type": "number"}, "-12.5e+3", "accept"),
    ({"type": "number"}, "0.25", "accept"),
    ({"type": "number"}, "01", "reject@1"),
    ({"type": "number"}, "1.", "prefix"),
    ({"type": "number"}, "-", "prefix"),
    ({"type": "number"}, "1e", "prefix"),
    ({"type": "integer"}, "12", "accept"),
    ({"type": "integer"}, "1.5", "reject@1"),
    ({"type": "integer"}, "1e3", "reject@1"),
    ({"type": "integer"}, "1" * 17, "reject@16"),  # digit cap
    ({"type": "integer", "minimum": 1, "maximum": 14}, "2", "accept"),
    ({"type": "integer", "minimum": 1, "maximum": 14}, "20", "reject@1"),
    ({"type": "integer", "minimum": 1, "maximum": 14}, "0", "reject@0"),
    ({"type": "integer", "minimum": -10, "maximum": -3}, "-7", "accept"),
    ({"type": "integer", "minimum": -10, "maximum": -3}, "-2", "reject@1"),
    ({"type": "integer", "minimum": -10, "maximum": -3}, "-11", "reject@2"),
    ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, "0", "prefix"),  # 0.x still possible
    ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, "0.5", "accept"),
    ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, "1.5", "reject@2"),
    ({"type": "number", "exclusiveMinimum": 0, "maximum": 1}, "1.0", "accept"),
    ({"type": "number", "minimum": 0, "exclusiveMaximum": 1}, "1", "reject@0"),
    ({"type": "number", "minimum": 0, "maximum": 1}, "1e0", "reject@1"),  # bounded: no exponent
    ({"type": "number", "maximum": 5, "exclusiveMaximum": True}, "5", "reject@0"),  # draft-4 flag
    # literals and unions
    ({"type": "boolean"}, "true", "accept"),
    ({"type": "boolean"}, "tru", "prefix"),
    ({"type": "null"}, "nul", "prefix"),
    ({"type": "null"}, "none", "reject@1"),
    ({"enum": [1, 12, "x", {"a": [1, 2]}, None]}, "12", "accept"),
    ({"enum": [1, 12, "x", {"a": [1, 2]}, None]}, "123", "reject@2"),
    ({"enum": [1, 12, "x", {"a": [1, 2]}, None]}, '{"a":[1,2]}', "accept"),
    ({"type": ["string", "null"]}, "null", "accept"),
    ({"type": ["string", "null"]}, "1", "reject@0"),
    ({"anyOf": [{"type": "integer"}, {"type": "string"}]}, '"7"', "accept"),
    (TOOL_CALLS, '[{"name":"get_time","arguments":{"timezone":"UTC"}}]', "accept"),
    (TOOL_CALLS, '[{"name":"get_time","arguments":{"location":"Paris","unit":"celsius"}}]', "reject@34"),
    (TOOL_CALLS, '[{"name":"get_weather","arguments":{"location":"Paris","unit":"celsius"}}]', "accept"),
    ({"type": "string", "nullable": True}, "null", "accept"),
    ({"allOf": [{"type": "integer"}], "description": "one subschema"}, "5", "accept"),
    ({"type": "array", "items": {"type": "integer"}, "uniqueItems": False}, "[1,1]", "accept"),
    # $ref (recursive), $defs / definitions, nesting
    (TREE, '{"v":1,"kids":[{"v":2,"kids":[{"v":-3}]},{"v":4}]}', "accept"),
    (TREE, '{"v":1,"kids":[{"v":2,"kids":[{"v":51}]}]}', "reject@36"),
    (PERSON, '{"name":"Ann","age":30,"address":{"city":"Lyon","zip":"69001","country":"FR"},"tags":["a"]}',
     "accept"),
    (PERSON, '{"name":"Ann","age":30,"address":{"city":"Lyon","zip":"6900","country":"FR"}}', "reject@59"),
    # whitespace: capped per gap (2 bytes here), none before or after the value
    (WEATHER, '{ \n"location":"P","unit":"celsius"}', "accept"),
    (WEATHER, '{   "location":"P","unit":"celsius"}', "reject@3"),
    (WEATHER, ' {"location":"P","unit":"celsius"}', "reject@0"),
    (WEATHER, '{"location":"P","unit":"celsius"} ', "reject@33"),
    # schema None: any JSON object
    (None, '{"x":[1,{"y":null}],"z":"w","n":-1.5e3}', "accept"),
    (None, "[1]", "reject@0"),
    ({}, "[1]", "accept"),
])
def test_automaton(schema, text, want):
    assert run(schema, text, max_string=20) == want


def test_tool_calls_schema():
    """One branch per tool (OpenAI or bare form); $refs inside a tool's parameters still resolve."""
    addr = {"$defs": {"Addr": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            "type": "object", "properties": {"to": {"$ref": "#/$defs/Addr"}}, "required": ["to"]}
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}},
             {"name": "ship", "parameters": addr}, {"type": "function", "function": {"name": "ping"}}]
    schema = tool_calls_schema(tools)
    ok = ('[{"name":"get_weather","arguments":{"location":"Oslo","unit":"celsius"}},'
          '{"name":"ship","arguments":{"to":{"city":"Rome"}}},{"name":"ping","arguments":{}}]')
    assert run(schema, ok) == "accept"
    jsonschema.validate(json.loads(ok), schema)
    assert run(schema, '[{"name":"ship","arguments":{"to":{"town":"Rome"}}}]') == "reject@36"
    assert run(schema, "[]") == "reject@1"
    one = tool_calls_schema(tools, parallel=False)
    assert run(one, '[{"name":"ping","arguments":{}},') == "reject@31"
    with pytest.raises(GroundupError, match="name"):
        tool_calls_schema([{"type": "function", "function": {"parameters": {}}}])


def test_free_form_depth_is_capped():
    assert run(None, '{"a":{"b":1}}', max_depth=2) == "accept"
    assert run(None, '{"a":{"b":{}}}', max_depth=2) == "reject@10"


@pytest.mark.parametrize("schema,keyword", [
    ({"type": "string", "pattern": "^a+$"}, "pattern"),
    ({"type": "integer", "multipleOf": 3}, "multipleOf"),
    ({"type": "array", "uniqueItems": True}, "uniqueItems"),
    ({"not": {"type": "string"}}, "not"),
    ({"allOf": [{"type": "string"}, {"maxLength": 3}]}, "allOf"),
    ({"type": "object", "properties": {"a": {"$ref": "https://example.com/s.json"}}}, "$ref"),
    ({"type": "object", "properties": {"a": {"$ref": "#/$defs/missing"}}}, "$ref"),
    ({"type": "array", "items": [{"type": "string"}]}, "items"),
    ({"type": "string", "minLength": 5, "maxLength": 2}, "minLength"),
    ({"type": "integer", "minimum": 5, "maximum": 4}, "minimum"),
    ({"type": "date"}, "date"),
    ({"enum": []}, "enum"),
    ({"type": "object", "minProperties": 2}, "minProperties"),
])
def test_unsupported_schema_is_a_clear_error(schema, keyword):
    with pytest.raises(GroundupError, match=re.escape(keyword)):
        compile_schema(schema)


# ---- masks on the real vocabulary -------------------------------------------------------------
@pytest.fixture(scope="module")
def smol(smollm2_path):
    from groundup.models import load_model

    return load_model(str(smollm2_path))


@pytest.fixture(scope="module")
def tok(smol):
    return smol[1]


def token_id(tok, piece: bytes) -> int:
    return next(i for i in range(tok.vocab_size) if not tok.is_special(i) and tok.token_bytes(i) == piece)


def brute_force_mask(con) -> torch.Tensor:
    """Every token checked by running its bytes through the automaton (the reference)."""
    v = con.vocab
    out = torch.zeros(v.size, dtype=torch.bool)
    after_first = {b: step_all(con.states, b) for b in range(256)}
    for i, piece in enumerate(v.pieces):
        s = after_first[piece[0]] if piece else []
        for b in piece[1:]:
            if not s:
                break
            s = step_all(s, b)
        out[i] = bool(s)
    if accepting(con.states):
        out[v.eos] = True
    return out


def test_masks_equal_brute_force(tok):
    """Trie walk, plain-token table for strings and the cache agree with checking every token,
    at states of each kind: structure, key, string body (also near maxLength, mid-character, and
    a later position that hits the cache entry of an earlier one), number, enum."""
    schema = {"type": "object", "properties": {"s": {"type": "string", "maxLength": 6}, "t": {"type": "string"},
                                               "n": {"type": "number"}, "e": {"enum": ["ab", "abc", 7]}},
              "required": ["s", "n"]}
    g = compile_json_schema(schema, tok)
    # (token, check the mask after it?)
    path = [(b'{"', 0), (b"s", 0), (b'":', 1), (b' "', 0), (b"ab", 1), (b"\xc3", 1), (b"\xa9", 0), (b"cd", 0),
            (b'",', 1), (b' "', 0), (b"t", 0), (b'":"', 0), (b"x", 1), (b"ab", 1), (b'","', 0), (b"n", 0), (b'":', 0),
            (b"1", 1), (b".", 0), (b"5", 1), (b",", 0), (b'"', 1), (b"e", 0), (b'":', 0), (b'"', 0), (b"ab", 1)]
    con, checked = g.start(), 0
    for piece, check in path:
        con.advance(token_id(tok, piece))
        if check:
            assert torch.equal(con.allowed(), brute_force_mask(con)), bytes(con.output)
            checked += 1
    assert checked == 10


def test_done_allows_exactly_eos_and_bad_tokens_raise(tok):
    con = compile_json_schema({"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]},
                              tok).start()
    assert not con.allowed()[token_id(tok, b"[")]
    with pytest.raises(GroundupError, match="does not continue"):
        con.advance(token_id(tok, b"["))
    with pytest.raises(GroundupError, match="before the JSON value is complete"):
        con.advance(tok.eos_id)
    for piece in (b'{"', b"ok", b'":', b"true", b"}"):
        assert not con.done
        con.advance(token_id(tok, piece))
    assert con.done and con.can_end
    assert con.allowed().nonzero().squeeze(1).tolist() == sorted(tok.eos_ids)
    con.advance(tok.eos_id)
    assert con.finished and json.loads(bytes(con.output)) == {"ok": True}


def test_compiled_grammar_is_cached(tok):
    """The same schema (keywords in any order) is the same Grammar, sharing its mask cache;
    the order of properties is the order of generation, so it makes a different one."""
    a = compile_json_schema({"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "string"}}}, tok)
    b = compile_json_schema({"properties": {"a": {"type": "integer"}, "b": {"type": "string"}}, "type": "object"}, tok)
    c = compile_json_schema({"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}}, tok)
    assert b is a and c is not a
    assert compile_json_schema(None, tok) is compile_json_schema(None, tok)
    assert run({"type": "object", "properties": {"b": {"type": "string"}, "a": {"type": "integer"}}},
               '{"a":1,"b":"x"}') == "reject@6"


def rollout(con, rng: random.Random, closing: torch.Tensor, max_steps: int = 400) -> bytes:
    """Pick random allowed tokens (half the time among `closing` ones, when any) until EOS."""
    v = con.vocab
    for _ in range(max_steps):
        mask = con.allowed()
        assert mask.any(), f"no token allowed after {bytes(con.output)!r}"
        if rng.random() < 0.5 and (mask & closing).any():
            mask = mask & closing
        ids = mask.nonzero().squeeze(1)
        t = int(ids[rng.randrange(ids.numel())])
        con.advance(t)
        if t in v.eos_set:
            return bytes(con.output)
    raise AssertionError(f"rollout did not finish: {bytes(con.output)!r}")


SHIP = {"$defs": {"Addr": {"type": "object", "properties": {"city": {"type": "string", "maxLength": 10},
                                                          "n": {"type": "integer"}}, "required": ["city"]}},
        "type": "object", "properties": {"to": {"$ref": "#/$defs/Addr"}, "express": {"type": "boolean"}},
        "required": ["to"]}
ROLLOUT_SCHEMAS = {"weather": WEATHER, "tool_calls": TOOL_CALLS, "person": PERSON, "tree": TREE, "json_object": None,
                   "tools_built": tool_calls_schema([{"name": "get_time", "parameters": TIME},
                                                     {"name": "ship", "parameters": SHIP}], parallel=False)}


@pytest.mark.parametrize("name", list(ROLLOUT_SCHEMAS))
def test_random_rollouts_always_validate(tok, name):
    schema = ROLLOUT_SCHEMAS[name]
    g = compile_json_schema(schema, tok, max_string=24, max_depth=3)
    v = g.vocab
    closing = torch.tensor([any(c in p for c in b'"]}') for p in v.pieces])
    closing[v.eos] = True
    rng = random.Random(1234)
    seen = set()
    for _ in range(30):
        text = rollout(g.start(), rng, closing)
        value = json.loads(text.decode("utf-8"))
        jsonschema.validate(value, schema if schema is not None else {"type": "object"})
        seen.add(text)
    assert len(seen) > 10  # the rollouts explore, they do not repeat one document


# ---- the sampler hook -------------------------------------------------------------------------
def test_sampler_only_draws_allowed_tokens(tok):
    g = compile_json_schema(WEATHER, tok)
    gen = torch.Generator().manual_seed(0)
    for params in (SamplingParams(temperature=1.0, seed=1), SamplingParams(temperature=0.8, top_p=0.9, seed=2),
                   SamplingParams(temperature=0.7, top_k=40, min_p=0.05, repetition_penalty=1.2, seed=3),
                   SamplingParams(temperature=0)):
        s = SequenceSampler(params, tok.vocab_size, [1, 2, 3], constraint=g.start())
        for _ in range(60):
            logits = torch.randn(tok.vocab_size, generator=gen) * 4
            mask = s.constraint.allowed().clone()
            t = s.sample(logits)
            assert mask[t]
            if params.temperature == 0:
                assert t == int(logits.masked_fill(~mask, float("-inf")).argmax())
            proc = s.process(logits)
            assert torch.isinf(proc[~mask]).all()
            s.accept(t)
            if s.constraint.finished:
                break
        else:
            pytest.fail(f"no end within 60 tokens: {bytes(s.constraint.output)!r}")
        jsonschema.validate(json.loads(bytes(s.constraint.output)), WEATHER)


def test_sample_batch_mixes_constrained_and_plain_rows(tok):
    g = compile_json_schema(WEATHER, tok)
    plain = SequenceSampler(SamplingParams(temperature=0), tok.vocab_size, [1])
    cons = SequenceSampler(SamplingParams(temperature=0), tok.vocab_size, [1], constraint=g.start())
    assert plain.plain_greedy and not cons.plain_greedy
    logits = torch.randn(2, tok.vocab_size, generator=torch.Generator().manual_seed(5))
    out = sample_batch([plain, cons], logits)
    assert out[0] == int(logits[0].argmax())
    assert cons.constraint.allowed()[out[1]] and tok.token_bytes(out[1]).startswith(b"{")


# ---- the real model ---------------------------------------------------------------------------
def test_real_model_tool_calls_and_nested_objects_validate(smol):
    """SmolLM2-135M through the Engine (Request.constraint; constrained and plain rows batched
    together) at temperature 0.7: every constrained output parses and validates. Prints mask times."""
    from groundup.engine.engine import Engine, Request

    model, tok = smol
    grammars = {"tools": compile_json_schema(TOOL_CALLS, tok), "person": compile_json_schema(PERSON, tok)}
    mask_times: list[float] = []

    def timed(con):
        untimed = con.allowed

        def allowed():
            t0 = time.perf_counter()
            m = untimed()
            mask_times.append(time.perf_counter() - t0)
            return m
        con.allowed = allowed
        return con

    tools = [{"type": "function", "function": {"name": "get_weather", "description": "Current weather for a city",
                                               "parameters": WEATHER}},
             {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone",
                                               "parameters": TIME}}]
    chat_tools = tok.encode_chat([{"role": "user", "content": "What's the weather in Paris, in celsius?"}],
                                 tools=tools)
    chat_person = tok.encode_chat([{"role": "user", "content": "Describe a fictional person as JSON."}])
    kinds, reqs = [], []
    for seed in (1, 2):
        for kind, prompt in (("tools", chat_tools), ("person", chat_person)):
            kinds.append(kind)
            reqs.append(Request(prompt, SamplingParams(temperature=0.7, max_tokens=150, seed=seed),
                                constraint=timed(grammars[kind].start())))
    kinds.append("plain")
    reqs.append(Request(chat_person, SamplingParams(temperature=0, max_tokens=8)))
    engine = Engine(model, tok, max_batch=5)
    texts = [""] * len(reqs)
    finish = [None] * len(reqs)
    t0 = time.perf_counter()
    for ev in engine.generate(reqs):
        texts[ev.index] += ev.text
        finish[ev.index] = ev.finish_reason or finish[ev.index]
    wall = time.perf_counter() - t0
    for kind, text, why in zip(kinds, texts, finish):
        if kind == "plain":
            assert why == "length"
            continue
        assert why == "stop", f"{kind}: did not finish: {text!r}"
        jsonschema.validate(json.loads(text), TOOL_CALLS if kind == "tools" else PERSON)
    steps = engine.stats.generated_tokens
    ms = sorted(t * 1000 for t in mask_times)
    print(f"\n{len(ms)} masks: mean {statistics.mean(ms):.2f} ms, p95 {ms[int(0.95 * len(ms))]:.2f} ms, "
          f"max {ms[-1]:.2f} ms; engine {1000 * engine.stats.decode_s / max(1, steps):.1f} ms/token over "
          f"{steps} tokens ({wall:.1f} s)")
    for kind, text in zip(kinds, texts):
        print(f"  {kind}: {text}")
