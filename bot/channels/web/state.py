"""What the web app's handlers share: settings, the dialogue manager, tokens, limits, metrics."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import HTTPConnection

from bot.channels.web.metrics import Metrics
from bot.channels.web.relay import PostgresRelay
from bot.channels.web.security import ConversationTokens, RateLimiter
from bot.channels.web.service import ChatService
from bot.dialogue import DialogueManager
from bot.settings import Settings

Sender = Callable[[dict[str, Any]], Awaitable[None]]


class CustomerSockets:
    """The customers' open web sockets of this process, by conversation: how an operator's
    reply reaches the customer at once (the web channel's bot/push.py CustomerPush). On
    PostgreSQL a relay (bot/channels/web/relay.py) also hands each frame to the other server
    processes, for the sockets they hold."""

    def __init__(self) -> None:
        self._senders: dict[str, set[Sender]] = {}
        self.relay: PostgresRelay | None = None

    def add(self, conversation_id: str, send: Sender) -> None:
        self._senders.setdefault(conversation_id, set()).add(send)

    def discard(self, conversation_id: str, send: Sender) -> None:
        senders = self._senders.get(conversation_id)
        if senders is not None:
            senders.discard(send)
            if not senders:
                del self._senders[conversation_id]

    async def push(self, conversation_id: str, frame: dict[str, Any]) -> int:
        """Send `frame` to every socket open on the conversation, here and (through the relay)
        in the other server processes; how many there were here."""
        if self.relay is not None:
            await self.relay.publish(conversation_id, frame)
        return await self.push_here(conversation_id, frame)

    async def push_here(self, conversation_id: str, frame: dict[str, Any]) -> int:
        """Send `frame` to this process's sockets open on the conversation; how many."""
        senders = list(self._senders.get(conversation_id, ()))
        for send in senders:
            await send(frame)  # never raises: a socket gone drops the frame
        return len(senders)


@dataclass
class WebState:
    """Built at start-up; handlers reach it as `app.state.web`."""

    settings: Settings
    manager: DialogueManager
    service: ChatService
    metrics: Metrics
    tokens: ConversationTokens
    ip_limits: RateLimiter = field(init=False)
    conversation_limits: RateLimiter = field(init=False)
    customers: CustomerSockets = field(default_factory=CustomerSockets)

    def __post_init__(self) -> None:
        web = self.settings.web
        self.ip_limits = RateLimiter(web.rate_per_ip, web.burst_per_ip)
        self.conversation_limits = RateLimiter(web.rate_per_connection,
                                               web.burst_per_connection)

    async def push(self, conversation_id: str, frame: dict[str, Any]) -> int:
        """The customers' sockets' push (bot/push.py's CustomerPush), for what holds the state."""
        return await self.customers.push(conversation_id, frame)

    def limit(self, ip: str, conversation_id: str | None) -> float:
        """Spend one request of the IP's (and the conversation's) budget; 0.0 if allowed, else
        the seconds to wait. Counted in the metrics by scope."""
        wait = self.ip_limits.hit(ip)
        if wait:
            self.metrics.rate_limited.labels("ip").inc()
            return wait
        return 0.0 if conversation_id is None else self.limit_conversation(conversation_id)

    def limit_conversation(self, conversation_id: str) -> float:
        """Spend one message of the conversation's budget; 0.0 if allowed, else the wait."""
        wait = self.conversation_limits.hit(conversation_id)
        if wait:
            self.metrics.rate_limited.labels("conversation").inc()
        return wait


def client_ip(connection: HTTPConnection) -> str:
    """The peer's address; behind a proxy, the client's when web.forwarded_allow_ips names
    the proxy (docs/deploy.md)."""
    return connection.client.host if connection.client else "unknown"
