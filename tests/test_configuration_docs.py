"""docs/configuration.md is generated from the settings schema and documents every key."""

from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from bot.settings import Settings
from bot.settings.environment import env_name, is_section
from bot.settings.reference import COMMAND, configuration_markdown

ROOT = Path(__file__).resolve().parent.parent


def _keys(model: type[BaseModel], loc: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], str]]:
    """(dotted path, description) of every key under `model`; a section gives its docstring."""
    found = []
    for name, field in model.model_fields.items():
        if is_section(field):
            section: type[BaseModel] = field.annotation  # type: ignore[assignment]
            found.append(((*loc, name), section.__doc__ or ""))
            found += _keys(section, (*loc, name))
        else:
            found.append(((*loc, name), field.description or ""))
    return found


def test_committed_configuration_docs_are_generated() -> None:
    committed = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert committed == configuration_markdown(), \
        f"regenerate it: {COMMAND} (python -m bot.settings.reference > docs/configuration.md)"
    assert COMMAND in committed.splitlines()[2], "the header says how to regenerate it"


def test_every_key_of_every_section_has_a_description() -> None:
    keys = _keys(Settings)
    assert len(keys) > 150, "the walk reaches every section"
    missing = [".".join(loc) for loc, description in keys if not description.strip()]
    assert missing == []


def test_every_key_is_in_the_docs_with_its_variable() -> None:
    text = configuration_markdown()
    for loc, _ in _keys(Settings):
        assert f"`{'.'.join(loc)}`" in text
        assert f"`{env_name(loc)}`" in text
    generation = text.split("### `model.generation.top_p`", 1)[1].split("###", 1)[0]
    assert "Nucleus sampling mass." in generation
    assert "- Type: number (> 0.0, <= 1.0)" in generation
    assert "- Default: `0.9`" in generation
    assert "- Environment: `SUPPORTBOT_MODEL__GENERATION__TOP_P`" in generation


def test_descriptions_carry_no_benchmark_figures() -> None:
    """Figures go stale: they live in bench/README.md and docs/decisions/, not in settings."""
    figure = re.compile(r"\d+(\.\d+)?\s*(%|ms\b)|\d+(\.\d+)?x\b|\b\d+ of \d+\b|\bmeasured\b"
                        r"|\bbench:")
    stale = [".".join(loc) for loc, description in _keys(Settings) if figure.search(description)]
    assert stale == []
