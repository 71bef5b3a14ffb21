"""The house's shape as tests: the import rules between layers (an AST walk over every import,
at any depth), every module importable first and alone, no file over 500 lines, and every
module named in docs/architecture.md (issue 32; the import check was issue 31, item 19)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import pkgutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest

from tests.conftest import ROOT

PACKAGES = ("bot", "retrieval", "training")


@dataclass(frozen=True)
class Rule:
    """Modules under `importers` (but those under `exempt`) import nothing under `forbidden`
    (but what is under `allowed`). Names are dotted prefixes: "bot.cli" covers bot.cli and
    bot.cli.train, not bot.cli_train."""

    name: str
    importers: tuple[str, ...]
    forbidden: tuple[str, ...]
    exempt: tuple[str, ...] = ()
    allowed: tuple[str, ...] = ()
    eager_only: bool = False  # only imports that run when the file is imported


# The layers, one way (docs/architecture.md): channels (bot.channels, bot.cli) -> dialogue
# core (bot.dialogue, bot.runtime) -> retrieval / generation / safety / storage / operators ->
# settings -> bot.shared. Training and the offline tools sit beside: they may import the
# core's formats and the retrieval core, and only the cli (the composition root) imports them.
OFFLINE = ("retrieval.offline", "bot.eval_dialogue", "bot.eval_learning", "bot.eval_scripts",
           "bot.eval_script_run")
RULES = (
    Rule("bot.shared is the leaf both sides use: it imports nothing else of the project",
         importers=("bot.shared",), forbidden=("bot", "retrieval", "training"),
         allowed=("bot.shared",)),
    Rule("training imports from bot only its formats, bot.shared",
         importers=("training",), forbidden=("bot",), allowed=("bot.shared",)),
    Rule("only the cli (the composition root) imports training",
         importers=PACKAGES, exempt=("bot.cli", "training"), forbidden=("training",)),
    Rule("only the cli, training and the offline tools themselves import the offline tools",
         importers=PACKAGES, exempt=("bot.cli", "training", *OFFLINE), forbidden=OFFLINE),
    Rule("the cli imports training and the offline tools inside its commands, so that "
         "`supportbot serve` loads none of them",
         importers=("bot.cli",), forbidden=("training", *OFFLINE), eager_only=True),
    Rule("settings imports nothing of the layers above it: only the errors and bot.shared",
         importers=("bot.settings",), forbidden=("bot", "retrieval", "training"),
         allowed=("bot.settings", "bot.errors", "bot.shared")),
    Rule("the web channel does not import the Telegram channel",
         importers=("bot.channels.web",), forbidden=("bot.channels.telegram",)),
    Rule("the Telegram channel does not import the web channel",
         importers=("bot.channels.telegram",), forbidden=("bot.channels.web",)),
    Rule("the dialogue core imports no channel nor the cli",
         importers=("bot.dialogue", "bot.runtime"), forbidden=("bot.channels", "bot.cli")),
    Rule("the parts under the dialogue core import neither it, nor a channel, nor the cli",
         importers=("retrieval", "bot.generation", "bot.safety", "bot.storage",
                    "bot.operators", "bot.learning"),
         exempt=("bot.operators.cli",),  # a command: to bot.cli
         forbidden=("bot.dialogue", "bot.runtime", "bot.channels", "bot.cli")),
    Rule("actions are a library the dialogue core uses: they import neither it, nor a "
         "channel, nor the cli, nor storage",
         importers=("bot.actions",),
         forbidden=("bot.dialogue", "bot.runtime", "bot.channels", "bot.cli", "bot.storage")),
)


def _under(module: str, prefixes: tuple[str, ...]) -> bool:
    """Whether `module` is one of `prefixes` or inside one of them."""
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def module_name(path: Path) -> str:
    """The dotted name of a file of the project ("bot/storage/__init__.py" -> "bot.storage")."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class Import(NamedTuple):
    """One imported module: its line, its dotted name, and whether importing the file runs it
    (at module level, not inside a function nor an `if TYPE_CHECKING:` block)."""

    line: int
    name: str
    eager: bool


def imports(module: str, source: str, *, package: bool = False) -> list[Import]:
    """Every module `source` (the text of `module`, a package's __init__ if `package`)
    imports, anywhere in it (functions and TYPE_CHECKING blocks too); relative imports
    resolved, and `from a import b` giving a.b as well as a (b may be a module)."""
    parent = module if package else module.rpartition(".")[0]
    found: list[Import] = []

    def visit(node: ast.AST, eager: bool) -> None:
        if isinstance(node, ast.Import):
            found.extend(Import(node.lineno, alias.name, eager) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = parent.split(".")[:len(parent.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.append(Import(node.lineno, base, eager))
            found.extend(Import(node.lineno, f"{base}.{alias.name}", eager)
                         for alias in node.names if alias.name != "*")
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, False)
            for child in node.orelse:
                visit(child, eager)
        else:
            lazy = isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            for child in ast.iter_child_nodes(node):
                visit(child, eager and not lazy)

    visit(ast.parse(source, module), True)
    return found


def project_files() -> list[Path]:
    """Every .py file of PACKAGES."""
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def violations() -> list[str]:
    """Each import that breaks a rule, as "file:line: imports X (rule)", in file order."""
    broken: list[tuple[str, int, str]] = []
    for path in project_files():
        importer = module_name(path)
        found = imports(importer, path.read_text(encoding="utf-8"),
                        package=path.name == "__init__.py")
        for rule in RULES:
            if not _under(importer, rule.importers) or _under(importer, rule.exempt):
                continue
            lines = {i.line: i.name for i in reversed(found)  # one per line
                     if _under(i.name, rule.forbidden) and not _under(i.name, rule.allowed)
                     and (i.eager or not rule.eager_only)}
            broken += [(str(path.relative_to(ROOT)), line, f"imports {imported} ({rule.name})")
                       for line, imported in lines.items()]
    return [f"{path}:{line}: {what}" for path, line, what in sorted(broken)]


def test_the_walk_sees_every_import() -> None:
    """Relative imports resolve to the modules they name; imports inside functions count."""
    source = ("from . import rest\nfrom ..telegram.service import bot_token\n"
              "def f():\n    import training.train\n")
    found = {i.name: i.eager for i in imports("bot.channels.web.app", source)}
    assert found["bot.channels.web.rest"] and found["bot.channels.telegram.service"]
    assert found["training.train"] is False  # inside a function: not run by importing the file
    typing_only = "if TYPE_CHECKING:\n    import training\nelse:\n    import json\n"
    assert imports("bot.cli", typing_only) == [Import(2, "training", False),
                                               Import(4, "json", True)]
    in_package = {i.name for i in imports("bot.storage", "from .engine import x\n",
                                          package=True)}
    assert "bot.storage.engine" in in_package
    assert _under("bot.cli.train", ("bot.cli",)) and not _under("bot.cli_train", ("bot.cli",))


def test_imports_follow_the_layers() -> None:
    broken = violations()
    assert not broken, "imports that break the layers (docs/architecture.md):\n" + "\n".join(
        f"  {line}" for line in broken)


def import_graph() -> dict[str, set[str]]:
    """Each project module -> the project modules it imports (a name that is not a module, say
    a class of `from a import B`, counts as its module a)."""
    sources = {module_name(p): p for p in project_files()}
    graph: dict[str, set[str]] = {}
    for name, path in sources.items():
        found = imports(name, path.read_text(encoding="utf-8"),
                        package=path.name == "__init__.py")
        targets = set()
        for imported in (i.name for i in found):
            while imported and imported not in sources:
                imported = imported.rpartition(".")[0]
            if imported and imported != name:
                targets.add(imported)
        graph[name] = targets
    return graph


# Channels that no chain of imports joins, the core between them included (bot.channels.serve
# composes them from outside both).
APART = (("bot.channels.web", "bot.channels.telegram"),
         ("bot.channels.telegram", "bot.channels.web"))


def test_a_channel_reaches_the_other_through_no_module() -> None:
    """Import rules hold edge by edge; this follows the chains (bot.operators included)."""
    graph = import_graph()
    for start, other in APART:
        path = {m: [m] for m in graph if _under(m, (start,))}
        todo = list(path)
        while todo:
            module = todo.pop()
            for target in sorted(graph[module] - path.keys()):
                path[target] = [*path[module], target]
                todo.append(target)
        reached = sorted(m for m in path if _under(m, (other,)))
        assert not reached, f"{start} reaches {other}: " + " -> ".join(path[reached[0]])


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


@pytest.mark.slow  # a minute or more: every module's own imports, two at a time
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


MAX_LINES = 500


def test_no_file_is_over_500_lines() -> None:
    """A file does one job: most stay under ~300 lines, none goes over 500."""
    long = {str(p.relative_to(ROOT)): n for p in project_files()
            if (n := len(p.read_text(encoding="utf-8").splitlines())) > MAX_LINES}
    assert not long, f"files over {MAX_LINES} lines (split them by job):\n" + "\n".join(
        f"  {path}: {n} lines" for path, n in sorted(long.items()))


def test_every_module_is_in_the_architecture_page() -> None:
    """docs/architecture.md names every module, by path (bot/storage/engine.py) or dotted name
    (bot.storage.engine); a package by its folder (bot/storage/) or dotted name."""
    architecture = ROOT / "docs" / "architecture.md"
    assert architecture.is_file(), f"{architecture}: missing; it names every module"
    page = architecture.read_text(encoding="utf-8")
    missing = []
    for path in project_files():
        relative = path.relative_to(ROOT)
        if relative.parts[:3] == ("bot", "storage", "migrations") and path.name != "__init__.py":
            continue  # Alembic's environment and revisions: the page names the folder
        name = module_name(path)
        shown = (relative.parent if path.name == "__init__.py" else relative).as_posix()
        if path.name == "__init__.py" and len(relative.parts) == 2:
            continue  # the top-level packages themselves
        if shown not in page and f"{shown}/" not in page and name not in page:
            missing.append(shown)
    assert not missing, "modules docs/architecture.md does not name:\n" + "\n".join(
        f"  {m}" for m in missing)
