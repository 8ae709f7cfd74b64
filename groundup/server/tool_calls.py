"""Tool calling for models whose chat template has no tool support (SmolLM2, Gemma 3 …).

The tools are described to the model in the system message, with the format
it must use: `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`
(the Hermes/Qwen convention many small models have seen). Earlier assistant
tool calls and tool results are rewritten into that text form so a
conversation can continue after a call. The JSON after `<tool_call>` is
generated under constrained decoding against `call_schema(tools)`, so it always
parses and its arguments match the tool's parameters schema.
"""
from __future__ import annotations

import json
import secrets
from typing import Any

from groundup.errors import GroundupError

OPEN = "<tool_call>"
CLOSE = "</tool_call>"

_INSTRUCTIONS = (
    "You can call functions to help answer. The available functions, as JSON Schema:\n{tools}\n"
    "To call a function, answer with exactly:\n"
    '<tool_call>{{"name": "<function name>", "arguments": {{<arguments as JSON>}}}}</tool_call>\n'
    "Call a function only when it is needed; otherwise answer normally."
)


def text_of(content: Any) -> str:
    """Message content as plain text (a string, or the text parts of a list of parts)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for p in content:
        p = p if isinstance(p, dict) else p.model_dump()
        if p.get("type") != "text":
            raise GroundupError(f"content part of type {p.get('type')!r} is not supported; send text parts")
        parts.append(p.get("text") or "")
    return "".join(parts)


def prepare_messages(messages: list[dict], tools: list[dict] | None) -> list[dict]:
    """Plain {role, content} messages, with tools described and tool traffic written as text."""
    out: list[dict] = []
    for m in messages:
        role, content = m["role"], text_of(m.get("content"))
        if role == "developer":
            role = "system"
        if role == "assistant" and m.get("tool_calls"):
            calls = []
            for c in m["tool_calls"]:
                fn = c["function"]
                try:
                    args = json.loads(fn.get("arguments") or "{}")
                except json.JSONDecodeError:
                    raise GroundupError(f"tool call {fn.get('name')!r} has arguments that are not JSON") from None
                calls.append(OPEN + json.dumps({"name": fn["name"], "arguments": args}) + CLOSE)
            content = (content + "\n" if content else "") + "\n".join(calls)
        elif role == "tool":
            role, content = "user", f"<tool_response>\n{content}\n</tool_response>"
        out.append({"role": role, "content": content})
    if tools:
        described = "\n".join(json.dumps(t["function"]) for t in tools)
        intro = _INSTRUCTIONS.format(tools=described)
        if out and out[0]["role"] == "system":
            out[0] = {"role": "system", "content": out[0]["content"] + "\n\n" + intro}
        else:
            out.insert(0, {"role": "system", "content": intro})
    return out


def call_schema(tools: list[dict], only: str | None = None) -> dict:
    """JSON Schema of one call: {"name": <a tool>, "arguments": <its parameters>}."""
    branches = []
    for t in tools:
        fn = t["function"]
        if only is not None and fn["name"] != only:
            continue
        params = fn.get("parameters") or {"type": "object", "properties": {}}
        branches.append({"type": "object", "properties": {"name": {"const": fn["name"]}, "arguments": params},
                         "required": ["name", "arguments"], "additionalProperties": False})
    if not branches:
        raise GroundupError(f"tool_choice names function {only!r}, which is not in tools")
    return branches[0] if len(branches) == 1 else {"anyOf": branches}


def parse_call(text: str) -> dict:
    """An OpenAI `tool_calls` entry from the JSON the model generated after `<tool_call>`."""
    text = text.strip()
    if text.endswith(CLOSE):
        text = text[: -len(CLOSE)]
    try:
        obj = json.loads(text)
    except json.JSONDecodeError:
        raise GroundupError("the model's tool call is not valid JSON") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("name"), str):
        raise GroundupError("the model's tool call has no function name")
    return {"id": "call_" + secrets.token_hex(12), "type": "function",
            "function": {"name": obj["name"], "arguments": json.dumps(obj.get("arguments", {}))}}
