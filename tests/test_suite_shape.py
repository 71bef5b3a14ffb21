"""The test suite's own shape: no test module imports another (shared fixtures live in
conftest.py, shared helpers in tests/*_support.py)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every import in a file, at any depth (imports inside tests too)."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.append((node.lineno, node.module))
            if node.module == "tests":  # from tests import test_x
                found.extend((node.lineno, f"tests.{alias.name}") for alias in node.names)
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return found


def test_no_test_module_imports_another() -> None:
    offending = [f"{path.name}:{line} imports {module}"
                 for path in sorted(TESTS.glob("*.py"))
                 for line, module in _imported_modules(path)
                 if module.startswith("tests.test_")]
    assert offending == [], "move what is shared to conftest.py or a tests/*_support.py module"


def test_the_check_sees_an_import_of_a_test_module(tmp_path: Path) -> None:
    sample = tmp_path / "test_x.py"
    sample.write_text("from tests import test_web\n\n\ndef f() -> None:\n"
                      "    from tests.test_storage import store\n", encoding="utf-8")
    assert sorted(_imported_modules(sample)) == [
        (1, "tests"), (1, "tests.test_web"), (5, "tests.test_storage")]
