"""Code generation scored by running the tests: HumanEval and MBPP (pass@k).

HumanEval (lm-evaluation-harness's `humaneval`): the prompt is the function signature and
docstring; greedy generation stops at "\\nclass", "\\ndef", "\\n#", "\\nif" or "\\nprint"; the program
is prompt + completion and the test is the item's `test` code + "\\ncheck({entry_point})".

MBPP (lm-eval's standard 3-shot `mbpp`, not the olmo variant): "You are an expert Python
programmer, and here is your task: {text} Your code should pass these tests:\\n\\n{3 asserts}\\n
[BEGIN]\\n", after three worked examples (MBPP's prompt-split items 2, 3 and 4, their code followed
by "\\n[DONE]" and a blank line); generation stops at "[DONE]". The program is the completion; the
test is the item's setup code (one item has some) and its three asserts.

Programs run in eval/sandbox.py (`check_program(program, test, timeout_s)`). By default each doc
asks for one greedy completion: pass@1. With `n=`, `temperature=` (e.g. n=20, temperature=0.8,
ks=(1, 10)) it asks for n seeded samples and reports the unbiased pass@k estimate (eval/passk.py)
for every k in `ks` up to n.
"""
from __future__ import annotations

from groundup.eval.sources import load_humaneval, load_mbpp
from groundup.eval.passk import pass_at_k
from groundup.eval.task import Generate, Request, TaskConfig

HUMANEVAL_UNTIL = ("\nclass", "\ndef", "\n#", "\nif", "\nprint")
MBPP_UNTIL = ("[DONE]",)

# MBPP's prompt split, items 2-4: the standard few-shot examples (data from MBPP, CC-BY-4.0).
MBPP_SHOTS = (
    {"task_id": 2, "text": "Write a function to find the similar elements from the given two tuple lists.",
     "code": "def similar_elements(test_tup1, test_tup2):\r\n  res = tuple(set(test_tup1) & set(test_tup2))\r\n"
             "  return (res) ",
     "test_list": ["assert similar_elements((3, 4, 5, 6),(5, 7, 4, 10)) == (4, 5)",
                   "assert similar_elements((1, 2, 3, 4),(5, 4, 3, 7)) == (3, 4)",
                   "assert similar_elements((11, 12, 14, 13),(17, 15, 14, 13)) == (13, 14)"]},
    {"task_id": 3, "text": "Write a python function to identify non-prime numbers.",
     "code": "import math\r\ndef is_not_prime(n):\r\n    result = False\r\n    for i in range(2,int(math.sqrt(n)) + 1):"
             "\r\n        if n % i == 0:\r\n            result = True\r\n    return result",
     "test_list": ["assert is_not_prime(2) == False", "assert is_not_prime(10) == True",
                   "assert is_not_prime(35) == True"]},
    {"task_id": 4, "text": "Write a function to find the largest integers from a given list of numbers using heap "
                           "queue algorithm.",
     "code": "import heapq as hq\r\ndef heap_queue_largest(nums,n):\r\n  largest_nums = hq.nlargest(n, nums)\r\n"
             "  return largest_nums",
     "test_list": ["assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],3)==[85, 75, 65] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],2)==[85, 75] ",
                   "assert heap_queue_largest( [25, 35, 22, 85, 14, 65, 75, 22, 58],5)==[85, 75, 65, 58, 35]"]},
)


def run_tests(program: str, test: str, timeout_s: float) -> bool:
    from groundup.eval.sandbox import check_program

    passed, _ = check_program(program, test, timeout_s)
    return bool(passed)


class _CodeTask:
    output_type = "code"
    default_fewshot = 0

    default_max_tokens = 512

    def __init__(self, ks: tuple[int, ...] = (1,), n: int = 1, temperature: float = 0.0, timeout_s: float = 10.0,
                 max_tokens: int | None = None):
        if n < 1 or (n > 1 and temperature <= 0):
            from groundup.errors import GroundupError

            raise GroundupError("pass@k with n > 1 samples needs a temperature above 0 (greedy samples are identical)")
        self.ks, self.n, self.temperature, self.timeout_s = tuple(ks), n, temperature, timeout_s
        self.max_tokens = max_tokens or self.default_max_tokens
        self._docs: list[dict] | None = None

    def generate(self, context: str, until: tuple[str, ...]) -> Generate:
        return Generate(context, until, self.max_tokens, n=self.n, temperature=self.temperature)

    def program(self, doc: dict, completion: str) -> str:
        raise NotImplementedError

    def test(self, doc: dict) -> str:
        raise NotImplementedError

    def score(self, doc: dict, results: list, cfg: TaskConfig) -> dict[str, float]:
        """results[0]: the completion (n == 1) or the list of n completions."""
        completions = results[0] if isinstance(results[0], list) else [results[0]]
        timeout = float(cfg.extra.get("timeout_s", self.timeout_s))
        passed = sum(run_tests(self.program(doc, c), self.test(doc), timeout) for c in completions)
        n = len(completions)
        return {f"pass@{k}": pass_at_k(n, passed, k) for k in self.ks if k <= n}


class HumanEval(_CodeTask):
    name = "humaneval"
    default_max_tokens = 1024  # lm-eval's max_gen_toks for humaneval

    def docs(self) -> list[dict]:
        if self._docs is None:
            self._docs = load_humaneval()
        return self._docs

    def requests(self, doc: dict, cfg: TaskConfig) -> list[Request]:
        return [self.generate(doc["prompt"], HUMANEVAL_UNTIL)]

    def program(self, doc: dict, completion: str) -> str:
        return doc["prompt"] + completion

    def test(self, doc: dict) -> str:
        return doc["test"] + "\n" + f"check({doc['entry_point']})"


def mbpp_prompt(doc: dict) -> str:
    tests = "\n".join(doc["test_list"][:3])
    return (f"You are an expert Python programmer, and here is your task: {doc['text']} "
            f"Your code should pass these tests:\n\n{tests}\n[BEGIN]\n")


class MBPP(_CodeTask):
    name = "mbpp"
    default_fewshot = 3
    default_max_tokens = 256  # lm-eval's default max_gen_toks

    def docs(self) -> list[dict]:
        if self._docs is None:
            self._docs = load_mbpp()
        return self._docs

    def requests(self, doc: dict, cfg: TaskConfig) -> list[Request]:
        k = self.default_fewshot if cfg.num_fewshot is None else cfg.num_fewshot
        if k > len(MBPP_SHOTS):
            from groundup.errors import GroundupError

            raise GroundupError(f"mbpp has {len(MBPP_SHOTS)} few-shot examples (MBPP's prompt split); asked for {k}")
        shots = "".join(mbpp_prompt(ex) + ex["code"] + "\n[DONE]" + "\n\n" for ex in MBPP_SHOTS[:k])
        return [self.generate(shots + mbpp_prompt(doc), MBPP_UNTIL)]

    def program(self, doc: dict, completion: str) -> str:
        return completion

    def test(self, doc: dict) -> str:
        setup = doc.get("test_setup_code") or ""
        return (setup + "\n" if setup.strip() else "") + "\n".join(doc["test_list"])
