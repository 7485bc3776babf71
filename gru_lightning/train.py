"""Training entry point: Hydra composes `conf/train.yaml`, this fits, tests and reports.

    python train.py                                  # the defaults (conf/train.yaml)
    python train.py trainer.accelerator=gpu          # any config value from the command line
    python train.py experiment=keras_seed            # the notebook's exact settings
"""

from __future__ import annotations

import importlib.resources
import logging
import os
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
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
from gru_lightning import checkpoints
from gru_lightning.checkpoints import CheckpointError
from gru_lightning.data.base import DataError, DatasetUnavailableError
from gru_lightning.metrics import final_metric_keys
from gru_lightning.runtime.faults import DivergedError
from gru_lightning.runtime.run_record import (
    RunInterrupted,
    interrupted,
    say_where_it_resumes,
    user_message,
    write_status,
)

# TensorBoard's writer imports all of TensorFlow where it is installed (for its file API):
# +0.5 GB of RSS and seconds of start-up per run. Its "notf" marker module makes it use its
# own stub, as where TensorFlow is absent.
sys.modules.setdefault("tensorboard.compat.notf", types.ModuleType("tensorboard.compat.notf"))

log = logging.getLogger(__name__)


def _config_dir() -> Path:
    """The Hydra configs: a checkout's (or an editable install's) top-level conf/, else the
    copy an installed wheel holds as the package gru_lightning.conf (pyproject.toml)."""
    checkout = Path(__file__).resolve().parent.parent / "conf"
    if (checkout / "train.yaml").is_file():
        return checkout
    return Path(str(importlib.resources.files("gru_lightning.conf")))


CONFIG_DIR = _config_dir()

# Errors caused by what the user typed or pointed at, or a run that diverged: shown as one
# message, no traceback; HYDRA_FULL_ERROR=1 (Hydra's own switch) shows the traceback, for an
# error that is a bug rather than a bad input.
USER_ERRORS = (DatasetUnavailableError, DataError, CheckpointError, DivergedError,
               InstantiationException, MisconfigurationException, FileNotFoundError, ValueError)


def _instantiate_all(group: DictConfig | None) -> list[Any]:
    """Instantiate every entry of a config group that maps names to objects (callbacks,
    loggers); an entry set to null is dropped, e.g. `callbacks.early_stopping=null`."""
    return [instantiate(node) for node in (group or {}).values() if node is not None]


def _hyperparameters(cfg: DictConfig, num_classes: int) -> dict[str, Any]:
    """The knobs a run is compared by, flat, for TensorBoard's HPARAMS tab."""
    params: dict[str, Any] = {"seed": cfg.seed, "trainer/max_epochs": cfg.trainer.max_epochs,
                              "model/num_classes": num_classes}

    def flatten(prefix: str, node: Any) -> None:
        for key, value in node.items():
            if key in ("_target_", "_partial_", "cache_dir"):
                continue
            if OmegaConf.is_dict(value):
                flatten(f"{prefix}/{key}", value)
            else:
                params[f"{prefix}/{key}"] = value

    for group in ("data", "model", "ngram", "vectors", "pretrain"):
        flatten(group, cfg.get(group) or {})
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


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test and write `metrics.json`; returns the metrics."""
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, output_dir / "config.yaml", resolve=True)
    write_status(output_dir, "running", {})
    if cfg.ckpt_path is not None:
        # One clear message before any data work, rather than Lightning's traceback later.
        say_where_it_resumes(checkpoints.read(cfg.ckpt_path, "ckpt_path=", weights_only=False))
    if cfg.test_weights not in ("best", "last"):
        raise ValueError(f"test_weights must be 'best' or 'last', got {cfg.test_weights!r}")
    L.seed_everything(cfg.seed, workers=True)
    # Vanishing gradients through long texts become denormal floats, which x86 CPUs compute
    # on many times slower (docs/experiments.md).
    torch.set_flush_denormal(cfg.flush_denormal)
    datamodule, model, trainer, n_params, metrics = _build(cfg)
    _fit(trainer, model, datamodule, cfg.ckpt_path, output_dir)
    fit_seconds = _fit_seconds(trainer)  # before testing: the fit's time alone
    metrics.update(_validation_metrics(trainer))
    if cfg.test:
        metrics.update(_test(trainer, model, datamodule, cfg.test_weights))
    metrics["epochs"] = trainer.current_epoch
    metrics["params"] = n_params
    metrics["classes"] = datamodule.class_names
    if fit_seconds is not None:
        metrics["fit_seconds"] = fit_seconds
    if fit_seconds is not None and trainer.current_epoch:
        # Timer's state is checkpointed, so a resumed run counts all of its epochs.
        metrics["seconds_per_epoch"] = fit_seconds / trainer.current_epoch
    write_status(output_dir, "completed", metrics)
    _log_final(trainer, _hyperparameters(cfg, datamodule.num_classes), metrics)
    return metrics


def _build(cfg: DictConfig) -> tuple[Any, Any, L.Trainer, int, dict[str, Any]]:
    """The data (prepared and set up), the classifier, the trainer, its trainable parameters,
    and the stages before training (word vectors, a stacked model) with their metrics."""
    # Everything that can reject the config is built before any data work; the classifier
    # waits for the data's classes (its settings are checked already).
    datamodule = instantiate(cfg.data)
    make_classifier = instantiate(cfg.model, _partial_=True)
    stack = instantiate(cfg.ngram) if cfg.get("ngram") else None
    vectors = instantiate(cfg.vectors) if cfg.get("vectors") else None
    pretrain = instantiate(cfg.pretrain) if cfg.get("pretrain") else None
    trainer = instantiate(cfg.trainer, callbacks=_instantiate_all(cfg.callbacks),
                          logger=_instantiate_all(cfg.logger) or False)
    datamodule.prepare_data()
    datamodule.setup("fit")
    # net.vocab_size=auto (data.max_features=auto) is the vocabulary the data fitted.
    net = make_classifier.keywords["net"].with_vocabulary(datamodule.text_encoder.vocab_size)
    model = make_classifier(net=net, num_classes=datamodule.num_classes, stack=stack)
    if vectors is not None and cfg.ckpt_path is None:  # a resumed run has trained weights
        vectors.initialise(model.net, *vectors.prepare(datamodule))
    if pretrain is not None and cfg.ckpt_path is None:  # from the vectors, where any
        pretrain.initialise(model.net, pretrain.prepare(datamodule, model.net))
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("Model: %s trainable parameters, %d classes", f"{n_params:,}",
             datamodule.num_classes)
    metrics: dict[str, Any] = stack.prepare(datamodule) if stack is not None else {}
    return datamodule, model, trainer, n_params, metrics


def _fit(trainer: L.Trainer, model: Any, datamodule: Any, ckpt_path: str | None,
         output_dir: Path) -> None:
    """`trainer.fit`, with a diverged or interrupted run recorded in its folder."""
    try:
        trainer.fit(model, datamodule=datamodule, ckpt_path=ckpt_path)
    except DivergedError as error:
        write_status(output_dir, "diverged", {"error": str(error), "epochs": trainer.current_epoch,
                                              "step": trainer.global_step})
        raise
    except (KeyboardInterrupt, SystemExit) as error:
        # Lightning turns Ctrl-C into sys.exit(1) after the callbacks' on_exception.
        if isinstance(error, SystemExit) and trainer.state.status != TrainerStatus.INTERRUPTED:
            raise
        raise interrupted(trainer, output_dir) from None


def _fit_seconds(trainer: L.Trainer) -> float | None:
    """The fit's seconds by the Timer callback, where the run has one."""
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    return timer.time_elapsed("train") if timer is not None else None


def _validation_metrics(trainer: L.Trainer) -> dict[str, Any]:
    """The last validation's metrics, and the monitored metric's best."""
    metrics = {k: v.item() for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    # The checkpoint that monitors a metric; last.ckpt's callback monitors nothing.
    checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    if checkpoint is not None and checkpoint.best_model_score is not None:
        # Its best value by its mode, for any monitor (e.g. val/loss_best): what a sweep's
        # optimized_metric (${monitor}_best) reads; val/acc_best and val/macro_f1_best are logged.
        metrics.setdefault(f"{checkpoint.monitor}_best", checkpoint.best_model_score.item())
    return metrics


def _test(trainer: L.Trainer, model: Any, datamodule: Any, weights: str) -> dict[str, Any]:
    """The test split's metrics, with the best checkpoint's weights or the last epoch's."""
    checkpoint = next((c for c in trainer.checkpoint_callbacks if c.monitor), None)
    best = checkpoint.best_model_path if checkpoint is not None else ""
    if weights == "best" and not best:
        log.warning("No best checkpoint was saved; testing the weights as trained")
    if weights == "best" and best:
        # The weights alone. trainer.test(ckpt_path=...) would also restore the callbacks'
        # states: the Timer's (counting the fit's time twice) and, with callbacks=ema, the
        # raw weights over the averaged ones that the checkpoint's state_dict holds.
        log.info("Testing the best checkpoint: %s", best)
        model.restore(torch.load(best, map_location=model.device, weights_only=False))
    results = trainer.test(model, datamodule=datamodule)[0]
    print(f"Test Accuracy: {results['test/acc']:.3f}")
    return results


def _log_final(trainer: L.Trainer, params: dict[str, Any], metrics: dict[str, Any]) -> None:
    """Every logger gets the run's settings and its final figures: TensorBoard's HPARAMS tab
    pairs them; the others (MLflow, CSV) record them as parameters and metrics."""
    hp_metrics = {f"hp/{k.replace('/', '_')}": metrics[k] for k in final_metric_keys()
                  if k in metrics}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            if hp_metrics:
                logger.log_hyperparams(params, metrics=hp_metrics)
        else:
            logger.log_hyperparams(params)
            logger.log_metrics(hp_metrics, step=trainer.global_step)
        logger.finalize("success")


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
            write_status(output_dir, "failed", {"error": user_message(error)})
        if multirun:
            # One failed job must not stop the sweep (Hydra's launchers stop at the first
            # exception): it is recorded for the report, and the sweeper gets no value, which
            # Optuna's sweeper records as a failed trial (a NaN would crash it: it tells
            # Optuna the trial twice).
            log.exception("Job failed: %s", user_message(error))
            return None
        if isinstance(error, USER_ERRORS) and os.environ.get("HYDRA_FULL_ERROR") != "1":
            log.error("%s  (HYDRA_FULL_ERROR=1 shows where it was raised)", user_message(error))
            sys.exit(1)
        raise
    return metrics.get(cfg.optimized_metric) if cfg.optimized_metric else None


if __name__ == "__main__":
    main()
