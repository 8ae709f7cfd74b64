"""Evaluation requests answered by any OpenAI-compatible endpoint (`groundup serve`, llama-server, vLLM, a provider).

Log-likelihoods use `/completions` with `echo` and `logprobs` (through
`OpenAICompatibleLLM.loglikelihood`, split at the context's character
offset), several requests in flight at once. Generation uses `/completions`
for prompt strings (so few-shot prompts reach the model verbatim) and
`/chat/completions` for chat-message contexts. Rolling log-likelihoods score
the whole text with echo; the endpoint gives no log-probability for the very
first token, so it is left out (token count reduced to match) — a one-token
difference from the in-process backend, stated here and in docs/eval.md.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Callable

from groundup.eval.task import Generate, Loglikelihood, Rolling
from groundup.llm import OpenAICompatibleLLM

Progress = Callable[[int], None]


class APIBackend:
    def __init__(self, base_url: str, model: str, api_key: str | None = None, concurrency: int = 4,
                 seed: int = 1234) -> None:
        self.llm = OpenAICompatibleLLM(base_url, api_key, model)
        self.identity = f"api:{base_url.rstrip('/')}:{model}"
        self.concurrency, self.seed = concurrency, seed

    def _map(self, fn, items: list, progress: Progress) -> list:
        def one(x):
            r = fn(x)
            progress(1)
            return r

        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(one, items))

    def loglikelihood(self, reqs: list[Loglikelihood], progress: Progress = lambda n: None) -> list[tuple[float, bool]]:
        return self._map(lambda r: self.llm.loglikelihood(r.context, r.continuation), reqs, progress)

    def rolling(self, reqs: list[Rolling], progress: Progress = lambda n: None) -> list[tuple[float, int]]:
        def one(r: Rolling) -> tuple[float, int]:
            body = {"model": self.llm.name, "prompt": r.text, "max_tokens": 1, "temperature": 0, "echo": True,
                    "logprobs": 0}
            lp = self.llm._post("/completions", body)["choices"][0]["logprobs"]
            vals = [v for v in lp["token_logprobs"][:-1] if v is not None]  # last = the generated token
            return float(sum(vals)), len(vals)

        return self._map(one, reqs, progress)

    def generate(self, reqs: list[Generate], progress: Progress = lambda n: None) -> list:
        def one(r: Generate):
            params = {"max_tokens": r.max_tokens, "temperature": r.temperature, "n": r.n, "seed": self.seed}
            if r.until:
                params["stop"] = list(r.until)[:4]  # OpenAI accepts at most four stop sequences
            if isinstance(r.context, tuple):
                body = self.llm._post("/chat/completions", {"model": self.llm.name,
                                                            "messages": [dict(m) for m in r.context], **params})
                texts = [c["message"].get("content") or "" for c in body["choices"]]
            else:
                body = self.llm._post("/completions", {"model": self.llm.name, "prompt": r.context, **params})
                texts = [c.get("text") or "" for c in body["choices"]]
            texts = [_cut(t, r.until) for t in texts]
            return texts[0] if r.n == 1 else texts

        return self._map(one, reqs, progress)


def _cut(text: str, until: tuple[str, ...]) -> str:
    """Apply every stop string locally too (the endpoint may have taken only four)."""
    for s in until:
        i = text.find(s)
        if i >= 0:
            text = text[:i]
    return text
