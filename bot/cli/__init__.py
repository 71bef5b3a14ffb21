"""The `supportbot` command line, composed here from one module per command group; the
helpers they share are in bot/cli/common.py. Training and the offline tools are imported only
inside the commands that use them."""

from __future__ import annotations

import os

import typer

from bot.cli import (
    chat,
    config,
    conversations,
    db,
    evaluate,
    index,
    models,
    operators,
    serve,
    telegram,
    train,
    tune,
)

app = typer.Typer(help="supportbot: a customer-service bot on your own hardware.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.callback()(config.root)
app.add_typer(config.config_app, name="config")
app.command()(index.index)
app.command()(chat.ask)
app.command()(chat.chat)
app.command()(serve.serve)
app.command()(telegram.telegram)
app.command()(conversations.history)
app.add_typer(db.db_app, name="db")
app.add_typer(evaluate.eval_app, name="eval")
app.command()(conversations.release)
app.add_typer(models.models_app, name="models")
app.command("tune-retriever")(tune.tune_retriever)
app.command()(train.train)
app.command()(train.merge)
app.command("export-gguf")(train.export_gguf)
app.command()(train.export)
app.add_typer(operators.operator_app, name="operator")
app.command()(operators.report)


def main() -> None:
    """Console entry point."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    app()


__all__ = ["app", "main"]
