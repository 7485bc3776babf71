"""Peak memory of `python train.py` with and without `callbacks.trim_memory`, alternating.

    python bench/memory.py data.local_path=../shared/data/imdb experiment=keras_seed
    python bench/memory.py data.local_path=../shared/data/imdb experiment=keras_seed --repeats 3

Each side runs `python train.py <overrides> trainer.max_epochs=1` (1 epoch + test, cached
tokens: run it once before) as a subprocess; its peak RSS comes from `os.wait4` (in a small
process of its own, see PEAK_RSS_OF), its seconds
per epoch and test accuracy from its `metrics.json`. The sides alternate, REPEATS times;
medians in bench/results/memory.{md,json}.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SIDES = {"without trim_memory": ["callbacks.trim_memory=null"], "with trim_memory (default)": []}


# A child's ru_maxrss starts from its parent's RSS at the fork (Linux keeps the larger over
# the exec): from a benchmark process holding 1.4 GB every run would report 1.4 GB. A small
# Python process of its own starts the run, and reports its child's figure alone.
PEAK_RSS_OF = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:], "
               "stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); "
               "_, status, usage = os.wait4(p.pid, 0); "
               "print(usage.ru_maxrss, os.waitstatus_to_exitcode(status))")


def train_run(overrides: list[str], output_dir: str) -> dict[str, float]:
    """`python train.py <overrides>` for 1 epoch + test in a subprocess: its peak RSS (the
    kernel's account, `wait4`), seconds per epoch and test accuracy."""
    command = [sys.executable, "train.py", *overrides, "trainer.max_epochs=1",
               f"hydra.run.dir={output_dir}", "callbacks.progress_bar=null"]
    result = subprocess.run([sys.executable, "-c", PEAK_RSS_OF, *command], cwd=ROOT,
                            capture_output=True, text=True, check=True)
    max_rss_kib, status = (int(v) for v in result.stdout.split())
    if status:
        raise SystemExit(f"{' '.join(command)} failed (exit status {status})")
    metrics = json.loads((Path(output_dir) / "metrics.json").read_text())
    return {"peak_rss_mb": max_rss_kib / 1024, "epoch_s": metrics["seconds_per_epoch"],
            "test_acc": metrics["test/acc"]}


def main(argv: list[str]) -> None:
    repeats = int(argv[argv.index("--repeats") + 1]) if "--repeats" in argv else 3
    overrides = [a for i, a in enumerate(argv)
                 if a != "--repeats" and (i == 0 or argv[i - 1] != "--repeats")]
    runs: dict[str, list[dict[str, float]]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory() as scratch:
        for repeat in range(repeats):
            for side, extra in SIDES.items():
                output_dir = f"{scratch}/{side.split()[0]}-{repeat}"
                runs[side].append(train_run([*overrides, *extra], output_dir))
                print(side, runs[side][-1], flush=True)
    command = "python bench/memory.py " + " ".join(argv)
    lines = [f"`{command}`", "", f"1 epoch + test, {repeats} alternating repeats per side; "
             "medians (all repeats in brackets)", "",
             "| | peak RSS MB | s per epoch | test acc |", "|---|---|---|---|"]
    for side, results in runs.items():
        cells = []
        for key, form in (("peak_rss_mb", "{:,.0f}"), ("epoch_s", "{:.2f}"),
                          ("test_acc", "{:.4f}")):
            values = [r[key] for r in results]
            cells.append(form.format(statistics.median(values)) + " ("
                         + ", ".join(form.format(v) for v in values) + ")")
        lines.append(f"| {side} | " + " | ".join(cells) + " |")
    table = "\n".join(lines) + "\n"
    print(table)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "memory.md").write_text(table)
    (RESULTS / "memory.json").write_text(json.dumps({"command": command, "runs": runs},
                                                    indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
