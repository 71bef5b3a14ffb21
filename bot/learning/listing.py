"""What the bot learnt from use, as operators see it (the inbox API and `supportbot operator
learnt`): each candidate with its state, the signals' figures, and who or what taught it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bot.learning.learner import UseLearning
from bot.learning.trust import Learnt

LISTED = 500  # the candidates listed at most (learnt ones and doubts first, then the newest)
STATES = ("learnt", "doubt", "candidate", "removed")


def listed(use: UseLearning, limit: int = LISTED) -> dict[str, Any]:
    """The list the API and `supportbot operator learnt --json` show: learnt phrasings,
    doubts, removed ones and the candidates with a net for them, newest first, at most
    `limit`; `total` says how many there were."""
    shown = [item for item in use.items
             if item.state != "candidate" or item.net > 0 or item.reviewed_by is not None]
    shown.sort(key=lambda item: (STATES.index(item.state),
                                 -(item.last.timestamp() if item.last else 0.0)))
    return {"enabled": use.settings.enabled, "confirmations": use.settings.confirmations,
            "total": len(shown), "limit": limit,
            "items": [learnt_item(use, item) for item in shown[:limit]]}


def learnt_item(use: UseLearning, item: Learnt) -> dict[str, Any]:
    """One candidate as JSON, with who or what taught it in words."""
    entry = use.index.by_id.get(item.entry_id)
    return {"wording": item.wording, "entry_id": item.entry_id,
            "entry_question": entry.question if entry is not None else None,
            "state": item.state, "net": item.net, "sources": item.sources,
            "against": item.against, "conversations": item.conversations,
            "kinds": item.kinds, "channels": item.channels,
            "first": item.first.isoformat() if item.first else None,
            "last": item.last.isoformat() if item.last else None,
            "reviewed_by": taught_by(item, use.settings.confirmations)}


def taught_by(item: Learnt, confirmations: int) -> str:
    """Who or what taught it (or took it back), when, and how many confirmations."""
    when = f" (last signal {item.last:%Y-%m-%d %H:%M} UTC)" if item.last else ""
    voices = f"{item.sources} for, {item.against} against"  # distinct customers (or operators)
    if item.state == "removed":
        return f"removed by {item.reviewed_by}; {voices}{when}"
    if item.state == "learnt" and item.kinds.get("operator") and item.reviewed_by:
        return f"answered by operator {item.reviewed_by}; {voices}{when}"
    if item.state == "learnt" and item.reviewed_by:
        return f"approved by {item.reviewed_by}; {voices}{when}"
    if item.state == "learnt":
        return (f"confirmed by {item.sources} customers, {item.against} against (needs "
                f"{confirmations}){when}")
    if item.state == "doubt":
        return f"doubted: {voices}{when}"
    return f"not yet trusted: {voices}, needs {confirmations}{when}"


async def reviewed(use: UseLearning, wording: str, entry_id: str, decision: str,
                   operator: str) -> Learnt:
    """An operator's review (approved / removed) of a listed wording, its fields checked first:
    ValueError naming the field when one is wrong, KeyError when nothing was signalled for the
    pair (the inbox API and the CLI say both the same way)."""
    wording = " ".join(wording.split())
    if not wording:
        raise ValueError("wording: empty (only spaces)")
    entry_id = entry_id.strip()
    if entry_id not in use.index.by_id and all(i.entry_id != entry_id for i in use.items):
        raise ValueError(f"entry_id: no FAQ entry {entry_id[:128]!r}")
    return await use.review(wording, entry_id, decision, operator)


def learnt_yaml(learnt: Sequence[Learnt]) -> str:
    """The learnt phrasings as FAQ YAML, grouped under their entry's id, to copy into that
    entry of the FAQ file (then they no longer depend on the signals); '' when none."""
    if not learnt:
        return ""
    import yaml

    grouped: dict[str, list[str]] = {}
    for item in sorted(learnt, key=lambda i: (i.entry_id, i.wording)):
        grouped.setdefault(item.entry_id, []).append(item.wording)
    return yaml.safe_dump([{"id": entry_id, "questions": questions,
                            "note": "phrasings learnt from customers (supportbot operator learnt)"}
                           for entry_id, questions in grouped.items()],
                          allow_unicode=True, sort_keys=False, width=96)
