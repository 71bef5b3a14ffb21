"""Hostile: every module of bot, retrieval and training imports first and alone, so no import
cycle hides behind the order the app happens to import things in (issue 31, item 19)."""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import subprocess
import sys
import time

import pytest

from tests.conftest import ROOT

PACKAGES = ("bot", "retrieval", "training")
# Run, not imported: the CLI's entry point, and Alembic's environment (it needs a migration
# context); the migrations themselves are imported as Alembic loads them.
SKIPPED = {"bot.__main__", "bot.storage.migrations.env"}
# Third-party libraries imported once before the forks, so that each child only pays for the
# project's own modules; none of them imports the project.
PRELOAD = ("numpy", "torch", "transformers", "sentence_transformers", "faiss", "sklearn",
           "spacy", "presidio_analyzer", "peft", "fastapi", "starlette", "uvicorn",
           "sqlalchemy", "alembic", "aiosqlite", "asyncpg", "telegram", "telegram.ext",
           "pydantic", "typer", "rich", "prometheus_client", "argon2", "yaml", "httpx",
           "openai", "datasets", "matplotlib", "llama_cpp")
# A fresh interpreter that has imported nothing of the project: it forks one child per module
# (two at a time), and each child imports its module and nothing else of the project first.
DRIVER = """
import importlib, json, multiprocessing, sys
for name in sys.argv[1].split(","):
    try:
        importlib.import_module(name)
    except Exception:
        pass
assert not any(m.split(".")[0] in ("bot", "retrieval", "training") for m in sys.modules)

def load(module):
    try:
        importlib.import_module(module)
    except BaseException as exc:
        return module, f"{type(exc).__name__}: {exc}"
    return module, None

if __name__ == "__main__":
    with multiprocessing.get_context("fork").Pool(2, maxtasksperchild=1) as pool:
        failed = {m: e for m, e in pool.imap_unordered(load, sys.argv[2:]) if e}
    print(json.dumps(failed))
"""


def project_modules() -> list[str]:
    """Every module and package of PACKAGES, but SKIPPED."""
    names: list[str] = []
    for package in PACKAGES:
        names.append(package)
        path = importlib.import_module(package).__path__
        names += [m.name for m in pkgutil.walk_packages(path, f"{package}.")]
    return [name for name in names if name not in SKIPPED]


@pytest.mark.timeout(300)
def test_every_module_imports_first_and_alone() -> None:
    modules = project_modules()
    assert "bot.operators.notices" in modules and len(modules) > 100
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", DRIVER, ",".join(PRELOAD), *modules],
                          cwd=ROOT, capture_output=True, text=True, timeout=280,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    failed = json.loads(done.stdout.strip().splitlines()[-1])
    assert failed == {}, "modules that cannot be imported first:\n" + "\n".join(
        f"  {module}: {error}" for module, error in sorted(failed.items()))
    print(f"{len(modules)} modules imported alone in {time.monotonic() - started:.1f} s")
