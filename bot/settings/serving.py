"""The storage, web and operators sections: where conversations live and how they are served."""

from __future__ import annotations

import ipaddress
from datetime import timedelta
from pathlib import Path

from pydantic import Field, SecretStr, field_validator

from bot.settings.base import Section as _Section


class StorageSettings(_Section):
    """Where conversations are stored."""

    database_url: str = Field("sqlite+aiosqlite:///.supportbot/supportbot.db",
                              description="Any async SQLAlchemy URL.")
    turn_lock_seconds: float = Field(60.0, gt=0, le=3600, description="How long a turn waits "
                                     "for the conversation's previous one (on any worker) "
                                     "before the customer is asked to send it again.")
    original_text_hours: float = Field(72.0, ge=0, le=24 * 90, description="How long a "
                                       "customer's message as written (before PII redaction) "
                                       "is kept for the operator holding the conversation; "
                                       "then it is deleted (everything else only ever holds "
                                       "the redacted text). 0: never kept. docs/privacy.md.")

    def original_ttl(self) -> timedelta | None:
        """original_text_hours as a time span; None when texts as written are not kept."""
        return timedelta(hours=self.original_text_hours) if self.original_text_hours else None


class WebSettings(_Section):
    """The web server: the chat page, the web socket, the REST API and metrics."""

    host: str = Field("127.0.0.1", description="Address `supportbot serve` listens on.")
    port: int = Field(8000, ge=1, le=65535, description="Port `supportbot serve` listens on.")
    preload: bool = Field(False, description="Load the model at start, not at the first "
                          "generated turn.")
    secret: SecretStr | None = Field(None, description="Key that signs conversation tokens; "
                                     "every worker needs the same. Unset: web.secret_file.")
    secret_file: Path = Field(Path(".supportbot/web-secret"), description="Where a random key "
                              "is created (once, mode 0600) when web.secret is unset.")
    cors_origins: list[str] = Field(default_factory=list, description="Origins other than the "
                                    "bot's own that may call the REST API from a browser.")
    max_frame_bytes: int = Field(16384, ge=256, le=1048576, description="Largest web-socket "
                                 "frame or REST body accepted.")
    heartbeat_seconds: float = Field(20.0, gt=0, le=3600, description="Web-socket ping interval.")
    send_timeout_seconds: float = Field(10.0, gt=0, le=600, description="How long sending one "
                                        "web-socket frame may take; a client that reads "
                                        "nothing for that long is dropped (closed 1008).")
    rate_per_connection: float = Field(1.0, gt=0, description="Messages per second one "
                                       "connection or conversation may send, on average.")
    burst_per_connection: int = Field(5, ge=1, description="Messages one connection may send "
                                      "at once before the rate applies.")
    rate_per_ip: float = Field(5.0, gt=0, description="Requests per second from one client IP, "
                               "on average (messages, feedback, REST calls, new sockets).")
    burst_per_ip: int = Field(60, ge=1, description="Requests one client IP may make at once.")
    drain_seconds: float = Field(30.0, ge=0, le=600, description="On shutdown, how long turns "
                                 "in flight may take to finish.")
    workers: int = Field(1, ge=1, le=64, description="Server processes sharing the port "
                         "(`serve --workers`); more than 1 needs PostgreSQL in "
                         "storage.database_url. Each loads the embedder (and the model, if "
                         "local): see the README.")
    forwarded_allow_ips: list[str] = Field(default_factory=list, description="Addresses or "
                                           "networks (10.0.0.0/8) of your proxies, whose "
                                           "X-Forwarded-For / -Proto name the client (rate "
                                           "limits are per client IP); empty: trust no proxy, "
                                           "the peer is the client. See docs/deploy.md.")
    api_docs: bool = Field(False, description="Serve the REST API's OpenAPI schema at "
                           "/openapi.json (the customer routes only; no Swagger UI nor ReDoc, "
                           "which would load third-party scripts).")

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _networks(cls, value: list[str]) -> list[str]:
        return check_networks(value)


def check_networks(values: list[str]) -> list[str]:
    """`values`, each an IP address or network; ValueError naming the first that is not."""
    for item in values:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network (such as 127.0.0.1 "
                             "or 10.0.0.0/8)") from None
    return values


class OperatorSettings(_Section):
    """The operator inbox (`/operator/api/`): human colleagues answering handed-off chats."""

    session_hours: float = Field(12.0, gt=0, le=24 * 30, description="How long an operator "
                                 "stays signed in after logging in.")
    max_failed_logins: int = Field(5, ge=1, le=1000, description="Wrong passwords for one "
                                   "name from one client address before its logins from there "
                                   "wait: 1 s, then twice as long after each further one.")
    max_failed_logins_per_ip: int = Field(20, ge=1, le=100000, description="Wrong passwords "
                                          "from one client address, for any names, before its "
                                          "logins wait the same way.")
    lockout_minutes: float = Field(15.0, gt=0, le=24 * 60, description="The longest wait "
                                   "between logins after wrong passwords; twice this without "
                                   "one forgets them.")
    secure_cookie: bool = Field(True, description="Send the session cookie over HTTPS only; "
                                "turn off only to try the inbox on plain http://localhost.")
    wait_notice_minutes: float = Field(5.0, ge=0, le=24 * 60, description="A customer waiting "
                                       "this long for a human gets persona.wait_notice_text, "
                                       "once per handoff (0: never).")
    faq_sync_seconds: float = Field(2.0, ge=0, le=3600, description="How often a bot process "
                                    "looks in the database for FAQ phrasings and entries "
                                    "operators added on another process (0: before every turn); "
                                    "the process that adds one uses it at once.")
