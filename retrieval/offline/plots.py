"""PNG plots of a retrieval evaluation: top-score histograms and the threshold sweep (Agg)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from retrieval.offline.evaluate import Evaluation


def write_plots(evaluation: Evaluation, out_dir: Path) -> list[Path]:
    """scores.png (top score per query: in scope right / wrong, out of scope) and sweep.png."""
    from matplotlib.figure import Figure  # no pyplot: no global state, no GUI backend

    report, rows = evaluation.report, evaluation.rows
    answer_t, suggest_t = report["threshold"], report["suggest_threshold"]
    groups = {
        "in scope, top entry right": [r.scores[0] for r in rows if r.gold and r.scores
                                      and r.right],
        "in scope, top entry wrong": [r.scores[0] for r in rows if r.gold and r.scores
                                      and not r.right],
        "out of scope": [r.scores[0] for r in rows if r.gold is None and r.scores]}
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    bins = [i / 50 for i in range(51)]
    for label, scores in groups.items():
        if scores:
            ax.hist(scores, bins=bins, alpha=0.55, label=f"{label} ({len(scores)})",
                    density=True)
    for value, name in ((answer_t, "answer"), (suggest_t, "suggest")):
        ax.axvline(value, color="black", linestyle="--", linewidth=1)
        ax.text(value, 0.97, f" {name}", va="top", transform=ax.get_xaxis_transform())
    ax.set_xlabel("cosine score of the top FAQ entry")
    ax.set_ylabel("density")
    ax.set_title(f"Top scores ({report['embedder']}, {report['entries']} entries)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    scores_png = out_dir / "scores.png"
    fig.savefig(scores_png, dpi=110)

    points = report["sweep"]
    fig = Figure(figsize=(8, 4.5))
    ax = fig.subplots()
    x = [p["threshold"] for p in points]
    for key, label in (("answered_right", "in scope answered right"),
                       ("answer_precision", "answer precision"),
                       ("in_scope_accuracy", "in-scope accuracy"),
                       ("oos_recall", "OOS recall (not answered)"), ("oos_f1", "OOS F1")):
        y = [p[key] for p in points]
        if any(v is not None for v in y):
            ax.plot(x, [float("nan") if v is None else v for v in y], label=label)
    ax.axvline(answer_t, color="black", linestyle="--", linewidth=1)
    for name, chosen in report["operating_points"].items():
        if chosen["point"] is not None:
            ax.axvline(chosen["point"]["threshold"], color="grey", linestyle=":", linewidth=1)
            ax.text(chosen["point"]["threshold"], 0.02, f" {name}", rotation=90, fontsize=7,
                    transform=ax.get_xaxis_transform())
    ax.set_xlabel("answer threshold")
    ax.set_ylim(0, 1.02)
    ax.set_title("Answer-threshold sweep (dashed: configured)")
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    sweep_png = out_dir / "sweep.png"
    fig.savefig(sweep_png, dpi=110)
    return [scores_png, sweep_png]
