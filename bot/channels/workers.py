"""`supportbot serve --workers N`: N uvicorn worker processes on one socket and one PostgreSQL.

The parent does the once-only work (the index is built by the CLI before; here: migrations,
the web secret file, binding the port), writes the effective settings to a private file and
hands its path to the workers in an environment variable, then runs uvicorn's own supervisor
(`Multiprocess`): it spawns the workers on the shared socket, restarts one that dies, and on
SIGINT / SIGTERM stops them all gracefully. Each worker builds its app with `worker_app`, the
factory uvicorn imports, exactly as a single-process server builds its one (served_app).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel, SecretStr
from uvicorn.config import STARTUP_FAILURE
from uvicorn.supervisors import Multiprocess

from bot.channels.serve import served_app, server_options
from bot.channels.web.metrics import MULTIPROC_ENV
from bot.errors import SupportbotError
from bot.settings import WORKER_ENV, Settings

log = logging.getLogger(__name__)
FACTORY = f"{__name__}:worker_app"
LOG_FORMAT = "%(levelname)s [%(process)d] %(name)s: %(message)s"  # which worker said it
# How long the supervisor waits for a live worker to answer its ping before it kills it as hung
# and starts another. uvicorn's default, 5 s, can pass on a busy 2-core machine while a worker
# loads torch and the embedder; a worker that died is noticed at once whatever this is.
HEALTHCHECK_SECONDS = 30


def check_database(settings: Settings) -> None:
    """SupportbotError unless the database can order one conversation's turns across worker
    processes: only PostgreSQL can (a session advisory lock per conversation)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    url = settings.storage.database_url
    try:
        backend = make_url(url).get_backend_name()
    except (ArgumentError, ValueError):
        backend = url.split(":", 1)[0]
    if backend != "postgresql":
        raise SupportbotError(
            f"--workers {settings.web.workers} needs PostgreSQL: turns of one conversation are "
            f"kept in order across processes by PostgreSQL advisory locks, which {backend} "
            "lacks; set storage.database_url: postgresql+asyncpg://user:password@host/db "
            "(or serve with one worker)")


def serve_workers(settings: Settings) -> None:
    """Run web.workers server processes on web.host:web.port until SIGINT / SIGTERM, which
    drains every worker (web.drain_seconds) and returns. The FAQ index must be current."""
    from bot.channels.web.security import ConversationTokens

    check_database(settings)
    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    asyncio.run(_migrate(settings.storage.database_url))
    ConversationTokens.from_settings(settings.web)  # creates web.secret_file once, here
    web = settings.web
    with _worker_environment(settings) as metrics_dir:
        config = _WorkerConfig(FACTORY, factory=True, workers=web.workers, host=web.host,
                               port=web.port,
                               **server_options(web.drain_seconds, web.forwarded_allow_ips),
                               timeout_worker_healthcheck=HEALTHCHECK_SECONDS)
        supervisor = _Supervisor(config, [config.bind_socket()], metrics_dir,
                                 grace=2 * web.drain_seconds + 15)
        supervisor.run()
    if supervisor.startup_failed:
        raise SupportbotError("a worker failed to start (its log is above); stopped")


async def _migrate(url: str) -> None:
    """Bring the schema to the head once, so that workers starting together find it current."""
    from bot.storage import ConversationStore

    store = ConversationStore(url)
    try:
        await store.init()
    finally:
        await store.close()


@contextlib.contextmanager
def _worker_environment(settings: Settings) -> Iterator[Path]:
    """A private folder (mode 0700) holding the settings file and the metrics files, named in
    the environment the workers inherit; removed, and the environment restored, at the end."""
    folder = Path(tempfile.mkdtemp(prefix="supportbot-workers-"))
    metrics_dir = folder / "metrics"
    metrics_dir.mkdir()
    settings_file = folder / "settings.json"
    fd = os.open(settings_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(settings_data(settings), out)
    saved = {name: os.environ.get(name) for name in (WORKER_ENV, MULTIPROC_ENV)}
    os.environ[WORKER_ENV] = str(settings_file)
    os.environ[MULTIPROC_ENV] = str(metrics_dir)
    try:
        yield metrics_dir
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        shutil.rmtree(folder, ignore_errors=True)


def settings_data(settings: Settings) -> dict[str, Any]:
    """The effective settings as JSON values, secrets included (for `load_worker_settings`)."""
    def plain(value: Any) -> Any:
        if isinstance(value, SecretStr):
            return value.get_secret_value()
        if isinstance(value, Path):
            return str(value)
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [plain(v) for v in value]
        return value

    return dict(plain(settings.model_dump(mode="python")))


def load_worker_settings(data: dict[str, Any]) -> Settings:
    """Settings from `settings_data`, as the parent had them: each section validated on its
    own, so SUPPORTBOT_* variables are not applied a second time over the command line's
    options (--preload, --port) that the parent applied after them."""
    sections: dict[str, Any] = {}
    for name, field in Settings.model_fields.items():
        section = field.annotation
        assert isinstance(section, type) and issubclass(section, BaseModel)
        sections[name] = section.model_validate(data.get(name, {}))
    return Settings.model_construct(**sections)


def worker_app() -> FastAPI:
    """The app of one worker (uvicorn calls this in each worker process): the parent's settings,
    the saved index loaded at start-up, the configured model loaded when first needed."""
    from bot.runtime import generator_factory

    logging.basicConfig(level=logging.INFO, format=LOG_FORMAT)
    path = os.environ.get(WORKER_ENV)
    if not path:
        raise SupportbotError(f"{WORKER_ENV} is not set: worker_app runs in the workers of "
                              "`supportbot serve --workers N`")
    settings = load_worker_settings(json.loads(Path(path).read_text(encoding="utf-8")))
    loader = generator_factory(settings.model,
                               lambda name: log.info("loading the model %s", name))
    return served_app(settings, generator=loader)


class _WorkerConfig(uvicorn.Config):
    """uvicorn's Config that, in a worker, also makes a SIGTERM end the process with status 0.

    uvicorn's server catches SIGTERM while it serves and, once it has shut down gracefully,
    raises it again under the handler it found: in a spawned worker the default one, which
    kills the process before Python's clean-up (multiprocessing's resource tracker then warns of
    leaked semaphores). Each worker calls configure_logging first thing, before the server.
    """

    def configure_logging(self) -> None:
        super().configure_logging()
        if multiprocessing.parent_process() is not None:  # a worker, not the parent
            signal.signal(signal.SIGTERM, _exit_cleanly)


def _exit_cleanly(sig: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


class _Supervisor(Multiprocess):
    """uvicorn's supervisor, plus the metrics bookkeeping of dead workers, a bound on how long
    stopping waits for them, and a note when a worker failed to start."""

    def __init__(self, config: uvicorn.Config, sockets: list[Any], metrics_dir: Path,
                 grace: float) -> None:
        super().__init__(config, sockets)
        self.metrics_dir = metrics_dir
        self.grace = grace
        self.startup_failed = False

    def keep_subprocess_alive(self) -> None:
        before = {process.pid for process in self.processes}
        super().keep_subprocess_alive()
        self._forget(before - {process.pid for process in self.processes})
        self.startup_failed = self.startup_failed or any(
            process.exitcode == STARTUP_FAILURE for process in self.processes)

    def join_all(self) -> None:
        deadline = time.monotonic() + self.grace
        for process in self.processes:
            process.process.join(max(0.0, deadline - time.monotonic()))
            if process.process.is_alive():
                log.warning("worker [%s] still running %.0f s after SIGTERM; killing it",
                            process.pid, self.grace)
                process.kill()
                process.process.join()
        self._forget({process.pid for process in self.processes})

    def _forget(self, pids: set[int | None]) -> None:
        """Drop the live gauges (open sockets, turns per worker) of workers that have ended."""
        from prometheus_client.multiprocess import mark_process_dead

        for pid in pids:
            if pid is not None:
                mark_process_dead(pid, str(self.metrics_dir))
