"""Document stages: every filter rule on both sides of its published threshold, plus URL, language,
extraction and PII stages. Each case turns the stage's other rules off, so exactly one rule decides."""
from __future__ import annotations

import time

import pytest

from groundup.data.document import Document
from groundup.data.extract import Extract
from groundup.data.filters_c4 import C4Quality
from groundup.data.filters_fineweb import FineWebQuality
from groundup.data.filters_gopher import GopherQuality, GopherRepetition
from groundup.data.langid import LanguageFilter, language_scores
from groundup.data.pii import PIIFormatter
from groundup.data.stages import default_stages
from groundup.data.text_stats import sentence_count, words
from groundup.data.urlfilter import URLFilter


def word(i: int, length: int = 5) -> str:
    """The i-th distinct lower-case word of the given length (base-26 spelling)."""
    letters = []
    for _ in range(length):
        i, r = divmod(i, 26)
        letters.append("abcdefghijklmnopqrstuvwxyz"[r])
    return "".join(reversed(letters))


def unique_words(n: int, start: int = 0, length: int = 5) -> list[str]:
    return [word(start + i, length) for i in range(n)]


def filler(n_chars: int, start: int = 100_000) -> str:
    """Exactly n_chars characters of distinct 5-letter words (the last word padded or cut)."""
    text = " ".join(unique_words(n_chars // 6 + 1, start))
    return text[:n_chars].rstrip() + "q" * (n_chars - len(text[:n_chars].rstrip()))


def padded(core: str, total: int) -> str:
    text = core + " " + filler(total - len(core) - 1)
    assert len(text) == total
    return text


def run(stage, text: str):
    return stage.apply(Document(text=text, id="t"))


# ---------------------------------------------------------------- Gopher repetition

REP_OFF = dict(dup_line_frac=None, dup_para_frac=None, dup_line_char_frac=None, dup_para_char_frac=None,
               top_ngrams=(), dup_ngrams=())


def _blocks(n_unique: int, n_dup: int, sep: str) -> str:
    blocks = [" ".join(unique_words(6, 50 * i)) for i in range(n_unique)]
    return sep.join(blocks + [blocks[0]] * n_dup)


def _dup_block_chars(unique_len: int, sep: str) -> str:
    block = " ".join(unique_words(17, 0))[:100]
    return filler(unique_len) + sep + block + sep + block


def _top_gram(n: int, total: int) -> str:
    gram = " ".join(unique_words(n, 0, length=2))
    return padded(" ".join(f"{gram} {w}" for w in unique_words(10, 500)), total)


def _dup_gram(n: int, total: int) -> str:
    seq = " ".join(unique_words(n, 0, length=4))  # 4n characters repeated once
    return padded(f"{seq} {word(999)} {seq}", total)


# (rule key, stage kwargs, text that passes, text that fails): each pair straddles the published value
REP_CASES = [
    ("dup_para_frac", dict(dup_para_frac=0.3), _blocks(7, 3, "\n\n"), _blocks(6, 4, "\n\n")),  # 3/10 | 4/10
    ("dup_para_char_frac", dict(dup_para_char_frac=0.2),
     _dup_block_chars(300, "\n\n"), _dup_block_chars(290, "\n\n")),  # 100/504 | 100/494
    ("dup_line_frac", dict(dup_line_frac=0.3), _blocks(7, 3, "\n"), _blocks(6, 4, "\n")),
    ("dup_line_char_frac", dict(dup_line_char_frac=0.2), _dup_block_chars(300, "\n"), _dup_block_chars(290, "\n")),
    *[(f"top_{n}gram", dict(top_ngrams=((n, f),)), _top_gram(n, int(len_n * 10 / f) + 5),
       _top_gram(n, int(len_n * 10 / f) - 5))
      for n, f, len_n in ((2, 0.20, 5), (3, 0.18, 8), (4, 0.16, 11))],
    *[(f"dup_{n}gram", dict(dup_ngrams=((n, f),)), _dup_gram(n, int(4 * n / f) + 5), _dup_gram(n, int(4 * n / f) - 5))
      for n, f in ((5, 0.15), (6, 0.14), (7, 0.13), (8, 0.12), (9, 0.11), (10, 0.10))],
]


@pytest.mark.parametrize("rule, kwargs, keep, drop", REP_CASES, ids=[c[0] for c in REP_CASES])
def test_gopher_repetition_rule(rule, kwargs, keep, drop):
    on = {k: v for k, v in REP_OFF.items() if k not in kwargs}
    default = GopherRepetition()
    for key, value in kwargs.items():  # the case uses the published value, which is also the default
        assert getattr(default, key) == value or (value[0] in getattr(default, key))
    stage = GopherRepetition(**on, **kwargs)
    assert isinstance(run(stage, keep), Document)
    assert run(stage, drop) == f"gopher_rep:{rule}"


# ---------------------------------------------------------------- Gopher quality

QUAL_OFF = dict(min_doc_words=None, max_doc_words=None, min_avg_word_length=None, max_avg_word_length=None,
                max_symbol_word_ratio=None, max_bullet_lines_ratio=None, max_ellipsis_lines_ratio=None,
                min_alpha_words_ratio=None, min_stop_words=None)
W = unique_words(200)

QUAL_CASES = [
    ("short_doc", "min_doc_words", " ".join(W[:50]), " ".join(W[:49]) + " . , ; ! ?"),  # marks are not words
    ("long_doc", "max_doc_words", "word " * 100_000, "word " * 100_001),
    ("short_words", "min_avg_word_length", "abc " * 50, "abc " * 49 + "ab"),
    ("long_words", "max_avg_word_length", "abcdefghij " * 50, "abcdefghij " * 49 + "abcdefghijk"),
    ("hash_ratio", "max_symbol_word_ratio", " ".join(W[:90]) + " #" * 10, " ".join(W[:89]) + " #" * 11),
    ("ellipsis_ratio", "max_symbol_word_ratio", " ".join(W[:90]) + " ..." * 10, " ".join(W[:89]) + " ..." * 11),
    ("bullet_lines", "max_bullet_lines_ratio", "\n".join(["- item"] * 18 + ["plain"] * 2),
     "\n".join(["• item"] * 19 + ["plain"])),
    ("ellipsis_lines", "max_ellipsis_lines_ratio", "\n".join(["and so on..."] * 3 + ["done."] * 7),
     "\n".join(["and so on…"] * 4 + ["done."] * 6)),
    ("alpha_words", "min_alpha_words_ratio", " ".join(W[:80] + ["123"] * 20), " ".join(W[:79] + ["123"] * 21)),
    ("stop_words", "min_stop_words", "the cat of mine", "The cat Of the mine the"),  # case-sensitive, distinct
]


@pytest.mark.parametrize("rule, param, keep, drop", QUAL_CASES, ids=[c[0] for c in QUAL_CASES])
def test_gopher_quality_rule(rule, param, keep, drop):
    stage = GopherQuality(**{k: v for k, v in QUAL_OFF.items() if k != param})
    assert isinstance(run(stage, keep), Document), run(stage, keep)
    assert run(stage, drop) == f"gopher_qual:{rule}"


def test_gopher_quality_defaults_are_the_published_ones():
    g = GopherQuality()
    assert (g.min_doc_words, g.max_doc_words, g.min_avg_word_length, g.max_avg_word_length) == (50, 100_000, 3, 10)
    assert (g.max_symbol_word_ratio, g.max_bullet_lines_ratio, g.max_ellipsis_lines_ratio) == (0.1, 0.9, 0.3)
    assert (g.min_alpha_words_ratio, g.min_stop_words) == (0.8, 2)
    assert g.stop_words == {"the", "be", "to", "of", "and", "that", "have", "with"}


# ---------------------------------------------------------------- C4

SENTENCES = [f"This is sentence number {w} here." for w in unique_words(8, 300)]


def c4_text(*extra: str, n: int = 5) -> str:
    return "\n".join(SENTENCES[:n] + list(extra))


@pytest.mark.parametrize("rule, keep, drop", [
    ("too_few_sentences", c4_text(n=5), c4_text(n=4)),
    ("too_few_sentences", "One two three. Four five six! Seven eight nine? Ten eleven twelve. Last one here.",
     "One two three. Four five six! Seven eight nine? Ten eleven twelve... Last one here."),
    ("lorem_ipsum", c4_text("Lorem is a word, and ipsum too."), c4_text("Some Lorem Ipsum dolor text.")),
    ("curly_bracket", c4_text("Plain text (with parentheses) only."), c4_text("function f() { return 1; }")),
], ids=["sentences", "sentence_split", "lorem_ipsum", "curly_bracket"])
def test_c4_document_rules(rule, keep, drop):
    stage = C4Quality()
    assert isinstance(run(stage, keep), Document)
    assert run(stage, drop) == f"c4:{rule}"


@pytest.mark.parametrize("kept_line, removed_line", [
    ("only three words", "two words"),
    ("We like Java and scripts.", "Please enable JavaScript to view this page."),
    *[("Read the terms and our policy.", f"By using this site you accept the {p} today.")
      for p in ("terms of use", "privacy policy", "cookie policy")],
    *[("We bake cookies every day.", f"This site {p} to work.") for p in ("uses cookies", "use of cookies",
                                                                        "use cookies")],
    ("long " + "x" * 1000 + " word", "long " + "x" * 1001 + " word"),
], ids=["min_words", "javascript", "policy_terms", "policy_privacy", "policy_cookie", "policy_uses",
        "policy_use_of", "policy_use", "max_word_length"])
def test_c4_line_rules(kept_line, removed_line):
    out = run(C4Quality(), c4_text(kept_line, removed_line))
    assert isinstance(out, Document)
    assert out.text.split("\n") == SENTENCES[:5] + [kept_line]


def test_c4_cleaning_and_terminal_punctuation_switch():
    text = c4_text("A line without final punctuation", "  Cited fact[1] here[edit] and[citation needed].  ", "",
                   "Dangling end words...")
    out = run(C4Quality(), text)  # FineWeb's setting: no terminal-punctuation rule
    assert out.text.split("\n")[5:] == ["A line without final punctuation", "Cited fact here and.",
                                        "Dangling end words..."]
    strict = run(C4Quality(filter_no_terminal_punct=True), text)
    assert strict.text.split("\n")[5:] == ["Cited fact here and."]


@pytest.mark.parametrize("text, tokens", [
    ("Don't stop: it's well-known (U.S.) e.g. at 3.14pm or 2pm.",
     ["Do", "n't", "stop", ":", "it", "'s", "well", "-", "known", "(", "U.S.", ")", "e.g.", "at", "3.14pm", "or",
      "2", "pm", "."]),
    ("See https://example.com/a?b=c). Mail me@example.org!",
     ["See", "https://example.com/a?b=c", ")", ".", "Mail", "me@example.org", "!"]),
    ("AT&T's 1/2 price -- 19-year-old covid-19 \"quoted,\" Mr. Smith cannot...",
     ["AT&T", "'s", "1/2", "price", "--", "19", "-", "year", "-", "old", "covid-19", '"', "quoted", ",", '"',
      "Mr.", "Smith", "can", "not", "..."]),
])
def test_words_split_like_spacy(text, tokens):
    assert words(text) == tokens


def test_words_on_one_huge_chunk():
    assert words("!?" * 20_000) == ["!", "?"] * 20_000  # mark by mark, in linear time
    assert words("(" * 5000 + "x" + ")" * 5000) == ["("] * 5000 + ["x"] + [")"] * 5000


def test_sentence_count_follows_the_sentencizer():
    assert sentence_count(words("Dr. Smith went to Washington. He arrived at 3 p.m. on time!")) == 2
    assert sentence_count(words("Hello world. (Aside.) \"Quoted.\" End")) == 4
    assert sentence_count(words("Wait... no way")) == 1 and sentence_count([]) == 0


# ---------------------------------------------------------------- FineWeb

FW_OFF = dict(line_punct_thr=None, short_line_thr=None, char_duplicates_ratio=None, new_line_ratio=None)
LONG = [" ".join(unique_words(8, 20 * i)) for i in range(60)]  # 47-character lines without punctuation


@pytest.mark.parametrize("rule, param, keep, drop", [
    ("line_punct_ratio", "line_punct_thr", "\n".join([s + "." for s in LONG[:3]] + LONG[3:25]),
     "\n".join([s + "!" for s in LONG[:2]] + LONG[2:25])),  # 3/25 = 0.12 | 2/25
    ("short_line_ratio", "short_line_thr", "\n".join(["x" * 30] * 67 + LONG[:33]),
     "\n".join(["x" * 30] * 68 + ["x" * 31] * 32)),  # 30 characters is short, 31 is not
    ("char_dup_ratio", "char_duplicates_ratio", "\n".join(LONG[:40] + ["d" * 19] * 2),
     "\n".join(LONG[:40] + ["d" * 20] * 2)),  # 19/1918 | 20/1920 of non-newline characters
    ("list_ratio", "new_line_ratio", "\n".join(["one two three"] * 10), "\n".join(["one two three"] * 20)),
], ids=["line_punct", "short_lines", "char_dup", "newlines"])
def test_fineweb_rule(rule, param, keep, drop):
    stage = FineWebQuality(**{k: v for k, v in FW_OFF.items() if k != param})
    assert isinstance(run(stage, keep), Document)
    assert run(stage, drop) == f"fineweb:{rule}"


# ---------------------------------------------------------------- URL filter

@pytest.mark.parametrize("url, reason", [
    ("https://www.pornhub.com/view", "domain"), ("http://PORNHUB.com:8080/", "domain"),
    ("https://example.com/free-porn-videos", "word"), ("https://en.wikipedia.org/wiki/Pornography", None),
    ("https://example.com/sex-education", None), ("https://example.com/sexy/nude-pics", "soft_words"),
    ("https://my-freeporn.example.net/", "subword"), ("https://www.essexcamping.co.uk/", None),
])
def test_url_filter_default_lists(url, reason):
    out = URLFilter().apply(Document(text="x", id="t", url=url))
    assert out == f"url_filter:{reason}" if reason else isinstance(out, Document)


def test_url_filter_custom_lists_and_missing_url():
    f = URLFilter(domains=["bad.example"], words=["spam"], soft_words=[], subwords=[])
    assert f.apply(Document(text="x", id="t", url="https://a.b.bad.example/")) == "url_filter:domain"
    assert f.apply(Document(text="x", id="t", url="https://ok.example/spam/")) == "url_filter:word"
    assert isinstance(f.apply(Document(text="x", id="t", url="https://www.pornhub.com/")), Document)
    assert isinstance(URLFilter().apply(Document(text="x", id="t")), Document)


# ---------------------------------------------------------------- language ID

EN = "The committee published its annual report on Tuesday, and the findings surprised many of the readers."
DE = "Der Ausschuss hat am Dienstag seinen Jahresbericht veröffentlicht, und die Ergebnisse überraschten viele."


def test_language_filter_keeps_wanted_languages():
    doc = run(LanguageFilter(), EN)
    assert doc.meta["language"] == "en" and doc.meta["language_score"] >= 0.65
    assert run(LanguageFilter(), DE) == "langid:other"
    assert run(LanguageFilter(languages=["de"]), DE).meta["language"] == "de"
    assert isinstance(run(LanguageFilter(languages=None), DE), Document)
    assert run(LanguageFilter(), "   ") == "langid:empty"


def test_language_filter_threshold_both_sides():
    text = "ok yes hello"  # short and ambiguous: a middling English score
    score = dict(language_scores(text))["en"]
    assert 0.0 < score < 1.0
    assert isinstance(run(LanguageFilter(threshold=score - 1e-6), text), Document)
    assert run(LanguageFilter(threshold=score + 1e-6), text) in ("langid:low_score", "langid:other")


# ---------------------------------------------------------------- extraction

ARTICLE = """<html><head><title>T</title><script>var tracking = 1;</script></head><body>
<nav><a href="/">Home</a> | <a href="/about">About us</a></nav>
<article><h1>Rivers of the north</h1>
<p>The northern rivers freeze for several months each year, and the people who live along them have
learned to travel on the ice when the roads are closed by snow.</p>
<p>In spring the ice breaks up with a sound like thunder, and the water rises quickly over the banks,
carrying whole trees down towards the sea.</p></article>
<footer>Copyright 2024 Example Corp. All rights reserved.</footer></body></html>"""


def test_extract_main_text():
    doc = Extract().apply(Document(text="", id="t", html=ARTICLE))
    assert isinstance(doc, Document) and doc.html is None
    assert "northern rivers freeze" in doc.text and "carrying whole trees" in doc.text
    assert "tracking" not in doc.text and "About us" not in doc.text


def test_extract_drop_reasons(monkeypatch):
    empty = "<html><head><script>x()</script></head><body><img src='a.png'><div> </div></body></html>"
    assert Extract().apply(Document(text="", id="t", html=empty)) == "extract:empty"
    plain = Document(text="already text", id="t")
    assert Extract().apply(plain) is plain
    import groundup.data.extract as ex

    monkeypatch.setattr(ex, "extract_text", lambda html, **kw: time.sleep(5))
    start = time.monotonic()
    assert Extract(timeout_s=0.2).apply(Document(text="", id="t", html=ARTICLE)) == "extract:timeout"
    assert time.monotonic() - start < 2
    monkeypatch.setattr(ex, "extract_text", lambda html, **kw: 1 / 0)
    assert Extract().apply(Document(text="", id="t", html=ARTICLE)) == "extract:error"


# ---------------------------------------------------------------- PII

def test_pii_emails_and_public_ips():
    text = ("Write to jane.doe@mail.example.net or BOB+news@corp.example.com. Servers: 8.8.8.8, 10.1.2.3, "
            "192.168.0.1, 127.0.0.1, 999.1.1.1 and 2606:4700:4700::1111 but not ::1 or fe80::1; v1.2.3.4.5")
    doc = run(PIIFormatter(), text)
    assert "jane.doe" not in doc.text and "BOB+news" not in doc.text
    assert "email@example.com" in doc.text and "firstname.lastname@example.org" in doc.text
    assert "8.8.8.8" not in doc.text and "2606:4700" not in doc.text
    for kept in ("10.1.2.3", "192.168.0.1", "127.0.0.1", "999.1.1.1", " ::1 ", "fe80::1", "v1.2.3.4.5"):
        assert kept in doc.text
    assert doc.meta == {"pii_emails": 2, "pii_ips": 2}
    everything = run(PIIFormatter(only_public_ips=False), text)
    assert "10.1.2.3" not in everything.text and everything.meta["pii_ips"] == 7


def test_default_stages_order():
    names = [s.name for s in default_stages()]
    assert names == ["url_filter", "extract", "langid", "gopher_rep", "gopher_qual", "c4", "fineweb", "pii"]
