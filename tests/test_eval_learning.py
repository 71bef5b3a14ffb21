"""`supportbot eval learning`: queries replayed as customers of a fresh bot that learns from
their picks (issue 33 item 3), on the bundled embedder and the sample FAQ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.eval_learning import Window, learning_markdown, report

runner = CliRunner()
# The sample bot asks "Did you mean" (change-order, cancel-order) for this one.
UNSURE = "I changed my mind and don't want the order anymore"


def config(tmp_path: Path, confirmations: int) -> Path:
    path = tmp_path / "supportbot.yaml"
    path.write_text(f"retrieval:\n  index_dir: {tmp_path / 'index'}\n"
                    f"storage:\n  database_url: sqlite+aiosqlite:///{tmp_path / 'bot.db'}\n"
                    f"learning:\n  confirmations: {confirmations}\n", encoding="utf-8")
    return path


def queries(tmp_path: Path, rows: list[tuple[str, str]]) -> Path:
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(json.dumps({"query": q, "faq_id": f}) + "\n" for q, f in rows),
                    encoding="utf-8")
    return path


def test_window_shares_and_precision() -> None:
    window = Window(start=0, queries=4, answered=2, right=1, clarify=1, fallback=1, learnt=3)
    data = window.to_dict()
    assert (data["answered_share"], data["precision"], data["clarify_share"],
            data["fallback_share"], data["end"]) == (0.5, 0.5, 0.25, 0.25, 4)
    assert Window(start=0).to_dict()["precision"] is None  # no answers: no precision
    built = report([window, Window(start=4, queries=1, answered=1, right=1)], {}, {})
    assert built["first"]["answered_share"] == 0.5 and built["last"]["precision"] == 1.0
    assert "| 1-4 | 50.0% | 50.0% | 25.0% | 25.0% |" in learning_markdown(built)


@pytest.mark.slow
def test_picks_teach_the_next_customers(tmp_path: Path) -> None:
    """Two customers pick the right entry after 'Did you mean'; with two confirmations the
    next two get the answer directly, and the curve says so."""
    stream = queries(tmp_path, [(UNSURE, "cancel-order")] * 4)
    out = tmp_path / "report"
    result = runner.invoke(app, ["--config", str(config(tmp_path, 2)), "eval", "learning",
                                 "--queries", str(stream), "--window", "10", "--json",
                                 "--out", str(out)])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    (only,) = data["windows"]
    assert (only["queries"], only["clarify"], only["picks"], only["answered"],
            only["right"]) == (4, 2, 2, 2, 2)
    assert only["learnt"] == 1 and data["first"] == data["last"] == only
    assert (out / "learning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert json.loads((out / "report.json").read_text(encoding="utf-8")) == data
    assert not (tmp_path / "bot.db").exists()  # the replay's database was a throwaway


@pytest.mark.slow
def test_fewer_customers_than_confirmations_teach_nothing(tmp_path: Path) -> None:
    """With three confirmations, two customers' picks teach nothing: both are asked; a missing
    queries file is one line, not a traceback."""
    stream = queries(tmp_path, [(UNSURE, "cancel-order")] * 3)
    result = runner.invoke(app, ["--config", str(config(tmp_path, 3)), "eval", "learning",
                                 "--queries", str(stream), "--window", "10", "--limit", "2",
                                 "--json"])
    assert result.exit_code == 0, result.stderr
    data = json.loads(result.stdout)
    assert [w["clarify"] for w in data["windows"]] == [2]
    assert data["last"]["learnt"] == 0 and data["last"]["answered"] == 0
    bad = runner.invoke(app, ["--config", str(config(tmp_path, 3)), "eval", "learning",
                              "--queries", str(tmp_path / "missing.csv")])
    assert bad.exit_code == 1 and "Traceback" not in bad.stderr
