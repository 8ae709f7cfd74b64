"""Chat templates: render a list of messages into the prompt text a model was trained on.

Templates are Jinja2, run in a sandbox set up the way Hugging Face `apply_chat_template` does it
(trim_blocks, lstrip_blocks, loop controls, `raise_exception`, `tojson`, `strftime_now`), so a
template taken from a GGUF file or a tokenizer_config.json renders the same text here. Files without
a template get a fallback: ChatML, or Gemma's turn format (no system role: the system message is
merged into the first user turn). `content_pieces` tells the tokenizer which parts of a rendering are
message contents (plain text) and which are the template's own markers (control tokens).
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from functools import lru_cache
from typing import Any, Callable

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from groundup.errors import GroundupError

# the text of a message: a string, or the text parts of a list of parts; None is empty
_TEXT = ("{%- macro text(content) -%}{%- if content is string -%}{{ content }}"
         "{%- elif content -%}{%- for part in content if part['type'] == 'text' -%}{{ part['text'] }}"
         "{%- endfor -%}{%- endif -%}{%- endmacro -%}")

CHATML = (
    _TEXT
    + "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' }}{{ text(message['content']) }}{{ '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

GEMMA = (
    _TEXT
    + "{{ bos_token }}"
    "{%- if messages and messages[0]['role'] == 'system' -%}"
    "{%- set first_prefix = text(messages[0]['content']) | trim + '\n\n' -%}"
    "{%- set turns = messages[1:] -%}"
    "{%- else -%}{%- set first_prefix = '' -%}{%- set turns = messages -%}{%- endif -%}"
    "{%- for message in turns -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Gemma conversations must alternate user/assistant/user/..., starting with user') }}"
    "{%- endif -%}"
    "{%- set role = 'model' if message['role'] == 'assistant' else message['role'] -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_prefix if loop.first else '') }}"
    "{{ text(message['content']) | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)


class _TemplateRaised(Exception):
    """What `raise_exception` throws inside a template; becomes a GroundupError outside."""


def _raise_exception(message: str) -> None:
    raise _TemplateRaised(message)


def _tojson(value: Any, indent: int | None = None, separators: tuple[str, str] | None = None,
            sort_keys: bool = False, ensure_ascii: bool = False) -> str:
    return json.dumps(value, indent=indent, separators=separators, sort_keys=sort_keys,
                      ensure_ascii=ensure_ascii)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


@lru_cache(maxsize=1)
def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


@lru_cache(maxsize=32)
def _compile(template: str) -> jinja2.Template:
    try:
        return _environment().from_string(template)
    except jinja2.TemplateSyntaxError as e:
        raise GroundupError(f"chat template does not parse (line {e.lineno}): {e.message}") from None


def check_messages(messages: Any) -> None:
    """Raise GroundupError unless `messages` is a list of {'role': str, 'content': ...} dicts."""
    if not isinstance(messages, (list, tuple)):
        raise GroundupError(f"messages must be a list of dicts, got {type(messages).__name__}")
    for i, m in enumerate(messages):
        if not isinstance(m, dict):
            raise GroundupError(f"message {i} must be a dict with 'role' and 'content', got {type(m).__name__}")
        if not isinstance(m.get("role"), str) or not m["role"]:
            raise GroundupError(f"message {i} has no 'role' (expected 'system', 'user', 'assistant' or 'tool')")
        content = m.get("content")
        if content is not None and not isinstance(content, (str, list)):
            raise GroundupError(f"message {i} content must be a string or a list of parts, "
                                f"got {type(content).__name__}")


def render(template: str, messages: list[dict], tools: list[dict] | None = None,
           add_generation_prompt: bool = True, bos_token: str = "", eos_token: str = "",
           **extra: Any) -> str:
    """Render `messages` (and `tools`) with a Jinja chat template, Hugging Face style."""
    check_messages(messages)
    if tools is not None and not isinstance(tools, list):
        raise GroundupError(f"tools must be a list of tool definitions, got {type(tools).__name__}")
    compiled = _compile(template)
    try:
        return compiled.render(messages=list(messages), tools=tools,
                               add_generation_prompt=add_generation_prompt,
                               bos_token=bos_token, eos_token=eos_token, **extra)
    except _TemplateRaised as e:
        raise GroundupError(f"chat template refused the messages: {e}") from None
    except jinja2.TemplateError as e:
        raise GroundupError(f"chat template failed: {type(e).__name__}: {e}") from None
    except (TypeError, KeyError, AttributeError, IndexError, ValueError) as e:
        raise GroundupError(f"chat template failed on these messages: {type(e).__name__}: {e}") from None


def pick_template(template: str | list | None, tools: list[dict] | None = None) -> str | None:
    """tokenizer_config.json may hold a list of named templates; choose 'tool_use' when tools are given."""
    if template is None or isinstance(template, str):
        return template
    named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
    if tools and named.get("tool_use"):
        return named["tool_use"]
    return named.get("default") or next(iter(named.values()), None)


def fallback_template(vocab: dict[str, int]) -> str:
    """The template to use when a model file carries none: Gemma's turns if its markers exist, else ChatML."""
    if "<start_of_turn>" in vocab and "<end_of_turn>" in vocab:
        return GEMMA
    return CHATML


def content_pieces(render_fn: Callable[[list[dict]], str], messages: list[dict]) -> list[tuple[bool, str]]:
    """Cut a rendered chat into (is_message_content, text) pieces, in order, joining to the rendering.

    Each non-empty text content is swapped for a sentinel made of private-use characters, the
    template renders that, and the output is cut at the sentinels. If the template changes the
    content (trims or splits it) the sentinels no longer line up; then each content (or its trimmed
    form) is searched for in the real rendering in order, and a content the template rewrote beyond
    that is left inside the template text around it.
    """
    check_messages(messages)
    rendered = render_fn(messages)
    contents: list[str] = []

    def sentinel(text: str) -> str:
        contents.append(text)
        return f"\ue000{len(contents) - 1}\ue001"

    stand_in = []
    for m in messages:
        c = m.get("content")
        if isinstance(c, str) and c:
            m = {**m, "content": sentinel(c)}
        elif isinstance(c, list):
            m = {**m, "content": [
                {**p, "text": sentinel(p["text"])}
                if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str) and p["text"]
                else p for p in c]}
        stand_in.append(m)
    try:
        chunks = re.split("\ue000(\\d+)\ue001", render_fn(stand_in))
    except GroundupError:
        chunks = []
    if len(chunks) == 2 * len(contents) + 1 and all(chunks[2 * k + 1] == str(k) for k in range(len(contents))):
        pieces = [(True, contents[int(ch)]) if k % 2 else (False, ch) for k, ch in enumerate(chunks)]
        if "".join(text for _, text in pieces) == rendered:
            return [p for p in pieces if p[1]]
    pieces, pos = [], 0
    for c in contents:
        for form in (c, c.strip()):
            at = rendered.find(form, pos) if form else -1
            if at >= 0:
                pieces += [(False, rendered[pos:at]), (True, form)]
                pos = at + len(form)
                break
    pieces.append((False, rendered[pos:]))
    return [p for p in pieces if p[1]]
