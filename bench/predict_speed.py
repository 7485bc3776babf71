"""Predict the 25k IMDB test reviews through the command line and compare with the run's
own `trainer.test` accuracy; report reviews/s.

    python bench/predict_speed.py outputs/<date>/<time> ../shared/data/imdb/test.parquet

Uses the checkpoint `trainer.test` used: the best one, or last.ckpt with test_weights=last.
Writes bench/results/predict_speed.{json,md}.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

RESULTS = Path(__file__).resolve().parent / "results"


def predict_command(run_dir: str, test_parquet: str) -> dict[str, Any]:
    """The prediction command over the test reviews (JSON lines in, JSON lines out), timed
    whole: start-up, reading, tokenizing, the model, writing."""
    run = Path(run_dir)
    # The weights trainer.test used: the best checkpoint, or last.ckpt with test_weights=last.
    config = yaml.safe_load((run / "config.yaml").read_text())
    if config.get("test_weights") == "last":
        best = [run / "checkpoints" / "last.ckpt"]
    else:
        best = [p for p in (run / "checkpoints").glob("*.ckpt")
                if p.name not in ("last.ckpt", "interrupted.ckpt")]
    if len(best) != 1 or not best[0].is_file():
        sys.exit(f"expected one best checkpoint in {run / 'checkpoints'}, found {len(best)}")
    table = pq.read_table(test_parquet, columns=["text", "label"]).to_pylist()
    with tempfile.TemporaryDirectory() as tmp:
        reviews = Path(tmp) / "test.jsonl"
        reviews.write_text("".join(json.dumps({"text": r["text"]}) + "\n" for r in table))
        start = time.perf_counter()
        result = subprocess.run(
            [sys.executable, "-m", "gru_lightning.predict", str(best[0]), "--file",
             str(reviews), "--jsonl"], capture_output=True, text=True, check=True)
        seconds = time.perf_counter() - start  # the whole command: start-up and reading too
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    correct = sum(row["label"] == ("pos" if r["label"] else "neg")
                  for row, r in zip(rows, table, strict=True))
    return {
        "checkpoint": str(best[0]), "reviews": len(rows), "seconds": seconds,
        "reviews_per_s": len(rows) / seconds, "command_accuracy": correct / len(rows),
        "trainer_test_accuracy": json.loads((run / "metrics.json").read_text())["test/acc"],
    }


def main(run_dir: str, test_parquet: str) -> None:
    report = predict_command(run_dir, test_parquet)
    rows = report["reviews"]
    seconds = report["seconds"]
    lines = [
        f"`python bench/predict_speed.py {run_dir} {test_parquet}`", "",
        "| reviews | command s | reviews/s | command accuracy | trainer.test accuracy |",
        "|---|---|---|---|---|",
        f"| {rows:,} | {seconds:.1f} | {report['reviews_per_s']:,.0f} | "
        f"{report['command_accuracy']:.4f} | {report['trainer_test_accuracy']:.4f} |",
    ]
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "predict_speed.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / "predict_speed.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
