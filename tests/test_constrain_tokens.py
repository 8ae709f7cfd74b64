"""Constrained decoding at the token level: engine/constrain.py's masks on SmolLM2's real vocabulary
against a brute-force check of every token; random rollouts that pick any allowed token and must end in
JSON that validates (jsonschema); the constraint hook in engine/sampling.py; the real model generating
tool calls and nested objects through the Engine. `pytest -s -k real_model` prints the measured mask
times. tests/test_constrain.py covers the schema compiler and the byte automaton without a tokenizer.
"""
from __future__ import annotations

import json
import random
import statistics
import time

import pytest
import torch

from groundup.engine.constrain import accepting, compile_json_schema, step_all
from groundup.engine.json_schema import tool_calls_schema
from groundup.engine.sampling import SamplingParams, SequenceSampler, sample_batch
from groundup.errors import GroundupError
from tests.constrain_helpers import PERSON, TIME, TOOL_CALLS, TREE, WEATHER, run

jsonschema = pytest.importorskip("jsonschema", reason="validating outputs needs jsonschema (pip install jsonschema)")


@pytest.fixture(autouse=True)
def _one_thread():
    """One intra-op thread: steadier on a busy 2-core machine (OpenMP stalls when the other
    core is taken); the previous setting is restored after each test."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


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
