"""Shared pieces of the constrained-decoding tests (tests/test_constrain*.py): the schemas they
decode against, and `run`, which feeds bytes to the automaton and says where it stopped."""
from __future__ import annotations

from groundup.engine.constrain import accepting, initial, step_all
from groundup.engine.json_schema import compile_schema

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


def run(schema, text: str | bytes, **kw) -> str:
    """'accept' (a complete value), 'prefix' (valid so far) or 'reject@i' (byte i refused)."""
    st = initial(compile_schema(schema, **kw))
    for i, b in enumerate(text.encode() if isinstance(text, str) else text):
        st = step_all(st, b)
        if not st:
            return f"reject@{i}"
    return "accept" if accepting(st) else "prefix"
