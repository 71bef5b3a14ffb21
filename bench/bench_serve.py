"""The web server under load on loopback, each figure against the in-process dialogue core.

Run: HF_HUB_OFFLINE=1 .venv/bin/python bench/bench_serve.py [--clients 20] [--faq-turns 5]
     [--generated 8] [--max-new-tokens 48] [--think-ms 1000] [--rounds 3]

`supportbot serve`'s own code (bot.channels.serve: uvicorn, served_app) runs in a child
process on 127.0.0.1; web-socket clients (the `websockets` library) run in this one. The
baselines run `DialogueManager` in this process, on the same questions, while no server runs.

1. FAQ-answer latency (client-observed: message sent -> `reply` frame), p50 / p95: 20 clients
   each sending its next question a random 0-2x think time after the previous reply (paced),
   the same 20 clients without pausing (closed loop, the server saturated), and one client
   alone; baseline `DialogueManager.handle` on the same questions one after another.
2. Time to the first `token` frame of a generated answer (every question forced into the
   generated band, bundled SmolLM2-135M), one conversation at a time; baseline the first
   `TextEvent` of `DialogueManager.stream`. The grounding check passes every sentence (after
   10 ms, its real cost), as in bench_dialogue.py: the figures are about the server, not the check.
3. Generated tokens/s (the server's /metrics counter supportbot_generated_tokens_total; in
   process the same count) with `--generated` conversations at once vs one at a time, and vs
   `DialogueManager.handle` with as many at once; the median of `--rounds` runs each, since
   one run on this 2-core machine can be twice as slow as the next.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from bench_dialogue import PassEverything
from bench_generation import QUESTIONS
from common import ENV, SAMPLE_FAQ

if TYPE_CHECKING:
    from bot.generation.grounding import GroundingChecker
    from retrieval.embedder import Embedder

WAIT_S = 120.0  # a frame, or the server's start, may take this long before the run fails
WARM_UP = "how do I change the delivery address of my order"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class Others:
    """CPU used by processes other than this benchmark and its server while a figure was
    measured, in cores (Linux /proc; None elsewhere). This machine is shared: a figure taken
    while others ran is not the server's (a generation batch of 8 took 5 s on an idle machine
    and 97 s beside a test run), so each is printed with this."""

    def __init__(self, *pids: int) -> None:
        self.pids = (os.getpid(), *pids)
        self.started = time.perf_counter()
        self.machine, self.own = self._read()

    def _read(self) -> tuple[float, float]:
        try:
            values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0]
                      .split()[1:9]]
            own = 0
            for pid in self.pids:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                own += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            return float("nan"), float("nan")
        busy = sum(values) - values[3] - values[4]  # all but idle and iowait
        return busy / _TICK, own / _TICK

    def __str__(self) -> str:
        machine, own = self._read()
        cores = ((machine - self.machine) - (own - self.own)) / (time.perf_counter()
                                                                 - self.started)
        return "CPU elsewhere: n/a" if cores != cores else \
            f"{max(cores, 0.0):.2f} cores busy elsewhere"


def bench_settings(work: Path, generated: bool, max_new_tokens: int = 48) -> Any:
    """The sample-FAQ bot in `work`; with `generated`, every question lands in the generated
    band (as common.open_bench_runtime's everything_generates) and the model loads at start."""
    from bot.settings import Settings

    settings = Settings()
    settings.retrieval.faq_path = SAMPLE_FAQ
    settings.retrieval.index_dir = work / "index"
    settings.storage.database_url = f"sqlite+aiosqlite:///{work}/server.db"
    settings.model.generation.max_new_tokens = max_new_tokens
    web = settings.web
    web.secret = "bench key, long enough to sign tokens"  # type: ignore[assignment]
    web.burst_per_ip, web.rate_per_ip = 1_000_000, 1_000_000.0  # all clients share 127.0.0.1
    web.burst_per_connection, web.rate_per_connection = 10_000, 10_000.0
    web.drain_seconds = 30
    # One benchmark client asks many questions fast, some of them again: the safety layer's
    # per-conversation rate and flood guards would (rightly) refuse it. Every other guard runs.
    settings.safety.rate_per_minute = 0
    settings.safety.flood_repeats = 0
    if generated:
        settings.retrieval.answer_threshold = 1.0
        settings.retrieval.suggest_threshold = -1.0
        settings.dialogue.middle = "generate"
        web.preload = True
    return settings


def pass_everything(embedder: Embedder) -> GroundingChecker:
    """Stands in for bot.dialogue.manager.checker_for in the server: every sentence passes."""
    return cast("GroundingChecker", PassEverything())


def run_server(work: Path, port: int, generated: bool, max_new_tokens: int) -> None:
    """(In the child process.) `supportbot serve` on 127.0.0.1:port until SIGTERM; then the
    sizes of the generation batches it ran go to work/batches.json."""
    import bot.dialogue.manager
    from bot.channels.serve import serve
    from bot.runtime import generator_factory, open_index

    settings = bench_settings(work, generated, max_new_tokens)
    settings.web.port = port
    if generated:
        bot.dialogue.manager.checker_for = pass_everything
    index, _ = open_index(settings)
    load = generator_factory(settings.model)
    loaded: list[Any] = []

    def loader() -> Any:
        loaded.append(load())
        return loaded[-1]

    serve(settings, index, loader)
    (work / "batches.json").write_text(json.dumps([list(g.batches) for g in loaded]))


class Server:
    """The child process serving the bot on a free loopback port."""

    def __init__(self, work: Path, generated: bool, max_new_tokens: int) -> None:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        self.work = work
        self.log = (work / f"server-{'generated' if generated else 'faq'}.log").open("w")
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(self.port), "--work", str(work),
             "--max-new-tokens", str(max_new_tokens),
             *(["--generated-band"] if generated else [])],
            env=ENV, stdout=self.log, stderr=subprocess.STDOUT)
        self.address = f"127.0.0.1:{self.port}"
        deadline = time.monotonic() + WAIT_S
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                tail = Path(self.log.name).read_text().splitlines()[-20:]
                raise RuntimeError("the server did not start:\n" + "\n".join(tail))
            time.sleep(0.2)

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://{self.address}/readyz", timeout=5) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def generated_tokens(self) -> float:
        """The server's supportbot_generated_tokens_total."""
        with urllib.request.urlopen(f"http://{self.address}/metrics", timeout=30) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("supportbot_generated_tokens_total "):
                    return float(line.split()[1])
        raise RuntimeError("no supportbot_generated_tokens_total in /metrics")

    def stop(self) -> tuple[int | None, list[list[int]]]:
        """SIGTERM (turns in flight drain), then the exit status and the batch sizes."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()
        batches = self.work / "batches.json"
        sizes = json.loads(batches.read_text()) if batches.exists() else []
        batches.unlink(missing_ok=True)
        return self.process.returncode, sizes


# --- clients -----------------------------------------------------------------------------------


@dataclass
class Turn:
    seconds: float  # message sent -> reply frame
    first_token: float | None  # message sent -> first token frame
    decision: str


async def open_socket(address: str) -> Any:
    from websockets.asyncio.client import connect

    ws = await connect(f"ws://{address}/ws", open_timeout=WAIT_S, max_size=None)
    hello = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
    assert hello["type"] == "hello", hello
    return ws


async def socket_turn(ws: Any, text: str) -> Turn:
    started = time.perf_counter()
    await ws.send(json.dumps({"type": "message", "text": text}))
    first: float | None = None
    while True:
        frame = json.loads(await asyncio.wait_for(ws.recv(), WAIT_S))
        if frame["type"] == "token" and first is None:
            first = time.perf_counter() - started
        elif frame["type"] == "ping":  # the server's heartbeat, answered as a page does
            await ws.send(json.dumps({"type": "pong"}))
        elif frame["type"] == "reply":
            return Turn(time.perf_counter() - started, first, frame["decision"])
        elif frame["type"] == "error":
            raise RuntimeError(f"the server refused a message: {frame}")


async def socket_client(address: str, questions: list[str], think_s: float,
                        rng: random.Random) -> list[Turn]:
    """One customer: its questions one after another, pausing 0-2x think_s before each."""
    ws = await open_socket(address)
    try:
        turns = []
        for question in questions:
            if think_s:
                await asyncio.sleep(rng.uniform(0, 2 * think_s))
            turns.append(await socket_turn(ws, question))
        return turns
    finally:
        await ws.close()


async def faq_over_sockets(address: str, plan: list[list[str]], think_s: float,
                           seed: int) -> tuple[list[Turn], float]:
    """Every client's questions at once; the turns and the wall time."""
    rngs = [random.Random(seed + i) for i in range(len(plan))]
    started = time.perf_counter()
    per_client = await asyncio.gather(*(socket_client(address, questions, think_s, rng)
                                        for questions, rng in zip(plan, rngs, strict=True)))
    return [t for turns in per_client for t in turns], time.perf_counter() - started


async def generated_over_sockets(server: Server, questions: list[str], at_once: bool
                                 ) -> tuple[list[Turn], float, float]:
    """One fresh conversation per question, all at once or one after another: the turns,
    the seconds they took (at once: the wall time; in turn: the sum of the turns, each socket
    opened just before its turn, since one left idle is closed after two unanswered
    heartbeats) and the tokens the server generated meanwhile."""
    tokens = await asyncio.to_thread(server.generated_tokens)
    if at_once:
        sockets = [await open_socket(server.address) for _ in questions]
        try:
            started = time.perf_counter()
            turns = list(await asyncio.gather(*(socket_turn(ws, q)
                                                for ws, q in zip(sockets, questions,
                                                                 strict=True))))
            seconds = time.perf_counter() - started
        finally:
            for ws in sockets:
                await ws.close()
    else:
        turns = []
        for question in questions:
            ws = await open_socket(server.address)
            try:
                turns.append(await socket_turn(ws, question))
            finally:
                await ws.close()
        seconds = sum(t.seconds for t in turns)
    tokens = await asyncio.to_thread(server.generated_tokens) - tokens
    return turns, seconds, tokens


# --- in process --------------------------------------------------------------------------------


async def in_process(work: Path, settings: Any, job: Callable[[Any], Any]) -> Any:
    """Run `job(manager)` on the bot opened in this process (its own database file)."""
    from bot.runtime import open_index, open_runtime

    settings.storage.database_url = f"sqlite+aiosqlite:///{work}/in-process.db"
    index, _ = open_index(settings)
    runtime = await open_runtime(settings, index)
    try:
        return await job(runtime.manager)
    finally:
        await runtime.close()


async def handle_turn(manager: Any, text: str, conversation_id: str) -> Turn:
    from bot.types import BotReply, TextEvent, UserMessage

    started = time.perf_counter()
    first: float | None = None
    async for event in manager.stream(UserMessage(text, conversation_id=conversation_id)):
        if isinstance(event, TextEvent) and first is None:
            first = time.perf_counter() - started
        if isinstance(event, BotReply):
            return Turn(time.perf_counter() - started, first, event.decision.value)
    raise RuntimeError("the turn ended without a reply")


# --- figures -----------------------------------------------------------------------------------


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(share * len(ordered) + 0.5) - 1))]


def ms(turns: list[Turn]) -> str:
    seconds = [t.seconds for t in turns]
    return (f"p50 {percentile(seconds, 0.5) * 1000:.1f} ms / p95 "
            f"{percentile(seconds, 0.95) * 1000:.1f} ms")


def faq_questions(count: int) -> list[str]:
    """`count` questions the FAQ answers outright: its entries' own questions, in turn, leaving
    out any that a rule catches first (a human asked for, 'who are you')."""
    from bot.intents import Intents
    from bot.settings import Settings
    from retrieval.corpus import load_faq

    intents = Intents(Settings().dialogue.handoff_keywords)
    pool = [e.question for e in load_faq(SAMPLE_FAQ)
            if not intents.wants_human(e.question) and not intents.refuses_human(e.question)]
    return [pool[i % len(pool)] for i in range(count)]


async def faq_figures(work: Path, clients: int, turns: int, think_s: float) -> None:
    questions = faq_questions(clients * turns)
    plan = [questions[i * turns:(i + 1) * turns] for i in range(clients)]

    async def baseline(manager: Any) -> list[Turn]:
        await handle_turn(manager, WARM_UP, "warm-up")
        return [await handle_turn(manager, q, f"in-process-{i}")
                for i, questions_ in enumerate(plan) for q in questions_]

    meter = Others()
    base = await in_process(work, bench_settings(work, False), baseline)
    base_others = str(meter)
    server = Server(work, generated=False, max_new_tokens=48)
    try:
        await faq_over_sockets(server.address, [[WARM_UP]], 0.0, 0)
        meter = Others(server.process.pid)
        alone, _ = await faq_over_sockets(server.address, [questions], 0.0, 0)
        alone_others, meter = str(meter), Others(server.process.pid)
        paced, paced_s = await faq_over_sockets(server.address, plan, think_s, 1)
        paced_others, meter = str(meter), Others(server.process.pid)
        loaded, loaded_s = await faq_over_sockets(server.address, plan, 0.0, 2)
        loaded_others = str(meter)
    finally:
        status, _ = server.stop()
    answered = sum(t.decision == "answer" for t in paced + loaded + alone)
    print(f"FAQ answers over the web socket, {clients} clients x {turns} turns, paced (next "
          f"question 0-{2 * think_s:.1f} s after a reply; {len(paced) / paced_s:.1f} turns/s): "
          f"{ms(paced)} (goal p50 <= 25 ms; {paced_others})")
    print(f"  same {clients} clients without pausing (server saturated; "
          f"{len(loaded) / loaded_s:.1f} turns/s): {ms(loaded)} ({loaded_others})")
    print(f"  one client alone, the same {len(alone)} questions in turn: {ms(alone)} "
          f"({alone_others})")
    added = percentile([t.seconds for t in alone], 0.5) - percentile([t.seconds for t in base],
                                                                    0.5)
    print(f"  baseline DialogueManager.handle in process, same questions in turn: {ms(base)} "
          f"(one client over the socket: {added * 1000:+.1f} ms at p50; {base_others})")
    print(f"  ({answered} of {len(paced) + len(loaded) + len(alone)} socket turns were FAQ "
          f"answers; the server exited with status {status} on SIGTERM)")


@dataclass
class Rate:
    """Generated tokens over wall seconds, one run."""

    tokens: float
    seconds: float

    @property
    def per_second(self) -> float:
        return self.tokens / self.seconds


def median_rate(rates: list[Rate]) -> str:
    values = sorted(r.per_second for r in rates)
    return (f"{statistics.median(values):.1f} tok/s (median of {len(values)} runs: "
            f"{', '.join(f'{v:.1f}' for v in values)})")


def ratio(a: list[Rate], b: list[Rate]) -> float:
    return statistics.median(r.per_second for r in a) / statistics.median(
        r.per_second for r in b)


def at_once_batches(sizes: list[int], conversations: int, rounds: int) -> list[list[int]]:
    """The batches of the at-once runs, from the server's list: after the warm-up's, each round
    ran `conversations` batches of 1 (one at a time), then its at-once batches."""
    rest, found = sizes[1:], []
    for _ in range(rounds):
        rest = rest[conversations:]
        batch: list[int] = []
        while rest and sum(batch) < conversations:
            batch.append(rest.pop(0))
        found.append(batch)
    return found


async def generated_figures(work: Path, conversations: int, max_new_tokens: int,
                            rounds: int) -> None:
    questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(conversations)]
    one: list[Rate] = []
    many: list[Rate] = []
    firsts: list[Turn] = []
    shown = 0
    server = Server(work, generated=True, max_new_tokens=max_new_tokens)
    try:
        await generated_over_sockets(server, [WARM_UP], at_once=False)
        meter = Others(server.process.pid)
        for _ in range(rounds):
            turns, seconds, tokens = await generated_over_sockets(server, questions, False)
            one.append(Rate(tokens, seconds))
            firsts += turns
            shown += sum(t.decision == "generate" for t in turns)
            turns, seconds, tokens = await generated_over_sockets(server, questions, True)
            many.append(Rate(tokens, seconds))
            shown += sum(t.decision == "generate" for t in turns)
        server_others = str(meter)
    finally:
        status, batches = server.stop()

    async def baseline(manager: Any) -> tuple[list[Rate], list[Rate], list[Turn],
                                              list[list[int]]]:
        manager.checker = PassEverything()
        assert manager.generator is not None  # load now: loading is not throughput
        await handle_turn(manager, WARM_UP, "warm-up")
        meters.append(Others())
        seq, par, turns, sizes = [], [], [], []
        for r in range(rounds):
            before = manager.tokens_generated
            in_turn = [await handle_turn(manager, q, f"one-{r}-{i}")
                       for i, q in enumerate(questions)]
            seq.append(Rate(manager.tokens_generated - before, sum(t.seconds for t in in_turn)))
            turns += in_turn
            count = manager.generator.batches_run
            before, started = manager.tokens_generated, time.perf_counter()
            await asyncio.gather(*(handle_turn(manager, q, f"many-{r}-{i}")
                                   for i, q in enumerate(questions)))
            par.append(Rate(manager.tokens_generated - before, time.perf_counter() - started))
            sizes.append(manager.generator.batches_since(count))
        return seq, par, turns, sizes

    meters: list[Others] = []
    seq, par, in_process_firsts, in_batches = await in_process(
        work, bench_settings(work, True, max_new_tokens), baseline)
    in_process_others = str(meters[0])

    def first(turns: list[Turn]) -> str:
        times = [t.first_token for t in turns if t.first_token is not None]
        return (f"median {statistics.median(times) * 1000:.0f} ms, max "
                f"{max(times) * 1000:.0f} ms ({len(times)} turns)")

    server_batches = at_once_batches(batches[-1], conversations, rounds) if batches else []
    print(f"first token frame of a generated answer over the web socket, one conversation at a "
          f"time: {first(firsts)}; baseline DialogueManager.stream's first TextEvent: "
          f"{first(in_process_firsts)}")
    print(f"generated tokens over web sockets, {conversations} conversations at once: "
          f"{median_rate(many)}, batches {server_batches}")
    print(f"  vs one conversation at a time: {median_rate(one)} -> {ratio(many, one):.2f}x "
          f"(goal >= 4x); {many[0].tokens:.0f} tokens per run")
    print(f"  baseline DialogueManager.handle in process, {conversations} at once: "
          f"{median_rate(par)}, batches {in_batches}; one at a time {median_rate(seq)} -> "
          f"{ratio(par, seq):.2f}x; the server over sockets reaches {ratio(many, par):.2f} of "
          "it at once")
    print(f"  ({shown} of {2 * rounds * conversations} socket turns showed generated text; the "
          f"server exited with status {status} on SIGTERM; {server_others} during the socket "
          f"runs, {in_process_others} during the in-process ones)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=20, choices=range(1, 65),
                        metavar="1..64", help="concurrent web-socket clients for FAQ answers")
    parser.add_argument("--faq-turns", type=int, default=5, choices=range(1, 21),
                        metavar="1..20", help="questions per FAQ client")
    parser.add_argument("--think-ms", type=float, default=1000.0,
                        help="mean pause of a paced client before each question (0..5000)")
    parser.add_argument("--generated", type=int, default=8, choices=range(1, 17),
                        metavar="1..16", help="generated-answer conversations at once")
    parser.add_argument("--max-new-tokens", type=int, default=48, choices=range(8, 129),
                        metavar="8..128", help="max new tokens per generated answer")
    parser.add_argument("--rounds", type=int, default=3, choices=range(1, 6), metavar="1..5",
                        help="runs of each generated-tokens figure (the median is shown)")
    parser.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--generated-band", dest="band", action="store_true",
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        run_server(args.work, args.serve, args.band, args.max_new_tokens)
        return
    if not 0 <= args.think_ms <= 5000:
        parser.error("--think-ms must be between 0 and 5000")
    os.environ.update(ENV)  # the baselines run as `supportbot` and the server do
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        from bot.runtime import open_index

        open_index(bench_settings(work, False))  # build the index once, before any server
        asyncio.run(faq_figures(work, args.clients, args.faq_turns, args.think_ms / 1000))
        asyncio.run(generated_figures(work, args.generated, args.max_new_tokens,
                                      args.rounds))


if __name__ == "__main__":
    main()
