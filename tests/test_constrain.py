"""Constrained decoding on byte strings, no tokenizer: engine/json_schema.py (schema -> nodes) and the
byte automaton over them (engine/json_automaton.py through engine/constrain.py): which texts each schema
accepts, where it refuses a byte, tool-call schemas, depth caps, and clear errors for unsupported keywords.
tests/test_constrain_tokens.py covers the token level (masks, rollouts, the sampler, the real model).
"""
from __future__ import annotations

import json
import re

import pytest

from groundup.engine.json_schema import compile_schema, tool_calls_schema
from groundup.errors import GroundupError
from tests.constrain_helpers import PERSON, TOOL_CALLS, TREE, WEATHER, run

jsonschema = pytest.importorskip("jsonschema", reason="validating outputs needs jsonschema (pip install jsonschema)")


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
