"""The actions one bot offers, as the dialogue uses them: the declared actions, their entries in
the FAQ index (retrieval finds an action by its questions, like an entry), and the one HTTP
caller every conversation shares, with listeners for each call (metrics).

`load_book` builds it from the settings; with the bundled sample FAQ it also starts the demo
shop API on loopback (bot/actions/demo_server.py) unless SHOP_API_URL names a real one.
"""

from __future__ import annotations

import logging
import os
from collections import ChainMap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from bot.actions.caller import ActionCaller, CallRecord
from bot.actions.model import Action
from bot.actions.spec import load_actions
from bot.settings.actions import ActionsSettings
from retrieval.corpus import FaqEntry

log = logging.getLogger(__name__)

# The tag an action's index entry carries (an FAQ file's own entries may not use it).
ACTION_TAG = "supportbot-action"
# The FAQ that ships with the project: its actions call the demo shop unless told otherwise.
SAMPLE_FAQ = Path(__file__).resolve().parents[2] / "data" / "faq.yaml"
DEMO_URL, DEMO_TOKEN = "SHOP_API_URL", "SHOP_API_TOKEN"


def action_entry(action: Action) -> FaqEntry:
    """The index entry that lets retrieval find `action`: its questions; the answer is never
    shown (the dialogue runs the action instead), it says what the action does for operators."""
    return FaqEntry(action.id, action.questions,
                    f"(an action: the bot looks this up with a call, {action.call.method})",
                    (ACTION_TAG,))


@dataclass
class ActionBook:
    """The declared actions by id and the caller that makes their calls."""

    actions: dict[str, Action]
    caller: ActionCaller
    listeners: list[Callable[[CallRecord], None]] = field(default_factory=list)
    stop: Callable[[], None] | None = None  # stops the demo shop, when this book started one

    def get(self, entry_id: str) -> Action | None:
        """The action behind an index entry id, None for an FAQ entry."""
        return self.actions.get(entry_id)

    def entries(self) -> list[FaqEntry]:
        """The actions' index entries."""
        return [action_entry(a) for a in self.actions.values()]

    async def aclose(self) -> None:
        """Close the caller's connections and stop the demo shop."""
        await self.caller.aclose()
        if self.stop is not None:
            self.stop()


def declared_entries(settings: ActionsSettings, faq_path: Path) -> list[FaqEntry]:
    """The index entries of the declared actions ([] when actions are off or none are
    declared); ActionFileError names every problem in the file."""
    if not settings.enabled:
        return []
    actions = _declared(settings, faq_path)
    return [action_entry(a) for a in actions]


def _declared(settings: ActionsSettings, faq_path: Path) -> list[Action]:
    """The actions of `actions.path`, else of the FAQ file (named so when it is missing)."""
    if settings.path is not None:
        return load_actions(settings.path, max_timeout_s=settings.max_timeout_s)
    return load_actions(faq_path, max_timeout_s=settings.max_timeout_s, what="FAQ")


def uses_demo_shop(settings: ActionsSettings, faq_path: Path,
                   environ: Mapping[str, str]) -> bool:
    """Whether to start the demo shop: as `actions.demo_shop` says, or when unset, for the
    bundled sample FAQ while SHOP_API_URL does not name a real shop."""
    if settings.demo_shop is not None:
        return settings.demo_shop
    try:
        sample = faq_path.resolve() == SAMPLE_FAQ
    except OSError:
        return False
    return sample and not environ.get(DEMO_URL)


def load_book(settings: ActionsSettings, faq_path: Path,
              environ: Mapping[str, str] | None = None) -> ActionBook | None:
    """The actions of `actions.path`, else of the FAQ file's `actions:` list; None when actions
    are off or none are declared. ActionFileError names every problem in the file."""
    if not settings.enabled:
        return None
    actions = _declared(settings, faq_path)
    if not actions:
        return None
    env: Mapping[str, str] = os.environ if environ is None else environ
    hosts = list(settings.allowed_hosts)
    stop = None
    if uses_demo_shop(settings, faq_path, env):
        from bot.actions.demo_server import start_demo_shop

        demo = start_demo_shop()
        env = ChainMap({DEMO_URL: demo.url, DEMO_TOKEN: demo.token}, dict(env))
        hosts.append(demo.host)
        stop = demo.stop
        log.info("actions call the demo shop (sample data) on %s", demo.host)
    listeners: list[Callable[[CallRecord], None]] = []
    caller = ActionCaller(
        hosts, max_bytes=settings.max_response_bytes, retries=settings.retries,
        breaker_failures=settings.breaker_failures, breaker_seconds=settings.breaker_seconds,
        max_timeout_s=settings.max_timeout_s, environ=env, on_call=partial(_tell, listeners))
    return ActionBook({a.id: a for a in actions}, caller, listeners, stop)


def _tell(listeners: list[Callable[[CallRecord], None]], record: CallRecord) -> None:
    """Tell every listener about a call (never its response body)."""
    for listener in list(listeners):
        try:
            listener(record)
        except Exception:  # a listener's fault never fails the customer's turn
            log.exception("action call listener failed")
