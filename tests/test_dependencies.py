"""Every third-party module the packages import comes from a distribution pyproject.toml
declares (an import that works only because another package happened to pull it in breaks
the day that package stops)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python 3.11 and later
ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = {"bot", "retrieval", "training", "tests", "bench", "common"}


def _name(requirement: str) -> str:
    """A requirement's distribution name, normalised as PyPI compares them."""
    name = re.split(r"[\s\[<>=!~;]", requirement.strip(), maxsplit=1)[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def _declared() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    names = {_name(r) for r in project["dependencies"]}
    for extra, requirements in project["optional-dependencies"].items():
        if extra != "dev":  # the runtime may need an extra (llama, postgres), never dev tools
            names |= {_name(r) for r in requirements}
    return names


def _imported() -> dict[str, list[str]]:
    """Top-level modules imported by the packages, with a file that imports each."""
    found: dict[str, list[str]] = {}
    for package in ("bot", "retrieval", "training"):
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [alias.name for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in FIRST_PARTY and top not in sys.stdlib_module_names:
                        found.setdefault(top, []).append(str(path.relative_to(ROOT)))
    return found


def test_every_third_party_import_is_declared() -> None:
    declared = _declared()
    providers = importlib.metadata.packages_distributions()
    missing = {}
    for module, files in _imported().items():
        distributions = {_name(d) for d in providers.get(module, [module])}
        if not distributions & declared:
            missing[module] = (sorted(distributions), files[0])
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
