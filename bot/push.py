"""What the core needs from a channel to reach a customer outside a turn, and what it sends.

An operator's reply, a status change or a wait notice reaches the customer through whichever
channel holds their open connections: the operators' code asks for a `CustomerPush` (the web
channel's CustomerSockets is one) and builds the frames here, so that it never imports a
channel (bot/operators/ stays importable on its own, and a channel may import it).
"""

from __future__ import annotations

from typing import Any, Protocol

Frame = dict[str, Any]


class CustomerPush(Protocol):
    """Sends a frame to the customer's open connections of a conversation."""

    async def push(self, conversation_id: str, frame: Frame) -> int:
        """Send `frame` to every connection open on the conversation; how many there were
        (0: the customer is not connected, and finds the stored message in the history)."""
        ...


def operator_frame(text: str, name: str, message_id: int, created_at: str) -> Frame:
    """An operator's message, pushed to the customer's open sockets."""
    return {"type": "operator", "text": text, "name": name, "message_id": message_id,
            "created_at": created_at}


def typing_frame(name: str) -> Frame:
    """An operator is writing to the customer (sent every few seconds while they type)."""
    return {"type": "typing", "name": name}


def status_frame(status: str) -> Frame:
    """Who answers the conversation now, pushed when an operator releases or closes it."""
    return {"type": "status", "status": status}
