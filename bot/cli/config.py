"""The root --config option, and `supportbot config show|example`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bot.cli.common import settings_of, user_errors
from bot.settings import DEFAULT_CONFIG, example_yaml, settings_to_yaml

config_app = typer.Typer(help="Inspect settings, or print an example file.", no_args_is_help=True)


def root(ctx: typer.Context, config: Annotated[Path | None, typer.Option(
        "--config", "-c", envvar="SUPPORTBOT_CONFIG",
        help=f"Settings file (default: ./{DEFAULT_CONFIG} if it exists).")] = None) -> None:
    """Read settings once, at the edge, and hand them to the command."""
    ctx.obj = config


@config_app.command("show")
def config_show(ctx: typer.Context) -> None:
    """Print the effective settings (file, then SUPPORTBOT_* environment) as YAML.

    A password in storage.database_url is shown as ***.
    """
    with user_errors():
        settings = settings_of(ctx)
    sys.stdout.write(settings_to_yaml(settings))


@config_app.command("example")
def config_example() -> None:
    """Print an example supportbot.yaml: every key with its default and what it does."""
    sys.stdout.write(example_yaml())
