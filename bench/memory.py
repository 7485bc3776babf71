"""Peak memory of `python train.py` with and without `callbacks.trim_memory`, alternating.

    python bench/memory.py data.local_path=../shared/data/imdb experiment=keras_seed
    python bench/memory.py data.local_path=../shared/data/imdb experiment=keras_seed --repeats 3

Each side runs `python train.py <overrides> trainer.max_epochs=1` (1 epoch + test, cached
tokens: run it once before) as a subprocess; its peak RSS comes from `os.wait4`, its seconds
per epoch and test accuracy from its `metrics.json`. The sides alternate, REPEATS times;
medians in bench/results/memory.{md,json}.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
SIDES = {"without trim_memory": ["callbacks.trim_memory=null"], "with trim_memory (default)": []}


def train_run(overrides: list[str], output_dir: str) -> dict[str, float]:
    """`python train.py <overrides>` for 1 epoch + test in a subprocess: its peak RSS (the
    kernel's account, `wait4`), seconds per epoch and test accuracy."""
    command = [sys.executable, "train.py", *overrides, "trainer.max_epochs=1",
               f"hydra.run.dir={output_dir}", "callbacks.progress_bar=null"]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    if status:
        raise SystemExit(f"{' '.join(command)} failed (status {status})")
    metrics = json.loads((Path(output_dir) / "metrics.json").read_text())
    return {"peak_rss_mb": usage.ru_maxrss / 1024, "epoch_s": metrics["seconds_per_epoch"],
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
