"""Write pii_orders.jsonl: 50 customer sentences with order-like identifiers and no PII.

Run: python data/safety/orders.py (seeded: a rerun gives the same file). Made for issue 31 to
measure how often the redactor takes an order, invoice, ticket or tracking number for a phone
or card number; `supportbot eval pii --data data/safety/pii_orders.jsonl` reports the share of
rows in which anything was redacted. No template or id here comes from the PII test sets.
"""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

TEMPLATES = [
    "order number {digits10}",
    "my order number is {digits10}, where is it?",
    "Where is order {digits9}? It has been a week.",
    "I never got order #{digits8}",
    "can you check order no. {digits12} please",
    "invoice INV-{year}-{digits5} is wrong",
    "I was charged twice on invoice {digits10}",
    "please resend invoice #{digits7}",
    "tracking 1Z{alnum6}{digits10}",
    "the tracking number {digits12} shows no movement",
    "tracking: {digits14}",
    "ticket {digits8} is still open",
    "support ticket #{digits10} was closed without an answer",
    "my reference is {digits10}",
    "ref {digits11}, can you help?",
    "booking reference {digits9} for two people",
    "confirmation number {digits10}",
    "case {digits10} has not been updated",
    "return number RMA-{digits8} was approved",
    "the parcel {digits13} went to the wrong depot",
    "receipt {digits10} from the store on Main Street",
    "transaction id {digits12} failed",
    "serial number {digits11} on the box",
    "item {digits8} arrived broken",
    "SKU {digits10} is out of stock again?",
]


def fill(template: str, rng: random.Random) -> str:
    values = {f"digits{n}": "".join(rng.choice(string.digits) for _ in range(n))
              for n in range(5, 15)}
    values["alnum6"] = "".join(rng.choice(string.ascii_uppercase + string.digits)
                               for _ in range(6))
    values["year"] = str(rng.randint(2019, 2026))
    return template.format(**values)


def main() -> None:
    rng = random.Random(31)
    rows = [{"text": fill(t, rng), "spans": []} for t in TEMPLATES for _ in range(2)]
    out = Path(__file__).with_name("pii_orders.jsonl")
    out.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    print(f"{len(rows)} rows -> {out}")


if __name__ == "__main__":
    main()
