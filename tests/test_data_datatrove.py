"""Our filters against datatrove's (the code FineWeb ran), on real pages: the keep/drop decisions must agree.

datatrove's English filters split words with spaCy's rule-based tokenizer
(`spacy.blank("en")`, no model download), so this runs offline once the
test-only packages `datatrove` and `spacy` are installed; otherwise it skips.
The pages are the shared WARC samples, extracted by our own reader and
trafilatura stage; each filter sees the text the previous one passed on, as
in FineWeb's pipeline.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from groundup.data.document import Document
from groundup.data.extract import Extract
from groundup.data.filters_c4 import C4Quality
from groundup.data.filters_fineweb import FineWebQuality
from groundup.data.filters_gopher import GopherQuality, GopherRepetition
from groundup.data.pii import EMAIL_PLACEHOLDERS, PIIFormatter
from groundup.data.readers import read_warc
from groundup.data.text_stats import words

pytest.importorskip("spacy", reason="spacy not installed (test-only: pip install datatrove spacy)")
dt_filters = pytest.importorskip("datatrove.pipeline.filters",
                                 reason="datatrove not installed (test-only: pip install datatrove spacy)")

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="module")
def warc_texts() -> list[tuple[str, str]]:
    files = sorted((DATA / "warc").glob("*.warc.gz"))
    if not files:
        pytest.skip(f"no WARC samples under {DATA / 'warc'} (see shared/data/SOURCES.md)")
    extract = Extract()
    out = []
    for f in files:
        for doc in read_warc(f):
            kept = extract.apply(doc)
            if isinstance(kept, Document):
                out.append((kept.id, kept.text))
    return out


def compare_chain(texts: list[tuple[str, str]]) -> tuple[list[str], dict[str, int]]:
    from datatrove.data import Document as DTDocument

    pairs = [(dt_filters.GopherRepetitionFilter(), GopherRepetition()),
             (dt_filters.GopherQualityFilter(), GopherQuality()),
             (dt_filters.C4QualityFilter(filter_no_terminal_punct=False), C4Quality()),
             (dt_filters.FineWebQualityFilter(), FineWebQuality())]
    disagreements: list[str] = []
    outcomes: dict[str, int] = {}
    for doc_id, text in texts:
        for theirs, ours in pairs:
            their_doc = DTDocument(text=text, id=doc_id)
            their_keep = theirs.filter(their_doc) is True
            result = ours.apply(Document(text=text, id=doc_id))
            our_keep = isinstance(result, Document)
            if their_keep != our_keep or (our_keep and result.text != their_doc.text):
                disagreements.append(f"{doc_id} {ours.name}: datatrove keep={their_keep}, ours {result!r:.80}")
            key = f"{ours.name}:keep" if our_keep else result
            outcomes[key] = outcomes.get(key, 0) + 1
            if not (their_keep and our_keep):
                break
            text = their_doc.text  # C4 rewrites the text; the next filter sees the rewritten one
    return disagreements, outcomes


def test_filters_agree_with_datatrove_on_warc_pages(warc_texts):
    disagreements, outcomes = compare_chain(warc_texts)
    assert len(warc_texts) >= 40
    assert disagreements == []
    # the sample is a real test of both sides: several pages dropped, most English pages kept to the end
    assert sum(v for k, v in outcomes.items() if not k.endswith(":keep")) >= 10
    assert outcomes.get("fineweb:keep", 0) >= 20


def test_pii_agrees_with_datatrove(warc_texts):
    from datatrove.pipeline.formatters import PIIFormatter as DTPIIFormatter

    theirs, ours = DTPIIFormatter(), PIIFormatter()
    their_ips = theirs.ip_replacer.replacements
    total = 0
    for _, text in warc_texts:
        their_text = theirs.format(text)
        _, n_emails, n_ips = ours.format(text)
        assert n_emails == sum(their_text.count(e) - text.count(e) for e in EMAIL_PLACEHOLDERS)
        assert n_ips == sum(their_text.count(ip) - text.count(ip) for ip in their_ips)
        total += n_emails + n_ips
    assert total >= 5  # the samples hold real addresses (e-mails on personal pages, crawler IPs)


def test_word_split_matches_spacy(warc_texts):
    from datatrove.utils.text import split_into_words

    same = ours_total = theirs_total = 0
    for _, text in warc_texts:
        ours, theirs = words(text), split_into_words(text)
        same += ours == theirs
        ours_total += len(ours)
        theirs_total += len(theirs)
    assert same >= 0.85 * len(warc_texts)
    assert abs(ours_total - theirs_total) <= 0.005 * theirs_total


@pytest.mark.slow
def test_filters_agree_with_datatrove_on_c4_demo():
    p = DATA / "llamafactory" / "c4_demo.jsonl"
    if not p.is_file():
        pytest.skip(f"shared data file {p} is missing")
    texts = [(str(i), json.loads(line)["text"]) for i, line in enumerate(p.open())]
    disagreements, outcomes = compare_chain(texts)
    assert disagreements == []
    assert outcomes.get("fineweb:keep", 0) >= 150
