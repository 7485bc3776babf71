"""A sweep's results side by side: a Markdown and CSV table and a plot of accuracy against
the swept value. Written when a multirun ends (gru_lightning.sweep) and on demand:

    python -m gru_lightning.report outputs/multirun/2026-11-24/15-40-00
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from gru_lightning.metrics import final_metric_keys


def figures() -> dict[str, str]:
    """Columns of the final figures, which follow metrics.METRICS: val/acc_best ->
    val_acc_best, test/f1 -> test_f1."""
    return {key.replace("/", "_"): key for key in final_metric_keys()}


def columns() -> tuple[str, ...]:
    return ("job", "overrides", "params", *figures(), "seconds_per_epoch", "status", "error")


def _job_dirs(sweep_dir: Path) -> list[Path]:
    jobs = [p.parent.parent for p in sweep_dir.glob("*/.hydra/overrides.yaml")]
    return sorted(jobs, key=lambda p: int(p.name.split("_", 1)[0]) if p.name[0].isdigit() else 0)


def _swept_keys(overrides: list[dict[str, str]]) -> list[str]:
    """Override keys whose value differs between jobs: what the sweep varied."""
    keys = sorted({k for o in overrides for k in o})
    return [k for k in keys if len({o.get(k) for o in overrides}) > 1]


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    """One row per job folder of the sweep, in job order."""
    jobs = _job_dirs(Path(sweep_dir))
    overrides = []
    for job in jobs:
        lines = OmegaConf.load(job / ".hydra" / "overrides.yaml")
        # A deletion (~callbacks.progress_bar) has no "=" and no value.
        overrides.append({key: value for key, _, value in (line.partition("=")
                                                           for line in lines)})
    swept = _swept_keys(overrides) or sorted({k for o in overrides for k in o})
    rows = []
    for job, override in zip(jobs, overrides, strict=True):
        metrics_file = job / "metrics.json"
        metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
        rows.append({
            "job": job.name,
            "overrides": " ".join(f"{k}={override[k]}" if override[k] else k
                                  for k in swept if k in override),
            "swept": {k: override.get(k) for k in swept},
            "params": metrics.get("params"),
            **{column: metrics.get(key) for column, key in figures().items()},
            "seconds_per_epoch": metrics.get("seconds_per_epoch"),
            # No metrics.json: the job was killed, or is still running.
            "status": metrics.get("status", "incomplete"),
            "error": metrics.get("error", ""),
        })
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}" if value < 1 else f"{value:.1f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _plot(rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "completed"]
    keys = list(rows[0]["swept"]) if rows else []
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    numeric = len(keys) == 1 and all(_is_number(r["swept"][keys[0]]) for r in done)
    if numeric:
        x = [float(r["swept"][keys[0]]) for r in done]
        ax.set_xlabel(keys[0])
        if x and min(x) > 0 and max(x) / min(x) >= 8:
            ax.set_xscale("log", base=2)
        ax.set_xticks(x, [r["swept"][keys[0]] for r in done])
    else:
        x = list(range(len(done)))
        many = len(done) > 8  # too many to name on the axis: job numbers, as in the table
        labels = [r["job"].split("_", 1)[0] if many else r["overrides"] or r["job"]
                  for r in done]
        if many:
            ax.set_xlabel("job")
        ax.set_xticks(x, labels, rotation=0 if many else 30, ha="center" if many else "right")
    for key, label, marker in (("val_acc_best", "best val accuracy", "o"),
                               ("test_acc", "test accuracy", "s")):
        points = [(xi, r[key]) for xi, r in zip(x, done, strict=True) if r[key] is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker=marker, label=label)
    failed = [r["job"] for r in rows if r["status"] != "completed"]
    title = "accuracy per job" + (f" ({len(failed)} failed: {', '.join(failed)})" if failed else "")
    ax.set_title(title, fontsize=10)
    ax.set_ylabel("accuracy")
    ax.grid(alpha=0.3)
    if done:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def write_report(sweep_dir: str | Path) -> dict[str, Path]:
    """Write report.md, report.csv and report.png into the sweep folder."""
    sweep_dir = Path(sweep_dir)
    if not sweep_dir.is_dir():
        raise FileNotFoundError(f"sweep folder {str(sweep_dir)!r} does not exist")
    rows = collect(sweep_dir)
    if not rows:
        raise ValueError(f"{str(sweep_dir)!r} holds no Hydra job folders (*/.hydra/)")
    paths = {ext: sweep_dir / f"report.{ext}" for ext in ("md", "csv", "png")}
    with paths["csv"].open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=columns(), extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    header = columns()
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(r[c]) for c in header) + " |" for r in rows]
    completed = sum(r["status"] == "completed" for r in rows)
    lines += ["", f"{completed} of {len(rows)} jobs completed. ![plot](report.png)"]
    paths["md"].write_text(f"# Sweep {sweep_dir}\n\n" + "\n".join(lines) + "\n")
    _plot(rows, paths["png"])
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1:
        print("usage: python -m gru_lightning.report SWEEP_FOLDER", file=sys.stderr)
        return 2
    try:
        paths = write_report(argv[0])
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(paths["md"].read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
