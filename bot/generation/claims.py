"""What a sentence claims: sentence and clause splitting, words, numbers with units, negation."""

from __future__ import annotations

import re

# --- sentences ---------------------------------------------------------------------------------

_ABBREVIATION_WORDS = (
    "e.g i.e etc approx vs nr mr mrs ms dr st ca incl excl min max mon tue wed thu fri sat sun "
    "jan feb mar apr jun jul aug sep sept oct nov dec")
_ABBREVIATIONS = frozenset(_ABBREVIATION_WORDS.split())
# Curly quotes are read as straight ones everywhere below.
STRAIGHT = str.maketrans({0x2018: "'", 0x2019: "'", 0x201C: '"', 0x201D: '"'})
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

UNITS = {
    "day": "days", "days": "days", "hour": "hours", "hours": "hours", "hrs": "hours",
    "minute": "minutes", "minutes": "minutes", "mins": "minutes", "week": "weeks",
    "weeks": "weeks", "month": "months", "months": "months", "year": "years", "years": "years",
    "eur": "EUR", "euro": "EUR", "euros": "EUR", "€": "EUR", "gbp": "GBP", "pound": "GBP",
    "pounds": "GBP", "£": "GBP", "usd": "USD", "dollar": "USD", "dollars": "USD", "$": "USD",
    "%": "%", "percent": "%", "point": "points", "points": "points", "item": "items",
    "items": "items"}
CURRENCIES = frozenset({"EUR", "GBP", "USD"})
_NUMBER_WORDS = {
    "two": "2", "three": "3", "four": "4", "five": "5", "six": "6", "seven": "7",
    "eight": "8", "nine": "9", "ten": "10", "eleven": "11", "twelve": "12", "fifteen": "15",
    "twenty": "20", "thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "hundred": "100"}
_SKIP = frozenset({"working", "business", "calendar", "full", "more", "whole"})
_TOKEN = re.compile(r"[€£$]|\d+(?:[.,:]\d+)*|%|[A-Za-z][A-Za-z'-]*")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
URL = re.compile(r"(?:https?://|www\.)\S+|\b[\w-]+(?:\.[\w-]+)*\.(?:com|example|org|net|eu|"
                  r"de|nl|fr|co\.uk|uk|io)(?:/\S*)?\b", re.IGNORECASE)
PHONE = re.compile(r"(?<![\w.])\+?\(?\d[\d\s().-]{5,}\d(?!\w)")
QUOTED = re.compile(r"\"([^\"]+)\"|(?<![\w])'([^']+)'(?![\w])")
CODE = re.compile(r"\b(?=[A-Z0-9-]*[A-Z])(?=[A-Z0-9-]*\d)[A-Z0-9-]{4,}\b|\b[A-Z]{3,}\b")
_WORD = re.compile(r"[a-z][a-z'-]{2,}")
NEGATIONS = frozenset({"not", "never", "no", "none", "nothing", "cannot", "without", "nor",
                        "neither", "unable"})
# Words that flip or sharpen a claim: each must appear in the FAQ text the sentence rests on.
POLARITY = frozenset({"never", "always", "free", "charge", "charged", "fee", "fees", "all",
                       "every", "only", "any", "guaranteed", "guarantee", "must", "required",
                       "automatically", "instantly", "immediately", "unlimited", "forever"})
PROFANITY = re.compile(
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
STOP = frozenset(_STOP_WORDS.split())


def _number(token: str) -> str:
    """A canonical number: '1,500' -> '1500', '9.95' stays, '10:00' -> '10:00'."""
    if re.fullmatch(r"\d{1,3}(?:,\d{3})+", token):
        return token.replace(",", "")
    return token.replace(",", ".") if re.fullmatch(r"\d+,\d{1,2}", token) else token


def _tokens(text: str) -> list[str]:
    tokens = []
    for token in _TOKEN.findall(text.translate(STRAIGHT)):
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
        unit = UNITS.get(prev, "") if prev in {"€", "£", "$"} else ""
        j = i + 1
        while not unit and j < len(tokens) and tokens[j] in _SKIP:
            j += 1
        if not unit and j < len(tokens):
            unit = UNITS.get(tokens[j].rstrip("s") if tokens[j].endswith("-day") else tokens[j],
                              "")
        found.update((n, unit) for n in run)
        run = []
    found.update((n, "") for n in run)
    return found


def norm(text: str) -> str:
    """Lower case, straight quotes, single spaces."""
    return re.sub(r"\s+", " ", text.translate(STRAIGHT).lower()).strip()


def claim_words(text: str) -> list[str]:
    """Content words, with n't spelled 'not' and a plural s dropped."""
    text = norm(text).replace("can't", "can not").replace("won't", "will not")
    text = re.sub(r"n't\b", " not", text)
    return [w[:-1] if len(w) > 4 and w.endswith("s") and not w.endswith(("ss", "us", "ys"))
            else w
            for w in _WORD.findall(text)]


def negated(text: str) -> bool:
    """Whether a clause is negated (not, never, no, n't, cannot, without ...)."""
    return any(w in NEGATIONS for w in claim_words(text))


_CLAUSE = re.compile(r";|:|,?\s+but\s+|,\s+so\s+|,\s+and\s+|\s+-\s+|,\s+(?=or\b)|\(|\)")


SCOPE_END = re.compile(r";|[.!?](?:\s|$)|\bbut\b|,\s+(?:since|so|although|because)\b")


def negated_words(text: str) -> set[str]:
    """Content words inside a negation's scope: from the cue to the next ; . 'but' ', since'."""
    found: set[str] = set()
    for part in SCOPE_END.split(text):
        words = claim_words(part)
        cues = [i for i, w in enumerate(words) if w in NEGATIONS]
        if cues:
            found.update(w for w in words[cues[0] + 1:] if w not in STOP and len(w) > 3)
    return found


def unnegated(part: str) -> list[str]:
    """Content words of a scope part outside any negation (before its first cue)."""
    words = claim_words(part)
    cues = [i for i, w in enumerate(words) if w in NEGATIONS]
    return words[:cues[0]] if cues else words


_RELATIVE = re.compile(r",\s+(?=which\b|where\b|as\b|so that\b|because\b)")


def clauses(sentence: str, extra: bool = False) -> list[str]:
    """The sentence cut at ; : 'but' ', so' ', and' brackets (and with `extra` at ', which'
    ', where' ', as' ', because'), keeping pieces of 3+ words."""
    pieces = [p.strip(" ,.!?") for p in _CLAUSE.split(sentence)]
    if extra:
        pieces = [q.strip(" ,.!?") for p in pieces for q in _RELATIVE.split(p)]
    return [p for p in pieces if len(p.split()) >= 3]
