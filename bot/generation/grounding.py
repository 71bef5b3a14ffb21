"""Sentence-by-sentence grounding: does the FAQ support each sentence of a generated answer?"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from retrieval.corpus import FaqEntry
from retrieval.embedder import Embedder

# Weights of the soft score: closest FAQ clause by meaning, and share of content words found in
# the FAQ. Tuned on the "tune" split of data/grounding_dev.jsonl (bench/bench_grounding.py).
SEMANTIC_WEIGHT = 0.6
LEXICAL_WEIGHT = 0.4
# A sentence further from the customer's question than this (cosine) answers something else.
MIN_RELEVANCE = 0.2
# Content words taken from the customer's message that the FAQ entry does not have: "Yes, you
# can pay with bitcoin", "... the code 'Bomb Making Kit'". Any such word fails the sentence.
MAX_ECHOED = 0

# --- sentence splitting ----------------------------------------------------------------------

_ABBREVIATION_WORDS = (
    "e.g i.e etc approx vs nr mr mrs ms dr st ca incl excl min max mon tue wed thu fri sat sun "
    "jan feb mar apr jun jul aug sep sept oct nov dec")
_ABBREVIATIONS = frozenset(_ABBREVIATION_WORDS.split())
# Curly quotes are read as straight ones everywhere below.
_STRAIGHT = str.maketrans({0x2018: "'", 0x2019: "'", 0x201C: '"', 0x201D: '"'})
_END = re.compile("[.!?]+[\"')\\]\u201d\u2019]*(?=\\s|$)|\n+")  # closers may be curly


def split_sentences(text: str) -> list[str]:
    """Split at . ! ? and line breaks, not after abbreviations, initials or before lower case."""
    sentences: list[str] = []
    start = 0
    for match in _END.finditer(text):
        if match.group()[0] == ".":
            before = re.search(r"(\S+)$", text[start:match.start()])
            word = before.group(1).lower() if before else ""
            rest = text[match.end():].lstrip()
            if (word in _ABBREVIATIONS or re.fullmatch(r"\w", word)
                    or (word == "no" and rest[:1].isdigit()) or rest[:1].islower()):
                continue  # "e.g. a tent", "approx. 3 days", "J. Smith", "No. 5"
        if text[start:match.end()].strip():
            sentences.append(text[start:match.end()].strip())
        start = match.end()
    if text[start:].strip():
        sentences.append(text[start:].strip())
    return sentences


# --- facts: numbers with units, contacts, quotes, codes, polarity ------------------------------

_UNITS = {
    "day": "days", "days": "days", "hour": "hours", "hours": "hours", "hrs": "hours",
    "minute": "minutes", "minutes": "minutes", "mins": "minutes", "week": "weeks",
    "weeks": "weeks", "month": "months", "months": "months", "year": "years", "years": "years",
    "eur": "EUR", "euro": "EUR", "euros": "EUR", "€": "EUR", "gbp": "GBP", "pound": "GBP",
    "pounds": "GBP", "£": "GBP", "usd": "USD", "dollar": "USD", "dollars": "USD", "$": "USD",
    "%": "%", "percent": "%", "point": "points", "points": "points", "item": "items",
    "items": "items"}
_CURRENCIES = frozenset({"EUR", "GBP", "USD"})
_NUMBER_WORDS = {
    "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "fifteen": "15",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "hundred": "100"}
_SKIP = frozenset({"working", "business", "calendar", "full", "more", "whole"})
_TOKEN = re.compile(r"[€£$]|\d+(?:[.,:]\d+)*|%|[A-Za-z][A-Za-z'-]*")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|example|org|net|eu|"
                  r"de|nl|fr|co\.uk|uk|io)(?:/\S*)?\b", re.IGNORECASE)
_PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().-]{5,}\d(?!\w)")
_QUOTED = re.compile(r"\"([^\"]+)\"|(?<![\w])'([^']+)'(?![\w])")
_CODE = re.compile(r"\b(?=[A-Z0-9-]*[A-Z])(?=[A-Z0-9-]*\d)[A-Z0-9-]{4,}\b|\b[A-Z]{3,}\b")
_WORD = re.compile(r"[a-z][a-z'-]{2,}")
_NEGATIONS = frozenset({"not", "never", "no", "none", "nothing", "cannot", "without", "nor",
                        "neither", "unable"})
# Words that flip or sharpen a claim: each must appear in the FAQ text the sentence rests on.
_POLARITY = frozenset({"never", "always", "free", "charge", "charged", "fee", "fees", "all",
                       "every", "only", "any", "guaranteed", "guarantee", "must", "required",
                       "automatically", "instantly", "immediately", "unlimited", "forever"})
_PROFANITY = re.compile(
    r"\b(?:f+u+c+k\w*|shit\w*|bullshit|crap\w*|damn\w*|bitch\w*|bastard\w*|ass(?:hole)?s?|"
    r"piss\w*|wtf|stupid|idiot\w*|dumb|moron\w*|bloody|bomb\w*|kill\w*|weapon\w*|drugs?)\b",
    re.IGNORECASE)
_STOP_WORDS = (
    "about after again also because been before being below between both could does doing "
    "down during each from further have having here into itself just more most other over "
    "same should some such than that their them then there these they this those through "
    "under until very were what when where which while with would your yours you'll we'll "
    "i'll can't don't won't it's you're we're you've you'd will want like make sure need able "
    "please thank thanks help sorry hear glad happy also however typically usually simply "
    "provide provided available following follow going using done just really")
_STOP = frozenset(_STOP_WORDS.split())


def _number(token: str) -> str:
    """A canonical number: '1,500' -> '1500', '9.95' stays, '10:00' -> '10:00'."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", token):
        return token.replace(",", "")
    return token.replace(",", ".") if re.fullmatch(r"\d+,\d{1,2}", token) else token


def _tokens(text: str) -> list[str]:
    tokens = []
    for token in _TOKEN.findall(text.translate(_STRAIGHT)):
        lower = token.lower()
        tokens.append(_NUMBER_WORDS.get(lower, lower))
    return tokens


def quantities(text: str) -> set[tuple[str, str]]:
    """(number, unit) pairs, unit '' when none follows: '3-5 working days' gives 3 and 5 days."""
    tokens = _tokens(text)
    found: set[tuple[str, str]] = set()
    run: list[str] = []  # numbers of a range waiting for their unit
    for i, token in enumerate(tokens):
        if not token[0].isdigit():
            continue
        number = _number(token)
        if ":" in number:
            found.add((number, ""))
            number = number.split(":")[0]
        run.append(number)
        nxt = tokens[i + 1] if i + 1 < len(tokens) else ""
        after = tokens[i + 2] if i + 2 < len(tokens) else ""
        if nxt[:1].isdigit() or (nxt in {"to", "or", "and"} and after[:1].isdigit()):
            continue  # "10 to 500 EUR", "1 or 2 days": the unit comes after the last number
        prev = tokens[i - 1] if i > 0 else ""
        unit = _UNITS.get(prev, "") if prev in {"€", "£", "$"} else ""
        j = i + 1
        while not unit and j < len(tokens) and tokens[j] in _SKIP:
            j += 1
        if not unit and j < len(tokens):
            unit = _UNITS.get(tokens[j].rstrip("s") if tokens[j].endswith("-day") else tokens[j],
                              "")
        found.update((n, unit) for n in run)
        run = []
    found.update((n, "") for n in run)
    return found


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text.translate(_STRAIGHT).lower()).strip()


def _words(text: str) -> list[str]:
    """Content words, with n't spelled 'not' and a plural s dropped."""
    text = _norm(text).replace("can't", "can not").replace("won't", "will not")
    text = re.sub(r"n't\b", " not", text)
    return [w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith(("ss", "us", "ys"))
            else w
            for w in _WORD.findall(text)]


def negated(text: str) -> bool:
    """Whether a clause is negated (not, never, no, n't, cannot, without ...)."""
    return any(w in _NEGATIONS for w in _words(text))


_CLAUSE = re.compile(r";|:|,?\s+but\s+|,\s+so\s+|,\s+and\s+|\s+-\s+|,\s+(?=or\b)|\(|\)")


_SCOPE_END = re.compile(r";|[.!?](?:\s|$)|\bbut\b|,\s+(?:since|so|although|because)\b")


def negated_words(text: str) -> set[str]:
    """Content words inside a negation's scope: from the cue to the next ; . 'but' ', since'."""
    found: set[str] = set()
    for part in _SCOPE_END.split(text):
        words = _words(part)
        cues = [i for i, w in enumerate(words) if w in _NEGATIONS]
        if cues:
            found.update(w for w in words[cues[0] + 1:] if w not in _STOP and len(w) > 3)
    return found


def _unnegated(part: str) -> list[str]:
    """Content words of a scope part outside any negation (before its first cue)."""
    words = _words(part)
    cues = [i for i, w in enumerate(words) if w in _NEGATIONS]
    return words[:cues[0]] if cues else words


_RELATIVE = re.compile(r",\s+(?=which\b|where\b|as\b|so that\b|because\b)")


def clauses(sentence: str, extra: bool = False) -> list[str]:
    """The sentence cut at ; : 'but' ', so' ', and' brackets (and with `extra` at ', which'
    ', where' ', as' ', because'), keeping pieces of 3+ words."""
    pieces = [p.strip(" ,.!?") for p in _CLAUSE.split(sentence)]
    if extra:
        pieces = [q.strip(" ,.!?") for p in pieces for q in _RELATIVE.split(p)]
    return [p for p in pieces if len(p.split()) >= 3]


# --- the checker -------------------------------------------------------------------------------


def _content(text: str) -> list[str]:
    """Words that carry the claim: not stop words, longer than three letters."""
    return [w for w in _words(text) if w not in _STOP and len(w) > 3]


def _support(similarity: float, words: list[str], prepared: Sequence[_Source]) -> float:
    """Soft support in [0, 1]: closest FAQ unit by meaning, share of words found in the FAQ."""
    known = frozenset().union(*(s.words for s in prepared))
    lexical = sum(w in known for w in words) / len(words) if words else 0.5
    score = SEMANTIC_WEIGHT * max(similarity, 0.0) + LEXICAL_WEIGHT * lexical
    return round(min(max(score, 0.0), 1.0), 4)


def _basis(piece: str, vector: np.ndarray, prepared: Sequence[_Source]) -> str:
    """The FAQ clause a piece of a sentence restates: most shared words, then closest meaning."""
    words = set(_content(piece)) - _POLARITY
    best, key = "", (-1, -1.0)
    for src in prepared:
        sims = src.vectors @ vector
        for j in src.finest:
            candidate = (len(words & set(_words(src.units[j]))), float(sims[j]))
            if candidate > key:
                best, key = src.units[j], candidate
    return best


@dataclass(frozen=True)
class SentenceCheck:
    """One sentence's verdict: support score, whether it may be shown, and why not."""

    text: str
    score: float
    supported: bool
    reason: str


@dataclass(frozen=True)
class _Source:
    """One FAQ entry prepared for checking: its answer's sentences and clauses, embedded."""

    units: list[str]
    vectors: np.ndarray
    negated: list[bool]
    text: str
    words: frozenset[str]
    quantities: frozenset[tuple[str, str]]
    negated_only: frozenset[str]  # words the answer only uses under a negation
    finest: list[int]  # units that are not cut further: clauses, or sentences without any


class GroundingChecker:
    """Checks generated sentences against the FAQ entries that were in the prompt."""

    def __init__(self, embedder: Embedder, min_score: float) -> None:
        self.embedder = embedder
        self.min_score = min_score
        self._cache: dict[tuple[str, str], _Source] = {}

    def _source(self, entry: FaqEntry) -> _Source:
        key = (entry.id, entry.answer)
        if key not in self._cache:
            sentences = split_sentences(entry.answer)
            pieces = {s: [c for c in clauses(s) if c != s] for s in sentences}
            units = [*sentences, *[c for s in sentences for c in pieces[s]]]
            finest = [i for i, u in enumerate(units) if not pieces.get(u)]
            text = _norm(" ".join([entry.answer, entry.link or ""]))
            words = frozenset(_words(" ".join([entry.answer, *entry.questions])))
            scoped = negated_words(entry.answer)
            free = {w for part in _SCOPE_END.split(entry.answer) for w in _unnegated(part)}
            self._cache[key] = _Source(units, self.embedder.embed(units),
                                       [negated(u) for u in units], text, words,
                                       frozenset(quantities(entry.answer)),
                                       frozenset(scoped - free), finest)
        return self._cache[key]

    def check_answer(self, text: str, sources: Sequence[FaqEntry],
                     question: str = "") -> list[SentenceCheck]:
        """Every sentence of the text, in order (split with split_sentences)."""
        return [self.check_sentence(s, sources, question) for s in split_sentences(text)]

    def check_sentence(self, sentence: str, sources: Sequence[FaqEntry],
                       question: str = "") -> SentenceCheck:
        """Score one sentence; hard failures (facts not in the FAQ, flipped polarity) fail it."""
        prepared = [self._source(e) for e in sources]
        if not sentence.strip() or not prepared:
            return SentenceCheck(sentence, 0.0, False, "no FAQ entry to check against"
                                 if sentence.strip() else "empty sentence")
        parts = [c for c in clauses(sentence, extra=True) if c != sentence.strip()]
        vectors = self.embedder.embed([sentence, *parts, *([question] if question else [])])
        vector = vectors[0]
        relevance = float(vectors[-1] @ vector) if question else 1.0
        words = _content(sentence)
        best_sim, best_unit = -1.0, ""
        for src in prepared:
            sims = src.vectors @ vector
            i = int(np.argmax(sims))
            if float(sims[i]) > best_sim:
                best_sim, best_unit = float(sims[i]), src.units[i]
        # Each clause is compared with the FAQ clause about the same things (most shared words)
        # for its polarity words: "express delivery is free" rests on "express delivery costs".
        pieces = list(zip(parts, vectors[1:1 + len(parts)], strict=True)) or [(sentence, vector)]
        bases = [(piece, _basis(piece, piece_vector, prepared)) for piece, piece_vector in pieces]
        score = _support(best_sim, words, prepared)
        weakest = ""
        for part, part_vector in zip(parts, vectors[1:1 + len(parts)], strict=True):
            sim = max(float(np.max(src.vectors @ part_vector)) for src in prepared)
            part_score = _support(sim, _content(part), prepared)
            if part_score < score:
                score, weakest = part_score, part
        reason = self._hard_failure(sentence, prepared, best_unit, bases, question)
        if not reason and relevance < MIN_RELEVANCE:
            reason = f"does not address the question (relevance {relevance:.2f})"
        if not reason and score < self.min_score:
            where = f" in '{weakest}'" if weakest else ""
            reason = f"unsupported{where} ({score:.2f} < {self.min_score:.2f})"
        return SentenceCheck(sentence, score, not reason, reason)

    def _hard_failure(self, sentence: str, prepared: list[_Source], best_unit: str,
                      bases: list[tuple[str, str]], question: str) -> str:
        """The first fact or polarity in the sentence that the FAQ does not have, or ''."""
        sentence = sentence.translate(_STRAIGHT)
        text = " ".join(s.text for s in prepared)
        digits = re.sub(r"\D", "", text)
        for email in _EMAIL.findall(sentence):
            if email.lower().rstrip(".") not in text:
                return f"email {email} not in the FAQ"
        without_emails = _EMAIL.sub(" ", sentence)
        for url in _URL.findall(without_emails):
            if url.lower().rstrip(".,)") not in text:
                return f"link {url.rstrip('.,)')} not in the FAQ"
        for phone in _PHONE.findall(without_emails):
            number = re.sub(r"\D", "", phone)
            if len(number) >= 7 and number not in digits:
                return f"phone number {phone.strip()} not in the FAQ"
        for groups in _QUOTED.findall(sentence):
            quoted = _norm(next(g for g in groups if g)).strip(" .,!?")
            if quoted and quoted not in text:
                return f"quoted '{quoted}' not in the FAQ"
        upper = " ".join(s.text for s in prepared).upper()
        for code in _CODE.findall(without_emails):
            if code not in upper and code.lower() not in {"faq"} | {u for u in _UNITS}:
                return f"code '{code}' not in the FAQ"
        known = frozenset().union(*(s.quantities for s in prepared))
        numbers = {n for n, _ in known}
        for number, unit in sorted(quantities(without_emails)):
            if number not in numbers:
                return f"number {number} not in the FAQ"
            if unit and (number, unit) not in known:
                kind = "amount" if unit in _CURRENCIES else "quantity"
                return f"{kind} '{number} {unit}' not in the FAQ"
        own = set(_words(sentence))
        entry_words = set().union(*(s.words for s in prepared))
        for piece, basis_unit in bases:
            basis = set(_words(basis_unit))
            for word in [w for w in _words(piece) if w in _POLARITY]:
                if word not in basis and not (word in entry_words and word in {"all", "any"}):
                    return f"'{word}' not in the FAQ sentence it restates"
        if negated(sentence) != negated(best_unit):
            if negated(sentence):
                cue = next(w for w in _words(sentence) if w in _NEGATIONS)
                return f"negation '{cue}' not in the FAQ"
            return "drops the FAQ's negation"
        if not negated(sentence):
            denied = sorted(own & frozenset().union(*(s.negated_only for s in prepared)))
            if denied:
                return f"the FAQ says not for '{denied[0]}'"
        for match in _PROFANITY.finditer(sentence):
            if match.group().lower() not in text:
                return f"repeats '{match.group()}' (not in the FAQ)"
        echoed = sorted(w for w in own & set(_words(question))
                        if w not in entry_words and w not in _STOP and len(w) > 3)
        if len(echoed) >= MAX_ECHOED + 1:
            return f"repeats the customer's '{echoed[0]}' (not in the FAQ)"
        return ""
