"""Time one training epoch of this project's Trainer against a hand-written PyTorch loop of
the same model on the same tensors, in one process, alternating, and report the ratio.

    python bench/epoch_speed.py data.local_path=../shared/data/imdb            # default config
    python bench/epoch_speed.py data.local_path=../shared/data/imdb experiment=keras_seed

Any `train.py` override works. Both sides train on the datamodule's train tensors and then
run validation over its val tensors (the Trainer does so inside its epoch). Writes
bench/results/epoch_speed-<config>.{json,md}.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, open_dict

from gru_lightning.data import IMDBDataModule
from gru_lightning.train import CONFIG_DIR, _instantiate_all

RESULTS = Path(__file__).resolve().parent / "results"
REPEATS = 3


def compose_config(overrides: list[str], output_dir: str) -> DictConfig:
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra
        cfg.paths.root_dir = str(Path.cwd())
        cfg.paths.output_dir = output_dir
        cfg.paths.cache_dir = str(Path.cwd() / ".cache")
        cfg.trainer.max_epochs = 1
    return cfg


def hand_loop_epoch(cfg: DictConfig, data: IMDBDataModule) -> dict[str, float]:
    """The plain PyTorch loop a person would write: shuffle, slice, step; then evaluate."""
    torch.manual_seed(cfg.seed)
    model = instantiate(cfg.model)
    optimizer = model.configure_optimizers()  # the same optimizer as the project
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
    timer = EpochTimer()
    model = instantiate(cfg.model)
    trainer = instantiate(cfg.trainer, callbacks=[*_instantiate_all(cfg.callbacks), timer],
                          logger=_instantiate_all(cfg.logger) or False)
    trainer.fit(model, datamodule=data)
    return {"train_s": timer.train_end - timer.start, "val_s": timer.end - timer.train_end,
            "epoch_s": timer.end - timer.start,
            "val_acc": float(trainer.callback_metrics["val/acc"])}


def main(overrides: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cfg = compose_config(overrides, tmp)
        data = instantiate(cfg.data)
        data.prepare_data()
        data.setup("fit")
        runs: dict[str, list[dict[str, float]]] = {"hand_loop": [], "project": []}
        for repeat in range(REPEATS):  # alternate, so drift on the machine hits both
            runs["hand_loop"].append(hand_loop_epoch(cfg, data))
            runs["project"].append(project_epoch(cfg, data))
            print(f"repeat {repeat}: hand {runs['hand_loop'][-1]['epoch_s']:.2f} s, "
                  f"project {runs['project'][-1]['epoch_s']:.2f} s", flush=True)

    best = {name: min(r, key=lambda x: x["epoch_s"]) for name, r in runs.items()}
    n_train = len(data.splits["train"])
    ratio = best["project"]["epoch_s"] / best["hand_loop"]["epoch_s"]
    report = {
        "overrides": overrides, "torch": torch.__version__, "threads": torch.get_num_threads(),
        "train_reviews": n_train, "val_reviews": len(data.splits["val"]),
        "batch_size": data.batch_size, "runs": runs, "best": best,
        "project_over_hand_loop": ratio,
    }
    rows = ["| | epoch s (train + val) | train s | val s | train samples/s | val acc |",
            "|---|---|---|---|---|---|"]
    for name, r in best.items():
        rows.append(f"| {name} | {r['epoch_s']:.2f} | {r['train_s']:.2f} | {r['val_s']:.2f} | "
                    f"{n_train / r['train_s']:,.0f} | {r['val_acc']:.4f} |")
    rows.append(f"\nproject / hand loop (epoch): **{ratio:.3f}** (best of {REPEATS} each)")
    table = "\n".join(rows)
    print(table)
    RESULTS.mkdir(exist_ok=True)
    name = "-".join(o.split("=")[1] for o in overrides if o.startswith("experiment=")) or "default"
    (RESULTS / f"epoch_speed-{name}.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS / f"epoch_speed-{name}.md").write_text(
        f"`python bench/epoch_speed.py {' '.join(overrides)}`\n\n{table}\n")


if __name__ == "__main__":
    main(sys.argv[1:])
