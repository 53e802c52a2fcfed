"""The training report as files: ``report.json``, PR curves and confusion matrix as PNG."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(report: dict[str, Any], directory: Path) -> list[Path]:
    """Write the report and its plots into ``directory``; returns the files written."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers and in CI
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    written = []
    path = directory / "report.json"
    path.write_text(json.dumps(report, indent=1, allow_nan=False, default=str))
    written.append(path)

    fig, ax = plt.subplots(figsize=(6, 5), dpi=100)
    for name, r in report["per_class"].items():
        curve = r["pr_curve"]
        auc = "n/a" if r["auc"] is None else r["auc"]
        ax.plot(curve["recall"], curve["precision"], label=f"{name} (AUC {auc})")
        if r["precision"] is not None and r["recall"] is not None:
            ax.scatter([r["recall"]], [r["precision"]], marker="o")
    target = report.get("target_precision")
    if target:
        ax.axhline(target, color="grey", linestyle="--", linewidth=1, label=f"target {target}")
    ax.set_xlabel("recall (validation clips)")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1.02)
    ax.set_ylim(0, 1.02)
    ax.set_title("Precision-recall, group-held-out validation")
    ax.legend(loc="lower left")
    fig.tight_layout()
    path = directory / "pr_curve.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)

    labels = report["confusion"]["labels"]
    matrix = report["confusion"]["matrix"]
    fig, ax = plt.subplots(figsize=(5, 4.5), dpi=100)
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    peak = max(max(row) for row in matrix) or 1
    for i, row in enumerate(matrix):
        for j, n in enumerate(row):
            ax.text(
                j, i, str(n), ha="center", va="center", color="white" if n > peak / 2 else "black"
            )
    ax.set_title("Confusion at the calibrated thresholds")
    fig.tight_layout()
    path = directory / "confusion.png"
    fig.savefig(path)
    plt.close(fig)
    written.append(path)
    return written
