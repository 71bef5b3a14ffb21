"""Shared by the end-to-end actions tests (dialogue and channels): the demo shop on loopback
with every request it sees recorded, an actions file with the sample FAQ's two actions and a
few of the tests' own (a confirmed cancel, an email slot, a reply naming a missing field), the
settings that point the bot at both, and one index over them that is built once per run.

The index lives in a folder of the run's base temp directory: the first module to ask builds
it, the next finds it saved and opens it (FaqIndex.open only rebuilds a stale index).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.actions.demo_shop import create_app
from bot.runtime import open_index
from bot.settings import Settings
from retrieval.embedder import SentenceTransformerEmbedder
from retrieval.index import FaqIndex
from tests.actions_support import Hits, _Record
from tests.conftest import SAMPLE_FAQ
from tests.web_support import running, web_settings

SHIPPED = ("Order KO-123456 has shipped with Parcelo and should arrive in 2 days. "
           "Track it here: https://tracking.example/parcel/PX7781234")
ASK_ORDER = "What's your order number? It starts with KO- and is in your confirmation email."
INVALID_ORDER = ("That doesn't look like an order number: it is KO- and six digits, "
                 "like KO-123456.")
ORDER_ERROR = "Sorry, I can't reach our order system right now."
EMAIL = "jane.doe@example.com"

# The tests' own actions next to copies of the sample FAQ's (whose text is read from the FAQ).
EXTRA_ACTIONS = """
  - id: cancel-my-order
    questions: [cancel my order, I want to cancel order KO-111111, please cancel an order]
    slots:
      order_id: {pattern: 'KO-\\d{6}', ask: "Which order? It starts with KO-.", upper: true}
    call:
      method: POST
      url: "${SHOP_API_URL}/orders/{order_id}/cancel"
      headers: {Authorization: "Bearer ${SHOP_API_TOKEN}"}
      body: {reason: "customer asked in chat"}
    confirm: "Cancel order {order_id}? (yes / no)"
    reply:
      field: status
      cases: {cancelled: "Order {order_id} is cancelled."}
      default: "Order {order_id} is now {status}."
    on_status: {409: "Order {order_id} can no longer be cancelled."}
    on_error: "I can't reach our order system right now."

  - id: orders-by-email
    questions: [find the orders placed with my email address, which orders are on my email]
    slots:
      email:
        pattern: '[a-z0-9._+-]+@[a-z0-9-]+(\\.[a-z0-9-]+)+'
        ask: "Which email address did you order with?"
    call:
      method: GET
      url: "${SHOP_API_URL}/orders/{email}"
      headers: {Authorization: "Bearer ${SHOP_API_TOKEN}"}
    reply: "The orders of {email}: {status}."
    on_status: {404: "I found no orders for {email}."}
    on_error: "Sorry, I can't reach our order system right now."

  - id: erase-email
    questions: [erase my email address from your order records]
    slots:
      email:
        pattern: '[a-z0-9._+-]+@[a-z0-9-]+(\\.[a-z0-9-]+)+'
        ask: "Which email address should I erase?"
    call:
      method: POST
      url: "${SHOP_API_URL}/orders/{email}/cancel"
      headers: {Authorization: "Bearer ${SHOP_API_TOKEN}"}
    confirm: "Erase {email} from our order records? (yes / no)"
    reply: "Done: {status}."
    on_status: {404: "There are no order records for {email}."}
    on_error: "Sorry, I can't reach our order system right now."

  - id: parcel-weight
    questions: [how heavy is the parcel of my order, what does my parcel weigh]
    slots:
      order_id: {pattern: 'KO-\\d{6}', ask: "Which order? It starts with KO-.", upper: true}
    call:
      url: "${SHOP_API_URL}/orders/{order_id}"
      headers: {Authorization: "Bearer ${SHOP_API_TOKEN}"}
    reply: "The parcel of order {order_id} weighs {weight_kg} kg."
    on_error: "Sorry, I can't weigh that parcel right now."
"""


def actions_file(folder: Path) -> Path:
    """A YAML file with the sample FAQ's `actions:` and EXTRA_ACTIONS (written once)."""
    path = folder / "actions.yaml"
    if not path.exists():
        sample = SAMPLE_FAQ.read_text(encoding="utf-8")
        path.write_text(sample[sample.index("\nactions:\n") + 1:].rstrip("\n") + "\n"
                        + EXTRA_ACTIONS, encoding="utf-8")
    return path


def shared_folder(factory: pytest.TempPathFactory) -> Path:
    """The run's folder of the actions file and the index (shared by the modules)."""
    folder = factory.getbasetemp() / "actions-e2e"
    folder.mkdir(exist_ok=True)
    return folder


@dataclass
class Shop:
    """A demo shop on loopback: base URL, host:port, token, and what it saw."""

    url: str
    host: str
    token: str
    hits: Hits

    def paths(self) -> list[str]:
        """The raw paths of every request so far."""
        return list(self.hits.paths)

    def order(self, order_id: str) -> dict[str, Any]:
        """The order as the shop has it now (read directly, not counted as the bot's)."""
        before = len(self.hits.paths)
        answer = httpx.get(f"{self.url}/orders/{order_id}", timeout=10,
                           headers={"Authorization": f"Bearer {self.token}"})
        del self.hits.paths[before:], self.hits.methods[before:]
        data: dict[str, Any] = answer.json()
        return data


@contextmanager
def demo_shop() -> Iterator[Shop]:
    """A fresh demo shop (its own orders) recording every request, stopped after the block."""
    hits, token = Hits(), secrets.token_urlsafe(16)
    with running(_Record(create_app(token), hits)) as (address, _):  # type: ignore[arg-type]
        yield Shop(f"http://{address}", address, token, hits)


def actions_settings(tmp_path: Path, folder: Path, shop_host: str | None = None) -> Settings:
    """Web-test settings (SQLite in tmp_path) with the sample FAQ, the shared actions file and
    index, the demo shop off and `shop_host` the one allowed host."""
    return use_actions(web_settings(tmp_path), folder, shop_host)


def use_actions(settings: Settings, folder: Path, shop_host: str | None = None) -> Settings:
    """`settings` with the sample FAQ, the shared actions file and index of `folder`, the demo
    shop off and `shop_host` the one allowed host; returns the same settings."""
    settings.retrieval.faq_path = SAMPLE_FAQ
    settings.retrieval.index_dir = folder / "index"
    settings.actions.path = actions_file(folder)
    settings.actions.demo_shop = False
    settings.actions.allowed_hosts = [shop_host] if shop_host else []
    return settings


def point_at(monkeypatch: pytest.MonkeyPatch, shop: Shop) -> None:
    """SHOP_API_URL and SHOP_API_TOKEN for `shop` (the actions read them at call time)."""
    monkeypatch.setenv("SHOP_API_URL", shop.url)
    monkeypatch.setenv("SHOP_API_TOKEN", shop.token)


def build_index(factory: pytest.TempPathFactory, embedder: SentenceTransformerEmbedder
                ) -> FaqIndex:
    """The index of the sample FAQ and the shared actions (built by the first caller)."""
    folder = shared_folder(factory)
    index, _ = open_index(actions_settings(folder, folder), embedder)
    return index
