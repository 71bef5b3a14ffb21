"""Normalisation: NFKC, invisible characters removed, and a folded copy for the detectors.

The cleaned text (NFKC, no zero-width or control characters) is what the turn uses; the folded
text (homoglyphs, accents, leetspeak and s p a c e d letters folded, hidden tag characters and
base64 decoded, lower case) is only what the detectors look at.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata

from bot.safety.base import GuardContext, Verdict

# Characters that look like Latin letters (Cyrillic, Greek, others NFKC leaves alone), as
# escapes, and the letters they fold to.
_CONFUSABLES = str.maketrans(
    "\u0430\u0432\u0435\u0451\u043a\u043c\u043d\u043e\u0440\u0441\u0442\u0443\u0445\u0456"
    "\u0457\u0458\u0455\u0501\u051b\u051d\u0261\u0251\u0131\u0237\u028f\u0274\u0280\u03b1"
    "\u03b2\u03b5\u03b7\u03b9\u03ba\u03bd\u03bf\u03c1\u03c4\u03c5\u03c7\u03c9\u03b3\u03bc"
    "\u03c2\u0410\u0412\u0415\u041a\u041c\u041d\u041e\u0420\u0421\u0422\u0423\u0425\u0406"
    "\u0408\u0405\u0391\u0392\u0395\u0396\u0397\u0399\u039a\u039c\u039d\u039f\u03a1\u03a4"
    "\u03a5\u03a7\u2113\u2170\u217c",
    "abeekmhopctyxiijsdqwgaijynrabenikvoptuxwyucabekmhopctyxijsabezhikmnoptyxlil")
_LEET = str.maketrans({"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a",
                       "$": "s", "!": "i", "|": "l", "€": "e"})
_CYRILLIC_GREEK = re.compile(r"[\u0370-\u03ff\u0400-\u04ff]")
_LATIN = re.compile(r"[a-zA-Z]")
# A word that mixes letters with leet digits or symbols, e.g. "1gn0re", "f@ck", "$hit".
_LEET_WORD = re.compile(r"(?<![\w@$])(?=[\w@$!|€]*[a-z])(?=[\w@$!|€]*[0-9@$!|€])[\w@$!|€]{3,}")
# Letters spelled out one by one: "i g n o r e", "f.u.c.k", "s-e-x"; a wider gap between
# letters ("i g n o r e   y o u r") separates words.
_SPACED = re.compile(r"\b(?:[a-z](?:[.\-_*]|[ .\-_*]{1,2}|\s{3,})){2,}[a-z]\b")
_GAP = re.compile(r"\s{3,}")
_ADDRESS_LIKE = re.compile(r"@\w+\.|://|^www\.|\.(?:com|org|net|io|de|uk)\b")  # not leet
_BASE64 = re.compile(r"[A-Za-z0-9+/]{16,}={0,2}")
_TAG_BASE, _TAG_END = 0xE0000, 0xE007F


def clean(text: str) -> tuple[str, str]:
    """(NFKC text without invisible or control characters, ASCII hidden in tag characters)."""
    text = unicodedata.normalize("NFKC", text)
    kept: list[str] = []
    hidden: list[str] = []
    for char in text:
        code = ord(char)
        if _TAG_BASE <= code <= _TAG_END:  # "ASCII smuggling": invisible copies of ASCII
            if 0x20 <= code - _TAG_BASE < 0x7F:
                hidden.append(chr(code - _TAG_BASE))
            continue
        category = unicodedata.category(char)
        if char in "\n\t":
            kept.append(char)
        elif category in ("Cc", "Cf", "Co", "Cs", "Cn") or 0xFE00 <= code <= 0xFE0F:
            continue  # zero-width, bidi, soft hyphen, BOM, variation selectors, controls
        else:
            kept.append(char)
    return "".join(kept), "".join(hidden)


def fold(text: str) -> str:
    """A lower-case copy for the detectors: homoglyphs, accents, leet and spacing folded."""
    original, hidden = clean(text)
    words = original.split()
    latin = sum(1 for w in words if _LATIN.search(w))
    mostly_latin = latin * 2 >= len(words)
    cleaned = _SPACED.sub(lambda m: " ".join(re.sub(r"[ .\-_*]", "", part)
                                             for part in _GAP.split(m.group())),
                          original.lower())
    words = cleaned.split()
    folded_words = []
    for word in words:
        if _CYRILLIC_GREEK.search(word) and (mostly_latin or _LATIN.search(word)):
            word = word.translate(_CONFUSABLES)
        folded_words.append(word)
    folded = " ".join(_unleet(_unaccent(w)) for w in folded_words)
    extra = [hidden.lower()] if hidden else []
    extra += _decoded_base64(original)
    return " ".join([folded, *extra]) if extra else folded


def _unaccent(word: str) -> str:
    """Accents off Latin words ("ïgnörë" -> "ignore"); other scripts keep theirs."""
    if not _LATIN.search(word):
        return word
    return "".join(c for c in unicodedata.normalize("NFKD", word) if not unicodedata.combining(c))


def _unleet(word: str) -> str:
    """Leet digits and symbols inside a word back to letters; trailing "!" is punctuation."""
    if _ADDRESS_LIKE.search(word):
        return word
    core = word.rstrip("!?.,;:")
    return _LEET_WORD.sub(lambda m: m.group().translate(_LEET), core) + word[len(core):]


def _decoded_base64(text: str) -> list[str]:
    """Readable text hidden as base64 in the message (an old trick to slip past filters)."""
    found = []
    for match in _BASE64.finditer(text):
        blob = match.group()
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4), validate=True)
            decoded = raw.decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            continue
        if decoded.isprintable() and sum(c.isalpha() or c == " " for c in decoded) > 0.8 * len(
                decoded):
            found.append(decoded.lower())
    return found


class Normalizer:
    """Always allows; rewrites the text (NFKC, invisible characters gone) and folds a copy."""

    name = "normalize"

    def check(self, text: str, context: GuardContext) -> Verdict:
        """Set `context.folded`; the verdict's text is the cleaned customer text."""
        cleaned, _ = clean(text)
        cleaned = " ".join(cleaned.split())
        context.text = cleaned
        context.folded = fold(text)
        changed = cleaned != " ".join(text.split())
        return Verdict(self.name, True, "invisible or compatibility characters removed"
                       if changed else "", 1.0 if changed else 0.0, redacted_text=cleaned)
