"""What the bot learnt from use, for operators (`/operator/api/learning`): the learnt
phrasings, the candidates and the doubts (bot/learning/), with the signals behind each; an
operator approves one (the bot answers it at once) or removes one (the bot stops answering
from it). The process that takes the review applies it at once; the other processes at their
next sync (operators.faq_sync_seconds).

The same protections as the rest of the inbox API (bot/channels/web/operators.py): a session,
and changes only from the inbox's own page, as JSON.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, Field

from bot.channels.web.operators import OperatorContext, current_operator, own_page_only
from bot.channels.web.unavailable import unavailable
from bot.errors import StorageError
from bot.learning import UseLearning
from bot.learning.listing import learnt_item, listed, reviewed
from bot.learning.store import MAX_WORDING_CHARS
from bot.learning.trust import APPROVED, REMOVED
from bot.storage.models import FAQ_ID_LENGTH

log = logging.getLogger(__name__)

router = APIRouter(prefix="/operator/api", tags=["operators"],
                   dependencies=[Depends(own_page_only)])


class ReviewRequest(BaseModel):
    wording: str = Field(min_length=1, max_length=MAX_WORDING_CHARS,
                         description="The customers' wording, as the list shows it.")
    entry_id: str = Field(min_length=1, max_length=FAQ_ID_LENGTH,
                          description="The FAQ entry it was taken to mean.")


def _learning(request: Request) -> UseLearning:
    context: OperatorContext = request.app.state.operators
    if context.use is None:
        raise HTTPException(404, "learning from use is not running in this server")
    return context.use


@router.get("/learning", summary="What the bot learnt from use, and what it may learn")
async def learning(request: Request,
                   operator: str = Depends(current_operator)) -> dict[str, Any]:
    use = _learning(request)
    await use.sync()
    return listed(use)


@router.post("/learning/approve", summary="Approve a wording: the bot answers it from the entry")
async def approve(body: ReviewRequest, request: Request,
                  operator: str = Depends(current_operator)) -> dict[str, Any]:
    return await _review(request, body, APPROVED, operator, "learn_approve")


@router.post("/learning/remove", summary="Remove a wording: the bot stops answering from it")
async def remove(body: ReviewRequest, request: Request,
                 operator: str = Depends(current_operator)) -> dict[str, Any]:
    return await _review(request, body, REMOVED, operator, "learn_remove")


async def _review(request: Request, body: ReviewRequest, decision: str, operator: str,
                  action: str) -> dict[str, Any]:
    use = _learning(request)
    context: OperatorContext = request.app.state.operators
    try:
        item = await reviewed(use, body.wording, body.entry_id, decision, operator)
        await context.store.log(operator, action)
    except ValueError as exc:
        raise HTTPException(422, str(exc)) from None
    except KeyError:
        raise HTTPException(404, f"nothing learnt or signalled for {body.wording[:80]!r} as "
                            f"entry {body.entry_id!r}") from None
    except StorageError as exc:
        raise unavailable("the database cannot be reached right now", exc, log) from exc
    return learnt_item(use, item)
