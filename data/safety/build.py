"""Build the safety and PII sets of data/safety/ from ../shared/data (sources in README.md).

Run: python data/safety/build.py [--shared ../shared/data]

Splits are honest: jailbreak templates and harmful questions are split BY TEMPLATE and BY
QUESTION (a test prompt's template and question were never trained on); Banking77 and CLINC150
customers are split BY INTENT (test customers ask about things the training never saw); tweets
and PII templates are split by row. Everything is seeded, so a rebuild gives the same files.
"""

from __future__ import annotations

import argparse
import csv
import json
import random
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SLOT = "[INSERT PROMPT HERE]"
SPLITS = ("train", "dev", "test")


def split3(items: Sequence[Any], fractions: tuple[float, float], rng: random.Random
           ) -> tuple[list[Any], list[Any], list[Any]]:
    """Shuffle and cut into train / dev / test by the dev and test fractions."""
    items = list(items)
    rng.shuffle(items)
    n_dev, n_test = round(len(items) * fractions[0]), round(len(items) * fractions[1])
    return items[n_dev + n_test:], items[:n_dev], items[n_dev:n_dev + n_test]


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def jailbreaks(shared: Path, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """Templates x questions of the same split, and the questions on their own (harmful)."""
    templates = [r["text"] for r in read_csv(shared / "safety/gptfuzz_jailbreak_templates.csv")]
    questions = [r["text"] for r in read_csv(shared / "safety/gptfuzz_harmful_questions.csv")]
    t_splits = split3(range(len(templates)), (0.18, 0.24), rng)
    q_splits = split3(questions, (0.2, 0.2), rng)
    per_template = {"train": 6, "dev": 10, "test": 10}
    out: dict[str, list[dict[str, Any]]] = {}
    for name, t_ids, qs in zip(SPLITS, t_splits, q_splits, strict=True):
        rows = []
        for t in t_ids:
            for q in rng.sample(qs, per_template[name]):
                rows.append({"text": templates[t].replace(SLOT, q), "label": 1,
                             "category": "jailbreak", "template": t})
        rows += [{"text": q, "label": 1, "category": "harmful"} for q in qs]
        out[name] = rows
    return out


def tweets(shared: Path, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """Davidson et al.: hate (0) and offensive (1) must be blocked, 'neither' (2) must pass."""
    rows = read_csv(shared / "safety/davidson_labeled_data.csv")
    abusive = [r["tweet"] for r in rows if r["class"] in ("0", "1")]
    neither = [r["tweet"] for r in rows if r["class"] == "2"]
    sizes = {"train": (2000, 1500), "dev": (500, 300), "test": (500, 300)}
    a_splits = split3(abusive, (0.2, 0.2), rng)
    n_splits = split3(neither, (0.2, 0.2), rng)
    out = {}
    for name, a, n in zip(SPLITS, a_splits, n_splits, strict=True):
        n_a, n_n = sizes[name]
        out[name] = ([{"text": t, "label": 1, "category": "abuse"} for t in a[:n_a]]
                     + [{"text": t, "label": 0, "category": "benign_tweet"} for t in n[:n_n]])
    return out


def customers(shared: Path, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    """Banking77 and CLINC150 queries (out-of-scope ones too): real customers, must pass."""
    banking = [(r["text"], r["category"]) for r in read_csv(shared / "banking77/train.csv")]
    clinc_data = json.loads((shared / "clinc150/train_val.json").read_text(encoding="utf-8"))
    clinc = [(t, label) for part in ("train", "val") for t, label in clinc_data[part]]
    oos = [t for part in ("oos_train", "oos_val") for t, _ in clinc_data[part]]
    sizes = {"train": 2000, "dev": 600, "test": 600}
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for source, pairs in (("banking77", banking), ("clinc150", clinc)):
        intents = sorted({label for _, label in pairs})
        for name, chosen in zip(SPLITS, split3(intents, (0.2, 0.2), rng), strict=True):
            pool = [t for t, label in pairs if label in set(chosen)]
            out[name] += [{"text": t, "label": 0, "category": f"benign_{source}"}
                          for t in rng.sample(pool, min(sizes[name], len(pool)))]
    for name, chosen in zip(SPLITS, split3(oos, (0.25, 0.25), rng), strict=True):
        out[name] += [{"text": t, "label": 0, "category": "benign_oos"} for t in chosen]
    return out


# --- PII: presidio-research's templates filled with fake values, with their spans -----------

FIRST = ["Maria", "James", "Aisha", "Wei", "Olga", "Carlos", "Priya", "Tom", "Fatima", "Lukas",
         "Emma", "Kwame", "Sofia", "Hiroshi", "Chloe", "Mateo", "Anna", "David", "Leila", "Noah"]
LAST = ["Garcia", "Smith", "Khan", "Zhang", "Ivanova", "Mendes", "Patel", "O'Brien", "Okafor",
        "Schmidt", "Dubois", "Nakamura", "Rossi", "Kowalski", "Johnson", "Haddad", "Nguyen"]
STREETS = ["Baker Street", "Elm Avenue", "Maple Road", "High Street", "Oak Lane", "Park Drive",
           "Cedar Court", "Station Road", "Sunset Boulevard", "Church Lane"]
CITIES = ["London", "Berlin", "Lyon", "Austin", "Pune", "Toronto", "Dublin", "Leeds"]
DOMAINS = ["gmail.com", "outlook.com", "example.org", "yahoo.co.uk", "mail.de", "proton.me"]
IBAN_LENGTHS = {"GB": 22, "DE": 22, "FR": 27, "NL": 18, "ES": 24, "IT": 27, "BE": 16}
LABELS = {"credit_card_number": "CREDIT_CARD", "phone_number": "PHONE_NUMBER",
          "email": "EMAIL_ADDRESS", "iban": "IBAN_CODE", "ssn": "US_SSN",
          "ip_address": "IP_ADDRESS", "person": "PERSON", "name": "PERSON",
          "name_female": "PERSON", "name_male": "PERSON", "address": "ADDRESS"}


def luhn_complete(digits: str) -> str:
    """Digits with the Luhn check digit appended."""
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = int(d) * (2 if i % 2 == 0 else 1)
        total += n - 9 if n > 9 else n
    return digits + str((10 - total % 10) % 10)


def card(rng: random.Random) -> str:
    prefix, length, groups = rng.choice([("4", 16, (4, 4, 4, 4)), ("51", 16, (4, 4, 4, 4)),
                                         ("37", 15, (4, 6, 5)), ("6011", 16, (4, 4, 4, 4))])
    digits = luhn_complete(prefix + "".join(rng.choice("0123456789")
                                            for _ in range(length - len(prefix) - 1)))
    sep = rng.choice([" ", "-", ""])
    parts, i = [], 0
    for g in groups:
        parts.append(digits[i:i + g])
        i += g
    return sep.join(parts)


def iban(rng: random.Random) -> str:
    country = rng.choice(sorted(IBAN_LENGTHS))
    body = "".join(rng.choice("0123456789") for _ in range(IBAN_LENGTHS[country] - 4))
    if country in ("GB", "NL"):
        body = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(4)) + body[4:]
    numeric = "".join(str(int(c, 36)) for c in body + country + "00")
    code = f"{country}{98 - int(numeric) % 97:02d}{body}"
    return " ".join(code[i:i + 4] for i in range(0, len(code), 4)) if rng.random() < 0.6 \
        else code


def phone(rng: random.Random) -> str:
    d = lambda n: "".join(rng.choice("0123456789") for _ in range(n))  # noqa: E731
    area = str(rng.randint(201, 989))
    return rng.choice([
        f"({area}) 555-{d(4)}", f"{area}-555-{d(4)}", f"+1 {area} 555 {d(4)}",
        f"{area}.555.{d(4)}", f"+44 20 7946 {d(4)}", f"020 7946 {d(4)}", f"07700 900{d(3)}",
        f"+49 30 {d(8)}", f"+33 1 {d(2)} {d(2)} {d(2)} {d(2)}", f"+91 98{d(3)} {d(5)}",
        f"+1-{area}-555-{d(4)}"])


def fake(slot: str, rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    makers: dict[str, Callable[[], str]] = {
        "credit_card_number": lambda: card(rng), "iban": lambda: iban(rng),
        "phone_number": lambda: phone(rng),
        "email": lambda: f"{first.lower()}.{last.lower().replace(chr(39), '')}"
                         f"{rng.choice(['', str(rng.randint(1, 99))])}@{rng.choice(DOMAINS)}",
        "ssn": lambda: f"{rng.randint(100, 665)}-{rng.randint(10, 99)}-{rng.randint(1000, 9999)}",
        "ip_address": lambda: ".".join(str(rng.randint(1, 254)) for _ in range(4)),
        "address": lambda: f"{rng.randint(1, 999)} {rng.choice(STREETS)}, "
                           f"{rng.choice(CITIES)}",
        "street_name": lambda: rng.choice(STREETS), "building_number": lambda: str(
            rng.randint(1, 999)), "city": lambda: rng.choice(CITIES),
        "person": lambda: f"{first} {last}", "name": lambda: f"{first} {last}",
        "first_name": lambda: first, "last_name": lambda: last,
        "url": lambda: f"https://www.{rng.choice(['shop', 'news', 'blog'])}.example.com",
        "age": lambda: str(rng.randint(18, 90)), "year": lambda: str(rng.randint(1950, 2024)),
    }
    if slot in makers:
        return makers[slot]()
    if "name" in slot:  # first_name_male, last_name_female, name_female, ...
        return last if "last" in slot else first if "first" in slot else f"{first} {last}"
    if slot.startswith("prefix"):
        return rng.choice(["Mr.", "Ms.", "Dr.", "Mrs."])
    return rng.choice({"organization": ["Acme Corp", "Globex", "Initech", "Umbrella Ltd"],
                       "country": ["Norway", "Brazil", "Kenya", "Canada"],
                       "day_of_week": ["Monday", "Friday"], "date_time": ["12 March 2021"],
                       "date_of_birth": ["1987-04-12", "03/09/1975"]}.get(
        slot, ["engineer", "French", "nurse", "German"]))


# Written for this project: customer messages carrying the four labels the targets name, so that
# each has enough support (presidio-research's templates hold only 3 with an IBAN, 6 an email).
OWN_TEMPLATES = [
    "Please send the refund to my account {{iban}}, thanks",
    "my iban is {{iban}} can you check why the transfer bounced",
    "IBAN: {{iban}} - name on the account {{person}}",
    "you can email me at {{email}} or call {{phone_number}}",
    "Hi, my email changed to {{email}}, please update it",
    "{{email}} is the address on my account but I never got the receipt",
    "call me back on {{phone_number}} after 5pm please",
    "My number is {{phone_number}}, the courier should ring it",
    "text {{phone_number}} when the parcel is out for delivery",
    "I paid with {{credit_card_number}} but the order shows unpaid",
    "card {{credit_card_number}} exp 09/27 was charged twice",
    "Charge it to {{credit_card_number}}, same as last time.",
]
KEY_SLOTS = ("credit_card_number", "phone_number", "email", "iban")


def pii_sets(shared: Path, rng: random.Random) -> dict[str, list[dict[str, Any]]]:
    # A few upstream templates write line breaks as a literal backslash-n: real line breaks here.
    upstream = [t.strip().replace("\\n", "\n") for t in (
        shared / "pii/presidio_templates.txt").read_text(encoding="utf-8").splitlines()
        if "{{" in t]
    _, dev, test = split3(upstream, (0.5, 0.5), rng)
    _, own_dev, own_test = split3(OWN_TEMPLATES, (0.5, 0.5), rng)
    out = {}
    for name, chosen in (("dev", dev + own_dev), ("test", test + own_test)):
        rows = []
        for template in chosen:
            fills = 8 if any(f"{{{{{k}}}}}" in template for k in KEY_SLOTS) else 2
            for _ in range(fills):
                text, spans, last = "", [], 0
                for match in re.finditer(r"\{\{(\w+)\}\}", template):
                    text += template[last:match.start()]
                    value = fake(match.group(1), rng)
                    slot = match.group(1)
                    label = LABELS.get(slot) or ("PERSON" if "name" in slot
                                                 and slot != "street_name" else None)
                    if label:
                        spans.append({"start": len(text), "end": len(text) + len(value),
                                      "label": label})
                    text += value
                    last = match.end()
                text += template[last:]
                rows.append({"text": text, "spans": spans})
        out[name] = rows
    return out


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=HERE.parent.parent.parent / "shared/data")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args(argv)
    if not args.shared.is_dir():
        print(f"error: {args.shared} is not a folder (pass --shared)", file=sys.stderr)
        return 1
    parts = [jailbreaks(args.shared, random.Random(1)), tweets(args.shared, random.Random(2)),
             customers(args.shared, random.Random(3))]
    for name in SPLITS:
        rows = [row for part in parts for row in part[name]]
        random.Random(4).shuffle(rows)
        write_jsonl(args.out / f"{name}.jsonl", rows)
        print(f"{name}.jsonl: {len(rows)} rows", file=sys.stderr)
    for name, rows in pii_sets(args.shared, random.Random(5)).items():
        write_jsonl(args.out / f"pii_{name}.jsonl", rows)
        print(f"pii_{name}.jsonl: {len(rows)} rows", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
