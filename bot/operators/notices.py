"""Wait notices: a customer still waiting for a human after `operators.wait_notice_minutes` is
told, once per handoff and on their own channel, how long the wait usually is, and that the
reply will come in this chat (no e-mail address asked for)."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone

from bot.errors import ConversationBusyError
from bot.operators.delivery import ChatDelivery, to_customer
from bot.operators.store import OperatorStore
from bot.push import CustomerPush, operator_frame
from bot.settings import Settings
from bot.storage.models import as_utc

log = logging.getLogger(__name__)


def wait_phrase(minutes: float | None) -> str:
    """The {wait} of persona.wait_notice_text."""
    if minutes is None:
        return "a little longer than usual"
    whole = max(1, round(minutes))
    return f"about {whole} minute{'s' if whole != 1 else ''}"


async def send_wait_notices(settings: Settings, store: OperatorStore, customers: CustomerPush,
                            telegram: ChatDelivery | None) -> int:
    """Notify every conversation waiting unclaimed for longer than the setting and not
    notified since its handoff; how many were notified."""
    minutes = settings.operators.wait_notice_minutes
    if minutes <= 0:
        return 0
    cutoff = datetime.now(timezone.utc) - timedelta(minutes=minutes)
    overdue = [item for item in await store.inbox()
               if item.claimed_by is None and item.waiting_since is not None
               and as_utc(item.waiting_since) <= cutoff]
    if not overdue:
        return 0
    expected = await store.expected_wait()
    persona = settings.persona
    text = persona.render(persona.wait_notice_text, wait=wait_phrase(expected))
    sent = 0
    for item in overdue:
        assert item.waiting_since is not None
        # The turn lock: a customer's message or another worker's sweep is not interleaved.
        try:
            async with store.conversations.turn_lock(item.conversation_id):
                message = await store.add_notice(item.conversation_id, text,
                                                  item.waiting_since,
                                                  {"expected_wait_minutes": expected})
        except ConversationBusyError as exc:  # the next sweep tries again
            log.warning("wait notice not sent yet: %s", exc)
            continue
        if message is None:
            continue
        sent += 1
        await to_customer(customers, telegram, item.conversation_id, operator_frame(
            text, persona.bot_name, message.id, message.created_at.isoformat()), text)
    return sent


async def wait_notices(settings: Settings, store: OperatorStore, customers: CustomerPush,
                       telegram: ChatDelivery | None) -> None:
    """Sweep for overdue waits until cancelled: every quarter of the setting, at most a minute."""
    minutes = settings.operators.wait_notice_minutes
    if minutes <= 0:
        return
    interval = min(60.0, minutes * 60 / 4)
    while True:
        await asyncio.sleep(interval)
        try:
            await send_wait_notices(settings, store, customers, telegram)
        except Exception:  # a database hiccup must not end the sweeps
            log.exception("wait notices failed; trying again in %.0f s", interval)
