"""`supportbot serve`: the web chat page, web socket, REST API and metrics, in one process or
several workers."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from bot.cli.common import check_backend, err, faq_index, model_loader, settings_of, user_errors
from bot.errors import SettingsError
from bot.settings import Settings, check_networks


def serve(ctx: typer.Context,
          host: Annotated[str | None, typer.Option(help="Address to listen on "
                                                   "[default: web.host, 127.0.0.1].")] = None,
          port: Annotated[int | None, typer.Option(min=1, max=65535, help="Port "
                                                   "[default: web.port, 8000].")] = None,
          preload: Annotated[bool, typer.Option(help="Load the model before serving.")] = False,
          workers: Annotated[int | None, typer.Option(
              min=1, max=64, help="Server processes sharing the port [default: web.workers, "
              "1]; more than 1 needs PostgreSQL.")] = None,
          forwarded_allow_ips: Annotated[str | None, typer.Option(
              help="Your proxies' addresses or networks, comma-separated, whose "
              "X-Forwarded-For is believed [default: web.forwarded_allow_ips, none]; see "
              "docs/deploy.md.")] = None
          ) -> None:
    """Serve the web chat page, the web socket (/ws), REST (/v1) and /metrics."""
    with user_errors():
        settings = settings_of(ctx)
        proxies = settings.web.forwarded_allow_ips
        if forwarded_allow_ips is not None:
            try:
                proxies = check_networks([p.strip() for p in forwarded_allow_ips.split(",")
                                          if p.strip()])
            except ValueError as exc:
                raise SettingsError([f"--forwarded-allow-ips: {exc}"]) from None
        web = settings.web.model_copy(update={
            "host": host or settings.web.host, "port": port or settings.web.port,
            "preload": preload or settings.web.preload,
            "workers": workers or settings.web.workers, "forwarded_allow_ips": proxies})
        settings = settings.model_copy(update={"web": web})
        from bot.channels.serve import check_address
        from bot.channels.serve import serve as run_server

        if web.workers > 1:  # refused before anything slow
            from bot.channels.workers import check_database, serve_workers

            check_database(settings)
        check_address(web.host, web.port)
        check_backend(settings)
        if web.workers > 1:
            _index_apart(settings)  # built and saved once: the workers load the saved one
            err.print(f"[green]serving[/] http://{web.host}:{web.port} with {web.workers} "
                      "workers  [dim](chat page /, web socket /ws, inbox /operator, metrics "
                      "/metrics; Ctrl+C stops)[/]")
            serve_workers(settings)
            return
        built = faq_index(settings)
        err.print(f"[green]serving[/] http://{web.host}:{web.port}  "
                  "[dim](chat page /, web socket /ws, inbox /operator, metrics /metrics; "
                  "Ctrl+C stops)[/]")
        run_server(settings, built, model_loader(settings))


def _index_apart(settings: Settings) -> None:
    """Open (or build and save) the FAQ index in a process of its own that then ends: the
    parent of several workers only supervises them, and would otherwise keep torch and the
    embedder (~600 MB) for nothing. Its errors are its one line on stderr and status 1."""
    import multiprocessing

    process = multiprocessing.get_context("spawn").Process(
        target=_index_or_exit, args=(settings,), name="supportbot-index")
    process.start()
    process.join()
    if process.exitcode != 0:
        raise typer.Exit(1)


def _index_or_exit(settings: Settings) -> None:
    """The index process's work: open the index, or exit with the user error's status."""
    try:
        with user_errors():
            faq_index(settings)
    except typer.Exit as exc:  # not a traceback from multiprocessing
        sys.exit(exc.exit_code)
