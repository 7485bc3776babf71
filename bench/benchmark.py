"""Speed of this project against a hand-written PyTorch loop and the Keras notebook, in one
run on one machine.

    python bench/benchmark.py data.local_path=../shared/data/imdb experiment=keras_seed
    python bench/benchmark.py data.local_path=../shared/data/imdb --scaling   # + scaling table

Any `train.py` override works. Reports, for that config:
- data preparation: cold (read and tokenize the 50,000 reviews into an empty cache) and
  cached (load the cache);
- one epoch of exactly what `python train.py` runs (its callbacks, logger, metrics,
  validation) against a plain hand-written loop of the same model (PyTorch's nn.GRU and
  default Adam, `randperm` slices of the same tensors, then the same validation), the same
  hand loop with the project's fused GRU kernel (the difference to the project is what
  Lightning and the project's callbacks cost), and, where TensorFlow is installed
  (`pip install -e ".[keras]"`), the Keras notebook's model on the same token ids
  (bench/keras_notebook.py, its own process, its second epoch: the first one includes
  TensorFlow's tracing); alternating, best of REPEATS each;
- inference texts/s: text to probability through `Predictor`, and ids to probability
  through the network alone;
- `python train.py <overrides> trainer.max_epochs=1` as a user runs it: its peak RSS, then
  the prediction command (`python -m gru_lightning.predict`) on its checkpoint over the
  test reviews, start-up included;
- the speed and memory targets against these figures;
- with --scaling, training samples/s against batch size, hidden size and maxlen.
Writes bench/results/benchmark-<experiment>.{json,md}.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from hydra.utils import instantiate
from memory import train_run
from omegaconf import DictConfig
from predict_speed import predict_command

from gru_lightning import train as entry
from gru_lightning.data import TextDataModule
from gru_lightning.model import TextClassifier
from gru_lightning.networks import RNN
from gru_lightning.predict import Predictor
from gru_lightning.preprocessing import TextEncoder
from gru_lightning.runtime.fused_gru import available_extension
from gru_lightning.runtime.kernels import word_ids_kernel

BENCH = Path(__file__).resolve().parent
RESULTS = BENCH / "results"
REPEATS = 3  # every side
SHARE_REPEATS = 6  # the two sides of Lightning's share (~10 s each), in ABBA order
KERAS_EPOCHS = 2  # the second one is timed: the first includes TensorFlow's tracing


def bench_config(overrides: list[str], output_dir: str) -> DictConfig:
    cwd = Path.cwd()
    # On the CPU: the hand loops and inference share the splits with the project's side,
    # which an accelerator would move (bash bench/gpu_check.sh measures GPUs).
    return entry.compose_config([f"paths.root_dir={cwd}", f"paths.output_dir={output_dir}",
                                 f"paths.cache_dir={cwd / '.cache'}", *overrides,
                                 "trainer.max_epochs=1", "trainer.accelerator=cpu"])


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def data_preparation(cfg: DictConfig, cache: str) -> tuple[TextDataModule, dict[str, float]]:
    """Tokenize into the empty folder `cache`, then load from it as a second run does."""
    cold = instantiate(cfg.data, cache_dir=cache)
    start = time.perf_counter()
    cold.prepare_data()
    cold.setup("fit")
    cold_s = time.perf_counter() - start
    warm = instantiate(cfg.data, cache_dir=cache)
    start = time.perf_counter()
    warm.prepare_data()
    warm.setup("fit")
    cached_s = time.perf_counter() - start
    assert warm.cache_hit
    return warm, {"cold_s": cold_s, "cached_s": cached_s}


def tokenization(cfg: DictConfig, data: TextDataModule) -> dict[str, float]:
    """The tokenizer's own cold work, without reading, checks or the cache: the vocabulary
    from the 25,000 training reviews, then ids for those and the 25,000 test reviews."""
    raw = data.source.read()
    train, test = (raw[split][data.source.text_columns[0]][:] for split in ("train", "test"))
    start = time.perf_counter()
    encoder = TextEncoder.fit(train, cfg.data.max_features, cfg.data.maxlen, cfg.data.padding,
                              cfg.data.truncating, cfg.data.punctuation)
    encoder.encode(train)
    encoder.encode(test)
    return {"reviews": len(train) + len(test), "seconds": time.perf_counter() - start}


def hand_loop_epoch(cfg: DictConfig, data: TextDataModule,
                    fused_gru: bool = False) -> dict[str, float]:
    """The plain PyTorch loop a person would write: shuffle, slice, step; then evaluate.
    With PyTorch's nn.GRU, or (fused_gru) with this project's kernel, which isolates what
    Lightning and the project's logging cost."""
    torch.manual_seed(cfg.seed)
    torch.set_flush_denormal(False)  # PyTorch's default; the project's runs set their own
    model = instantiate(cfg.model.net, fused_gru=fused_gru).build(data.num_classes)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.model.optimizer.lr)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    train, val = data.splits["train"], data.splits["val"]
    start = time.perf_counter()
    model.train()
    order = torch.randperm(len(train))
    for i in range(0, len(train), data.batch_size):
        index = order[i : i + data.batch_size]
        loss = loss_fn(model(train.ids[index]), train.labels[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    train_s = time.perf_counter() - start
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(val), data.eval_batch_size):
            logits = model(val.ids[i : i + data.eval_batch_size])
            correct += int(((logits > 0) == val.labels[i : i + data.eval_batch_size].bool()).sum())
    total_s = time.perf_counter() - start
    return {"train_s": train_s, "val_s": total_s - train_s, "epoch_s": total_s,
            "val_acc": correct / len(val)}


class EpochTimer(L.Callback):
    """Wall time of a 1-epoch fit's training batches, its validation batches, and the rest:
    the epoch's end (the epoch's metrics, logging, both checkpoints)."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.train_end = time.perf_counter()

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Callbacks' epoch-end hooks run before the LightningModule's (its metrics).
        if not trainer.sanity_checking:
            self.val_end = time.perf_counter()

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()  # after every on_train_epoch_end, checkpoints included


def project_epoch(cfg: DictConfig, data: TextDataModule,
                  **trainer_options: Any) -> dict[str, float]:
    """One epoch of exactly what `python train.py` runs: its callbacks, logger, metrics;
    `trainer_options` go to the Trainer as well (bench/profile_epoch.py: a profiler)."""
    L.seed_everything(cfg.seed)
    torch.set_flush_denormal(cfg.flush_denormal)  # as train.py does
    timer = EpochTimer()
    model = instantiate(cfg.model, num_classes=data.num_classes)
    trainer = instantiate(cfg.trainer, callbacks=[*entry._instantiate_all(cfg.callbacks), timer],
                          logger=entry._instantiate_all(cfg.logger) or False,
                          **trainer_options)
    trainer.fit(model, datamodule=data)
    return {"train_s": timer.train_end - timer.start, "val_s": timer.val_end - timer.train_end,
            "epoch_end_s": timer.end - timer.val_end,
            "epoch_s": timer.end - timer.start,
            "val_acc": float(trainer.callback_metrics["val/acc"])}


def keras_installed() -> bool:
    return all(importlib.util.find_spec(name) for name in ("tensorflow", "keras"))


def write_keras_arrays(data: TextDataModule, path: Path) -> None:
    """The project's token ids and labels for bench/keras_notebook.py."""
    train, val = data.splits["train"], data.splits["val"]
    np.savez(path, x_train=train.ids.numpy().astype(np.int32), y_train=train.labels.numpy(),
             x_val=val.ids.numpy().astype(np.int32), y_val=val.labels.numpy())


def keras_epoch(arrays: Path, cfg: DictConfig) -> dict[str, float]:
    """The Keras notebook's model in its own process; its last (warm) epoch's seconds."""
    result = subprocess.run(
        [sys.executable, str(BENCH / "keras_notebook.py"), str(arrays), "--epochs",
         str(KERAS_EPOCHS), "--batch-size", str(cfg.data.batch_size), "--max-features",
         str(cfg.data.max_features), "--seed", str(cfg.seed)],
        capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"bench/keras_notebook.py failed:\n{result.stderr[-2000:]}")
    report = json.loads(result.stdout.splitlines()[-1])
    return {**report["epochs"][-1], "first_epoch_s": report["epochs"][0]["epoch_s"],
            "tensorflow": report["tensorflow"], "parameters": report["parameters"]}


def user_run(overrides: list[str], output_dir: str,
             test_parquet: Path | None) -> dict[str, Any]:
    """`python train.py <overrides> trainer.max_epochs=1` (1 epoch + test) as a user runs it,
    then the prediction command on its checkpoint over the test reviews."""
    run = {"train": train_run(overrides, output_dir)}
    if test_parquet is not None and test_parquet.is_file():
        run["predict"] = predict_command(output_dir, str(test_parquet))
    return run


def inference(cfg: DictConfig, data: TextDataModule) -> dict[str, float]:
    network = instantiate(cfg.model.net).build(data.num_classes)
    predictor = Predictor(network, data.text_encoder, data.class_names, device="cpu")
    texts = list(data.source.read()["test"]["text"])
    start = time.perf_counter()
    predictor.predict_proba(texts)  # its default batch size
    text_s = time.perf_counter() - start
    ids = data.splits["test"].ids
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ids), 256):
            network(ids[i : i + 256])
    ids_s = time.perf_counter() - start
    return {"reviews": len(texts), "text_reviews_per_s": len(texts) / text_s,
            "ids_reviews_per_s": len(ids) / ids_s}


def training_samples_per_s(batch_size: int, hidden_size: int, maxlen: int,
                           steps: int = 8) -> float:
    """Training steps (forward, backward, the model's optimizer) on random ids, with
    denormals flushed as train.py does by default."""
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    model = TextClassifier(RNN(hidden_size=hidden_size), 2, optimizer=functools.partial(
        torch.optim.Adam, lr=1e-3, fused=True))
    optimizer = model.configure_optimizers()
    ids = torch.randint(0, 10000, (batch_size, maxlen))
    labels = torch.randint(0, 2, (batch_size,)).float()
    for step in range(steps + 2):  # two warm-up steps
        if step == 2:
            start = time.perf_counter()
        loss = model.loss_fn(model(ids), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return batch_size * steps / (time.perf_counter() - start)


def scaling() -> list[dict[str, Any]]:
    grid = ([(b, 64, 100) for b in (64, 128, 256, 512, 1024)]
            + [(64, h, 100) for h in (32, 128, 256, 512)]
            + [(64, 64, m) for m in (200, 400, 800)])
    rows = []
    for batch_size, hidden_size, maxlen in grid:
        rate = training_samples_per_s(batch_size, hidden_size, maxlen)
        rows.append({"batch_size": batch_size, "hidden_size": hidden_size, "maxlen": maxlen,
                     "samples_per_s": rate})
        print(f"scaling: batch {batch_size}, hidden {hidden_size}, maxlen {maxlen}: "
              f"{rate:,.0f} samples/s", flush=True)
    return rows


def targets(report: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, measured, target, met) for the speed and memory goals; met is None where not
    measured."""
    best, prep, inf = report["best"], report["data_preparation"], report["inference"]
    project = best["project"]
    rows: list[tuple[str, str, str, bool | None]] = [
        ("tokenization alone, cold (vocabulary + ids of 50,000 reviews)",
         f"{prep['tokenization']['seconds']:.1f} s", "<= 4 s",
         prep["tokenization"]["seconds"] <= 4),
        ("data preparation, cold (read, check, tokenize 50,000 reviews, cache)",
         f"{prep['cold_s']:.1f} s", "<= 4 s", prep["cold_s"] <= 4),
        ("inference from text (`Predictor.predict_proba`)",
         f"{inf['text_reviews_per_s']:,.0f} reviews/s", ">= 10,000 reviews/s",
         inf["text_reviews_per_s"] >= 10_000),
    ]
    predict = report["user_run"].get("predict")
    rows.append(("prediction command on the test reviews, start-up included",
                 f"{predict['seconds']:.1f} s ({predict['reviews']:,})" if predict else "-",
                 "<= 5 s", predict["seconds"] <= 5 if predict else None))
    for part, what in (("train", "training batches"), ("val", "validation batches"),
                       ("epoch", "whole epoch, the project's checkpoints included")):
        ratio = report["lightning_share"][part]
        rows.append((f"Lightning's share, {what} (project / hand loop, same kernel; median "
                     f"of {SHARE_REPEATS} pairs)", f"{ratio:.3f}x", "<= 1.05x", ratio <= 1.05))
    keras = best.get("keras_notebook")
    ratio = project["epoch_s"] / keras["epoch_s"] if keras else None
    rows.append(("epoch, project / Keras notebook (same run)",
                 f"{ratio:.3f}x" if ratio else "TensorFlow not installed", "<= 0.5x",
                 ratio <= 0.5 if ratio else None))
    rss = report["user_run"]["train"]["peak_rss_mb"]
    rows.append(("peak RSS of `python train.py` (1 epoch + test)", f"{rss:,.0f} MB", "<= 1 GB",
                 rss <= 1024))
    rows.append(("GPU epoch, samples/s, accuracy (`bash bench/gpu_check.sh`)",
                 "no GPU here" if not torch.cuda.is_available() else "run bench/gpu_check.sh",
                 "figures in README", None))
    return rows


def markdown(report: dict[str, Any]) -> str:
    best, n_train = report["best"], report["train_reviews"]
    lines = [
        f"`python bench/benchmark.py {' '.join(report['command'])}`", "",
        f"torch {report['torch']}, {report['threads']} threads"
        + (f", TensorFlow {report['tensorflow']}" if report.get("tensorflow") else "")
        + f"; {n_train:,} training reviews, validation on {report['val_reviews']:,}, batch "
        f"{report['batch_size']}; best of {REPEATS} alternating repeats ({SHARE_REPEATS} for "
        "the project and the hand loop with its kernel)", "",
        "| | epoch s (all) | train s | val s | epoch end s | train samples/s | val acc |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, r in best.items():
        end = f"{r['epoch_end_s']:.2f}" if "epoch_end_s" in r else "-"
        lines.append(f"| {name} | {r['epoch_s']:.2f} | {r['train_s']:.2f} | {r['val_s']:.2f} | "
                     f"{end} | {n_train / r['train_s']:,.0f} | {r['val_acc']:.4f} |")
    if "keras_notebook" in best:
        lines += ["", f"keras_notebook: epoch {KERAS_EPOCHS} of {KERAS_EPOCHS} (its first, with "
                  f"TensorFlow's tracing: {best['keras_notebook']['first_epoch_s']:.2f} s); "
                  "validation at Keras' default batch, 64"]
    prep, inf, user = report["data_preparation"], report["inference"], report["user_run"]
    share = report["lightning_share"]
    lines += [
        "", f"project / hand loop, epoch: **{report['project_over_hand_loop']:.3f}** (best "
        "of each); Lightning's share, project / hand loop with the fused GRU, median of the "
        f"back-to-back pairs: epoch {share['epoch']:.3f} (the project's epoch end included: "
        f"metrics, logging, two checkpoints), train {share['train']:.3f}, validation "
        f"{share['val']:.3f}", "",
        "| data prep cold s | data prep cached s | inference reviews/s (text) | "
        "inference reviews/s (ids) | train.py peak RSS MB | this process's peak MB |",
        "|---|---|---|---|---|---|",
        f"| {prep['cold_s']:.1f} | {prep['cached_s']:.2f} | {inf['text_reviews_per_s']:,.0f} | "
        f"{inf['ids_reviews_per_s']:,.0f} | {user['train']['peak_rss_mb']:,.0f} | "
        f"{report['peak_memory_mb']:,.0f} |",
        "", "Targets:", "", "| figure | measured | target | met |", "|---|---|---|---|",
    ]
    for figure, measured, target, met in targets(report):
        mark = "-" if met is None else ("yes" if met else "**no**")
        lines.append(f"| {figure} | {measured} | {target} | {mark} |")
    if report.get("scaling"):
        lines += ["", "Training samples/s (forward, backward, optimizer; random ids):", "",
                  "| batch | hidden | maxlen | samples/s |", "|---|---|---|---|"]
        lines += [f"| {r['batch_size']} | {r['hidden_size']} | {r['maxlen']} | "
                  f"{r['samples_per_s']:,.0f} |" for r in report["scaling"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    overrides = [a for a in argv if a != "--scaling"]
    # Build (or load) both compiled kernels before any timing: a checkout whose sources differ
    # from the last build's rebuilds them on first use, ~40 s each.
    available_extension()
    word_ids_kernel()
    with tempfile.TemporaryDirectory() as tmp:
        cfg = bench_config(overrides, tmp)
        data, prep = data_preparation(cfg, cache=f"{tmp}/cache")
        print(f"data preparation: cold {prep['cold_s']:.1f} s, cached {prep['cached_s']:.2f} s")
        prep["tokenization"] = tokenization(cfg, data)
        sides = ["hand_loop", "hand_loop_fused_gru", "project"]
        if keras_installed():
            sides.append("keras_notebook")
            arrays = Path(tmp) / "keras.npz"
            write_keras_arrays(data, arrays)
        else:
            print("TensorFlow is not installed: no Keras side (pip install -e '.[keras]')")
        runs: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
        # Alternate, so drift on the machine hits every side. The project and the hand loop
        # with its kernel run back to back, in turn first (ABBA), and more often: their
        # ratio is the finest figure here, and this CPU's speed drifts by 10-20% in minutes.
        for repeat in range(SHARE_REPEATS):
            pair = [("hand_loop_fused_gru", lambda: hand_loop_epoch(cfg, data, fused_gru=True)),
                    ("project", lambda: project_epoch(cfg, data))]
            for name, measure in pair if repeat % 2 == 0 else pair[::-1]:
                runs[name].append(measure())
            if repeat < REPEATS:
                runs["hand_loop"].append(hand_loop_epoch(cfg, data))
                if "keras_notebook" in runs:
                    runs["keras_notebook"].append(keras_epoch(arrays, cfg))
            print(f"repeat {repeat}: " + ", ".join(
                f"{name} {r[-1]['epoch_s']:.2f} s" for name, r in runs.items()), flush=True)
        inf = inference(cfg, data)
        local = cfg.data.get("local_path")
        user = user_run(overrides, f"{tmp}/user_run",
                        Path(local) / "test.parquet" if local else None)
    best = {name: min(r, key=lambda x: x["epoch_s"]) for name, r in runs.items()}
    # Lightning's share per part: the median over the back-to-back pairs of their ratio.
    share = {part: statistics.median(
        p[f"{part}_s"] / h[f"{part}_s"]
        for p, h in zip(runs["project"], runs["hand_loop_fused_gru"], strict=True))
        for part in ("train", "val", "epoch")}
    report = {
        "command": argv, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "tensorflow": best.get("keras_notebook", {}).get("tensorflow"),
        "train_reviews": len(data.splits["train"]), "val_reviews": len(data.splits["val"]),
        "batch_size": data.batch_size, "data_preparation": prep, "runs": runs, "best": best,
        "project_over_hand_loop": best["project"]["epoch_s"] / best["hand_loop"]["epoch_s"],
        "lightning_share": share,
        "inference": inf, "user_run": user, "peak_memory_mb": peak_memory_mb(),
        "scaling": scaling() if "--scaling" in argv else None,
    }
    table = markdown(report)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    name = "-".join(o.split("=")[1] for o in overrides if o.startswith("experiment=")) or "default"
    (RESULTS / f"benchmark-{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"benchmark-{name}.md").write_text(table)


if __name__ == "__main__":
    main(sys.argv[1:])
