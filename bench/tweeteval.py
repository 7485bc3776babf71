"""TweetEval end to end: train each task with one command, score it with the official metric.

    python bench/tweeteval.py --data ../shared/data/tweeteval --out outputs/tweeteval \
        [--tasks emotion hate ...] [--split val|test|both] -- experiment=own_data [overrides]

Each task (stance: one model for its five targets, each tweet followed by a word naming its
target, which the n-gram model joins to every n-gram: `ngram.model.group_by_last_word=true`,
so the overrides need `ngram=nbsvm`, as experiment=own_data has; `--stance per-target`: one
model per target, the five pooled for the metric) runs
`python train.py data=lines data.dir=<task> <overrides>` in a process of its own from an
empty cache, timed end to end; its best checkpoint is then scored on the `val` split (to
choose settings by; with ngram.validation_folds, by the stack's cross-fitted scores, as
training scores val) and, with --split test or both, on `test` (to report, once). The
official metrics (the benchmark's README): macro F1; irony: F1 of the ironic class; stance:
the mean of the F1 of `against` and `favor`. Writes `<out>/results.json` and prints a table.

    python bench/tweeteval.py --unlabeled outputs/tweeteval_unlabeled.txt

writes the file of unlabeled tweets the recommended command trains its word vectors on: the
training tweets of all six tasks, less any tweet that is also a val or test tweet of any task
(so no text scored later is seen before, even unlabeled).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gru_lightning.data.lines import SPLITS, LinesSource  # noqa: E402
from gru_lightning.evaluate import report, scored  # noqa: E402
from gru_lightning.predict import Predictor  # noqa: E402
from gru_lightning.textfiles import read_lines  # noqa: E402

TASKS = ("emoji", "emotion", "hate", "irony", "offensive", "stance")
STANCE_TARGETS = ("abortion", "atheism", "climate", "feminist", "hillary")
PUBLISHED = {  # the benchmark's leaderboard (test, %): its README
    "SVM": (29.3, 64.7, 36.7, 61.7, 52.3, 67.3),
    "LSTM": (24.7, 66.0, 52.6, 62.8, 71.7, 59.4),
    "FastText": (25.8, 65.2, 50.6, 63.1, 73.4, 65.4),
    "RoBERTa-base": (30.9, 76.1, 46.6, 59.7, 79.5, 68.0),
}


def official(task: str, result: dict) -> float:
    """The task's official metric from an `evaluate.report`."""
    classes = result["classes"]
    if task == "irony":
        return classes["irony"]["f1"]
    if task == "stance":
        return (classes["against"]["f1"] + classes["favor"]["f1"]) / 2
    return result["macro_f1"]


def train_one(folder: Path, out: Path, overrides: list[str]) -> tuple[Path, float]:
    """Train on a TweetEval folder from an empty cache; the best checkpoint and the seconds."""
    shutil.rmtree(out, ignore_errors=True)  # an empty cache, and no other run's checkpoints
    start = time.perf_counter()
    command = [sys.executable, str(ROOT / "train.py"), "data=lines", f"data.dir={folder}",
               f"data.mapping={_mapping(folder)}",  # stance's targets share one
               f"paths.output_dir={out}", f"paths.cache_dir={out / 'cache'}",
               "callbacks.progress_bar=null", "+trainer.enable_progress_bar=false", *overrides]
    with (out.parent / f"{out.name}.log").open("w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
    seconds = time.perf_counter() - start
    best = [p for p in (out / "checkpoints").glob("*.ckpt")
            if p.stem not in ("last", "interrupted")]
    return (best[0] if best else out / "checkpoints" / "last.ckpt"), seconds


def predictions(checkpoint: Path, folder: Path, split: str) -> tuple[torch.Tensor, ...]:
    """The checkpoint's predicted and true class ids on a split, and its class names."""
    source = LinesSource(train_texts=str(folder / f"{split}_text.txt"),
                         train_labels=str(folder / f"{split}_labels.txt"),
                         mapping=str(_mapping(folder)), test_size=None)
    classifier = Predictor.from_checkpoint(checkpoint, "cpu")
    texts, truth, predicted, _ = scored(classifier, source)
    stack = classifier.stack
    if split == "val" and stack is not None and stack.validation_folds:
        # The stack's weights were fitted on these tweets: score each, as training did, by
        # weights fitted on the other folds (ngram.validation_folds), not in sample.
        with torch.inference_mode():
            net_logits = classifier.network(classifier.encoder.encode(texts))
        logits = stack.cross_fitted_logits(net_logits, stack.model.scores(texts),
                                           truth.float() if classifier.binary else truth)
        predicted = (logits > 0).long() if classifier.binary else logits.argmax(1)
    return predicted, truth, classifier.class_names


def _mapping(folder: Path) -> Path:
    return folder / "mapping.txt" if (folder / "mapping.txt").exists() else (
        folder.parent / "mapping.txt")


def pool_stance(data: Path, folder: Path) -> Path:
    """The five stance targets as one data set in `folder`: each tweet followed by a word
    naming its target (at the end, which `truncating: pre` keeps), so one model learns from
    all 2,620 training tweets and is chosen on all 294 val tweets, not 40-69 per target."""
    folder.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        texts, labels = [], []
        for target in STANCE_TARGETS:
            source = data / "stance" / target
            tweets = read_lines(source / f"{split}_text.txt")
            texts += [f"{tweet} target_{target}" for tweet in tweets]
            labels += read_lines(source / f"{split}_labels.txt")
        (folder / f"{split}_text.txt").write_text("\n".join(texts) + "\n", encoding="utf-8")
        (folder / f"{split}_labels.txt").write_text("\n".join(labels) + "\n",
                                                    encoding="utf-8")
    shutil.copy(data / "stance" / "mapping.txt", folder / "mapping.txt")
    return folder


def run_task(task: str, data: Path, out: Path, overrides: list[str],
             splits: list[str], pooled_stance: bool = False) -> dict:
    if task == "stance" and pooled_stance:
        folders = [pool_stance(data, out / "stance-pooled-data")]
        # Each target's own n-gram weights beside the shared ones; after --, false undoes it.
        overrides = ["ngram.model.group_by_last_word=true", *overrides]
    elif task == "stance":
        folders = [data / "stance" / t for t in STANCE_TARGETS]
    else:
        folders = [data / task]
    pooled = {split: ([], []) for split in splits}
    seconds, names = 0.0, None
    for folder in folders:
        name = task if task != "stance" else f"stance-{folder.name}"
        checkpoint, took = train_one(folder, out / name, overrides)
        seconds += took
        for split in splits:
            predicted, truth, names = predictions(checkpoint, folder, split)
            pooled[split][0].append(predicted)
            pooled[split][1].append(truth)
    row = {"task": task, "seconds": seconds}
    for split in splits:
        result = report(torch.cat(pooled[split][0]), torch.cat(pooled[split][1]), names)
        row[split] = official(task, result)
        row[f"{split}_report"] = result
    return row


def write_unlabeled(data: Path, path: Path) -> None:
    def lines(file: Path) -> list[str]:
        return [line for line in file.read_text(encoding="utf-8").split("\n") if line.strip()]

    held = {line.strip() for pattern in ("*/val_text.txt", "*/test_text.txt",
                                         "stance/*/val_text.txt", "stance/*/test_text.txt")
            for file in data.glob(pattern) for line in lines(file)}
    train = [line for pattern in ("*/train_text.txt", "stance/*/train_text.txt")
             for file in sorted(data.glob(pattern)) for line in lines(file)]
    kept = [line for line in train if line.strip() not in held]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(kept) + "\n", encoding="utf-8")
    print(f"{path}: {len(kept)} training tweets ({len(train) - len(kept)} left out: also a "
          "val or test tweet)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared/data/tweeteval")
    parser.add_argument("--out", type=Path, default=ROOT / "outputs" / "tweeteval")
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--split", choices=("val", "test", "both"), default="val")
    parser.add_argument("--unlabeled", type=Path, help="write the unlabeled tweets there, exit")
    parser.add_argument("--stance", choices=("pooled", "per-target"), default="pooled",
                        help="one stance model for the five targets (pool_stance; chosen on "
                        "val, docs/experiments.md) or one per target")
    parser.add_argument("overrides", nargs="*", help="train.py overrides, after --")
    args = parser.parse_args()
    if args.unlabeled:
        write_unlabeled(args.data, args.unlabeled)
        return
    splits = ["val", "test"] if args.split == "both" else [args.split]
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for task in args.tasks:
        row = run_task(task, args.data.resolve(), args.out.resolve(), args.overrides, splits,
                       args.stance == "pooled")
        rows.append(row)
        shown = ", ".join(f"{s} {100 * row[s]:.1f}" for s in splits)
        print(f"{task}: {shown} ({row['seconds']:.0f} s end to end)", flush=True)
    (args.out / "results.json").write_text(json.dumps(
        {"overrides": args.overrides, "splits": splits, "rows": rows}, indent=1))
    header = "| task | " + " | ".join(splits) + " | minutes |"
    lines = [header, "|---" * (len(splits) + 2) + "|"]
    for row in rows:
        lines.append(f"| {row['task']} | " + " | ".join(f"{100 * row[s]:.1f}" for s in splits)
                     + f" | {row['seconds'] / 60:.1f} |")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
