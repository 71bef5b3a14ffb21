"""`supportbot serve` from process start to ready and to the first answer, and each process's
peak memory, with one worker and with several.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_start.py [--warm 3] [--workers 1 2]
     [--customers 50] [--postgres postgresql+asyncpg://user@127.0.0.1:5432/postgres]
     [--package /work/main] [--label after]

Each run starts `python -m bot --config <run>/supportbot.yaml serve --port <free port>` as a
child process (its package is `--package`'s, by PYTHONPATH: so one script measures two
checkouts) on the sample FAQ, with the index, the head caches, the web secret and the database
in a new temporary state folder, and polls /readyz every 20 ms. Then 50 customers, one after
another, each ask one question the FAQ answers (POST /v1/chat, a new conversation each): the
first answer's time from process start, and the latency of customers 1-10 against 11-50.

- Cold: the first run of this script's invocation on a state folder with nothing in it (no
  index, no head caches: everything the start builds and keeps). The models' files (the
  embedder, spaCy's) stay in the operating system's page cache and in the Hugging Face cache,
  which are not emptied: cold is "first start after install", not "first start after boot".
- Warm: later runs on the same state folder (index and caches saved by the cold run), each with
  an empty database; the median of `--warm` runs.
- Memory: while the server starts and after the 50 turns, every process of its tree is read:
  VmHWM (peak resident set) from /proc/PID/status and Pss (resident set with shared pages
  divided among their sharers) from /proc/PID/smaps_rollup, after the turns. Workers are the
  processes that served (with --workers N, the children running uvicorn's workers).
- `--workers 2` needs PostgreSQL: `--postgres` names a server (and a database to connect to);
  each run creates and drops a database of its own there.

The figures go to stdout and to bench/results/start_<label>.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_serve import faq_questions, percentile
from common import ENV, ROOT, SAMPLE_FAQ

WAIT_S = 300.0  # the server's start may take this long before the run fails
POLL_S = 0.02


@dataclass
class Run:
    """One start of the server: its times (seconds from process start) and memory (MB)."""

    workers: int
    cold: bool
    ready_s: float = 0.0
    first_answer_s: float = 0.0
    first10_p50_ms: float = 0.0
    later_p50_ms: float = 0.0
    first_turn_ms: float = 0.0
    hwm_mb: dict[str, float] = field(default_factory=dict)  # role -> peak RSS
    pss_mb: dict[str, float] = field(default_factory=dict)  # role -> PSS after the turns
    load: float = 0.0  # 1-minute load average when the run started


def _status_kb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _pss_kb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return float(line.split()[1])
    except OSError:
        return None
    return None


def _tree(root: int) -> dict[int, str]:
    """The live processes under `root` (itself included), each with its command line."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        todo.extend(children.get(pid, []))
    return found


def _role(pid: int, root: int, cmdline: str, workers: int) -> str:
    """What a process of the server's tree is: the server (one worker: it serves), the
    supervisor, a worker, the index process, or multiprocessing's resource tracker."""
    if pid == root:
        return "server" if workers == 1 else "supervisor"
    if "resource_tracker" in cmdline:
        return "resource_tracker"
    return "spawned"  # named worker or index below, by whether it is alive after the turns


class Server:
    """`supportbot serve` in a child process, on a free loopback port."""

    def __init__(self, state: Path, package: Path, workers: int) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.workers = workers
        self.log = (state / f"server-{time.time_ns()}.log").open("w")
        env = {**ENV, "PYTHONPATH": str(package)}
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "--config", str(state / "supportbot.yaml"), "serve",
             "--host", "127.0.0.1", "--port", str(self.port),
             *(["--workers", str(workers)] if workers > 1 else [])],
            cwd=state, env=env, stdout=self.log, stderr=subprocess.STDOUT)
        self.address = f"http://127.0.0.1:{self.port}"
        self.hwm: dict[int, float] = {}  # pid -> last VmHWM seen (kB)
        self.cmd: dict[int, str] = {}

    def sample(self) -> None:
        """Note every process's peak RSS so far (an ended process keeps its last)."""
        for pid, cmdline in _tree(self.process.pid).items():
            value = _status_kb(pid, "VmHWM")
            if value is not None:
                self.hwm[pid] = max(value, self.hwm.get(pid, 0.0))
                self.cmd[pid] = cmdline

    def wait_ready(self) -> float:
        """Seconds from process start until /readyz answered 200."""
        deadline = time.monotonic() + WAIT_S
        while True:
            self.sample()
            try:
                with urllib.request.urlopen(f"{self.address}/readyz", timeout=5) as r:
                    if r.status == 200:
                        return time.perf_counter() - self.started
            except (urllib.error.URLError, OSError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = Path(self.log.name).read_text().splitlines()[-20:]
                raise RuntimeError("the server did not start:\n" + "\n".join(tail))
            time.sleep(POLL_S)

    def ask(self, text: str) -> float:
        """One new customer's question over REST; seconds until the whole answer came."""
        body = json.dumps({"text": text, "client_id": "c1"}).encode()
        request = urllib.request.Request(f"{self.address}/v1/chat", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        started = time.perf_counter()
        with urllib.request.urlopen(request, timeout=120) as r:
            answer = json.loads(r.read())
        if not answer.get("reply", {}).get("text"):
            raise RuntimeError(f"no answer to {text!r}: {answer}")
        return time.perf_counter() - started

    def memory(self) -> tuple[dict[str, float], dict[str, float]]:
        """Peak RSS and PSS (MB) by role; workers and ended spawned processes told apart."""
        self.sample()
        live = _tree(self.process.pid)
        hwm: dict[str, float] = {}
        pss: dict[str, float] = {}
        workers = 0
        for pid in sorted(self.hwm):
            role = _role(pid, self.process.pid, self.cmd[pid], self.workers)
            if role == "spawned":
                if pid in live:
                    workers += 1
                    role = f"worker{workers}"
                else:
                    role = "index"
            hwm[role] = round(self.hwm[pid] / 1024, 1)
            value = _pss_kb(pid) if pid in live else None
            if value is not None:
                pss[role] = round(value / 1024, 1)
        return hwm, pss

    def stop(self) -> None:
        """SIGTERM, then the exit."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


async def _database(server_url: str, name: str, drop: bool) -> None:
    import asyncpg
    from sqlalchemy.engine import make_url

    url = make_url(server_url)
    connection = await asyncpg.connect(host=url.host, port=url.port, user=url.username,
                                       password=url.password, database=url.database)
    try:
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if not drop:
            await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()


def database_url(state: Path, workers: int, postgres: str | None, run: int) -> str:
    """SQLite in the state folder for one worker; a new PostgreSQL database for several."""
    if workers == 1:
        (state / "bot.db").unlink(missing_ok=True)
        return "sqlite+aiosqlite:///bot.db"
    if not postgres:
        raise SystemExit("--workers 2 needs --postgres (a PostgreSQL server's URL)")
    from sqlalchemy.engine import make_url

    name = f"bench_start_{os.getpid()}_{run}"
    asyncio.run(_database(postgres, name, drop=False))
    return make_url(postgres).set(database=name).render_as_string(hide_password=False)


def one_run(state: Path, package: Path, workers: int, cold: bool, questions: list[str],
            postgres: str | None, number: int) -> Run:
    """Start the server, ask the questions, read the memory, stop it."""
    url = database_url(state, workers, postgres, number)
    (state / "supportbot.yaml").write_text(
        f"retrieval:\n  faq_path: {SAMPLE_FAQ}\n  index_dir: index\n"
        f"storage:\n  database_url: {url}\n"
        "web:\n  burst_per_ip: 1000000\n  rate_per_ip: 1000000\n"
        "safety:\n  rate_per_minute: 0\n  flood_repeats: 0\n")
    run = Run(workers, cold, load=os.getloadavg()[0])
    server = Server(state, package, workers)
    try:
        run.ready_s = server.wait_ready()
        seconds = []
        for text in questions:
            seconds.append(server.ask(text))
            if len(seconds) == 1:
                run.first_answer_s = time.perf_counter() - server.started
        run.first_turn_ms = seconds[0] * 1000
        run.first10_p50_ms = percentile(seconds[:10], 0.5) * 1000
        run.later_p50_ms = percentile(seconds[10:], 0.5) * 1000 if seconds[10:] else 0.0
        run.hwm_mb, run.pss_mb = server.memory()
    finally:
        server.stop()
        if workers > 1 and postgres:
            asyncio.run(_database(postgres, f"bench_start_{os.getpid()}_{number}", drop=True))
    return run


def summary(runs: list[Run]) -> dict[str, Any]:
    """The cold run and the medians of the warm ones."""
    cold = [r for r in runs if r.cold]
    warm = [r for r in runs if not r.cold]

    def median(get: Any) -> float:
        return round(statistics.median(get(r) for r in warm), 3) if warm else float("nan")

    roles = sorted({role for r in warm for role in r.hwm_mb})
    return {
        "cold": asdict(cold[0]) if cold else None,
        "warm_runs": len(warm),
        "warm_ready_s": median(lambda r: r.ready_s),
        "warm_first_answer_s": median(lambda r: r.first_answer_s),
        "warm_first_turn_ms": median(lambda r: r.first_turn_ms),
        "warm_first10_p50_ms": median(lambda r: r.first10_p50_ms),
        "warm_later_p50_ms": median(lambda r: r.later_p50_ms),
        "warm_hwm_mb": {role: median(lambda r, k=role: r.hwm_mb.get(k, 0.0)) for role in roles},
        "warm_pss_mb": {role: median(lambda r, k=role: r.pss_mb.get(k, 0.0)) for role in roles
                        if any(role in r.pss_mb for r in warm)},
        "load": [round(r.load, 2) for r in runs],
    }


def show(workers: int, figures: dict[str, Any]) -> None:
    cold = figures["cold"]
    print(f"--workers {workers}: load average at each start {figures['load']}")
    if cold:
        print(f"  cold: ready {cold['ready_s']:.2f} s, first answer {cold['first_answer_s']:.2f}"
              f" s, peak RSS {cold['hwm_mb']} MB")
    print(f"  warm (median of {figures['warm_runs']}): ready {figures['warm_ready_s']:.2f} s, "
          f"first answer {figures['warm_first_answer_s']:.2f} s; first turn "
          f"{figures['warm_first_turn_ms']:.0f} ms, customers 1-10 p50 "
          f"{figures['warm_first10_p50_ms']:.0f} ms, 11-50 p50 "
          f"{figures['warm_later_p50_ms']:.0f} ms")
    print(f"  peak RSS MB {figures['warm_hwm_mb']}; PSS MB {figures['warm_pss_mb']}",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warm", type=int, default=3, choices=range(1, 11), metavar="1..10",
                        help="Warm runs after the cold one (their median is reported).")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--customers", type=int, default=50, choices=range(1, 201),
                        metavar="1..200")
    parser.add_argument("--postgres", default=os.environ.get("TEST_POSTGRES_URL"),
                        help="A PostgreSQL server's URL, for --workers 2.")
    parser.add_argument("--package", type=Path, default=ROOT,
                        help="The checkout whose `bot` package is served [default: this one].")
    parser.add_argument("--label", default="after", help="Names the results file.")
    args = parser.parse_args()
    questions = faq_questions(args.customers)
    results: dict[str, Any] = {"package": str(args.package), "label": args.label,
                               "customers": args.customers, "cores": os.cpu_count()}
    for workers in args.workers:
        runs: list[Run] = []
        with tempfile.TemporaryDirectory(prefix="bench-start-") as folder:
            state = Path(folder)
            for number in range(args.warm + 1):
                runs.append(one_run(state, args.package, workers, number == 0, questions,
                                    args.postgres, number))
        results[f"workers_{workers}"] = {"summary": summary(runs),
                                         "runs": [asdict(r) for r in runs]}
        show(workers, results[f"workers_{workers}"]["summary"])
        out = ROOT / "bench" / "results" / f"start_{args.label}.json"
        out.write_text(json.dumps(results, indent=1))  # after each: a long run may be stopped
        print(f"written {out.relative_to(ROOT)}", flush=True)


if __name__ == "__main__":
    main()
