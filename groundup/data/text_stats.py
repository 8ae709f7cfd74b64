"""Word and sentence splitting (and small counting helpers) shared by the quality filters.

The published FineWeb thresholds were tuned with datatrove, whose English word
splitter is spaCy's rule-based tokenizer: punctuation marks are tokens of their
own ("end." -> "end", "."), contractions split ("don't" -> "do", "n't"),
hyphens between letters split ("well-known" -> "well", "-", "known"), while
URLs, e-mail addresses, numbers ("3.14", "1,000", "1/2") and dotted
abbreviations ("U.S.", "e.g.") stay whole. `words()` follows those rules
(prefix / suffix / infix patterns and a short exception list, below), so ratios
such as "words containing a letter" or "newlines per word" come out as on the
data the thresholds were set on, without needing spaCy: on the shared WARC and
C4 samples the token lists are identical for ~97% of documents and the
filters' decisions for all of them (tests/test_data_datatrove.py).
`sentence_count()` follows spaCy's sentencizer: a new sentence starts at the
first non-punctuation token after a sentence terminator.
"""
from __future__ import annotations

import unicodedata
from functools import lru_cache

import regex

# Characters that end a sentence (Unicode's Sentence_Terminal property: . ! ? and
# their counterparts in other scripts). spaCy's sentencizer and datatrove's
# FineWeb "line ends with punctuation" rule both use this family of characters.
_STERM = regex.compile(r"\p{Sentence_Terminal}")

# --- word splitting, following the rules of spaCy's English tokenizer -----------------
# A whitespace-separated chunk loses prefix and suffix punctuation one mark at a
# time; what is left is kept whole when it is a URL, e-mail address or known
# exception, else split at infixes (a hyphen between letters, "," between
# letters, a lower-case "." before an upper-case letter, ...). Marks inside a
# chunk that match no rule stay attached ("AT&T", "|---|", "Q&A").

_PUNCT = r"…,:;!?¿؟¡()\[\]{}<>_#*&。？！，、；：～·।،۔؛٪"
_QUOTES = r"'\"”“`‘´’‚„»«「」『』（）〔〕【】《》〈〉〈〉⟦⟧"
_CURRENCY = r"\$|£|€|¥|฿|US\$|C\$|A\$|₽|₹|₩|₪|₫|₱|₴|₺|₿"
_UNITS = (r"km|km²|m|m²|m³|cm|mm|µm|nm|ha|yd|in|ft|kg|g|mg|µg|t|lb|oz|m/s|km/h|kmh|mph|hPa|Pa|mbar"
          r"|mb|MB|kb|KB|gb|GB|tb|TB|T|G|M|K|%")
_EMOTICONS = r"\):|:\)|:\(|\(:|;\)|:-\)|:-\(|:D|:P|:p|<3"

_PREFIX = regex.compile(  # used with .match(chunk, start, end): anchored at `start`
    rf"(?:{_EMOTICONS}|\.\.+|……|…|{_CURRENCY}|[§%=—–]|\+(?![0-9])|[{_PUNCT}]|[{_QUOTES}]|\p{{So}})"
)
_INFIX = regex.compile(
    rf"\.\.+|…|\p{{So}}|(?<=[0-9])[+\-*^](?=[0-9-])|(?<=[\p{{Ll}}{_QUOTES}])\.(?=[\p{{Lu}}{_QUOTES}])"
    rf"|(?<=\p{{L}}),(?=\p{{L}})|(?<=[\p{{L}}0-9])(?:---|--|——|-|–|—|~)(?=\p{{L}})"
    rf"|(?<=[\p{{L}}0-9])[:<>=/](?=\p{{L}})"
)
_URL = regex.compile(
    r"^(?:(?:https?|ftp)://\S+|www\.\S+|[\w.+-]+@[\w-]+(?:\.[\w-]+)+"
    r"|(?:[\w-]+\.)+(?:com|org|net|edu|gov|io|co|uk|de|fr|info|biz|us|ca|au)(?:/\S*)?)$",
    regex.I,
)
_CLOCK = regex.compile(r"^(1[0-2]|[1-9])(am|pm|a\.m\.|p\.m\.)$", regex.I)  # 2pm -> 2 pm (not 3.14pm)
_NEGATION = regex.compile(r"^(.+?)(n['’]t)$", regex.I)
# spaCy splits these clitics off pronouns and a few verbs only ("Dinah'll" stays whole)
_CLITIC = regex.compile(
    r"^(i|you|he|she|it|we|they|who|what|where|when|why|how|there|that|this|here|would|could|should|might|must)"
    r"(['’](?:re|ll|ve|d|m))$",
    regex.I,
)

# Chunks spaCy keeps whole: abbreviations with their period, a few emoticons.
_EXCEPTIONS = frozenset(
    "Mr. Mrs. Ms. Dr. Prof. Jr. Sr. St. Mt. Inc. Ltd. Co. Corp. vs. Gov. Gen. Rep. Sen. Rev. Ph.D. "
    "Jan. Feb. Mar. Apr. Jun. Jul. Aug. Sep. Sept. Oct. Nov. Dec. a.m. p.m. e.g. i.e. "
    "Ala. Ariz. Ark. Calif. Colo. Conn. Del. Fla. Ga. Ill. Ind. Kan. Ky. La. Md. Mich. Minn. Miss. "
    "Mo. Mont. Neb. Nev. Okla. Ore. Pa. Tenn. Va. Wash. Wis. and/or :) :( ): ;) :-) <3".split()
    + [f"{c}." for c in "abcdefghijklmnopqrstuvwxyz"]
)
# Fused forms spaCy splits, any capitalisation: where the second token starts.
_FUSED = {"cannot": 3, "gonna": 3, "gotta": 3, "wanna": 3, "dont": 2, "doesnt": 4, "didnt": 3, "isnt": 2,
          "arent": 3, "wasnt": 3, "werent": 4, "cant": 2, "couldnt": 5, "shouldnt": 6, "wouldnt": 5,
          "havent": 4, "hasnt": 3, "hadnt": 3, "thats": 4, "whats": 4, "im": 1, "ive": 1, "youre": 3,
          "theyre": 4}


def _split_middle(s: str, out: list[str]) -> None:
    if s in _EXCEPTIONS or _URL.match(s):
        out.append(s)
    elif (cut := _FUSED.get(s.lower())) is not None:
        out.append(s[:cut])
        out.append(s[cut:])
    elif (m := _CLOCK.match(s)) or ("'" in s or "’" in s) and (m := _NEGATION.match(s) or _CLITIC.match(s)):
        out.append(m.group(1))
        out.append(m.group(2))
    else:
        start = 0
        for m in _INFIX.finditer(s):
            if m.start() > start:
                out.append(s[start:m.start()])
            out.append(m.group())
            start = m.end()
        if start < len(s):
            out.append(s[start:])


_MAX_EXCEPTION = max(map(len, _EXCEPTIONS))
_PUNCT_SET = frozenset(_PUNCT.replace("\\", "")) | frozenset(_QUOTES.replace("\\", "")) | {"—", "–"}
# emoticons, and units / currencies right after a number (10km, 5$, 3+), at the end of a short tail
_TAIL_SUFFIX = regex.compile(rf"(?:{_EMOTICONS})$|(?<=[0-9])(?:{_UNITS}|{_CURRENCY}|\+)$")
_DOT_AFTER = frozenset("%²-+") | _PUNCT_SET  # a final "." splits off after these (and digits, lower case)


def _suffix_length(s: str, start: int, end: int) -> int:
    """Length of the suffix mark to split off s[start:end] (0: none). Looks at the last few characters
    only, so a chunk of a million marks is still split in linear time. The longest candidate wins, as
    the leftmost match of spaCy's suffix pattern does; a suffix never takes the whole remainder."""
    n = end - start
    if n < 2:
        return 0
    tail = s[max(start, end - 6) : end]
    last, prev = tail[-1], tail[-2]
    if last == "." and prev == ".":
        k = 2
        while k < n and s[end - 1 - k] == ".":
            k += 1
        return k if k < n else 0
    if tail.endswith("……") and n > 2:
        return 2
    if last in "sS" and prev in "'’" and n > 2:
        return 2
    if m := _TAIL_SUFFIX.search(tail):
        k = len(tail) - m.start()
        if k < n:
            return k
    if last == ".":
        if prev.isdigit() or prev.islower() or prev in _DOT_AFTER:
            return 1
        if n > 2 and prev.isupper() and s[end - 3].isupper():  # ABC. -> ABC .
            return 1
        if n > 2 and prev in "FfCcKk" and s[end - 3] == "°":  # 20°C. -> 20°C .
            return 1
        return 0
    if last in _PUNCT_SET or unicodedata.category(last) == "So":
        return 1
    return 0


def _is_exception(chunk: str, start: int, end: int) -> bool:
    return end - start <= _MAX_EXCEPTION and chunk[start:end] in _EXCEPTIONS


def _split_chunk(chunk: str) -> tuple[str, ...]:
    """Tokens of one whitespace-free chunk: prefixes, then the middle (split at infixes), then suffixes."""
    out: list[str] = []
    suffixes: list[str] = []
    start, end = 0, len(chunk)
    while start < end and not _is_exception(chunk, start, end):
        changed = False
        m = _PREFIX.match(chunk, start, end)
        if m and (m.end() < end or not suffixes):  # a lone mark is a prefix, not also a suffix
            out.append(m.group())
            start = m.end()
            changed = True
        if start < end and not _is_exception(chunk, start, end):
            k = _suffix_length(chunk, start, end)
            if k:
                suffixes.append(chunk[end - k:end])
                end -= k
                changed = True
        if not changed:
            break
    if start < end:
        _split_middle(chunk[start:end], out)
    out.extend(reversed(suffixes))
    return tuple(out)


_split_short_chunk = lru_cache(maxsize=1 << 16)(_split_chunk)  # web text repeats its short chunks a lot


def words(text: str) -> list[str]:
    """Split text into spaCy-like word tokens (punctuation marks are tokens too)."""
    out: list[str] = []
    for chunk in text.split():
        if chunk.isalpha() and chunk.lower() not in _FUSED:  # the common case: nothing to split
            out.append(chunk)
        else:
            out.extend(_split_short_chunk(chunk) if len(chunk) <= 64 else _split_chunk(chunk))
    return out


def is_sentence_terminator(token: str) -> bool:
    """A single character that ends a sentence (".", "!", "?", "。", ...)."""
    return len(token) == 1 and _STERM.match(token) is not None


def is_punctuation(token: str) -> bool:
    """Every character is Unicode punctuation (category P*), like spaCy's is_punct."""
    return bool(token) and all(unicodedata.category(c)[0] == "P" for c in token)


def is_symbol_word(token: str) -> bool:
    """Made only of punctuation, symbols or control characters ("...", "$", "|")."""
    return all(unicodedata.category(c)[0] in "PSC" for c in token)


def sentence_count(tokens: list[str]) -> int:
    """Number of sentences in a token list, by spaCy's sentencizer rule."""
    if not tokens:
        return 0
    count = 1
    seen_terminator = False
    for tok in tokens:
        terminator = is_sentence_terminator(tok)
        if seen_terminator and not terminator and not is_punctuation(tok):
            count += 1
            seen_terminator = False
        elif terminator:
            seen_terminator = True
    return count


def ends_with_terminal_punctuation(line: str) -> bool:
    """The line's last character ends a sentence."""
    return bool(line) and _STERM.match(line[-1]) is not None


@lru_cache(maxsize=8)
def word_tuple(text: str) -> tuple[str, ...]:
    """`words(text)` as a tuple, remembered for the last few texts (several filters split the same text)."""
    return tuple(words(text))


def duplicates(items: list[str]) -> tuple[int, int]:
    """(how many items repeat an earlier one, how many characters those repeats hold)."""
    seen: set[str] = set()
    count = chars = 0
    for item in items:
        if item in seen:
            count += 1
            chars += len(item)
        else:
            seen.add(item)
    return count, chars
