"""`actions`: the HTTP calls the bot may make for customers (order status, returns), where
they are declared and what bounds every call (docs/actions.md)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from bot.settings.base import Section


class ActionsSettings(Section):
    """Actions: declared HTTP calls answered from their JSON, and the limits on every call."""

    enabled: bool = Field(True, description="Offer the declared actions (none are declared "
                          "unless the FAQ file or actions.path has an 'actions:' list).")
    path: Path | None = Field(None, description="A YAML file with an 'actions:' list; unset: "
                              "the 'actions:' list of the FAQ file.")
    allowed_hosts: list[str] = Field(default_factory=list, description="The only hosts actions "
                                     "may call, as host (any port) or host:port; checked after "
                                     "templating and at every redirect. Empty: no calls.")
    max_response_bytes: int = Field(1_000_000, ge=1024, le=100_000_000, description="Largest "
                                    "API answer read; a larger one is abandoned as an error.")
    max_timeout_s: float = Field(10.0, gt=0, le=60, description="Longest an action's call may "
                                 "take, retries included; an action's timeout_s may not exceed "
                                 "it.")
    retries: int = Field(2, ge=0, le=5, description="Retries of an idempotent call (GET, PUT, "
                         "DELETE) after a connect error or a 502, 503 or 504, within its "
                         "timeout.")
    breaker_failures: int = Field(5, ge=1, le=1000, description="Consecutive failures of one "
                                  "action (timeouts, connect errors, 5xx, bad answers) that "
                                  "stop its calls for breaker_seconds.")
    breaker_seconds: float = Field(30.0, gt=0, le=3600, description="How long an action's "
                                   "calls fail fast after breaker_failures failures, before "
                                   "one trial call.")
    demo_shop: bool | None = Field(None, description="Start the demo shop API (sample data) "
                                   "on loopback for the actions to call. Unset: only with the "
                                   "bundled sample FAQ (data/faq.yaml) while SHOP_API_URL is "
                                   "unset; never set it true in production.")
