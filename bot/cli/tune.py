"""`supportbot tune-retriever`: fine-tune the embedder on the FAQ's phrasings, calibrate the
thresholds on held-out phrasings, and say which settings to use. Tuning and calibration (offline
tools) are imported by the command."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bot.cli.common import err, out, quiet_transformers, settings_of, user_errors

if TYPE_CHECKING:
    from retrieval.corpus import FaqEntry
    from retrieval.embedder import Embedder
    from retrieval.offline.calibrate import Thresholds
    from retrieval.offline.tune import Split

SETTINGS_FILE = "settings.yaml"


@contextmanager
def _steps(description: str
           ) -> Iterator[tuple[Callable[[int], None], Callable[[int, float], None]]]:
    """A progress bar over optimizer steps with the loss and the rate, on stderr."""
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("loss {task.fields[loss]}  {task.fields[rate]}"),
                        TimeElapsedColumn(), console=err, transient=True)
    task = progress.add_task(description, total=None, loss="-", rate="")
    started = time.perf_counter()

    def start(total: int) -> None:
        progress.update(task, total=total)
        progress.start()

    def step(done: int, loss: float) -> None:
        rate = done / max(time.perf_counter() - started, 1e-9)
        progress.update(task, completed=done, loss=f"{loss:.3f}", rate=f"{rate:.2f} steps/s")

    try:
        yield start, step
    finally:
        if progress.live.is_started:
            progress.stop()


def _calibrations(entries: list[FaqEntry], split: Split, embedder: Embedder,
                  target_precision: float, oos_share: float, outside: list[str],
                  learnt: list[str], lexical: str) -> dict[str, Thresholds]:
    """Thresholds for each entry scoring, measured on the held-out phrasings and the
    out-of-scope questions (`learnt`: the classifier's out-of-scope class; `lexical`: whether
    it weighs words, retrieval.lexical)."""
    from retrieval.index import SCORINGS
    from retrieval.offline.calibrate import calibrate, held_out_samples

    found = held_out_samples(entries, split.tune, split.held_out, embedder, SCORINGS, outside,
                             learnt, lexical)
    return {scoring: calibrate(samples, target_precision, oos_share, outside=leads)
            for scoring, (samples, leads) in found.items()}


def _plot_losses(losses: list[float], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.plot(range(1, len(losses) + 1), losses, linewidth=1, label="in-batch contrastive loss")
    axes.set_xlabel("step")
    axes.set_ylabel("loss")
    axes.grid(alpha=0.3)
    axes.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")


def _settings_yaml(out_dir: Path, settings: dict[str, Any]) -> str:
    """The recommended `retrieval` settings, with the tuned folder as the embedder."""
    values = {"embedder": json.dumps(str(out_dir.resolve())), **settings}
    return "retrieval:\n" + "".join(f"  {key}: {value}\n" for key, value in values.items())


def _row(name: str, t: Thresholds) -> str:
    precision = "n/a" if t.answer_precision is None else f"{t.answer_precision:.1%}"
    return (f"| {name} | {t.answer:.2f} / {t.suggest:.2f} / {t.margin:.2f} | "
            f"{t.answered_right:.1%} | "
            f"{precision} | {t.oos_answered:.1%} | {t.oos_fallback:.1%} |")


def tune_retriever(
        ctx: typer.Context,
        faq: Annotated[Path | None, typer.Option(help="FAQ file (default: retrieval.faq_path).")
                       ] = None,
        output: Annotated[Path, typer.Option("--out", "-o", help="Folder for the tuned "
                                             "embedder, its report and settings.yaml.")
                          ] = Path("retrievers/latest"),
        epochs: Annotated[int, typer.Option(help="Passes over the phrasings.")] = 3,
        positives: Annotated[int, typer.Option(help="Pairs per phrasing and epoch.")] = 3,
        batch_size: Annotated[int, typer.Option(help="Pairs per step (distinct entries).")] = 32,
        learning_rate: Annotated[float, typer.Option("--lr", help="Peak learning rate.")] = 3e-5,
        holdout: Annotated[float, typer.Option(help="Share of each entry's phrasings kept out "
                                               "to calibrate the thresholds.")] = 0.2,
        with_answers: Annotated[bool, typer.Option(help="Also pair phrasings with their "
                                                   "entry's answer.")] = False,
        max_steps: Annotated[int, typer.Option(help="Stop after this many steps (0: no cap; "
                                               "about 1 s a step on 2 cores).")] = 400,
        seed: Annotated[int, typer.Option(help="Seeds the split, pairs and order.")] = 0,
        target_precision: Annotated[float, typer.Option(
            min=0.5, max=1.0, help="Direct answers must be right this often on the held-out "
            "phrasings.")] = 0.95,
        oos_share: Annotated[float, typer.Option(
            min=0.0, max=0.9, help="Share of questions the FAQ does not cover, assumed when "
            "calibrating precision.")] = 0.2,
        oos: Annotated[Path | None, typer.Option(
            help="Questions your FAQ does not cover, one per line (# comments), to calibrate "
            "on; default: 100 generic ones bundled (CLINC150's out-of-scope training set).")
                       ] = None) -> None:
    """Fine-tune the embedder on the FAQ's phrasings (contrastive), then calibrate the answer and
    suggest thresholds on phrasings it did not see, for the plain and the tuned embedder."""
    with user_errors():
        settings = settings_of(ctx)
        from bot.runtime import outside_questions, torch_threads
        from retrieval.corpus import load_faq
        from retrieval.embedder import SentenceTransformerEmbedder
        from retrieval.offline.tune import TuneConfig, TuneError, tune_embedder, write_tuning_file

        quiet_transformers()
        torch_threads(0)()  # tuning is the only work: all cores
        from retrieval.offline.calibrate import best_scoring
        from retrieval.outside import read_questions

        faq_path = faq or settings.retrieval.faq_path
        entries = load_faq(faq_path)
        outside = read_questions(oos)
        learnt = outside_questions(settings)
        config = TuneConfig(epochs=epochs, batch_size=batch_size, learning_rate=learning_rate,
                            holdout=holdout, with_answers=with_answers, positives=positives,
                            max_steps=max_steps or None,
                            seed=seed)
        base = settings.retrieval.embedder
        with _steps("tuning the embedder") as (start, step):
            result = tune_embedder(entries, base, output, config, on_step=step, on_start=start)
        err.print(f"tuned {result.steps} steps in {result.seconds:.0f} s; loss "
                  f"{result.losses[0]:.3f} -> {result.losses[-1]:.3f}")
        if not result.split.held_out:
            raise TuneError("no phrasings were held out to calibrate on (--holdout 0, or no "
                            "entry has 3 phrasings): the thresholds cannot be measured")
        calibrated: dict[str, Any] = {}
        for name, model in (("plain", base), ("tuned", str(output))):
            err.print(f"[dim]calibrating the {name} embedder on "
                      f"{len(result.split.held_out)} held-out phrasings[/]")
            calibrated[name] = _calibrations(entries, result.split,
                                             SentenceTransformerEmbedder(model),
                                             target_precision, oos_share, outside, learnt,
                                             settings.retrieval.lexical)
        # Each embedder's best scoring and its thresholds, as settings: the tuned one's is
        # recommended, the plain one's shows what calibration alone gives (bench/).
        best = {name: {"scoring": best_scoring(by), **by[best_scoring(by)].settings()}
                for name, by in calibrated.items()}
        scoring = best["tuned"]["scoring"]
        chosen = calibrated["tuned"][scoring]
        report = {"faq": str(faq_path), "target_precision": target_precision,
                  "oos_questions": str(oos) if oos else "bundled", "oos_count": len(outside),
                  "oos_share": oos_share, "recommended": {"scoring": scoring, **chosen.to_dict()},
                  "settings": best,
                  "calibration": {name: {s: t.to_dict() for s, t in by.items()}
                                  for name, by in calibrated.items()}}
        write_tuning_file(result, base, entries, config, report)
        try:
            _plot_losses(result.losses, output / "loss.png")
            (output / SETTINGS_FILE).write_text(_settings_yaml(output, best["tuned"]),
                                                encoding="utf-8")
        except OSError as exc:
            raise TuneError(f"cannot write into {output}: {exc}") from exc
    out.print(f"Held-out phrasings ({len(result.split.held_out)}), thresholds calibrated for "
              f">= {target_precision:.0%} precision with {oos_share:.0%} out-of-scope traffic:\n")
    out.print("| embedder, scoring | answer / suggest / margin | answered right | precision | "
              "out of scope answered | out of scope to fallback |", markup=False)
    out.print("|---|---|---|---|---|---|", markup=False)
    for name, by in calibrated.items():
        for s, t in by.items():
            out.print(_row(f"{name}, {s}", t), markup=False)
    out.print(f"\nWrote the tuned embedder, loss.png and {SETTINGS_FILE} to "
              f"{escape(str(output))}. Use it with these settings (supportbot.yaml):\n")
    out.print(_settings_yaml(output, best["tuned"]), markup=False)
