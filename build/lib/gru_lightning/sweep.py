"""Hydra multirun glue: job folders named by what each job changed, and the sweep report
when the multirun ends. Registered in conf/hydra/default.yaml."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, ListConfig, OmegaConf

from gru_lightning.report import write_report

# Set in the launching process, inherited by every job (local, joblib or SLURM).
SWEPT_KEYS_ENV = "GRU_LIGHTNING_SWEPT_KEYS"


def swept_overrides(task_overrides: ListConfig | list[str]) -> str:
    """The part of a job's overrides that the sweep varies, e.g. `model.hidden_size=32`
    (the resolver `${swept_overrides:${hydra.overrides.task}}`)."""
    keys = set(filter(None, os.environ.get(SWEPT_KEYS_ENV, "").split(",")))
    parts = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") in keys]
    return ",".join(parts).replace("/", "_") or "job"


OmegaConf.register_new_resolver("swept_overrides", swept_overrides, replace=True)


class SweepCallback(Callback):
    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        parsed = OverridesParser.create().parse_overrides(list(config.hydra.overrides.task))
        keys = {o.key_or_group for o in parsed if o.is_sweep_override()}
        keys |= set(OmegaConf.select(config, "hydra.sweeper.params", default=None) or {})
        os.environ[SWEPT_KEYS_ENV] = ",".join(sorted(keys))

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        if any(sweep_dir.glob("*/.hydra/overrides.yaml")):
            paths = write_report(sweep_dir)
            print(f"Sweep report: {paths['md']}\n{paths['md'].read_text()}")
