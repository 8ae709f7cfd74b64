"""The `groundup` CLI as a user runs it: a real subprocess on the real SmolLM2."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def groundup(*args: str, stdin: str | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "groundup", *args], input=stdin, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})


def test_chat_answers_capital_of_france_and_saves_transcript(tmp_path, smollm2_path):
    save = tmp_path / "chat.json"
    r = groundup("chat", "--temperature", "0", "--max-tokens", "40",
                 stdin=f"What is the capital of France?\n/save {save}\n/reset\n/quit\n")
    assert r.returncode == 0, r.stderr
    assert "Paris" in r.stdout
    msgs = json.loads(save.read_text())["messages"]
    assert [m["role"] for m in msgs] == ["user", "assistant"] and "Paris" in msgs[1]["content"]


def test_chat_system_prompt_and_multi_turn(smollm2_path):
    r = groundup("chat", "--temperature", "0", "--max-tokens", "30", "--dtype", "int8",
                 stdin="/system You are a pirate.\nHello!\nWhat did I just say?\n")
    assert r.returncode == 0, r.stderr
    assert "system prompt set" in r.stderr
    assert len([line for line in r.stdout.splitlines() if line.strip()]) >= 2


def test_generate_json(smollm2_path):
    r = groundup("generate", "The capital of France is", "--max-tokens", "8", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["completion_tokens"] == 8 and out["finish_reason"] == "length" and out["text"]
    assert out["prompt_tokens"] > 0 and out["decode_tokens_per_s"] > 0


def test_bad_input_is_one_line(tmp_path):
    r = groundup("generate", "hi", "--model", "no-such-model")
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "smollm2-135m-instruct" in r.stderr
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 40)
    r = groundup("card", str(bad))
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and str(bad) in r.stderr
    r = groundup("generate", "hi", "--temperature", "-1")
    assert r.returncode == 1 and "temperature" in r.stderr and r.stderr.count("\n") == 1
