"""Speed of this project against a hand-written PyTorch loop, in one process on one machine.

    python bench/benchmark.py data.local_path=../shared/data/imdb experiment=keras_seed
    python bench/benchmark.py data.local_path=../shared/data/imdb --scaling   # + scaling table

Any `train.py` override works. Reports, for that config:
- data preparation: cold (tokenize into an empty cache) and cached (load the cache);
- one epoch of exactly what `python train.py` runs (its callbacks, logger, metrics,
  validation) against a plain hand-written loop of the same model (PyTorch's nn.GRU and
  default Adam, `randperm` slices of the same tensors, then the same validation), and the
  same hand loop with the project's fused GRU kernel; alternating, best of REPEATS each;
- inference reviews/s: text to probability through `SentimentClassifier`, and ids to
  probability through the model alone;
- the process's peak memory;
- with --scaling, training samples/s against batch size, hidden size and maxlen.
Writes bench/results/benchmark-<experiment>.{json,md}.
"""

from __future__ import annotations

import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from gru_lightning import train as entry
from gru_lightning.model import SentimentRNN
from gru_lightning.predict import SentimentClassifier
from gru_lightning.sources import IMDBDataModule

RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = 3


def bench_config(overrides: list[str], output_dir: str) -> DictConfig:
    cwd = Path.cwd()
    return entry.compose_config([f"paths.root_dir={cwd}", f"paths.output_dir={output_dir}",
                          f"paths.cache_dir={cwd / '.cache'}", *overrides,
                          "trainer.max_epochs=1"])


def peak_memory_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def data_preparation(cfg: DictConfig, cache: str) -> tuple[IMDBDataModule, dict[str, float]]:
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


def hand_loop_epoch(cfg: DictConfig, data: IMDBDataModule,
                    fused_gru: bool = False) -> dict[str, float]:
    """The plain PyTorch loop a person would write: shuffle, slice, step; then evaluate.
    With PyTorch's nn.GRU, or (fused_gru) with this project's kernel, which isolates what
    Lightning and the project's logging cost."""
    torch.manual_seed(cfg.seed)
    torch.set_flush_denormal(False)  # PyTorch's default; the project's runs set their own
    model = instantiate(cfg.model, fused_gru=fused_gru)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.model.lr)
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
    """Wall time of the training part and the validation part of the first epoch."""

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.train_end = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.end = time.perf_counter()


def project_epoch(cfg: DictConfig, data: IMDBDataModule) -> dict[str, float]:
    """One epoch of exactly what `python train.py` runs: its callbacks, logger, metrics."""
    L.seed_everything(cfg.seed)
    torch.set_flush_denormal(cfg.flush_denormal)  # as train.py does
    timer = EpochTimer()
    model = instantiate(cfg.model)
    trainer = instantiate(cfg.trainer, callbacks=[*entry._instantiate_all(cfg.callbacks), timer],
                          logger=entry._instantiate_all(cfg.logger) or False)
    trainer.fit(model, datamodule=data)
    return {"train_s": timer.train_end - timer.start, "val_s": timer.end - timer.train_end,
            "epoch_s": timer.end - timer.start,
            "val_acc": float(trainer.callback_metrics["val/acc"])}


def inference(cfg: DictConfig, data: IMDBDataModule) -> dict[str, float]:
    model = instantiate(cfg.model)
    model.text_encoder = data.text_encoder
    classifier = SentimentClassifier(model, device="cpu")
    texts = list(data.read()["test"]["text"])
    start = time.perf_counter()
    classifier.predict_proba(texts)  # its default batch size
    text_s = time.perf_counter() - start
    ids = data.splits["test"].ids
    start = time.perf_counter()
    with torch.inference_mode():
        for i in range(0, len(ids), 256):
            model(ids[i : i + 256])
    ids_s = time.perf_counter() - start
    return {"reviews": len(texts), "text_reviews_per_s": len(texts) / text_s,
            "ids_reviews_per_s": len(ids) / ids_s}


def training_samples_per_s(batch_size: int, hidden_size: int, maxlen: int,
                           steps: int = 8) -> float:
    """Training steps (forward, backward, the model's optimizer) on random ids, with
    denormals flushed as train.py does by default."""
    torch.manual_seed(0)
    torch.set_flush_denormal(True)
    model = SentimentRNN(hidden_size=hidden_size)
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


def markdown(report: dict[str, Any]) -> str:
    best, n_train = report["best"], report["train_reviews"]
    lines = [
        f"`python bench/benchmark.py {' '.join(report['command'])}`", "",
        f"torch {report['torch']}, {report['threads']} threads; {n_train:,} training reviews, "
        f"validation on {report['val_reviews']:,}, batch {report['batch_size']}", "",
        "| | epoch s (train + val) | train s | val s | train samples/s | val acc |",
        "|---|---|---|---|---|---|",
    ]
    for name, r in best.items():
        lines.append(f"| {name} | {r['epoch_s']:.2f} | {r['train_s']:.2f} | {r['val_s']:.2f} | "
                     f"{n_train / r['train_s']:,.0f} | {r['val_acc']:.4f} |")
    prep, inf = report["data_preparation"], report["inference"]
    lines += [
        "", f"project / hand loop, epoch: **{report['project_over_hand_loop']:.3f}** "
        f"(best of {REPEATS} each, alternating); project / hand loop with the fused GRU "
        f"(Lightning's overhead): {report['project_over_hand_loop_fused_gru']:.3f}", "",
        "| data prep cold s | data prep cached s | inference reviews/s (text) | "
        "inference reviews/s (ids) | peak memory MB |",
        "|---|---|---|---|---|",
        f"| {prep['cold_s']:.1f} | {prep['cached_s']:.2f} | {inf['text_reviews_per_s']:,.0f} | "
        f"{inf['ids_reviews_per_s']:,.0f} | {report['peak_memory_mb']:,.0f} |",
    ]
    if report.get("scaling"):
        lines += ["", "Training samples/s (forward, backward, optimizer; random ids):", "",
                  "| batch | hidden | maxlen | samples/s |", "|---|---|---|---|"]
        lines += [f"| {r['batch_size']} | {r['hidden_size']} | {r['maxlen']} | "
                  f"{r['samples_per_s']:,.0f} |" for r in report["scaling"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> None:
    overrides = [a for a in argv if a != "--scaling"]
    with tempfile.TemporaryDirectory() as tmp:
        cfg = bench_config(overrides, tmp)
        data, prep = data_preparation(cfg, cache=f"{tmp}/cache")
        print(f"data preparation: cold {prep['cold_s']:.1f} s, cached {prep['cached_s']:.2f} s")
        runs: dict[str, list[dict[str, float]]] = {
            "hand_loop": [], "hand_loop_fused_gru": [], "project": []}
        for repeat in range(REPEATS):  # alternate, so drift on the machine hits all three
            runs["hand_loop"].append(hand_loop_epoch(cfg, data))
            runs["hand_loop_fused_gru"].append(hand_loop_epoch(cfg, data, fused_gru=True))
            runs["project"].append(project_epoch(cfg, data))
            print(f"repeat {repeat}: " + ", ".join(
                f"{name} {r[-1]['epoch_s']:.2f} s" for name, r in runs.items()), flush=True)
        inf = inference(cfg, data)
    best = {name: min(r, key=lambda x: x["epoch_s"]) for name, r in runs.items()}
    report = {
        "command": argv, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "train_reviews": len(data.splits["train"]), "val_reviews": len(data.splits["val"]),
        "batch_size": data.batch_size, "data_preparation": prep, "runs": runs, "best": best,
        "project_over_hand_loop": best["project"]["epoch_s"] / best["hand_loop"]["epoch_s"],
        "project_over_hand_loop_fused_gru":
            best["project"]["epoch_s"] / best["hand_loop_fused_gru"]["epoch_s"],
        "inference": inf, "peak_memory_mb": peak_memory_mb(),
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
