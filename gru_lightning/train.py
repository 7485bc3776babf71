"""Training entry point: Hydra composes `conf/train.yaml`, this fits, tests and reports.

    python train.py                                  # the defaults (conf/train.yaml)
    python train.py trainer.accelerator=gpu          # any config value from the command line
    python train.py experiment=keras_seed            # the notebook's exact settings
"""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import signal
import sys
import time
import types
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from filelock import FileLock
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.types import RunMode
from hydra.utils import instantiate
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.callbacks import Timer
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import TrainerStatus
from omegaconf import DictConfig, OmegaConf, open_dict

import gru_lightning.sweep  # noqa: F401  registers ${swept_overrides:...} for job folder names
from gru_lightning.data import DataError, DatasetUnavailableError, save_atomically
from gru_lightning.faults import DivergedError, InterruptCheckpoint
from gru_lightning.model import CheckpointError, read_checkpoint
from gru_lightning.ngrams import FORMAT_VERSION as NGRAM_FORMAT
from gru_lightning.ngrams import NGramModel

# TensorBoard's writer imports all of TensorFlow where it is installed (for its file API):
# +0.5 GB of RSS and seconds of start-up per run (a 1-epoch seed run: 1.05 GB instead of
# 0.54). Its "notf" marker module makes it use its own stub, as where TensorFlow is absent.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

log = logging.getLogger(__name__)
# conf/ sits beside the package (editable install or a checkout), as in lightning-hydra-template.
CONFIG_DIR = Path(__file__).resolve().parent.parent / "conf"

# Errors caused by what the user typed or pointed at, or a run that diverged: shown as one
# message, no traceback.
USER_ERRORS = (DatasetUnavailableError, DataError, CheckpointError, DivergedError,
               InstantiationException, MisconfigurationException, FileNotFoundError, ValueError)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that maps names to objects (callbacks,
    loggers); an entry set to null is dropped, e.g. `callbacks.early_stopping=null`."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def _hyperparameters(cfg: DictConfig, num_classes: int) -> dict[str, Any]:
    """The knobs a run is compared by, flat, for TensorBoard's HPARAMS tab."""
    params: dict[str, Any] = {"seed": cfg.seed, "trainer/max_epochs": cfg.trainer.max_epochs}
    params["model/num_classes"] = num_classes
    for group in ("data", "model", "ngram"):
        for key, value in (cfg.get(group) or {}).items():
            if key != "_target_" and not (group == "data" and key == "cache_dir"):
                params[f"{group}/{key}"] = value
    return params


def compose_config(overrides: Sequence[str] = ()) -> DictConfig:
    """`conf/train.yaml` composed as `python train.py <overrides>` would, for use outside a
    Hydra run (tests, benchmarks): Hydra's own node is set aside as HydraConfig, as in a run.
    Override `paths.*` too, since their defaults resolve from Hydra's runtime."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg.hydra  # the task function never sees it
    return cfg


def train(cfg: DictConfig) -> dict[str, float]:
    """Fit, test and write `metrics.json`; returns the metrics. `metrics.json` says
    "running" from the start, so a run killed outright is told apart from a finished one."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    write_status(output_dir, "running", {})
    if cfg.ckpt_path is not None:
        # One clear message before any data work, rather than Lightning's traceback later.
        _say_where_it_resumes(read_checkpoint(cfg.ckpt_path, "ckpt_path=", weights_only=False))
    if cfg.test_weights not in ("best", "last"):
        raise ValueError(f"test_weights must be 'best' or 'last', got {cfg.test_weights!r}")

    L.seed_everything(cfg.seed, workers=True)
    # Vanishing gradients through long reviews become denormal floats, which x86 CPUs
    # compute on many times slower: 5.8x slower training at maxlen 400 (bench/README).
    torch.set_flush_denormal(cfg.flush_denormal)
    # Everything that can reject the config is built before any data work starts.
    datamodule = instantiate(cfg.data)
    model = instantiate(cfg.model)
    ngram = instantiate(cfg.ngram) if cfg.get("ngram") else None
    trainer = instantiate(cfg.trainer, callbacks=_instantiate_all(cfg.callbacks),
                          logger=_instantiate_all(cfg.logger) or False)
    # The classes come from the data: read (or tokenize) it now, and size the model's output.
    datamodule.prepare_data()
    datamodule.setup("fit")
    if datamodule.num_classes != model.hparams.num_classes:
        model = instantiate(cfg.model, num_classes=datamodule.num_classes)
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("Model: %s trainable parameters, %d classes", f"{n_params:,}",
             datamodule.num_classes)
    ngram_metrics = _stack_ngram_model(ngram, datamodule, model) if ngram is not None else {}

    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=cfg.ckpt_path)
    except DivergedError as error:
        write_status(output_dir, "diverged", {"error": str(error), "epochs": trainer.current_epoch,
                                              "step": trainer.global_step})
        raise
    except (KeyboardInterrupt, SystemExit) as error:
        # Lightning turns Ctrl-C into sys.exit(1) after the callbacks' on_exception.
        if isinstance(error, SystemExit) and trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        raise _interrupted(trainer, output_dir) from None
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    # Read before testing: the fit's time alone.
    fit_seconds = timer.time_elapsed("train") if timer is not None else None

    metrics: dict[str, Any] = {
        k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("val/")
    }
    if cfg.test:
        # The checkpoint that monitors val/acc; last.ckpt's callback monitors nothing.
        checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
        best = checkpoint.best_model_path if checkpoint is not None else ""
        if cfg.test_weights == "best" and not best:
            log.warning("No best checkpoint was saved; testing the weights as trained")
        if cfg.test_weights == "best" and best:
            # The weights alone. trainer.test(ckpt_path=...) would also restore the callbacks'
            # states: the Timer's (counting the fit's time twice) and, with callbacks=ema, the
            # raw weights over the averaged ones that the checkpoint's state_dict holds.
            log.info("Testing the best checkpoint: %s", best)
            state = torch.load(best, map_location=model.device, weights_only=False)
            model.load_state_dict(state["state_dict"])
            model.stacking = state.get("stacking", model.stacking)  # fitted with those weights
        results = trainer.test(model, datamodule=datamodule)[0]
        metrics.update(results)
        print(f"Test Accuracy: {results['test/acc']:.3f}")

    metrics.update(ngram_metrics)
    metrics["epochs"] = trainer.current_epoch
    metrics["params"] = n_params
    metrics["classes"] = datamodule.class_names
    if fit_seconds is not None and trainer.current_epoch:
        # Timer's state is checkpointed, so a resumed run counts all of its epochs.
        metrics["seconds_per_epoch"] = fit_seconds / trainer.current_epoch
    write_status(output_dir, "completed", metrics)
    # The HPARAMS tab pairs each run's hyperparameters with these final values.
    hp_metrics = {f"hp/{k.replace('/', '_')}": v for k, v in metrics.items()
                  if k in ("val/acc_best", "test/acc", "test/auroc", "test/loss")}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger) and hp_metrics:
            logger.log_hyperparams(_hyperparameters(cfg, datamodule.num_classes),
                                   metrics=hp_metrics)
            logger.finalize("success")
    return metrics


def _stack_ngram_model(ngram: NGramModel, datamodule: Any, model: Any) -> dict[str, float]:
    """The n-gram stage: fit `ngram` on the training texts (or read it from the cache, keyed
    by the data's cache entry and its settings: seeds and model settings share it), score the
    validation and test texts with it, and stack it on `model`. Returns its own accuracies."""
    if datamodule.num_classes != 2:
        raise ValueError(f"ngram=nbsvm takes two classes; the data has "
                         f"{datamodule.num_classes}: {', '.join(datamodule.class_names)}")
    if "val" not in datamodule.splits or datamodule.splits["val"] is datamodule.splits["test"]:
        raise ValueError("ngram=nbsvm fits its stacking weights on validation texts, held out "
                         "of training: set data.val_size > 0")
    start = time.perf_counter()
    key = json.dumps({"data": datamodule.cache_path().name, "ngram": ngram.settings(),
                      "format": NGRAM_FORMAT}, sort_keys=True)
    path = datamodule.cache_dir / f"ngram-{hashlib.sha256(key.encode()).hexdigest()[:16]}.pt"
    texts = datamodule.split_texts()
    train_labels = datamodule.splits["train"].labels

    def fit() -> dict[str, Any]:
        fitted = {"model": ngram.fit(texts["train"], train_labels).to_dict()}
        if ngram.folds:
            fitted["train_logits"] = ngram.out_of_fold_logits(
                texts["train"], train_labels, ngram.folds, seed=datamodule.split_seed)
        save_atomically(fitted, path)
        log.info("Cached the n-gram model to %s", path)
        return fitted

    with FileLock(str(path) + ".lock"):  # parallel sweep jobs fit it once
        try:
            fitted = torch.load(path, weights_only=True)
            ngram = NGramModel.from_dict(fitted["model"])
            log.info("n-gram model found in cache %s: skipping its fit", path)
        except FileNotFoundError:
            fitted = fit()
        except Exception as error:  # derived data, like the tokenized cache
            log.warning("The cached n-gram model %s is unreadable (%s); fitting it again",
                        path, type(error).__name__)
            fitted = fit()
    if ngram.folds:  # the network trains on top of the out-of-fold scores
        scores = ngram.scores(texts["train"])
        scores[:, 0] = fitted["train_logits"]
        datamodule.splits["train"].ngram_scores = scores
    metrics = {}
    for split in ("val", "test"):
        scores = ngram.scores(texts[split])
        datamodule.splits[split].ngram_scores = scores
        labels = datamodule.splits[split].labels.cpu()
        metrics[f"ngram/{split}_acc"] = ((scores[:, 0] > 0).float() == labels
                                         ).float().mean().item()
    metrics["ngram/seconds"] = time.perf_counter() - start
    log.info("n-gram model alone: val accuracy %.4f, test accuracy %.4f (%.1f s, the "
             "stage in all)", metrics["ngram/val_acc"], metrics["ngram/test_acc"],
             metrics["ngram/seconds"])
    model.ngram = ngram
    return metrics


def _say_where_it_resumes(checkpoint: dict[str, Any]) -> None:
    progress = (checkpoint.get("loops", {}).get("fit_loop", {})
                .get("epoch_loop.batch_progress", {}))
    if progress.get("is_last_batch", True):
        return
    # Lightning warns that the train loader cannot resume mid-epoch; said here in plain words.
    warnings.filterwarnings("ignore", message=".*resuming from a checkpoint that ended before")
    log.info("Resuming in the middle of epoch %d, after %d of its batches: the rest of that "
             "epoch is drawn from a new shuffle", checkpoint.get("epoch", 0),
             progress.get("current", {}).get("completed", 0))


class RunInterrupted(Exception):
    """Ctrl-C ended the fit; the message says what was saved and how to resume."""


def resume_command(checkpoint: Path) -> str:
    """`python train.py` with this run's overrides and `ckpt_path` set to `checkpoint`."""
    overrides = [o for o in HydraConfig.get().overrides.task
                 if not o.lstrip("+~").startswith(("ckpt_path=", "hydra.", "paths.output_dir"))]
    return shlex.join(["python", "train.py", *overrides, f"ckpt_path={checkpoint}"])


def _interrupted(trainer: L.Trainer, output_dir: Path) -> RunInterrupted:
    """Record an interrupted fit in `metrics.json`: what was saved, and the command that
    resumes it."""
    # Lightning ignores SIGINT from the first Ctrl-C on; give it back to whoever called.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    saved = next((c.saved for c in trainer.callbacks
                  if isinstance(c, InterruptCheckpoint) and c.saved is not None), None)
    last = output_dir / "checkpoints" / "last.ckpt"
    checkpoint = saved or (last if last.is_file() else None)
    record: dict[str, Any] = {"epochs": trainer.current_epoch, "step": trainer.global_step}
    if checkpoint is None:
        write_status(output_dir, "interrupted", record)
        return RunInterrupted("Interrupted before the first training step ended: nothing to "
                              "resume; run the same command again.")
    command = resume_command(checkpoint.resolve())
    write_status(output_dir, "interrupted", {**record, "checkpoint": str(checkpoint),
                                             "resume": command})
    return RunInterrupted(
        f"Interrupted at step {trainer.global_step} (epoch {trainer.current_epoch}). Saved "
        f"{checkpoint}; resume with:\n  {command}")


def write_status(output_dir: Path, status: str, metrics: dict[str, Any]) -> None:
    """`metrics.json`: what the sweep report and users read back."""
    record = {"status": status, **metrics}
    (output_dir / "metrics.json").write_text(json.dumps(record, indent=2) + "\n")


def _user_message(error: Exception) -> str:
    # Hydra wraps constructor errors; the constructor's own message is the useful part.
    if isinstance(error, InstantiationException) and error.__cause__ is not None:
        return f"{type(error.__cause__).__name__}: {error.__cause__}"
    return f"{type(error).__name__}: {error}"


@hydra.main(version_base="1.3", config_path=str(CONFIG_DIR), config_name="train")
def main(cfg: DictConfig) -> float | None:
    output_dir = Path(cfg.paths.output_dir)
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        metrics = train(cfg)
    except RunInterrupted as stop:
        log.error("%s", stop)
        sys.exit(130)  # the shell's code for Ctrl-C; a multirun stops here too
    except KeyboardInterrupt:  # outside the fit: loading, tokenizing, testing
        write_status(output_dir, "interrupted", {})
        log.error("Interrupted before or after the fit; checkpoints, if any, are in %s",
                  output_dir / "checkpoints")
        sys.exit(130)
    except Exception as error:
        if not isinstance(error, DivergedError):
            write_status(output_dir, "failed", {"error": _user_message(error)})
        if multirun:
            # One failed job must not stop the sweep (Hydra's launchers stop at the first
            # exception): it is recorded for the report, and the sweeper gets NaN, which
            # Optuna records as a failed trial.
            log.exception("Job failed: %s", _user_message(error))
            return float("nan")
        if isinstance(error, USER_ERRORS):
            log.error("%s", _user_message(error))
            sys.exit(1)
        raise
    return metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None


if __name__ == "__main__":
    main()
