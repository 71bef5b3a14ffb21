"""The root --config option, and `supportbot config show|example`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bot.cli.common import settings_of, user_errors
from bot.settings import DEFAULT_CONFIG, Settings, example_yaml, settings_to_yaml

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
    sys.stdout.write(thresholds_comment(settings))


def thresholds_comment(settings: Settings) -> str:
    """The answer thresholds in use, as YAML comments: set in settings, or calibrated on the
    FAQ and saved with its index (read from the index's metadata; nothing is loaded)."""
    from bot.dialogue.replies import thresholds
    from retrieval.calibration import Calibration, describe
    from retrieval.corpus import faq_file_hash
    from retrieval.errors import RetrievalError
    from retrieval.index import store

    r = settings.retrieval
    note = ""
    try:
        meta = store.read_meta(r.index_dir)
        calibration = Calibration.from_dict(meta.get("calibration"))
        if calibration is None:
            note = "no calibration saved with the index yet"
        elif meta["faq_sha256"] != faq_file_hash(r.faq_path) or calibration.target != \
                r.target_precision or calibration.scoring != r.scoring:
            note = "the FAQ or settings changed since it was calibrated: the next start " \
                "recalibrates"
    except (RetrievalError, OSError) as exc:
        calibration, note = None, f"no saved index to read a calibration from ({exc})"
    effective = thresholds(r, calibration)
    lines = ["# thresholds in use: " + describe(effective)]
    if note:
        lines.append(f"# ({note})")
    return "\n".join(lines) + "\n"


@config_app.command("example")
def config_example() -> None:
    """Print an example supportbot.yaml: every key with its default and what it does."""
    sys.stdout.write(example_yaml())
