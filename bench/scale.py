"""Memory and time against the data's size: IMDB's labeled reviews repeated to N rows.

    python bench/scale.py --imdb ../shared/data/imdb --rows 25000 200000 [1000000] [--ngram]

For each N, one parquet file of N rows (IMDB's 50,000 labeled reviews, repeated in turn;
row groups of 100,000 rows),
trained with `data=files` and the notebook's data settings (100 tokens, 10,000 words, 1,000
validation texts; a seeded 20% test hold-out) for 200 training steps, no validation and no
test, from an empty cache, in a process of its own under `/usr/bin/time -v`; with --ngram
also with `ngram=nbsvm`. Reports the peak RSS (of the largest process), the wall time, the
preparation (read and tokenize) and the n-gram stage from the run's log, and the 200 steps'
seconds from its metrics.json. `--trainer ddp_cpu` runs each on two processes (each rank
maps the same ids file and trains on its shard). Writes bench/results/scale[-TRAINER].{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "bench" / "results"
STEPS = 200
ROW_GROUP = 100_000


def write_rows(imdb: Path, rows: int, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(f, columns=["text", "label"]) for f in
              sorted(imdb.glob("train*.parquet")) + sorted(imdb.glob("test*.parquet"))]
    labeled = pa.concat_tables(tables)
    repeats = -(-rows // len(labeled))
    # Row groups of 100,000 rows: datasets' parquet reader (a pyarrow dataset scan) decodes a
    # whole row group at once, and pyarrow's default group is a million rows.
    pq.write_table(pa.concat_tables([labeled] * repeats).slice(0, rows), path,
                   row_group_size=ROW_GROUP)


def run(data: Path, work: Path, ngram: bool, trainer: str) -> dict:
    command = ["/usr/bin/time", "-v", sys.executable, str(ROOT / "train.py"), "data=files",
               f"data.train_file={data}", "data.maxlen=100", "data.max_features=10000",
               "data.val_size=1000", "model.class_weights=null", f"+trainer.max_steps={STEPS}",
               "trainer.max_epochs=-1", "+trainer.limit_val_batches=0", "test=false",
               "callbacks.early_stopping=null", "callbacks.progress_bar=null",
               "+trainer.enable_progress_bar=false", f"paths.output_dir={work / 'run'}",
               f"paths.cache_dir={work / 'cache'}", f"trainer={trainer}",
               *(["ngram=nbsvm"] if ngram else [])]
    # datasets' Arrow copy of the file goes with the temporary folder.
    env = {**os.environ, "HF_DATASETS_CACHE": str(work / "hf")}
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, env=env)
    log = result.stdout + result.stderr
    if result.returncode:
        raise SystemExit(f"the run failed:\n{log[-3000:]}")

    def seconds(pattern: str) -> float | None:
        match = re.search(pattern, log)
        return float(match.group(1)) if match else None

    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", log).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", log).group(1)
    parts = [float(p) for p in wall.split(":")]
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    return {"peak_rss_gb": rss_kb / 2**20,
            "wall_s": sum(p * 60**i for i, p in enumerate(reversed(parts))),
            "prepare_s": seconds(r"Tokenized .* in ([\d.]+) s"),
            "ngram_s": seconds(r"n-gram model alone: .*\(([\d.]+) s, the stage in all\)"),
            "steps_s": metrics.get("fit_seconds")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--imdb", type=Path, default=ROOT.parent / "shared/data/imdb")
    parser.add_argument("--rows", type=int, nargs="+", default=[25_000, 200_000])
    parser.add_argument("--ngram", action="store_true", help="also with ngram=nbsvm")
    parser.add_argument("--trainer", default="cpu", help="the trainer config (cpu, ddp_cpu)")
    args = parser.parse_args()
    rows = []
    for n in args.rows:
        for ngram in (False, True) if args.ngram else (False,):
            with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
                data = Path(tmp) / "reviews.parquet"
                write_rows(args.imdb, n, data)
                row = {"rows": n, "ngram": ngram, "trainer": args.trainer,
                       **run(data, Path(tmp), ngram, args.trainer)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "scale" if args.trainer == "cpu" else f"scale-{args.trainer}"
    (RESULTS / f"{name}.json").write_text(json.dumps(rows, indent=1))
    lines = ["| rows | ngram=nbsvm | peak RSS GB | wall s | preparation s | preparation us/row "
             f"| {STEPS} steps s | n-gram stage s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ngram_s = f"{r['ngram_s']:.0f}" if r["ngram_s"] is not None else "-"
        # Under ddp_spawn the ranks fit; the main process's Timer counts nothing.
        steps = f"{r['steps_s']:.1f}" if r["steps_s"] else "-"
        lines.append(f"| {r['rows']:,} | {'yes' if r['ngram'] else 'no'} | "
                     f"{r['peak_rss_gb']:.2f} | {r['wall_s']:.0f} | {r['prepare_s'] or 0:.1f} | "
                     f"{1e6 * (r['prepare_s'] or 0) / r['rows']:.0f} | "
                     f"{steps} | {ngram_s} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
